// The pieces the allocation algorithm is made of: the slots' reference words, the hash, the
// free list, the sleep queue. Everything here runs with the machine's lock held, except
// what says it does not.

import Synchronization

/// The layout of a slot's reference word (``SFBufAllocator/Slot/word``): its references in
/// the low 30 bits, the ``lockedOnly`` flag in bit 30, the ``mapping`` flag in bit 31 and, in
/// the high 32 bits, the hits taken without the lock since the slot was last freed (moved to
/// the counters then).
@usableFromInline enum SlotLine {
  @usableFromInline static let oneRef: UInt64 = 1
  @usableFromInline static let oneHit: UInt64 = 1 << 32
  /// Set while a miss maps the slot outside the lock (its one reference is the miss's own):
  /// hits must wait for the mapping, under the lock.
  @usableFromInline static let mapping: UInt64 = 1 << 31
  /// Set on the slots of a page run (mapped by one, or taken by one from the free list)
  /// while they are in use: every reference they hold was taken with the lock held, and their
  /// word changes only with it held. Hits on them take the lock instead of a reference
  /// without it, and the run's free writes each word with a plain store instead of a
  /// compare-and-swap, which is most of what freeing a page of a run costs. Cleared when the
  /// slot goes free.
  @usableFromInline static let lockedOnly: UInt64 = 1 << 30
  @inlinable static func references(_ w: UInt64) -> Int { Int(truncatingIfNeeded: w & 0x3FFF_FFFF) }
  @inlinable static func hits(_ w: UInt64) -> Int { Int(truncatingIfNeeded: w >> 32) }
}

extension SFBufAllocator {
  /// Slot `s`'s words, at the start of its line. (`&*`: slots are checked where they come
  /// in, and a multiply that cannot overflow needs no check on every access.)
  @inlinable func line(_ s: Int) -> UnsafeMutablePointer<Slot> {
    (storage.lines + s &* Self.lineStride).assumingMemoryBound(to: Slot.self)
  }

  /// Slot `s`'s locked state, after its words in its line.
  @inlinable func state(_ s: Int) -> UnsafeMutablePointer<SlotState> {
    (storage.lines + (s &* Self.lineStride &+ Self.stateOffset)).assumingMemoryBound(
      to: SlotState.self)
  }

  /// Where a line's ``SlotState`` starts: after the words, aligned.
  @inlinable static var stateOffset: Int {
    let align = MemoryLayout<SlotState>.alignment
    return (MemoryLayout<Slot>.size + align - 1) / align * align
  }

  /// Bytes from one slot's line to the next: whole cache lines.
  @inlinable static var lineStride: Int {
    (stateOffset + MemoryLayout<SlotState>.stride + 63) & ~63
  }

  /// The head of hash bucket `b`, kept in line `b` (there are no more buckets than slots).
  @inlinable func head(_ b: Int) -> UnsafeMutablePointer<Slot> { line(b) }

  // MARK: Hash: page -> slot, chained through the slots

  /// The bucket of `key`. Keys are taken in blocks of 64 (all bits but the low 6): Fibonacci
  /// hashing spreads the blocks (the multiply mixes the block's bits, the top bits pick a
  /// bucket), and the keys of one block follow that bucket in order, wrapping around. A run
  /// maps consecutive pages, whose keys are consecutive (see ``SFBufPageKey/hashKey``), so
  /// its lookups, its hash updates and the unhashing of the pages its slots cached before
  /// walk adjacent lines (heads of adjacent buckets, slots of adjacent blocks), which the
  /// processor fetches ahead, instead of one line anywhere in the window per page. Keys
  /// with a stride of 64 or more are spread as before; smaller strides stay apart within a
  /// block. Without the lock too (hits).
  @inlinable func bucket(_ key: UInt) -> Int {
    let golden = UInt(truncatingIfNeeded: 0x9E37_79B9_7F4A_7C15 as UInt64)
    // `&>>`: a shift of 64 (one bucket) wraps to 0, and the mask below makes it 0 anyway.
    let block = Int(truncatingIfNeeded: ((key &>> 6) &* golden) &>> UInt(bitPattern: bucketShift))
    return (block &+ Int(truncatingIfNeeded: key & 63)) & bucketMask
  }

  /// The slot caching `page`, or -1.
  @inlinable func lookup(_ page: Page) -> Int {
    var s = head(bucket(page.hashKey)).pointee.firstSlot
    while s >= 0 {
      if state(s).pointee.page == page { return s }
      s = line(s).pointee.nextSlot
    }
    return -1
  }

  /// ``lookup(_:)`` by key: `page` is made only to confirm a slot whose key matches.
  @inlinable func lookup(key: UInt, _ page: () -> Page) -> Int {
    lookup(key: key, bucket: bucket(key), page)
  }

  /// ``lookup(key:_:)`` in the key's bucket `b`, found already.
  @inlinable @inline(__always) func lookup(key: UInt, bucket b: Int, _ page: () -> Page) -> Int {
    var s = head(b).pointee.firstSlot
    while s >= 0 {
      if line(s).pointee.key.load(ordering: .relaxed) == key && state(s).pointee.page == page() {
        return s
      }
      s = line(s).pointee.nextSlot
    }
    return -1
  }

  @inlinable func hash(_ s: Int, key: UInt) { hash(s, key: key, bucket: bucket(key)) }

  /// ``hash(_:key:)`` into the key's bucket `b`, found already.
  @inlinable @inline(__always) func hash(_ s: Int, key: UInt, bucket b: Int) {
    line(s).pointee.key.store(key, ordering: .relaxed)
    line(s).pointee.setNextSlot(head(b).pointee.firstSlot, releasing: false)
    head(b).pointee.setFirstSlot(s)
  }

  @inlinable @inline(__always) func unhash(_ s: Int) {
    // The key stored when the slot was hashed: no need to read the page (or its object).
    let b = bucket(line(s).pointee.key.load(ordering: .relaxed))
    let next = line(s).pointee.nextSlot
    let first = head(b).pointee.firstSlot
    if first == s {
      head(b).pointee.setFirstSlot(next)
    } else {
      var p = first
      while line(p).pointee.nextSlot != s {
        p = line(p).pointee.nextSlot
      }
      line(p).pointee.setNextSlot(next, releasing: true)
    }
    // A reader standing on `s` goes on down the old chain (`next` is kept) to its end.
  }

  // MARK: References

  /// Without the lock: a hit on a slot in use. Finds `page` in the hash by its key, takes a
  /// reference if the slot has one already, and checks the page once the reference is held
  /// (the slot may have been recycled meanwhile). Returns the slot, or -1 when the locked
  /// path must decide (not found, free, being mapped, or the check failed). When the failed
  /// check's reference turns out to be the slot's last, the slot goes free here.
  @inlinable func referenceIfInUse(_ page: Page) -> Int {
    let s = slotWithoutLock(key: page.hashKey)
    guard s >= 0 else { return -1 }
    let l = line(s)
    var w = l.pointee.word.load(ordering: .relaxed)
    while SlotLine.references(w) > 0 && w & (SlotLine.mapping | SlotLine.lockedOnly) == 0 {
      let (done, now) = l.pointee.word.weakCompareExchange(
        expected: w, desired: w &+ (SlotLine.oneRef | SlotLine.oneHit),
        successOrdering: .acquiring, failureOrdering: .relaxed)
      if done {
        // Safe to read: a slot with a reference is not recycled, and the recycler's
        // release of the word made the page visible.
        if state(s).pointee.page == page { return s }
        if !dropReferenceIfNotLast(s, hit: true) {
          machine.lock()
          let idle = dropReferenceLocked(s, hit: true) && isIdle
          machine.unlock()
          if idle { machine.windowBecameIdle() }
        }
        return -1
      }
      w = now
    }
    return -1
  }

  /// Without the lock: the first slot of the hash chain of `key` whose key is `key`, or -1.
  /// The chain may change meanwhile: a slot taken out of it keeps its link, so the walk goes
  /// on to the end of the old chain; it stops after `nsfbufs` steps in any case.
  @inlinable func slotWithoutLock(key: UInt) -> Int {
    var s = head(bucket(key)).pointee.firstSlotAcquiring
    var steps = 0
    while s >= 0 && steps < nsfbufs {
      if line(s).pointee.key.load(ordering: .relaxed) == key { return s }
      s = line(s).pointee.nextSlot
      steps += 1
    }
    return -1
  }

  /// Adds a reference to `s`, which is in the hash; a free slot is reactivated, and marked
  /// ``SlotLine/lockedOnly`` when `run` (a page run takes it). Returns whether it was free.
  @inlinable @discardableResult func referenceLocked(_ s: Int, run: Bool = false) -> Bool {
    let l = line(s)
    var w = l.pointee.word.load(ordering: .relaxed)
    if SlotLine.references(w) == 0 {
      // Nobody changes a free slot's word without the lock.
      removeFree(s)
      becameUsed(s)
      l.pointee.word.store(
        run ? SlotLine.oneRef | SlotLine.lockedOnly : SlotLine.oneRef, ordering: .releasing)
      return true
    }
    if w & SlotLine.lockedOnly != 0 {
      l.pointee.word.store(w &+ SlotLine.oneRef, ordering: .relaxed)
      return false
    }
    while true {
      let (done, now) = l.pointee.word.weakCompareExchange(
        expected: w, desired: w &+ SlotLine.oneRef, ordering: .relaxed)
      if done { return false }
      w = now
    }
  }

  /// Without the lock: drops one reference of `s` unless it is the last one, or the slot is
  /// ``SlotLine/lockedOnly``. Returns whether it did. `hit` also takes back one hit (a hit
  /// that found the wrong page).
  @inlinable func dropReferenceIfNotLast(_ s: Int, hit: Bool) -> Bool {
    let l = line(s)
    let minus = hit ? SlotLine.oneRef | SlotLine.oneHit : SlotLine.oneRef
    var w = l.pointee.word.load(ordering: .relaxed)
    while SlotLine.references(w) >= 2 && w & SlotLine.lockedOnly == 0 {
      let (done, now) = l.pointee.word.weakCompareExchange(
        expected: w, desired: w &- minus, successOrdering: .releasing, failureOrdering: .relaxed)
      if done { return true }
      w = now
    }
    return false
  }

  /// Drops one reference of `s`; the last one puts the slot at the tail of the free list,
  /// moves its hits to the counters and wakes a sleeper. Returns whether the slot is free
  /// now. Locked.
  @inlinable @discardableResult func dropReferenceLocked(_ s: Int, hit: Bool) -> Bool {
    var hits = 0
    // The tail moves only when the slot goes free, which is when it is stored back.
    var tail = book.pointee.freeTail
    guard
      dropReferenceLeavingCount(s, hit: hit, hits: &hits, tail: &tail, scan: book.pointee.scans)
    else { return false }
    book.pointee.freeTail = tail
    book.pointee.counters.hits &+= hits
    book.pointee.freeCount += 1
    book.pointee.counters.nsfbufsused -= 1
    wakeWaiters()
    return true
  }

  /// ``dropReferenceLocked(_:hit:)`` but for the counts and the wake-up, which the caller
  /// does (once for many slots, in ``free(slots:)``): a slot that goes free adds its hits to
  /// `hits`, and is linked at the free list's tail but not counted in ``Book/freeCount``,
  /// nor out of the slots in use. Locked.
  @inlinable @inline(__always) func dropReferenceLeavingCount(
    _ s: Int, hit: Bool, hits: inout Int, tail: inout Int, scan: UInt32
  ) -> Bool {
    let l = line(s)
    let minus = hit ? SlotLine.oneRef | SlotLine.oneHit : SlotLine.oneRef
    var w = l.pointee.word.load(ordering: .relaxed)
    while true {
      let refs = SlotLine.references(w)
      if refs == 0 { doubleFree(s) }
      let desired: UInt64 = refs == 1 ? 0 : w &- minus
      if w & SlotLine.lockedOnly != 0 {
        // Nobody changes this word without the lock: a store, not a compare-and-swap. Nor
        // does it count hits: it became locked-only with none (free, or just mapped), and
        // its hits since took the lock.
        assert(SlotLine.hits(w) == 0, "a locked-only slot's word counts hits")
        l.pointee.word.store(desired, ordering: .releasing)
      } else {
        let (done, now) = l.pointee.word.weakCompareExchange(
          expected: w, desired: desired, successOrdering: .acquiringAndReleasing,
          failureOrdering: .relaxed)
        if !done {
          w = now
          continue
        }
        if refs == 1 { hits &+= SlotLine.hits(w &- minus) }
      }
      if refs > 1 { return false }
      linkFree(s, tail: &tail, scan: scan)
      return true
    }
  }

  /// Stops the process: a free of slot `s`, which has no reference. Called locked; drops
  /// the lock first, as the other traps taken with it held do.
  @usableFromInline @inline(never) func doubleFree(_ s: Int) -> Never {
    machine.unlock()
    fatalError("sf_buf_free: slot \(s) has no reference (double free, or never allocated)")
  }

  /// Whether no slot is in use (the window went idle when a drop made this true). Locked.
  @inlinable var isIdle: Bool { book.pointee.counters.nsfbufsused == 0 }

  /// Whether slot `s` has a reference. A free slot's word does not change without the lock,
  /// so with the lock held a `false` stays true.
  @inlinable func isInUse(_ s: Int) -> Bool {
    SlotLine.references(line(s).pointee.word.load(ordering: .relaxed)) > 0
  }

  /// Whether a miss is mapping slot `s` outside the lock (hits on it must wait).
  @inlinable func isBeingMapped(_ s: Int) -> Bool {
    line(s).pointee.word.load(ordering: .relaxed) & SlotLine.mapping != 0
  }

  /// Counts one more slot in use, `s`, and starts its new period of use.
  @inlinable func becameUsed(_ s: Int) {
    startedUse(s)
    countUsed(1)
  }

  /// Starts slot `s`'s new period of use (its generation), not yet counted in use.
  @inlinable func startedUse(_ s: Int) {
    // Written only under the lock: a load and a store, not a locked read-modify-write.
    let l = line(s)
    l.pointee.generation.store(
      l.pointee.generation.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
  }

  /// Counts `n` more slots in use, whose periods of use have started.
  @inlinable func countUsed(_ n: Int) {
    if isIdle { machine.windowBecameBusy() }
    book.pointee.counters.nsfbufsused += n
    if book.pointee.counters.nsfbufsused > book.pointee.counters.nsfbufspeak {
      book.pointee.counters.nsfbufspeak = book.pointee.counters.nsfbufsused
    }
  }

  // MARK: Free list, least recently freed at the head

  @inlinable @inline(__always) func insertFree(_ s: Int, atHead: Bool) {
    linkFree(s, atHead: atHead)
    book.pointee.freeCount += 1
  }

  /// Puts `s` on the free list, leaving ``Book/freeCount`` to the caller.
  @inlinable @inline(__always) func linkFree(_ s: Int, atHead: Bool) {
    guard atHead else {
      var tail = book.pointee.freeTail
      linkFree(s, tail: &tail, scan: book.pointee.scans)
      book.pointee.freeTail = tail
      return
    }
    if Machine.hazardRecords > 0 { line(s).pointee.freedAt = book.pointee.scans }
    line(s).pointee.freePrev = -1
    line(s).pointee.freeNext = book.pointee.freeHead
    if book.pointee.freeHead >= 0 {
      line(book.pointee.freeHead).pointee.freePrev = s
    } else {
      book.pointee.freeTail = s
    }
    book.pointee.freeHead = s
  }

  /// Puts `s` at the tail of the free list, whose tail slot is `tail` (the caller's copy of
  /// ``Book/freeTail``, stored back after linking one slot or many), stamped as freed
  /// before hazard scan number `scan` (``Book/scans``). Locked.
  @inlinable @inline(__always) func linkFree(_ s: Int, tail: inout Int, scan: UInt32) {
    if Machine.hazardRecords > 0 { line(s).pointee.freedAt = scan }
    line(s).pointee.freeNext = -1
    line(s).pointee.freePrev = tail
    if tail >= 0 { line(tail).pointee.freeNext = s } else { book.pointee.freeHead = s }
    tail = s
  }

  @inlinable func removeFree(_ s: Int) {
    unlinkFree(s)
    book.pointee.freeCount -= 1
  }

  /// The last slot of the stretch from free slot `first`, up to `last`, in which each slot
  /// is followed on the free list by the next: all of them are free (each is on the list,
  /// where its links are valid), and when the stretch reaches `last` they leave the list in
  /// one splice (``unlinkFree(run:count:inOrder:)``), as the free of a run that held them
  /// left them. Locked.
  @inlinable @inline(__always) func freeStretch(from first: Int, to last: Int) -> Int {
    // Line by line, a pointer step each (not `line(s)`, which reloads the lines' base), on
    // the links' own 32 bits.
    var l = line(first)
    var next = Int32(truncatingIfNeeded: first &+ 1)
    let end = Int32(truncatingIfNeeded: last)
    while next <= end && l.pointee.nextFree.load(ordering: .relaxed) == next {
      next &+= 1
      l = (UnsafeMutableRawPointer(l) + Self.lineStride).assumingMemoryBound(to: Slot.self)
    }
    return Int(next) &- 1
  }

  /// Takes the `count` free slots from `first` off the free list, leaving
  /// ``Book/freeCount`` to the caller: with one splice when each is followed on the list by
  /// the next (`inOrder`, found by ``freeStretch(from:to:)``), else one by one. The links
  /// inside the block are left as they were: a slot in use has no place on the list, and
  /// one going free sets both of its links.
  @inlinable @inline(__always) func unlinkFree(run first: Int, count: Int, inOrder: Bool) {
    let last = first &+ count &- 1
    guard inOrder else {
      for s in first...last { unlinkFree(s) }
      return
    }
    unlinkFree(from: first, to: last)
  }

  /// Takes `s` off the free list, leaving ``Book/freeCount`` to the caller.
  @inlinable func unlinkFree(_ s: Int) { unlinkFree(from: s, to: s) }

  /// Takes the stretch of the free list from `first` to `last` (which follows it) off the
  /// list: its neighbours are linked to each other, its ends unlinked.
  @inlinable @inline(__always) func unlinkFree(from first: Int, to last: Int) {
    let prev = line(first).pointee.freePrev
    let next = line(last).pointee.freeNext
    if prev >= 0 { line(prev).pointee.freeNext = next } else { book.pointee.freeHead = next }
    if next >= 0 { line(next).pointee.freePrev = prev } else { book.pointee.freeTail = prev }
    line(first).pointee.freePrev = -1
    line(last).pointee.freeNext = -1
  }

  // MARK: Sleepers: FIFO, one woken per free slot

  /// One sleeping allocation: its place in a queue, and its machine sleeper. Reused across
  /// the sleeps of one allocation, then kept for later ones: the allocator makes one only
  /// when more allocations wait at once than ever before.
  public final class Waiter {
    /// `queued` for a free slot, `woken` holding a reservation of one, or `awaitingMapping`
    /// of slot ``mappingSlot`` by another allocation.
    @usableFromInline enum State { case idle, queued, woken, awaitingMapping }
    /// The machine's sleep state for this waiter.
    public let sleeper: Machine.Sleeper
    @usableFromInline var state = State.idle
    @usableFromInline var next: Waiter?
    @usableFromInline var mappingSlot = -1
    /// Whether the last queueing was for another allocation's mapping rather than for a free
    /// slot: that wait is short and, like a wait for the lock, not interruptible. Set under
    /// the lock by the waiter's own allocation; read by it after it returns.
    public var waitsForMapping: Bool { _waitsForMapping }
    @usableFromInline var _waitsForMapping = false

    @usableFromInline init(sleeper: Machine.Sleeper) { self.sleeper = sleeper }
  }

  @inlinable func enqueue(_ w: Waiter, atFront: Bool) {
    w.state = .queued
    w._waitsForMapping = false
    if atFront {
      w.next = book.pointee.waitHead
      book.pointee.waitHead = w
      if book.pointee.waitTail == nil { book.pointee.waitTail = w }
    } else {
      w.next = nil
      if let t = book.pointee.waitTail { t.next = w } else { book.pointee.waitHead = w }
      book.pointee.waitTail = w
    }
  }

  /// Wakes queued sleepers, oldest first, while there are free slots nobody was promised.
  @inlinable func wakeWaiters() {
    if book.pointee.waitHead == nil { return }
    wakeQueued()
  }

  @inlinable @inline(never) func wakeQueued() {
    while book.pointee.freeCount > book.pointee.reserved, let w = book.pointee.waitHead {
      book.pointee.waitHead = w.next
      if book.pointee.waitHead == nil { book.pointee.waitTail = nil }
      w.next = nil
      w.state = .woken
      book.pointee.reserved += 1
      machine.wake(w.sleeper)
    }
  }

  /// A waiter for an allocation that must sleep: a spare one, or a new one (a heap
  /// allocation) when more allocations wait at once than ever before. Locked.
  @inlinable func spareWaiter() -> Waiter {
    guard let w = book.pointee.spareWaiters else {
      return Waiter(sleeper: machine.makeSleeper())
    }
    book.pointee.spareWaiters = w.next
    w.next = nil
    return w
  }

  /// Keeps the waiter of an allocation that has ended (returned, thrown, or given up) for a
  /// later one, and sets `waiter` to `nil`. The waiter is in no queue: every path out of an
  /// allocation leaves it idle. Locked.
  @inlinable func recycle(_ waiter: inout Waiter?) {
    guard let w = waiter else { return }
    waiter = nil
    precondition(w.state == .idle && w.next == nil, "sf_buf: a waiter left a queue while in it")
    w.next = book.pointee.spareWaiters
    book.pointee.spareWaiters = w
  }

  /// Queues `w` (made on first use) to sleep until the mapping of slot `s` by another
  /// allocation is published or refused.
  @inlinable @inline(never) func awaitMapping(_ s: Int, _ waiter: inout Waiter?) {
    let w = waiter ?? spareWaiter()
    waiter = w
    machine.prepareToSleep(w.sleeper)
    w.state = .awaitingMapping
    w._waitsForMapping = true
    w.mappingSlot = s
    w.next = state(s).pointee.mappingWaiters
    state(s).pointee.mappingWaiters = w
  }

  /// Wakes every allocation waiting for slot `s`'s mapping; they look in the hash again.
  /// Nearly always there is none: that check is inlined, the wake-ups are not (waking
  /// reaches the machine's sleeper, whose setup would otherwise be paid on every mapping).
  @inlinable func wakeMappingWaiters(_ s: Int) {
    if state(s).pointee.mappingWaiters != nil { wakeMappingWaitersSlow(s) }
  }

  @usableFromInline @inline(never) func wakeMappingWaitersSlow(_ s: Int) {
    while let w = state(s).pointee.mappingWaiters {
      state(s).pointee.mappingWaiters = w.next
      w.next = nil
      w.state = .idle
      w.mappingSlot = -1
      machine.wake(w.sleeper)
    }
  }

  /// A wait ended without a slot (signal, cancellation): leave the queue or pass on the
  /// wake-up, and count the failure.
  @inlinable func abandonLocked(_ w: Waiter) {
    switch w.state {
    case .awaitingMapping:
      // Not interruptible (``Waiter/waitsForMapping``): only a caller ignoring that gets here.
      machine.unlock()
      fatalError("sf_buf: a wait for another allocation's mapping cannot be abandoned")
    case .queued:
      if book.pointee.waitHead === w {
        book.pointee.waitHead = w.next
        if book.pointee.waitHead == nil { book.pointee.waitTail = nil }
      } else {
        var p = book.pointee.waitHead
        while let q = p, q.next !== w { p = q.next }
        p?.next = w.next
        if book.pointee.waitTail === w { book.pointee.waitTail = p }
      }
      w.next = nil
    case .woken:
      book.pointee.reserved -= 1
      wakeWaiters()
    case .idle:
      break
    }
    w.state = .idle
    book.pointee.counters.sf_allocfail &+= 1
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
  /// Make free slots quiet without reading the hazard words: a slot read through a hazard
  /// may be remapped under its reader.
  public static let ignoreHazards = SFBufFaults(rawValue: 8)
  /// Close the hazard gate at the first scan after it shuts, even while a reader let through
  /// before is still on a slot that holds no reference for it: that slot may be remapped
  /// under its reader.
  public static let skipGateGrace = SFBufFaults(rawValue: 16)
}

extension SFBufAllocator {
  /// Injects deliberate bugs (see ``SFBufFaults``). For mutation tests only.
  @_spi(Testing) public func injectFaults(_ f: SFBufFaults) {
    machine.lock()
    book.pointee.faults = f
    machine.unlock()
  }
}
