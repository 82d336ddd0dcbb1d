// The real machine under SFBufCore: page-table entries, the accessed bit, invlpg, and
// shootdowns by inter-processor interrupt.

import KernelSupport
import SFBufCore
import Synchronization

/// One test page: a 4 KiB physical frame above the kernel image, never mapped except
/// through an sf_buf.
struct Frame: SFBufPageKey {
  /// The frame's number among the test frames.
  var number: Int

  /// The physical address of test frame 0 (16 MiB, above the identity-mapped image).
  static let base: UInt32 = 0x0100_0000

  /// The frame's physical address.
  var physicalAddress: UInt32 { Frame.base + UInt32(number) * 4096 }
  /// The frame number: distinct frames, distinct keys.
  var hashKey: UInt { UInt(number) }
}

/// A test-and-test-and-set spinlock. Interrupts stay on while spinning, so a CPU waiting
/// for the lock still answers the shootdown IPIs of the CPU holding it.
final class SpinLock {
  private let word = Atomic<UInt32>(0)

  /// Spins (`pause`) until the lock is taken.
  func lock() {
    while !word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
      while word.load(ordering: .relaxed) != 0 { cpu_pause() }
    }
  }

  /// Releases the lock.
  func unlock() { word.store(0, ordering: .releasing) }
}

/// The wake-up flag one waiting CPU spins on.
final class SpinSleeper {
  /// Set by ``I386Machine/wake(_:)``.
  let woken = Atomic<Bool>(false)
}

/// What each CPU counts about shootdowns; written only by that CPU (with the pool lock
/// held, or in its IPI handler), read by anyone after a barrier.
struct CPUCounters {
  /// `shootdown` calls this CPU made.
  var shootdowns = 0
  /// IPIs this CPU sent (one per target CPU).
  var ipisSent = 0
  /// Shootdown IPIs this CPU answered.
  var ipisReceived = 0
}

/// The bare-metal i386 machine of SFBufCore: real page-table entries in one window page
/// table, the MMU's accessed bit, `invlpg`, and shootdowns by IPI through the local APIC.
///
/// No scheduler: each CPU runs its own loop, so every caller is pinned, and a sleeping
/// allocation spins on a flag. The test frames are wired for good.
final class I386Machine: SFBufMachine {
  typealias Page = Frame
  typealias Sleeper = SpinSleeper

  /// The page tables holding the window.
  let space: AddressSpace
  /// How many test frames exist (all wired).
  let frameCount: Int
  private let poolLock = SpinLock()
  /// The window address being shot down, for the IPI handlers.
  private let shootdownAddress = Atomic<UInt>(0)
  /// CPUs (bit per index) that have not yet acknowledged the shootdown in progress.
  private let pendingAcknowledgements = Atomic<UInt32>(0)
  private let counters: UnsafeMutablePointer<CPUCounters>

  /// A machine over `space`'s window with `frameCount` test frames.
  init(space: AddressSpace, frameCount: Int) {
    self.space = space
    self.frameCount = frameCount
    counters = .allocate(capacity: Int(KERNEL_MAX_CPUS))
    counters.initialize(repeating: CPUCounters(), count: Int(KERNEL_MAX_CPUS))
  }

  /// The shootdown counters of CPU `cpu`.
  func counters(of cpu: Int) -> CPUCounters { counters[cpu] }

  // MARK: The pool lock

  func lock() { poolLock.lock() }
  func unlock() { poolLock.unlock() }

  // MARK: Mapping

  /// Writes slot `slot`'s page-table entry (`pmap_qenter` of one page) and reports whether
  /// the entry it replaced was present with its accessed bit set: only then can a TLB hold
  /// it. Never fails: every test frame can be mapped.
  func map(_ page: Frame, slot: Int) throws(SFBufMapError) -> Bool {
    let entry = page.physicalAddress | PTE.present | PTE.writable
    let old = space.exchangeWindowEntry(slot: slot, with: entry)
    return old & (PTE.present | PTE.accessed) == PTE.present | PTE.accessed
  }

  static var tracksTLBs: Bool { true }
  var currentCPU: Int { CPUs.current }
  var allCPUs: CPUSet { CPUSet.first(CPUs.online) }

  /// `invlpg` of the slot's address on the calling CPU.
  func invalidateLocal(slot: Int) {
    invlpg(AddressSpace.address(ofSlot: slot))
  }

  /// Sends a shootdown IPI to each CPU of `cpus` and spins until all have invalidated the
  /// slot's address and acknowledged. Called with the pool lock held, so one shootdown is
  /// in flight at a time; the waiting CPUs spin with interrupts on and answer at once.
  func shootdown(slot: Int, cpus: CPUSet) {
    let me = currentCPU
    shootdownAddress.store(AddressSpace.address(ofSlot: slot), ordering: .relaxed)
    pendingAcknowledgements.store(UInt32(truncatingIfNeeded: cpus.bits), ordering: .releasing)
    counters[me].shootdowns += 1
    for cpu in 0..<CPUs.online where cpus.contains(cpu) {
      LocalAPIC.sendIPI(vector: Interrupts.shootdownVector, toAPICID: CPUs.apicID(of: cpu))
      counters[me].ipisSent += 1
    }
    var spins = 0
    while pendingAcknowledgements.load(ordering: .acquiring) != 0 {
      cpu_pause()
      spins += 1
      if spins == 200_000_000 {
        Console.write("FAIL: a shootdown IPI was never acknowledged\n")
        QEMU.exit(passed: false)
      }
    }
  }

  /// The shootdown IPI handler: invalidate the address being shot down, count, acknowledge.
  func answerShootdown() {
    let me = currentCPU
    invlpg(shootdownAddress.load(ordering: .acquiring))
    counters[me].ipisReceived += 1
    pendingAcknowledgements.bitwiseAnd(~(UInt32(1) << UInt32(me)), ordering: .releasing)
  }

  // MARK: Caller checks

  /// Always: each CPU runs its own loop and nothing migrates.
  var isPinned: Bool { true }
  /// Whether `page` is one of the test frames (all wired for the life of the kernel).
  func isWired(_ page: Frame) -> Bool { page.number >= 0 && page.number < frameCount }

  // MARK: Sleeping

  func makeSleeper() -> SpinSleeper { SpinSleeper() }
  func prepareToSleep(_ sleeper: SpinSleeper) { sleeper.woken.store(false, ordering: .relaxed) }

  /// Spins (`pause`, interrupts on) until woken. No signals here: never interrupted.
  func sleep(_ sleeper: SpinSleeper, interruptible: Bool) -> Bool {
    while !sleeper.woken.load(ordering: .acquiring) { cpu_pause() }
    return true
  }

  func wake(_ sleeper: SpinSleeper) { sleeper.woken.store(true, ordering: .releasing) }

  // MARK: For the TLB probe only

  /// Rewrites slot `slot`'s entry behind the allocator's back, without any invalidation,
  /// and returns the old entry. Only the self-test's probe of the TLB uses it.
  func probeRewrite(slot: Int, to frame: Frame) -> UInt32 {
    space.exchangeWindowEntry(slot: slot, with: frame.physicalAddress | PTE.present | PTE.writable)
  }

  /// Puts back an entry saved by ``probeRewrite(slot:to:)``.
  func probeRestore(slot: Int, entry: UInt32) {
    _ = space.exchangeWindowEntry(slot: slot, with: entry)
  }
}
