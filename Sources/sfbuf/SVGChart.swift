import Glibc
import SFBufCharts
import SFBufCore
import SFBufSim

// The tool's charts: what `sfbuf bench sweep`, `sfbuf bench pages --svg` and
// `sfbuf sim --svg` draw, built from the rows those commands already computed.

/// The command line that produced a chart, for its caption.
func chartCommandLine() -> String {
  "sfbuf " + CommandLine.arguments.dropFirst().joined(separator: " ")
}

/// Writes `text` to `path` (created or truncated), or throws a message naming the path.
func writeChartFile(_ text: String, to path: String) throws {
  guard let f = fopen(path, "w") else {
    throw ChartFileError(path: path, reason: String(cString: strerror(errno)))
  }
  let bytes = Array(text.utf8)
  let written = fwrite(bytes, 1, bytes.count, f)
  let closed = fclose(f)
  guard written == bytes.count, closed == 0 else {
    throw ChartFileError(path: path, reason: "short write")
  }
}

/// A chart that could not be written.
struct ChartFileError: Error, CustomStringConvertible {
  var path: String
  var reason: String
  var description: String { "cannot write the chart to \(path): \(reason)" }
}

/// `sfbuf bench pages --svg`: one bar per peer in each workload and thread count, ns per
/// page (median, whisker from min to max) on a log axis.
func writePagesChart(_ bench: PageBench, _ cells: [BenchCell], to path: String) throws {
  var groups: [String] = []
  var values: [[ChartBar?]] = []
  let peers = bench.peers.map(\.rawValue)
  for w in bench.workloads {
    for t in bench.threadCounts {
      groups.append("\(w.rawValue), \(t) thr")
      values.append(
        bench.peers.map { p in
          guard let c = cells.first(where: { $0.workload == w && $0.threads == t && $0.peer == p }),
            let lo = c.nsPerPage.first, let hi = c.nsPerPage.last, c.median.isFinite
          else { return nil }
          return ChartBar(c.median, range: lo...hi)
        })
    }
  }
  let all = values.flatMap { $0.compactMap { $0?.range } }.flatMap {
    [$0.lowerBound, $0.upperBound]
  }
  let chart = SVGChart(
    title: "sfbuf bench pages: ns per page by workload (log scale, lower is better)",
    panels: [
      ChartPanel(
        title: "window of \(bench.nsfbufs) slots, \(sfbCPUs()) CPUs",
        x: ChartAxis(label: "workload, threads", domain: 0...1),
        y: ChartAxis(
          label: "ns per page (log)", domain: ChartAxis.decades(covering: all), kind: .log,
          tickLabel: chartNanoseconds),
        content: .bars(groups: groups, series: peers, values: values),
        width: Double(max(groups.count, 1) * (peers.count * 14 + 16)), height: 240)
    ],
    caption: [
      chartCommandLine(),
      "bar: median of \(bench.trialCount) trials, whisker: min to max; 2 threads: per thread.",
    ])
  try writeChartFile(chart.render(), to: path)
}

/// `sfbuf sim --svg`: shootdowns (IPIs sent) and CPUs interrupted per allocation against the
/// CPU count, for each policy, shared and `SFB_CPUPRIVATE`. Runs the evaluation again for
/// 1, 2, 4 … 64 CPUs (and `config.cpus`, whose `rows` it reuses); the workload charted is the
/// first of `workloads` with a private variant (else the first).
func writeSimChart(
  _ rows: [SimWorkloadResult], config: SimWorkloadConfig, workloads: [SimWorkload],
  to path: String
) throws {
  guard let w = workloads.first(where: \.hasPrivateVariant) ?? workloads.first else { return }
  let counts = Set([1, 2, 4, 8, 16, 32, 64, config.cpus]).sorted()
  var all: [SimWorkloadResult] = rows.filter { $0.workload == w }
  for n in counts where n != config.cpus {
    var c = config
    c.cpus = n
    all += SimWorkload.evaluation([w], config: c)
  }
  func name(_ r: SimWorkloadResult) -> String {
    r.policy.rawValue + (r.cpuPrivate ? ", CPU-private" : ", shared")
  }
  var names: [String] = []
  for r in all where !names.contains(name(r)) { names.append(name(r)) }
  func panel(_ title: String, _ value: (SimWorkloadResult) -> Double) -> ChartPanel {
    let series = names.map { n in
      ChartSeries(
        n,
        all.filter { name($0) == n }.map { ChartPoint(x: Double($0.config.cpus), y: value($0)) })
    }
    let top = series.flatMap { $0.points.map(\.y) }.max() ?? 1
    return ChartPanel(
      title: title,
      x: ChartAxis(
        label: "simulated CPUs (log)", domain: 1...64, kind: .log,
        ticks: [1, 2, 4, 8, 16, 32, 64]),
      y: ChartAxis(label: "per allocation", domain: 0...niceCeiling(top)),
      content: .lines(series, marks: []), width: 280, height: 200)
  }
  let chart = SVGChart(
    title: "sfbuf sim, \(w.rawValue): TLB shootdown IPIs per allocation against CPU count",
    panels: [
      panel("shootdowns sent per allocation") { $0.ipisPerAllocation },
      panel("CPUs interrupted per allocation") { $0.cpusInterruptedPerAllocation },
    ],
    caption: [
      chartCommandLine(),
      "\(config.slots) slots, \(config.tlbEntries)-entry TLBs, \(config.operations)"
        + " allocations per point, seed \(config.seed); deterministic.",
    ],
    dashed: Set(names.filter { $0.hasSuffix("CPU-private") }))
  try writeChartFile(chart.render(), to: path)
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `x` (1 for x ≤ 0).
func niceCeiling(_ x: Double) -> Double {
  guard x > 0, x.isFinite else { return 1 }
  var p = 1.0
  while p > x { p /= 10 }
  while p * 10 < x { p *= 10 }
  for m in [1.0, 2, 5, 10] where p * m >= x { return p * m }
  return p * 10
}
