import CSFBufLinux
import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// Misuse stops the process with a message naming the mistake. Each runs in a child
/// process (exit tests).
@Suite("Misuse traps")
struct MisuseTests {
  @Test("double free")
  func doubleFree() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      let sf = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)!
      pool.sf_buf_free(sf)
      pool.sf_buf_free(sf)
    }
  }

  @Test("freeing a handle of another pool")
  func foreignHandle() async {
    await #expect(processExitsWith: .failure) {
      let a = try! SFBufPool(nsfbufs: 2)
      let b = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      let sf = a.sf_buf_alloc(o.page(0), SFB_DEFAULT)!
      b.sf_buf_free(sf)
    }
  }

  @Test("allocating a page that is not wired (window)")
  func unwiredWindow() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! VMObject.anonymous(size: 4096)
      _ = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)
    }
  }

  @Test("allocating a page that is not wired (direct map)")
  func unwiredDirect() async {
    await #expect(processExitsWith: .failure) {
      let o = try! VMObject.anonymous(size: 4096)
      _ = SFBufPool.directMap().sf_buf_alloc(o.page(0), SFB_DEFAULT)
    }
  }

  @Test("sf_buf_ref on a free mapping")
  func refOnFree() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      let sf = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)!
      pool.sf_buf_free(sf)
      pool.sf_buf_ref(sf)
    }
  }

  @Test("SFB_CPUPRIVATE from a thread that is not pinned")
  func cpuPrivateUnpinned() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      _ = pool.sf_buf_alloc(o.page(0), SFB_CPUPRIVATE)
    }
  }

  @Test("unbalanced sched_unpin")
  func unbalancedUnpin() async {
    await #expect(processExitsWith: .failure) {
      sched_pin()
      sched_unpin()
      sched_unpin()
    }
  }

  @Test("unwiring a page that is not wired")
  func unwireUnwired() async {
    await #expect(processExitsWith: .failure) {
      let o = try! VMObject.anonymous(size: 4096)
      o.page(0).unwire()
    }
  }

  @Test("unknown flag bits")
  func unknownFlags() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! taggedAnonymous(pages: 1)
      _ = pool.sf_buf_alloc(o.page(0), 8)
    }
  }
}

/// The legitimate uses next to each trap, so that each trap test could fail for a reason
/// other than the trap.
@Suite("Correct use next to each trap")
struct CorrectUseTests {
  @Test("pinned SFB_CPUPRIVATE works, and pins nest and restore the affinity")
  func pinnedPrivate() throws {
    let pool = try SFBufPool(nsfbufs: 2)
    let o = try taggedAnonymous(pages: 1)
    #expect(sched_pinned == 0)
    let before = sfb_affinity_single_cpu()
    sched_pin()
    // Pinned: the thread may run on exactly one CPU, the one it is on.
    let pinnedTo = sfb_affinity_single_cpu()
    #expect(pinnedTo >= 0 && pinnedTo == sfb_pinned_cpu())
    #expect(sfb_current_cpu() == pinnedTo)
    sched_pin()
    #expect(sched_pinned == 2)
    #expect(sfb_affinity_single_cpu() == pinnedTo)
    let sf = try #require(pool.sf_buf_alloc(o.page(0), SFB_CPUPRIVATE))
    #expect(sf_buf_kva(sf).load(as: UInt64.self) == tag(o, 0))
    pool.sf_buf_free(sf)
    sched_unpin()
    #expect(sfb_affinity_single_cpu() == pinnedTo)  // still pinned: the pins nest
    sched_unpin()
    #expect(sched_pinned == 0)
    #expect(sfb_affinity_single_cpu() == before)  // the previous affinity is back
  }
}
