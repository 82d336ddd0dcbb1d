// Random programs for the coherence checker: seeded, bounded interleavings of simulated
// threads that allocate private and shared mappings, hit cached slots, touch, share, hand
// off and free them, pin, unpin and migrate, sleep on a full window and get signalled.

@_spi(Testing) import SFBufCore

/// One random program: its shape and every choice it makes follow from ``seed``.
///
/// Each step, a seeded scheduler picks a runnable thread, which allocates (a pinned thread
/// mostly with `SFB_CPUPRIVATE`), touches a mapping it holds (a checked load or store),
/// frees, takes another reference, hands a shared mapping to another thread, is preempted
/// and resumes on another CPU, pins or unpins; or some thread migrates, or a thread asleep
/// with `SFB_CATCH` gets a signal. The mix is tuned so that private remaps followed by
/// shared hits while another CPU still caches the old translation are common (see
/// ``SimProgramSummary/hitShootdownsOfStaleEntries``): that is what a missing shootdown on
/// a hit gets wrong.
///
/// The threads obey the sf_buf contract: a thread holding a CPU-private mapping stays pinned
/// and touches it on its CPU only; shared mappings may be touched anywhere, referenced
/// again and handed to other threads. A thread holding mappings allocates with
/// `SFB_NOWAIT`, so the program cannot deadlock. Each step checks the allocator's
/// invariants; at the end every thread frees what it holds and every sleeper must be
/// served.
public struct SimProgram: Sendable {
  /// The seed everything is drawn from.
  public var seed: UInt64
  /// CPUs, 2 to 8 unless given.
  public var cpus: Int
  /// Simulated threads: as many as CPUs, plus up to three.
  public var threads: Int
  /// Window slots: 2 to `threads + 2`, so slots are recycled and the window often fills.
  public var slots: Int
  /// Physical pages: up to about twice the slots, so pages are both hit and evicted.
  public var frames: Int
  /// TLB entries per CPU: 64, or (one program in five) 1 to 3, so entries are evicted.
  public var tlbEntries: Int
  /// Steps before the final drain: 200 to 399.
  public var steps: Int
  /// The mapping policy: caching, or (one program in five) unmap-on-free.
  public var policy: SimPolicy
  /// Deliberate bugs injected into the allocator (for showing the checker catches them).
  public var faults: SFBufFaults

  /// The program of `seed`; `cpus` fixes the CPU count instead of drawing it.
  public init(seed: UInt64, cpus: Int? = nil, faults: SFBufFaults = []) {
    var r = SimRandom(seed: seed)
    self.seed = seed
    self.cpus = cpus ?? 2 + r.below(7)
    threads = self.cpus + r.below(4)
    slots = 2 + r.below(threads + 1)
    frames = slots + 2 + r.below(slots + 2)
    tlbEntries = r.chance(20) ? 1 + r.below(3) : 64
    steps = 200 + r.below(200)
    policy = r.chance(20) ? .unmapOnFree : .caching
    self.faults = faults
  }

  /// Runs the program to its end or its first finding.
  ///
  /// - Complexity: O(``steps`` × (``slots`` + ``threads``)).
  public func run() -> SimProgramOutcome {
    var run = SimProgramRun(self)
    return run.go()
  }
}

/// How a random program ended.
public enum SimProgramOutcome: Sendable {
  /// Every access saw its mapping's page and every invariant held.
  case clean(SimProgramSummary)
  /// The checker caught an access that did not see its mapping's page.
  case violation(SimViolation)
  /// The allocator's invariants broke, or the program could not finish (a lost wake-up):
  /// the message, with the seed and step.
  case broken(seed: UInt64, step: Int, String)

  /// The checker's finding, if that is how the program ended.
  public var violation: SimViolation? {
    if case .violation(let v) = self { return v }
    return nil
  }
}

/// What a clean program did, so that tests can show the programs exercise what they claim.
public struct SimProgramSummary: Sendable, Equatable {
  /// Successful allocations.
  public var allocations = 0
  /// Of ``allocations``, those with `SFB_CPUPRIVATE`.
  public var privateAllocations = 0
  /// Allocator hits (cached slots).
  public var hits = 0
  /// Misses that remapped a slot.
  public var remaps = 0
  /// Checked loads and stores.
  public var accesses = 0
  /// Sleeps on a full window (`sf_allocwait`).
  public var sleeps = 0
  /// Allocations that failed (`sf_allocfail`: `SFB_NOWAIT` or a signal).
  public var failures = 0
  /// Migrations of threads between CPUs.
  public var migrations = 0
  /// Shootdowns sent.
  public var ipis = 0
  /// Hits that sent a shootdown: a cached slot used shared while some CPU was missing from
  /// its set, the situation a missing shootdown on a hit gets wrong.
  public var hitShootdowns = 0
  /// Of ``hitShootdowns``, those that reached a CPU whose TLB held an older translation of
  /// the slot: without that shootdown, the CPU would see the old page.
  public var hitShootdownsOfStaleEntries = 0

  /// All zero.
  public init() {}

  /// Adds `other`'s counts to these (for totals over many programs).
  public mutating func add(_ other: SimProgramSummary) {
    allocations += other.allocations
    privateAllocations += other.privateAllocations
    hits += other.hits
    remaps += other.remaps
    accesses += other.accesses
    sleeps += other.sleeps
    failures += other.failures
    migrations += other.migrations
    ipis += other.ipis
    hitShootdowns += other.hitShootdowns
    hitShootdownsOfStaleEntries += other.hitShootdownsOfStaleEntries
  }
}

/// The state of one program while it runs.
struct SimProgramRun {
  struct Pending {
    var page: SimPage
    var flags: SFBufFlags
    var waiter: SimSystem.Waiter?
  }
  struct Thread {
    var held: [SimMapping] = []
    var pending: Pending?
  }

  let program: SimProgram
  let system: SimSystem
  var r: SimRandom
  var threads: [Thread]
  var summary = SimProgramSummary()

  init(_ program: SimProgram) {
    self.program = program
    system = SimSystem(
      cpus: program.cpus, slots: program.slots, frames: program.frames,
      tlbEntries: program.tlbEntries, policy: program.policy)
    system.seed = program.seed
    system.allocator.injectFaults(program.faults)
    r = SimRandom(seed: program.seed ^ 0x5EED_5EED_5EED_5EED)
    threads = Array(repeating: Thread(), count: program.threads)
    for t in 0..<program.threads { system.machine.spawnThread(cpu: t % program.cpus) }
  }

  var machine: SimMachine { system.machine }

  mutating func go() -> SimProgramOutcome {
    for step in 0..<program.steps {
      system.step = step
      let runnable = (0..<threads.count).filter { !machine.isBlocked(thread: $0) }
      guard !runnable.isEmpty else { return broken("every thread is blocked") }
      act(runnable[r.below(runnable.count)])
      if let v = system.violations.first { return .violation(v) }
      if let bad = system.allocator.checkInvariants() { return broken(bad) }
    }
    system.step = program.steps
    if let failure = drain() { return failure }
    let stats = system.allocator.stats
    summary.allocations = system.allocations
    summary.hits = stats.hits
    summary.remaps = stats.remaps
    summary.sleeps = stats.sf_allocwait
    summary.failures = stats.sf_allocfail
    summary.ipis = machine.counters.ipisSent
    return .clean(summary)
  }

  func broken(_ message: String) -> SimProgramOutcome {
    .broken(seed: program.seed, step: system.step, message)
  }

  // MARK: One step of one thread

  mutating func act(_ t: Int) {
    if threads[t].pending != nil {
      retry(t)
      return
    }
    let held = threads[t].held
    switch r.below(100) {
    case 0..<22: allocate(t)
    case 22..<46 where !held.isEmpty: touch(t, held[r.below(held.count)])
    case 46..<66 where !held.isEmpty: free(t, r.below(held.count))
    case 66..<68 where !held.isEmpty:
      let m = held[r.below(held.count)]
      threads[t].held.append(system.ref(m, thread: t))
    case 68..<73 where !held.isEmpty: handOff(t)
    case 73..<81 where !machine.isPinned(thread: t):
      // Preempted and resumed on another CPU, the thread goes on using its mappings.
      machine.migrate(thread: t, to: r.below(program.cpus))
      summary.migrations += 1
      if !held.isEmpty { touch(t, held[r.below(held.count)]) }
    case 81..<87:
      machine.running = t
      if machine.isPinned(thread: t) && canUnpin(t) {
        machine.sched_unpin()
      } else if machine.threads[t].pinCount < 2 {
        machine.sched_pin()
      }
    case 87..<96: migrate()
    case 96..<100: signal()
    default: allocate(t)
    }
  }

  /// Whether thread `t` may unpin: a thread holding a CPU-private mapping stays pinned.
  func canUnpin(_ t: Int) -> Bool {
    machine.threads[t].pinCount > 1 || !threads[t].held.contains(where: \.cpuPrivate)
  }

  mutating func allocate(_ t: Int) {
    var flags: SFBufFlags = []
    if machine.isPinned(thread: t) && r.chance(80) { flags.insert(.cpuPrivate) }
    if !threads[t].held.isEmpty || r.chance(10) { flags.insert(.noWait) }
    if r.chance(30) { flags.insert(.interruptible) }
    let pending = Pending(page: SimPage(frame: r.below(program.frames)), flags: flags)
    threads[t].pending = pending
    retry(t)
  }

  /// Allocates the thread's pending request (a first try, or a retry after a wake-up).
  mutating func retry(_ t: Int) {
    var p = threads[t].pending!
    let (hits, ipis) = (system.allocator.stats.hits, machine.counters.ipisSent)
    let stale = staleElsewhere(p.page, thread: t)
    do {
      if let m = try system.allocate(p.page, flags: p.flags, thread: t, waiter: &p.waiter) {
        if system.allocator.stats.hits > hits && machine.counters.ipisSent > ipis {
          summary.hitShootdowns += 1
          if stale { summary.hitShootdownsOfStaleEntries += 1 }
        }
        threads[t].pending = nil
        threads[t].held.append(m)
        if m.cpuPrivate { summary.privateAllocations += 1 }
        // Kernel code maps a page to touch it: most allocations are touched at once.
        if r.chance(70) { touch(t, m) }
      } else {
        threads[t].pending = p
      }
    } catch {
      threads[t].pending = nil
    }
  }

  /// Whether a CPU other than thread `t`'s holds a translation of the slot caching `page`
  /// that leads elsewhere.
  func staleElsewhere(_ page: SimPage, thread t: Int) -> Bool {
    guard let s = system.allocator.cachedSlot(of: page) else { return false }
    let me = machine.cpu(ofThread: t)
    return (0..<program.cpus).contains { cpu in
      cpu != me && machine.cachedFrame(slot: s, cpu: cpu).map { $0 != page.frame } ?? false
    }
  }

  mutating func touch(_ t: Int, _ m: SimMapping) {
    summary.accesses += 1
    if r.chance(60) {
      system.load(m, word: r.chance(50) ? 0 : r.below(SimMachine.wordsPerPage), thread: t)
    } else {
      system.store(m, word: 1 + r.below(SimMachine.wordsPerPage - 1), thread: t)
    }
  }

  mutating func free(_ t: Int, _ i: Int) {
    let m = threads[t].held.remove(at: i)
    system.free(m, thread: t)
  }

  /// Gives a shared mapping to another thread that is not waiting (as an mbuf changes
  /// hands); the receiver may run on any CPU.
  mutating func handOff(_ t: Int) {
    let shared = threads[t].held.indices.filter { !threads[t].held[$0].cpuPrivate }
    let receivers = threads.indices.filter { threads[$0].pending == nil }
    guard !shared.isEmpty, !receivers.isEmpty else { return }
    let m = threads[t].held.remove(at: shared[r.below(shared.count)])
    threads[receivers[r.below(receivers.count)]].held.append(m)
  }

  mutating func migrate() {
    let t = r.below(threads.count)
    guard !machine.isPinned(thread: t) else { return }
    machine.migrate(thread: t, to: r.below(program.cpus))
    summary.migrations += 1
  }

  /// A signal to a thread sleeping interruptibly: its allocation fails.
  mutating func signal() {
    let t = r.below(threads.count)
    guard let p = threads[t].pending, p.flags.contains(.interruptible),
      machine.isBlocked(thread: t), let w = p.waiter
    else { return }
    system.abandon(w, thread: t)
    threads[t].pending = nil
  }

  // MARK: The end

  /// Frees everything, serves every sleeper; returns a failure, or nil when all is clean.
  mutating func drain() -> SimProgramOutcome? {
    var rounds = 0
    while true {
      for t in threads.indices {
        while !threads[t].held.isEmpty {
          free(t, threads[t].held.count - 1)
          if let v = system.violations.first { return .violation(v) }
        }
        if threads[t].pending != nil && !machine.isBlocked(thread: t) { retry(t) }
        if let v = system.violations.first { return .violation(v) }
      }
      if threads.allSatisfy({ $0.held.isEmpty && $0.pending == nil }) { break }
      rounds += 1
      if rounds > 4 * threads.count + 4 { return broken("a sleeper was never woken") }
    }
    if let bad = system.allocator.checkInvariants() { return broken(bad) }
    if system.allocator.stats.nsfbufsused != 0 { return broken("slots still in use") }
    if system.allocator.sleepers != 0 { return broken("sleepers left") }
    return nil
  }
}
