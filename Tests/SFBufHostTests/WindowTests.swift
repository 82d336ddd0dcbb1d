import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import SystemPackage
import Testing

@testable import SFBufHost

/// The managed window's behaviour, step by step, with its counters (README, "How the window behaves").
@Suite("Window: cache, reuse order, counters")
struct WindowTests {
  @Test("hits do not remap; freed mappings are found again", arguments: policies)
  func hitsDoNotRemap(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 4, policy: policy)
    let o = try taggedAnonymous(pages: 8)
    let first = try pool.allocate(o.page(3))
    let slot = first.slot
    first.free()
    #expect(pool.stats.remaps == 1)
    for _ in 0..<10 {
      let again = try pool.allocate(o.page(3))
      #expect(again.slot == slot)
      #expect(readTag(again) == tag(o, 3))
    }
    let s = pool.stats
    #expect(s.remaps == 1 && s.hits == 10 && s.misses == 1)
    #expect(pool.mapCalls == 1)
  }

  @Test(
    "reuse order is least recently freed, and the window starts in address order",
    arguments: policies)
  func leastRecentlyFreed(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 4, policy: policy)
    let w = try #require(pool.window)
    #expect(w.freeList() == [0, 1, 2, 3])
    let o = try taggedAnonymous(pages: 16)
    var bufs: [sf_buf] = []
    for i in 0..<4 { bufs.append(try #require(pool.sf_buf_alloc(o.page(i), SFB_DEFAULT))) }
    #expect(bufs.map(\.slot) == [0, 1, 2, 3])
    // Free in the order 2, 0, 3, 1: that is the order of reuse.
    for i in [2, 0, 3, 1] { pool.sf_buf_free(bufs[i]) }
    #expect(w.freeList() == [2, 0, 3, 1])
    var reused: [Int] = []
    for i in 4..<8 { reused.append(try pool.allocate(o.page(i)).slot!) }
    // Each new page takes the head; freeing it puts it at the tail again.
    #expect(reused == [2, 0, 3, 1])
    // The old pages' mappings are gone from the hash; the new ones are cached.
    #expect(w.cachedSlot(of: o.page(0)) == nil)
    #expect(w.cachedSlot(of: o.page(4)) == 2)
  }

  @Test("the netstat -m counters after a scripted sequence", arguments: policies)
  func scriptedCounters(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 3, policy: policy)
    let o = try taggedAnonymous(pages: 8)
    let a = try pool.allocate(o.page(0))  // miss
    let a2 = try pool.allocate(o.page(0))  // hit on a used slot: still one slot used
    #expect(pool.stats.nsfbufsused == 1)
    let b = try pool.allocate(o.page(1))  // miss
    let c = try pool.allocate(o.page(2))  // miss: window full
    #expect(throws: SFBufError.wouldBlock) { _ = try pool.allocate(o.page(3), flags: .noWait) }
    b.free()  // slot 1 free, still caching page 1
    let b2 = try pool.allocate(o.page(1), flags: .noWait)  // hit, reactivated
    b2.free()
    c.free()
    a.free()
    #expect(pool.stats.nsfbufsused == 1)  // a2 still holds slot 0
    a2.free()
    let d = try pool.allocate(o.page(4))  // miss: recycles slot 1 (least recently freed)
    #expect(d.slot == 1)
    d.free()
    let s = pool.stats
    #expect(s.nsfbufs == 3)
    #expect(s.nsfbufsused == 0)
    #expect(s.nsfbufspeak == 3)
    #expect(s.sf_allocfail == 1)
    #expect(s.sf_allocwait == 0)
    #expect(s.hits == 2 && s.misses == 4 && s.remaps == 4)
    #expect(
      s.netstatLines == [
        "0/3/3 sfbufs in use (current/peak/max)",
        "1 requests for sfbufs denied",
        "0 requests for sfbufs delayed",
      ])
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test(
    "SFB_NOWAIT on a full window: misses fail, hits succeed, failures count", arguments: policies)
  func noWaitFullWindow(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 2, policy: policy)
    let o = try taggedAnonymous(pages: 4)
    let a = try pool.allocate(o.page(0))
    let b = try pool.allocate(o.page(1))
    for i in 2..<4 {
      #expect(throws: SFBufError.wouldBlock) { _ = try pool.allocate(o.page(i), flags: .noWait) }
    }
    #expect(pool.sf_buf_alloc(o.page(2), SFB_NOWAIT) == nil)
    let hit = try pool.allocate(o.page(1), flags: .noWait)
    #expect(hit.slot == b.slot && readTag(hit) == tag(o, 1))
    let s = pool.stats
    #expect(s.sf_allocfail == 3 && s.nsfbufsused == 2 && s.hits == 1)
    _ = consume a
  }

  @Test(
    "a refused mapping (write-only file) leaves the slot in the pool, counters true",
    arguments: policies)
  func refusedWriteOnly(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 2, policy: policy)
    let readable = try taggedAnonymous(pages: 2)
    let cached = try pool.allocate(readable.page(0))
    let head = pool.window!.freeList().first!
    cached.free()
    let wo = try taggedFile(pages: 2, access: .writeOnly)
    try wo.wire(pages: 0..<2)
    #expect(throws: SFBufError.mappingRefused(errno: EACCES)) { _ = try pool.allocate(wo.page(0)) }
    #expect(pool.sf_buf_alloc(wo.page(1), SFB_DEFAULT) == nil)
    let s = pool.stats
    #expect(s.nsfbufsused == 0 && s.sf_allocfail == 2 && s.remaps == 1)
    // The refused slot maps nothing now and is reused first; every slot is free.
    #expect(pool.window!.freeList().count == 2)
    #expect(pool.window!.freeList().first == head)
    #expect(pool.window!.checkInvariants() == nil)
    // The pool still works: both slots can be had.
    let x = try pool.allocate(readable.page(0))
    let y = try pool.allocate(readable.page(1))
    #expect(readTag(x) == tag(readable, 0) && readTag(y) == tag(readable, 1))
  }

  @Test(
    "a refused mapping (closed object) loses nothing; cached mappings still hit",
    arguments: policies)
  func refusedClosedObject(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 2, policy: policy)
    let o = try taggedAnonymous(pages: 3)
    let cached = try pool.allocate(o.page(0))
    cached.free()
    o.close()
    #expect(throws: SFBufError.mappingRefused(errno: EBADF)) { _ = try pool.allocate(o.page(1)) }
    let hit = try pool.allocate(o.page(0))  // the cached mapping outlives the descriptor
    #expect(readTag(hit) == tag(o, 0))
    #expect(pool.stats.nsfbufsused == 1 && pool.stats.sf_allocfail == 1)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("sf_buf_ref: a mapping split between owners stays until the last free", arguments: policies)
  func references(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 1, policy: policy)
    let o = try taggedAnonymous(pages: 2)
    let sf = try #require(pool.sf_buf_alloc(o.page(0), SFB_DEFAULT))
    pool.sf_buf_ref(sf)
    pool.sf_buf_free(sf)
    #expect(pool.stats.nsfbufsused == 1)
    #expect(pool.sf_buf_alloc(o.page(1), SFB_NOWAIT) == nil)
    pool.sf_buf_free(sf)
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.sf_buf_alloc(o.page(1), SFB_NOWAIT) != nil)
  }

  @Test("a window is inaccessible where nothing is mapped", arguments: policies)
  func inaccessibleWhereUnmapped(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 4, policy: policy)
    let base = try #require(pool.window?.machine.base)
    // While no slot maps a page, every byte of the window lies in PROT_NONE mappings (the
    // kernel may merge the reservation with a neighbouring PROT_NONE region, so look for
    // the regions that cover the window, not for one that starts at its base).
    let start = UInt(bitPattern: base)
    let end = start + UInt(4 * vmPageSize)
    var covered = start
    for line in try readProcMaps() {
      let fields = line.split(separator: " ")
      let range = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
      guard range.count == 2, range[1] > start, range[0] < end else { continue }
      #expect(fields[1].hasPrefix("---p"), "\(line)")
      if range[0] <= covered { covered = max(covered, range[1]) }
    }
    #expect(covered >= end)
  }
}

func readProcMaps() throws -> [String] {
  let fd = open("/proc/self/maps", O_RDONLY)
  defer { close(fd) }
  var data: [UInt8] = []
  var buf = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = read(fd, &buf, buf.count)
    if n <= 0 { break }
    data += buf[0..<n]
  }
  return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
}

@Suite("Free slot count")
struct FreeSlotTests {
  @Test("freeSlots follows allocations and frees; a direct map has none")
  func freeSlots() throws {
    let pool = try SFBufPool(nsfbufs: 3)
    let o = try taggedAnonymous(pages: 4)
    #expect(pool.freeSlots == 3 && pool.nsfbufs == 3)
    let a = try pool.allocate(o.page(0))
    let b = try pool.allocate(o.page(1))
    #expect(pool.freeSlots == 1)
    let again = try pool.allocate(o.page(0))  // a hit on a slot in use takes no free slot
    #expect(pool.freeSlots == 1)
    _ = consume again
    _ = consume a
    #expect(pool.freeSlots == 2)
    _ = consume b
    #expect(pool.freeSlots == 3)
    #expect(SFBufPool.directMap().freeSlots == 0)
  }
}
