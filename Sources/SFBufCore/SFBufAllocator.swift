// The managed-window sf_buf allocator: the whole machine-independent algorithm.
//
// One lock, one hash from page to slot, one free list in least-recently-freed order, a
// reference count and a CPU set per slot, a FIFO of sleepers, and the counters of
// `netstat -m`. Read it top to bottom: allocation, free, reference, then the pieces.

/// The sf_buf allocator for a machine without a direct map (FreeBSD's `subr_sfbuf.c`).
///
/// `nsfbufs` slots, each one page of the machine's window. A freed slot keeps its mapping
/// and stays in the hash, so a later request for the same page finds it and pays nothing.
/// A miss recycles the least recently freed slot. When every slot is in use, an allocation
/// sleeps (FIFO, one sleeper woken per freed slot), or fails with `SFB_NOWAIT`.
///
/// Beyond the original: the hash is searched again after every wake-up, so a page is never
/// mapped by two slots; sleepers are served in arrival order without a thundering herd; a
/// failure says why; and misuse (double free, foreign slot, unwired page, unpinned
/// `SFB_CPUPRIVATE`) stops with a message naming it.
///
/// Slots are named by their index, `0 ..< nsfbufs`; slot `i` is the `i`-th page of the
/// window. Every method takes the machine's lock for the time it needs it.
public final class SFBufAllocator<Machine: SFBufMachine> {
  public typealias Page = Machine.Page

  /// The machine whose window this allocator manages.
  public let machine: Machine
  /// The number of slots (`kern.ipc.nsfbufs`).
  public let nsfbufs: Int

  @usableFromInline struct Slot {
    @usableFromInline var page: Page?
    @usableFromInline var refs: Int32 = 0
    /// CPUs whose TLB holds the current translation (only when the machine tracks TLBs).
    @usableFromInline var cpus = CPUSet()
    @usableFromInline var hashNext: Int32 = -1
    @usableFromInline var freePrev: Int32 = -1
    @usableFromInline var freeNext: Int32 = -1
  }

  @usableFromInline let slots: UnsafeMutablePointer<Slot>
  @usableFromInline let buckets: UnsafeMutablePointer<Int32>
  @usableFromInline let bucketShift: Int
  @usableFromInline var freeHead: Int32 = -1
  @usableFromInline var freeTail: Int32 = -1
  @usableFromInline var freeCount = 0
  /// Free slots promised to sleepers that were woken and have not run yet.
  @usableFromInline var reserved = 0
  @usableFromInline var waitHead: Waiter?
  @usableFromInline var waitTail: Waiter?
  @usableFromInline var counters = SFBufStats()
  /// Deliberate bugs, for showing that the coherence checkers catch them. Empty in use.
  @usableFromInline var faults = SFBufFaults()

  /// Creates an allocator of `nsfbufs` slots over `machine`'s window, all free, in address
  /// order.
  ///
  /// - Precondition: `1 <= nsfbufs <= Int32.max`; the caller validates user input first.
  public init(machine: Machine, nsfbufs: Int) {
    precondition(nsfbufs > 0 && nsfbufs <= Int(Int32.max), "nsfbufs must be in 1...Int32.max")
    self.machine = machine
    self.nsfbufs = nsfbufs
    slots = .allocate(capacity: nsfbufs)
    slots.initialize(repeating: Slot(), count: nsfbufs)
    var shift = 0
    while (1 << shift) < nsfbufs { shift += 1 }
    bucketShift = UInt.bitWidth - max(shift, 1)
    buckets = .allocate(capacity: 1 << max(shift, 1))
    buckets.initialize(repeating: -1, count: 1 << max(shift, 1))
    counters.nsfbufs = nsfbufs
    for s in 0..<Int32(nsfbufs) { insertFree(s, atHead: false) }
  }

  deinit {
    slots.deinitialize(count: nsfbufs)
    slots.deallocate()
    buckets.deallocate()
  }

  // MARK: - Allocation

  /// Returns a slot mapping `page`, with one reference (`sf_buf_alloc`).
  ///
  /// A page already cached in a slot is a *hit*: it costs a hash lookup and never fails or
  /// sleeps, even with `SFB_NOWAIT` and a full window. Otherwise the least recently freed
  /// slot is remapped (one `Machine.map`), or the caller sleeps until a slot is freed and
  /// then looks in the hash again.
  ///
  /// - Precondition: `page` is wired; with `.cpuPrivate`, the caller is pinned.
  /// - Throws: ``SFBufError/wouldBlock`` (`.noWait`, window full),
  ///   ``SFBufError/interrupted`` (`.interruptible`, a signal while asleep), or
  ///   ``SFBufError/mappingRefused(errno:)``.
  @inlinable
  public func allocate(_ page: Page, flags: SFBufFlags = []) throws(SFBufError) -> Int {
    checkCaller(page, flags)
    var waiter: Waiter? = nil
    machine.lock()
    while true {
      let slot: Int?
      do {
        slot = try attempt(page, flags, &waiter)
      } catch {
        machine.unlock()
        throw error
      }
      machine.unlock()
      if let slot { return slot }
      // Queued: sleep without the lock, then try again from the lookup.
      let woke = machine.sleep(waiter!.sleeper, interruptible: flags.contains(.interruptible))
      machine.lock()
      if !woke {
        abandonLocked(waiter!)
        machine.unlock()
        throw .interrupted
      }
    }
  }

  /// One allocation attempt for callers that wait in their own way (an `async` task): returns
  /// the slot, or `nil` after queueing `waiter` (created on first use) and preparing its
  /// sleeper. After the sleeper is woken, call again with the same `waiter`; if the wait ends
  /// otherwise (cancellation), call ``abandon(_:)``.
  public func tryAllocate(
    _ page: Page, flags: SFBufFlags, waiter: inout Waiter?
  ) throws(SFBufError) -> Int? {
    checkCaller(page, flags)
    machine.lock()
    defer { machine.unlock() }
    return try attempt(page, flags, &waiter)
  }

  /// Gives up a wait begun by ``tryAllocate(_:flags:waiter:)``: leaves the queue, passes on
  /// a wake-up it may have received, and counts a failed allocation.
  public func abandon(_ waiter: Waiter) {
    machine.lock()
    abandonLocked(waiter)
    machine.unlock()
  }

  /// The allocation algorithm proper. Locked. Returns the slot, or `nil` once `waiter` is
  /// queued.
  @inlinable
  func attempt(_ page: Page, _ flags: SFBufFlags, _ waiter: inout Waiter?) throws(SFBufError)
    -> Int?
  {
    var wasWoken = false
    if let w = waiter, w.state == .woken {
      // We hold a reservation from the wake-up; give it back and compete like everybody.
      w.state = .idle
      reserved -= 1
      wasWoken = true
    }
    // 1. Lookup first, after every wake-up too: a hit never fails.
    let cached = lookup(page)
    if cached >= 0 {
      reference(cached)
      counters.hits &+= 1
      applyCPURules(Int(cached), flags, hit: true)
      if wasWoken { wakeWaiters() }
      return Int(cached)
    }
    // 2. Miss: recycle the least recently freed slot not promised to a woken sleeper.
    if freeCount > reserved {
      let s = freeHead
      removeFree(s)
      counters.misses &+= 1
      do throws(SFBufError) {
        try remap(s, to: page, flags)
      } catch {
        counters.sf_allocfail &+= 1
        wakeWaiters()
        throw error
      }
      if wasWoken { wakeWaiters() }
      return Int(s)
    }
    // 3. Full window.
    if flags.contains(.noWait) {
      counters.sf_allocfail &+= 1
      if wasWoken { wakeWaiters() }
      throw .wouldBlock
    }
    counters.sf_allocwait &+= 1
    let w = waiter ?? Waiter(sleeper: machine.makeSleeper())
    waiter = w
    machine.prepareToSleep(w.sleeper)
    enqueue(w, atFront: wasWoken)
    return nil
  }

  /// Maps `page` into free slot `s` (already off the free list). Locked.
  @usableFromInline func remap(_ s: Int32, to page: Page, _ flags: SFBufFlags) throws(SFBufError) {
    if slots[Int(s)].page != nil {
      unhash(s)
      slots[Int(s)].page = nil
    }
    let oldWasLive: Bool
    do {
      oldWasLive = try machine.map(page, slot: Int(s))
    } catch {
      // The slot maps nothing we know of: reuse it first, it is the cheapest to map.
      insertFree(s, atHead: true)
      throw .mappingRefused(errno: error.code)
    }
    counters.remaps &+= 1
    if oldWasLive && !faults.contains(.keepCPUSetOnRemap) { slots[Int(s)].cpus = .none }
    slots[Int(s)].page = page
    hash(s)
    slots[Int(s)].refs = 1
    becameUsed()
    applyCPURules(Int(s), flags, hit: false)
  }

  /// SPEC §3.7: make the translation valid on the calling CPU, and on every other CPU unless
  /// the mapping is CPU-private. Locked.
  @inlinable func applyCPURules(_ s: Int, _ flags: SFBufFlags, hit: Bool) {
    guard Machine.tracksTLBs else { return }
    var cpus = slots[s].cpus
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
    slots[s].cpus = cpus
  }

  @inlinable func checkCaller(_ page: Page, _ flags: SFBufFlags) {
    if flags.contains(.cpuPrivate) && !machine.isPinned {
      fatalError(
        "sf_buf_alloc: SFB_CPUPRIVATE from a thread that is not pinned (call sched_pin first)")
    }
    if !machine.isWired(page) {
      fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
    }
  }

  // MARK: - Free and reference

  /// Drops one reference to slot `s` (`sf_buf_free`). At zero the slot goes to the tail of
  /// the free list with its mapping kept, and one sleeper is woken.
  ///
  /// - Precondition: `s` is a slot of this allocator with at least one reference; anything
  ///   else stops the process with a message naming the mistake.
  @inlinable
  public func free(_ s: Int) {
    machine.lock()
    let refs = checkedRefs(s, "sf_buf_free")
    if refs == 0 {
      machine.unlock()
      fatalError("sf_buf_free: slot \(s) has no reference (double free, or never allocated)")
    }
    slots[s].refs = refs - 1
    if refs == 1 {
      insertFree(Int32(s), atHead: false)
      counters.nsfbufsused -= 1
      wakeWaiters()
    }
    machine.unlock()
  }

  /// Adds a reference to slot `s`, which must be in use (`sf_buf_ref`).
  public func ref(_ s: Int) {
    machine.lock()
    let refs = checkedRefs(s, "sf_buf_ref")
    if refs == 0 {
      machine.unlock()
      fatalError("sf_buf_ref: slot \(s) is free; only a mapping in use can gain a reference")
    }
    slots[s].refs = refs + 1
    machine.unlock()
  }

  @inlinable func checkedRefs(_ s: Int, _ caller: StaticString) -> Int32 {
    if s < 0 || s >= nsfbufs {
      machine.unlock()
      fatalError("\(caller): \(s) is not a slot of this pool (foreign sf_buf)")
    }
    return slots[s].refs
  }

  // MARK: - Queries

  /// The page slot `s` maps (`sf_buf_page`). Valid while the caller holds a reference.
  @inlinable public func page(ofSlot s: Int) -> Page {
    slots[s].page!
  }

  /// The slot caching `page`, in use or free, if any. For tests and tools.
  public func cachedSlot(of page: Page) -> Int? {
    machine.lock()
    defer { machine.unlock() }
    let s = lookup(page)
    return s >= 0 ? Int(s) : nil
  }

  /// The number of references slot `s` holds.
  public func references(ofSlot s: Int) -> Int {
    machine.lock()
    defer { machine.unlock() }
    return Int(slots[s].refs)
  }

  /// The CPUs whose TLB is known to hold slot `s`'s translation.
  public func cpus(ofSlot s: Int) -> CPUSet {
    machine.lock()
    defer { machine.unlock() }
    return slots[s].cpus
  }

  /// The free slots, least recently freed first.
  public func freeList() -> [Int] {
    machine.lock()
    defer { machine.unlock() }
    var out: [Int] = []
    var s = freeHead
    while s >= 0 {
      out.append(Int(s))
      s = slots[Int(s)].freeNext
    }
    return out
  }

  /// A consistent copy of the counters.
  public var stats: SFBufStats {
    machine.lock()
    defer { machine.unlock() }
    return counters
  }

  /// Sleepers now queued (not yet woken).
  public var sleepers: Int {
    machine.lock()
    defer { machine.unlock() }
    var n = 0
    var w = waitHead
    while let x = w {
      n += 1
      w = x.next
    }
    return n
  }
}
