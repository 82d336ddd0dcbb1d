import Foundation
import Testing

/// The charts the tool writes, end to end: `sfbuf bench sweep --quick`, `sfbuf bench pages
/// --svg` and `sfbuf sim --svg` run as processes (bounded in time) and their SVG checked.
@Suite("sfbuf charts, end to end")
struct ToolChartTests {
  /// The `sfbuf` executable built next to this test bundle.
  static func tool() throws -> String {
    var dir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    for _ in 0..<6 {
      dir.deleteLastPathComponent()
      let path = dir.appendingPathComponent("sfbuf").path
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    Issue.record("the sfbuf tool is not built next to the tests: run swift build first")
    throw CocoaError(.fileNoSuchFile)
  }

  /// Runs `sfbuf args…` for at most `seconds`; returns its exit status and its output.
  func run(_ args: [String], seconds: Double) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try Self.tool())
    p.arguments = args
    let out = FileManager.default.temporaryDirectory.appendingPathComponent(
      "sfbuf-chart-out-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    let handle = try FileHandle(forWritingTo: out)
    p.standardOutput = handle
    p.standardError = handle
    try p.run()
    let deadline = Date().addingTimeInterval(seconds)
    while p.isRunning && Date() < deadline { usleep(50_000) }
    if p.isRunning {
      p.terminate()
      p.waitUntilExit()
      Issue.record("sfbuf \(args.joined(separator: " ")) did not finish within \(seconds) s")
    }
    p.waitUntilExit()
    try handle.close()
    return (p.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "")
  }

  func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
      "sfbuf-charts-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
  }

  @Test("sfbuf bench sweep --quick writes its JSON and, beside it, a chart of every method")
  func sweep() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let json = dir.appendingPathComponent("sweep.json").path
    let (status, output) = try run(
      ["bench", "sweep", "--quick", "--nsfbufs", "64", "--trials", "1", "--json-file", json],
      seconds: 300)
    #expect(status == 0, "sfbuf bench sweep failed: \(output)")
    #expect(output.contains("chart: \(dir.path)/sweep.svg"), "\(output)")
    let svg = try String(contentsOfFile: dir.path + "/sweep.svg", encoding: .utf8)
    let problems = chartProblems(
      svg, axisLabels: ["hit rate of the window", "ns per page (log)"],
      series: ["direct map", "pread", "window faithful", "window batched"], perSeries: 2)
    #expect(problems == [])
    #expect(svg.utf8.count < 12_000, "the chart should stay small: \(svg.utf8.count) bytes")
    let object = try JSONSerialization.jsonObject(
      with: Data(contentsOf: URL(fileURLWithPath: json)))
    let top = try #require(object as? [String: Any])
    #expect(top["schema"] as? String == "sfbuf-bench-sweep/1")
    let points = try #require(top["points"] as? [[String: Any]])
    #expect(points.count == 11 * 2 * 4, "11 working sets x 2 thread counts x 4 methods")
    // Direct and pread have no hit rate: null, not absent.
    #expect(points.allSatisfy { $0.keys.contains("hitRate") })
    let crossovers = try #require(top["crossovers"] as? [[String: Any]])
    #expect(crossovers.count == 4 && crossovers.allSatisfy { $0.keys.contains("hitRate") })
  }

  @Test("sfbuf bench pages --svg draws one bar per peer in each workload")
  func pages() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("pages.svg").path
    let (status, output) = try run(
      [
        "bench", "pages", "--quick", "--nsfbufs", "64", "--trials", "1", "--workload", "hot",
        "--workload", "uniform", "--svg", path,
      ], seconds: 300)
    #expect(status == 0, "sfbuf bench pages failed: \(output)")
    let svg = try String(contentsOfFile: path, encoding: .utf8)
    #expect(
      chartProblems(
        svg, axisLabels: ["workload, threads", "ns per page (log)"],
        series: ["direct", "pread", "mmap", "faithful", "batched"], perSeries: 4) == [])
  }

  @Test("sfbuf sim --svg draws both policies, shared and CPU-private, against the CPU count")
  func sim() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("sim.svg").path
    let (status, output) = try run(
      ["sim", "--workload", "copy", "--operations", "2000", "--svg", path], seconds: 120)
    #expect(status == 0, "sfbuf sim failed: \(output)")
    let svg = try String(contentsOfFile: path, encoding: .utf8)
    #expect(
      chartProblems(
        svg, axisLabels: ["simulated CPUs (log)", "per allocation"],
        series: [
          "caching, shared", "caching, CPU-private", "unmap-on-free, shared",
          "unmap-on-free, CPU-private",
        ], perSeries: 2) == [])
  }

  @Test("an unwritable --svg path and bad sweep settings are refused with a clear message")
  func unwritable() throws {
    let (status, output) = try run(
      ["sim", "--operations", "100", "--svg", "/nonexistent-dir/x.svg"], seconds: 60)
    #expect(status != 0)
    #expect(output.contains("/nonexistent-dir/x.svg"), "\(output)")
    let (s2, o2) = try run(["bench", "sweep", "--nsfbufs", "8"], seconds: 60)
    #expect(s2 != 0 && o2.contains("--nsfbufs must be in 64..."), "\(o2)")
    let (s3, o3) = try run(["bench", "sweep", "--svg", "a.svg", "--no-svg"], seconds: 60)
    #expect(s3 != 0 && o3.contains("--svg and --no-svg"), "\(o3)")
  }
}
