// What the portable allocator calls: the lock, map, invalidations, caller checks, sleeping.

@_spi(Testing) import SFBufCore

extension SimMachine {
  /// Takes the pool lock: a check only, since the machine is single-threaded.
  ///
  /// - Precondition: the lock is not held (the allocator never nests it).
  public func lock() {
    precondition(!locked, "SimMachine.lock: the pool lock is already held (re-entered)")
    locked = true
  }

  /// Releases the pool lock.
  ///
  /// - Precondition: the lock is held.
  public func unlock() {
    precondition(locked, "SimMachine.unlock: the pool lock is not held")
    locked = false
  }

  /// Writes slot `slot`'s PTE to map `page`, valid and not yet accessed (`pmap_qenter`). No
  /// TLB is touched: invalidating is the allocator's business. One page-table write.
  ///
  /// - Returns: whether the old entry was valid and accessed, so that a TLB may hold it.
  /// - Throws: never on this machine.
  public func map(_ page: SimPage, slot: Int) throws(SFBufMapError) -> Bool {
    precondition(locked, "SimMachine.map: called without the pool lock")
    return writePTE(slot: slot, frame: page.frame)
  }

  /// This machine keeps per-CPU TLBs that nobody keeps coherent but the allocator.
  public static var tracksTLBs: Bool { true }

  /// The CPU of the ``running`` thread.
  public var currentCPU: Int { threads[runningThread].cpu }

  /// CPUs `0 ..< cpuCount`.
  public var allCPUs: CPUSet { CPUSet.first(cpuCount) }

  /// Drops slot `slot`'s translation from the current CPU's TLB (`invlpg`). Counted.
  public func invalidateLocal(slot: Int) {
    precondition(locked, "SimMachine.invalidateLocal: called without the pool lock")
    counters.localInvalidations += 1
    tlbs[currentCPU].invalidate(slot)
  }

  /// Interrupts every CPU of `cpus`, each of which drops slot `slot`'s translation. Counts
  /// one IPI sent and `cpus.count` CPUs interrupted.
  ///
  /// - Precondition: `cpus` is a non-empty set of this machine's CPUs without the current one.
  public func shootdown(slot: Int, cpus: CPUSet) {
    precondition(locked, "SimMachine.shootdown: called without the pool lock")
    precondition(!cpus.contains(currentCPU), "SimMachine.shootdown: the set holds the caller")
    interrupt(cpus, slot: slot)
  }

  /// Whether the ``running`` thread is pinned (`sched_pin`).
  public var isPinned: Bool { threads[runningThread].pinCount > 0 }

  /// Whether `page` is wired.
  public func isWired(_ page: SimPage) -> Bool {
    page.frame >= 0 && page.frame < frames && wireCounts[page.frame] > 0
  }

  /// A sleeper for the ``running`` thread.
  public func makeSleeper() -> SimSleeper { SimSleeper(thread: runningThread) }

  /// Blocks the ``running`` thread, whose sleeper `sleeper` becomes (sleepers are reused by
  /// later allocations): the scheduler will not run it until ``wake(_:)``.
  public func prepareToSleep(_ sleeper: SimSleeper) {
    sleeper.thread = runningThread
    sleeper.isWoken = false
    threads[sleeper.thread].isBlocked = true
  }

  /// Never called on this machine: its drivers wait through `tryAllocate`, marking the
  /// thread blocked (``prepareToSleep(_:)``) instead of blocking the host thread, which
  /// would stop the whole simulation. Traps if called.
  public func sleep(_ sleeper: SimSleeper, interruptible: Bool) -> Bool {
    fatalError(
      "SimMachine.sleep: the simulated machine cannot block; allocate with tryAllocate")
  }

  /// Makes the sleeper's thread runnable again.
  public func wake(_ sleeper: SimSleeper) {
    sleeper.isWoken = true
    threads[sleeper.thread].isBlocked = false
  }

  // MARK: Pieces shared with the unmap-on-free policy

  /// ``running``, which must have been set.
  var runningThread: Int {
    precondition(running >= 0, "SimMachine: no simulated thread is running (set `running`)")
    return running
  }

  /// Writes slot `slot`'s PTE (valid to `frame`, or invalid when `frame` is nil), counting
  /// one page-table write; returns whether the old entry was valid and accessed.
  func writePTE(slot: Int, frame: Int?) -> Bool {
    let old = pageTable[slot]
    var new = SimPTE()
    if let frame {
      precondition(frame >= 0 && frame < frames, "SimMachine: no frame \(frame)")
      new.frame = frame
      new.valid = true
    }
    pageTable[slot] = new
    counters.pageTableWrites += 1
    return old.valid && old.accessed
  }

  /// One IPI to `cpus`; each drops slot `slot`'s translation.
  func interrupt(_ cpus: CPUSet, slot: Int) {
    precondition(!cpus.isEmpty, "SimMachine: a shootdown to no CPU")
    precondition(cpus.subtracting(allCPUs).isEmpty, "SimMachine: a shootdown to unknown CPUs")
    counters.ipisSent += 1
    counters.cpusInterrupted += cpus.count
    for cpu in 0..<cpuCount where cpus.contains(cpu) { tlbs[cpu].invalidate(slot) }
  }
}
