// What the test targets share: real threads that can be signalled, a locked shared value,
// bounded waits, temporary paths, and an interrupting signal handler.

import CSFBufLinux
import Glibc
import Synchronization
import Testing

/// A thread running `body`, joinable, that receives SIGUSR1: the test runner's worker
/// threads block signals, and a new thread inherits its creator's mask.
public final class TestThread: @unchecked Sendable {
  private var thread = pthread_t()
  private let body: @Sendable () -> Void
  private let doneFlag = Atomic<Bool>(false)

  /// Starts the thread.
  public init(_ body: @escaping @Sendable () -> Void) {
    self.body = body
    let r = pthread_create(
      &thread, nil,
      { arg in
        let t = Unmanaged<TestThread>.fromOpaque(arg!).takeRetainedValue()
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        t.body()
        t.doneFlag.store(true, ordering: .releasing)
        return nil
      }, Unmanaged.passRetained(self).toOpaque())
    precondition(r == 0, "pthread_create failed: \(r)")
  }

  /// Whether `body` has returned.
  public var isDone: Bool { doneFlag.load(ordering: .acquiring) }
  /// Sends `sig` to the thread (`pthread_kill`).
  public func signal(_ sig: Int32) { pthread_kill(thread, sig) }
  /// Waits at most `seconds` for the thread to end, then joins it (`pthread_join`) and
  /// returns true. A thread still running then is recorded as a failure that names
  /// `waitingFor` and left running (detached): a lost wake-up fails the test instead of
  /// hanging the suite.
  @discardableResult
  public func join(
    within seconds: Double = 60, _ waitingFor: String = "for a test thread to end",
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Bool {
    guard waitUntil(seconds: seconds, { isDone }) else {
      Issue.record(
        "gave up after \(seconds) s waiting \(waitingFor)", sourceLocation: sourceLocation)
      pthread_detach(thread)
      return false
    }
    pthread_join(thread, nil)
    return true
  }
}

/// A value shared between threads under a lock.
public final class Shared<T>: @unchecked Sendable {
  private var value: T
  private var mutex = pthread_mutex_t()
  public init(_ v: T) {
    value = v
    pthread_mutex_init(&mutex, nil)
  }
  /// Runs `body` on the value with the lock held.
  public func with<R>(_ body: (inout T) -> R) -> R {
    pthread_mutex_lock(&mutex)
    defer { pthread_mutex_unlock(&mutex) }
    return body(&value)
  }
  /// A copy of the value.
  public var get: T { with { $0 } }
}

/// Installs a do-nothing handler for `sig` without SA_RESTART, so that a blocking system
/// call in progress returns EINTR, as the kernel's PCATCH sleeps expect.
public func installInterruptingHandler(_ sig: Int32) {
  var sa = sigaction()
  sa.__sigaction_handler.sa_handler = { _ in }
  sigemptyset(&sa.sa_mask)
  sa.sa_flags = 0
  precondition(sigaction(sig, &sa, nil) == 0)
}

/// Monotonic time in seconds.
public func monotonic() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Waits, at most `seconds`, until `cond` holds; returns whether it did.
public func waitUntil(seconds: Double = 10, _ cond: () -> Bool) -> Bool {
  let deadline = monotonic() + seconds
  while monotonic() < deadline {
    if cond() { return true }
    usleep(1000)
  }
  return cond()
}

/// Waits, at most `seconds`, until `cond` holds; records a failure naming `what` when it
/// does not. Returns whether it held.
@discardableResult
public func waitUntil(
  _ what: String, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation,
  _ cond: () -> Bool
) -> Bool {
  if waitUntil(seconds: seconds, cond) { return true }
  Issue.record("gave up after \(seconds) s waiting for \(what)", sourceLocation: sourceLocation)
  return false
}

/// Runs `body` in a child task and waits at most `seconds` for it; when it has not
/// finished by then, records a failure naming `what`, cancels it and returns nil without
/// waiting for it further (a task stuck in a wait that ignores cancellation is left
/// behind, and the test fails instead of hanging the suite).
public func withDeadline<T: Sendable>(
  _ what: String, seconds: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: @escaping @Sendable () async throws -> T
) async throws -> T? {
  let result = Shared<Result<T, any Error>?>(nil)
  let task = Task {
    let outcome: Result<T, any Error>
    do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
    result.with { $0 = outcome }
  }
  guard await waitUntilAsync(seconds: seconds, { result.get != nil }) else {
    Issue.record("gave up after \(seconds) s waiting for \(what)", sourceLocation: sourceLocation)
    task.cancel()
    return nil
  }
  return try result.get!.get()
}

/// Waits, at most `seconds`, until `cond` holds, without blocking a thread of the
/// cooperative pool; returns whether it did.
public func waitUntilAsync(seconds: Double = 10, _ cond: () -> Bool) async -> Bool {
  let deadline = monotonic() + seconds
  while monotonic() < deadline {
    if cond() { return true }
    try? await Task.sleep(nanoseconds: 1_000_000)
  }
  return cond()
}

/// A new, empty file `/tmp/<prefix>-XXXXXX` (mkstemp); returns its path.
public func makeTempPath(_ prefix: String) -> String {
  var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
  let fd = mkstemp(&template)
  precondition(fd >= 0, "mkstemp failed: \(errno)")
  close(fd)
  return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
