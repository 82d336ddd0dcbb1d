import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// SFBufBatch: many mappings held by one non-copyable owner, freed together.
@Suite("Batches of mappings")
struct BatchTests {
  @Test("a batch maps a range, reads each page, and frees them all", arguments: policies)
  func mapsAndFrees(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 8, policy: policy)
    let o = try taggedAnonymous(pages: 8)
    let batch = try pool.allocateBatch(of: o, pages: 0..<8)
    #expect(batch.count == 8)
    for i in 0..<8 {
      #expect(batch.page(i) == o.page(i))
      #expect(batch.address(i).load(as: UInt64.self) == tag(o, i))
    }
    #expect(pool.stats.nsfbufsused == 8)
    batch.free()
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("with .noWait a batch stops at a full window and keeps what it got")
  func noWaitPartial() throws {
    let pool = try SFBufPool(nsfbufs: 4)
    let o = try taggedAnonymous(pages: 8)
    var batch = try pool.allocateBatch(of: o, pages: 0..<8, flags: .noWait)
    #expect(batch.count == 4)
    #expect(throws: SFBufError.wouldBlock) { try pool.allocate(o.page(5), flags: .noWait) }
    #expect(try pool.allocateBatch(of: o, pages: 4..<8, flags: .noWait).isEmpty)
    batch.append(try pool.allocate(o.page(0)))  // a hit: the same slot twice
    #expect(batch.count == 5)
    batch = SFBufBatch(pool: pool)
    #expect(pool.stats.nsfbufsused == 0)
  }

  @Test(
    "map appends runs to a batch, removeAll keeps its storage, a failure frees only the call's pages",
    arguments: [false, true])
  func mapInto(direct: Bool) throws {
    let pool = direct ? SFBufPool.directMap() : try SFBufPool(nsfbufs: 16)
    let o = try taggedFile(pages: 8, access: .readWrite)
    var batch = SFBufBatch(pool: pool, capacity: 4)
    #expect(try batch.map(o, pages: 0..<4) == 4)
    if !direct { #expect(pool.mapCalls == 1, "one run, one mmap") }
    #expect(try batch.map(o, pages: 4..<6) == 2)
    #expect(batch.count == 6 && batch.capacity == 8)
    for i in 0..<6 {
      #expect(batch.page(i) == o.page(i))
      #expect(batch.address(i).load(as: UInt64.self) == tag(o, i))
    }
    batch.removeAll()
    #expect(pool.stats.nsfbufsused == 0)
    #expect(try batch.map(o, pages: 0..<2) == 2)
    #expect(batch.capacity == 8, "the storage is kept")
    // Pages 2... now lie past the end of the file. Pages 6 and 7 were never mapped (a miss
    // is refused); the window still caches pages 2 to 5 (hits, as the truncation tests
    // say), so that a map of pages 4 to 7 maps two pages there before it fails.
    #expect(ftruncate(o.fileDescriptor!.rawValue, off_t(2 * vmPageSize)) == 0)
    #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) { try batch.map(o, pages: 6..<8) }
    #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) {
      try batch.map(o, pages: 6..<8, flags: .noWait)
    }
    #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) { try batch.map(o, pages: 4..<8) }
    #expect(batch.count == 2 && batch.address(1).load(as: UInt64.self) == tag(o, 1))
    if direct {
      #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) {
        try batch.map(o, pages: 4..<8, flags: .noWait)
      }
    } else {
      #expect(pool.stats.nsfbufsused == 2, "the failed call freed the two pages it had mapped")
      #expect(try batch.map(o, pages: 4..<8, flags: .noWait) == 2)
      #expect(batch.count == 4 && batch.page(3) == o.page(5))
      #expect(pool.stats.nsfbufsused == 4)
      #expect(pool.window!.checkInvariants() == nil)
    }
    batch.free()
    if !direct { #expect(pool.stats.nsfbufsused == 0) }
  }

  @Test("map with .noWait stops at a full window and keeps what it got")
  func mapNoWait() throws {
    let pool = try SFBufPool(nsfbufs: 4)
    let o = try taggedAnonymous(pages: 8)
    var batch = SFBufBatch(pool: pool)
    #expect(try batch.map(o, pages: 0..<8, flags: .noWait) == 4)
    #expect(try batch.map(o, pages: 4..<8, flags: .noWait) == 0)
    #expect(batch.count == 4 && batch.address(3).load(as: UInt64.self) == tag(o, 3))
    batch.removeAll()
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("a batch keeps its pool alive, on a window and on a direct map", arguments: [true, false])
  func keepsPool(direct: Bool) throws {
    let o = try taggedAnonymous(pages: 4)
    weak var weakPool: SFBufPool?
    var batch: SFBufBatch? = nil
    do {
      let pool = direct ? SFBufPool.directMap() : try SFBufPool(nsfbufs: 4)
      weakPool = pool
      batch = try pool.allocateBatch(of: o, pages: 0..<4)
    }
    #expect(weakPool != nil)
    #expect(batch!.address(3).load(as: UInt64.self) == tag(o, 3))
    batch = nil
    #expect(weakPool == nil)
  }

  @Test("appending a mapping of another pool stops the process")
  func foreign() async {
    await #expect(processExitsWith: .failure) {
      let a = try! SFBufPool(nsfbufs: 2)
      let b = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      var batch = SFBufBatch(pool: a)
      batch.append(try! b.allocate(o.page(0)))
    }
  }

  @Test("a batch asked to hold more pages than the window has slots, waiting, stops the process")
  func largerThanWindow() async throws {
    // With .noWait it keeps what fits; the pages of a direct map are not counted.
    let pool = try SFBufPool(nsfbufs: 1)
    let o = try taggedAnonymous(pages: 2)
    #expect(try pool.allocateBatch(of: o, pages: 0..<2, flags: .noWait).count == 1)
    #expect(try SFBufPool.directMap().allocateBatch(of: o, pages: 0..<2).count == 2)
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let pool = try! SFBufPool(nsfbufs: 1)
      let o = try! taggedAnonymous(pages: 2)
      _ = try? pool.allocateBatch(of: o, pages: 0..<2)
    }
    let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(message.contains("2 pages cannot be held at once in a window of 1 slot;"))
  }

}
