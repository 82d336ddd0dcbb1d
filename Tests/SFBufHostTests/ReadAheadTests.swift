import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Synchronization
import Testing

@testable import SFBufHost

/// Map-ahead: a helper thread maps the reader's next run while it reads this one.
@Suite("Map-ahead for sequential readers", .serialized)
struct ReadAheadTests {
  /// Reads every page through `ahead`, expecting exactly `want` in order with the right
  /// bytes; records the first page out of place (not a whole-array diff, which takes
  /// Swift Testing minutes on arrays this long).
  func readAll(_ ahead: SFBufReadAhead, _ o: VMObject, expecting want: Range<Int>) throws {
    var next = want.lowerBound
    var runs: [Int] = []
    while let run = try ahead.next() {
      runs.append(run.count)
      for i in 0..<run.count {
        let page = run.page(i)
        if page.index != next {
          Issue.record("page \(page.index) where \(next) was due; runs so far: \(runs)")
          return
        }
        #expect(run.address(i).load(as: UInt64.self) == tag(o, page.index))
        next += 1
      }
    }
    #expect(next == want.upperBound, "ended at \(next), not \(want.upperBound); runs: \(runs)")
  }

  @Test(
    "every page once, in order, right bytes; the window given back",
    arguments: [(512, SFBufReclaimPolicy.faithful), (512, .batched(batch: 8)), (8, .faithful)])
  func inOrder(nsfbufs: Int, policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: nsfbufs, policy: policy)
    let o = try taggedAnonymous(pages: 2000)
    let ahead = try SFBufReadAhead(pool: pool, object: o, pages: 3..<1999, runLength: 64)
    try readAll(ahead, o, expecting: 3..<1999)
    let counts = ahead.counts
    #expect(counts.ahead + counts.byReader >= (1996 + ahead.runLength - 1) / ahead.runLength)
    // How many runs the helper maps depends on scheduling; the test of a reader that stops
    // early waits for it to map ahead.
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("a window of 1 and the direct map work too")
  func oddPools() throws {
    let o = try taggedAnonymous(pages: 100)
    for pool in [try SFBufPool(nsfbufs: 1), SFBufPool.directMap()] {
      let ahead = try SFBufReadAhead(pool: pool, object: o, pages: 0..<100, runLength: 16)
      try readAll(ahead, o, expecting: 0..<100)
      #expect(pool.stats.nsfbufsused == 0)
    }
  }

  @Test("a reader that stops early gives back what was mapped ahead")
  func stopEarly() throws {
    let pool = try SFBufPool(nsfbufs: 64)
    let o = try taggedAnonymous(pages: 1000)
    var ahead: SFBufReadAhead? = try SFBufReadAhead(
      pool: pool, object: o, pages: 0..<1000, runLength: 16, depth: 2)
    do {
      guard let first = try ahead!.next() else {
        Issue.record("no first run")
        return
      }
      #expect(first.count == 16)
      // The helper maps up to two runs ahead while this one is held.
      #expect(waitUntil("the helper to map ahead", seconds: 5) { pool.stats.nsfbufsused > 16 })
    }
    ahead = nil
    #expect(pool.stats.nsfbufsused == 0, "runs mapped ahead were freed")
    #expect(pool.window!.checkInvariants() == nil)
  }

  @Test("a full window: less read-ahead, the reader waits its turn, no deadlock, right bytes")
  func fullWindow() throws {
    let pool = try SFBufPool(nsfbufs: 16)
    let o = try taggedAnonymous(pages: 400)
    // Another user holds every slot; it lets go after 200 ms.
    let held = try pool.allocateBatch(of: o, pages: 300..<316)
    #expect(pool.freeSlots == 0)
    let holder = Mutex<SFBufBatch?>(held)
    let letGo = Thread.after(milliseconds: 200) { holder.withLock { $0 = nil } }
    // The reader sleeps for slots: on a thread of its own, so that a lost wake-up (the
    // mutant CI runs) fails this test within a bound instead of hanging it.
    let read = Atomic<Int>(-1)
    let byReader = Atomic<Int>(0)
    let reader = Thread.after(milliseconds: 0) {
      let ahead = try! SFBufReadAhead(pool: pool, object: o, pages: 0..<200, runLength: 8)
      defer { byReader.store(ahead.counts.byReader, ordering: .releasing) }
      var next = 0
      while let run = try! ahead.next() {
        for i in 0..<run.count {
          let page = run.page(i)
          guard page.index == next, run.address(i).load(as: UInt64.self) == tag(o, next) else {
            read.store(-2 - next, ordering: .releasing)
            return
          }
          next += 1
        }
      }
      read.store(next, ordering: .releasing)
    }
    let finished = waitUntil("the reader to finish", seconds: 30) {
      read.load(ordering: .acquiring) != -1
    }
    letGo.join()
    guard finished else { return }
    reader.join()
    #expect(read.load(ordering: .acquiring) == 200, "-2 - n: page n out of place or wrong")
    #expect(byReader.load(ordering: .acquiring) >= 1, "the reader mapped its first run itself")
    #expect(pool.stats.nsfbufsused == 0)
  }

  @Test(
    "tiny windows shared with a thread that holds pages too: every page, right bytes, no hang",
    arguments: [1, 2, 3, 5, 8, 13])
  func tinyWindowsUnderContention(nsfbufs: Int) throws {
    let pool = try SFBufPool(nsfbufs: nsfbufs, policy: .batched(batch: 2))
    let o = try taggedAnonymous(pages: 400)
    let other = try taggedAnonymous(pages: 64)
    let done = Atomic<Bool>(false)
    let read = Atomic<Int>(0)
    // The other user: holds one or two pages at a time, sleeping for slots like anyone.
    let churn = Thread.after(milliseconds: 0) {
      var rng = SystemRandomNumberGenerator()
      while !done.load(ordering: .relaxed) {
        // Never sleeping (a lost wake-up must not hang the test): retry instead.
        guard
          let a = try? pool.allocate(
            other.page(Int.random(in: 0..<64, using: &rng)), flags: .noWait)
        else {
          usleep(50)
          continue
        }
        do {
          let b = try pool.allocate(
            other.page(Int.random(in: 0..<64, using: &rng)), flags: .noWait)
          usleep(50)
          b.free()
        } catch {
          usleep(50)
        }
        a.free()
      }
    }
    let reader = Thread.after(milliseconds: 0) {
      let ahead = try! SFBufReadAhead(
        pool: pool, object: o, pages: 0..<400, runLength: 8, depth: 2)
      var expected = 0
      while let run = try! ahead.next() {
        for i in 0..<run.count {
          precondition(run.page(i).index == expected, "out of order")
          precondition(run.address(i).load(as: UInt64.self) == tag(o, expected), "wrong bytes")
          expected += 1
        }
      }
      read.store(expected, ordering: .releasing)
    }
    let finished = waitUntil("the reader to finish (window of \(nsfbufs))", seconds: 30) {
      read.load(ordering: .acquiring) == 400
    }
    done.store(true, ordering: .relaxed)
    churn.join()
    if finished { reader.join() }
    #expect(finished)
    #expect(pool.stats.nsfbufsused == 0)
    #expect(pool.window!.checkInvariants() == nil)
  }
}

/// A thread that runs `body` after a delay.
struct Thread {
  let id: pthread_t
  static func after(milliseconds: Int, _ body: @escaping @Sendable () -> Void) -> Thread {
    final class Box: Sendable {
      let body: @Sendable () -> Void
      let ms: Int
      init(_ body: @escaping @Sendable () -> Void, _ ms: Int) {
        self.body = body
        self.ms = ms
      }
    }
    var t = pthread_t()
    let box = Unmanaged.passRetained(Box(body, milliseconds)).toOpaque()
    pthread_create(
      &t, nil,
      { arg in
        let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        usleep(useconds_t(b.ms * 1000))
        b.body()
        return nil
      }, box)
    return Thread(id: t)
  }
  func join() { pthread_join(id, nil) }
}
