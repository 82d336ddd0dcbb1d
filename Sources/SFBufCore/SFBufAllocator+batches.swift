// Beyond one slot at a time (batching): releasing the translations of many free
// slots with one machine call (with the machine's lock held), and mapping a run of
// consecutive pages into adjacent slots with one machine call (outside the lock when the
// batched policy maps outside it, as its single misses do).

extension SFBufAllocator {
  // MARK: Batched reclaim

  /// Drops the translations of the `batch` least recently freed slots that still have one,
  /// so that the misses after this one remap slots with nothing present. One
  /// ``SFBufMachine/unmap(slots:)`` per stretch of the window from the first to the last of
  /// them that holds no slot in use: the free slots in between, cached or not, lose their
  /// translations too (they stay cached; a later access faults the page back in). Slots in
  /// use are never touched. The free list, the hash and the counters do not change.
  ///
  /// - Complexity: O(`batch` + the stretch of window covered). Locked.
  @inlinable func releaseBatch(_ batch: Int) {
    var marked = 0
    var lo = nsfbufs
    var hi = -1
    var s = book.pointee.freeHead
    while s >= 0 && marked < batch {
      if !line(s).pointee.released {
        line(s).pointee.marked = true
        marked += 1
        lo = min(lo, s)
        hi = max(hi, s)
      }
      s = line(s).pointee.freeNext
    }
    var start = -1
    var last = -1
    var i = lo
    while i <= hi {
      if isInUse(i) {
        // A slot in use ends the stretch.
        release(start, last)
        start = -1
      } else if line(i).pointee.marked {
        line(i).pointee.marked = false
        if start < 0 { start = i }
        last = i
      }
      i += 1
    }
    release(start, last)
  }

  @inlinable func release(_ start: Int, _ last: Int) {
    guard start >= 0 else { return }
    machine.unmap(slots: start..<(last + 1))
    for s in start...last { line(s).pointee.released = true }
  }

  // MARK: Runs

  /// Maps up to `count` consecutive pages of one object (`page(0)`, `page(1)`, ...) into as
  /// many adjacent free slots with one ``SFBufMachine/map(run:count:slot:)``, each slot then
  /// holding one reference to its page, exactly as that many misses would leave them (the
  /// counters count one miss and one remap per page). Never sleeps.
  ///
  /// When the first pages are already cached in order in adjacent slots (a run mapped them
  /// before), they are taken as hits, with no mapping at all: a file sent again and again
  /// costs no system call. Otherwise the run stops before the first page cached in a slot
  /// in use (or being mapped): that page is the caller's next hit. A page cached in a
  /// *free* slot out of order is dropped from that slot's cache and mapped again in the
  /// run, which costs nothing more and keeps every page in at most one slot; if that slot
  /// is loud (freed since the last hazard scan: a reader may still be on it), the run may
  /// end before the page instead, and the next run scans, then maps it.
  ///
  /// While in use, the run's slots are *locked-only*: every reference to them is taken and
  /// dropped with the lock held (a hit on one of their pages, a ``ref(_:)``, a free), so
  /// that a free needs no compare-and-swap on the slot's word, only a store. Freeing a
  /// run's pages, most of all with ``free(slots:)``, costs less; a lone hit on a page a run
  /// holds takes the lock. The flag goes when the slot is freed.
  ///
  /// Returns the first slot and the run's length `n` (slot `first + i` maps `page(i)` for
  /// `i < n`), or `nil` when no run is possible and the caller should allocate `page(0)`
  /// alone: the machine maps one page per call, fewer than 2 pages come before a page in
  /// use, or no block of `n` slots aligned to `n` is free (and unpromised to woken
  /// sleepers). A run that maps is at most ``SFBufMachine/runBoundary`` long, and its block
  /// lies between two of its multiples; a run of hits is not bound so (earlier runs may have
  /// left their pages in adjacent blocks), so take each slot's address from the slot, never
  /// from the first one's. The block tried first is the one holding the least recently
  /// freed slot.
  ///
  /// - Precondition: every page is wired; with `.cpuPrivate`, the caller is pinned. The
  ///   pages are checked (with the lock held) when the run maps them, all at once, or takes
  ///   them from free slots; pages past the run's end are checked by the calls that map them.
  /// - Throws: ``SFBufError/mappingRefused(errno:)``: the slots went back to the pool.
  /// - Complexity: O(`count`) hash lookups, and a scan of the window for a free block. The
  ///   common run (its first two pages not cached, a block as long as it may be free and
  ///   quiet) looks each page up and claims its slot in one pass.
  @inlinable
  public func allocateRun(
    count limit: Int, flags: SFBufFlags = [], page: (Int) -> Page
  ) throws(SFBufError) -> (first: Int, count: Int)? {
    try allocateRun(
      count: limit, flags: flags, key: { page($0).hashKey }, fill: { $1 = page($0) })
  }

  /// ``allocateRun(count:flags:page:)``, given each page's ``SFBufPageKey/hashKey`` without
  /// making the page, and a way to store page `i` in a slot that may still hold the page it
  /// cached: the run's pages are looked up by key, a page is made only to confirm a key
  /// found in the hash and to be mapped, and `fill(i, &cell)` stores page `i` in `cell`
  /// (which holds a page, or `nil`), reusing what it holds where that is cheaper. Where
  /// making a page costs something (the host's retains its object, whose reference count
  /// threads mapping the same file share, and the page it replaces releases it), a slot
  /// that cached a page of the same object is given the next page without either.
  ///
  /// - Precondition: after `fill(i, &cell)`, `cell` holds a page whose `hashKey` is `key(i)`,
  ///   whatever `cell` held before.
  @inlinable @inline(__always)
  public func allocateRun(
    count limit: Int, flags: SFBufFlags = [], key: (Int) -> UInt,
    fill: (_ i: Int, _ cell: inout Page?) -> Void
  ) throws(SFBufError) -> (first: Int, count: Int)? {
    guard Machine.mapsRuns, limit >= 2 else { return nil }
    checkPinned(flags)
    machine.lock()
    defer { machine.unlock() }
    var scanned = false
    while true {
      if let hits = runHit(limit: limit, flags, key: key, page: { made($0, fill) }) {
        return hits
      }
      if let (first, count) = claimFreshRun(limit: limit, key: key, fill: fill) {
        try mapClaimed(first, count: count, flags, page: { made($0, fill) })
        return (first, count)
      }
      var count = min(limit, nsfbufs, machine.runBoundary)
      var cached = false
      for i in 0..<count {
        let s = lookup(key: key(i)) { made(i, fill) }
        if s >= 0 && isInUse(s) {
          count = i
          break
        }
        cached = cached || s >= 0
      }
      guard count >= 2, book.pointee.freeCount - book.pointee.reserved >= count else {
        return nil
      }
      guard let (first, inOrder) = freeBlock(count: count) else { return nil }
      if Machine.hazardRecords > 0 && !isQuiet(run: first, count: count, cached: cached, fill) {
        // A scan drops the lock (and may take slots for readers): plan the run again. Once:
        // a block still loud after a scan is left to the caller's single allocations.
        if scanned { return nil }
        quietFreeSlots()
        scanned = true
        continue
      }
      checkWired(run: made(0, fill), count: count)
      if cached {
        for i in 0..<count {
          let s = lookup(made(i, fill))
          if s >= 0 { forget(s) }
        }
      }
      claimRun(first, count: count, inOrder: inOrder, key: key, fill: fill)
      try mapClaimed(first, count: count, flags, page: { made($0, fill) })
      return (first, count)
    }
  }

  /// A free block of `count` slots aligned to `count`, within a stretch of
  /// ``SFBufMachine/runBoundary`` slots, trying first the one that holds the least recently
  /// freed slot; with whether its slots follow each other on the free list
  /// (``freeStretch(from:to:)``). `nil` when there is none. Locked.
  @inlinable func freeBlock(count: Int) -> (first: Int, inOrder: Bool)? {
    let boundary = machine.runBoundary
    let blocks = nsfbufs / count
    let head = book.pointee.freeHead / count
    for j in 0..<blocks {
      let b = (head + j) % blocks * count
      if b % boundary + count > boundary || isInUse(b) { continue }
      // Free up to `stretch` by the free list's order (the common case: the whole block,
      // as the run before freed it), then slot by slot.
      let last = b + count - 1
      let stretch = freeStretch(from: b, to: last)
      var free = true
      for s in (stretch + 1)..<(last + 1) where isInUse(s) {
        free = false
        break
      }
      if free { return (b, stretch == last) }
    }
    return nil
  }

  /// The common run, planned and claimed in one pass: none of its first two pages is
  /// cached, and a block as long as the run may be is free and quiet. Each page is looked
  /// up and its slot claimed in one step (the key's bucket found once for both): a page
  /// cached in a free quiet slot is dropped from it, as the general path does, and the
  /// run ends before a page cached in a slot in use (or in a loud one). `nil`, having
  /// claimed nothing, when the general path must plan the run. Locked.
  @inlinable @inline(__always) func claimFreshRun(
    limit: Int, key: (Int) -> UInt, fill: (_ i: Int, _ cell: inout Page?) -> Void
  ) -> (first: Int, count: Int)? {
    let longest = min(limit, nsfbufs, machine.runBoundary)
    guard longest >= 2, book.pointee.freeCount - book.pointee.reserved >= longest,
      lookup(key: key(0), { made(0, fill) }) < 0, lookup(key: key(1), { made(1, fill) }) < 0,
      let (first, inOrder) = freeBlock(count: longest),
      Machine.hazardRecords == 0 || isQuiet(run: first, count: longest, cached: false, fill)
    else { return nil }
    var count = longest
    for i in 0..<longest {
      let k = key(i)
      let b = bucket(k)
      if i >= 2 {
        let c = lookup(key: k, bucket: b) { made(i, fill) }
        if c >= 0 {
          if isInUse(c) || !isQuiet(c) {
            count = i
            break
          }
          forget(c)
        }
      }
      claimSlot(first &+ i, page: i, key: k, bucket: b, fill: fill)
    }
    checkWired(run: made(0, fill), count: count)
    claimedRun(first, count: count, inOrder: inOrder)
    return (first, count)
  }

  /// Claims the `count` free slots from `first` for the run's pages, as ``claim(_:for:)``
  /// claims one each, with the counts (misses, free, in flight, in use) updated once. The
  /// caller checked that the run's pages are wired, and whether the slots follow each other
  /// on the free list (`inOrder`: ``freeStretch(from:to:)``). Locked.
  @inlinable @inline(__always) func claimRun(
    _ first: Int, count: Int, inOrder: Bool, key: (Int) -> UInt,
    fill: (_ i: Int, _ cell: inout Page?) -> Void
  ) {
    for i in 0..<count {
      let k = key(i)
      claimSlot(first &+ i, page: i, key: k, bucket: bucket(k), fill: fill)
    }
    claimedRun(first, count: count, inOrder: inOrder)
  }

  /// Claims free slot `s` of a run for page `i`, whose key is `k` and bucket `b`: the page
  /// the slot cached leaves the hash, and `fill` stores page `i` in the slot's cell, which
  /// still holds that page (or `nil`), so that it may be reused. The slot stays on the free
  /// list and uncounted until ``claimedRun(_:count:inOrder:)``. Locked.
  @inlinable @inline(__always) func claimSlot(
    _ s: Int, page i: Int, key k: UInt, bucket b: Int,
    fill: (_ i: Int, _ cell: inout Page?) -> Void
  ) {
    if state(s).pointee.page != nil { unhash(s) }
    fill(i, &state(s).pointee.page)
    checkFilled(&state(s).pointee.page, key: k)
    claimedUncounted(s, key: k, bucket: b)
  }

  /// Ends the claims of the `count` slots from `first` (``claimSlot(_:page:key:bucket:fill:)``):
  /// they leave the free list (in one splice when `inOrder`), and the counts change once.
  /// Locked.
  @inlinable @inline(__always) func claimedRun(_ first: Int, count: Int, inOrder: Bool) {
    unlinkFree(run: first, count: count, inOrder: inOrder)
    book.pointee.counters.misses &+= count
    book.pointee.freeCount -= count
    book.pointee.mappingsInFlight += count
    if mapsOutsideLock { countUsed(count) }
  }

  /// Whether the block of `count` free slots from `first`, and the free slots caching the
  /// run's pages when `cached`, are all quiet: a run remaps the first and drops the others'
  /// pages from the hash. Locked.
  @inlinable func isQuiet(
    run first: Int, count: Int, cached: Bool, _ fill: (_ i: Int, _ cell: inout Page?) -> Void
  ) -> Bool {
    // ``isQuiet(_:)`` of each, with the scan read once.
    guard let scan = quietScan else { return true }
    for s in first..<(first + count) where !covers(scan, s) { return false }
    guard cached else { return true }
    for i in 0..<count {
      let s = lookup(made(i, fill))
      if s >= 0 && !covers(scan, s) { return false }
    }
    return true
  }

  /// Page `i` of a run, made by its `fill` in an empty cell.
  @inlinable func made(_ i: Int, _ fill: (_ i: Int, _ cell: inout Page?) -> Void) -> Page {
    var cell: Page? = nil
    fill(i, &cell)
    return cell.unsafelyUnwrapped
  }

  /// The run as hits, when its first pages are cached in order in adjacent slots (as a run
  /// left them), none of them being mapped: each is referenced as a lone hit would be, and
  /// nothing is mapped. `nil` when fewer than 2 pages are so cached. Locked.
  @inlinable
  func runHit(
    limit: Int, _ flags: SFBufFlags, key: (Int) -> UInt, page: (Int) -> Page
  ) -> (first: Int, count: Int)? {
    let first = lookup(key: key(0)) { page(0) }
    guard first >= 0, !isBeingMapped(first) else { return nil }
    var count = 1
    while count < min(limit, nsfbufs - first),
      lookup(key: key(count), { page(count) }) == first + count, !isBeingMapped(first + count)
    {
      count += 1
    }
    guard count >= 2 else { return nil }
    for s in first..<(first + count) {
      // A page in use is wired by its holders; one cached in a free slot may not be.
      if !isInUse(s) { checkWired(cell: &state(s).pointee.page) }
      referenceLocked(s, run: true)
      applyCPURules(s, flags, hit: true)
    }
    book.pointee.counters.hits &+= count
    return (first, count)
  }
}
