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

  /// Free a mapping, let its slot be recycled for another page, then free (or reference)
  /// the old handle: without a check it would drop (or add) a reference of the new holder's
  /// slot, and a `SFB_NOWAIT` allocation would then take that slot from under the new
  /// holder, who would read another page's data (``staleHandleScenario(_:ref:)``).
  @Test("freeing a stale handle whose slot now maps another page (faithful)")
  func staleFreeFaithful() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) { staleHandleScenario(.faithful, ref: false) }
    let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(message.contains("sf_buf_free: stale sf_buf"), "the trap names the misuse")
  }

  @Test("freeing a stale handle whose slot now maps another page (batched)")
  func staleFreeBatched() async {
    await #expect(processExitsWith: .failure) {
      staleHandleScenario(.batched(batch: 2), ref: false)
    }
  }

  @Test("referencing a stale handle whose slot now maps another page")
  func staleRef() async {
    await #expect(processExitsWith: .failure) { staleHandleScenario(.faithful, ref: true) }
  }

  @Test("freeing a stale handle whose page was mapped again by someone else")
  func staleFreeSamePage() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 1)
      let o = try! taggedAnonymous(pages: 1)
      let old = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)!
      pool.sf_buf_free(old)
      let other = pool.sf_buf_alloc(o.page(0), SFB_NOWAIT)!  // a hit on the free slot
      pool.sf_buf_free(old)  // the misuse: the other holder's reference
      _ = other
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

  @Test("an anonymous object asked for write-only access")
  func writeOnlyAnonymous() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      _ = try? VMObject.anonymous(size: 4096, access: .writeOnly)
    }
    let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(message.contains("access .writeOnly"), "the trap names the misuse")
  }

  @Test("allocating a page that is not wired (window)")
  func unwiredWindow() async {
    await #expect(processExitsWith: .failure) {
      let pool = try! SFBufPool(nsfbufs: 2)
      let o = try! VMObject.anonymous(size: 4096)
      _ = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)
    }
  }

  /// A page run checks its pages before it maps them: here page 3 of 0..<8 stops it.
  @Test("a page run over a page that is not wired")
  func unwiredInRun() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let pool = try! SFBufPool(nsfbufs: 8, policy: .batched(batch: 8))
      let o = try! VMObject.anonymous(size: 8 * vmPageSize)
      for i in 0..<8 where i != 3 { try! o.page(i).wire() }
      _ = try? pool.allocateBatch(of: o, pages: 0..<8)
    }
    let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(message.contains("sf_buf_alloc: the page is not wired"), "the trap names the misuse")
  }

  /// A run taken as hits from free slots that still cache its pages: a page unwired since
  /// it was freed is caught, though nothing is mapped.
  @Test("a page run taken as hits over a cached page that is no longer wired")
  func unwiredRunHit() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let pool = try! SFBufPool(nsfbufs: 4, policy: .batched(batch: 4))
      let o = try! VMObject.anonymous(size: 4 * vmPageSize)
      for i in 0..<4 { try! o.page(i).wire() }
      var batch = try! pool.allocateBatch(of: o, pages: 0..<4)
      batch.removeAll()
      o.page(2).unwire()
      _ = try? pool.allocateBatch(of: o, pages: 0..<4)
    }
    let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(message.contains("sf_buf_alloc: the page is not wired"), "the trap names the misuse")
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
  @Test("a handle freed once while its slot is reused by others", arguments: policies)
  func freshHandlesAfterReuse(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 1, policy: policy)
    let o = try taggedAnonymous(pages: 2)
    let first = try #require(pool.sf_buf_alloc(o.page(0), SFB_DEFAULT))
    pool.sf_buf_ref(first)
    pool.sf_buf_free(first)
    pool.sf_buf_free(first)
    let second = try #require(pool.sf_buf_alloc(o.page(1), SFB_NOWAIT))
    #expect(sf_buf_kva(second).load(as: UInt64.self) == tag(o, 1))
    #expect(pool.sf_buf_alloc(o.page(0), SFB_NOWAIT) == nil)
    pool.sf_buf_free(second)
    let third = try #require(pool.sf_buf_alloc(o.page(1), SFB_NOWAIT))
    pool.sf_buf_free(third)
    #expect(pool.stats.nsfbufsused == 0)
  }

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

/// The stale-handle misuse: `old` is freed, its slot recycled for page 1 (`new`), then `old`
/// is freed (or referenced) again, which must stop the process. Unchecked, the rest of the
/// scenario runs to a normal exit (so the exit test fails): the stale free lets a
/// `SFB_NOWAIT` allocation of page 0 take the slot under `new`'s holder, who then reads page
/// 0's data.
func staleHandleScenario(_ policy: SFBufReclaimPolicy, ref: Bool) {
  let pool = try! SFBufPool(nsfbufs: 1, policy: policy)
  let o = try! taggedAnonymous(pages: 2)
  let old = pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)!
  pool.sf_buf_free(old)
  let new = pool.sf_buf_alloc(o.page(1), SFB_NOWAIT)!  // recycles the one slot
  if ref {
    pool.sf_buf_ref(old)  // the misuse: must stop here
    pool.sf_buf_free(old)
    pool.sf_buf_free(new)
    return
  }
  pool.sf_buf_free(old)  // the misuse: must stop here
  if let thief = pool.sf_buf_alloc(o.page(0), SFB_NOWAIT) {
    let read = sf_buf_kva(new).load(as: UInt64.self)
    print("the holder of page 1 reads", read == tag(o, 0) ? "page 0" : "its page")
    pool.sf_buf_free(thief)
  }
}
