// Per-page wire counts whose memory grows with the wired pages, not with the object.

#if os(Linux)
  import Synchronization

  /// Wire counts of one object's pages: a directory of chunks of 1024 counters, a chunk made
  /// when one of its pages is first wired, and after each chunk's counters the number of
  /// its pages wired, so that a run inside a chunk wired whole is checked with one load.
  /// Reading a count takes no lock (two acquire loads), so the allocator can check wiring on
  /// every allocation; changing counts takes a lock.
  ///
  /// Memory: 4 KiB (and 64 bytes) per 1024-page chunk touched by wiring, plus 8 bytes per
  /// 4 MiB of the highest page index ever wired (the directory).
  @usableFromInline
  // @unchecked: raw memory read without the lock by design.
  final class WireTable: @unchecked Sendable {
    @usableFromInline static let chunkPages = 1024
    /// Counters allocated per chunk: its pages', then the number of its pages wired (and
    /// padding to a cache line).
    static let chunkCounters = chunkPages + 16
    /// A chunk pointer in the directory, published with a release store.
    @usableFromInline typealias Link = Atomic<UnsafeMutableRawPointer?>

    /// The directory: word 0 holds the capacity in chunks, the next words the chunk links
    /// (``Link``, nil until the chunk is made). Published with a release store; replaced
    /// directories are kept until deinit, so a reader holding an old one stays safe.
    @usableFromInline let cell: UnsafeMutablePointer<Link>
    private var retired: [UnsafeMutableRawPointer] = []
    private var chunks: [UnsafeMutablePointer<Atomic<UInt32>>] = []
    private let lock = Mutex(())

    init() {
      cell = .allocate(capacity: 1)
      cell.initialize(to: Link(nil))
    }

    /// The current directory (locked callers only).
    private var directory: UnsafeMutableRawPointer? { cell.pointee.load(ordering: .relaxed) }

    deinit {
      if let d = cell.pointee.load(ordering: .relaxed) { d.deallocate() }
      cell.deinitialize(count: 1)
      cell.deallocate()
      for d in retired { d.deallocate() }
      for c in chunks {
        c.deinitialize(count: WireTable.chunkCounters)
        c.deallocate()
      }
    }

    /// The link of chunk `n` in directory `dir`.
    @inlinable static func link(_ dir: UnsafeMutableRawPointer, _ n: Int) -> UnsafeMutablePointer<
      Link
    > {
      (dir + (1 + n) * MemoryLayout<Int>.stride).assumingMemoryBound(to: Link.self)
    }

    /// The counters of chunk `n` in directory `dir`, or nil for a chunk never made.
    @inlinable static func counts(_ dir: UnsafeMutableRawPointer, _ n: Int)
      -> UnsafeMutablePointer<Atomic<UInt32>>?
    {
      guard n < dir.load(as: Int.self), let c = link(dir, n).pointee.load(ordering: .acquiring)
      else { return nil }
      return c.assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    /// The wire count of page `index` (0 for a page never wired).
    @inlinable func count(_ index: Int) -> UInt32 {
      guard index >= 0, let dir = cell.pointee.load(ordering: .acquiring),
        let counts = WireTable.counts(dir, index / WireTable.chunkPages)
      else { return 0 }
      return counts[index % WireTable.chunkPages].load(ordering: .acquiring)
    }

    /// Whether every page of `pages` has a wire count above 0: ``count(_:)`` of each, with
    /// the directory and each chunk's link loaded once.
    @inlinable func allWired(_ pages: Range<Int>) -> Bool {
      guard pages.lowerBound >= 0, let dir = cell.pointee.load(ordering: .acquiring) else {
        return pages.isEmpty
      }
      var i = pages.lowerBound
      while i < pages.upperBound {
        let chunk = i / WireTable.chunkPages
        guard let counts = WireTable.counts(dir, chunk) else { return false }
        let end = min(pages.upperBound, (chunk + 1) * WireTable.chunkPages)
        if counts[WireTable.chunkPages].load(ordering: .acquiring) != UInt32(WireTable.chunkPages) {
          for j in i..<end where counts[j % WireTable.chunkPages].load(ordering: .acquiring) == 0 {
            return false
          }
        }
        i = end
      }
      return true
    }

    /// Adds `delta` (+1 or -1) to the count of every page of `pages`. Unwiring a page whose
    /// count is zero stops the process, and changes nothing before it does.
    func add(_ pages: Range<Int>, _ delta: Int32) {
      lock.locked { _ in
        if delta < 0 {
          for i in pages where count(i) == 0 {
            fatalError("vm_page_unwire: page \(i) is not wired")
          }
        }
        // Only this lock's holder writes counts: a load and a release store each, not a
        // locked read-modify-write (readers load with acquire, without the lock).
        for i in pages {
          let c = chunk(for: i)
          let old = c[i % WireTable.chunkPages].load(ordering: .relaxed)
          let new = old &+ UInt32(bitPattern: delta)
          c[i % WireTable.chunkPages].store(new, ordering: .releasing)
          if old == 0 || new == 0 {
            // The page went from unwired to wired, or back.
            let wired = c[WireTable.chunkPages].load(ordering: .relaxed)
            c[WireTable.chunkPages].store(wired &+ UInt32(bitPattern: delta), ordering: .releasing)
          }
        }
      }
    }

    /// The chunk holding page `index`, made (and the directory grown) if needed. Locked.
    private func chunk(for index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
      let n = index / WireTable.chunkPages
      let capacity = directory.map { $0.load(as: Int.self) } ?? 0
      if n >= capacity {
        var newCapacity = max(capacity * 2, 16)
        while newCapacity <= n { newCapacity *= 2 }
        let d = UnsafeMutableRawPointer.allocate(
          byteCount: (1 + newCapacity) * MemoryLayout<Int>.stride,
          alignment: MemoryLayout<Int>.alignment)
        d.storeBytes(of: newCapacity, as: Int.self)
        for k in 0..<newCapacity {
          let old =
            k < capacity ? WireTable.link(directory!, k).pointee.load(ordering: .relaxed) : nil
          (d + (1 + k) * MemoryLayout<Int>.stride).bindMemory(to: Link.self, capacity: 1)
            .initialize(to: Link(old))
        }
        if let old = directory { retired.append(old) }
        cell.pointee.store(d, ordering: .releasing)
      }
      let link = WireTable.link(directory!, n)
      if let c = link.pointee.load(ordering: .relaxed) {
        return c.assumingMemoryBound(to: Atomic<UInt32>.self)
      }
      let c = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: WireTable.chunkCounters)
      for k in 0..<WireTable.chunkCounters { (c + k).initialize(to: Atomic(0)) }
      chunks.append(c)
      link.pointee.store(UnsafeMutableRawPointer(c), ordering: .releasing)
      return c
    }
  }
#endif
