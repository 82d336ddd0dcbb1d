// The local APIC: which CPU am I, inter-processor interrupts, and waking the other CPUs.

import KernelSupport
import Synchronization

/// The calling CPU's local APIC, at its default physical address (mapped uncached).
enum LocalAPIC {
  /// The APIC's register page.
  static let base: UInt = 0xFEE0_0000

  private static let idRegister: UInt = 0x20
  private static let endOfInterruptRegister: UInt = 0xB0
  private static let spuriousRegister: UInt = 0xF0
  private static let commandLow: UInt = 0x300
  private static let commandHigh: UInt = 0x310
  /// "Send pending" in the interrupt command register.
  private static let deliveryPending: UInt32 = 1 << 12

  /// The calling CPU's APIC id.
  static var id: Int { Int(volatile_load32(base + idRegister) >> 24) }

  /// Software-enables the calling CPU's APIC, with ``Interrupts/spuriousVector``.
  static func enable() {
    volatile_store32(base + spuriousRegister, 0x100 | Interrupts.spuriousVector)
  }

  /// Signals the end of the interrupt being handled.
  static func endOfInterrupt() {
    volatile_store32(base + endOfInterruptRegister, 0)
  }

  /// Sends a fixed interrupt `vector` to the CPU with APIC id `apicID`.
  static func sendIPI(vector: UInt32, toAPICID apicID: Int) {
    command(0x4000 | vector, destination: apicID)
  }

  /// Starts every other CPU at `page` (a physical address below 1 MiB, 4 KiB-aligned):
  /// INIT, then two start-up IPIs, to all CPUs but the caller (Intel's MP start-up).
  static func startOtherCPUs(at page: UInt32) {
    command(0x000C_4500, destination: 0)  // INIT, assert, all excluding self
    PIT.delay(microseconds: 10_000)
    for _ in 0..<2 {
      command(0x000C_4600 | (page >> 12), destination: 0)  // start-up
      PIT.delay(microseconds: 200)
    }
  }

  /// Writes the interrupt command register and waits until the APIC has sent it.
  private static func command(_ low: UInt32, destination: Int) {
    while volatile_load32(base + commandLow) & deliveryPending != 0 { cpu_pause() }
    volatile_store32(base + commandHigh, UInt32(destination) << 24)
    volatile_store32(base + commandLow, low)
    while volatile_load32(base + commandLow) & deliveryPending != 0 { cpu_pause() }
  }
}

/// The CPUs that are up: CPU indices `0 ..< online`, the boot CPU being 0, and the APIC id
/// of each.
enum CPUs {
  /// Number of CPUs that have entered the kernel.
  static var online: Int { onlineCount.load(ordering: .acquiring) }

  /// The calling CPU's index (from its APIC id). 0 before the table is filled.
  static var current: Int {
    let index = Int(indexOfAPICID[LocalAPIC.id & 0xFF].load(ordering: .relaxed)) - 1
    return index < 0 ? 0 : index
  }

  /// The APIC id of CPU `index`.
  static func apicID(of index: Int) -> Int { apicIDOfIndex[index].load(ordering: .relaxed) }

  /// Records the calling CPU as CPU `index` and counts it online.
  static func register(index: Int) {
    let apic = LocalAPIC.id
    apicIDOfIndex[index].store(apic, ordering: .relaxed)
    indexOfAPICID[apic & 0xFF].store(UInt8(index + 1), ordering: .relaxed)
    onlineCount.add(1, ordering: .releasing)
  }
}

private let onlineCount = Atomic<Int>(0)
/// Index + 1 of the CPU with each APIC id (0: none).
private let indexOfAPICID = AtomicTable<UInt8>(count: 256)
private let apicIDOfIndex = AtomicTable<Int>(count: Int(KERNEL_MAX_CPUS))

/// A fixed-size table of atomics, zero-initialised (`Atomic` is not copyable, so not an
/// `Array` element). Sendable: it holds nothing but atomics, and never replaces them.
final class AtomicTable<Value: AtomicRepresentable & FixedWidthInteger>: @unchecked Sendable {
  private let storage: UnsafeMutablePointer<Atomic<Value>>

  /// A table of `count` zeros.
  init(count: Int) {
    storage = .allocate(capacity: count)
    for i in 0..<count { (storage + i).initialize(to: Atomic<Value>(0)) }
  }

  /// Entry `index`.
  subscript(index: Int) -> Atomic<Value> {
    unsafeAddress { UnsafePointer(storage + index) }
  }
}
