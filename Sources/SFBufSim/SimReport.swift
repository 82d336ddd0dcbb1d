// The evaluation as text: a table for people, JSON for scripts.

/// Renders evaluation rows (``SimWorkloadResult``) as a table or as JSON.
public enum SimReport {
  /// The JSON keys of one row, in the order printed. Stable: scripts and the README rely
  /// on them.
  ///
  /// - `workload` (string: `copy`, `stream`, `mix`)
  /// - `policy` (string: `caching`, `unmap-on-free`)
  /// - `cpuPrivate` (boolean: whether the pinned copies used `SFB_CPUPRIVATE`)
  /// - `cpus`, `slots`, `tlbEntries`, `operations`, `seed` (integers: the configuration)
  /// - `allocations`, `hits` (integers), `hitRate` (number, 0 to 1)
  /// - `pageTableWrites` (integer), `pageTableWritesPerAllocation` (number)
  /// - `ipis` (integer: shootdowns sent), `ipisPerAllocation` (number)
  /// - `cpusInterrupted` (integer), `cpusInterruptedPerAllocation` (number)
  /// - `localInvalidations` (integer), `localInvalidationsPerAllocation` (number)
  /// - `sleeps` (integer: `sf_allocwait`), `accesses` (integer: checked loads and stores),
  ///   `staleAccesses` (integer: the checker's findings, 0 when the allocator is right)
  public static let jsonKeys = [
    "workload", "policy", "cpuPrivate", "cpus", "slots", "tlbEntries", "operations", "seed",
    "allocations", "hits", "hitRate", "pageTableWrites", "pageTableWritesPerAllocation", "ipis",
    "ipisPerAllocation", "cpusInterrupted", "cpusInterruptedPerAllocation",
    "localInvalidations", "localInvalidationsPerAllocation", "sleeps", "accesses",
    "staleAccesses",
  ]

  /// One JSON object for `row`, on one line, with the keys of ``jsonKeys`` in that order.
  public static func json(_ row: SimWorkloadResult) -> String {
    let values: [String] = [
      "\"\(row.workload.rawValue)\"", "\"\(row.policy.rawValue)\"", "\(row.cpuPrivate)",
      "\(row.config.cpus)", "\(row.config.slots)", "\(row.config.tlbEntries)",
      "\(row.config.operations)", "\(row.config.seed)", "\(row.allocations)", "\(row.hits)",
      fixed(row.hitRate, 6), "\(row.pageTableWrites)",
      fixed(row.pageTableWritesPerAllocation, 6), "\(row.ipis)", fixed(row.ipisPerAllocation, 6),
      "\(row.cpusInterrupted)", fixed(row.cpusInterruptedPerAllocation, 6),
      "\(row.localInvalidations)", fixed(row.localInvalidationsPerAllocation, 6),
      "\(row.sleeps)", "\(row.accesses)", "\(row.staleAccesses)",
    ]
    let fields = zip(jsonKeys, values).map { "\"\($0)\": \($1)" }
    return "{" + fields.joined(separator: ", ") + "}"
  }

  /// A JSON array of `rows`, one object (``json(_:)``) per line.
  public static func json(_ rows: [SimWorkloadResult]) -> String {
    "[\n" + rows.map { "  " + json($0) }.joined(separator: ",\n") + "\n]"
  }

  /// A table of `rows`, one line each under a header, columns aligned.
  public static func table(_ rows: [SimWorkloadResult]) -> String {
    let header = [
      "workload", "policy", "SFB_CPUPRIVATE", "CPUs", "allocations", "hit rate",
      "PTE writes/alloc", "IPIs/alloc", "CPUs hit/alloc", "invlpg/alloc", "sleeps", "stale",
    ]
    var lines = [header]
    for row in rows {
      lines.append([
        row.workload.rawValue, row.policy.rawValue, row.cpuPrivate ? "yes" : "no",
        "\(row.config.cpus)", "\(row.allocations)", fixed(100 * row.hitRate, 1) + "%",
        fixed(row.pageTableWritesPerAllocation, 3), fixed(row.ipisPerAllocation, 3),
        fixed(row.cpusInterruptedPerAllocation, 3), fixed(row.localInvalidationsPerAllocation, 3),
        "\(row.sleeps)", "\(row.staleAccesses)",
      ])
    }
    var widths = header.map(\.count)
    for line in lines {
      for (i, cell) in line.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    return lines.map { line in
      line.enumerated().map { i, cell in
        let pad = String(repeating: " ", count: widths[i] - cell.count)
        return i < 3 ? cell + pad : pad + cell
      }.joined(separator: "  ")
    }.joined(separator: "\n")
  }

  /// `x` with `digits` digits after the point, rounded (no Foundation formatting).
  public static func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return x.isNaN ? "nan" : x < 0 ? "-inf" : "inf" }
    var scale = 1
    for _ in 0..<digits { scale *= 10 }
    // Half away from zero, without libm's round(3): the module links against no libc.
    let n = Int(abs(x) * Double(scale) + 0.5)
    let sign = x < 0 && n != 0 ? "-" : ""
    guard digits > 0 else { return sign + "\(n)" }
    var fraction = String(n % scale)
    while fraction.count < digits { fraction = "0" + fraction }
    return sign + "\(n / scale).\(fraction)"
  }
}

extension SimReport {
  /// The headline figures of the `copy` rows, in one sentence: IPIs per allocation with and
  /// without `SFB_CPUPRIVATE`, and PTE writes per allocation of caching against
  /// unmap-on-free at the hit rates observed. `nil` unless all four copy rows are present.
  public static func copySummary(_ rows: [SimWorkloadResult]) -> String? {
    func row(_ p: SimPolicy, _ cpuPrivate: Bool) -> SimWorkloadResult? {
      rows.first { $0.workload == .copy && $0.policy == p && $0.cpuPrivate == cpuPrivate }
    }
    guard let shared = row(.caching, false), let mine = row(.caching, true),
      let unmapping = row(.unmapOnFree, false)
    else { return nil }
    let from = "copy: SFB_CPUPRIVATE cuts IPIs per allocation from "
    let factor = Double(shared.ipis) / Double(max(mine.ipis, 1))
    let ipis =
      shared.ipis == 0
      ? "copy: no IPIs with or without SFB_CPUPRIVATE"
      : mine.ipis == 0
        ? from + "\(fixed(shared.ipisPerAllocation, 3)) to none"
        : from + "\(fixed(shared.ipisPerAllocation, 3)) to \(fixed(mine.ipisPerAllocation, 3))"
          + " (\(fixed(factor, 1))x fewer)"
    return ipis + "; caching writes "
      + "\(fixed(shared.pageTableWritesPerAllocation, 3)) PTEs per allocation "
      + "(hit rate \(fixed(100 * shared.hitRate, 1))%), unmap-on-free "
      + "\(fixed(unmapping.pageTableWritesPerAllocation, 3)) "
      + "(hit rate \(fixed(100 * unmapping.hitRate, 1))%)."
  }
}
