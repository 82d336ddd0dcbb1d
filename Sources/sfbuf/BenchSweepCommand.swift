import ArgumentParser
import Foundation
import SFBufCharts
import SFBufHost

/// `sfbuf bench sweep`: when does the window pay? ns per page against the window's hit rate,
/// for uniform random pages over working sets from the window's size to 64 times it; the
/// direct map, `pread`, and the window with both policies, with 1 and 2 threads; a table (or
/// JSON) and an SVG chart with the crossovers of the window's lines and `pread`'s marked.
struct BenchSweepCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sweep",
    abstract: "ns per page against hit rate, working set 1x to 64x the window; writes an SVG.",
    discussion: """
      Working sets W = nsfbufs x 1, 1.0625, 1.125, 1.25, 1.5, 2, 4, 8, 16, 32, 64 pages of one \
      wired object (between 1 and 2 the hit rate falls from 100 % to 50 %); each \
      access reads one word of a uniformly random page of W (the `uniform` workload of \
      `sfbuf bench pages`, with its measurement). Peers: direct (the direct map), pread, \
      faithful and batched (the window, each policy). Before each window trial an untimed \
      pass of 4 x nsfbufs accesses (2 x with --quick) fills the window, so the hit rate is \
      the steady one. Each trial round runs every point once, interleaved.

      x: each point's measured hit rate (direct and pread are drawn at the mean of the two \
      policies' rates for the same W). Crossover: where a window line crosses pread's, both \
      taken straight between points on the log axis, interpolated; null when they do not \
      cross in the measured range.

      --json prints one object (keys sorted): {"schema": "sfbuf-bench-sweep/1", "config": \
      {...}, "points": [{"factor", "workingSetPages", "threads", "method", "hitRate" (null \
      for direct and pread), "nsPerPage": {"median", "min", "max"}, "vsPread", "vsDirect"}], \
      "crossovers": [{"threads", "method", "hitRate" (null: no crossing), "nsPerPage", \
      "windowFasterAtTop", "windowFasterAtBottom"}]}. --json-file writes the same to a file.

      The chart goes to --svg PATH; without it, to sweep.svg beside the --json-file, or in \
      the current directory. --no-svg writes none.
      """
  )

  @Flag(help: "Fewer and shorter trials (a few seconds).")
  var quick = false
  @Flag(help: "Print JSON instead of the table.")
  var json = false
  @Option(
    name: .customLong("json-file"),
    help: ArgumentHelp("Also write the JSON to this file.", valueName: "file"))
  var jsonFile: String?
  @Option(
    help: ArgumentHelp(
      "Where to write the SVG chart (default: sweep.svg beside --json-file, or here).",
      valueName: "file"))
  var svg: String?
  @Flag(name: .customLong("no-svg"), help: "Write no chart.")
  var noSVG = false
  @Option(help: ArgumentHelp("Window slots.", valueName: "slots"))
  var nsfbufs = 512
  @Option(help: ArgumentHelp("Trials per point (default 5, --quick 2).", valueName: "count"))
  var trials: Int?
  @Option(
    help: ArgumentHelp("Batch of the batched policy (default nsfbufs / 4).", valueName: "slots"))
  var batch: Int?
  @Option(
    name: .customLong("threads"),
    help: ArgumentHelp("Only this thread count (1 or 2; default both).", valueName: "count"))
  var threadCounts: [Int] = []

  /// Working sets in windows. Between 1 and 2 the hit rate falls from about 100 % to 50 %,
  /// where the window meets pread: the points in between place the crossover.
  static let factors = [1, 1.0625, 1.125, 1.25, 1.5, 2, 4, 8, 16, 32, 64]
  static let methods: [BenchPeer] = [.direct, .pread, .faithful, .batched]

  func validate() throws {
    guard (64...min(2048, SFBufPool.maxSlots / 16)).contains(nsfbufs) else {
      throw ValidationError("--nsfbufs must be in 64...\(min(2048, SFBufPool.maxSlots / 16))")
    }
    if let trials, !(1...100).contains(trials) {
      throw ValidationError("--trials must be in 1...100")
    }
    if let batch, !(1...nsfbufs).contains(batch) {
      throw ValidationError("--batch must be in 1...nsfbufs")
    }
    if let t = threadCounts.first(where: { !(1...2).contains($0) }) {
      throw ValidationError("--threads must be 1 or 2, not \(t)")
    }
    if noSVG && svg != nil { throw ValidationError("--svg and --no-svg exclude each other") }
  }

  /// Where the chart goes, or nil for none.
  var svgPath: String? {
    if noSVG { return nil }
    if let svg { return svg }
    guard let jsonFile else { return "sweep.svg" }
    let dir = (jsonFile as NSString).deletingLastPathComponent
    return dir.isEmpty ? "sweep.svg" : dir + "/sweep.svg"
  }

  func run() throws {
    let threads = threadCounts.isEmpty ? [1, 2] : Array(Set(threadCounts)).sorted()
    let bench = try PageBench(
      nsfbufs: nsfbufs, batch: batch ?? nsfbufs / 4, quick: quick,
      trials: trials ?? (quick ? 2 : 5), workloads: [.uniform], peers: Self.methods,
      threads: threads, objectPages: 64 * nsfbufs)
    let sweep = Sweep(bench: bench, factors: Self.factors, threads: threads)
    sweep.measure()
    let report = sweep.report()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = try encoder.encode(report)
    if let jsonFile {
      do { try data.write(to: URL(fileURLWithPath: jsonFile)) } catch {
        throw ValidationError("cannot write --json-file \(jsonFile): \(error.localizedDescription)")
      }
    }
    if json {
      print(String(decoding: data, as: UTF8.self))
    } else {
      sweep.printTable(report)
    }
    if let path = svgPath {
      try writeChartFile(sweepChart(report).render(), to: path)
      if json {
        FileHandle.standardError.write(Data("chart: \(path)\n".utf8))
      } else {
        print("chart: \(path)")
      }
    }
  }
}

/// The sweep's cells and their trials, on one `PageBench` whose uniform working set changes.
final class Sweep {
  let bench: PageBench
  let factors: [Double]
  let threads: [Int]
  /// Per factor index, the cells of every thread count and method.
  var cells: [[BenchCell]]

  init(bench: PageBench, factors: [Double], threads: [Int]) {
    self.bench = bench
    self.factors = factors
    self.threads = threads
    cells = factors.map { _ in
      threads.flatMap { t in
        BenchSweepCommand.methods.map { BenchCell(workload: .uniform, threads: t, peer: $0) }
      }
    }
  }

  /// Warm-up, then `bench.trialCount` rounds, each running every cell once.
  func measure() {
    let fill = (bench.quick ? 2 : 4) * bench.nsfbufs
    for (f, factor) in factors.enumerated() {
      bench.uniformPages = pages(factor)
      for c in cells[f] { _ = bench.trial(.uniform, threads: c.threads, peer: c.peer, limit: 2000) }
    }
    for _ in 0..<bench.trialCount {
      for (f, factor) in factors.enumerated() {
        bench.uniformPages = pages(factor)
        for i in cells[f].indices {
          let c = cells[f][i]
          if c.isWindow { _ = bench.trial(.uniform, threads: c.threads, peer: c.peer, limit: fill) }
          cells[f][i].trials.append(bench.trial(.uniform, threads: c.threads, peer: c.peer))
        }
      }
    }
  }

  /// The working set of `factor` windows, in pages.
  func pages(_ factor: Double) -> Int { Int((factor * Double(bench.nsfbufs)).rounded()) }

  func report() -> SweepReport {
    var points: [SweepReport.Point] = []
    for (f, factor) in factors.enumerated() {
      for c in cells[f] {
        let v = c.nsPerPage
        let same = cells[f].filter { $0.threads == c.threads }
        let direct = same.first { $0.peer == .direct }!.median
        let pread = same.first { $0.peer == .pread }!.median
        points.append(
          SweepReport.Point(
            factor: factor, workingSetPages: pages(factor), threads: c.threads,
            method: c.peer.rawValue, hitRate: c.hitRate,
            nsPerPage: .init(median: finite(c.median), min: v.first, max: v.last),
            vsPread: finite(c.median / pread), vsDirect: finite(c.median / direct)))
      }
    }
    var crossovers: [SweepReport.Crossover] = []
    for t in threads {
      let lines = sweepLines(points, threads: t)
      let pread = lines.first { $0.name == "pread" }!.points
      for m in ["faithful", "batched"] {
        let w = lines.first { $0.name == "window " + m }!.points
        let top = w.max { $0.x < $1.x }
        let bottom = w.min { $0.x < $1.x }
        let x = crossings(w, pread).max { $0.x < $1.x }
        func faster(_ p: ChartPoint?) -> Bool? {
          guard let p else { return nil }
          let other = pread.min { abs($0.x - p.x) < abs($1.x - p.x) }
          return other.map { p.y < $0.y }
        }
        crossovers.append(
          .init(
            threads: t, method: m, hitRate: x?.x, nsPerPage: x?.y,
            windowFasterAtTop: faster(top), windowFasterAtBottom: faster(bottom)))
      }
    }
    return SweepReport(
      config: .init(
        nsfbufs: bench.nsfbufs, batch: bench.batch, trials: bench.trialCount, quick: bench.quick,
        cpus: sfbCPUs(), factors: factors, accessesPerThread: bench.accesses(.uniform, threads: 1),
        objectPages: bench.pages),
      points: points, crossovers: crossovers)
  }

  func printTable(_ r: SweepReport) {
    print(
      "sfbuf bench sweep: window of \(bench.nsfbufs) slots, batch \(bench.batch), uniform"
        + " random pages over W = 1x..64x the window, \(bench.trialCount) trials per point,"
        + " \(sfbCPUs()) CPUs")
    var table = Table(
      [
        "thr", "W", "pages", "hit% f", "hit% b", "direct", "pread", "faithful", "batched",
        "f/pread", "b/pread",
      ])
    for t in threads {
      for factor in factors {
        let row = r.points.filter { $0.threads == t && $0.factor == factor }
        func p(_ m: String) -> SweepReport.Point { row.first { $0.method == m }! }
        table.add([
          String(t), chartNumber(factor, digits: 4) + "x", String(pages(factor)),
          fmt(p("faithful").hitRate.map { $0 * 100 }, 1, missing: "n/a"),
          fmt(p("batched").hitRate.map { $0 * 100 }, 1, missing: "n/a"),
          fmt(p("direct").nsPerPage.median, 0, missing: "n/a"),
          fmt(p("pread").nsPerPage.median, 0, missing: "n/a"),
          fmt(p("faithful").nsPerPage.median, 0, missing: "n/a"),
          fmt(p("batched").nsPerPage.median, 0, missing: "n/a"),
          fmt(p("faithful").vsPread, 2, missing: "n/a"),
          fmt(p("batched").vsPread, 2, missing: "n/a"),
        ])
      }
    }
    table.print()
    print("ns per page: median of the trials (per thread with 2 threads).")
    for c in r.crossovers {
      print("\(c.threads) thread\(c.threads == 1 ? "" : "s"), \(c.method): " + crossoverText(c))
    }
  }
}

/// How a crossover reads in the table and on the chart.
func crossoverText(_ c: SweepReport.Crossover) -> String {
  if let h = c.hitRate {
    return c.windowFasterAtTop == false
      ? "pread beats the window above \(fmt(h * 100, 1)) % hits"
      : "the window beats pread above \(fmt(h * 100, 1)) % hits, loses below"
  }
  switch (c.windowFasterAtTop, c.windowFasterAtBottom) {
  case (true, true): return "the window beats pread at every measured hit rate"
  case (false, false): return "pread beats the window at every measured hit rate"
  default: return "no crossing in the measured range"
  }
}

/// The chart's lines for one thread count: window lines at their measured hit rates; direct
/// and pread at the mean of the two policies' rates for the same working set.
func sweepLines(_ points: [SweepReport.Point], threads: Int) -> [ChartSeries] {
  let mine = points.filter { $0.threads == threads }
  var out: [ChartSeries] = []
  for m in ["direct", "pread", "faithful", "batched"] {
    var line: [ChartPoint] = []
    for p in mine where p.method == m {
      let rates = mine.filter { $0.factor == p.factor }.compactMap(\.hitRate)
      let x = p.hitRate ?? (rates.isEmpty ? nil : rates.reduce(0, +) / Double(rates.count))
      if let x, let y = p.nsPerPage.median, y > 0 { line.append(ChartPoint(x: x, y: y)) }
    }
    out.append(ChartSeries(m == "direct" ? "direct map" : m == "pread" ? m : "window " + m, line))
  }
  return out
}

/// The sweep's chart: one panel per thread count.
func sweepChart(_ r: SweepReport) -> SVGChart {
  let threads = Array(Set(r.points.map(\.threads))).sorted()
  let ys = r.points.compactMap(\.nsPerPage.median)
  let y = ChartAxis(
    label: "ns per page (log)", domain: ChartAxis.decades(covering: ys), kind: .log,
    tickLabel: chartNanoseconds)
  let x = ChartAxis(
    label: "hit rate of the window", domain: 0...1, ticks: [0, 0.25, 0.5, 0.75, 1],
    tickLabel: { chartNumber($0 * 100, digits: 0) + " %" })
  var panels: [ChartPanel] = []
  for t in threads {
    let lines = sweepLines(r.points, threads: t)
    let marks = r.crossovers.filter { $0.threads == t }.compactMap { c -> ChartMark? in
      guard let h = c.hitRate, let ns = c.nsPerPage else { return nil }
      return ChartMark(
        at: ChartPoint(x: h, y: ns), label: "\(c.method) = pread at \(fmt(h * 100, 1)) %")
    }
    panels.append(
      ChartPanel(
        title: "\(t) thread\(t == 1 ? "" : "s")" + (t > 1 ? " (ns per page per thread)" : ""),
        x: x, y: y, content: .lines(lines, marks: marks)))
  }
  let c = r.config
  return SVGChart(
    title: "When the window pays: ns per page against hit rate (lower is better)",
    panels: panels,
    caption: [
      chartCommandLine(),
      "window of \(c.nsfbufs) slots; uniform random pages over 1x..64x the window;"
        + " median of \(c.trials) trials; \(c.cpus) CPUs.",
      "Direct map and pread drawn at the window's mean hit rate for the same working set.",
    ] + r.crossovers.map { "\($0.threads) thr, \($0.method): " + crossoverText($0) + "." },
    dashed: ["direct map"])
}

/// What `sfbuf bench sweep --json` prints.
struct SweepReport: Encodable {
  var schema = "sfbuf-bench-sweep/1"
  var config: Config
  var points: [Point]
  var crossovers: [Crossover]

  struct Config: Encodable {
    var nsfbufs, batch, trials: Int
    var quick: Bool
    var cpus: Int
    var factors: [Double]
    var accessesPerThread, objectPages: Int
  }

  struct NsPerPage: Encodable {
    var median, min, max: Double?
    func encode(to encoder: any Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(median, forKey: .median)
      try c.encode(min, forKey: .min)
      try c.encode(max, forKey: .max)
    }
    enum CodingKeys: String, CodingKey { case median, min, max }
  }

  struct Point: Encodable {
    var factor: Double
    var workingSetPages, threads: Int
    var method: String
    var hitRate: Double?
    var nsPerPage: NsPerPage
    var vsPread, vsDirect: Double?
    func encode(to encoder: any Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(factor, forKey: .factor)
      try c.encode(workingSetPages, forKey: .workingSetPages)
      try c.encode(threads, forKey: .threads)
      try c.encode(method, forKey: .method)
      try c.encode(hitRate, forKey: .hitRate)
      try c.encode(nsPerPage, forKey: .nsPerPage)
      try c.encode(vsPread, forKey: .vsPread)
      try c.encode(vsDirect, forKey: .vsDirect)
    }
    enum CodingKeys: String, CodingKey {
      case factor, workingSetPages, threads, method, hitRate, nsPerPage, vsPread, vsDirect
    }
  }

  struct Crossover: Encodable {
    var threads: Int
    var method: String
    var hitRate, nsPerPage: Double?
    var windowFasterAtTop, windowFasterAtBottom: Bool?
    func encode(to encoder: any Encoder) throws {
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(threads, forKey: .threads)
      try c.encode(method, forKey: .method)
      try c.encode(hitRate, forKey: .hitRate)
      try c.encode(nsPerPage, forKey: .nsPerPage)
      try c.encode(windowFasterAtTop, forKey: .windowFasterAtTop)
      try c.encode(windowFasterAtBottom, forKey: .windowFasterAtBottom)
    }
    enum CodingKeys: String, CodingKey {
      case threads, method, hitRate, nsPerPage, windowFasterAtTop, windowFasterAtBottom
    }
  }
}
