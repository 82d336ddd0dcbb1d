// Real-time delays from the PC's interval timer, for the start-up sequence of the CPUs.

import KernelSupport

/// The 8254 programmable interval timer, channel 2 (the one gated through port 0x61), used
/// as a one-shot stopwatch: no interrupt, polled.
enum PIT {
  /// Input clock of the timer, in Hz.
  private static let frequency: Int64 = 1_193_182

  /// Waits `microseconds` (at most 54 925, one count of the 16-bit counter). Polls with
  /// `pause`, which under single-threaded QEMU also lets the other virtual CPU run.
  static func delay(microseconds: Int) {
    // In 64 bits: Int is 32 bits here, and 1193182 * 10000 is not.
    let count = max(1, min(0xFFFF, Int(frequency * Int64(microseconds) / 1_000_000)))
    let gate = inb(0x61) & 0xFC  // speaker off, gate low
    outb(0x61, gate)
    outb(0x43, 0xB0)  // channel 2, low then high byte, mode 0 (out goes high at zero), binary
    outb(0x42, UInt8(truncatingIfNeeded: count))
    outb(0x42, UInt8(truncatingIfNeeded: count >> 8))
    outb(0x61, gate | 0x01)  // gate high: count down
    while inb(0x61) & 0x20 == 0 { cpu_pause() }  // bit 5: channel 2's output
    outb(0x61, gate)
  }
}
