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
  /// - **window** (``init(nsfbufs:policy:)``): `nsfbufs` one-page slots of one reserved range.
  ///   Freed mappings stay cached and are found again; when every slot is in use an
  ///   allocation sleeps, or fails with `.noWait`. Bounded address space whatever the
  ///   objects' sizes, at the price of an `mmap` per miss.
  ///
  /// Pages must be wired (``VMPage/wire()``) before they are mapped; freeing a mapping never
  /// unwires its page. A pool is safe to use from any number of threads and tasks.
  // @unchecked: an unmanaged allocator, safe from any thread.
  public final class SFBufPool: @unchecked Sendable {
    /// The `SFB_*` flags.
    public typealias Flags = SFBufFlags
    /// The portable allocator behind a window pool, over the host machine.
    @usableFromInline typealias Window = SFBufAllocator<HostMachine>

    /// What the pool maps pages with.
    @usableFromInline enum Backing {
      /// Each object mapped whole, once.
      case directMap
      /// A window: its allocator (retained by the pool, released in its deinit; held
      /// unmanaged so that the hot paths touch no shared reference count) and where its
      /// slots lie.
      case window(Unmanaged<Window>, layout: HostMachine.Layout)
    }

    @usableFromInline let backing: Backing
    /// The page size, kept here so that the hot paths read no global.
    @usableFromInline let pageSize: Int

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
      pageSize = vmPageSize
      if let window {
        backing = .window(Unmanaged.passRetained(window), layout: window.machine.layout)
        // Each slot in use keeps the pool alive (so that handles need not retain it).
        window.machine.keeper = Unmanaged.passUnretained(self as AnyObject)
      } else {
        backing = .directMap
      }
    }

    deinit {
      if case .window(let w, _) = backing { w.release() }
    }

    /// The window allocator, or `nil` for a direct map. Internal: its `free(_:)` would skip
    /// the pool's checks of C-style handles.
    var window: Window? {
      if case .window(let w, _) = backing { return w.takeUnretainedValue() }
      return nil
    }

    /// The largest window: each slot can be a mapping region of its own, and the host allows
    /// about 65530 per process (`vm.max_map_count`), which the process needs for other things.
    public static let maxSlots = 32768

    /// The longest page run a window maps with one `mmap` (128 pages): a run stays within
    /// one region of the window, whose page table no other region shares (see
    /// ``HostMachine/regionSlots``). Longer ranges are mapped as several runs.
    public static var maxRunPages: Int { HostMachine.regionSlots }

    /// The window slot whose page holds `address` (the ``SFBuf/slot`` of a mapping of it),
    /// or `nil` when the address lies outside this pool's window, and always on a direct
    /// map. Slots are not laid out at a fixed stride: use this rather than arithmetic.
    public func slot(containing address: UnsafeRawPointer) -> Int? {
      guard case .window(let w, _) = backing else { return nil }
      return w._withUnsafeGuaranteedRef { $0.machine.slot(containing: address) }
    }

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
    /// Cost: direct map, a few loads and the handle's two retains (a page of a file: one
    /// `fstat` too); window hit on a mapping in use, a hash lookup and one compare-and-swap
    /// (no lock); window hit on a free cached mapping, the same under the pool lock; window
    /// miss, one `mmap` (and one `fstat` for a page of a file); a full window sleeps unless
    /// `.noWait`. No heap allocation, unless more allocations sleep at once than ever before
    /// in this pool (each then makes its sleeper, kept for later).
    /// - Precondition: `page` is wired; with `.cpuPrivate`, the thread is pinned
    ///   (``sched_pin()``). Otherwise the process stops with a message naming the mistake.
    /// - Throws: `SFBufError.wouldBlock`, `SFBufError.interrupted` (a signal, with
    ///   `.interruptible`), or `SFBufError.mappingRefused(errno:)` (`EINVAL` for a page
    ///   past the end of its file, truncated since it was wired).
    @inlinable
    public func allocate(_ page: VMPage, flags: Flags = []) throws(SFBufError) -> SFBuf {
      switch backing {
      case .directMap:
        return try directAllocate(page)
      case .window(let w, let layout):
        let slot = try SFBufPool.allocateSlot(w, page, flags)
        return SFBuf(pool: self, slot: slot, page: page, address: layout.address(ofSlot: slot))
      }
    }

    /// Maps `page`, suspending the task while the window is full (`sf_buf_alloc` for tasks).
    ///
    /// Tasks and threads wait in one first-come, first-served queue. With `.interruptible`,
    /// cancelling the task ends the wait with `SFBufError.interrupted`; without it,
    /// cancellation is ignored until a slot is free, as a kernel sleep without `PCATCH`.
    public func allocate(_ page: VMPage, flags: Flags = []) async throws(SFBufError) -> SFBuf {
      guard case .window(let w, let layout) = backing else { return try directAllocate(page) }
      let window = w.takeUnretainedValue()
      var waiter: Window.Waiter? = nil
      while true {
        if let slot = try window.tryAllocate(page, flags: flags, waiter: &waiter) {
          return SFBuf(pool: self, slot: slot, page: page, address: layout.address(ofSlot: slot))
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
    /// The cheapest way to use a mapping: no handle; a direct map costs a few loads. On a
    /// window, a hit on a mapping in use costs the hash lookup and no locked instruction:
    /// the calling thread's hazard word names the slot while `body` runs, instead of a
    /// reference (see `SFBufAllocator.beginHit(_:flags:hazard:)`). A hit inside `body`,
    /// a thread beyond the first 128 to use one at once, a hit while the pool finds hits
    /// too few to pay for the barriers that hazard words cost its misses (its gate is
    /// closed), and every other case take a reference as `allocate(_:flags:)` does.
    /// - Throws: what `allocate(_:flags:)` throws, or what `body` throws.
    @inlinable @inline(__always)
    public func withMapping<R>(
      of page: VMPage, flags: Flags = [], _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
      switch backing {
      case .directMap:
        return try body(
          UnsafeMutableRawBufferPointer(start: try directAddress(page), count: pageSize))
      case .window(let w, let layout):
        // A hit on a mapping in use takes no reference: a hazard names the slot instead.
        if let hazard = w._withUnsafeGuaranteedRef({ $0.machine.hazard() }) {
          let slot = w._withUnsafeGuaranteedRef { $0.beginHit(page, flags: flags, hazard: hazard) }
          if slot >= 0 {
            defer { w._withUnsafeGuaranteedRef { $0.endHit(hazard) } }
            return try body(
              UnsafeMutableRawBufferPointer(start: layout.address(ofSlot: slot), count: pageSize))
          }
        }
        let slot = try SFBufPool.allocateSlot(w, page, flags)
        defer { w._withUnsafeGuaranteedRef { _ = $0.free(slot) } }
        return try body(
          UnsafeMutableRawBufferPointer(start: layout.address(ofSlot: slot), count: pageSize))
      }
    }

    /// Maps pages `pages` of `object` and hands each mapping, in order, to `body`, which
    /// owns it (keep it, or let it go to free it).
    ///
    /// On a window, consecutive pages are mapped together into a free block of adjacent
    /// slots with one `mmap` (a *page run*): one system call, and at most one TLB shootdown,
    /// for the whole run instead of one per page. A run stops before a page whose mapping is
    /// in use (that page is a hit) and goes on after it; a page cached in a free slot is
    /// mapped again in the run. Each page is still its own mapping, looked up, referenced and
    /// freed on its own, with the pool lock: a run's mappings are freed without a
    /// compare-and-swap each, and a hit on one of them while it is in use takes the lock
    /// (other hits on mappings in use do not). Pages that no run can take (a lone page, no
    /// free block) are allocated one by one with `flags`. On a direct map, a file's size is
    /// checked once for all the pages.
    ///
    /// - Precondition: every page is wired.
    /// - Throws: what `allocate(_:flags:)` throws, or what `body` throws; the mappings not
    ///   yet handed to `body` are freed first.
    public func allocateRun(
      of object: VMObject, pages: Range<Int>, flags: Flags = [],
      _ body: (consuming SFBuf) throws -> Void
    ) throws {
      try forEachRun(of: object, pages: pages, flags: flags, lone: body) {
        window, layout, first, count, lower in
        var i = 0
        defer {
          // `body` threw: free the mappings it never received.
          while i < count {
            window.free(first + i)
            i += 1
          }
        }
        while i < count {
          let buf = SFBuf(
            pool: self, slot: first + i, object: object, pageIndex: lower + i,
            address: layout.address(ofSlot: first + i))
          i += 1
          try body(buf)
        }
      }
    }

    /// Maps pages `pages` of `object` into one ``SFBufBatch`` that owns them all (see
    /// ``allocateRun(of:pages:flags:_:)`` for how runs are mapped). With `.noWait`, stops at
    /// the first page that cannot be had and returns the pages mapped so far (possibly none);
    /// otherwise a failure frees what was mapped and throws.
    ///
    /// - Precondition: every page is wired; without `.noWait`, `pages` is no longer than the
    ///   window (see ``SFBufBatch/map(_:pages:flags:)``).
    /// - Throws: what `allocate(_:flags:)` throws, except `wouldBlock` with `.noWait`, and
    ///   except `mappingRefused` after the first page with `.noWait`.
    public func allocateBatch(of object: VMObject, pages: Range<Int>, flags: Flags = [])
      throws(SFBufError) -> SFBufBatch
    {
      var batch = SFBufBatch(pool: self, capacity: pages.count)
      try batch.map(object, pages: pages, flags: flags)
      return batch
    }

    /// The work of ``allocateRun(of:pages:flags:_:)``: each page that no run can take is
    /// allocated alone and handed to `lone` (every page, on a direct map); each run mapped
    /// in the window (slots `first..<first + count`, for pages `lower..<lower + count`) is
    /// handed to `run` with the window and its layout; `run` owns the run's mappings.
    @inline(__always)
    func forEachRun(
      of object: VMObject, pages: Range<Int>, flags: Flags,
      lone: (consuming SFBuf) throws -> Void,
      run: (
        _ window: Window, _ layout: HostMachine.Layout, _ first: Int, _ count: Int, _ lower: Int
      ) throws -> Void
    ) throws {
      guard case .window(let w, let layout) = backing else {
        for i in pages where !object.wiring.isWired(i) {
          fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
        }
        try object.checkMappable(pages)
        for i in pages { try lone(try directAllocate(object.page(i), checked: true)) }
        return
      }
      let window = w.takeUnretainedValue()
      var next = pages.lowerBound
      while next < pages.upperBound {
        let lower = next
        guard
          let (first, count) = try window.allocateRun(
            count: pages.upperBound - lower, flags: flags,
            key: { object.pageKey(lower &+ $0) },
            fill: { VMPage.store(object, lower &+ $0, in: &$1) }
          )
        else {
          next += 1
          try lone(try allocate(object.page(lower), flags: flags))
          continue
        }
        next += count
        try run(window, layout, first, count, lower)
      }
    }

    /// One window allocation, through the unmanaged allocator (no reference count touched).
    @inlinable
    static func allocateSlot(_ w: Unmanaged<Window>, _ page: VMPage, _ flags: Flags)
      throws(SFBufError) -> Int
    {
      try w._withUnsafeGuaranteedRef { w -> Result<Int, SFBufError> in
        Result { () throws(SFBufError) in try w.allocate(page, flags: flags) }
      }.get()
    }

    @usableFromInline
    func directAllocate(_ page: VMPage, checked: Bool = false) throws(SFBufError) -> SFBuf {
      SFBuf(pool: self, slot: nil, page: page, address: try directAddress(page, checked: checked))
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
  }

  extension WireTable {
    @usableFromInline func isWired(_ index: Int) -> Bool { count(index) > 0 }
  }

  /// A mapping of one page: its address is valid until the handle goes away.
  ///
  /// Non-copyable: exactly one owner frees it, exactly once, when it goes out of scope or
  /// when ``free()`` consumes it. To hold many, put them in an ``SFBufBatch``. To split one
  /// mapping among several owners, hand it over to a C-style ``sf_buf`` (``release()``) and
  /// use ``SFBufPool/sf_buf_ref(_:)``.
  ///
  /// The handle keeps its pool alive, and on a direct map its object too (on a window, the
  /// slot in use keeps the pool, and its cached page the object, alive).
  @frozen
  // @unchecked: unmanaged references and a raw address.
  public struct SFBuf: ~Copyable, @unchecked Sendable {
    @usableFromInline let _pool: Unmanaged<SFBufPool>
    @usableFromInline let _object: Unmanaged<VMObject>
    /// The window slot, or -1 on a direct map (see ``slot``).
    @usableFromInline let _slot: Int
    /// The index of the page mapped in its object.
    public let pageIndex: Int
    /// Where the page is mapped (`sf_buf_kva`).
    public let address: UnsafeMutableRawPointer

    /// On a direct map (`slot` nil), takes +1 on the pool and on the object; on a window,
    /// nothing (the window holds the pool while slots are in use:
    /// ``HostMachine/windowBecameBusy()``).
    @inlinable
    init(pool: SFBufPool, slot: Int?, page: VMPage, address: UnsafeMutableRawPointer) {
      self.init(
        pool: pool, slot: slot, object: page.object, pageIndex: page.index, address: address)
    }

    /// The same, from the object and the page's index (a page run makes no `VMPage`, which
    /// would retain the object).
    @inlinable
    init(
      pool: SFBufPool, slot: Int?, object: VMObject, pageIndex: Int,
      address: UnsafeMutableRawPointer
    ) {
      if let slot {
        _pool = Unmanaged.passUnretained(pool)
        _object = Unmanaged.passUnretained(object)
        _slot = slot
      } else {
        _pool = Unmanaged.passRetained(pool)
        _object = Unmanaged.passRetained(object)
        _slot = -1
      }
      self.pageIndex = pageIndex
      self.address = address
    }

    /// The window slot, or `nil` on a direct map.
    @inlinable public var slot: Int? { _slot >= 0 ? _slot : nil }

    /// The pool the mapping came from.
    @inlinable public var pool: SFBufPool { _pool.takeUnretainedValue() }

    /// The page mapped (`sf_buf_page`).
    @inlinable public var page: VMPage {
      VMPage(object: _object.takeUnretainedValue(), index: pageIndex)
    }

    /// The page's bytes. Writing them needs an object opened for writing.
    @inlinable public var bytes: UnsafeMutableRawBufferPointer {
      UnsafeMutableRawBufferPointer(start: address, count: pool.pageSize)
    }

    /// Frees the mapping now (`sf_buf_free`).
    @inlinable public consuming func free() {}

    /// Hands the mapping over to a C-style ``sf_buf`` handle, which must then be freed with
    /// ``SFBufPool/sf_buf_free(_:)`` (or ``sf_buf_free(_:)`` for the default pool).
    @inlinable public consuming func release() -> sf_buf {
      let pool = self.pool
      let h: sf_buf
      if case .window(let w, _) = pool.backing {
        let generation = w._withUnsafeGuaranteedRef { $0.generation(ofSlot: _slot) }
        h = sf_buf(pool: pool, slot: _slot, page: page, address: address, generation: generation)
      } else {
        h = sf_buf(pool: pool, slot: -1, page: page, address: address, generation: 0)
        _pool.release()
        _object.release()
      }
      discard self
      return h
    }

    /// Gives up the handle without freeing the mapping: the caller takes over its reference
    /// (and, on a direct map, the retains of the pool and the object).
    @usableFromInline consuming func disown() -> SFBufBatch.Entry {
      let e = SFBufBatch.Entry(slot: _slot, object: _object, pageIndex: pageIndex, address: address)
      discard self
      return e
    }

    @inlinable deinit {
      switch _pool._withUnsafeGuaranteedRef({ $0.backing }) {
      case .window(let w, _):
        // The window's last slot in use releases the pool (``HostMachine/windowBecameIdle()``).
        w._withUnsafeGuaranteedRef { _ = $0.free(_slot) }
      case .directMap:
        _pool.release()
        _object.release()
      }
    }
  }

  /// Many mappings of one pool, owned together: a non-copyable container that frees every
  /// mapping it holds when it goes away (or ``free()`` consumes it), with the pool lock
  /// taken once for all of them.
  ///
  /// The way to hold more mappings than one variable can: ownership stays checked (a batch
  /// cannot be copied, each mapping is freed exactly once), unlike an array of C-style
  /// ``sf_buf`` handles. The batch keeps its pool alive.
  // @unchecked: owns raw storage; one owner at a time.
  public struct SFBufBatch: ~Copyable, @unchecked Sendable {
    /// One mapping held: what an ``SFBuf`` holds.
    @usableFromInline struct Entry {
      @usableFromInline let slot: Int
      @usableFromInline let object: Unmanaged<VMObject>
      @usableFromInline let pageIndex: Int
      @usableFromInline let address: UnsafeMutableRawPointer
      @usableFromInline init(
        slot: Int, object: Unmanaged<VMObject>, pageIndex: Int, address: UnsafeMutableRawPointer
      ) {
        self.slot = slot
        self.object = object
        self.pageIndex = pageIndex
        self.address = address
      }
    }

    /// The pool every mapping came from.
    public let pool: SFBufPool
    @usableFromInline var entries: UnsafeMutablePointer<Entry>
    @usableFromInline var capacity: Int
    /// The number of mappings held.
    public private(set) var count = 0

    /// An empty batch for mappings of `pool`, with room for `capacity` before it grows.
    public init(pool: SFBufPool, capacity: Int = 16) {
      self.pool = pool
      self.capacity = max(capacity, 1)
      entries = .allocate(capacity: self.capacity)
    }

    /// Whether the batch holds no mapping.
    public var isEmpty: Bool { count == 0 }

    /// Takes over `buf`, which must come from ``pool``. Amortised O(1).
    public mutating func append(_ buf: consuming SFBuf) {
      if buf._pool.toOpaque() != Unmanaged.passUnretained(pool).toOpaque() {
        fatalError("SFBufBatch.append: the mapping belongs to another pool (foreign handle)")
      }
      reserve(1)
      let e = buf.disown()
      (entries + count).initialize(to: e)
      count += 1
      if e.slot < 0 { Unmanaged.passUnretained(pool).release() }  // the batch holds the pool
    }

    /// Maps pages `pages` of `object` and appends their mappings, in order, after those the
    /// batch holds: as ``SFBufPool/allocateRun(of:pages:flags:_:)`` maps them (page runs on a
    /// window), without a handle per page. With `.noWait`, stops at the first page that
    /// cannot be had and keeps the pages mapped so far; otherwise a failure frees the pages
    /// this call mapped (the batch keeps what it held before) and throws. Returns the number
    /// of mappings appended.
    ///
    /// A reader that maps run after run into one batch, emptying it with ``removeAll()``
    /// between them, makes no heap allocation per run.
    ///
    /// - Precondition: every page is wired; without `.noWait`, `pages` is no longer than the
    ///   window (a batch that must hold more mappings than the window has slots would wait
    ///   for itself forever: the process stops instead, naming the mistake).
    /// - Throws: what `allocate(_:flags:)` throws, except `wouldBlock` with
    ///   `.noWait`, and except `mappingRefused` after the first page with `.noWait`.
    @discardableResult
    public mutating func map(_ object: VMObject, pages: Range<Int>, flags: SFBufPool.Flags = [])
      throws(SFBufError) -> Int
    {
      let slots = pool.nsfbufs
      if !flags.contains(.noWait) && !pool.isDirectMap && pages.count > slots {
        fatalError(
          "SFBufBatch.map: \(pages.count) pages cannot be held at once in a window of \(slots) slot\(slots == 1 ? "" : "s"); without .noWait the call would wait for its own mappings forever (map fewer pages, or pass .noWait)"
        )
      }
      let before = count
      let o = Unmanaged.passUnretained(object)
      let p = pool
      do {
        // Each run's mappings go straight into the storage, with no handle made or consumed.
        try p.forEachRun(
          of: object, pages: pages, flags: flags, lone: { append($0) },
          run: { _, layout, first, n, lower in
            reserve(n)
            // Region by region: a run that maps lies in one, but a run of hits may span
            // several, whose slots are adjacent in number, not in address.
            var i = 0
            while i < n {
              let s = first &+ i
              let end = min(n, i &+ (HostMachine.regionSlots &- s & (HostMachine.regionSlots &- 1)))
              var address = layout.address(ofSlot: s)
              while i < end {
                (entries + count).initialize(
                  to: Entry(slot: first &+ i, object: o, pageIndex: lower &+ i, address: address))
                count &+= 1  // at most the batch's capacity (reserved above)
                i &+= 1
                address += layout.pageSize
              }
            }
          })
      } catch let error as SFBufError {
        if !flags.contains(.noWait) || count == before && error != .wouldBlock {
          freeEntries(from: before)
          count = before
          throw error
        }
      } catch {
        fatalError("unreachable: only allocations throw here")
      }
      return count - before
    }

    /// Room for `more` mappings beyond those held.
    @usableFromInline mutating func reserve(_ more: Int) {
      guard count + more > capacity else { return }
      var grown = capacity * 2
      while grown < count + more { grown *= 2 }
      let storage = UnsafeMutablePointer<Entry>.allocate(capacity: grown)
      storage.moveInitialize(from: entries, count: count)
      entries.deallocate()
      entries = storage
      capacity = grown
    }

    /// Where mapping `i` is (`sf_buf_kva`). Valid while the batch holds it.
    public func address(_ i: Int) -> UnsafeMutableRawPointer {
      precondition(i >= 0 && i < count, "SFBufBatch: index \(i) out of 0..<\(count)")
      return entries[i].address
    }

    /// The page mapping `i` maps (`sf_buf_page`).
    public func page(_ i: Int) -> VMPage {
      precondition(i >= 0 && i < count, "SFBufBatch: index \(i) out of 0..<\(count)")
      return VMPage(object: entries[i].object.takeUnretainedValue(), index: entries[i].pageIndex)
    }

    /// Frees every mapping now (`sf_buf_free` of each).
    public consuming func free() {}

    /// Frees every mapping now, taking the pool lock once for all of them, and keeps the
    /// storage for the next ones: a reader that maps run after run into one batch makes no
    /// heap allocation per run.
    public mutating func removeAll() {
      freeEntries()
      count = 0
    }

    /// The slots of `count` entries from `start`, read in place.
    @usableFromInline struct Slots: Sequence, IteratorProtocol {
      @usableFromInline var at: UnsafePointer<Entry>
      @usableFromInline let end: UnsafePointer<Entry>
      @inlinable init(_ start: UnsafeMutablePointer<Entry>, count: Int) {
        at = UnsafePointer(start)
        end = at + count
      }
      @inlinable mutating func next() -> Int? {
        guard at < end else { return nil }
        defer { at += 1 }
        return at.pointee.slot
      }
    }

    /// Frees mappings `first..<count` (the count is the caller's to set).
    @usableFromInline func freeEntries(from first: Int = 0) {
      let n = count - first
      guard n > 0 else { return }
      switch pool.backing {
      case .window(let w, _):
        let held = Slots(entries + first, count: n)
        w._withUnsafeGuaranteedRef { $0.free(slots: held) }
      case .directMap:
        for i in first..<count { entries[i].object.release() }
      }
      (entries + first).deinitialize(count: n)
    }

    deinit {
      freeEntries()
      entries.deallocate()
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
