import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// The races the lock-free hit path brings: hits racing remaps of the same slots (a hit
/// finds a slot in the hash that is being recycled, takes a reference on the new page and
/// must give it back), hits racing the last free (1 -> 0 under the lock against 1 -> 2
/// without it), and sleepers woken while hits come and go. Few slots, few pages, many
/// threads; every mapping checked by its tag; the invariants at the end. Both policies.
@Suite("Stress: lock-free hits against remaps")
struct PerfStressTests {
  static let policies: [SFBufReclaimPolicy] = [.faithful, .batched(batch: 2)]

  @Test("hits racing remaps keep tags right and every invariant", arguments: policies)
  func hitsRacingRemaps(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 6, policy: policy)
    let o = try taggedAnonymous(pages: 10)
    // Two pages stay held by a keeper, so most hits on them take no lock; the other pages
    // fight for the remaining four slots, so their slots are recycled all the time.
    let kept = [
      pool.sf_buf_alloc(o.page(0), SFB_DEFAULT)!, pool.sf_buf_alloc(o.page(1), SFB_DEFAULT)!,
    ]
    let wrong = Shared(0)
    let completed = Shared(0)
    let deadline = monotonic() + 4
    var threads: [TestThread] = []
    for t in 0..<6 {
      threads.append(
        TestThread {
          var rng = SplitMix(seed: UInt64(t) &* 104_729 &+ 17)
          var ops = 0
          var held: [sf_buf] = []
          while ops < 60_000 && monotonic() < deadline {
            let r = rng.next() % 16
            let i = r < 8 ? Int(r % 2) : 2 + Int(rng.next() % 8)
            // Only a thread holding nothing may sleep (see StressTests).
            let flags = held.isEmpty && r % 5 == 0 ? SFB_DEFAULT : SFB_NOWAIT
            if let sf = pool.sf_buf_alloc(o.page(i), flags) {
              if sf_buf_kva(sf).load(as: UInt64.self) != tag(o, i) { wrong.with { $0 += 1 } }
              if sf_buf_page(sf) != o.page(i) { wrong.with { $0 += 1 } }
              if r == 3 {
                pool.sf_buf_ref(sf)
                pool.sf_buf_free(sf)
              }
              held.append(sf)
            }
            if held.count > 2 || (!held.isEmpty && rng.next() % 2 == 0) {
              pool.sf_buf_free(held.removeFirst())
            }
            ops += 1
          }
          for sf in held { pool.sf_buf_free(sf) }
          completed.with { $0 += ops }
        })
    }
    TestThread.join(threads, within: 35, "for the 6 threads to end (they stop after 4 s)")
    for sf in kept { pool.sf_buf_free(sf) }
    #expect(wrong.get == 0)
    #expect(completed.get > 1000)
    let s = pool.stats
    #expect(s.nsfbufsused == 0)
    #expect(s.hits > 0 && s.misses > 0)
    #expect(pool.window!.sleepers == 0)
    #expect(pool.window!.checkInvariants() == nil)
    // No page is cached twice, and every free slot is findable by its page.
    var seen = Set<Int>()
    for i in 0..<10 {
      if let slot = pool.window!.cachedSlot(of: o.page(i)) { #expect(seen.insert(slot).inserted) }
    }
  }

  @Test("the last free racing lock-free hits: slots in use are never lost or freed twice")
  func lastFreeRacingHits() throws {
    let pool = try SFBufPool(nsfbufs: 2)
    let o = try taggedAnonymous(pages: 4)
    let done = Shared(false)
    var threads: [TestThread] = []
    for t in 0..<4 {
      threads.append(
        TestThread {
          var n = 0
          while n < 200_000 && !done.get {
            // Every thread maps page t % 2: references go 0 -> 1 -> 2 -> 1 -> 0 all the time.
            let b = try! pool.allocate(o.page(t % 2))
            precondition(b.address.load(as: UInt64.self) == tag(o, t % 2))
            b.free()
            n += 1
          }
        })
    }
    usleep(1_500_000)
    done.with { $0 = true }
    TestThread.join(threads, within: 60, "for the 4 threads to end once told to")
    let s = pool.stats
    #expect(s.nsfbufsused == 0 && s.misses == 2 && s.remaps == 2)
    #expect(pool.window!.freeList().sorted() == [0, 1])
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("hits without the lock are counted exactly")
  func lockFreeHitsCounted() throws {
    let pool = try SFBufPool(nsfbufs: 4)
    let o = try taggedAnonymous(pages: 4)
    let keeper = try pool.allocate(o.page(2))
    for _ in 0..<10 { try pool.allocate(o.page(2)).free() }
    #expect(pool.stats.hits == 10)
    #expect(pool.window!.references(ofSlot: keeper.slot!) == 1)
    keeper.free()
    #expect(pool.stats.hits == 10 && pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("runs held by batches racing hits, refs and frees of their pages, page by page")
  func runsRacingHits() throws {
    let pool = try SFBufPool(nsfbufs: 16, policy: .batched(batch: 4))
    let o = try taggedAnonymous(pages: 24)
    let wrong = Shared(0)
    let pages = Shared(0)
    let deadline = monotonic() + 3
    var threads: [TestThread] = []
    for t in 0..<4 {
      threads.append(
        TestThread {
          var rng = SplitMix(seed: UInt64(t) &* 7919 &+ 5)
          var got = 0
          var n = 0
          while n < 40_000 && monotonic() < deadline {
            let first = Int(rng.next() % 20)
            if t < 2 {
              // Runs of 2 to 4 pages into a batch (locked-only slots), freed in one step.
              var batch = SFBufBatch(pool: pool, capacity: 4)
              let m = (try? batch.map(o, pages: first..<(first + 2 + n % 3), flags: .noWait)) ?? 0
              for j in 0..<m where batch.address(j).load(as: UInt64.self) != tag(o, first + j) {
                wrong.with { $0 += 1 }
              }
              got += m
              batch.removeAll()
            } else if let sf = pool.sf_buf_alloc(o.page(first), SFB_NOWAIT) {
              // Page by page, on the same pages: hits on the batches' slots take the lock.
              if sf_buf_kva(sf).load(as: UInt64.self) != tag(o, first) { wrong.with { $0 += 1 } }
              if n % 3 == 0 {
                pool.sf_buf_ref(sf)
                pool.sf_buf_free(sf)
              }
              pool.sf_buf_free(sf)
              got += 1
            }
            n += 1
          }
          pages.with { $0 += got }
        })
    }
    TestThread.join(threads, within: 35, "for the 4 threads to end (they stop after 3 s)")
    #expect(wrong.get == 0)
    let s = pool.stats
    #expect(pages.get > 1000)
    #expect(s.hits + s.misses == pages.get, "every page mapped is one hit or one miss")
    #expect(s.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("a pool stays alive while a slot is in use, and goes when the last one is freed")
  func poolLifetime() throws {
    let o = try taggedAnonymous(pages: 2)
    weak var weakPool: SFBufPool?
    var buf: SFBuf? = nil
    do {
      let pool = try SFBufPool(nsfbufs: 2)
      weakPool = pool
      buf = try pool.allocate(o.page(1))
      let second = try pool.allocate(o.page(1))  // a hit on a slot in use: no retain
      second.free()
    }
    #expect(weakPool != nil)
    #expect(readTag(buf!) == tag(o, 1))
    buf = nil
    #expect(weakPool == nil)
  }
}
