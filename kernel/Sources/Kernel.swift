// Boot: the boot CPU's path from the multiboot loader to the self-test, and the
// application processors' path from the trampoline to theirs.

import KernelSupport
@_spi(Testing) import SFBufCore
import Synchronization

/// The machine, set by the boot CPU before interrupts are enabled and before any other CPU
/// starts; never changed after. The IPI handler reaches it here.
nonisolated(unsafe) var theMachine: I386Machine?
/// The self-test both CPUs run, published the same way.
nonisolated(unsafe) var theSelfTest: SelfTest?

/// Slots in the sf_buf pool (`nsfbufs`); the window page table has room for 1024.
let poolSlots = 64
/// Test frames: 2 MiB of "physical memory" from ``Frame/base``.
let testFrames = 512
/// CPUs the self-test needs (`qemu-system-i386 -smp 2`).
let testCPUs = 2

/// The boot CPU's entry from boot.S: protected mode, flat segments, SSE on, paging off.
///
/// Sets up the console, interrupts, the page tables and the local APIC; builds the machine
/// and the sf_buf pool; starts the second CPU through the trampoline; runs the self-test;
/// and ends QEMU with its verdict.
@_cdecl("kernel_main")
func kernelMain(_ magic: UInt32, _ info: UnsafePointer<multiboot_info>) {
  Console.initialize()
  Console.line("sfbuf kernel: SFBufCore on bare-metal i386")
  guard magic == MULTIBOOT_BOOTLOADER_MAGIC, info.pointee.flags & 1 != 0 else {
    Console.line("FAIL: not started by a multiboot loader with memory information")
    QEMU.exit(passed: false)
  }
  let memoryEnd = (1 << 20) + UInt(info.pointee.mem_upper) * 1024
  let framesEnd = UInt(Frame.base) + UInt(testFrames) * 4096
  guard memoryEnd >= framesEnd, UInt(kernel_end_address()) <= UInt(Frame.base) else {
    Console.line(
      "FAIL: memory ends at \(hex(UInt32(memoryEnd))); the test needs \(hex(UInt32(framesEnd)))")
    QEMU.exit(passed: false)
  }

  Interrupts.install()
  Interrupts.silenceLegacyPIC()
  // The trampoline must be in place before paging: the page it goes to is not mapped.
  let trampoline = UnsafeMutableRawPointer(bitPattern: UInt(AP_TRAMPOLINE_ADDRESS))!
  trampoline.copyMemory(
    from: UnsafeRawPointer(bitPattern: ap_trampoline_address())!, byteCount: ap_trampoline_size())

  let space = AddressSpace()
  space.activate()
  set_ap_boot_cr3(space.cr3)
  let image = "\(hex(UInt32(kernel_start_address())))-\(hex(UInt32(kernel_end_address())))"
  let window = "\(hex(UInt32(AddressSpace.windowBase))), \(poolSlots) of 1024 slots"
  Console.line("paging on: kernel \(image) identity-mapped; window at \(window)")
  Console.line("test frames: \(testFrames) from \(hex(Frame.base)), reached only through sf_bufs")

  LocalAPIC.enable()
  CPUs.register(index: 0)
  let machine = I386Machine(space: space, frameCount: testFrames)
  let pool = SFBufAllocator(machine: machine, nsfbufs: poolSlots)
  #if SFBUF_MUTANT_NO_SHOOTDOWN
    pool.injectFaults(.skipShootdownOnHit)
    Console.line("MUTANT build: the shootdown on a shared hit is left out")
  #elseif SFBUF_MUTANT_NO_LOCAL_INVALIDATE
    pool.injectFaults(.skipLocalInvalidate)
    Console.line("MUTANT build: the local invalidation is left out")
  #elseif SFBUF_MUTANT_KEEP_CPUSET
    pool.injectFaults(.keepCPUSetOnRemap)
    Console.line("MUTANT build: the CPU set survives a remap")
  #endif
  theMachine = machine
  theSelfTest = SelfTest(pool: pool)
  interrupts_enable()

  LocalAPIC.startOtherCPUs(at: UInt32(AP_TRAMPOLINE_ADDRESS))
  for _ in 0..<200 where CPUs.online < testCPUs {
    PIT.delay(microseconds: 10_000)  // up to 2 s
  }
  guard CPUs.online == testCPUs else {
    Console.line("FAIL: \(CPUs.online) CPU(s) online, the test needs \(testCPUs) (-smp 2)")
    QEMU.exit(passed: false)
  }
  let trampolineAt = hex(UInt32(AP_TRAMPOLINE_ADDRESS))
  Console.line(
    "CPU1 online, APIC id \(CPUs.apicID(of: 1)) (INIT-SIPI-SIPI, trampoline \(trampolineAt))")

  let passed = theSelfTest!.run(cpu: 0)
  QEMU.exit(passed: passed)
}

/// An application processor's entry from boot.S: paging on with the boot CPU's page
/// directory, its own stack, SSE on. Joins the self-test, then idles answering IPIs.
@_cdecl("kernel_ap_main")
func kernelAPMain(_ index: Int32) {
  Interrupts.load()
  LocalAPIC.enable()
  CPUs.register(index: Int(index))
  interrupts_enable()
  if Int(index) < testCPUs {
    _ = theSelfTest!.run(cpu: Int(index))
  }
  while true { cpu_halt() }
}
