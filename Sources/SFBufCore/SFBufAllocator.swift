// The managed-window sf_buf allocator: the whole machine-independent algorithm.
//
// One lock, one hash from page to slot, one free list in least-recently-freed order, a
// reference count and a CPU set per slot, a FIFO of sleepers, and the counters of
// `netstat -m`. Read it top to bottom: allocation, free, reference, then the pieces.
//
// One thing goes beyond the original to let hits scale: each slot's reference count is an
// atomic word, and a hit on a slot that already has a reference takes another without the
// lock (found through the hash, then checked again once the reference is held). Only the
// transitions between free and in use (0 <-> 1 reference), misses and sleeps take the lock,
// so the free list and the counters stay exact. On machines with hazard words a scoped hit
// takes no reference at all, and a free slot is remapped only after a scan of the words
// (SFBufAllocator+hazards.swift).

import Synchronization

/// The sf_buf allocator for a machine without a direct map (FreeBSD's `subr_sfbuf.c`).
///
/// `nsfbufs` slots, each one page of the machine's window. A freed slot keeps its mapping
/// and stays in the hash, so a later request for the same page finds it and pays nothing.
/// A miss recycles the least recently freed slot. When every slot is in use, an allocation
/// sleeps (FIFO, one sleeper woken per freed slot), or fails with `SFB_NOWAIT`.
///
/// Beyond the original: the hash is searched again after every wake-up, so a page is never
/// mapped by two slots; sleepers are served in arrival order without a thundering herd; a
/// failure says why; misuse (double free, foreign slot, unwired page, unpinned
/// `SFB_CPUPRIVATE`) stops with a message naming it; a hit on a mapping in use takes no lock
/// (on machines whose TLBs the hardware keeps coherent), and a scoped one no reference
/// either on machines with hazard words (``beginHit(_:flags:hazard:)``); and a
/// ``SFBufReclaimPolicy`` can recycle free slots in batches.
///
/// Slots are named by their index, `0 ..< nsfbufs`; slot `i` is the `i`-th page of the
/// window. Every method takes the machine's lock for the time it needs it.
public final class SFBufAllocator<Machine: SFBufMachine> {
  public typealias Page = Machine.Page

  /// The machine whose window this allocator manages.
  public let machine: Machine
  /// The number of slots (`kern.ipc.nsfbufs`).
  public let nsfbufs: Int
  /// How misses recycle free slots.
  public let policy: SFBufReclaimPolicy

  /// Everything a slot keeps, in one cache line (64 bytes on the host), in two parts at
  /// two addresses: the words (``Slot``), which hits read without the lock, and the values
  /// only the lock guards (``SlotState``). The words are atomics, written under the lock but
  /// read by anybody; the state is read without the lock only by a holder of a reference.
  /// Writing the state never touches the words, so that a write under the lock is never an
  /// access of the memory a lock-free hit reads (ThreadSanitizer checks it).
  @usableFromInline struct Slot: ~Copyable {
    /// References, the mapping flag and hits without the lock (see ``SlotLine``).
    @usableFromInline let word = Atomic<UInt64>(0)
    /// The cached page's `hashKey`; written under the lock.
    @usableFromInline let key = Atomic<UInt>(0)
    /// The next slot of the hash chain, or -1 (``nextSlot``); written under the lock.
    @usableFromInline let next = Atomic<Int32>(-1)
    /// Bumped each time the slot goes from free to in use (under the lock, before the
    /// reference word is published), so that a handle made in one period of use is told
    /// from a handle of a later one: see ``generation(ofSlot:)``.
    @usableFromInline let generation = Atomic<UInt32>(0)
    /// The first slot of hash bucket *number this slot's index*, or -1 (``firstSlot``; the
    /// buckets live in the lines: see ``head(_:)``).
    @usableFromInline let bucket = Atomic<Int32>(-1)
    /// The free list's links (``freePrev``, ``freeNext``); locked.
    @usableFromInline let prevFree = Atomic<Int32>(-1)
    @usableFromInline let nextFree = Atomic<Int32>(-1)
    /// ``released`` in bit 0, ``marked`` in bit 1, ``freedAt`` in the others; locked.
    @usableFromInline let bits = Atomic<UInt32>(1)

    // Slot numbers are `Int` everywhere; only the links stored in the line are 32 bits wide,
    // to keep the line in 64 bytes. These are the only conversions. The fields written
    // under the lock are atomics accessed with relaxed ordering (plain loads and stores on
    // the host), so that their writes are not writes of the line.
    @inlinable var nextSlot: Int { Int(next.load(ordering: .relaxed)) }
    @inlinable func setNextSlot(_ s: Int, releasing: Bool) {
      if releasing {
        next.store(Int32(truncatingIfNeeded: s), ordering: .releasing)
      } else {
        next.store(Int32(truncatingIfNeeded: s), ordering: .relaxed)
      }
    }
    @inlinable var firstSlot: Int { Int(bucket.load(ordering: .relaxed)) }
    @inlinable var firstSlotAcquiring: Int { Int(bucket.load(ordering: .acquiring)) }
    @inlinable func setFirstSlot(_ s: Int) {
      bucket.store(Int32(truncatingIfNeeded: s), ordering: .releasing)
    }
    @inlinable var freePrev: Int {
      get { Int(prevFree.load(ordering: .relaxed)) }
      nonmutating set { prevFree.store(Int32(truncatingIfNeeded: newValue), ordering: .relaxed) }
    }
    @inlinable var freeNext: Int {
      get { Int(nextFree.load(ordering: .relaxed)) }
      nonmutating set { nextFree.store(Int32(truncatingIfNeeded: newValue), ordering: .relaxed) }
    }
    /// Nothing is known to be present in the slot: never mapped, mapping refused, or its
    /// translation dropped by a batch (``SFBufMachine/unmap(slots:)``).
    @inlinable var released: Bool {
      get { bits.load(ordering: .relaxed) & 1 != 0 }
      nonmutating set { setBits(1, newValue) }
    }
    /// Scratch for ``releaseBatch(_:)``.
    @inlinable var marked: Bool {
      get { bits.load(ordering: .relaxed) & 2 != 0 }
      nonmutating set { setBits(2, newValue) }
    }
    /// The number of hazard scans made before the slot last went free, modulo 2^30 (see
    /// ``SFBufAllocator/isQuiet(_:)``).
    @inlinable var freedAt: UInt32 {
      get { bits.load(ordering: .relaxed) >> 2 }
      nonmutating set {
        bits.store(bits.load(ordering: .relaxed) & 3 | newValue << 2, ordering: .relaxed)
      }
    }
    @inlinable func setBits(_ mask: UInt32, _ on: Bool) {
      let b = bits.load(ordering: .relaxed)
      bits.store(on ? b | mask : b & ~mask, ordering: .relaxed)
    }

    @inlinable init() {}
  }

  /// What the lock guards in a slot, beside its words (``Slot``). Read without the lock only
  /// by a holder of one of the slot's references, which keeps it from changing.
  @usableFromInline struct SlotState {
    @usableFromInline var page: Page?
    /// Allocations waiting for this slot's mapping by a miss outside the lock.
    @usableFromInline var mappingWaiters: Waiter?

    @inlinable init() {}
  }

  /// What the lock guards for the pool.
  @usableFromInline struct Book {
    @usableFromInline var freeHead = -1
    @usableFromInline var freeTail = -1
    @usableFromInline var freeCount = 0
    /// Free slots promised to sleepers that were woken and have not run yet.
    @usableFromInline var reserved = 0
    /// Slots claimed by misses that map them outside the lock, not yet published.
    @usableFromInline var mappingsInFlight = 0
    @usableFromInline var waitHead: Waiter?
    @usableFromInline var waitTail: Waiter?
    /// Waiters of finished allocations, kept for the next ones that must sleep.
    @usableFromInline var spareWaiters: Waiter?
    /// The counters, less the hits taken without the lock (counted in the slots' words).
    @usableFromInline var counters = SFBufStats()
    /// Deliberate bugs, for showing that the coherence checkers catch them. Empty in use.
    @usableFromInline var faults = SFBufFaults()
    /// Hazard scans begun so far, modulo 2^30 (see ``isQuiet(_:)``).
    @usableFromInline var scans: UInt32 = 0
    /// The newest hazard scan ended: the free slots it covers are quiet.
    @usableFromInline var quietBelow: UInt32 = 0
    /// References taken for readers through hazards (debts made), ever.
    @usableFromInline var debts = 0
    /// Debts not yet settled.
    @usableFromInline var owed = 0
    /// Whether hits go through hazards at all, and why (see ``HazardGate``).
    @usableFromInline var gate = HazardGate()
  }

  /// The allocator's memory, one allocation owned here and freed with the allocator: the
  /// book (behind a pointer, so that the locked state needs no exclusivity checks), then the
  /// slots' lines, ``lineStride`` bytes apart and cache-line aligned, then the CPU sets
  /// (CPUs whose TLB holds each slot's translation; one unused set on machines that do not
  /// track TLBs).
  @usableFromInline struct Storage: ~Copyable {
    @usableFromInline let book: UnsafeMutablePointer<Book>
    @usableFromInline let lines: UnsafeMutableRawPointer
    @usableFromInline let cpuSets: UnsafeMutablePointer<CPUSet>
    /// This pool's side of each of the machine's hazard words (``HazardRecord``), 64 bytes
    /// apart; none on a machine without them.
    @usableFromInline let records: UnsafeMutableRawPointer
    @usableFromInline let slots: Int
    @usableFromInline let cpuSetCount: Int

    @usableFromInline init(slots: Int) {
      self.slots = slots
      cpuSetCount = Machine.tracksTLBs ? slots : 1
      let linesAt = (MemoryLayout<Book>.stride + 63) & ~63
      let recordsAt = linesAt + slots * SFBufAllocator.lineStride
      let cpuSetsAt = recordsAt + Machine.hazardRecords * HazardRecord.stride
      let base = UnsafeMutableRawPointer.allocate(
        byteCount: cpuSetsAt + cpuSetCount * MemoryLayout<CPUSet>.stride, alignment: 64)
      records = base + recordsAt
      for r in 0..<Machine.hazardRecords {
        (records + r * HazardRecord.stride).bindMemory(to: HazardRecord.self, capacity: 1)
          .initialize(
            to: HazardRecord())
      }
      book = base.bindMemory(to: Book.self, capacity: 1)
      book.initialize(to: Book())
      lines = base + linesAt
      for s in 0..<slots {
        let line = lines + s * SFBufAllocator.lineStride
        line.bindMemory(to: Slot.self, capacity: 1).initialize(to: Slot())
        (line + SFBufAllocator.stateOffset).bindMemory(to: SlotState.self, capacity: 1)
          .initialize(to: SlotState())
      }
      cpuSets = (base + cpuSetsAt).bindMemory(to: CPUSet.self, capacity: cpuSetCount)
      cpuSets.initialize(repeating: CPUSet(), count: cpuSetCount)
    }

    deinit {
      for s in 0..<slots {
        let line = lines + s * SFBufAllocator.lineStride
        _ = line.assumingMemoryBound(to: Slot.self).move()
        _ = (line + SFBufAllocator.stateOffset).assumingMemoryBound(to: SlotState.self).move()
      }
      for r in 0..<Machine.hazardRecords {
        _ = (records + r * HazardRecord.stride).assumingMemoryBound(to: HazardRecord.self).move()
      }
      cpuSets.deinitialize(count: cpuSetCount)
      book.deinitialize(count: 1)
      UnsafeMutableRawPointer(book).deallocate()
    }
  }

  @usableFromInline let storage: Storage
  /// 0 while hits go through hazard words; otherwise they take references, and a reader
  /// counts its accesses and asks every this many whether to open the gate again (a power
  /// of two; see ``HazardGate``). Written under the lock, read by readers without it.
  @usableFromInline let gateWord = Atomic<Int>(0)
  /// 64 less the log2 of the number of hash buckets (a power of two, at most `nsfbufs`).
  @usableFromInline let bucketShift: Int
  /// The number of hash buckets less one.
  @usableFromInline let bucketMask: Int

  /// What the lock guards (``Book``).
  @inlinable var book: UnsafeMutablePointer<Book> { storage.book }
  /// CPUs whose TLB holds each slot's translation; only on machines that track TLBs.
  @inlinable var cpuSets: UnsafeMutablePointer<CPUSet> { storage.cpuSets }

  /// Creates an allocator of `nsfbufs` slots over `machine`'s window, all free, in address
  /// order, recycling them by `policy`.
  ///
  /// - Precondition: `1 <= nsfbufs <= Int32.max`, and a batch of at least one slot; the
  ///   caller validates user input first.
  public init(machine: Machine, nsfbufs: Int, policy: SFBufReclaimPolicy = .faithful) {
    precondition(nsfbufs > 0 && nsfbufs <= Int(Int32.max), "nsfbufs must be in 1...Int32.max")
    if case .batched(let b) = policy { precondition(b >= 1, "a batch holds at least one slot") }
    self.machine = machine
    self.nsfbufs = nsfbufs
    self.policy = policy
    storage = Storage(slots: nsfbufs)
    var shift = 0
    while (2 << shift) <= nsfbufs { shift += 1 }
    bucketShift = UInt.bitWidth - shift
    bucketMask = (1 << shift) - 1
    book.pointee.counters.nsfbufs = nsfbufs
    for s in 0..<nsfbufs { insertFree(s, atHead: false) }
    // No reader has seen a slot in use yet: the slots are quiet as if a scan had been made.
    book.pointee.scans = 1
    book.pointee.quietBelow = 1
  }

  // MARK: - Allocation

  /// Returns a slot mapping `page`, with one reference (`sf_buf_alloc`).
  ///
  /// A page already cached in a slot is a *hit*: it costs a hash lookup and never fails or
  /// sleeps, even with `SFB_NOWAIT` and a full window; when the slot is already in use, the
  /// hit takes no lock (one compare-and-swap on the slot's word), unless a page run holds
  /// the slot (see ``allocateRun(count:flags:key:fill:)``). Otherwise the least
  /// recently freed slot is remapped (one `Machine.map`), or the caller sleeps until a slot
  /// is freed and then looks in the hash again. Each slot that goes from free to in use is
  /// reported to the machine when it is the window's first
  /// (``SFBufMachine/windowBecameBusy()``).
  ///
  /// - Precondition: `page` is wired; with `.cpuPrivate`, the caller is pinned.
  /// - Throws: ``SFBufError/wouldBlock`` (`.noWait`, window full),
  ///   ``SFBufError/interrupted`` (`.interruptible`, a signal while asleep), or
  ///   ``SFBufError/mappingRefused(errno:)``.
  @inlinable
  public func allocate(_ page: Page, flags: SFBufFlags = []) throws(SFBufError) -> Int {
    checkPinned(flags)
    if !Machine.tracksTLBs {
      // A page mapped in a slot in use is wired: its holders keep it wired while they hold
      // the mapping, so the wire check (several dependent loads) waits for the other paths.
      let s = referenceIfInUse(page)
      if s >= 0 { return s }
    }
    checkWired(page)
    var waiter: Waiter? = nil
    machine.lock()
    while true {
      let slot: Int?
      do {
        slot = try attemptAndMap(page, flags, &waiter)
      } catch {
        recycle(&waiter)
        machine.unlock()
        throw error
      }
      if let slot {
        recycle(&waiter)
        machine.unlock()
        return slot
      }
      // Queued: sleep without the lock, then try again from the lookup.
      let interruptible = flags.contains(.interruptible) && !waiter!.waitsForMapping
      machine.unlock()
      let woke = machine.sleep(waiter!.sleeper, interruptible: interruptible)
      machine.lock()
      if !woke {
        abandonLocked(waiter!)
        recycle(&waiter)
        machine.unlock()
        throw .interrupted
      }
    }
  }

  /// One allocation attempt for callers that wait in their own way (an `async` task): returns
  /// the slot, or `nil` after queueing `waiter` (set on first use) and preparing its
  /// sleeper. After the sleeper is woken, call again with the same `waiter`; if the wait ends
  /// otherwise (cancellation), call ``abandon(_:)``. Once the call returns a slot or throws,
  /// `waiter` is `nil` again (the allocator keeps it for a later wait).
  @inlinable
  public func tryAllocate(
    _ page: Page, flags: SFBufFlags, waiter: inout Waiter?
  ) throws(SFBufError) -> Int? {
    checkCaller(page, flags)
    machine.lock()
    defer { machine.unlock() }
    do {
      let slot = try attemptAndMap(page, flags, &waiter)
      if slot != nil { recycle(&waiter) }
      return slot
    } catch {
      recycle(&waiter)
      throw error
    }
  }

  /// Gives up a wait begun by ``tryAllocate(_:flags:waiter:)``: leaves the queue, passes on
  /// a wake-up it may have received, and counts a failed allocation. `waiter` must not be
  /// used again.
  public func abandon(_ waiter: Waiter) {
    machine.lock()
    abandonLocked(waiter)
    var w: Waiter? = waiter
    recycle(&w)
    machine.unlock()
  }

  /// ``attempt``, then the mapping of a slot it claimed (outside the lock when misses map
  /// outside it). Locked on entry and on return (thrown or not). Returns the slot, or `nil` once `waiter` is queued.
  @inlinable
  func attemptAndMap(
    _ page: Page, _ flags: SFBufFlags, _ waiter: inout Waiter?
  ) throws(SFBufError) -> Int? {
    switch try attempt(page, flags, &waiter) {
    case .slot(let s): return s
    case .claimed(let s):
      try mapClaimed(s, count: 1, flags) { _ in page }
      return s
    case .queued: return nil
    }
  }

  /// What one ``attempt`` came to.
  @usableFromInline enum Attempt {
    /// The slot, mapped.
    case slot(Int)
    /// A slot claimed for the page, which the caller maps (``mapClaimed(_:count:_:page:)``).
    case claimed(Int)
    /// The waiter is queued: sleep, then try again.
    case queued
  }

  /// Whether misses map outside the lock (see ``SFBufReclaimPolicy/batched(batch:)``).
  @inlinable var mapsOutsideLock: Bool {
    guard Machine.mapsConcurrently, case .batched = policy else { return false }
    return true
  }

  /// The allocation algorithm proper. Locked.
  @inlinable
  func attempt(
    _ page: Page, _ flags: SFBufFlags, _ waiter: inout Waiter?
  ) throws(SFBufError) -> Attempt {
    var wasWoken = false
    if let w = waiter, w.state == .woken {
      // We hold a reservation from the wake-up; give it back and compete like everybody.
      w.state = .idle
      book.pointee.reserved -= 1
      wasWoken = true
    }
    // Whatever this attempt comes to, a reservation given back goes to the next sleeper
    // (when the attempt queues again, no slot is free for anyone and this wakes nobody).
    defer { if wasWoken { wakeWaiters() } }
    while true {
      // 1. Lookup first, after every wake-up too: a hit never fails.
      let cached = lookup(page)
      if cached >= 0 {
        if isBeingMapped(cached) {
          // Another miss is mapping the page outside the lock: wait for it, then look again.
          awaitMapping(cached, &waiter)
          return .queued
        }
        referenceLocked(cached)
        book.pointee.counters.hits &+= 1
        applyCPURules(cached, flags, hit: true)
        return .slot(cached)
      }
      // 2. Miss: recycle the least recently freed slot not promised to a woken sleeper,
      // once quiet; with none free, first look for a reference held for a reader that has
      // left (see SFBufAllocator+hazards.swift). A scan drops the lock for its barrier:
      // then look again from the start.
      if book.pointee.freeCount > book.pointee.reserved
        ? !isQuiet(book.pointee.freeHead) : hasForgottenDebt()
      {
        quietFreeSlots()
        continue
      }
      if book.pointee.freeCount > book.pointee.reserved {
        let s = book.pointee.freeHead
        if case .batched(let batch) = policy, !line(s).pointee.released { releaseBatch(batch) }
        removeFree(s)
        book.pointee.counters.misses &+= 1
        claim(s, for: page)
        return .claimed(s)
      }
      // 3. Full window.
      if flags.contains(.noWait) {
        book.pointee.counters.sf_allocfail &+= 1
        throw .wouldBlock
      }
      queue(&waiter, atFront: wasWoken)
      return .queued
    }
  }

  /// Step 3 of ``attempt``, out of line: queues `waiter` (made on first use) to sleep.
  @inlinable @inline(never) func queue(_ waiter: inout Waiter?, atFront: Bool) {
    book.pointee.counters.sf_allocwait &+= 1
    let w = waiter ?? spareWaiter()
    waiter = w
    machine.prepareToSleep(w.sleeper)
    enqueue(w, atFront: atFront)
  }

  // MARK: - The miss: claim, map, then publish or give back

  /// Claims free slot `s` (already off the free list) for `page`: the page goes into the
  /// hash at once, so that nobody maps it twice, with the slot's one reference and its
  /// ``SlotLine/mapping`` flag, so that hits wait. A claim others can see (mapped outside the
  /// lock) counts the slot in use at once; one mapped under the lock is counted when it is
  /// published, so that a refused mapping leaves no trace (`nsfbufspeak`, the slot's
  /// generation, the machine's hooks). Locked.
  @inlinable func claim(_ s: Int, for page: Page) {
    forget(s)
    state(s).pointee.page = page
    claimed(s, key: page.hashKey)
  }

  /// Checks the page a run's `fill` stored in `cell`: there is one, and its hash key is the
  /// one the run looked up. Read in place, as ``checkWired(cell:)`` does.
  @inlinable func checkFilled(_ cell: inout Page?, key: UInt) {
    guard cell != nil, cell.unsafelyUnwrapped.hashKey == key else {
      fatalError(
        "SFBufAllocator.allocateRun: fill(i, &cell) must store the page whose hashKey is key(i)")
    }
  }

  /// ``checkWired(_:)`` for the page a slot's cell holds, read in place: within an `inout`
  /// access nobody else writes the cell, so the page is not copied (which would retain what
  /// it holds). Locked.
  @inlinable func checkWired(cell: inout Page?) {
    guard cell != nil else { fatalError("SFBufAllocator: a slot holds no page to map") }
    checkWired(cell.unsafelyUnwrapped)
  }

  /// The rest of a claim, once slot `s` holds its new page, whose hash key is `key`. Locked.
  @inlinable func claimed(_ s: Int, key: UInt) {
    claimedUncounted(s, key: key)
    book.pointee.mappingsInFlight += 1
    if mapsOutsideLock { countUsed(1) }
  }

  /// ``claimed(_:key:)`` but for the counts (mappings in flight, slots in use), which the
  /// caller updates. Locked.
  @inlinable func claimedUncounted(_ s: Int, key: UInt) {
    claimedUncounted(s, key: key, bucket: bucket(key))
  }

  /// ``claimedUncounted(_:key:)``, given the key's bucket `b`.
  @inlinable @inline(__always) func claimedUncounted(_ s: Int, key: UInt, bucket b: Int) {
    hash(s, key: key, bucket: b)
    line(s).pointee.word.store(SlotLine.oneRef | SlotLine.mapping, ordering: .relaxed)
    if mapsOutsideLock { startedUse(s) }
  }

  /// Maps the `count` slots from `first`, claimed for `page(0)`, `page(1)`, ... with one
  /// machine call (``SFBufMachine/map(_:slot:)`` for one page, ``SFBufMachine/map(run:count:slot:)``
  /// for a run), without the lock when misses map outside it; then publishes them or, if the
  /// machine refuses, gives them back, counts a failed allocation and throws
  /// ``SFBufError/mappingRefused(errno:)``. Locked on entry and on return.
  @inlinable @inline(never)
  func mapClaimed(
    _ first: Int, count: Int, _ flags: SFBufFlags, page: (Int) -> Page
  ) throws(SFBufError) {
    let slots = first..<(first + count)
    let outside = mapsOutsideLock
    // A run's map replaces whatever translations its slots still hold, whether or not
    // other slots are in use: dropping them first with a call of their own
    // (``SFBufMachine/unmap(slots:)``) was measured slower on the host, with two threads
    // scanning (see the README's "Then: like with like").
    if outside { machine.unlock() }
    let result = Result { () throws(SFBufMapError) in
      count == 1
        ? try machine.map(page(0), slot: slots.lowerBound)
        : try machine.map(run: page(0), count: count, slot: slots.lowerBound)
    }
    if outside { machine.lock() }
    switch result {
    case .success(let oldWasLive):
      book.pointee.mappingsInFlight -= count
      book.pointee.counters.remaps &+= count
      if !mapsOutsideLock { countUsed(count) }
      for s in slots { published(s, oldWasLive: oldWasLive, flags, run: count > 1) }
    case .failure(let error):
      for s in slots.reversed() { giveBack(s) }
      book.pointee.counters.sf_allocfail &+= 1
      wakeWaiters()
      throw .mappingRefused(errno: error.code)
    }
  }

  /// Ends the claim of slot `s` (``claim(_:for:)``), now mapped: hits may take it (with the
  /// lock when `run`: the slot is ``SlotLine/lockedOnly``). Wakes the allocations waiting for
  /// it. Locked.
  ///
  /// The caller counts the slot out of ``Book/mappingsInFlight``, as one more remap and,
  /// when it mapped under the lock, as one more slot in use (``countUsed(_:)``).
  @inlinable func published(_ s: Int, oldWasLive: Bool, _ flags: SFBufFlags, run: Bool) {
    wakeMappingWaiters(s)
    replacedTranslation(s, wasLive: oldWasLive)
    line(s).pointee.released = false
    if !mapsOutsideLock { startedUse(s) }
    // Publishes the page to hits that find the slot without the lock.
    line(s).pointee.word.store(
      run ? SlotLine.oneRef | SlotLine.lockedOnly : SlotLine.oneRef, ordering: .releasing)
    applyCPURules(s, flags, hit: false)
  }

  /// Ends the claim of slot `s`, whose mapping was refused: the page leaves the hash, the
  /// slot goes free at the head of the list (it maps nothing now, the cheapest to map).
  /// Wakes the allocations waiting for it, which look again and miss. Locked.
  @inlinable func giveBack(_ s: Int) {
    book.pointee.mappingsInFlight -= 1
    wakeMappingWaiters(s)
    line(s).pointee.word.store(0, ordering: .relaxed)
    if mapsOutsideLock {
      book.pointee.counters.nsfbufsused -= 1
      if isIdle { machine.windowBecameIdle() }
    }
    forget(s)
    line(s).pointee.released = true
    insertFree(s, atHead: true)
  }

  /// Drops slot `s`'s page from the hash, if it has one. Locked; `s` is free.
  @inlinable func forget(_ s: Int) {
    if state(s).pointee.page != nil {
      unhash(s)
      state(s).pointee.page = nil
    }
  }

  /// The one place a slot's CPU set is reset: when its translation was replaced and the old
  /// one was live (some TLB may hold it), no CPU is known to hold the new one. Locked.
  @inlinable func replacedTranslation(_ s: Int, wasLive: Bool) {
    guard Machine.tracksTLBs, wasLive, !book.pointee.faults.contains(.keepCPUSetOnRemap) else {
      return
    }
    cpuSets[s] = .none
  }

  /// Make the translation valid on the calling CPU, and on every other CPU unless
  /// the mapping is CPU-private. Locked.
  @inlinable func applyCPURules(_ s: Int, _ flags: SFBufFlags, hit: Bool) {
    guard Machine.tracksTLBs else { return }
    let faults = book.pointee.faults
    var cpus = cpuSets[s]
    let me = machine.currentCPU
    if !cpus.contains(me) {
      if !faults.contains(.skipLocalInvalidate) { machine.invalidateLocal(slot: s) }
      cpus.insert(me)
    }
    if !flags.contains(.cpuPrivate) {
      let others = machine.allCPUs.subtracting(cpus)
      if !others.isEmpty {
        if !(hit && faults.contains(.skipShootdownOnHit)) {
          machine.shootdown(slot: s, cpus: others)
        }
        cpus.formUnion(others)
      }
    }
    cpuSets[s] = cpus
  }

  @inlinable func checkCaller(_ page: Page, _ flags: SFBufFlags) {
    checkPinned(flags)
    checkWired(page)
  }

  @inlinable func checkPinned(_ flags: SFBufFlags) {
    if flags.contains(.cpuPrivate) && !machine.isPinned {
      fatalError(
        "sf_buf_alloc: SFB_CPUPRIVATE from a thread that is not pinned (call sched_pin first)")
    }
  }

  @inlinable func checkWired(_ page: Page) {
    if !machine.isWired(page) { notWired() }
  }

  /// ``checkWired(_:)`` for the `count` pages of a run from `first`, at once. Locked: the
  /// lock is dropped before the process stops, as the other traps taken with it held do.
  @inlinable func checkWired(run first: Page, count: Int) {
    if !machine.isWired(run: first, count: count) {
      machine.unlock()
      notWired()
    }
  }

  @usableFromInline @inline(never) func notWired() -> Never {
    fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
  }

  // MARK: - Free and reference

  /// Drops one reference to slot `s` (`sf_buf_free`). At zero the slot goes to the tail of
  /// the free list with its mapping kept, and one sleeper is woken.
  ///
  /// Cost: one compare-and-swap while other references remain; the lock for the last one,
  /// and for any reference of a slot a page run mapped or took.
  /// - Returns: whether that was the last reference (the slot is free now).
  /// - Precondition: `s` is a slot of this allocator with at least one reference; anything
  ///   else stops the process with a message naming the mistake.
  @inlinable @discardableResult
  public func free(_ s: Int) -> Bool {
    checkSlot(s, "sf_buf_free")
    if dropReferenceIfNotLast(s, hit: false) { return false }
    machine.lock()
    let last = dropReferenceLocked(s, hit: false)
    let idle = last && isIdle
    machine.unlock()
    if idle { machine.windowBecameIdle() }
    return last
  }

  /// Drops one reference of each slot of `slots` (`sf_buf_free` of each), taking the lock
  /// once for all of them (not at all when none is the last reference of its slot). Each
  /// slot freed goes to the tail of the free list, in the order given; then, still under
  /// the lock, the slots freed leave the count in use and sleepers are woken, one per free
  /// slot not yet promised to one.
  ///
  /// `slots` may be any sequence of slots: a buffer of them, or a view of the holder's own
  /// records (the host's `SFBufBatch` passes its entries' slots, with no copy).
  ///
  /// - Complexity: O(`slots.count`); one compare-and-swap per slot, under the lock when the
  ///   slot's last reference is among them; a plain store under the lock for a slot a page
  ///   run mapped or took, whose word changes only with the lock held.
  /// - Precondition: as ``free(_:)``, for each slot (a slot may appear as many times as the
  ///   caller holds references to it).
  @inlinable
  public func free<Slots: Sequence<Int>>(slots: Slots) {
    // Without the lock until a slot's last reference: then with it, for all that follow,
    // with the free list's tail and the hazard scan's number read once.
    var rest = slots.makeIterator()
    var next = rest.next()
    while let s = next {
      checkSlot(s, "sf_buf_free")
      if !dropReferenceIfNotLast(s, hit: false) { break }
      next = rest.next()
    }
    guard var s = next else { return }
    machine.lock()
    var freed = 0
    var hits = 0
    var tail = book.pointee.freeTail
    let scan = book.pointee.scans
    while true {
      if dropReferenceLeavingCount(s, hit: false, hits: &hits, tail: &tail, scan: scan) {
        freed &+= 1
      }
      guard let n = rest.next() else { break }
      checkSlot(n, "sf_buf_free")
      s = n
    }
    book.pointee.freeTail = tail
    if freed > 0 {
      book.pointee.freeCount += freed
      book.pointee.counters.hits &+= hits
      book.pointee.counters.nsfbufsused -= freed
      wakeWaiters()
    }
    let idle = freed > 0 && isIdle
    machine.unlock()
    if idle { machine.windowBecameIdle() }
  }

  /// Adds a reference to slot `s`, which must be in use (`sf_buf_ref`). Takes no lock,
  /// unless a page run mapped the slot (or took it from the free list).
  @inlinable
  public func ref(_ s: Int) {
    checkSlot(s, "sf_buf_ref")
    let l = line(s)
    var w = l.pointee.word.load(ordering: .relaxed)
    while true {
      if SlotLine.references(w) == 0 {
        fatalError("sf_buf_ref: slot \(s) is free; only a mapping in use can gain a reference")
      }
      if w & SlotLine.lockedOnly != 0 { return refLocked(s) }
      let (done, now) = l.pointee.word.weakCompareExchange(
        expected: w, desired: w &+ SlotLine.oneRef, ordering: .relaxed)
      if done { return }
      w = now
    }
  }

  /// ``ref(_:)`` of a ``SlotLine/lockedOnly`` slot: with the lock, which its word needs.
  @usableFromInline @inline(never) func refLocked(_ s: Int) {
    machine.lock()
    defer { machine.unlock() }
    // Still in use (the caller holds a reference), so it stays locked-only.
    referenceLocked(s)
  }

  /// ``free(_:)`` for a handle that recorded the slot's ``generation(ofSlot:)`` when it was
  /// made: a handle whose mapping was freed since, and whose slot went back to use for
  /// another holder (of another page or the same), stops the process instead of dropping
  /// that holder's reference. Cost: one more load of the slot's cache line.
  @inlinable @discardableResult
  public func free(_ s: Int, generation: UInt32) -> Bool {
    checkSlot(s, "sf_buf_free")
    checkGeneration(s, generation, "sf_buf_free")
    return free(s)
  }

  /// ``ref(_:)`` for a handle that recorded the slot's ``generation(ofSlot:)``: a stale
  /// handle stops the process (see ``free(_:generation:)``).
  @inlinable
  public func ref(_ s: Int, generation: UInt32) {
    checkSlot(s, "sf_buf_ref")
    checkGeneration(s, generation, "sf_buf_ref")
    ref(s)
  }

  /// Which period of use slot `s` is in: it changes each time the slot goes from free to in
  /// use. Stable while the caller holds a reference to the slot. O(1), no lock.
  @inlinable public func generation(ofSlot s: Int) -> UInt32 {
    line(s).pointee.generation.load(ordering: .relaxed)
  }

  @inlinable func checkGeneration(_ s: Int, _ generation: UInt32, _ caller: StaticString) {
    let l = line(s)
    if l.pointee.generation.load(ordering: .relaxed) != generation
      && SlotLine.references(l.pointee.word.load(ordering: .relaxed)) > 0
    {
      fatalError(
        "\(caller): stale sf_buf: its mapping was freed and slot \(s) is in use again by another holder (a mapping freed or referenced after its last sf_buf_free)"
      )
    }
  }

  @inlinable func checkSlot(_ s: Int, _ caller: StaticString) {
    if s < 0 || s >= nsfbufs {
      fatalError("\(caller): \(s) is not a slot of this pool (foreign sf_buf)")
    }
  }

  // MARK: - Queries

  /// The page slot `s` maps (`sf_buf_page`). Valid while the caller holds a reference.
  @inlinable public func page(ofSlot s: Int) -> Page {
    state(s).pointee.page!
  }

  /// The slot caching `page`, in use or free, if any. For tests and tools.
  public func cachedSlot(of page: Page) -> Int? {
    machine.lock()
    defer { machine.unlock() }
    let s = lookup(page)
    return s >= 0 ? s : nil
  }

  /// The number of references slot `s` holds.
  public func references(ofSlot s: Int) -> Int {
    SlotLine.references(line(s).pointee.word.load(ordering: .acquiring))
  }

  /// The CPUs whose TLB is known to hold slot `s`'s translation.
  public func cpus(ofSlot s: Int) -> CPUSet {
    machine.lock()
    defer { machine.unlock() }
    return Machine.tracksTLBs ? cpuSets[s] : .none
  }

  /// The free slots, least recently freed first.
  @_spi(Testing) public func freeList() -> [Int] {
    machine.lock()
    defer { machine.unlock() }
    var out: [Int] = []
    var s = book.pointee.freeHead
    while s >= 0 {
      out.append(s)
      s = line(s).pointee.freeNext
    }
    return out
  }

  /// A consistent copy of the counters (hits taken without the lock included).
  ///
  /// - Complexity: O(`nsfbufs`).
  public var stats: SFBufStats {
    machine.lock()
    defer { machine.unlock() }
    var c = book.pointee.counters
    c.hits &+= hazardHits
    for s in 0..<nsfbufs {
      c.hits &+= SlotLine.hits(line(s).pointee.word.load(ordering: .relaxed))
    }
    return c
  }

  /// Free slots that a miss could take now: those not promised to woken sleepers.
  ///
  /// - Complexity: O(1), with the lock.
  public var freeSlots: Int {
    machine.lock()
    defer { machine.unlock() }
    return book.pointee.freeCount - book.pointee.reserved
  }

  /// References taken so far for readers through hazard words, whose other holders all let
  /// go during their hits (see ``beginHit(_:flags:hazard:)``).
  @_spi(Testing) public var hazardDebts: Int {
    machine.lock()
    defer { machine.unlock() }
    return book.pointee.debts
  }

  /// The hash bucket a page with hash key `key` goes to, and the number of buckets.
  @_spi(Testing) public func hashBucket(ofKey key: UInt) -> (bucket: Int, of: Int) {
    (bucket(key), bucketMask + 1)
  }

  /// Sleepers now queued (not yet woken).
  @_spi(Testing) public var sleepers: Int {
    machine.lock()
    defer { machine.unlock() }
    var n = 0
    var w = book.pointee.waitHead
    while let x = w {
      n += 1
      w = x.next
    }
    return n
  }
}
