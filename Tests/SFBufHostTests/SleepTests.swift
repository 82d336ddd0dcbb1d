import CSFBufLinux
import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// Keeps what the caller's scope holds until `release`, at most two minutes.
private func hold(until release: Shared<Bool>) {
  let deadline = monotonic() + 120
  while !release.get && monotonic() < deadline { usleep(500) }
}

/// Starts `count` threads running `body(n)` for n in 1...count, one at a time, each once
/// the previous one sleeps on `pool`'s full window.
private func startSleepers(
  _ count: Int, on pool: SFBufPool, _ body: @escaping @Sendable (Int) -> Void
) -> [TestThread] {
  (1...count).map { n in
    let t = TestThread { body(n) }
    waitUntil("sleeper \(n) to sleep") { pool.window!.sleepers == n }
    return t
  }
}

/// Sleeping on a full window: signals, cancellation, fairness, and no duplicate mappings.
/// Real threads, real futexes, real signals; every wait is bounded.
@Suite("Sleeping on a full window", .serialized)
struct SleepTests {
  init() { installInterruptingHandler(SIGUSR1) }

  /// A window of one slot, held.
  func fullWindow(_ policy: SFBufReclaimPolicy) throws -> (SFBufPool, VMObject, sf_buf) {
    let pool = try SFBufPool(nsfbufs: 1, policy: policy)
    let o = try taggedAnonymous(pages: 8)
    let held = try #require(pool.sf_buf_alloc(o.page(0), SFB_DEFAULT))
    return (pool, o, held)
  }

  @Test("SFB_CATCH: a real signal interrupts the sleep", arguments: policies)
  func catchInterrupted(policy: SFBufReclaimPolicy) throws {
    let (pool, o, held) = try fullWindow(policy)
    let result = Shared<SFBufError?>(nil)
    let t = TestThread {
      do throws(SFBufError) {
        _ = try pool.allocate(o.page(1), flags: .interruptible)
      } catch {
        result.with { $0 = error }
      }
    }
    waitUntil("the thread to sleep for a slot") { pool.window!.sleepers == 1 }
    // Signal until the sleeper gives up: the first signal may land before it reaches the
    // futex, which then does not see it, exactly as a kernel sleep would not.
    waitUntil("signals to interrupt the sleep") {
      t.signal(SIGUSR1)
      return t.isDone
    }
    t.join(within: 30, "for the interrupted thread to return")
    #expect(result.get == .interrupted)
    let s = pool.stats
    #expect(s.sf_allocwait >= 1 && s.sf_allocfail == 1 && s.nsfbufsused == 1)
    #expect(pool.window!.sleepers == 0)
    #expect(pool.window!.checkInvariants() == nil)
    pool.sf_buf_free(held)
  }

  @Test(
    "without SFB_CATCH the sleeper sleeps through signals and completes on a free",
    arguments: policies)
  func defaultSleepsThroughSignals(policy: SFBufReclaimPolicy) throws {
    let (pool, o, held) = try fullWindow(policy)
    let got = Shared<UInt64?>(nil)
    let t = TestThread {
      let b = try! pool.allocate(o.page(1))
      got.with { $0 = readTag(b) }
    }
    waitUntil("the thread to sleep for a slot") { pool.window!.sleepers == 1 }
    for _ in 0..<20 {
      t.signal(SIGUSR1)
      usleep(2000)
    }
    #expect(!t.isDone)
    #expect(pool.window!.sleepers == 1)
    pool.sf_buf_free(held)
    t.join(within: 30, "for the sleeper to be woken by the free and return")
    #expect(got.get == tag(o, 1))
    #expect(pool.stats.sf_allocfail == 0 && pool.stats.nsfbufsused == 0)
  }

  @Test("async: cancellation interrupts an SFB_CATCH wait", arguments: policies)
  func asyncCancelInterrupts(policy: SFBufReclaimPolicy) async throws {
    let (pool, o, held) = try fullWindow(policy)
    let task = Task { () async throws(SFBufError) -> UInt64 in
      let b = try await pool.allocate(o.page(1), flags: .interruptible)
      return readTag(b)
    }
    await waitUntilAsync("the task to sleep for a slot") { pool.window!.sleepers == 1 }
    task.cancel()
    let r = await result(of: task, within: 30, "the cancelled allocation to return")
    #expect(throws: SFBufError.interrupted) { try r?.get() }
    #expect(pool.window!.sleepers == 0 && pool.stats.sf_allocfail == 1)
    pool.sf_buf_free(held)
  }

  @Test(
    "async: without SFB_CATCH cancellation is ignored until a slot is free", arguments: policies)
  func asyncCancelIgnored(policy: SFBufReclaimPolicy) async throws {
    let (pool, o, held) = try fullWindow(policy)
    let task = Task { () async throws(SFBufError) -> UInt64 in
      let b = try await pool.allocate(o.page(1))
      return readTag(b)
    }
    await waitUntilAsync("the task to sleep for a slot") { pool.window!.sleepers == 1 }
    task.cancel()
    usleep(50_000)
    #expect(pool.window!.sleepers == 1)
    pool.sf_buf_free(held)
    let r = await result(of: task, within: 30, "the sleeping task to be woken by the free")
    #expect(try r?.get() == tag(o, 1))
  }

  @Test(
    "sleepers, threads and tasks alike, are served in arrival order, one per free",
    arguments: policies)
  func fifo(policy: SFBufReclaimPolicy) async throws {
    let (pool, o, held) = try fullWindow(policy)
    let order = Shared<[Int]>([])
    var threads: [TestThread] = []
    var tasks: [Task<Void, Never>] = []
    for i in 1...6 {
      let before = pool.window!.sleepers
      if i % 2 == 0 {
        tasks.append(
          Task {
            let b = try! await pool.allocate(o.page(i))
            order.with { $0.append(i) }
            usleep(1000)
            b.free()
          })
      } else {
        threads.append(
          TestThread {
            let b = try! pool.allocate(o.page(i))
            order.with { $0.append(i) }
            usleep(1000)
            b.free()
          })
      }
      await waitUntilAsync("sleeper \(i) to sleep") { pool.window!.sleepers == before + 1 }
    }
    pool.sf_buf_free(held)
    await waitUntilAsync("the six sleepers to be served", seconds: 30) { order.get.count == 6 }
    TestThread.join(threads, within: 30, "for the sleeping threads to be served")
    for t in tasks { _ = await result(of: t, within: 30, "a sleeping task to be served") }
    #expect(order.get == [1, 2, 3, 4, 5, 6])
    let s = pool.stats
    #expect(s.sf_allocwait == 6 && s.nsfbufsused == 0)
  }

  @Test(
    "two sleepers for one page share one slot after waking (no duplicate mapping)",
    arguments: policies)
  func noDuplicates(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 2, policy: policy)
    let o = try taggedAnonymous(pages: 4)
    let a = try #require(pool.sf_buf_alloc(o.page(0), SFB_DEFAULT))
    let b = try #require(pool.sf_buf_alloc(o.page(1), SFB_DEFAULT))
    let slots = Shared<[Int]>([])
    let release = Shared(false)
    let threads = startSleepers(2, on: pool) { _ in
      let buf = try! pool.allocate(o.page(3))
      precondition(readTag(buf) == tag(o, 3))
      slots.with { $0.append(buf.slot!) }
      hold(until: release)
    }
    // Free both slots at once: both sleepers wake; the second must find the first's mapping.
    pool.sf_buf_free(a)
    pool.sf_buf_free(b)
    if waitUntil("both sleepers to be woken and map page 3", { slots.get.count == 2 }) {
      #expect(slots.get[0] == slots.get[1])
      #expect(pool.window!.references(ofSlot: slots.get[0]) == 2)
      #expect(pool.window!.checkInvariants() == nil)
    }
    release.with { $0 = true }
    TestThread.join(threads, within: 30, "for the woken sleepers to free and end")
    let s = pool.stats
    #expect(s.remaps == 3 && s.hits == 1 && s.nsfbufsused == 0)
  }

  @Test("a batch freed at once wakes one sleeper for each slot it frees", arguments: policies)
  func batchFreeWakes(policy: SFBufReclaimPolicy) throws {
    let pool = try SFBufPool(nsfbufs: 3, policy: policy)
    let o = try taggedAnonymous(pages: 8)
    var batch = try pool.allocateBatch(of: o, pages: 0..<3)
    let got = Shared<[UInt64]>([])
    let release = Shared(false)
    let threads = startSleepers(3, on: pool) { n in
      let buf = try! pool.allocate(o.page(3 + n))
      got.with { $0.append(readTag(buf)) }
      hold(until: release)
    }
    // One lock for three frees: all three sleepers must wake (not just the first).
    batch.removeAll()
    if waitUntil("the three sleepers to map their pages", { got.get.count == 3 }) {
      #expect(Set(got.get) == Set((4...6).map { tag(o, $0) }))
      #expect(pool.window!.sleepers == 0 && pool.stats.nsfbufsused == 3)
      #expect(pool.window!.checkInvariants() == nil)
    }
    release.with { $0 = true }
    TestThread.join(threads, within: 30, "for the woken sleepers to free and end")
    #expect(pool.stats.nsfbufsused == 0)
  }
}
