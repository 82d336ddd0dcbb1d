import ArgumentParser
import SFBufCore
import SFBufSim

/// `sfbuf sim`: the named workloads on the simulated SMP machine, each with the caching
/// policy and with unmap-on-free, without and (where it applies) with `SFB_CPUPRIVATE`,
/// printed as an evaluation table or, with `--json`, as one JSON object: `schema`
/// (`sfbuf-sim/2`) and `rows`, an array of one object per row, keys sorted.
///
/// The keys of a row, stable (``SimReport/jsonKeys``): `workload`, `policy`,
/// `cpuPrivate`, `cpus`, `slots`, `tlbEntries`, `operations`, `seed`, `allocations`, `hits`,
/// `hitRate`, `pageTableWrites`, `pageTableWritesPerAllocation`, `ipis`,
/// `ipisPerAllocation`, `cpusInterrupted`, `cpusInterruptedPerAllocation`,
/// `localInvalidations`, `localInvalidationsPerAllocation`, `sleeps`, `accesses`,
/// `staleAccesses`.
///
/// Every run is deterministic: the same options print the same figures.
struct SimCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sim",
    abstract: "Run workloads on the simulated SMP machine; print IPIs and PTE writes.",
    discussion: """
      Workloads: copy (short pinned copies, the uiomove_fromphys pattern), stream \
      (sendfile-like pages shared between CPUs), mix (both over the same pages). Each runs \
      with the caching policy and with unmap-on-free (FreeBSD's 32-bit arm), without and \
      with SFB_CPUPRIVATE (not for stream, whose mappings cross CPUs).

      Every access is checked against the mapping's page; the "stale" column counts the \
      accesses that saw another page (0 unless the allocator is broken).
      """
  )

  @Option(help: ArgumentHelp("Simulated CPUs (1...64).", valueName: "count"))
  var cpus = 4
  @Option(help: ArgumentHelp("Window slots, nsfbufs (1...4096).", valueName: "count"))
  var slots = 64
  @Option(help: ArgumentHelp("Allocations per row.", valueName: "count"))
  var operations = 20_000
  @Option(help: ArgumentHelp("Random seed; the same seed prints the same figures.", valueName: "n"))
  var seed: UInt64 = 1
  @Option(help: ArgumentHelp("TLB entries per CPU (LRU).", valueName: "count"))
  var tlbEntries = 64
  @Option(
    name: .customLong("workload"),
    help: ArgumentHelp(
      "A workload to run (copy, stream, mix); repeat for several (default: all).",
      valueName: "name"))
  var workloads: [String] = []
  @Option(
    name: .customLong("fault"),
    help: ArgumentHelp(
      "Inject a deliberate CPU-set bug into the allocator, to watch the checker count stale"
        + " accesses: skip-shootdown-on-hit, skip-local-invalidate, keep-cpuset-on-remap.",
      visibility: .hidden))
  var faults: [String] = []
  @Flag(help: "Print JSON: {\"schema\": \"sfbuf-sim/2\", \"rows\": [one object per row]}.")
  var json = false
  @Option(
    help: ArgumentHelp(
      "Also write an SVG chart (IPIs per allocation against 1 to 64 CPUs) here.",
      valueName: "file"))
  var svg: String?

  /// The deliberate bugs `--fault` may name.
  static let faultNames: [String: SFBufFaults] = [
    "skip-shootdown-on-hit": .skipShootdownOnHit,
    "skip-local-invalidate": .skipLocalInvalidate,
    "keep-cpuset-on-remap": .keepCPUSetOnRemap,
  ]

  func validate() throws {
    guard (1...64).contains(cpus) else { throw ValidationError("--cpus must be in 1...64") }
    guard (1...4096).contains(slots) else { throw ValidationError("--slots must be in 1...4096") }
    guard (1...10_000_000).contains(operations) else {
      throw ValidationError("--operations must be in 1...10000000")
    }
    guard (1...4096).contains(tlbEntries) else {
      throw ValidationError("--tlb-entries must be in 1...4096")
    }
    for f in faults where Self.faultNames[f] == nil {
      throw ValidationError("unknown fault '\(f)'")
    }
    for w in workloads where SimWorkload(rawValue: w) == nil {
      throw ValidationError("unknown workload '\(w)' (copy, stream, mix)")
    }
  }

  func run() throws {
    var config = SimWorkloadConfig()
    config.cpus = cpus
    config.slots = slots
    config.operations = operations
    config.seed = seed
    config.tlbEntries = tlbEntries
    for f in faults { config.faults.formUnion(Self.faultNames[f]!) }
    let chosen =
      workloads.isEmpty ? SimWorkload.allCases : workloads.compactMap(SimWorkload.init(rawValue:))
    let rows = SimWorkload.evaluation(chosen, config: config)
    if let svg { try writeSimChart(rows, config: config, workloads: chosen, to: svg) }
    if json {
      try printJSON(Report(rows: rows.map(Report.Row.init)))
      return
    }
    print(
      "simulated machine: \(cpus) CPUs, \(slots)-slot window, \(tlbEntries)-entry LRU TLBs,"
        + " \(operations) allocations per row, seed \(seed)"
        + (faults.isEmpty ? "" : "; injected faults: " + faults.joined(separator: ", ")))
    var t = Table(
      [
        "workload", "policy", "SFB_CPUPRIVATE", "CPUs", "allocations", "hit rate",
        "PTE writes/alloc", "IPIs/alloc", "CPUs hit/alloc", "invlpg/alloc", "sleeps", "stale",
      ], leftColumns: 3)
    for r in rows {
      t.add([
        r.workload.rawValue, r.policy.rawValue, r.cpuPrivate ? "yes" : "no", "\(r.config.cpus)",
        "\(r.allocations)", fmt(100 * r.hitRate, 1) + "%", fmt(r.pageTableWritesPerAllocation, 3),
        fmt(r.ipisPerAllocation, 3), fmt(r.cpusInterruptedPerAllocation, 3),
        fmt(r.localInvalidationsPerAllocation, 3), "\(r.sleeps)", "\(r.staleAccesses)",
      ])
    }
    t.print()
    if chosen.contains(.stream) {
      print("stream: mappings cross CPUs, so SFB_CPUPRIVATE does not apply.")
    }
    if let summary = SimReport.copySummary(rows) { print(summary) }
  }
}

extension SimCommand {
  /// The `--json` document: `schema` (`sfbuf-sim/2`) and `rows`, one object per row.
  struct Report: Encodable {
    struct Row: Encodable {
      var workload, policy: String
      var cpuPrivate: Bool
      var cpus, slots, tlbEntries, operations: Int
      var seed: UInt64
      var allocations, hits: Int
      var hitRate: Figure<Double>
      var pageTableWrites: Int
      var pageTableWritesPerAllocation: Figure<Double>
      var ipis: Int
      var ipisPerAllocation: Figure<Double>
      var cpusInterrupted: Int
      var cpusInterruptedPerAllocation: Figure<Double>
      var localInvalidations: Int
      var localInvalidationsPerAllocation: Figure<Double>
      var sleeps, accesses, staleAccesses: Int

      init(_ r: SimWorkloadResult) {
        workload = r.workload.rawValue
        policy = r.policy.rawValue
        cpuPrivate = r.cpuPrivate
        cpus = r.config.cpus
        slots = r.config.slots
        tlbEntries = r.config.tlbEntries
        operations = r.config.operations
        seed = r.config.seed
        allocations = r.allocations
        hits = r.hits
        hitRate = Figure(r.hitRate)
        pageTableWrites = r.pageTableWrites
        pageTableWritesPerAllocation = Figure(r.pageTableWritesPerAllocation)
        ipis = r.ipis
        ipisPerAllocation = Figure(r.ipisPerAllocation)
        cpusInterrupted = r.cpusInterrupted
        cpusInterruptedPerAllocation = Figure(r.cpusInterruptedPerAllocation)
        localInvalidations = r.localInvalidations
        localInvalidationsPerAllocation = Figure(r.localInvalidationsPerAllocation)
        sleeps = r.sleeps
        accesses = r.accesses
        staleAccesses = r.staleAccesses
      }
    }
    var schema = "sfbuf-sim/2"
    var rows: [Row]
  }
}
