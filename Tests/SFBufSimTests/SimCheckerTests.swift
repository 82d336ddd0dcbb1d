// The coherence checker: random programs run clean on the real allocator, and each of the
// three deliberate CPU-set bugs is caught as a stale access, with its seed and step.

@_spi(Testing) import SFBufCore
import SFBufSim
import Testing

/// The three deliberate bugs of SFBufCore, by name.
let mutants: [(String, SFBufFaults)] = [
  ("shootdown on a shared hit left out", .skipShootdownOnHit),
  ("local invalidation left out", .skipLocalInvalidate),
  ("CPU set kept on remap", .keepCPUSetOnRemap),
]

@Suite("Coherence checker")
struct SimCheckerTests {
  static let programsPerCPUCount: UInt64 = 500

  @Test("random programs run clean", arguments: 2...8)
  func randomProgramsRunClean(cpus: Int) {
    var total = SimProgramSummary()
    for n in 1...Self.programsPerCPUCount {
      let seed = UInt64(cpus) << 32 | n
      let outcome = SimProgram(seed: seed, cpus: cpus).run()
      guard case .clean(let s) = outcome else {
        Issue.record("program \(seed) on \(cpus) CPUs: \(outcome)")
        return
      }
      total.add(s)
    }
    // The programs do what they claim: private and shared allocations, hits, remaps,
    // shootdowns on hits, sleeps, failures (SFB_NOWAIT, signals), migrations.
    #expect(total.privateAllocations > total.allocations / 10)
    #expect(total.privateAllocations < total.allocations)
    #expect(total.hits > total.allocations / 4)
    #expect(total.remaps > total.allocations / 10)
    #expect(total.hitShootdowns > 200)
    // The situation a missing shootdown on a hit gets wrong: a shared hit on a slot that
    // some other CPU still caches with an older translation.
    #expect(total.hitShootdownsOfStaleEntries > 100)
    #expect(total.sleeps > 100)
    #expect(total.failures > 100)
    #expect(total.migrations > 500)
    #expect(total.accesses > total.allocations)
  }

  @Test("a program replays exactly from its seed")
  func programsReplay() throws {
    for seed in UInt64(1)...20 {
      guard case .clean(let a) = SimProgram(seed: seed).run(),
        case .clean(let b) = SimProgram(seed: seed).run()
      else {
        Issue.record("program \(seed) is not clean")
        return
      }
      #expect(a == b)
    }
  }

  @Test("each CPU-set bug is caught as a stale access", arguments: mutants)
  func mutantCaught(name: String, fault: SFBufFaults) throws {
    // The first program (of a bounded number) that the checker fails.
    let bound: UInt64 = 50
    let found = (UInt64(1)...bound).lazy.compactMap { seed in
      SimProgram(seed: seed, faults: fault).run().violation
    }.first
    let v = try #require(found, "\(name): no stale access in \(bound) programs")
    #expect(v.isStaleAccess, "\(name): \(v)")
    // The report names the program and the step: replaying them gives the same access,
    // and the same program without the bug runs clean.
    #expect(v.step < SimProgram(seed: v.seed).steps + 1)
    #expect(SimProgram(seed: v.seed, faults: fault).run().violation == v)
    guard case .clean = SimProgram(seed: v.seed).run() else {
      Issue.record("\(name): program \(v.seed) is not clean without the bug")
      return
    }
  }

  @Test("each CPU-set bug is caught often, not by luck", arguments: mutants)
  func mutantCaughtOften(name: String, fault: SFBufFaults) {
    let caught = (UInt64(1001)...1200).filter {
      SimProgram(seed: $0, faults: fault).run().violation?.isStaleAccess == true
    }.count
    #expect(caught >= 20, "\(name): caught in \(caught) of 200 programs")
  }
}

/// Hand-written runs that create each bug's situation in the fewest steps: the checker sees
/// the old page through the slot with the bug, and the right one without it.
@Suite("Coherence checker, scripted")
struct SimScriptedTests {
  /// Two threads, A on CPU 0 and B on CPU 1, one slot, two pages.
  struct Script {
    let system: SimSystem
    let a = 0
    let b = 1
    init(_ faults: SFBufFaults) {
      system = SimSystem(cpus: 2, slots: 1, frames: 2)
      system.machine.spawnThread(cpu: 0)
      system.machine.spawnThread(cpu: 1)
      system.allocator.injectFaults(faults)
    }
    func pin(_ t: Int) {
      system.machine.running = t
      system.machine.sched_pin()
    }
    func unpin(_ t: Int) {
      system.machine.running = t
      system.machine.sched_unpin()
    }
    /// Allocates, loads word 0 (checked), and returns the mapping.
    func use(_ frame: Int, _ flags: SFBufFlags, _ t: Int) throws -> SimMapping {
      var w: SimSystem.Waiter?
      let m = try #require(
        try system.allocate(SimPage(frame: frame), flags: flags, thread: t, waiter: &w))
      system.load(m, word: 0, thread: t)
      return m
    }
  }

  /// A private use on CPU 0 then a private remap on CPU 1 leave CPU 0 stale, legitimately;
  /// a shared hit on CPU 1 must shoot CPU 0 down before B touches the page there.
  @Test(arguments: [SFBufFaults(), .skipShootdownOnHit])
  func sharedHitAfterPrivateRemap(faults: SFBufFaults) throws {
    let s = Script(faults)
    s.pin(s.a)
    s.system.free(try s.use(0, .cpuPrivate, s.a), thread: s.a)
    s.pin(s.b)
    s.system.free(try s.use(1, .cpuPrivate, s.b), thread: s.b)
    #expect(s.system.machine.cachedFrame(slot: 0, cpu: 0) == 0)  // stale, and allowed
    let m = try s.use(1, [], s.b)  // a hit, shared
    s.unpin(s.b)
    s.system.machine.migrate(thread: s.b, to: 0)
    #expect(s.system.load(m, word: 0, thread: s.b) == faults.isEmpty)
    #expect(s.system.violations.first?.kind == (faults.isEmpty ? nil : .staleRead))
  }

  /// A private remap on the CPU that holds the old translation must invalidate it there.
  @Test(arguments: [SFBufFaults(), .skipLocalInvalidate])
  func privateRemapOnTheSameCPU(faults: SFBufFaults) throws {
    let s = Script(faults)
    s.pin(s.a)
    s.system.free(try s.use(0, .cpuPrivate, s.a), thread: s.a)
    _ = try s.use(1, .cpuPrivate, s.a)
    #expect(s.system.violations.isEmpty == faults.isEmpty)
    if let v = s.system.violations.first {
      #expect(v.kind == .staleRead && v.cpu == 0 && v.observedFrame == 0 && v.expectedFrame == 1)
    }
  }

  /// A shared remap of a used translation must start from an empty set.
  @Test(arguments: [SFBufFaults(), .keepCPUSetOnRemap])
  func sharedRemapClearsTheSet(faults: SFBufFaults) throws {
    let s = Script(faults)
    s.system.free(try s.use(0, [], s.a), thread: s.a)
    let m = try s.use(1, [], s.a)
    #expect(s.system.store(m, word: 1, thread: s.a) == faults.isEmpty)
    #expect(s.system.violations.first?.kind == (faults.isEmpty ? nil : .staleRead))
  }
}
