import Foundation
import Glibc
import SFBufTestSupport
import Testing

/// The command line as a person meets it: signals, clean-up, errors, help, progress on a
/// terminal, SIGUSR1, and the JSON of every command. Real processes and real signals;
/// every wait bounded.
@Suite("sfbuf: the command line")
struct CommandLineTests {
  /// The children of `pid` (from /proc/PID/task/*/children).
  static func children(of pid: pid_t) -> [pid_t] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.flatMap { t in
      readText("/proc/\(pid)/task/\(t)/children").split(separator: " ").compactMap {
        pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
      }
    }
  }

  /// Whether process `pid` is gone (or a zombie nobody reaps yet).
  static func isGone(_ pid: pid_t) -> Bool {
    let stat = readText("/proc/\(pid)/stat")
    return stat.isEmpty || stat.contains(") Z ")
  }

  @Test(
    "bench sendfile interrupted: the file is removed and the reader stopped",
    arguments: [SIGINT, SIGTERM, SIGKILL])
  func benchSendfileInterrupted(sig: Int32) throws {
    let dir = makeTempPath("sfbuf-bench-dir")
    unlink(dir)
    mkdir(dir, 0o700)
    defer { rmdir(dir) }
    let p = try ToolProcess([
      try toolPath(), "bench", "sendfile", "--size", "64M", "--repetitions", "1000",
      "--directory", dir,
    ])
    // Running: its file made, its reader started.
    var reader: pid_t = 0
    let started = waitUntil("the benchmark's file in \(dir) and its reader process", seconds: 60) {
      reader = Self.children(of: p.pid).first ?? 0
      let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
      return reader > 0 && !files.isEmpty
    }
    guard started else { return }
    p.signal(sig)
    let status = p.wait(timeout: 30, "to end after signal \(sig)")
    #expect(status == 128 + sig, "ended by the same signal")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    if sig != SIGKILL {
      #expect(files.isEmpty, "the 64 MiB file is removed: \(files)")
    } else {
      // Nothing runs on SIGKILL; the file is left, but the reader must not be.
      for f in files { unlink(dir + "/" + f) }
    }
    #expect(
      waitUntil("the reader (pid \(reader)) to end", seconds: 10) { Self.isGone(reader) })
  }

  @Test("bad numbers are refused with a message, not a crash")
  func badNumbers() throws {
    for (args, message) in [
      (["bench", "sendfile", "--size", "99999999999999999G"], "--size must be a byte count"),
      (["bench", "sendfile", "--size", "2T"], "--size must be a byte count"),
      (["bench", "sendfile", "--size=-5M"], "--size must be a byte count"),
      (["bench", "pages", "--nsfbufs", "1024", "--run", "256"], "--run must be in 2...128"),
      // A peer with no cell in the workloads chosen would leave the table without it.
      (["bench", "pages", "--workload", "seq", "--peer", "refs"], "--peer refs measures only"),
      (
        ["bench", "pages", "--workload", "hot", "--peer", "c"],
        "--peer c measures only --workload seq"
      ),
    ] {
      let r = try runTool(args, timeout: 30)
      #expect(r.status == 64, "\(args): status \(r.status)")
      #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
    }
  }

  @Test("recv listens on IPv6 as send connects to it")
  func ipv6() throws {
    let file = makeTempPath("sfbuf-v6-src")
    let out = makeTempPath("sfbuf-v6-dst")
    let log = makeTempPath("sfbuf-v6-log")
    let json = makeTempPath("sfbuf-v6-json")
    defer { for p in [file, out, log, json] { unlink(p) } }
    let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) }
    writeFile(file, bytes)
    let recv = try ToolProcess(
      [try toolPath(), "recv", "0", "--host", "::1", "--out", out, "--timeout", "30", "--json"],
      stdout: json, stderr: log)
    let text = waitForText(log, "listening on [::1]:", from: "sfbuf recv --host ::1")
    let port = text.split(separator: ":").last.map { $0.prefix { $0.isNumber } } ?? ""
    let r = try runTool(["send", file, "[::1]:\(port)", "--json"], timeout: 60)
    #expect(r.status == 0, "\(r.stderr)")
    #expect(recv.wait(timeout: 30, "for the end of the connection") == 0)
    #expect(readBytes(out) == bytes)
    let sent = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    #expect(sent?["schema"] as? String == "sfbuf-send/1")
    #expect(sent?["bytesSent"] as? Int == bytes.count)
    let got = try JSONSerialization.jsonObject(with: Data(readBytes(json))) as? [String: Any]
    #expect(got?["schema"] as? String == "sfbuf-recv/1")
    #expect(got?["bytesReceived"] as? Int == bytes.count)
  }

  @Test("--version; a mistyped subcommand is named as such; run's errors go to stderr")
  func words() throws {
    var r = try runTool(["--version"])
    #expect(r.status == 0 && r.stdout.first?.isNumber == true, "\(r.stdout) \(r.stderr)")
    r = try runTool(["sned", "file", "127.0.0.1:9"])
    #expect(r.status == 64)
    #expect(r.stderr.contains("unknown subcommand 'sned'"), "\(r.stderr)")
    #expect(!r.stderr.contains("sfbuf run"), "not run's usage: \(r.stderr)")
    r = try runTool(["run", "--seconds", "0.1"], environment: ["SFBUF_NSFBUFS": "abc"])
    #expect(r.status == 1 && r.stdout.isEmpty, "errors on stderr only: \(r.stdout)")
    #expect(r.stderr.contains("SFBUF_NSFBUFS"))
  }

  @Test("help: paragraphs wrap at the terminal's width, not mid-sentence; value names say what")
  func help() throws {
    for command in [
      ["run"], ["send"], ["recv"], ["bench", "pages"], ["bench", "sendfile"], ["sim"],
      ["bench", "serve"], ["serve"],
    ] {
      let r = try runTool(command + ["--help"])
      let text = r.stdout
      let intro = text.components(separatedBy: "USAGE:").first ?? ""
      for paragraph in intro.components(separatedBy: "\n\n") {
        let lines = paragraph.split(separator: "\n")
        for line in lines.dropLast() where line.count < 50 {
          Issue.record("\(command) --help: a short line inside a paragraph: '\(line)'")
        }
      }
      let bare = text.matches(of: /--([a-z-]+) <([a-z-]+)>/).filter { $0.output.1 == $0.output.2 }
      #expect(
        bare.isEmpty, "\(command): value names that only repeat the option: \(bare.map(\.output.0))"
      )
    }
  }

  @Test("SIGUSR1 prints the live counters; the run goes on")
  func usr1() throws {
    let err = makeTempPath("sfbuf-usr1")
    defer { unlink(err) }
    let p = try ToolProcess(
      [try toolPath(), "run", "--seconds", "3", "--nsfbufs", "16"], stderr: err)
    // The watcher thread blocks SIGUSR1 from the start; wait until the run's threads exist.
    let running = waitUntil("the run's threads", seconds: 30) {
      ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.pid)/task"))?.count ?? 0)
        >= 5
    }
    guard running else { return }
    p.signal(SIGUSR1)
    waitForText(err, "sfbufs in use (current/peak/max)", from: "sfbuf run after SIGUSR1")
    #expect(p.wait(timeout: 60) == 0, "the run ended normally")
  }

  @Test(
    "a terminating signal stops the run early: the counters so far, then 128 + the signal",
    arguments: [SIGINT, SIGTERM])
  func runInterrupted(sig: Int32) throws {
    let out = makeTempPath("sfbuf-run-out")
    let err = makeTempPath("sfbuf-run-err")
    defer {
      unlink(out)
      unlink(err)
    }
    let p = try ToolProcess(
      [try toolPath(), "run", "--seconds", "60", "--nsfbufs", "16"], stdout: out, stderr: err)
    let running = waitUntil("the run's threads", seconds: 30) {
      ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.pid)/task"))?.count ?? 0)
        >= 5
    }
    guard running else { return }
    p.signal(sig)
    #expect(p.wait(timeout: 30, "to stop after the signal") == 128 + sig)
    let printed = readText(out)
    #expect(printed.contains("sfbufs in use (current/peak/max)"), "the counters: \(printed)")
    #expect(printed.contains(", 0 wrong mappings"), "every mapping verified: \(printed)")
    let name = sig == SIGINT ? "SIGINT" : "SIGTERM"
    #expect(readText(err).contains("sfbuf run: stopped by \(name) after"), "\(readText(err))")
  }

  /// A pseudo-terminal: its device path and the master side.
  /// (posix_openpt, grantpt, unlockpt and ptsname_r are looked up in glibc at run time:
  /// Glibc's module map leaves them out without _XOPEN_SOURCE.)
  static func openTerminal() throws -> (path: String, master: Int32) {
    typealias IntToInt = @convention(c) (Int32) -> Int32
    typealias Name = @convention(c) (Int32, UnsafeMutablePointer<CChar>, Int) -> Int32
    let libc = dlopen(nil, RTLD_NOW)
    let openpt = unsafeBitCast(dlsym(libc, "posix_openpt"), to: IntToInt.self)
    let grant = unsafeBitCast(dlsym(libc, "grantpt"), to: IntToInt.self)
    let unlock = unsafeBitCast(dlsym(libc, "unlockpt"), to: IntToInt.self)
    let name = unsafeBitCast(dlsym(libc, "ptsname_r"), to: Name.self)
    let m = openpt(O_RDWR | O_NOCTTY)
    var buf = [CChar](repeating: 0, count: 128)
    #expect(m >= 0 && grant(m) == 0 && unlock(m) == 0 && name(m, &buf, buf.count) == 0)
    return (String(cString: buf), m)
  }

  /// What arrives on `master` until `p` ends (bounded).
  static func drain(_ master: Int32, until p: ToolProcess, timeout: Double) -> String {
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    let deadline = monotonic() + timeout
    while monotonic() < deadline {
      var fds = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
      if poll(&fds, 1, 50) > 0 {
        let n = read(master, &buf, buf.count)
        if n > 0 { bytes += buf[0..<n] } else if p.hasEnded { break }
      } else if p.hasEnded {
        break
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  @Test("progress on a terminal: send shows bytes, percent, rate and time left")
  func progressOnTerminal() throws {
    let file = makeTempPath("sfbuf-progress-src")
    let log = makeTempPath("sfbuf-progress-log")
    defer {
      unlink(file)
      unlink(log)
    }
    writeFile(file, [UInt8](repeating: 7, count: 64 << 20))
    let recv = try ToolProcess(
      [try toolPath(), "recv", "0", "--out", "/dev/null", "--timeout", "60"], stderr: log)
    let text = waitForText(log, "listening on 127.0.0.1:", from: "sfbuf recv")
    let port = text.split(separator: ":").last.map { $0.prefix { $0.isNumber } } ?? ""
    let (tty, master) = try Self.openTerminal()
    defer { close(master) }
    let send = try ToolProcess(
      [try toolPath(), "send", file, "127.0.0.1:\(port)", "--nsfbufs", "16"], tty: tty)
    let shown = Self.drain(master, until: send, timeout: 120)
    #expect(send.wait(timeout: 10) == 0, "\(shown)")
    #expect(recv.wait(timeout: 30) == 0)
    #expect(shown.contains("100.0%") && shown.contains("/s") && shown.contains("left"), "\(shown)")
    #expect(shown.contains("64.0 MiB"), "\(shown)")
    // Not a terminal: no progress at all.
    let recv2 = try ToolProcess(
      [try toolPath(), "recv", "0", "--out", "/dev/null", "--timeout", "60"], stderr: log)
    let text2 = waitForText(log, "listening on 127.0.0.1:", from: "sfbuf recv")
    let port2 = text2.split(separator: ":").last.map { $0.prefix { $0.isNumber } } ?? ""
    let r = try runTool(["send", file, "127.0.0.1:\(port2)", "--nsfbufs", "16"], timeout: 120)
    #expect(recv2.wait(timeout: 30) == 0)
    #expect(!r.stderr.contains("%") && !r.stderr.contains("\r"), "\(r.stderr)")
  }

  @Test("progress on a terminal: bench pages counts cells; nothing with --json")
  func benchProgress() throws {
    let (tty, master) = try Self.openTerminal()
    defer { close(master) }
    let args = [
      try toolPath(), "bench", "--quick", "--trials", "1", "--workload", "hot", "--nsfbufs", "64",
    ]
    var p = try ToolProcess(args, tty: tty)
    var shown = Self.drain(master, until: p, timeout: 120)
    #expect(p.wait(timeout: 10) == 0)
    #expect(shown.contains("cell 12/12"), "\(shown)")  // 6 peers x 2 thread counts
    // The footer says what the peers whose names do not say it are, when they are shown.
    #expect(shown.contains("refs: the direct map's read") && !shown.contains("ahead: "))
    p = try ToolProcess(args + ["--json"], tty: tty)
    shown = Self.drain(master, until: p, timeout: 120)
    #expect(p.wait(timeout: 10) == 0)
    #expect(!shown.contains("cell "), "\(shown)")
  }

  /// Every key of `json`, recursively.
  static func keys(_ json: Any) -> [String] {
    if let o = json as? [String: Any] { return o.keys + o.values.flatMap(keys) }
    if let a = json as? [Any] { return a.flatMap(keys) }
    return []
  }

  @Test(
    "--json everywhere: a schema, camelCase keys only, null and never nan",
    arguments: [
      ["sim", "--operations", "300", "--json"],
      ["bench", "--quick", "--trials", "1", "--workload", "hot", "--nsfbufs", "64", "--json"],
      ["bench", "sendfile", "--size", "4M", "--repetitions", "1", "--json"],
      ["run", "--seconds", "0.2", "--json"],
      ["run", "--seconds", "0.2", "--direct", "--json"],
    ])
  func json(_ args: [String]) throws {
    let r = try runTool(args, timeout: 120)
    #expect(r.status == 0, "\(r.stderr)")
    #expect(!r.stdout.lowercased().contains("nan") && !r.stdout.contains("inf"), "\(r.stdout)")
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    let schema = (json as? [String: Any])?["schema"] as? String
    #expect(schema?.hasPrefix("sfbuf-") == true, "a schema field: \(schema ?? "none")")
    for key in Set(Self.keys(json)) where key.wholeMatch(of: /[a-z][a-zA-Z0-9]*/) == nil {
      Issue.record("\(args): a key that is not camelCase: \(key)")
    }
  }
}
