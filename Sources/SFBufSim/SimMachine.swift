// The simulated SMP machine without a direct map: a window of `slots` pages, its page table
// with valid and accessed bits, one TLB per CPU that goes stale unless told, and counted
// local invalidations and shootdowns. Single-threaded and deterministic.

import SFBufCore

/// A simulated SMP machine of 1 to 64 CPUs, whose kernel has no direct map: the machine the
/// sf_buf CPU-set rules (the contract in SFBufCore's documentation) exist for.
///
/// It owns a window of ``slots`` virtual pages starting at ``windowBase``, a page table for
/// that window (one ``SimPTE`` per slot, with valid and accessed bits), ``frames`` physical
/// pages of memory, and one ``SimTLB`` per CPU. Loads and stores go through the accessing
/// CPU's TLB (``load(_:cpu:)``), so a translation that was not invalidated really returns
/// the old page. Every PTE write, local invalidation and shootdown is counted in
/// ``counters``.
///
/// Simulated threads (``spawnThread(cpu:)``) run on CPUs and migrate between them unless
/// pinned (``sched_pin()``); the allocator sees the CPU of the ``running`` thread. The
/// whole machine is single-threaded: whoever drives it (a random program, a workload) picks
/// the running thread, so the pool lock is a re-entrancy check only, and a run is a pure
/// function of its driver's seed.
///
/// - Note: ``sleep(_:interruptible:)`` is never called by a driver that allocates through
///   `SFBufAllocator.tryAllocate(_:flags:waiter:)`, as all of this module does: a thread
///   that must wait is marked blocked and scheduled again after ``wake(_:)``.
public final class SimMachine: SFBufMachine {
  /// A physical page of this machine.
  public typealias Page = SimPage
  /// A blocked simulated thread.
  public typealias Sleeper = SimSleeper

  /// The size of a page, in bytes.
  public static let pageSize = 4096
  /// The size of a page, in 64-bit words (what ``load(_:cpu:)`` reads).
  public static let wordsPerPage = pageSize / 8
  /// The first address of the window (i386's kernel space starts here).
  public static let windowBase = 0xC000_0000

  /// The number of CPUs, 1 to 64.
  public let cpuCount: Int
  /// The number of window pages (`nsfbufs`).
  public let slots: Int
  /// The number of physical pages.
  public let frames: Int

  var pageTable: [SimPTE]
  var tlbs: [SimTLB]
  var memory: [UInt64]
  var wireCounts: [Int32]
  var threads: [SimThreadState] = []
  var locked = false

  /// What the machine has counted so far.
  public internal(set) var counters = SimCounters()

  /// The simulated thread now executing; the allocator's caller. Set by the driver before
  /// each call into the allocator.
  ///
  /// - Precondition (on set): a thread of ``spawnThread(cpu:)``.
  public var running: Int = -1 {
    willSet { precondition(newValue >= 0 && newValue < threads.count, "no thread \(newValue)") }
  }

  /// A machine with `cpus` CPUs, a window of `slots` pages, `frames` physical pages holding
  /// their initial contents, empty TLBs of `tlbEntries` entries each, and no thread.
  ///
  /// - Complexity: O(`frames` × ``wordsPerPage``) to fill memory.
  /// - Precondition: `1 <= cpus <= 64`, `slots >= 1`, `frames >= 1`, `tlbEntries >= 1`.
  public init(
    cpus: Int, slots: Int, frames: Int, tlbEntries: Int = 64,
    replacement: SimTLBReplacement = .lru
  ) {
    precondition((1...64).contains(cpus), "SimMachine: 1 to 64 CPUs")
    precondition(slots >= 1 && frames >= 1, "SimMachine: at least one slot and one frame")
    cpuCount = cpus
    self.slots = slots
    self.frames = frames
    pageTable = Array(repeating: SimPTE(), count: slots)
    tlbs = Array(repeating: SimTLB(capacity: tlbEntries, replacement: replacement), count: cpus)
    wireCounts = Array(repeating: 0, count: frames)
    memory = []
    memory.reserveCapacity(frames * Self.wordsPerPage)
    for f in 0..<frames {
      for w in 0..<Self.wordsPerPage { memory.append(Self.initialWord(frame: f, word: w)) }
    }
  }

  /// What word `word` of frame `frame` holds before anyone stores to it: a value naming
  /// both, so a load from the wrong frame is told apart from any right one.
  @inlinable public static func initialWord(frame: Int, word: Int) -> UInt64 {
    0x5F00_0000_0000_0000 | UInt64(frame) << 16 | UInt64(word)
  }

  /// The virtual address of slot `slot`'s page (`sf_buf_kva`).
  @inlinable public func address(ofSlot slot: Int) -> Int {
    Self.windowBase + slot * Self.pageSize
  }

  /// Slot `slot`'s page-table entry.
  public func pte(ofSlot slot: Int) -> SimPTE { pageTable[slot] }

  /// The frame CPU `cpu`'s TLB holds for slot `slot`, if any (without counting a use).
  public func cachedFrame(slot: Int, cpu: Int) -> Int? { tlbs[cpu].peek(slot) }

  /// The number of translations CPU `cpu`'s TLB holds.
  public func tlbCount(cpu: Int) -> Int { tlbs[cpu].count }

  // MARK: Wiring

  /// Wires `page` (`vm_page_wire`): only wired pages may be mapped.
  public func wire(_ page: SimPage) { wireCounts[page.frame] += 1 }

  /// Drops one wiring of `page` (`vm_page_unwire`).
  ///
  /// - Precondition: `page` is wired.
  public func unwire(_ page: SimPage) {
    precondition(wireCounts[page.frame] > 0, "vm_page_unwire: \(page) is not wired")
    wireCounts[page.frame] -= 1
  }

  /// Wires every frame once.
  public func wireAll() {
    for f in 0..<frames { wireCounts[f] += 1 }
  }
}
