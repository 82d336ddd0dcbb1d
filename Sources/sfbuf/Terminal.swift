import Glibc
import SFBufHost
import Synchronization

// What the tool does for a person at a terminal: progress on standard error, the live
// counters on SIGUSR1, and cleaning up when interrupted.

/// Signals handled by one thread of their own, outside any signal handler: SIGUSR1 prints
/// the live pools' `netstat -m` lines on standard error (as dd prints its counters);
/// SIGINT, SIGTERM and SIGHUP run the registered clean-ups (remove a temporary file, stop
/// a child), then end the process by the same signal.
///
/// `start` must run before the command makes any thread, so that every thread inherits the
/// blocked signals and only the watcher takes them.
enum SignalWatcher {
  private static let state = Mutex<State>(State())
  private struct State {
    var started = false
    var status: [@Sendable () -> [String]] = []
    var cleanups: [@Sendable () -> Void] = []
    var graceful: (@Sendable (Int32) -> Void)?
  }
  static let terminating = [SIGINT, SIGTERM, SIGHUP]

  /// Blocks SIGUSR1, SIGINT, SIGTERM and SIGHUP in the calling thread (and so in the
  /// threads it makes) and starts the watcher.
  static func start() {
    let first = state.locked { s in
      defer { s.started = true }
      return !s.started
    }
    guard first else { return }
    var set = signalSet()
    pthread_sigmask(SIG_BLOCK, &set, nil)
    runDetached { watch() }
  }

  /// Prints `lines()` on SIGUSR1.
  static func onStatus(_ lines: @escaping @Sendable () -> [String]) {
    state.locked { $0.status.append(lines) }
  }

  /// Makes a terminating signal call `body` with its number instead of ending the
  /// process: for a command that stops by itself (`serve`, `run`).
  static func onGracefulStop(_ body: @escaping @Sendable (Int32) -> Void) {
    state.locked { $0.graceful = body }
  }

  /// Runs `body` when a terminating signal arrives, before the process ends.
  static func onTermination(_ body: @escaping @Sendable () -> Void) {
    state.locked { $0.cleanups.append(body) }
  }

  private static let terminatingNow = Atomic<Bool>(false)

  /// For a thread that finds its work failing because the clean-ups of a terminating
  /// signal are running (its child was stopped): waits for the process to end by that
  /// signal rather than exit with an error of its own. Returns at once otherwise.
  static func yieldIfTerminating() {
    while terminatingNow.load(ordering: .acquiring) { pause() }
  }

  static func signalSet() -> sigset_t {
    var set = sigset_t()
    sigemptyset(&set)
    for s in [SIGUSR1] + terminating { sigaddset(&set, s) }
    return set
  }

  private static func watch() {
    var set = signalSet()
    while true {
      var sig: Int32 = 0
      guard sigwait(&set, &sig) == 0 else { continue }
      if sig == SIGUSR1 {
        let sources = state.locked { $0.status }
        for source in sources { for line in source() { printError(line) } }
        continue
      }
      if let graceful = state.locked({ $0.graceful }) {
        graceful(sig)
        continue
      }
      terminatingNow.store(true, ordering: .releasing)
      let cleanups = state.locked { $0.cleanups }
      for c in cleanups { c() }
      signal(sig, SIG_DFL)
      var one = sigset_t()
      sigemptyset(&one)
      sigaddset(&one, sig)
      pthread_sigmask(SIG_UNBLOCK, &one, nil)
      raise(sig)
      _exit(128 + sig)
    }
  }
}

/// Runs `body` on a new detached thread.
func runDetached(_ body: @escaping @Sendable () -> Void) {
  final class Box: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
  }
  var t = pthread_t()
  let r = pthread_create(
    &t, nil,
    { arg in
      Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
      return nil
    }, Unmanaged.passRetained(Box(body)).toOpaque())
  precondition(r == 0, "pthread_create failed: \(r)")
  pthread_detach(t)
}

/// A progress line on standard error, redrawn in place, when standard error is a
/// terminal (and not for JSON output); nothing otherwise.
final class Progress: Sendable {
  private let start = now()
  private let last = Mutex<Double>(0)
  private let total: Int
  private let unit: Unit

  enum Unit: Sendable {
    /// Bytes: done / total, percent, rate, time left (as curl and pv show).
    case bytes
    /// A counter of named things (`cell 3/40`), elapsed time and time left.
    case count(String)
  }

  /// A progress line over `total`, or nil when it must not be shown.
  static func make(total: Int, unit: Unit, quiet: Bool) -> Progress? {
    guard !quiet, isatty(STDERR_FILENO) == 1, total > 0 else { return nil }
    return Progress(total: total, unit: unit)
  }

  private init(total: Int, unit: Unit) {
    self.total = total
    self.unit = unit
  }

  /// Shows `done` of the total (at most ten times a second, and always at the end).
  func update(_ done: Int) {
    let t = now()
    let due = last.locked { l in
      guard t - l >= 0.1 || done >= total else { return false }
      l = t
      return true
    }
    guard due else { return }
    let elapsed = t - start
    let fraction = Double(done) / Double(total)
    let left = fraction > 0 ? elapsed * (1 - fraction) / fraction : .nan
    let line: String
    switch unit {
    case .bytes:
      line =
        "\(bytesText(done)) / \(bytesText(total))  \(fmt(fraction * 100, 1))%  "
        + "\(bytesText(Int(Double(done) / max(elapsed, 1e-9))))/s  \(clock(left)) left"
    case .count(let name):
      line = "\(name) \(done)/\(total)  \(clock(elapsed)) elapsed, \(clock(left)) left"
    }
    var s = "\r\u{1B}[K" + line
    s.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
  }

  /// Clears the line.
  func finish() {
    var s = "\r\u{1B}[K"
    s.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
  }
}

/// `m:ss` (or `h:mm:ss`), `--:--` when unknown.
func clock(_ seconds: Double) -> String {
  guard seconds.isFinite, seconds >= 0 else { return "--:--" }
  let s = Int(seconds.rounded())
  let two = { (n: Int) in n < 10 ? "0\(n)" : "\(n)" }
  return s >= 3600 ? "\(s / 3600):\(two(s / 60 % 60)):\(two(s % 60))" : "\(s / 60):\(two(s % 60))"
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 MiB`.
func bytesText(_ n: Int) -> String {
  let units = ["B", "KiB", "MiB", "GiB", "TiB"]
  var x = Double(n)
  var u = 0
  while x >= 1024 && u < units.count - 1 {
    x /= 1024
    u += 1
  }
  return u == 0 ? "\(n) B" : "\(fmt(x, 1)) \(units[u])"
}
