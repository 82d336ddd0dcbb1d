import Glibc
import Synchronization
import SystemPackage

/// A program started by the tool (a server to measure, or wrk), with its standard output on
/// a pipe the tool reads and its standard error in a file. Children take signals as usual,
/// whatever the tool blocks for its signal watcher, and a terminating signal to the tool
/// kills every child still running.
final class ChildProcess: Sendable {
  let pid: pid_t
  let name: String
  /// The read end of the child's standard output.
  let output: FileDescriptor
  /// Where the child's standard error goes.
  let errorLog: String

  private static let live = Mutex<Set<pid_t>>([])
  private static let watching = Mutex(false)

  /// Starts `arguments[0]` (looked up in PATH when it has no slash).
  init(_ arguments: [String], name: String, errorLog: String) throws {
    self.name = name
    self.errorLog = errorLog
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else {
      throw CommandFailure("cannot make a pipe for \(name): \(Errno(rawValue: errno))")
    }
    // Neither end leaks into other children (the child's copy is its standard output).
    for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    posix_spawn_file_actions_addopen(
      &actions, 2, errorLog, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    let argv = arguments.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var child: pid_t = 0
    let r = posix_spawnp(&child, arguments[0], &actions, &attributes, argv, environ)
    close(pipeEnds[1])
    guard r == 0 else {
      close(pipeEnds[0])
      throw CommandFailure("cannot start \(arguments[0]): \(Errno(rawValue: r))")
    }
    pid = child
    output = FileDescriptor(rawValue: pipeEnds[0])
    Self.live.withLock { _ = $0.insert(child) }
    let first = Self.watching.withLock { w in
      defer { w = true }
      return !w
    }
    if first {
      // SIGTERM first, so that a server stops its own children (nginx's workers outlive a
      // master killed by SIGKILL); SIGKILL for any still running a second later.
      SignalWatcher.onTermination {
        let pids = ChildProcess.live.withLock { $0 }
        for pid in pids { kill(pid, SIGTERM) }
        let deadline = now() + 1
        var left = pids
        while !left.isEmpty && now() < deadline {
          left = left.filter { waitpid($0, nil, WNOHANG) == 0 }
          usleep(10_000)
        }
        for pid in left { kill(pid, SIGKILL) }
      }
    }
  }

  /// The path of this program, to start it again as a child.
  static func thisProgram() throws -> String {
    var path = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &path, path.count - 1)
    guard n > 0 else { throw CommandFailure("cannot find this program (/proc/self/exe)") }
    return String(decoding: path[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// Reads standard output until a whole line matches `want` (returned), the child's output
  /// ends, or `timeout` passes.
  func waitForLine(timeout: Double, _ want: (String) -> Bool) throws -> String {
    let deadline = now() + timeout
    var pending: [UInt8] = []
    while true {
      while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
        let line = String(decoding: pending[..<nl], as: UTF8.self)
        pending.removeSubrange(...nl)
        if want(line) { return line }
      }
      guard let more = try readSome(until: deadline, "printed no such line in \(Int(timeout)) s")
      else { throw failure("ended its output first") }
      pending += more
    }
  }

  /// All of standard output until the child closes it, at most `timeout` seconds.
  func readAll(timeout: Double) throws -> String {
    let deadline = now() + timeout
    var all: [UInt8] = []
    while let more = try readSome(until: deadline, "did not finish in \(Int(timeout)) s") {
      all += more
    }
    return String(decoding: all, as: UTF8.self)
  }

  /// The next bytes of standard output, or nil at its end; throws `late` at `deadline`.
  private func readSome(until deadline: Double, _ late: String) throws -> [UInt8]? {
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
      let left = deadline - now()
      guard left > 0 else { throw failure(late) }
      var p = pollfd(fd: output.rawValue, events: Int16(POLLIN), revents: 0)
      let ready = poll(&p, 1, Int32(min(left, 1) * 1000) + 1)
      if ready < 0 && errno != EINTR { throw failure("poll: \(Errno(rawValue: errno))") }
      guard ready > 0 else { continue }
      let n = chunk.withUnsafeMutableBytes { read(output.rawValue, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      return n > 0 ? Array(chunk[0..<n]) : nil
    }
  }

  /// Waits for the child to exit, sending `signal` first (if any), then SIGKILL after
  /// `timeout` seconds. Returns the wait status.
  @discardableResult
  func stop(signal: Int32? = SIGTERM, timeout: Double = 10) -> Int32 {
    if let signal { kill(pid, signal) }
    let deadline = now() + timeout
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) == 0 {
      if now() > deadline {
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        break
      }
      usleep(10_000)
    }
    Self.live.withLock { _ = $0.remove(pid) }
    try? output.close()
    return status
  }

  /// The last `lines` lines of the child's standard error, for an error message.
  func errorTail(_ lines: Int = 5) -> String {
    guard let fd = try? FileDescriptor.open(errorLog, .readOnly) else { return "" }
    defer { try? fd.close() }
    var bytes = [UInt8](repeating: 0, count: 1 << 16)
    let n = (try? bytes.withUnsafeMutableBytes { try fd.read(into: $0) }) ?? 0
    let text = String(decoding: bytes[0..<n], as: UTF8.self)
    return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
  }

  private func failure(_ what: String) -> CommandFailure {
    let tail = errorTail()
    return CommandFailure("\(name) \(what)" + (tail.isEmpty ? "" : ":\n\(tail)"))
  }
}
