import Glibc
import SFBufTestSupport
import Testing

/// Every valid setting ends: the main job with windows at or below threads x hold (which
/// used to leave every thread asleep holding slots), and the other subcommands at their
/// smallest windows. Each run is bounded; one that does not end fails naming its command.
@Suite("sfbuf: no valid setting hangs")
struct NoHangTests {
  @Test(
    "the main job finishes with 0 wrong mappings for windows 1, 2, 8, 16, 32",
    arguments: [1, 2, 8, 16, 32])
  func mainJob(window: Int) throws {
    // The default threads (4) and hold (8): 32 mappings wanted at once.
    let r = try runTool([], environment: ["SFBUF_NSFBUFS": "\(window)"], timeout: 120)
    #expect(r.status == 0, "SFBUF_NSFBUFS=\(window) sfbuf: status \(r.status), \(r.stderr)")
    #expect(r.stdout.contains(", 0 wrong mappings"), "\(r.stdout)")
    #expect(r.stdout.contains("0/"), "the counters are printed: \(r.stdout)")
    #expect(r.stdout.contains("/\(window) sfbufs in use"), "\(r.stdout)")
  }

  @Test(
    "odd but valid settings of every subcommand end",
    arguments: [
      ["run", "--seconds", "0.5", "--nsfbufs", "1", "--threads", "16", "--hold", "1"],
      ["run", "--seconds", "0.5", "--nsfbufs", "1", "--policy", "batched"],
      [
        "run", "--seconds", "0.5", "--nsfbufs", "2", "--policy", "batched", "--batch", "1",
        "--threads", "8", "--hold", "32",
      ],
      [
        "run", "--seconds", "0.5", "--nsfbufs", "1", "--threads", "1", "--hold", "1", "--pages",
        "1",
      ],
      ["sim", "--slots", "1", "--operations", "500"],
      ["sim", "--slots", "1", "--cpus", "64", "--operations", "500", "--json"],
      ["bench", "sendfile", "--size", "4M", "--repetitions", "1", "--nsfbufs", "1", "--json"],
      [
        "bench", "pages", "--quick", "--trials", "1", "--nsfbufs", "64", "--batch", "1", "--run",
        "2", "--workload", "seq", "--json",
      ],
    ])
  func subcommands(_ args: [String]) throws {
    let r = try runTool(args, timeout: 120)
    #expect(r.status == 0, "sfbuf \(args.joined(separator: " ")): status \(r.status), \(r.stderr)")
    if args[0] == "run" { #expect(r.stdout.contains(", 0 wrong mappings"), "\(r.stdout)") }
  }

  @Test("send through a window of one slot, several chains")
  func sendOneSlot() throws {
    let file = makeTempPath("sfbuf-send-src")
    let out = makeTempPath("sfbuf-send-dst")
    let log = makeTempPath("sfbuf-recv-log")
    defer {
      for p in [file, out, log] { unlink(p) }
    }
    let bytes = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
    writeFile(file, bytes)
    let tool = try toolPath()
    let recv = try ToolProcess(
      [tool, "recv", "0", "--out", out, "--timeout", "60"], stderr: log)
    let text = waitForText(log, "listening on 127.0.0.1:", from: "sfbuf recv")
    let port = text.split(separator: ":").last.map { $0.prefix { $0.isNumber } } ?? ""
    let r = try runTool(["send", file, "127.0.0.1:\(port)", "--nsfbufs", "1"], timeout: 60)
    #expect(r.status == 0, "sfbuf send --nsfbufs 1: \(r.stderr)")
    #expect(recv.wait(timeout: 30, "for the end of the connection") == 0)
    #expect(readBytes(out) == bytes, "what sfbuf recv wrote is what was sent")
  }
}

/// Writes `bytes` to a new file at `path`.
func writeFile(_ path: String, _ bytes: [UInt8]) {
  let f = fopen(path, "w")!
  _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
  fclose(f)
}
