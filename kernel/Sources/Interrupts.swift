// The IDT, the legacy PIC (silenced), and the one entry point every interrupt reaches.

import KernelSupport

/// Interrupt vectors and the interrupt descriptor table.
enum Interrupts {
  /// The TLB shootdown IPI: invalidate one window page, then acknowledge.
  static let shootdownVector: UInt32 = 0xF0
  /// The local APIC's spurious-interrupt vector (no end-of-interrupt for it).
  static let spuriousVector: UInt32 = 0xFF
  /// Where the legacy PIC's sixteen lines are moved, away from the exceptions.
  static let legacyBase: UInt32 = 0x20

  /// Fills every IDT gate with its isr.S stub (a 32-bit interrupt gate, so interrupts are
  /// off inside the handler) and loads the IDT on the calling CPU.
  static func install() {
    let gates = idt_gates()!
    for vector in 0..<256 {
      let address = UInt32(isr_stub_address(Int32(vector)))
      gates[vector] = idt_gate(
        offset_low: UInt16(truncatingIfNeeded: address),
        selector: UInt16(KERNEL_CODE_SELECTOR),
        zero: 0,
        type_attributes: 0x8E,  // present, ring 0, 32-bit interrupt gate
        offset_high: UInt16(truncatingIfNeeded: address >> 16))
    }
    load()
  }

  /// Loads the (already filled) IDT on the calling CPU; for the application processors.
  static func load() {
    load_idt(idt_gates(), UInt16(256 * MemoryLayout<idt_gate>.size - 1))
  }

  /// Moves the 8259 PICs to vectors 0x20-0x2f and masks every line: the kernel uses only
  /// the local APIC, but a PIC left at its BIOS setting would deliver IRQ 0 on vector 8.
  static func silenceLegacyPIC() {
    outb(0x20, 0x11)
    outb(0xA0, 0x11)  // ICW1: initialise, ICW4 follows
    outb(0x21, UInt8(legacyBase))
    outb(0xA1, UInt8(legacyBase + 8))  // ICW2: vector bases
    outb(0x21, 0x04)
    outb(0xA1, 0x02)  // ICW3: cascade on line 2
    outb(0x21, 0x01)
    outb(0xA1, 0x01)  // ICW4: 8086 mode
    outb(0x21, 0xFF)
    outb(0xA1, 0xFF)  // mask everything
  }
}

/// The exception names of vectors 0-19, for the fatal report.
private func exceptionName(_ vector: UInt32) -> StaticString {
  switch vector {
  case 0: return "divide error"
  case 1: return "debug"
  case 2: return "NMI"
  case 3: return "breakpoint"
  case 4: return "overflow"
  case 5: return "bound range"
  case 6: return "invalid opcode: a Swift trap (a failed check prints its message above)"
  case 7: return "device not available (FPU/SSE off?)"
  case 8: return "double fault"
  case 10: return "invalid TSS"
  case 11: return "segment not present"
  case 12: return "stack fault"
  case 13: return "general protection"
  case 14: return "page fault"
  case 16: return "x87 floating point"
  case 17: return "alignment check"
  case 19: return "SIMD floating point"
  default: return "unexpected interrupt"
  }
}

/// Every interrupt and exception arrives here from isr.S, on the interrupted CPU's stack,
/// with interrupts off and the interrupted code's registers and SSE state saved.
///
/// A shootdown IPI is answered; spurious interrupts are ignored; anything else is a bug in
/// the kernel or the test, reported without allocating, and ends the run as a failure.
@_cdecl("kernel_trap")
func kernelTrap(_ frame: UnsafeMutablePointer<trap_frame>) {
  let vector = frame.pointee.vector
  switch vector {
  case Interrupts.shootdownVector:
    theMachine!.answerShootdown()
    LocalAPIC.endOfInterrupt()
  case Interrupts.spuriousVector, Interrupts.legacyBase..<Interrupts.legacyBase + 16:
    return
  default:
    Console.write("\nFAIL: CPU ")
    Console.writeDecimal(CPUs.current)
    Console.write(": exception ")
    Console.writeDecimal(Int(vector))
    Console.write(" (")
    Console.write(exceptionName(vector))
    Console.write(") error ")
    Console.writeHex(frame.pointee.error_code)
    Console.write(" at eip ")
    Console.writeHex(frame.pointee.eip)
    if vector == 14 {
      Console.write(", address ")
      Console.writeHex(read_cr2())
    }
    Console.write("\n")
    QEMU.exit(passed: false)
  }
}
