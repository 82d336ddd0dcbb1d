// Per-page wire counts whose memory grows with the wired pages, not with the object.

#if os(Linux)
  import CSFBufLinux

  /// Wire counts of one object's pages: a directory of chunks of 1024 counters, a chunk made
  /// when one of its pages is first wired. Reading a count takes no lock (two acquire loads),
  /// so the allocator can check wiring on every allocation; changing counts takes a lock.
  ///
  /// Memory: 4 KiB per 1024-page chunk touched by wiring, plus 8 bytes per 4 MiB of the
  /// highest page index ever wired (the directory).
  @usableFromInline
  final class WireTable: @unchecked Sendable {
    @usableFromInline static let chunkPages = 1024

    /// Layout: word 0 holds the capacity in chunks, words 1... the chunk pointers (or nil).
    /// Published with a release store; replaced directories are kept until deinit, so a
    /// reader holding an old one stays safe.
    @usableFromInline let cell: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var retired: [UnsafeMutableRawPointer] = []
    private var chunks: [UnsafeMutablePointer<UInt32>] = []
    private let lock = HostLock()

    init() {
      cell = .allocate(capacity: 1)
      cell.initialize(to: nil)
    }

    /// The current directory (locked callers only).
    private var directory: UnsafeMutableRawPointer? { cell.pointee }

    deinit {
      if let d = cell.pointee { d.deallocate() }
      cell.deallocate()
      for d in retired { d.deallocate() }
      for c in chunks { c.deallocate() }
    }

    /// The wire count of page `index` (0 for a page never wired).
    @inlinable func count(_ index: Int) -> UInt32 {
      guard index >= 0, let dir = sfb_load_ptr(cell) else { return 0 }
      let chunk = index / WireTable.chunkPages
      let words = dir.assumingMemoryBound(to: Int.self)
      guard chunk < words[0] else { return 0 }
      let slot = UnsafeRawPointer(dir + (1 + chunk) * MemoryLayout<Int>.stride)
        .assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
      guard let c = sfb_load_ptr(slot) else { return 0 }
      return sfb_load_u32(c.assumingMemoryBound(to: UInt32.self) + index % WireTable.chunkPages)
    }

    /// Adds `delta` (+1 or -1) to the count of every page of `pages`. Unwiring a page whose
    /// count is zero stops the process, and changes nothing before it does.
    func add(_ pages: Range<Int>, _ delta: Int32) {
      lock.lock()
      defer { lock.unlock() }
      if delta < 0 {
        for i in pages where count(i) == 0 {
          lock.unlock()
          fatalError("vm_page_unwire: page \(i) is not wired")
        }
      }
      for i in pages {
        let c = chunk(for: i)
        _ = sfb_add_u32(c + i % WireTable.chunkPages, delta)
      }
    }

    /// The chunk holding page `index`, made (and the directory grown) if needed. Locked.
    private func chunk(for index: Int) -> UnsafeMutablePointer<UInt32> {
      let n = index / WireTable.chunkPages
      let capacity = directory.map { $0.load(as: Int.self) } ?? 0
      if n >= capacity {
        var newCapacity = max(capacity * 2, 16)
        while newCapacity <= n { newCapacity *= 2 }
        let d = UnsafeMutableRawPointer.allocate(
          byteCount: (1 + newCapacity) * MemoryLayout<Int>.stride,
          alignment: MemoryLayout<Int>.alignment)
        d.initializeMemory(as: Int.self, repeating: 0, count: 1 + newCapacity)
        d.storeBytes(of: newCapacity, as: Int.self)
        if let old = directory {
          (d + MemoryLayout<Int>.stride).copyMemory(
            from: old + MemoryLayout<Int>.stride, byteCount: capacity * MemoryLayout<Int>.stride)
          retired.append(old)
        }
        sfb_store_ptr(cell, d)
      }
      let slot = (directory! + (1 + n) * MemoryLayout<Int>.stride)
        .assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
      if let c = slot.pointee { return c.assumingMemoryBound(to: UInt32.self) }
      let c = UnsafeMutablePointer<UInt32>.allocate(capacity: WireTable.chunkPages)
      c.initialize(repeating: 0, count: WireTable.chunkPages)
      chunks.append(c)
      sfb_store_ptr(slot, UnsafeMutableRawPointer(c))
      return c
    }
  }
#endif
