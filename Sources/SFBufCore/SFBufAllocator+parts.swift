// The pieces the allocation algorithm is made of: the hash, the free list, the sleep queue.
// Everything here runs with the machine's lock held.

extension SFBufAllocator {
  // MARK: Hash: page -> slot, chained through the slots

  @inlinable func bucket(_ page: Page) -> Int {
    // Fibonacci hashing: the multiply spreads the key, the top bits pick the bucket.
    let golden = UInt(truncatingIfNeeded: 0x9E37_79B9_7F4A_7C15 as UInt64)
    return Int(truncatingIfNeeded: (page.hashKey &* golden) >> UInt(bucketShift))
  }

  /// The slot caching `page`, or -1.
  @inlinable func lookup(_ page: Page) -> Int32 {
    var s = buckets[bucket(page)]
    while s >= 0 {
      if slots[Int(s)].page == page { return s }
      s = slots[Int(s)].hashNext
    }
    return -1
  }

  @usableFromInline func hash(_ s: Int32) {
    let b = bucket(slots[Int(s)].page!)
    slots[Int(s)].hashNext = buckets[b]
    buckets[b] = s
  }

  @usableFromInline func unhash(_ s: Int32) {
    let b = bucket(slots[Int(s)].page!)
    if buckets[b] == s {
      buckets[b] = slots[Int(s)].hashNext
    } else {
      var p = buckets[b]
      while slots[Int(p)].hashNext != s { p = slots[Int(p)].hashNext }
      slots[Int(p)].hashNext = slots[Int(s)].hashNext
    }
    slots[Int(s)].hashNext = -1
  }

  // MARK: References

  /// Adds a reference to `s`, which is in the hash; a free slot is reactivated.
  @inlinable func reference(_ s: Int32) {
    let refs = slots[Int(s)].refs
    if refs == 0 {
      removeFree(s)
      becameUsed()
    }
    slots[Int(s)].refs = refs + 1
  }

  /// Counts one more slot in use.
  @inlinable func becameUsed() {
    counters.nsfbufsused += 1
    if counters.nsfbufsused > counters.nsfbufspeak {
      counters.nsfbufspeak = counters.nsfbufsused
    }
  }

  // MARK: Free list, least recently freed at the head

  @usableFromInline func insertFree(_ s: Int32, atHead: Bool) {
    if atHead {
      slots[Int(s)].freePrev = -1
      slots[Int(s)].freeNext = freeHead
      if freeHead >= 0 { slots[Int(freeHead)].freePrev = s } else { freeTail = s }
      freeHead = s
    } else {
      slots[Int(s)].freeNext = -1
      slots[Int(s)].freePrev = freeTail
      if freeTail >= 0 { slots[Int(freeTail)].freeNext = s } else { freeHead = s }
      freeTail = s
    }
    freeCount += 1
  }

  @usableFromInline func removeFree(_ s: Int32) {
    let prev = slots[Int(s)].freePrev
    let next = slots[Int(s)].freeNext
    if prev >= 0 { slots[Int(prev)].freeNext = next } else { freeHead = next }
    if next >= 0 { slots[Int(next)].freePrev = prev } else { freeTail = prev }
    slots[Int(s)].freePrev = -1
    slots[Int(s)].freeNext = -1
    freeCount -= 1
  }

  // MARK: Sleepers: FIFO, one woken per free slot

  /// One sleeping allocation. Created by the allocator on a first sleep; reused across the
  /// sleeps of one allocation.
  public final class Waiter {
    public enum State { case idle, queued, woken }
    /// The machine's sleep state for this waiter.
    public let sleeper: Machine.Sleeper
    @usableFromInline var state = State.idle
    @usableFromInline var next: Waiter?

    @usableFromInline init(sleeper: Machine.Sleeper) { self.sleeper = sleeper }
  }

  @usableFromInline func enqueue(_ w: Waiter, atFront: Bool) {
    w.state = .queued
    if atFront {
      w.next = waitHead
      waitHead = w
      if waitTail == nil { waitTail = w }
    } else {
      w.next = nil
      if let t = waitTail { t.next = w } else { waitHead = w }
      waitTail = w
    }
  }

  /// Wakes queued sleepers, oldest first, while there are free slots nobody was promised.
  @usableFromInline func wakeWaiters() {
    while freeCount > reserved, let w = waitHead {
      waitHead = w.next
      if waitHead == nil { waitTail = nil }
      w.next = nil
      w.state = .woken
      reserved += 1
      machine.wake(w.sleeper)
    }
  }

  /// A wait ended without a slot (signal, cancellation): leave the queue or pass on the
  /// wake-up, and count the failure.
  @usableFromInline func abandonLocked(_ w: Waiter) {
    switch w.state {
    case .queued:
      if waitHead === w {
        waitHead = w.next
        if waitHead == nil { waitTail = nil }
      } else {
        var p = waitHead
        while let q = p, q.next !== w { p = q.next }
        p?.next = w.next
        if waitTail === w { waitTail = p }
      }
      w.next = nil
    case .woken:
      reserved -= 1
      wakeWaiters()
    case .idle:
      break
    }
    w.state = .idle
    counters.sf_allocfail &+= 1
  }
}

/// Deliberate bugs in the CPU-set rules, so that tests can show the coherence checkers
/// (the simulated machine's, the bare-metal kernel's) catching each one. Never set in use.
public struct SFBufFaults: OptionSet, Sendable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }
  /// Leave out the shootdown when a shared allocation hits a cached slot.
  public static let skipShootdownOnHit = SFBufFaults(rawValue: 1)
  /// Leave out the local invalidation when the calling CPU is missing from the set.
  public static let skipLocalInvalidate = SFBufFaults(rawValue: 2)
  /// Keep the CPU set when a live, used translation is replaced.
  public static let keepCPUSetOnRemap = SFBufFaults(rawValue: 4)
}

extension SFBufAllocator {
  /// Injects deliberate bugs (see ``SFBufFaults``). For mutation tests only.
  public func injectFaults(_ f: SFBufFaults) {
    machine.lock()
    faults = f
    machine.unlock()
  }
}
