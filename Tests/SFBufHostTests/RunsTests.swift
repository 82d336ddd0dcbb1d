import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// Page runs: k consecutive pages of one object in k adjacent slots with one `mmap`.
@Suite("Page runs")
struct RunsTests {
  @Test(
    "a run is one mmap; each page is its own mapping",
    arguments: [SFBufReclaimPolicy.faithful, .batched(batch: 8)])
  func oneCall(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 32, policy: policy)
    let o = try taggedAnonymous(pages: 64)
    var slots: [Int] = []
    var kept: [sf_buf] = []
    try pool.allocateRun(of: o, pages: 8..<16) { buf in
      #expect(readTag(buf) == tag(o, buf.pageIndex))
      slots.append(buf.slot!)
      kept.append(buf.release())
    }
    #expect(pool.mapCalls == 1)
    #expect(slots == Array(slots[0]..<(slots[0] + 8)))
    #expect(kept.map { sf_buf_page($0).index } == Array(8..<16))
    let s = pool.stats
    #expect(s.misses == 8 && s.remaps == 8 && s.nsfbufsused == 8)
    // Looked up, referenced and freed one by one. The run's slots are locked-only while in
    // use: the hit, the ref and the frees take the lock, and leave no hit counted in a
    // slot's word, which the run's free would overwrite.
    let hit = try pool.allocate(o.page(12))
    #expect(hit.slot == slots[4])
    pool.sf_buf_ref(kept[4])
    #expect(pool.window!.references(ofSlot: slots[4]) == 3)
    #expect(pool.window!.checkInvariants() == nil)
    pool.sf_buf_free(kept[4])
    for sf in kept { pool.sf_buf_free(sf) }
    #expect(pool.stats.nsfbufsused == 1)
    hit.free()
    #expect(pool.stats.hits == 1 && pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test(
    "a run's block leaves the free list in one splice when its slots lie on it in order, else slot by slot"
  )
  func blockOffTheFreeList() throws {
    let pool = try SFBufPool(nsfbufs: 16, policy: .batched(batch: 4))
    let window = pool.window!
    let o = try taggedAnonymous(pages: 64)
    for (round, inOrder) in [true, false, true, false].enumerated() {
      let pages = (round * 16)..<(round * 16 + 16)
      guard
        let (first, count) = try window.allocateRun(
          count: 16, page: { o.page(pages.lowerBound + $0) })
      else {
        Issue.record("round \(round): no run")
        continue
      }
      #expect(count == 16 && window.freeList().isEmpty)
      for i in 0..<count {
        #expect(
          window.machine.address(ofSlot: first + i).load(as: UInt64.self)
            == tag(o, pages.lowerBound + i))
      }
      #expect(window.checkInvariants() == nil, "round \(round)")
      // Freed in order, the next run finds the block in order on the list (one splice);
      // freed backwards, out of order (slot by slot).
      let slots = inOrder ? Array(first..<(first + count)) : (first..<(first + count)).reversed()
      slots.withUnsafeBufferPointer { window.free(slots: $0) }
      #expect(window.freeList() == slots, "round \(round)")
      #expect(window.checkInvariants() == nil, "round \(round)")
    }
  }

  @Test(
    "a block a run holds is never taken again, though its slots' old free-list links still follow each other"
  )
  func heldBlockNotTakenAgain() throws {
    let pool = try SFBufPool(nsfbufs: 32, policy: .batched(batch: 4))
    let window = pool.window!
    let o = try taggedAnonymous(pages: 64)
    // Slots 0-15, off the free list in one splice: their links inside the block still read
    // 0 -> 1 -> ... -> 15, and none of them is free.
    guard let (held, n) = try window.allocateRun(count: 16, page: { o.page($0) }), n == 16
    else {
      Issue.record("no run of 16")
      return
    }
    #expect(held == 0)
    // Slots 16 and 24 in use, the others of their blocks free: no block of 8 is free.
    var lone: [sf_buf] = []
    for i in 16...24 { lone.append(try pool.allocate(o.page(i)).release()) }
    #expect(lone.map { sf_buf_page($0).index } == Array(16...24))
    for sf in lone[1..<8] { pool.sf_buf_free(sf) }
    #expect(window.checkInvariants() == nil)
    // The block search reaches block 0 (after 24's and before 8's and 16's) and must see
    // its slots in use, whatever their links say.
    #expect(try window.allocateRun(count: 8, page: { o.page(32 + $0) }) == nil)
    #expect(window.checkInvariants() == nil)
    for s in held..<(held + 16) {
      #expect(window.machine.address(ofSlot: s).load(as: UInt64.self) == tag(o, s - held))
      #expect(window.references(ofSlot: s) == 1)
    }
    window.free(slots: held..<(held + 16))
    pool.sf_buf_free(lone[0])
    pool.sf_buf_free(lone[8])
    #expect(pool.stats.nsfbufsused == 0 && window.checkInvariants() == nil)
  }

  @Test("a run stops at a page in use, which is a hit, and goes on after it")
  func cachedPageFallsBack() throws {
    let pool = try SFBufPool(nsfbufs: 32)
    let o = try taggedAnonymous(pages: 64)
    let cached = try pool.allocate(o.page(10))
    var got: [Int] = []
    try pool.allocateRun(of: o, pages: 8..<12) { buf in
      #expect(readTag(buf) == tag(o, buf.pageIndex))
      if buf.pageIndex == 10 { #expect(buf.slot == cached.slot) }
      got.append(buf.pageIndex)
    }
    #expect(got == [8, 9, 10, 11])
    #expect(pool.mapCalls == 3)  // page 10's, then the run 8-9, then 11 alone
    #expect(pool.stats.hits == 1)
    _ = consume cached
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("a throwing body frees the mappings it never received")
  func throwingBody() throws {
    struct Stop: Error {}
    let pool = try SFBufPool(nsfbufs: 16)
    let o = try taggedAnonymous(pages: 16)
    var n = 0
    #expect(throws: Stop.self) {
      try pool.allocateRun(of: o, pages: 0..<8) { _ in
        n += 1
        if n == 3 { throw Stop() }
      }
    }
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("runs on a direct map are page by page")
  func directMap() throws {
    let pool = SFBufPool.directMap()
    let o = try taggedAnonymous(pages: 8)
    var got: [UInt64] = []
    try pool.allocateRun(of: o, pages: 2..<6) { got.append(readTag($0)) }
    #expect(got == (2..<6).map { tag(o, $0) })
  }

  @Test(
    "the same run again is all hits: no mmap, the same slots, the right bytes",
    arguments: [SFBufReclaimPolicy.faithful, .batched(batch: 8)])
  func runHit(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 32, policy: policy)
    let o = try taggedAnonymous(pages: 64)
    var first: [Int] = []
    try pool.allocateRun(of: o, pages: 4..<20) { first.append($0.slot!) }
    let calls = pool.mapCalls
    // Churn the rest of the window so that batched reclaim drops translations.
    for i in 32..<48 { try pool.allocate(o.page(i)).free() }
    for _ in 0..<3 {
      var again: [Int] = []
      try pool.allocateRun(of: o, pages: 4..<20) { buf in
        #expect(readTag(buf) == tag(o, buf.pageIndex))
        again.append(buf.slot!)
      }
      #expect(again == first)
    }
    #expect(pool.mapCalls == calls + 16, "only the churn mapped: \(pool.mapCalls - calls)")
    #expect(pool.stats.hits == 48 && pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  /// A run's slots that cached pages of the same object keep that object and change only
  /// the page's index (no retain); slots that cached another object's pages take the new
  /// object. Either way each slot caches exactly the page it maps.
  @Test("runs over slots that cached the same object's or another object's pages")
  func runsReuseSlots() throws {
    let pool = try SFBufPool(nsfbufs: 8)
    let a = try taggedAnonymous(pages: 32)
    let b = try taggedAnonymous(pages: 32)
    for (o, first) in [(a, 0), (a, 8), (b, 8), (a, 16), (b, 0)] {
      var slots: [Int] = []
      try pool.allocateRun(of: o, pages: first..<(first + 8)) { buf in
        #expect(readTag(buf) == tag(o, buf.pageIndex))
        slots.append(buf.slot!)
      }
      #expect(slots == Array(0..<8))
      for i in 0..<8 {
        #expect(pool.window!.cachedSlot(of: o.page(first + i)) == i)
        let hit = try pool.allocate(o.page(first + i), flags: .noWait)
        #expect(hit.slot == i && readTag(hit) == tag(o, first + i))
      }
      #expect(pool.window!.checkInvariants() == nil)
    }
    #expect(pool.stats.nsfbufsused == 0 && pool.stats.misses == 40 && pool.stats.hits == 40)
  }

  @Test(
    "a run maps pages cached in free slots again, once each",
    arguments: [SFBufReclaimPolicy.faithful, .batched(batch: 8)])
  func cachedFreePages(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 32, policy: policy)
    let o = try taggedAnonymous(pages: 64)
    for i in [3, 5] { try pool.allocate(o.page(i)).free() }
    let calls = pool.mapCalls
    var slots: [Int] = []
    try pool.allocateRun(of: o, pages: 0..<8) { buf in
      #expect(readTag(buf) == tag(o, buf.pageIndex))
      slots.append(buf.slot!)
    }
    #expect(pool.mapCalls == calls + 1)
    #expect(slots == Array(slots[0]..<(slots[0] + 8)))
    for i in 0..<8 { #expect(pool.window!.cachedSlot(of: o.page(i)) == slots[i]) }
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test(
    "a run drops its pages from quiet free slots outside its block and maps them in it; a loud one ends it",
    arguments: [SFBufReclaimPolicy.faithful, .batched(batch: 8)], [true, false])
  func cachedFreePagesElsewhere(policy: SFBufReclaimPolicy, quiet: Bool) throws {
    let pool = try SFBufPool(nsfbufs: 32, policy: policy)
    let window = pool.window!
    let o = try taggedAnonymous(pages: 64)
    // Pages 3 and 5 cached in free slots 0 and 1; slots 2-7 freed after them, so that the
    // run's block is the next one, and the run finds pages 3 and 5 outside it.
    for i in [3, 5] + Array(40..<46) { try pool.allocate(o.page(i)).free() }
    #expect(window.cachedSlot(of: o.page(3)) == 0 && window.cachedSlot(of: o.page(5)) == 1)
    // Freed since the last hazard scan, a slot is loud: a reader may still be on it. A scan
    // makes the free slots quiet.
    if quiet { window.scanHazards() }
    let calls = pool.mapCalls
    let batch = try pool.allocateBatch(of: o, pages: 0..<8)
    for i in 0..<8 { #expect(batch.address(i).load(as: UInt64.self) == tag(o, i)) }
    let slots = (0..<8).map { window.cachedSlot(of: o.page($0)) }
    if quiet {
      // One run: pages 3 and 5 leave slots 0 and 1 and are mapped in the run's block.
      #expect(pool.mapCalls == calls + 1)
      #expect(slots == Array(8..<16))
    } else {
      // The run ends before page 3; the next one scans, then drops and maps 3 and 5.
      #expect(pool.mapCalls == calls + 2)
      #expect(Array(slots[0..<3]) == Array(8..<11))
      #expect(!slots.contains(0) && !slots.contains(1))
    }
    #expect(Set(slots.compactMap { $0 }).count == 8 && pool.stats.nsfbufsused == 8)
    #expect(window.checkInvariants() == nil)
    batch.free()
    #expect(pool.stats.nsfbufsused == 0 && window.checkInvariants() == nil)
  }

  @Test(
    "a window's regions each have a page table of their own; a run maps into one, hits span them")
  func regions() throws {
    let pool = try SFBufPool(nsfbufs: 512, policy: .batched(batch: 128))
    let machine = pool.window!.machine
    let o = try taggedAnonymous(pages: 512)
    let span = vmPageSize / 8 * vmPageSize  // what one page table maps
    let batch = try pool.allocateBatch(of: o, pages: 0..<384)
    #expect(pool.mapCalls == 3, "runs of 128 pages at most: \(pool.mapCalls) mmap calls")
    var spans: Set<Int> = []
    for r in 0..<3 {
      let first = Int(bitPattern: batch.address(r * 128))
      for i in 0..<128 {
        let p = r * 128 + i
        #expect(batch.address(p).load(as: UInt64.self) == tag(o, p))
        #expect(Int(bitPattern: batch.address(p)) == first + i * vmPageSize)
      }
      // The run's page-table span lies wholly inside the window's reservation, so no
      // other mapping of the process shares its page table.
      let start = first & ~(span - 1)
      let reserved = Int(bitPattern: machine.reservation.start)
      #expect(start >= reserved && start + span <= reserved + machine.reservation.length)
      spans.insert(start)
    }
    #expect(spans.count == 3, "each run in its own page table's span")
    batch.free()
    #expect(pool.window!.checkInvariants() == nil)
    // Mapped again, the pages are one run of hits over adjacent slots of three regions
    // (no mapping at all): each must still be read at its own slot's address, which is not
    // the first slot's address plus its place in the run.
    let again = try pool.allocateBatch(of: o, pages: 0..<384)
    #expect(pool.mapCalls == 3, "hits only: \(pool.mapCalls) mmap calls")
    for p in 0..<384 {
      #expect(again.address(p) == machine.address(ofSlot: p))
      #expect(again.address(p).load(as: UInt64.self) == tag(o, p), "page \(p)")
    }
    again.free()
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("slot(containing:) finds each slot from any byte of its page, and nothing elsewhere")
  func slotOfAddress() throws {
    let pool = try SFBufPool(nsfbufs: 300)
    let machine = pool.window!.machine
    for s in 0..<300 {
      let a = machine.address(ofSlot: s)
      #expect(pool.slot(containing: a) == s && pool.slot(containing: a + vmPageSize - 1) == s)
    }
    let regionEnd = machine.address(ofSlot: 127) + vmPageSize  // the gap after region 0
    #expect(pool.slot(containing: regionEnd) == nil)
    #expect(pool.slot(containing: machine.base - 1) == nil)
    #expect(pool.slot(containing: machine.address(ofSlot: 299) + vmPageSize) == nil)
    let o = try taggedAnonymous(pages: 1)
    let direct = SFBufPool.directMap()
    let buf = try direct.allocate(o.page(0))
    #expect(direct.slot(containing: buf.address) == nil)
  }

  /// A run over slots that still hold translations maps over them with one `mmap`, which
  /// replaces them, whether or not other slots are in use: no `madvise` first (measured
  /// slower with two threads scanning).
  @Test("a run's map replaces its slots' translations itself, with or without other slots in use")
  func noTeardownBeforeRun() throws {
    let pool = try SFBufPool(nsfbufs: 8, policy: .batched(batch: 8))
    let o = try taggedAnonymous(pages: 16)
    func check(_ batch: borrowing SFBufBatch, _ pages: Range<Int>) {
      for (j, i) in pages.enumerated() {
        #expect(batch.address(j).load(as: UInt64.self) == tag(o, i))
      }
    }
    var a = try pool.allocateBatch(of: o, pages: 0..<4)
    var b = try pool.allocateBatch(of: o, pages: 4..<8)
    check(b, 4..<8)
    b.removeAll()
    // Slots 4..<8 are the only free ones and still map pages 4..<8; a's are in use.
    let before = (pool.unmapCalls, pool.mapCalls)
    var c = try pool.allocateBatch(of: o, pages: 8..<12)
    #expect(pool.unmapCalls == before.0)
    #expect(pool.mapCalls == before.1 + 1)
    check(c, 8..<12)
    a.removeAll()
    c.removeAll()
    // Nothing in use: the run over slots 0..<4 (least recently freed) is one mmap alone.
    let alone = (pool.unmapCalls, pool.mapCalls)
    var d = try pool.allocateBatch(of: o, pages: 12..<16)
    #expect(pool.unmapCalls == alone.0)
    #expect(pool.mapCalls == alone.1 + 1)
    check(d, 12..<16)
    d.removeAll()
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("one release over slots of two regions drops every page-table entry in them")
  func releaseAcrossRegions() throws {
    let machine = try HostMachine(nsfbufs: 256)
    let o = try taggedAnonymous(pages: 16)
    _ = try machine.map(run: o.page(0), count: 8, slot: 120)
    _ = try machine.map(run: o.page(8), count: 8, slot: 128)
    let slots = 120..<136
    for (i, s) in slots.enumerated() {
      #expect(machine.address(ofSlot: s).load(as: UInt64.self) == tag(o, i))
    }
    #expect(try slots.allSatisfy { try isPresent(machine.address(ofSlot: $0)) })
    let calls = machine.unmapCalls
    machine.unmap(slots: slots)
    #expect(machine.unmapCalls == calls + 1)
    #expect(try !slots.contains { try isPresent(machine.address(ofSlot: $0)) })
    // The slots still map their pages: a touch faults each back in.
    for (i, s) in slots.enumerated() {
      #expect(machine.address(ofSlot: s).load(as: UInt64.self) == tag(o, i))
    }
  }
}

/// Whether the page at `address` has a page-table entry now (bit 63 of its
/// `/proc/self/pagemap` entry).
func isPresent(_ address: UnsafeMutableRawPointer) throws -> Bool {
  let fd = open("/proc/self/pagemap", O_RDONLY)
  try #require(fd >= 0, "open /proc/self/pagemap: errno \(errno)")
  defer { close(fd) }
  var entry: UInt64 = 0
  let offset = off_t(UInt(bitPattern: address) / UInt(vmPageSize) * 8)
  try #require(pread(fd, &entry, 8, offset) == 8, "read /proc/self/pagemap: errno \(errno)")
  return entry >> 63 == 1
}
