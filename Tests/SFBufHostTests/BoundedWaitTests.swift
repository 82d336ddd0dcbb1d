import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// The bounded waits of SFBufTestSupport, fed the hang each exists to catch: each must give
/// up in its bound, record a failure naming what it waited for, and leave nothing asleep
/// that could be woken.
@Suite("Bounded waits give up, naming what they waited for", .serialized)
struct BoundedWaitTests {
  init() { installInterruptingHandler(SIGUSR1) }

  /// Whether `issue` is a bounded wait giving up on `what`.
  func gaveUp(_ issue: Issue, on what: String) -> Bool {
    issue.comments.contains { $0.rawValue.contains("gave up after") && $0.rawValue.contains(what) }
  }

  @Test("join(within:) of a thread that does not end")
  func joinGivesUp() {
    let release = Shared(false)
    let t = TestThread {
      let deadline = monotonic() + 30
      while !release.get && monotonic() < deadline { usleep(1000) }
    }
    withKnownIssue {
      #expect(!t.join(within: 0.2, "for a thread that waits to be released"))
    } matching: {
      gaveUp($0, on: "for a thread that waits to be released")
    }
    release.with { $0 = true }
  }

  @Test("a later wait of a test that gave up once has a short bound")
  func shortenedAfterGivingUp() {
    withKnownIssue {
      waitUntil("something that never happens", seconds: 0.1) { false }
      // Would take 30 s without the shortening.
      waitUntil("something else that never happens", seconds: 30) { false }
    } matching: {
      gaveUp($0, on: "something that never happens")
        || (gaveUp($0, on: "something else that never happens")
          && $0.comments.contains { $0.rawValue.contains("bound shortened") })
    }
  }

  @Test("onThread: an interruptible allocation on a full window is given up and interrupted")
  func onThreadInterrupts() throws {
    let pool = try SFBufPool(nsfbufs: 1)
    let o = try taggedAnonymous(pages: 2)
    let held = try pool.allocate(o.page(0))
    withKnownIssue {
      // The body throws nothing: an interruption is just no slot.
      let slot = onThread("an allocation on a full window", seconds: 0.3) { () -> Int? in
        try? pool.allocate(o.page(1), flags: .interruptible).slot
      }
      #expect(slot == nil)
    } matching: {
      gaveUp($0, on: "for an allocation on a full window")
    }
    // The signal ended the sleep: nobody sleeps, nothing is held but `held`.
    #expect(waitUntil("the interrupted sleeper to leave") { pool.window!.sleepers == 0 })
    #expect(pool.stats.nsfbufsused == 1 && pool.stats.sf_allocfail == 1)
    _ = consume held
  }

  @Test("result(of:within:) of a task that does not finish cancels it")
  func resultGivesUp() async {
    let task = Task { () async throws -> Int in
      try await Task.sleep(nanoseconds: 60_000_000_000)
      return 1
    }
    await withKnownIssue {
      let r = await result(of: task, within: 0.2, "a task that sleeps a minute")
      #expect(r == nil)
    } matching: {
      gaveUp($0, on: "a task that sleeps a minute")
    }
    #expect(task.isCancelled)
  }
}
