// The public Swift API: a pool of temporary page mappings, direct map or managed window.

#if os(Linux)
  import Glibc
  import SFBufCore
  import SystemPackage

  /// A source of short-lived virtual mappings of single pages (FreeBSD's sf_buf(9)).
  ///
  /// A pool is one of two implementations, chosen when it is made:
  /// - **direct map** (``directMap()``): each object is mapped whole, once; a page's address is
  ///   arithmetic. Never sleeps, counts nothing, costs one address space range per object.
  /// - **window** (``init(nsfbufs:)``): `nsfbufs` one-page slots of one reserved range.
  ///   Freed mappings stay cached and are found again; when every slot is in use an
  ///   allocation sleeps, or fails with `.noWait`. Bounded address space whatever the
  ///   objects' sizes, at the price of an `mmap` per miss.
  ///
  /// Pages must be wired (``VMPage/wire()``) before they are mapped; freeing a mapping never
  /// unwires its page. A pool is safe to use from any number of threads and tasks.
  public final class SFBufPool: @unchecked Sendable {
    /// The `SFB_*` flags.
    public typealias Flags = SFBufFlags
    /// The portable allocator behind a window pool, over the host machine.
    @usableFromInline typealias Window = SFBufAllocator<HostMachine>

    /// The window allocator, or `nil` for a direct map. Internal: its `free(_:)` would skip
    /// the pool's per-slot bookkeeping.
    @usableFromInline let window: Window?
    /// ``window`` without reference counting, for the hot paths: reading a strong property
    /// retains the allocator, and that count would be one cache line shared by every thread.
    /// Valid as long as the pool (which holds ``window``) is.
    @usableFromInline let hotWindow: Unmanaged<Window>?
    @usableFromInline let base: UnsafeMutableRawPointer?

    /// A direct-map pool. Cheap: objects are mapped when their first page is allocated.
    public static func directMap() -> SFBufPool { SFBufPool(window: nil) }

    /// A window pool of `nsfbufs` slots (see ``maxSlots``) that recycles free slots by
    /// `policy`: `.faithful` (one remap per miss under the pool lock, its page-table entry
    /// filled at once, as the original) or `.batched(batch:)` (translations of many free
    /// slots dropped with one `madvise`, so that misses remap slots with nothing present and
    /// cause no TLB shootdown; each miss maps outside the pool lock, and its page-table entry
    /// is filled by the first access). Both keep every semantic of sf_buf(9); only the cost
    /// of misses differs (the README gives the measured figures).
    /// - Throws: ``SFBufConfigError`` when `nsfbufs` is out of range, the batch is smaller
    ///   than one slot, or the window's address space cannot be reserved.
    public convenience init(nsfbufs: Int, policy: SFBufReclaimPolicy = .faithful)
      throws(SFBufConfigError)
    {
      guard (1...SFBufPool.maxSlots).contains(nsfbufs) else {
        throw .outOfRange(setting: "nsfbufs", value: String(nsfbufs))
      }
      if case .batched(let b) = policy, b < 1 {
        throw .outOfRange(setting: "batch", value: String(b))
      }
      do {
        self.init(
          window: Window(
            machine: try HostMachine(nsfbufs: nsfbufs, populates: policy == .faithful),
            nsfbufs: nsfbufs, policy: policy))
      } catch {
        throw .cannotReserve(slots: nsfbufs, error)
      }
    }

    private init(window: Window?) {
      self.window = window
      self.hotWindow = window.map { Unmanaged.passUnretained($0) }
      self.base = window?.machine.base
    }

    /// The largest window: each slot can be a mapping region of its own, and the host allows
    /// about 65530 per process (`vm.max_map_count`), which the process needs for other things.
    public static let maxSlots = 32768

    /// Whether this pool is a direct map.
    public var isDirectMap: Bool { window == nil }

    /// How the window recycles free slots (`nil` for a direct map).
    public var policy: SFBufReclaimPolicy? { window?.policy }

    /// The window's slots (0 for a direct map).
    public var nsfbufs: Int { window?.nsfbufs ?? 0 }

    /// Free window slots that an allocation could take now without sleeping (0 for a direct
    /// map, which has no slots and never sleeps). O(1), unlike ``stats``.
    public var freeSlots: Int { window?.freeSlots ?? 0 }

    /// The counters (all zero for a direct map, which counts nothing).
    public var stats: SFBufStats { window?.stats ?? SFBufStats() }

    /// `mmap` calls made to map pages into window slots (0 for a direct map).
    public var mapCalls: Int { window?.machine.mapCalls ?? 0 }

    /// `madvise` calls made to release batches of window slots (0 but with
    /// `.batched(batch:)`).
    public var unmapCalls: Int { window?.machine.unmapCalls ?? 0 }

    // MARK: Allocation

    /// Maps `page`, returning a handle that frees the mapping when it goes away
    /// (`sf_buf_alloc`).
    ///
    /// Cost: direct map, a few loads and the handle's two retains; window hit on a mapping in
    /// use, a hash lookup and one compare-and-swap (no lock); window hit on a free cached
    /// mapping, the same under the pool lock; window miss, one `mmap`; a full
    /// window sleeps unless `.noWait`. No heap allocation, unless more allocations sleep at
    /// once than ever before in this pool (each then makes its sleeper, kept for later).
    /// - Precondition: `page` is wired; with `.cpuPrivate`, the thread is pinned
    ///   (``sched_pin()``). Otherwise the process stops with a message naming the mistake.
    /// - Throws: ``SFBufError/wouldBlock``, ``SFBufError/interrupted`` (a signal, with
    ///   `.interruptible`), or ``SFBufError/mappingRefused(errno:)``.
    @inlinable
    public func allocate(_ page: VMPage, flags: Flags = []) throws(SFBufError) -> SFBuf {
      guard let window = hotWindow else { return try directAllocate(page) }
      let slot = try allocateSlot(window, page, flags)
      return SFBuf(pool: self, slot: slot, page: page, address: base! + slot * vmPageSize)
    }

    /// A slot in use keeps its pool alive: one retain when a slot goes from free to in use,
    /// one release when it goes back (``releaseSlot(_:)``). Hits on a slot in use, and their
    /// frees, touch no shared reference count.
    @inlinable func retainForSlot() { _ = Unmanaged.passUnretained(self).retain() }

    /// One window allocation, with the pool's per-slot retains kept in step (see
    /// ``balanceSlotRetains(_:)``), whether it returns or throws.
    @inlinable
    func allocateSlot(_ window: Unmanaged<Window>, _ page: VMPage, _ flags: Flags)
      throws(SFBufError) -> Int
    {
      var usedDelta = 0
      let result = window._withUnsafeGuaranteedRef { w -> Result<Int, SFBufError> in
        Result { () throws(SFBufError) in try w.allocate(page, flags: flags, usedDelta: &usedDelta)
        }
      }
      balanceSlotRetains(usedDelta)
      return try result.get()
    }

    /// Drops one reference of a window slot (nothing for a direct map's -1); the last one
    /// releases that slot's retain of the pool. The caller holds the pool, so that release
    /// is never the last one.
    @inlinable func freeSlot(_ slot: Int) {
      if releaseSlot(slot) { Unmanaged.passUnretained(self).release() }
    }

    /// Takes or drops the slots' retains after an allocation changed the number of slots in
    /// use by `usedDelta` (see `SFBufAllocator.allocate(_:flags:usedDelta:)`). The caller
    /// holds the pool, so a release here is never the last.
    @inlinable func balanceSlotRetains(_ usedDelta: Int) {
      if usedDelta > 0 {
        for _ in 0..<usedDelta { retainForSlot() }
      } else if usedDelta < 0 {
        for _ in 0..<(-usedDelta) { Unmanaged.passUnretained(self).release() }
      }
    }

    /// Maps `page`, suspending the task while the window is full (`sf_buf_alloc` for tasks).
    ///
    /// Tasks and threads wait in one first-come, first-served queue. With `.interruptible`,
    /// cancelling the task ends the wait with ``SFBufError/interrupted``; without it,
    /// cancellation is ignored until a slot is free, as a kernel sleep without `PCATCH`.
    public func allocate(_ page: VMPage, flags: Flags = []) async throws(SFBufError) -> SFBuf {
      guard let window else { return try directAllocate(page) }
      var waiter: Window.Waiter? = nil
      while true {
        var usedDelta = 0
        let result = Result { () throws(SFBufError) in
          try window.tryAllocate(page, flags: flags, waiter: &waiter, usedDelta: &usedDelta)
        }
        balanceSlotRetains(usedDelta)
        if let slot = try result.get() {
          return SFBuf(pool: self, slot: slot, page: page, address: base! + slot * vmPageSize)
        }
        let woke = await waiter!.sleeper.sleepAsync(
          interruptible: flags.contains(.interruptible) && !waiter!.waitsForMapping)
        if !woke {
          window.abandon(waiter!)
          throw .interrupted
        }
      }
    }

    /// Maps `page` for the duration of `body`, which receives the page's bytes.
    ///
    /// The cheapest way to use a mapping: no handle; a direct map costs a few loads, a window
    /// hit on a mapping in use the hash lookup and its reference.
    /// - Throws: what ``allocate(_:flags:)`` throws, or what `body` throws.
    @inlinable
    public func withMapping<R>(
      of page: VMPage, flags: Flags = [], _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
      guard let window = hotWindow else {
        return try body(
          UnsafeMutableRawBufferPointer(start: try directAddress(page), count: vmPageSize))
      }
      // The slot may be shared with handles, which count on the pool's per-slot retain:
      // take and drop it here like they do.
      let slot = try allocateSlot(window, page, flags)
      defer { freeSlot(slot) }
      return try body(
        UnsafeMutableRawBufferPointer(start: base! + slot * vmPageSize, count: vmPageSize))
    }

    /// Maps pages `pages` of `object` and hands each mapping, in order, to `body`, which
    /// owns it (keep it, or let it go to free it).
    ///
    /// On a window, consecutive pages are mapped together into a free block of adjacent
    /// slots with one `mmap` (a *page run*): one system call, and at most one TLB shootdown,
    /// for the whole run instead of one per page. A run stops before a page whose mapping is
    /// in use (that page is a hit) and goes on after it; a page cached in a free slot is
    /// mapped again in the run. Each page is still its own mapping, looked up, referenced and
    /// freed on its own. Pages that no run can take (a direct map, a lone page, no free
    /// block) are allocated one by one with `flags`.
    ///
    /// - Precondition: every page is wired.
    /// - Throws: what ``allocate(_:flags:)`` throws, or what `body` throws; the mappings not
    ///   yet handed to `body` are freed first.
    public func allocateRun(
      of object: VMObject, pages: Range<Int>, flags: Flags = [],
      _ body: (consuming SFBuf) throws -> Void
    ) throws {
      if window == nil {
        // A direct map: the file's size is checked once for the whole run.
        for i in pages where !object.wiring.isWired(i) {
          fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
        }
        try object.checkMappable(pages)
        for i in pages { try body(try directAllocate(object.page(i), checked: true)) }
        return
      }
      var next = pages.lowerBound
      while next < pages.upperBound {
        let lower = next
        guard let window,
          let (first, count) = try window.allocateRun(
            count: pages.upperBound - lower, flags: flags, page: { object.page(lower + $0) })
        else {
          next += 1
          try body(try allocate(object.page(lower), flags: flags))
          continue
        }
        next += count
        for _ in 0..<count { retainForSlot() }
        var i = 0
        defer {
          // `body` threw: free the mappings it never received.
          while i < count {
            freeSlot(first + i)
            i += 1
          }
        }
        while i < count {
          let page = object.page(lower + i)
          let buf = SFBuf(
            pool: self, slot: first + i, page: page, address: base! + (first + i) * vmPageSize)
          i += 1
          try body(buf)
        }
      }
    }

    @usableFromInline
    func directAllocate(_ page: VMPage, checked: Bool = false) throws(SFBufError) -> SFBuf {
      SFBuf(pool: self, slot: -1, page: page, address: try directAddress(page, checked: checked))
    }

    /// The address of `page` in its object's direct mapping (made on first use). A page of
    /// a file is checked against the file's size first (one `fstat`), unless `checked`: a
    /// page past the end (the file truncated since it was wired) is refused with `EINVAL`,
    /// as a window refuses it, rather than handed out to raise `SIGBUS` at its first touch.
    @inlinable
    func directAddress(_ page: VMPage, checked: Bool = false) throws(SFBufError)
      -> UnsafeMutableRawPointer
    {
      if !page.object.wiring.isWired(page.index) {
        fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
      }
      if !checked { try page.object.checkMappable(page.index..<(page.index + 1)) }
      return try page.object.directAddress(of: page.index)
    }

    /// Drops the reference of a slot: returns whether that was its last, when the caller
    /// must release the pool (``retainForSlot()``). Nothing for a direct map.
    @inlinable func releaseSlot(_ slot: Int) -> Bool {
      slot >= 0 && hotWindow!._withUnsafeGuaranteedRef { $0.free(slot) }
    }
  }

  extension WireTable {
    @usableFromInline func isWired(_ index: Int) -> Bool { count(index) > 0 }
  }

  /// A mapping of one page: its address is valid until the handle goes away.
  ///
  /// Non-copyable: exactly one owner frees it, exactly once, when it goes out of scope or
  /// when ``free()`` consumes it. To split one mapping among several owners, hand it over to
  /// a C-style ``sf_buf`` (``release()``) and use ``SFBufPool/sf_buf_ref(_:)``.
  ///
  /// The handle keeps its pool alive, and on a direct map its object too (on a window, the
  /// slot in use keeps the pool, and its cached page the object, alive).
  @frozen
  public struct SFBuf: ~Copyable, @unchecked Sendable {
    @usableFromInline let _pool: Unmanaged<SFBufPool>
    @usableFromInline let _object: Unmanaged<VMObject>
    /// The window slot, or -1 on a direct map.
    public let slot: Int
    /// The index of the page mapped in its object.
    public let pageIndex: Int
    /// Where the page is mapped (`sf_buf_kva`).
    public let address: UnsafeMutableRawPointer

    /// On a direct map, takes +1 on the pool and on the object; on a window, nothing (the
    /// slot holds the pool: ``SFBufPool/retainForSlot()``).
    @inlinable
    init(pool: SFBufPool, slot: Int, page: VMPage, address: UnsafeMutableRawPointer) {
      _pool = slot < 0 ? Unmanaged.passRetained(pool) : Unmanaged.passUnretained(pool)
      _object =
        slot < 0 ? Unmanaged.passRetained(page.object) : Unmanaged.passUnretained(page.object)
      self.slot = slot
      self.pageIndex = page.index
      self.address = address
    }

    /// The pool the mapping came from.
    @inlinable public var pool: SFBufPool { _pool.takeUnretainedValue() }

    /// The page mapped (`sf_buf_page`).
    @inlinable public var page: VMPage {
      VMPage(object: _object.takeUnretainedValue(), index: pageIndex)
    }

    /// The page's bytes. Writing them needs an object opened for writing.
    @inlinable public var bytes: UnsafeMutableRawBufferPointer {
      UnsafeMutableRawBufferPointer(start: address, count: vmPageSize)
    }

    /// Frees the mapping now (`sf_buf_free`).
    @inlinable public consuming func free() {}

    /// Hands the mapping over to a C-style ``sf_buf`` handle, which must then be freed with
    /// ``SFBufPool/sf_buf_free(_:)`` (or ``sf_buf_free(_:)`` for the default pool).
    @inlinable public consuming func release() -> sf_buf {
      let generation =
        slot < 0 ? 0 : pool.hotWindow!._withUnsafeGuaranteedRef { $0.generation(ofSlot: slot) }
      let h = sf_buf(
        pool: pool, slot: slot, page: page, address: address, generation: generation)
      if slot < 0 {
        _pool.release()
        _object.release()
      }
      discard self
      return h
    }

    @inlinable deinit {
      if slot >= 0 {
        if _pool._withUnsafeGuaranteedRef({ $0.releaseSlot(slot) }) { _pool.release() }
      } else {
        _pool.release()
        _object.release()
      }
    }
  }

  /// Why a pool could not be made.
  public enum SFBufConfigError: Error, CustomStringConvertible, Equatable {
    /// A setting has a value that is not a whole number in range.
    case outOfRange(setting: String, value: String)
    /// The window's address space could not be reserved.
    case cannotReserve(slots: Int, Errno)

    public var description: String {
      switch self {
      case .outOfRange(let setting, let value):
        "\(setting)=\(value) is not a number of slots between 1 and \(SFBufPool.maxSlots)"
      case .cannotReserve(let slots, let e):
        "cannot reserve a window of \(slots) slots: \(e)"
      }
    }
  }
#endif
