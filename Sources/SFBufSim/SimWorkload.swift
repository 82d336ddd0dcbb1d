// The named workloads of `sfbuf sim`: what each simulated thread does, and the evaluation
// that runs each under both policies, with and without SFB_CPUPRIVATE.

import SFBufCore

/// A named workload for the simulated machine: the patterns sf_buf exists for.
public enum SimWorkload: String, CaseIterable, Sendable {
  /// Short pinned copies to or from a page (`uiomove_fromphys`): two threads per CPU each
  /// pin, map one page, copy a few words on their CPU, free and unpin; pages are drawn
  /// from a skewed (Zipf) distribution over four times as many pages as the window holds.
  /// The private variant allocates with `SFB_CPUPRIVATE`.
  case copy
  /// sendfile(2)-like streaming: one connection per CPU sends whole files (eight files of a
  /// quarter window each, picked by a Zipf distribution) page by page; its producer thread
  /// maps a page and queues it (up to eight in flight), its consumer thread, on whatever
  /// CPU it is scheduled, reads the page (checksum) and frees the mapping. Mappings cross
  /// CPUs, so `SFB_CPUPRIVATE` does not apply and the workload has no private variant.
  case stream
  /// Both at once over the same pages: one copying thread per CPU and one connection per
  /// two CPUs, so a page mapped privately by a copy is often hit shared by a stream.
  case mix

  /// Whether the workload can use `SFB_CPUPRIVATE` (its copies are pinned).
  public var hasPrivateVariant: Bool { self != .stream }
}

/// The parameters of a workload run.
public struct SimWorkloadConfig: Sendable, Equatable {
  /// Simulated CPUs, 1 to 64.
  public var cpus = 4
  /// Window slots (`nsfbufs`).
  public var slots = 64
  /// Allocations to perform; the run then drains what is in flight.
  public var operations = 20_000
  /// The seed of every random choice.
  public var seed: UInt64 = 1
  /// TLB entries per CPU.
  public var tlbEntries = 64
  /// Deliberate bugs injected into the allocator, to watch the checker count stale
  /// accesses in a workload. Empty by default.
  public var faults: SFBufFaults = []

  /// The defaults: 4 CPUs, 64 slots, 20 000 allocations, seed 1, 64-entry TLBs, no fault.
  public init() {}
}

/// One row of the evaluation: one workload under one policy, with or without
/// `SFB_CPUPRIVATE`.
public struct SimWorkloadResult: Sendable, Equatable {
  /// The workload.
  public var workload: SimWorkload
  /// The mapping policy.
  public var policy: SimPolicy
  /// Whether the pinned copies allocated with `SFB_CPUPRIVATE`.
  public var cpuPrivate: Bool
  /// The configuration it ran with.
  public var config: SimWorkloadConfig
  /// Successful allocations.
  public var allocations = 0
  /// Allocations that needed no page-table write (for caching, the allocator's hits).
  public var hits = 0
  /// Writes of window PTEs (maps, and unmaps under unmap-on-free).
  public var pageTableWrites = 0
  /// Shootdowns sent.
  public var ipis = 0
  /// CPUs interrupted by shootdowns.
  public var cpusInterrupted = 0
  /// Local TLB invalidations.
  public var localInvalidations = 0
  /// Sleeps on a full window (`sf_allocwait`).
  public var sleeps = 0
  /// Checked accesses.
  public var accesses = 0
  /// Accesses the checker found stale (0 unless the allocator is broken).
  public var staleAccesses = 0

  /// `hits / allocations`.
  public var hitRate: Double { ratio(hits) }
  /// `pageTableWrites / allocations`.
  public var pageTableWritesPerAllocation: Double { ratio(pageTableWrites) }
  /// `ipis / allocations`.
  public var ipisPerAllocation: Double { ratio(ipis) }
  /// `cpusInterrupted / allocations`.
  public var cpusInterruptedPerAllocation: Double { ratio(cpusInterrupted) }
  /// `localInvalidations / allocations`.
  public var localInvalidationsPerAllocation: Double { ratio(localInvalidations) }

  func ratio(_ n: Int) -> Double { allocations == 0 ? 0 : Double(n) / Double(allocations) }
}

extension SimWorkload {
  /// Runs the workload once on a fresh simulated machine.
  ///
  /// - Complexity: O(`config.operations` × (threads + TLB entries)); about half a
  ///   microsecond per step (some six steps per allocation) in a release build.
  /// - Precondition: `cpuPrivate` only if ``hasPrivateVariant``; `config` within its ranges.
  public func run(policy: SimPolicy, cpuPrivate: Bool, config: SimWorkloadConfig)
    -> SimWorkloadResult
  {
    precondition(!cpuPrivate || hasPrivateVariant, "\(rawValue) has no private variant")
    var run = SimWorkloadRun(self, policy: policy, cpuPrivate: cpuPrivate, config: config)
    return run.go()
  }

  /// The evaluation table: each of `workloads`, with caching then unmap-on-free, each
  /// without then (where it applies) with `SFB_CPUPRIVATE`. Every row starts from the
  /// same seed.
  public static func evaluation(_ workloads: [SimWorkload], config: SimWorkloadConfig)
    -> [SimWorkloadResult]
  {
    var rows: [SimWorkloadResult] = []
    for w in workloads {
      for policy in SimPolicy.allCases {
        for cpuPrivate in w.hasPrivateVariant ? [false, true] : [false] {
          rows.append(w.run(policy: policy, cpuPrivate: cpuPrivate, config: config))
        }
      }
    }
    return rows
  }
}
