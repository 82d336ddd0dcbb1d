// One database file opened with `vfs=sfbuf`: SQLite's xFetch and xUnfetch answered with
// sf_buf mappings of the file's pages.

#if os(Linux)
  import SFBufHost

  /// The mapping state of one open database file (one `sqlite3_file` of a main database).
  ///
  /// SQLite calls a file's methods from one thread at a time (its connection's, or its
  /// shared cache's, mutex), so this state takes no lock; the pool and the registry are
  /// shared and take theirs.
  ///
  /// It keeps what SQLite's own `unix` VFS keeps about its whole-file mapping: how many
  /// bytes may be mapped (`mapSize`: the file's size when last looked at, capped by the
  /// `mmap_size` limit), learned with one `fstat` at the first fetch after a drop, grown by
  /// this file's own writes, shrunk before its own truncations, and forgotten when SQLite
  /// drops every mapping (`xUnfetch(0, NULL)`: at the start of a transaction after another
  /// connection changed the file, after an error, when the limit changes). A fetch past
  /// `mapSize` gets NULL, so a mapping never shows bytes the file does not have.
  ///
  /// Pages are wired in chunks of ``wireChunk`` pages when first fetched and stay wired
  /// until that drop, a truncation past them, or the close: the wires of the mapped
  /// region, as SQLite's mapping of the whole region is kept between fetches. Each fetch
  /// then costs an `sf_buf_alloc` with `SFB_NOWAIT` (a hash lookup on a hit), each unfetch
  /// an `sf_buf_free`.
  ///
  /// A window admits pages (`admit=N`): each fetch counts one request for its page in a
  /// byte per page of the file (saturating at 255, every count halved every
  /// ``SFBufSQLiteConfig/agingPeriod(slots:)`` fetches); a page whose count is still below
  /// N gets NULL, and SQLite reads it with xRead into its page cache. SQLite's pager asks
  /// xFetch before its own cache for every page it gets while reading, so a page SQLite
  /// keeps using is counted up to N and from then on mapped (a hit while it stays cached in
  /// the window), while a page asked for once costs one `pread` rather than an `mmap`.
  final class MappedFile {
    let config: SFBufSQLiteConfig
    let pool: SFBufPool
    let object: VMObject
    let key: SFBufSQLite.FileKey
    var counters = SFBufSQLiteCounters()

    /// The `mmap_size` limit SQLite set (`SQLITE_FCNTL_MMAP_SIZE`); 0 maps nothing.
    var limit = 0
    /// Bytes that may be mapped, or -1 until looked at again.
    var mapSize = -1
    /// Mappings handed out and not yet given back.
    var outstanding = 0

    /// Pages per wiring chunk (8 MiB).
    static let wireChunk = 2048
    /// Per chunk: how many of its pages, from its first, this file has wired.
    var wired: [Int] = []

    /// Window only: per slot, SQLite's references to it through this file; while there are
    /// any, this file holds one mapping of the slot (`slotHeld`, one pool reference however
    /// many SQLite holds); on the first slot of a page larger than 4096 bytes, how many
    /// adjacent slots the page spans.
    let slotRefs: UnsafeMutablePointer<Int32>
    let slotHeld: UnsafeMutablePointer<SFBuf>
    let slotSpan: UnsafeMutablePointer<Int32>
    let slots: Int

    /// Admission (window only, `admit` > 1): per page of the file, its recent requests.
    var heat: UnsafeMutablePointer<UInt8>? = nil
    var heatCount = 0
    /// Fetches until the counts are halved.
    var untilAging: Int
    let agingPeriod: Int
    let admit: Int

    #if DEBUG
      /// Tests only: files opened with a window of this many slots map the page after the
      /// one asked for (a mutant the query checks must catch; other windows are unaffected).
      nonisolated(unsafe) static var mutantWindow: Int? = nil
      let mutantShift: Int
    #endif

    /// The largest `mmap_size` accepted, as SQLite's default `SQLITE_MAX_MMAP_SIZE`.
    static let maxLimit = 0x7fff_0000

    init(path: String, config: SFBufSQLiteConfig) throws(SFBufSQLiteConfigError) {
      self.config = config
      (object, key) = try SFBufSQLite.acquireObject(path: path)
      do {
        pool = try SFBufSQLite.makePool(for: config)
      } catch {
        SFBufSQLite.releaseObject(key)
        throw error
      }
      slots = pool.nsfbufs
      admit = pool.isDirectMap ? 1 : config.admit
      agingPeriod = SFBufSQLiteConfig.agingPeriod(slots: slots)
      untilAging = agingPeriod
      #if DEBUG
        mutantShift = config.nsfbufs != nil && config.nsfbufs == MappedFile.mutantWindow ? 1 : 0
      #endif
      slotRefs = .allocate(capacity: max(slots, 1))
      slotRefs.initialize(repeating: 0, count: max(slots, 1))
      slotHeld = .allocate(capacity: max(slots, 1))
      slotSpan = .allocate(capacity: max(slots, 1))
      slotSpan.initialize(repeating: 1, count: max(slots, 1))
    }

    /// Frees what SQLite still holds (nothing, if it kept its contract), unwires, and gives
    /// the object back.
    func close() {
      for slot in 0..<slots where slotRefs[slot] > 0 {
        (slotHeld + slot).move().free()
        slotRefs[slot] = 0
      }
      outstanding = 0
      unwireAll()
      SFBufSQLite.release(key, config: config, counters: counters)
      slotRefs.deallocate()
      slotHeld.deallocate()
      slotSpan.deallocate()
      heat?.deallocate()
      heat = nil
    }

    // MARK: xFetch

    /// A pointer to the `amount` bytes at `offset`, mapped through the pool, or `nil`.
    func fetch(offset: Int, amount: Int) -> UnsafeMutableRawPointer? {
      counters.fetches += 1
      if mapSize < 0 { lookAtFile() }
      guard amount > 0, offset >= 0, offset + amount <= mapSize else {
        counters.pastEnd += 1
        return nil
      }
      #if DEBUG
        let first = offset / vmPageSize + mutantShift
      #else
        let first = offset / vmPageSize
      #endif
      let span = (offset % vmPageSize + amount - 1) / vmPageSize + 1
      if admit > 1 && !admitted(first) {
        counters.cold += 1
        return nil
      }
      guard wire(first, span) else {
        counters.refused += 1
        return nil
      }
      let inner = offset % vmPageSize
      let p = span == 1 ? mapOne(first) : mapAdjacent(first, span)
      guard let p else { return nil }
      counters.mapped += 1
      outstanding += 1
      return p + inner
    }

    /// Counts one request for page `index`; whether it has now been asked for `admit` times
    /// (recently). O(1), but every ``agingPeriod`` calls O(pages of the file).
    @inline(__always)
    private func admitted(_ index: Int) -> Bool {
      untilAging -= 1
      if untilAging <= 0 { age() }
      if index >= heatCount { growHeat(to: index + 1) }
      let h = heat![index]
      let n = h == UInt8.max ? h : h + 1
      heat![index] = n
      return Int(n) >= admit
    }

    /// Halves every count.
    private func age() {
      untilAging = agingPeriod
      guard let heat else { return }
      for i in 0..<heatCount { heat[i] >>= 1 }
    }

    /// Room for the counts of `count` pages (at least the mapped size's), new ones at 0.
    private func growHeat(to count: Int) {
      let n = max(count, (mapSize + vmPageSize - 1) / vmPageSize, heatCount * 2)
      let new = UnsafeMutablePointer<UInt8>.allocate(capacity: n)
      new.initialize(repeating: 0, count: n)
      if let heat {
        new.update(from: heat, count: heatCount)
        heat.deallocate()
      }
      heat = new
      heatCount = n
    }

    /// One page through the pool.
    @inline(__always)
    private func mapOne(_ index: Int) -> UnsafeMutableRawPointer? {
      do {
        let buf = try pool.allocate(object.page(index), flags: .noWait)
        if buf.slot == nil { return buf.address }  // direct map: the object's mapping, kept
        return hold(buf)
      } catch SFBufError.wouldBlock {
        counters.windowFull += 1
      } catch {
        counters.refused += 1
      }
      return nil
    }

    /// Counts one more reference of SQLite's to `buf`'s slot; keeps `buf` if this file held
    /// no mapping of that slot, else frees it (the one held keeps the mapping).
    @inline(__always)
    private func hold(_ buf: consuming SFBuf) -> UnsafeMutableRawPointer {
      let slot = buf.slot!
      let address = buf.address
      slotSpan[slot] = 1
      if slotRefs[slot] == 0 {
        (slotHeld + slot).initialize(to: buf)
      } else {
        buf.free()
      }
      slotRefs[slot] += 1
      return address
    }

    /// A page of `span` pages (larger than 4096 bytes) mapped into adjacent slots: first by
    /// hits, when the pages are still cached where one run put them; else as one page run
    /// (one `mmap` into a free block of adjacent slots).
    private func mapAdjacent(_ first: Int, _ span: Int) -> UnsafeMutableRawPointer? {
      if pool.isDirectMap {
        // Adjacent by construction; each page is checked to be inside the mapping.
        var a: UnsafeMutableRawPointer? = nil
        for i in 0..<span {
          guard let p = mapOne(first + i) else { return nil }
          if i == 0 { a = p }
        }
        return a
      }
      let got = UnsafeMutablePointer<SFBuf>.allocate(capacity: span)
      defer { got.deallocate() }
      var n = 0
      func freeGot() {
        for i in 0..<n { (got + i).move().free() }
        n = 0
      }
      // Hits first: each page found, in use or cached, in the slot after the previous.
      let calls = pool.mapCalls
      do {
        while n < span {
          let buf = try pool.allocate(object.page(first + n), flags: .noWait)
          let slot = buf.slot!
          (got + n).initialize(to: buf)
          n += 1
          if pool.mapCalls != calls || slot != got[0].slot! + n - 1 { break }
        }
      } catch SFBufError.wouldBlock {
        freeGot()
        counters.windowFull += 1
        return nil
      } catch {
        freeGot()
        counters.refused += 1
        return nil
      }
      if n == span && pool.mapCalls == calls { return adopt(got, span) }
      freeGot()
      // One run.
      do {
        try pool.allocateRun(of: object, pages: first..<(first + span), flags: .noWait) {
          buf in
          (got + n).initialize(to: buf)
          n += 1
        }
      } catch SFBufError.wouldBlock {
        freeGot()
        counters.windowFull += 1
        return nil
      } catch {
        freeGot()
        counters.refused += 1
        return nil
      }
      var adjacent = n == span
      for i in 1..<n where got[i].slot! != got[0].slot! + i { adjacent = false }
      if adjacent { return adopt(got, span) }
      counters.notAdjacent += 1
      freeGot()
      return nil
    }

    /// Holds the mappings of a page mapped into adjacent slots; returns its address.
    private func adopt(_ got: UnsafeMutablePointer<SFBuf>, _ span: Int) -> UnsafeMutableRawPointer {
      let first = got[0].slot!
      let address = got[0].address
      for i in 0..<span { _ = hold((got + i).move()) }
      slotSpan[first] = Int32(span)
      return address
    }

    // MARK: xUnfetch

    /// Gives back the mapping at `pointer`, or (`nil`) forgets the file's mapped size and
    /// drops the wires, as SQLite's `unix` VFS unmaps the file.
    func unfetch(pointer: UnsafeMutableRawPointer?) {
      guard let pointer else {
        counters.unmapAll += 1
        mapSize = -1
        if outstanding == 0 { unwireAll() }
        return
      }
      counters.unfetches += 1
      outstanding -= 1
      // Not in the window: a direct map's, which has nothing to free.
      guard let first = pool.slot(containing: pointer) else { return }
      let span = Int(slotSpan[first])
      for s in first..<(first + span) {
        precondition(slotRefs[s] > 0, "sfbuf: xUnfetch of a mapping not handed out")
        slotRefs[s] -= 1
        if slotRefs[s] == 0 { (slotHeld + s).move().free() }
      }
    }

    // MARK: the file's size and wires

    /// Learns the file's size (`fstat`).
    private func lookAtFile() {
      let size = (try? object.size()) ?? 0
      mapSize = min(size, limit)
    }

    /// SQLite's `mmap_size` limit: sets it (when `newLimit` >= 0 and nothing is
    /// outstanding, as the `unix` VFS does) and returns the previous one.
    func setLimit(_ newLimit: Int) -> Int {
      let old = limit
      if newLimit >= 0 && outstanding == 0 {
        limit = min(newLimit, MappedFile.maxLimit)
        mapSize = -1
      }
      return old
    }

    /// This file's own write ended at `end`: the file has those bytes now.
    func wrote(end: Int) {
      if mapSize >= 0 && end > mapSize { mapSize = min(end, limit) }
    }

    /// This file is about to be truncated to `size`: nothing at or past it is mapped again,
    /// and its pages are unwired (SQLite holds no mapping of them when it truncates).
    func willTruncate(to size: Int) {
      if mapSize > size { mapSize = size }
      guard outstanding == 0 else { return }
      let keep = (size + vmPageSize - 1) / vmPageSize
      for c in wired.indices where wired[c] > 0 {
        let start = c * MappedFile.wireChunk
        let end = start + wired[c]
        if end > keep {
          let from = max(start, keep)
          object.unwire(pages: from..<end)
          wired[c] = from - start
        }
      }
    }

    /// Wires pages `first ..< first + span` if this file has not yet: the rest of their
    /// chunks up to the mapped size, one `wire` call per chunk.
    @inline(__always)
    private func wire(_ first: Int, _ span: Int) -> Bool {
      let last = first + span - 1
      let c = last / MappedFile.wireChunk
      if c < wired.count && first >= c * MappedFile.wireChunk
        && last - c * MappedFile.wireChunk < wired[c]
      {
        return true
      }
      return wireSlow(first, last)
    }

    private func wireSlow(_ first: Int, _ last: Int) -> Bool {
      let mapPages = (mapSize + vmPageSize - 1) / vmPageSize
      guard last < mapPages else { return false }
      for c in (first / MappedFile.wireChunk)...(last / MappedFile.wireChunk) {
        if c >= wired.count { wired += Array(repeating: 0, count: c + 1 - wired.count) }
        let start = c * MappedFile.wireChunk
        let end = min(start + MappedFile.wireChunk, mapPages)
        if start + wired[c] < end {
          do {
            try object.wire(pages: (start + wired[c])..<end)
          } catch {
            return false
          }
          wired[c] = end - start
        }
      }
      return true
    }

    private func unwireAll() {
      for c in wired.indices where wired[c] > 0 {
        let start = c * MappedFile.wireChunk
        object.unwire(pages: start..<(start + wired[c]))
        wired[c] = 0
      }
    }

    // MARK: sfbuf_stats()

    /// The pool's `netstat -m` lines, its hits, misses and mapping calls, and this file's
    /// counters.
    var statsText: String {
      var lines: [String] = []
      if pool.isDirectMap {
        lines.append("direct map (no window: nothing to count)")
      } else {
        let s = pool.stats
        lines += s.netstatLines
        let rate = (s.hitRate * 1000).rounded() / 10
        lines.append(
          "hits \(s.hits), misses \(s.misses), remaps \(s.remaps), hit rate \(rate)%, "
            + "mmap calls \(pool.mapCalls), madvise calls \(pool.unmapCalls)")
      }
      lines.append("this connection: " + counters.line)
      return lines.joined(separator: "\n")
    }
  }
#endif
