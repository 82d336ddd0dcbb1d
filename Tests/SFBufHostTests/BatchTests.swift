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
}
