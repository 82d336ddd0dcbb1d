// The workloads of `sfbuf sim`: they run clean, replay from their seed, and show what
// SFB_CPUPRIVATE and caching buy.

import SFBufCore
import SFBufSim
import Testing

func config(cpus: Int = 4, slots: Int = 64, operations: Int = 4000, seed: UInt64 = 1)
  -> SimWorkloadConfig
{
  var c = SimWorkloadConfig()
  c.cpus = cpus
  c.slots = slots
  c.operations = operations
  c.seed = seed
  return c
}

@Suite("Workloads")
struct SimWorkloadTests {
  @Test("copy on 4 CPUs: SFB_CPUPRIVATE cuts IPIs tenfold; caching writes fewer PTEs")
  func copyFigures() {
    let c = config()
    let shared = SimWorkload.copy.run(policy: .caching, cpuPrivate: false, config: c)
    let mine = SimWorkload.copy.run(policy: .caching, cpuPrivate: true, config: c)
    let unmapping = SimWorkload.copy.run(policy: .unmapOnFree, cpuPrivate: false, config: c)
    #expect(shared.ipis > 0)
    #expect(shared.ipis >= 10 * mine.ipis)
    // The same pages, the same hits: only the invalidations differ.
    #expect(shared.hits == mine.hits && shared.pageTableWrites == mine.pageTableWrites)
    #expect(shared.hitRate > 0.3 && shared.hitRate < 1)
    #expect(unmapping.hitRate < shared.hitRate)
    #expect(unmapping.pageTableWritesPerAllocation > 3 * shared.pageTableWritesPerAllocation)
    #expect(unmapping.ipisPerAllocation > shared.ipisPerAllocation)
    // Caching remaps on a miss only: one PTE write per miss.
    #expect(shared.pageTableWrites == shared.allocations - shared.hits)
  }

  @Test("every row runs clean", arguments: SimWorkload.allCases)
  func rowsRunClean(workload: SimWorkload) {
    for row in SimWorkload.evaluation([workload], config: config()) {
      #expect(row.staleAccesses == 0, "\(row)")
      #expect(row.allocations >= 4000)
      #expect(row.accesses >= row.allocations)
    }
  }

  @Test("a small window makes threads sleep, and stays coherent", arguments: SimWorkload.allCases)
  func smallWindowSleeps(workload: SimWorkload) {
    for row in SimWorkload.evaluation([workload], config: config(slots: 4, operations: 2000)) {
      #expect(row.staleAccesses == 0, "\(row)")
      #expect(row.sleeps > 0, "\(row)")
    }
  }

  @Test("machine sizes from 1 to 64 CPUs", arguments: [1, 2, 8, 64])
  func cpuCounts(cpus: Int) {
    let row = SimWorkload.mix.run(
      policy: .caching, cpuPrivate: true, config: config(cpus: cpus, operations: 1500))
    #expect(row.staleAccesses == 0)
    if cpus == 1 { #expect(row.ipis == 0) }
  }

  @Test(
    "the checker counts stale accesses in a workload when a CPU-set bug is injected",
    arguments: [
      (SimWorkload.mix, SFBufFaults.skipShootdownOnHit),
      (SimWorkload.copy, SFBufFaults.skipLocalInvalidate),
      (SimWorkload.stream, SFBufFaults.keepCPUSetOnRemap),
    ])
  func injectedBugsShow(workload: SimWorkload, fault: SFBufFaults) {
    var c = config(operations: 3000)
    c.faults = fault
    let row = workload.run(policy: .caching, cpuPrivate: workload.hasPrivateVariant, config: c)
    #expect(row.staleAccesses > 0)
  }

  @Test("a run replays exactly from its seed; another seed differs")
  func replay() {
    let a = SimWorkload.evaluation([.mix], config: config(operations: 1500))
    let b = SimWorkload.evaluation([.mix], config: config(operations: 1500))
    let c = SimWorkload.evaluation([.mix], config: config(operations: 1500, seed: 2))
    #expect(a == b)
    #expect(a != c)
  }

  @Test("stream has no private variant; the others have one")
  func rowsOfTheEvaluation() {
    let rows = SimWorkload.evaluation(SimWorkload.allCases, config: config(operations: 200))
    let names = rows.map { "\($0.workload.rawValue) \($0.policy.rawValue) \($0.cpuPrivate)" }
    #expect(
      names == [
        "copy caching false", "copy caching true", "copy unmap-on-free false",
        "copy unmap-on-free true", "stream caching false", "stream unmap-on-free false",
        "mix caching false", "mix caching true", "mix unmap-on-free false",
        "mix unmap-on-free true",
      ])
  }
}

@Suite("Report")
struct SimReportTests {
  @Test("one JSON object per row, with the documented keys in order")
  func jsonRows() {
    let rows = SimWorkload.evaluation([.copy], config: config(operations: 300))
    let text = SimReport.json(rows)
    let lines = text.split(separator: "\n").map(String.init)
    #expect(lines.first == "[" && lines.last == "]")
    #expect(lines.count == rows.count + 2)
    for (line, row) in zip(lines.dropFirst(), rows) {
      var rest = Substring(line)
      for key in SimReport.jsonKeys {
        guard let r = rest.firstRange(of: "\"\(key)\": ") else {
          Issue.record("key \(key) missing or out of order in \(line)")
          return
        }
        rest = rest[r.upperBound...]
      }
      #expect(line.contains("\"workload\": \"copy\""))
      #expect(line.contains("\"cpuPrivate\": \(row.cpuPrivate)"))
      #expect(line.contains("\"ipisPerAllocation\": \(SimReport.fixed(row.ipisPerAllocation, 6))"))
    }
    #expect(SimReport.jsonKeys.count == Set(SimReport.jsonKeys).count)
  }

  @Test("the table has a header and a line per row; the copy summary names the figures")
  func table() {
    let rows = SimWorkload.evaluation([.copy], config: config(operations: 300))
    let lines = SimReport.table(rows).split(separator: "\n")
    #expect(lines.count == rows.count + 1)
    #expect(lines[0].hasPrefix("workload"))
    #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("copy") })
    let summary = SimReport.copySummary(rows)
    #expect(summary?.contains("SFB_CPUPRIVATE cuts IPIs per allocation") == true)
    #expect(SimReport.copySummary(Array(rows.dropFirst())) == nil)
  }

  @Test(
    "fixed-point formatting",
    arguments: [
      (0.3336, 3, "0.334"), (2.0, 0, "2"), (0.0, 6, "0.000000"), (12.05, 1, "12.1"),
      (-0.25, 2, "-0.25"), (66.94, 1, "66.9"), (1.0 / 0.0, 2, "inf"),
    ])
  func fixed(x: Double, digits: Int, text: String) {
    #expect(SimReport.fixed(x, digits) == text)
  }
}
