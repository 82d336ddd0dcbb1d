// The sfbuf tool run as a child process: arguments, environment, standard streams in files
// (or a pseudo-terminal), signals, and waits that are bounded and fail naming what they
// waited for.

import Glibc
import SFBufTestSupport
import Testing

/// Why a child could not be run.
enum ToolProcessError: Error {
  case notBuilt(String)
  case spawn(String, Int32)
}

/// The `sfbuf` executable built next to this test bundle (`swift build` builds it with the
/// tests).
func toolPath() throws -> String {
  var buf = [CChar](repeating: 0, count: 4096)
  let n = readlink("/proc/self/exe", &buf, buf.count - 1)
  var dir = String(decoding: buf[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  while let slash = dir.lastIndex(of: "/") {
    dir = String(dir[..<slash])
    if access(dir + "/sfbuf", X_OK) == 0 { return dir + "/sfbuf" }
  }
  Issue.record("the sfbuf tool is not built next to the tests: run swift build first")
  throw ToolProcessError.notBuilt("sfbuf")
}

/// A running child process.
final class ToolProcess {
  let pid: pid_t
  /// What it is, for failure messages: its command line.
  let what: String
  private var status: Int32?

  /// Starts `argv` (a bare name is looked up in /usr/bin and /bin) with `environment` added
  /// to this process's, standard output and error into files (or /dev/null), standard input
  /// from /dev/null, or all three on the terminal `tty` (a pseudo-terminal's device).
  init(
    _ argv: [String], environment: [String: String] = [:], stdout: String? = nil,
    stderr: String? = nil, tty: String? = nil
  ) throws {
    what = argv.joined(separator: " ")
    var exe = argv[0]
    if !exe.hasPrefix("/") {
      exe = ["/usr/bin/", "/bin/"].map { $0 + argv[0] }.first { access($0, X_OK) == 0 } ?? exe
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // The child gets default signal dispositions and an empty mask, whatever the test
    // runner's threads block.
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigdefault(&attributes, &all)
    var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
    if let tty {
      // A session of its own, with the terminal as its controlling terminal.
      flags |= 0x80  // POSIX_SPAWN_SETSID (glibc 2.26), not imported
      for fd in Int32(0)...2 { posix_spawn_file_actions_addopen(&actions, fd, tty, O_RDWR, 0) }
    } else {
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
      posix_spawn_file_actions_addopen(
        &actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
      posix_spawn_file_actions_addopen(
        &actions, 2, stderr ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    }
    posix_spawnattr_setflags(&attributes, Int16(flags))
    var env: [String] = []
    var e = environ
    while let p = e.pointee {
      let entry = String(cString: p)
      let name = String(entry.prefix { $0 != "=" })
      if environment[name] == nil { env.append(entry) }
      e += 1
    }
    env += environment.map { "\($0.key)=\($0.value)" }
    let args = ([exe] + argv.dropFirst()).map { strdup($0) } + [nil]
    let envp = env.map { strdup($0) } + [nil]
    defer { for a in args + envp { free(a) } }
    var p = pid_t()
    let r = posix_spawn(&p, exe, &actions, &attributes, args, envp)
    guard r == 0 else { throw ToolProcessError.spawn(argv[0], r) }
    pid = p
  }

  deinit {
    if status == nil {
      kill(pid, SIGKILL)
      var s: Int32 = 0
      waitpid(pid, &s, 0)
    }
  }

  /// Sends `sig` to the child.
  func signal(_ sig: Int32) { kill(pid, sig) }

  /// Whether the child has ended (reaping it if so).
  var hasEnded: Bool {
    if status != nil { return true }
    var s: Int32 = 0
    if waitpid(pid, &s, WNOHANG) == pid {
      status = s
      return true
    }
    return false
  }

  /// Waits at most `timeout` seconds for the child to end; returns its exit status, or
  /// 128 + the signal that ended it. A child still running then is recorded as a failure
  /// naming it and `waitingFor`, killed, and reported as -1.
  @discardableResult
  func wait(timeout: Double, _ waitingFor: String = "to finish") -> Int32 {
    let deadline = monotonic() + timeout
    while !hasEnded {
      if monotonic() > deadline {
        Issue.record("`\(what)` (pid \(pid)) did not end in \(timeout) s, waiting \(waitingFor)")
        kill(pid, SIGKILL)
        var s: Int32 = 0
        waitpid(pid, &s, 0)
        status = s
        return -1
      }
      usleep(2000)
    }
    let s = status!
    return s & 0x7f == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
  }
}

/// What a finished run of the tool printed, and how it ended.
struct ToolRun {
  var status: Int32
  var stdout: String
  var stderr: String
}

/// Runs `sfbuf args…` to the end, at most `timeout` seconds (then it fails, naming the
/// command, and is killed).
func runTool(_ args: [String], environment: [String: String] = [:], timeout: Double = 60)
  throws -> ToolRun
{
  let out = makeTempPath("sfbuf-tool-out")
  let err = makeTempPath("sfbuf-tool-err")
  defer {
    unlink(out)
    unlink(err)
  }
  let p = try ToolProcess(
    [try toolPath()] + args, environment: environment, stdout: out, stderr: err)
  let status = p.wait(timeout: timeout)
  return ToolRun(status: status, stdout: readText(out), stderr: readText(err))
}

/// The whole file at `path` as text ("" when it cannot be read).
func readText(_ path: String) -> String {
  String(decoding: readBytes(path), as: UTF8.self)
}

/// The whole file at `path` ([] when it cannot be read).
func readBytes(_ path: String) -> [UInt8] {
  guard let f = fopen(path, "r") else { return [] }
  defer { fclose(f) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = fread(&chunk, 1, chunk.count, f)
    if n <= 0 { break }
    bytes += chunk[0..<n]
  }
  return bytes
}

/// Waits at most `timeout` seconds until the file at `path` contains `text`; records a
/// failure naming `text` and `what` otherwise. Returns the file's text.
@discardableResult
func waitForText(_ path: String, _ text: String, timeout: Double = 30, from what: String)
  -> String
{
  var seen = ""
  let found = waitUntil(seconds: timeout) {
    seen = readText(path)
    return seen.contains(text)
  }
  if !found {
    Issue.record("\(what) did not print \"\(text)\" in \(timeout) s; it printed: \(seen)")
  }
  return seen
}
