import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// Many threads on a small window: everything they see must be right, and the allocator's
/// invariants must hold at the end. Bounded in operations and time.
@Suite("Stress")
struct StressTests {
  @Test(
    "random allocations from 6 threads keep every invariant", arguments: [4, 17], policies)
  func randomized(nsfbufs: Int, policy: SFBufReclaimPolicy) throws {
    installInterruptingHandler(SIGUSR1)
    let pool = try SFBufPool(nsfbufs: nsfbufs, policy: policy)
    let objects = try [taggedAnonymous(pages: 64), taggedFile(pages: 64)]
    let wrong = Shared(0)
    let completed = Shared(0)
    let deadline = monotonic() + 10
    var threads: [TestThread] = []
    for t in 0..<6 {
      threads.append(
        TestThread {
          var rng = SplitMix(seed: UInt64(t) * 7919 + UInt64(nsfbufs))
          var held: [sf_buf] = []
          var ops = 0
          while ops < 20_000 && monotonic() < deadline {
            let o = objects[Int(rng.next() % 2)]
            let i = Int(rng.next() % 64)
            let r = rng.next() % 10
            // Hold up to 4 (more than fit for all threads): sleeps, NOWAIT failures, hits.
            // Only a thread holding nothing may sleep, or all could hold and wait forever
            // (sendfile follows the same rule: only its first allocation sleeps).
            let flags: Int32 =
              !held.isEmpty || r < 3 ? SFB_NOWAIT : (r < 5 ? SFB_CATCH : SFB_DEFAULT)
            if held.count < 4, let sf = pool.sf_buf_alloc(o.page(i), flags) {
              if sf_buf_kva(sf).load(as: UInt64.self) != tag(o, i) { wrong.with { $0 += 1 } }
              if r == 9 {
                pool.sf_buf_ref(sf)
                pool.sf_buf_free(sf)
              }
              held.append(sf)
            }
            if !held.isEmpty && (held.count == 4 || rng.next() % 2 == 0) {
              pool.sf_buf_free(held.remove(at: Int(rng.next() % UInt64(held.count))))
            }
            ops += 1
          }
          for sf in held { pool.sf_buf_free(sf) }
          completed.with { $0 += ops }
        })
    }
    TestThread.join(threads, within: 40, "for the 6 threads to end (they stop after 10 s)")
    #expect(wrong.get == 0)
    #expect(completed.get > 1000)
    let s = pool.stats
    #expect(s.nsfbufsused == 0)
    #expect(s.nsfbufspeak == nsfbufs)
    #expect(pool.window!.sleepers == 0)
    #expect(pool.window!.checkInvariants() == nil)
    #expect(s.hits > 0 && s.sf_allocwait > 0)
  }

  @Test(
    "closing an object while threads map its pages: every mapping shows that object's page",
    arguments: policies)
  func closeWhileMapping(policy: SFBufReclaimPolicy) throws {
    // Misses map without the pool lock and without the object's lock; `close` waits for
    // the `mmap` calls using the descriptor. Right after the close, other objects take the
    // freed descriptor numbers: a mapping that used a stale number would show their tags.
    let pool = try SFBufPool(nsfbufs: 8, policy: policy)
    let o = try taggedAnonymous(pages: 256)
    let mapped = Shared(0)
    let refused = Shared(0)
    let wrong = Shared(0)
    let deadline = monotonic() + 10
    var threads: [TestThread] = []
    for t in 0..<2 {
      threads.append(
        TestThread {
          var rng = SplitMix(seed: UInt64(t) + 99)
          var ops = 0
          while ops < 100_000 && refused.get < 200 && monotonic() < deadline {
            let i = Int(rng.next() % 256)
            do {
              let buf = try pool.allocate(o.page(i), flags: .noWait)
              if readTag(buf) != tag(o, i) { wrong.with { $0 += 1 } }
              mapped.with { $0 += 1 }
            } catch SFBufError.mappingRefused(let e) where e == EBADF {
              refused.with { $0 += 1 }
            } catch {
              // A full window (NOWAIT): both threads hold at most one slot, so never.
              wrong.with { $0 += 1 }
            }
            ops += 1
          }
        })
    }
    waitUntil("500 mappings before the close", seconds: 30) { mapped.get >= 500 }
    o.close()
    let intruders = try (0..<4).map { _ in try taggedAnonymous(pages: 256) }
    TestThread.join(
      threads, within: 40, "for the mapping threads to end (they stop after 10 s)")
    #expect(wrong.get == 0)
    #expect(refused.get > 0, "misses after the close are refused with EBADF")
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
    withExtendedLifetime(intruders) {}
  }
}
