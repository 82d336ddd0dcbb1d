import Foundation
import Glibc
import SFBufTestSupport
import Testing

@testable import SFSendfile

/// The tool: `sfbuf send` and `sfbuf recv` run as processes, against each other and socat,
/// and their errors for a missing file, a refused connection and bad arguments.
@Suite("sfbuf send and sfbuf recv")
struct CLITests {
  /// The `sfbuf` executable built next to this test bundle.
  static func tool() throws -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    let me = String(decoding: buf[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var dir = me
    while let slash = dir.lastIndex(of: "/"), !dir.hasSuffix("/debug"), !dir.hasSuffix("/release") {
      dir = String(dir[..<slash])
      if access(dir + "/sfbuf", X_OK) == 0 { break }
    }
    let path = dir + "/sfbuf"
    guard access(path, X_OK) == 0 else {
      Issue.record("the sfbuf tool is not built next to the tests (\(path)): run swift build first")
      throw PeerError.missing("sfbuf")
    }
    return path
  }

  /// Runs `sfbuf args…`; returns its exit status and standard error.
  func run(_ args: [String]) throws -> (Int32, String) {
    let err = makeTempPath("sfsendfile-stderr")
    defer { unlink(err) }
    let p = try Peer([try Self.tool()] + args, stderr: err)
    let status = p.wait(timeout: 30)
    return (status, String(decoding: readAll(err), as: UTF8.self))
  }

  /// Starts `sfbuf recv 0 --out out` and waits until it says which port it listens on.
  func startRecv(out: String, stderr: String) throws -> (Peer, Int) {
    let p = try Peer(
      [try Self.tool(), "recv", "0", "--out", out, "--timeout", "20"], stderr: stderr)
    var port = 0
    _ = waitUntil {
      let text = String(decoding: readAll(stderr), as: UTF8.self)
      guard let r = text.firstRange(of: "listening on 127.0.0.1:") else { return false }
      port = Int(text[r.upperBound...].prefix { $0.isNumber }) ?? 0
      return port > 0
    }
    #expect(port > 0, "sfbuf recv did not say where it listens")
    return (p, port)
  }

  @Test("send to recv: a range of the file, through a small window and the direct map")
  func sendToRecv() throws {
    let f = TempFile(size: 300_000)
    for (extra, offset, count) in [
      (["--nsfbufs", "8"], 3, 100_000), (["--direct", "--zerocopy"], 0, 0),
      (["--nsfbufs", "8", "--policy", "batched", "--batch", "2"], 4097, 200_000),
    ] {
      let out = makeTempPath("sfsendfile-cli-out")
      let log = makeTempPath("sfsendfile-cli-log")
      defer {
        unlink(out)
        unlink(log)
      }
      let (recv, port) = try startRecv(out: out, stderr: log)
      let (status, err) = try run(
        ["send", f.path, "127.0.0.1:\(port)", "--offset", "\(offset)", "--count", "\(count)"]
          + extra)
      #expect(status == 0, "sfbuf send failed: \(err)")
      #expect(err.contains("sent \(count == 0 ? f.bytes.count : count) bytes"))
      #expect(recv.wait() == 0)
      expectSame(readAll(out), expected(f, offset: offset, count: count))
    }
  }

  @Test("socat sends to sfbuf recv")
  func socatToRecv() throws {
    let f = TempFile(size: 1 << 20 | 77)
    let out = makeTempPath("sfsendfile-cli-out")
    let log = makeTempPath("sfsendfile-cli-log")
    defer {
      unlink(out)
      unlink(log)
    }
    let (recv, port) = try startRecv(out: out, stderr: log)
    let socat = try Peer(["socat", "-u", "OPEN:\(f.path),rdonly", "TCP:127.0.0.1:\(port)"])
    #expect(socat.wait() == 0)
    #expect(recv.wait() == 0)
    expectSame(readAll(out), f.bytes)
    #expect(
      String(decoding: readAll(log), as: UTF8.self).contains("received \(f.bytes.count) bytes"))
  }

  @Test("a missing file, a refused connection, bad arguments: clear errors, no crash")
  func errors() throws {
    let f = TempFile(size: 10)
    var (status, err) = try run(["send", "/nonexistent/file", "127.0.0.1:9"])
    #expect(status == 1 && err.contains("cannot open /nonexistent/file: No such file or directory"))
    // A port nobody listens on: take a free one and close it.
    let port = try Listener().port
    (status, err) = try run(["send", f.path, "127.0.0.1:\(port)"])
    #expect(status == 1 && err.contains("Connection refused"), "\(err)")
    for (args, message) in [
      (["send", f.path, "localhost"], "is not HOST:PORT"),
      (["send", f.path, "127.0.0.1:70000"], "port in 1...65535"),
      (["send", f.path, "127.0.0.1:9", "--offset=-1"], "--offset must not be negative"),
      (["send", f.path, "127.0.0.1:9", "--nsfbufs", "0"], "nsfbufs"),
      (["send", f.path, "127.0.0.1:9", "--nsfbufs", "8", "--direct"], "exclusive"),
      (
        ["send", f.path, "127.0.0.1:9", "--direct", "--policy", "batched"], "not to the direct map"
      ),
      (["send", f.path, "127.0.0.1:9", "--policy", "lazy"], "'lazy' is invalid for '--policy"),
      (["send", f.path, "127.0.0.1:9", "--batch", "4"], "--batch applies to --policy batched"),
      (["send", f.path, "127.0.0.1:9", "--policy", "batched", "--batch", "0"], "at least 1"),
      (["recv", "70000"], "PORT must be in 0...65535"),
    ] {
      (status, err) = try run(args)
      #expect(status != 0 && status < 128, "\(args): status \(status)")
      #expect(err.contains(message), "\(args): \(err)")
    }
  }

  @Test("bench sendfile --json: every method, the documented keys")
  func benchJSON() throws {
    let out = makeTempPath("sfsendfile-bench")
    defer { unlink(out) }
    let p = try Peer(
      [try Self.tool(), "bench", "sendfile", "--size", "8M", "--repetitions", "1", "--json"],
      stdout: out)
    #expect(p.wait(timeout: 60) == 0)
    let json = String(decoding: readAll(out), as: UTF8.self)
    for key in [
      "schema", "sizeBytes", "repetitions", "nsfbufs", "pinned", "chunkBytes", "methods",
      "gbpsMedian", "gbpsMin", "gbpsMax", "gbpsRuns", "ratios", "sfbufWindowVsMmapWrite",
      "sfbufDirectVsMmapWrite", "sfbufWindowVsPreadWrite", "sfbufDirectVsPreadWrite",
      "sfbufWindowVsKernelSendfile", "sfbufDirectVsKernelSendfile", "window", "mapCalls",
    ] {
      #expect(json.contains("\"\(key)\":"), "missing key \(key)")
    }
    for method in ["sfbuf_window", "sfbuf_direct", "kernel_sendfile", "pread_write", "mmap_write"] {
      #expect(json.contains("\"name\":\"\(method)\""), "missing method \(method)")
    }
    #expect(json.hasPrefix("{") && json.hasSuffix("}\n"))
  }

  @Test("bench pages --json: every cell, the documented keys")
  func benchPagesJSON() throws {
    let out = makeTempPath("sfbuf-bench-pages")
    defer { unlink(out) }
    let p = try Peer(
      [
        try Self.tool(), "bench", "--quick", "--json", "--trials", "1", "--workload", "hot",
        "--workload", "uniform", "--nsfbufs", "64",
      ], stdout: out)
    #expect(p.wait(timeout: 60) == 0)
    let json = String(decoding: readAll(out), as: UTF8.self)
    #expect(json.contains("\"schema\":\"sfbuf-bench-pages/2\""))
    for key in [
      "config", "nsfbufs", "batch", "runPages", "objectPages", "trials", "quick", "cpus",
      "tlbCounter", "cells", "workload", "threads", "peer", "pages", "nsPerPage", "median", "min",
      "max", "hitRate", "mapCallsPerPage", "shootdownsPerPage", "shootdownsPerMiss",
      "allocsPerAccess", "vsDirect", "vsPread",
    ] {
      #expect(json.contains("\"\(key)\":"), "missing key \(key)")
    }
    // Each peer where it measures something: the reference-count floor on hot hits only,
    // map-ahead and the C loop on the scan only.
    let root = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    let cells = root?["cells"] as? [[String: Any]] ?? []
    let places = Set(cells.map { "\($0["peer"] ?? "?") \($0["workload"] ?? "?")" })
    #expect(places.contains("refs hot") && places.contains("batched uniform"), "\(places)")
    for absent in ["refs uniform", "ahead hot", "c hot", "c uniform"] {
      #expect(!places.contains(absent), "a cell \(absent)")
    }
  }
}
