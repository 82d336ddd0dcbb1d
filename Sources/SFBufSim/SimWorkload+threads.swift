// What the threads of a workload do, one step at a time, under a seeded scheduler.

@_spi(Testing) import SFBufCore

/// A Zipf(1) distribution over `0 ..< count`: value `i` has weight `1 / (i + 1)`.
struct SimZipf {
  let cdf: [Double]

  init(count: Int) {
    var sum = 0.0
    var cdf: [Double] = []
    cdf.reserveCapacity(count)
    for i in 0..<count {
      sum += 1 / Double(i + 1)
      cdf.append(sum)
    }
    self.cdf = cdf
  }

  func draw(_ r: inout SimRandom) -> Int {
    let u = Double(r.next() >> 11) * 0x1p-53 * cdf[cdf.count - 1]
    var lo = 0
    var hi = cdf.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if cdf[mid] > u { hi = mid } else { lo = mid + 1 }
    }
    return lo
  }
}

/// One run of a workload.
struct SimWorkloadRun {
  enum Role {
    case copier
    case producer(Int)
    case consumer(Int)
  }
  struct Pending {
    var page: SimPage
    var flags: SFBufFlags
    var waiter: SimSystem.Waiter?
  }
  struct Worker {
    var role: Role
    /// The mapping being copied (copier) or checksummed (consumer).
    var mapping: SimMapping?
    var wordsLeft = 0
    var storing = false
    var pending: Pending?
  }
  struct Connection {
    var file = 0
    var next = 0
    var queue: [SimMapping] = []
    var head = 0
    var inFlight: Int { queue.count - head }
  }

  static let copyWords = 4
  static let checksumWords = 2
  static let maxInFlight = 8
  static let files = 8

  let workload: SimWorkload
  let cpuPrivate: Bool
  let config: SimWorkloadConfig
  let system: SimSystem
  var r: SimRandom
  var workers: [Worker] = []
  var connections: [Connection] = []
  let fileLength: Int
  let copyPages: SimZipf
  let filePick: SimZipf

  init(
    _ workload: SimWorkload, policy: SimPolicy, cpuPrivate: Bool, config: SimWorkloadConfig
  ) {
    self.workload = workload
    self.cpuPrivate = cpuPrivate
    self.config = config
    let cpus = config.cpus
    fileLength = max(1, config.slots / 4)
    let frames = workload == .copy ? 4 * config.slots : Self.files * fileLength
    system = SimSystem(
      cpus: cpus, slots: config.slots, frames: frames, tlbEntries: config.tlbEntries,
      policy: policy)
    system.seed = config.seed
    system.allocator.injectFaults(config.faults)
    r = SimRandom(seed: config.seed)
    copyPages = SimZipf(count: frames)
    filePick = SimZipf(count: Self.files)
    let copiers = workload == .copy ? 2 * cpus : workload == .mix ? cpus : 0
    let streams = workload == .stream ? cpus : workload == .mix ? max(1, cpus / 2) : 0
    for i in 0..<copiers { spawn(.copier, cpu: i % cpus) }
    for c in 0..<streams {
      var conn = Connection()
      conn.file = filePick.draw(&r)
      connections.append(conn)
      spawn(.producer(c), cpu: c % cpus)
      spawn(.consumer(c), cpu: (c + 1) % cpus)
    }
  }

  var machine: SimMachine { system.machine }

  mutating func spawn(_ role: Role, cpu: Int) {
    system.machine.spawnThread(cpu: cpu)
    workers.append(Worker(role: role))
  }

  mutating func go() -> SimWorkloadResult {
    let bound = 100 * config.operations + 100_000
    var step = 0
    while true {
      let stopping = system.allocations >= config.operations
      if stopping && isIdle { break }
      precondition(step < bound, "workload \(workload.rawValue) did not finish")
      system.step = step
      step += 1
      if r.chance(5) {
        let t = r.below(workers.count)
        if !machine.isPinned(thread: t) { machine.migrate(thread: t, to: r.below(config.cpus)) }
      }
      act(pickRunnable(), stopping: stopping)
    }
    let stats = system.allocator.stats
    let c = machine.counters
    var out = SimWorkloadResult(
      workload: workload, policy: system.policy, cpuPrivate: cpuPrivate, config: config)
    out.allocations = system.allocations
    out.hits = system.hits
    out.pageTableWrites = c.pageTableWrites
    out.ipis = c.ipisSent
    out.cpusInterrupted = c.cpusInterrupted
    out.localInvalidations = c.localInvalidations
    out.sleeps = stats.sf_allocwait
    out.accesses = c.accesses
    out.staleAccesses = system.violations.count
    return out
  }

  /// A thread that is not blocked, chosen uniformly: a few random draws, then a search.
  mutating func pickRunnable() -> Int {
    for _ in 0..<4 {
      let t = r.below(workers.count)
      if !machine.isBlocked(thread: t) { return t }
    }
    let runnable = workers.indices.filter { !machine.isBlocked(thread: $0) }
    precondition(!runnable.isEmpty, "workload \(workload.rawValue): every thread blocked")
    return runnable[r.below(runnable.count)]
  }

  var isIdle: Bool {
    workers.allSatisfy { $0.mapping == nil && $0.pending == nil }
      && connections.allSatisfy { $0.inFlight == 0 }
  }

  // MARK: One step of one thread

  mutating func act(_ t: Int, stopping: Bool) {
    if workers[t].pending != nil {
      allocate(t)
      return
    }
    switch workers[t].role {
    case .copier:
      if workers[t].mapping != nil {
        touch(t)
      } else if !stopping {
        // uiomove_fromphys: sched_pin, sf_buf_alloc(SFB_CPUPRIVATE), copy, free, unpin.
        machine.running = t
        machine.sched_pin()
        workers[t].storing = r.chance(50)
        let flags: SFBufFlags = cpuPrivate ? .cpuPrivate : []
        request(t, SimPage(frame: copyPages.draw(&r)), flags)
      }
    case .producer(let c):
      if !stopping && connections[c].inFlight < Self.maxInFlight {
        let conn = connections[c]
        request(t, SimPage(frame: conn.file * fileLength + conn.next), [])
      }
    case .consumer(let c):
      if workers[t].mapping != nil {
        touch(t)
      } else if connections[c].inFlight > 0 {
        workers[t].mapping = connections[c].queue[connections[c].head]
        connections[c].head += 1
        if connections[c].head == connections[c].queue.count {
          connections[c].queue.removeAll(keepingCapacity: true)
          connections[c].head = 0
        }
        workers[t].wordsLeft = Self.checksumWords
        workers[t].storing = false
        touch(t)
      }
    }
  }

  mutating func request(_ t: Int, _ page: SimPage, _ flags: SFBufFlags) {
    workers[t].pending = Pending(page: page, flags: flags)
    allocate(t)
  }

  /// Tries the thread's pending allocation; on success hands the mapping on.
  mutating func allocate(_ t: Int) {
    var p = workers[t].pending!
    let mapping: SimMapping?
    do {
      mapping = try system.allocate(p.page, flags: p.flags, thread: t, waiter: &p.waiter)
    } catch {
      preconditionFailure("workload allocations wait, they do not fail: \(error)")
    }
    guard let mapping else {
      workers[t].pending = p
      return
    }
    workers[t].pending = nil
    switch workers[t].role {
    case .copier:
      workers[t].mapping = mapping
      workers[t].wordsLeft = Self.copyWords
      touch(t)
    case .producer(let c):
      connections[c].queue.append(mapping)
      connections[c].next += 1
      if connections[c].next == fileLength {
        connections[c].next = 0
        connections[c].file = filePick.draw(&r)
      }
    case .consumer:
      preconditionFailure("consumers do not allocate")
    }
  }

  /// One checked access to the thread's mapping; the last one frees it.
  mutating func touch(_ t: Int) {
    let m = workers[t].mapping!
    let word = workers[t].wordsLeft
    if workers[t].storing {
      system.store(m, word: word, thread: t)
    } else {
      system.load(m, word: word == Self.checksumWords ? 0 : word, thread: t)
    }
    workers[t].wordsLeft -= 1
    guard workers[t].wordsLeft == 0 else { return }
    system.free(m, thread: t)
    workers[t].mapping = nil
    if case .copier = workers[t].role {
      machine.running = t
      machine.sched_unpin()
    }
  }
}
