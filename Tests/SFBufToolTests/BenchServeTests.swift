import Foundation
import Glibc
import SFBufTestSupport
import Testing

/// `sfbuf bench serve` against real nginx and wrk from the distribution (scripts/test.sh
/// installs both). Hummingbird is left out here: building it takes minutes; the README's
/// figures come from the full run.
@Suite("bench serve", .serialized)
struct BenchServeTests {
  static func installed(_ tool: String) -> Bool {
    ["/usr/bin/", "/usr/sbin/", "/usr/local/bin/"].contains { access($0 + tool, X_OK) == 0 }
  }

  @Test("a quick run: every server answers every cell, no errors, ratios against nginx")
  func quickRun() throws {
    try #require(Self.installed("wrk") && Self.installed("nginx"), "wrk and nginx installed")
    let dir = makeTempPath("sfbuf-bench-serve")
    unlink(dir)
    mkdir(dir, 0o755)
    defer { rmdir(dir) }
    let r = try runTool(
      ["bench", "serve", "--quick", "--json", "--without", "hummingbird", "--directory", dir],
      timeout: 180)
    #expect(r.status == 0, "\(r.stderr)")
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    #expect(json?["schema"] as? String == "sfbuf-bench-serve/1")
    #expect(json?["servers"] as? [String] == ["sfbuf_window", "sfbuf_direct", "nginx"])
    for key in Set(CommandLineTests.keys(json as Any))
    where key.wholeMatch(of: /[a-z][a-zA-Z0-9]*/) == nil {
      Issue.record("a key that is not camelCase: \(key)")
    }
    let cells = json?["cells"] as? [[String: Any]] ?? []
    #expect(cells.map { $0["bytes"] as? Int } == [4096, 65536, 256 << 20])
    for cell in cells {
      let results = cell["results"] as? [[String: Any]] ?? []
      #expect(results.count == 3)
      for result in results {
        let median = result["median"] as? Double ?? 0
        #expect(median > 0, "\(cell["file"] ?? "?") \(result["server"] ?? "?"): \(median)")
        #expect(result["errors"] as? Int == 0, "\(result)")
      }
      let ratios = cell["ratios"] as? [String: Any] ?? [:]
      #expect((ratios["windowVsNginx"] as? Double ?? 0) > 0)
      #expect(ratios["windowVsHummingbird"] is NSNull, "no Hummingbird, no ratio: \(ratios)")
    }
    let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]
    #expect(left.isEmpty, "the served files and logs are removed: \(left)")
  }

  @Test("Ctrl-C in the middle: the servers stop and the files go")
  func interrupted() throws {
    try #require(Self.installed("wrk") && Self.installed("nginx"), "wrk and nginx installed")
    let dir = makeTempPath("sfbuf-bench-serve-int")
    unlink(dir)
    mkdir(dir, 0o755)
    defer { rmdir(dir) }
    let p = try ToolProcess([
      try toolPath(), "bench", "serve", "--seconds", "30", "--without", "hummingbird",
      "--directory", dir,
    ])
    var children: [pid_t] = []
    let loaded = waitUntil("wrk running against the servers", seconds: 60) {
      children = CommandLineTests.children(of: p.pid)
      // Three servers and wrk.
      return children.count >= 4
    }
    guard loaded else { return }
    let nginxWorkers = children.flatMap { CommandLineTests.children(of: $0) }
    p.signal(SIGINT)
    #expect(p.wait(timeout: 30, "to end after SIGINT") == 128 + SIGINT)
    for pid in children + nginxWorkers {
      #expect(waitUntil("pid \(pid) to end", seconds: 10) { CommandLineTests.isGone(pid) })
    }
    let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]
    #expect(left.isEmpty, "the served files and logs are removed: \(left)")
    for name in left { unlink(dir + "/" + name) }
  }

  @Test("wrong settings are refused with a message that names them")
  func refused() throws {
    for (args, status, message) in [
      (["--without", "apache"], 64, "unknown server 'apache'"),
      (
        [
          "--without", "sfbuf_window", "--without", "sfbuf_direct", "--without", "nginx",
          "--without", "hummingbird",
        ], 64, "leaves no server"
      ),
      (["--connections", "1"], 64, "--connections must be from --threads"),
      (["--seconds", "0"], 64, "--seconds must be"),
      (["--hummingbird", "/nonexistent/hb-serve", "--quick"], 1, "no such program"),
    ] {
      let r = try runTool(["bench", "serve"] + args, timeout: 30)
      #expect(r.status == status, "\(args): status \(r.status) \(r.stderr)")
      #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
    }
  }
}
