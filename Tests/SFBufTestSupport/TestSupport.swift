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
  /// `waitingFor` ("for …"), is sent SIGUSR1 (see ``join(_:within:_:sourceLocation:)``) and
  /// if still running left behind, detached: a lost wake-up fails the test instead of
  /// hanging the suite.
  @discardableResult
  public func join(
    within seconds: Double = 60, _ waitingFor: String = "for a test thread to end",
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Bool {
    TestThread.join([self], within: seconds, waitingFor, sourceLocation: sourceLocation)
  }

  /// Waits at most `seconds` in all for every thread of `threads` to end, and joins them;
  /// returns whether all ended. Threads still running then are recorded as one failure that
  /// names `waitingFor` and how many are left, sent SIGUSR1 (after installing
  /// ``installInterruptingHandler(_:)`` if SIGUSR1 has no handler), which ends an
  /// interruptible sleep, given a moment to end, and else left running, detached.
  @discardableResult
  public static func join(
    _ threads: [TestThread], within seconds: Double = 60,
    _ waitingFor: String = "for the test's threads to end",
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Bool {
    let ended = waitUntil(
      seconds: seconds, waitingFor, sourceLocation: sourceLocation,
      { threads.allSatisfy(\.isDone) },
      detail: {
        let left = threads.filter { !$0.isDone }.count
        return "\(left) of \(threads.count) still running"
      })
    if !ended {
      // Interrupt what sleeps interruptibly, and give it a moment to end before the test
      // goes on (and closes what it uses).
      if !hasHandler(SIGUSR1) { installInterruptingHandler(SIGUSR1) }
      for t in threads where !t.isDone { t.signal(SIGUSR1) }
      let deadline = monotonic() + shortBound
      while monotonic() < deadline && !threads.allSatisfy(\.isDone) { usleep(1000) }
    }
    for t in threads {
      if t.isDone { pthread_join(t.thread, nil) } else { pthread_detach(t.thread) }
    }
    return ended
  }
}

/// Runs `body` on a ``TestThread`` of its own and waits at most `seconds` for it: for a call
/// that may sleep (an allocation on a full window), so that the test's own thread, one of
/// the few that run every test, never sleeps in it. Returns what `body` returned, or nil
/// when it has not returned in time: then a failure naming `what` is recorded, and the
/// thread is sent SIGUSR1 (ending an interruptible sleep) and, if still running, left
/// behind.
public func onThread<T, E: Error>(
  _ what: String, seconds: Double = 60, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: @escaping @Sendable () throws(E) -> T
) throws(E) -> T? {
  let result = Shared<Result<T, E>?>(nil)
  let t = TestThread {
    let r = Result { () throws(E) -> T in try body() }
    result.with { $0 = r }
  }
  guard t.join(within: seconds, "for \(what)", sourceLocation: sourceLocation) else {
    return nil
  }
  return try result.get!.get()
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

/// Whether `sig` has a handler (a signal at its default action may end the process).
public func hasHandler(_ sig: Int32) -> Bool {
  var sa = sigaction()
  sigaction(sig, nil, &sa)
  let h = unsafeBitCast(sa.__sigaction_handler.sa_handler, to: Int.self)
  return h != unsafeBitCast(SIG_DFL, to: Int.self) && h != unsafeBitCast(SIG_IGN, to: Int.self)
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

// MARK: Bounded waits

/// The tests in which a bounded wait has given up.
private let testsThatGaveUp = Shared<Set<Test.ID>>([])

/// How long a wait of `seconds` in the running test may last: all of it, or at most
/// `shortBound` once a wait of the same test has given up. A test that failed that way (a
/// lost wake-up fails every later wait of it too) then fails within one bound and not the
/// sum of all its bounds, while other tests keep theirs. Outside a test (on a thread of
/// its own): all of it.
func bound(_ seconds: Double) -> (seconds: Double, shortened: Bool) {
  guard let id = Test.current?.id, seconds > shortBound,
    testsThatGaveUp.with({ $0.contains(id) })
  else { return (seconds, false) }
  return (shortBound, true)
}

/// The bound of the waits of a test after one of them gave up.
let shortBound = 2.0

/// Records that a wait of the running test gave up after `seconds` waiting `waitingFor`
/// ("for …"), with `detail`.
func gaveUp(
  after seconds: Double, shortened: Bool, _ waitingFor: String, detail: String? = nil,
  sourceLocation: SourceLocation
) {
  if let id = Test.current?.id { testsThatGaveUp.with { _ = $0.insert(id) } }
  var message = "gave up after \(seconds) s waiting \(waitingFor)"
  if let detail { message += " (\(detail))" }
  if shortened { message += " [bound shortened: an earlier wait of this test gave up]" }
  Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
}

/// Waits, at most `seconds`, until `cond` holds; returns whether it did. Records nothing:
/// the caller says what failed (prefer ``waitUntil(_:seconds:sourceLocation:_:)``, which
/// names what it waited for).
public func waitUntil(seconds: Double = 10, _ cond: () -> Bool) -> Bool {
  let deadline = monotonic() + bound(seconds).seconds
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
  waitUntil(seconds: seconds, "for \(what)", sourceLocation: sourceLocation, cond, detail: { nil })
}

/// Waits, at most `seconds`, until `cond` holds; records a failure naming `waitingFor`
/// ("for …") and `detail()` when it does not.
func waitUntil(
  seconds: Double, _ waitingFor: String, sourceLocation: SourceLocation, _ cond: () -> Bool,
  detail: () -> String?
) -> Bool {
  let (seconds, shortened) = bound(seconds)
  let deadline = monotonic() + seconds
  while monotonic() < deadline {
    if cond() { return true }
    usleep(1000)
  }
  if cond() { return true }
  gaveUp(
    after: seconds, shortened: shortened, waitingFor, detail: detail(),
    sourceLocation: sourceLocation)
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
  guard
    await waitUntilAsync(
      what, seconds: seconds, sourceLocation: sourceLocation, { result.get != nil })
  else {
    task.cancel()
    return nil
  }
  return try result.get!.get()
}

/// Waits for `task`'s result at most `seconds`; when it has not finished by then, records a
/// failure naming `what`, cancels it and returns nil, leaving it behind.
public func result<T: Sendable, E: Error>(
  of task: Task<T, E>, within seconds: Double = 30, _ what: String,
  sourceLocation: SourceLocation = #_sourceLocation
) async -> Result<T, E>? {
  let outcome = Shared<Result<T, E>?>(nil)
  let waiter = Task {
    let r = await task.result
    outcome.with { $0 = r }
  }
  guard
    await waitUntilAsync(
      what, seconds: seconds, sourceLocation: sourceLocation, { outcome.get != nil })
  else {
    task.cancel()
    waiter.cancel()
    return nil
  }
  return outcome.get!
}

/// Waits, at most `seconds`, until `cond` holds, without blocking a thread of the
/// cooperative pool; returns whether it did. Records nothing (prefer
/// ``waitUntilAsync(_:seconds:sourceLocation:_:)``).
public func waitUntilAsync(seconds: Double = 10, _ cond: () -> Bool) async -> Bool {
  await pollAsync(seconds: bound(seconds).seconds, cond)
}

/// Polls `cond` about every millisecond until it holds (true), or until `seconds` have
/// passed and it has been polled at least 50 times per second of the bound (false). The
/// count keeps a starved wait from giving up: the tasks of a test share the cooperative
/// pool's few threads with the other tests, and under a sanitizer's slowdown a task can
/// wait seconds for one, as long as the task it waits for.
func pollAsync(seconds: Double, _ cond: () -> Bool) async -> Bool {
  let deadline = monotonic() + seconds
  let polls = Int(seconds * 50)
  var n = 0
  while n < polls || monotonic() < deadline {
    if cond() { return true }
    n += 1
    try? await Task.sleep(nanoseconds: 1_000_000)
  }
  return cond()
}

/// Waits, at most `seconds`, until `cond` holds, without blocking a thread of the
/// cooperative pool; records a failure naming `what` when it does not. Returns whether it
/// held.
@discardableResult
public func waitUntilAsync(
  _ what: String, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation,
  _ cond: () -> Bool
) async -> Bool {
  let (seconds, shortened) = bound(seconds)
  if await pollAsync(seconds: seconds, cond) { return true }
  gaveUp(after: seconds, shortened: shortened, "for \(what)", sourceLocation: sourceLocation)
  return false
}

/// A new, empty file `/tmp/<prefix>-XXXXXX` (mkstemp); returns its path.
public func makeTempPath(_ prefix: String) -> String {
  var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
  let fd = mkstemp(&template)
  precondition(fd >= 0, "mkstemp failed: \(errno)")
  close(fd)
  return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

// MARK: Sanitizers

/// The sanitizer this process runs under ("address", "thread"), or nil.
public let sanitizer: String? = {
  let all = UnsafeMutableRawPointer(bitPattern: 0)  // RTLD_DEFAULT
  if dlsym(all, "__asan_init") != nil { return "address" }
  if dlsym(all, "__tsan_init") != nil { return "thread" }
  return nil
}()

/// What to `LD_PRELOAD` into a program that is not instrumented but loads a library that
/// is (the stock `sqlite3` shell loading the extension), when this process runs under a
/// sanitizer: the sanitizer's shared runtime from the toolchain that built this process
/// (`…/usr/lib/clang/<version>/lib/linux/libclang_rt.<asan|tsan>-x86_64.so`) and, for
/// ThreadSanitizer, whose runtime intercepts libdispatch, the toolchain's libdispatch.
/// Nil when not under a sanitizer or not found.
public let sanitizerPreload: String? = {
  guard let kind = sanitizer else { return nil }
  let name = "libclang_rt.\(kind == "address" ? "asan" : "tsan")-x86_64.so"
  // The toolchain: where the Swift runtime library this process maps lies
  // (…/usr/lib/swift/linux/libswiftCore.so, in /proc/self/maps).
  guard let maps = fopen("/proc/self/maps", "r") else { return nil }
  defer { fclose(maps) }
  var line = [CChar](repeating: 0, count: 4096)
  var core: String? = nil
  while core == nil, fgets(&line, Int32(line.count), maps) != nil {
    let text = String(
      decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    if let slash = text.firstIndex(of: "/"), text.contains("/libswiftCore.so") {
      core = String(text[slash...].prefix { $0 != "\n" })
    }
  }
  guard let core, let r = core.firstRange(of: "/lib/swift/") else { return nil }
  let lib = String(core[..<r.lowerBound]) + "/lib"
  guard let dir = opendir(lib + "/clang") else { return nil }
  defer { closedir(dir) }
  while let e = readdir(dir) {
    let version = withUnsafeBytes(of: e.pointee.d_name) {
      String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
    }
    let path = "\(lib)/clang/\(version)/lib/linux/\(name)"
    guard !version.hasPrefix("."), access(path, R_OK) == 0 else { continue }
    return kind == "thread" ? "\(path) \(lib)/swift/linux/libdispatch.so" : path
  }
  return nil
}()
