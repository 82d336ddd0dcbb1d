import Glibc
import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// A slot in use keeps its pool alive, whichever mix of handles, C-style references and
/// scoped mappings shares it: the pool goes away exactly when the last of them does.
@Suite("Pool lifetime with shared slots")
struct LifetimeTests {
  @Test("a scoped mapping that hits a handle's slot, then the handle goes last")
  func scopedHitsHandle() throws {
    let o = try taggedAnonymous(pages: 1)
    weak var weakPool: SFBufPool?
    var sf: sf_buf?
    do {
      let pool = try SFBufPool(nsfbufs: 2)
      weakPool = pool
      sf = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)  // activates the slot
      let t = try pool.withMapping(of: o.page(0)) { $0.load(as: UInt64.self) }  // a hit
      #expect(t == tag(o, 0))
    }
    #expect(weakPool != nil)  // the handle's slot holds it
    weakPool?.sf_buf_free(sf!)
    #expect(weakPool != nil)  // the C-style handle still holds its pool...
    sf = nil
    #expect(weakPool == nil)  // ...and nothing else does
  }

  /// The pool is held once while any slot is in use (not once per slot): a batch freed
  /// while a handle of another page lives leaves it alive, and two threads that free their
  /// last mappings at once after the pool's owner let go release it exactly once.
  @Test("several slots in use hold the pool until the last goes, across threads")
  func manySlotsOneHold() throws {
    let o = try taggedAnonymous(pages: 8)
    weak var weakPool: SFBufPool?
    var sf: sf_buf?
    do {
      let pool = try SFBufPool(nsfbufs: 8, policy: .batched(batch: 4))
      weakPool = pool
      var batch = try pool.allocateBatch(of: o, pages: 0..<4)
      sf = pool.sf_buf_alloc(o.page(6), SFB_DEFAULT)
      #expect(pool.stats.nsfbufsused == 5)
      batch.removeAll()
    }
    #expect(weakPool != nil)  // the handle's slot still holds it
    weakPool?.sf_buf_free(sf!)
    sf = nil
    #expect(weakPool == nil)

    for round in 0..<50 {
      let a: Holder
      let b: Holder
      do {
        let pool = try SFBufPool(nsfbufs: 4)
        weakPool = pool
        a = Holder(try pool.allocate(o.page(round % 4)))
        b = Holder(try pool.allocate(o.page(4 + round % 4)))
      }
      let other = TestThread { b.buf = nil }
      a.buf = nil
      other.join()
      #expect(weakPool == nil, "round \(round): the pool outlived its last mapping")
      if weakPool != nil { break }
    }
  }

  @Test("a handle taken inside a scoped mapping outlives it, then goes last")
  func handleOutlivesScoped() throws {
    let o = try taggedAnonymous(pages: 1)
    weak var weakPool: SFBufPool?
    var sf: sf_buf?
    do {
      let pool = try SFBufPool(nsfbufs: 2)
      weakPool = pool
      try pool.withMapping(of: o.page(0)) { _ in  // activates the slot
        sf = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)  // a hit
      }
      #expect(pool.stats.nsfbufsused == 1)
    }
    #expect(weakPool != nil)
    #expect(sf_buf_kva(sf!).load(as: UInt64.self) == tag(o, 0))
    weakPool?.sf_buf_free(sf!)
    #expect(weakPool != nil)  // the C-style handle still holds its pool...
    sf = nil
    #expect(weakPool == nil)  // ...and nothing else does
  }
}

/// One mapping, to be let go on another thread.
private final class Holder: @unchecked Sendable {
  var buf: SFBuf?
  init(_ buf: consuming SFBuf) { self.buf = consume buf }
}

/// A refused mapping gives its slot back: no retain of the pool is left behind.
@Suite("Pool lifetime after refused mappings")
struct RefusedLifetimeTests {
  @Test("a refused mapping keeps nothing alive", arguments: policies)
  func refusedKeepsNothing(policy: SFBufReclaimPolicy) throws {
    let o = try taggedAnonymous(pages: 2)
    weak var weakPool: SFBufPool?
    do {
      let pool = try SFBufPool(nsfbufs: 2, policy: policy)
      weakPool = pool
      o.close()  // every new mapping of its pages is refused (EBADF)
      #expect(throws: SFBufError.mappingRefused(errno: EBADF)) { try pool.allocate(o.page(1)) }
      #expect(pool.stats.nsfbufsused == 0)
    }
    #expect(weakPool == nil, "a refused mapping left the pool retained")
  }
}
