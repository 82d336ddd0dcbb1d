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
