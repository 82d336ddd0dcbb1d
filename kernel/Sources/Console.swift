// The serial console (COM1) and QEMU's exit port.

import KernelSupport
import Synchronization

/// The serial console: COM1, which QEMU shows on its standard output with `-serial stdio`.
///
/// Two ways to write. ``line(_:)`` prints a Swift string as one line that the other CPU's
/// lines do not cut into. The `write` functions allocate nothing and take no lock, for the
/// trap handler, which may run while the heap or the console lock is held.
enum Console {
  /// The first port of COM1.
  static let port: UInt16 = 0x3F8

  /// Programs COM1 for 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on.
  static func initialize() {
    outb(port + 1, 0x00)  // no interrupts
    outb(port + 3, 0x80)  // divisor latch
    outb(port + 0, 0x01)  // 115200 baud
    outb(port + 1, 0x00)
    outb(port + 3, 0x03)  // 8N1
    outb(port + 2, 0xC7)  // FIFOs on and cleared
    outb(port + 4, 0x03)  // DTR, RTS
  }

  /// Prints `text` and a newline while holding the console, so that lines from both CPUs
  /// do not interleave. Re-entered on the same CPU (a trap while printing), it prints anyway.
  static func line(_ text: String) {
    let me = CPUs.current
    let mine = consoleOwner.load(ordering: .acquiring) == me
    if !mine {
      while !consoleOwner.compareExchange(expected: -1, desired: me, ordering: .acquiring)
        .exchanged
      {
        cpu_pause()
      }
    }
    print(text)
    if !mine { consoleOwner.store(-1, ordering: .releasing) }
  }

  /// Writes a static string without allocating.
  static func write(_ text: StaticString) {
    text.withUTF8Buffer { bytes in
      for b in bytes { _ = putchar(Int32(b)) }
    }
  }

  /// Writes `value` as `0x` and eight hexadecimal digits, without allocating.
  static func writeHex(_ value: UInt32) {
    write("0x")
    for shift in stride(from: 28, through: 0, by: -4) {
      let digit = Int32((value >> UInt32(shift)) & 0xF)
      _ = putchar(digit < 10 ? 48 + digit : 87 + digit)
    }
  }

  /// Writes a small non-negative number in decimal, without allocating.
  static func writeDecimal(_ value: Int) {
    if value >= 10 { writeDecimal(value / 10) }
    _ = putchar(Int32(48 + value % 10))
  }
}

/// The CPU printing a line through ``Console/line(_:)``, or -1.
private let consoleOwner = Atomic<Int>(-1)

/// `0x` and eight hexadecimal digits.
func hex(_ value: UInt32) -> String {
  var s = "0x"
  for shift in stride(from: 28, through: 0, by: -4) {
    let digit = UInt8((value >> UInt32(shift)) & 0xF)
    s.append(Character(Unicode.Scalar(digit < 10 ? 48 + digit : 87 + digit)))
  }
  return s
}

/// `numerator / denominator` with three decimals ("0.250"), without floating point.
func ratio(_ numerator: Int, _ denominator: Int) -> String {
  guard denominator > 0 else { return "n/a" }
  let thousandths = (numerator * 1000 + denominator / 2) / denominator
  let fraction = thousandths % 1000
  let pad = fraction < 10 ? "00" : fraction < 100 ? "0" : ""
  return "\(thousandths / 1000).\(pad)\(fraction)"
}

/// QEMU's `isa-debug-exit` device at port 0xf4: writing `v` ends QEMU with status
/// `2 * v + 1`.
enum QEMU {
  /// The status `selftest.sh` reads as a pass (`2 * 0x10 + 1`).
  static let passStatus: UInt32 = 0x10
  /// The status it reads as a failure (`2 * 0x11 + 1`).
  static let failStatus: UInt32 = 0x11

  /// Ends the run with the verdict; halts forever when not under QEMU.
  static func exit(passed: Bool) -> Never {
    outl(0xF4, passed ? passStatus : failStatus)
    while true {
      interrupts_disable()
      cpu_halt()
    }
  }
}
