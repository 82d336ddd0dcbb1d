@_spi(Testing) import SFBufCore

/// A page of the recording machine: just a number.
struct Frame: SFBufPageKey, Hashable {
  var n: Int
  var hashKey: UInt { UInt(bitPattern: n) }
}

/// A machine for testing the portable algorithm by itself: it performs nothing and records
/// every call the allocator makes (maps, local invalidations, shootdowns), runs on a CPU the
/// test chooses, and refuses to map the frames the test names. It tracks TLBs, so the CPU-set
/// rules run. Single-threaded: tests that sleep use `tryAllocate`.
final class RecordingMachine: SFBufMachine {
  typealias Page = Frame
  final class Sleeper { var woken = 0 }

  enum Event: Equatable {
    case map(slot: Int, frame: Int)
    case invalidate(cpu: Int, slot: Int)
    case shootdown(from: Int, slot: Int, cpus: CPUSet)
  }

  var events: [Event] = []
  var cpu = 0
  let cpus: Int
  var pinned = false
  var refuse: Set<Int> = []
  var unwired: Set<Int> = []
  /// Whether each slot's current translation was used (always, once mapped).
  var live: [Bool]
  private var locked = false

  init(cpus: Int, slots: Int) {
    self.cpus = cpus
    live = Array(repeating: false, count: slots)
  }

  /// Times the lock was taken.
  var locks = 0
  /// Whether a slot is in use as the hooks report it (``windowBecameBusy()``,
  /// ``windowBecameIdle()``).
  var busy = false
  /// Busy periods begun.
  var busyPeriods = 0
  /// Whether an idle hook came while the lock was held.
  var freedLocked = false

  func lock() {
    precondition(!locked, "allocator lock taken twice")
    locked = true
    locks += 1
  }
  func windowBecameBusy() {
    precondition(locked, "windowBecameBusy without the lock")
    precondition(!busy, "windowBecameBusy twice")
    busy = true
    busyPeriods += 1
  }
  func windowBecameIdle() {
    precondition(busy, "windowBecameIdle while idle")
    if locked { freedLocked = true }
    busy = false
  }
  func unlock() {
    precondition(locked, "allocator lock released while free")
    locked = false
  }

  func map(_ page: Frame, slot: Int) throws(SFBufMapError) -> Bool {
    if refuse.contains(page.n) { throw SFBufMapError(code: 13) }
    events.append(.map(slot: slot, frame: page.n))
    defer { live[slot] = true }
    return live[slot]
  }

  static var tracksTLBs: Bool { true }
  var currentCPU: Int { cpu }
  var allCPUs: CPUSet { .first(cpus) }
  func invalidateLocal(slot: Int) { events.append(.invalidate(cpu: cpu, slot: slot)) }
  func shootdown(slot: Int, cpus: CPUSet) {
    events.append(.shootdown(from: cpu, slot: slot, cpus: cpus))
  }

  var isPinned: Bool { pinned }
  func isWired(_ page: Frame) -> Bool { !unwired.contains(page.n) }

  /// Sleepers made so far.
  var sleepersMade = 0
  func makeSleeper() -> Sleeper {
    sleepersMade += 1
    return Sleeper()
  }
  func prepareToSleep(_ s: Sleeper) {}
  func sleep(_ s: Sleeper, interruptible: Bool) -> Bool {
    fatalError("the recording machine never blocks; use tryAllocate")
  }
  func wake(_ s: Sleeper) { s.woken += 1 }

  /// The events since the last call, then forgets them.
  func take() -> [Event] {
    defer { events = [] }
    return events
  }
}

/// What the test machines with one CPU and no TLBs to track have in common: every page is
/// wired, every caller pinned, and the CPU-set rules are skipped.
protocol UntrackedTestMachine: SFBufMachine {}

extension UntrackedTestMachine {
  static var tracksTLBs: Bool { false }
  var currentCPU: Int { 0 }
  var allCPUs: CPUSet { .first(1) }
  func invalidateLocal(slot: Int) {}
  func shootdown(slot: Int, cpus: CPUSet) {}
  var isPinned: Bool { true }
  func isWired(_ page: Page) -> Bool { true }
  func isWired(run first: Page, count: Int) -> Bool { true }
}
