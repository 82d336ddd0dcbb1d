import ArgumentParser
import CSFBufAllocCount
import Glibc
import MallocInterposerSwift
import SFBufCore
import SFBufHost
import Synchronization

/// `sfbuf bench pages` (the default of `sfbuf bench`): the window against what a user would
/// otherwise do, side by side and interleaved, on the same object.
///
/// Peers: the direct map (the limit), `pread` into a buffer, `mmap` + `munmap` per access,
/// the window with the faithful policy, and the window with the batched policy (and page
/// runs on the sequential scan); on the scan also map-ahead and a C loop, on hot hits the
/// floor of a reference-counted hit. Workloads: hot hits, uniform random pages,
/// Zipf(0.99), and a sequential scan reading whole pages, each with 1 and 2 threads. Each
/// trial round runs every cell once, so slow drifts of the machine hit every peer alike.
struct BenchPagesCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pages",
    abstract: "Page access through sf_buf windows against the direct map, pread and mmap.",
    discussion: """
      Cells: workload x threads x peer. Per cell: ns per page (median of the trials, with \
      min and max; with 2 threads, wall time x threads / pages, i.e. per thread), the \
      window's hit rate, mapping system calls per page (mmap, munmap, madvise), TLB \
      shootdowns per page (delta of the TLB: line of /proc/interrupts, all CPUs; n/a where \
      the file lacks it), heap allocations per access (malloc and its kin, counted per \
      thread around the access loop through malloc-interposer, a library linked into the \
      tool only).

      Workloads: hot (32 pages per thread, each also held by a keeper, so hits find \
      mappings in use; one word read per access), uniform (uniform random pages over \
      8 x nsfbufs pages; one word), zipf (Zipf(0.99) over 16 x nsfbufs pages; one word), \
      seq (each thread scans its share of 16 x nsfbufs pages in order, reading every word \
      of every page). pread reads what the access reads (8 bytes, or the whole page for \
      seq). Peers: direct, pread, mmap (+munmap per access), the window with the \
      faithful and the batched policy (page runs on seq), and on seq also ahead: the \
      batched window with map-ahead, a helper thread mapping and populating the next run \
      while the reader reads this one, and c, the same runs mapped and summed by a C loop \
      with no library (the kernel's share of the cost), and on hot also refs: the direct \
      map's read between a locked increment and decrement of a word of the page's own \
      (in C), the least a hit that counts references costs. --workload, --threads and \
      --peer measure a part of the table (direct and pread are always measured: the \
      ratios need them).

      --json prints one object, keys sorted: {"schema": "sfbuf-bench-pages/2", "config": \
      {...}, "tlbCounter": bool, "allocationsCounted": bool, "cells": [{"workload", \
      "threads", "peer", "pages", "nsPerPage": {"median", "min", "max"}, "hitRate" (null \
      off the window), "mapCallsPerPage", "shootdownsPerPage" (null without the TLB \
      line), "shootdownsPerMiss" (null off the window or without misses), \
      "allocsPerAccess" (null when not counted, as under a sanitizer), "vsDirect", \
      "vsPread"}]}. Ratios are median ns per page over the direct map's and pread's in \
      the same workload and thread count (above 1: slower).
      """
  )

  @Flag(help: "Fewer and shorter trials (under 10 s).")
  var quick = false
  /// A deliberate bug for the tests: one heap allocation per access, which the allocs
  /// column must show.
  @Flag(help: .hidden)
  var allocatePerAccess = false
  @Flag(help: "Print JSON instead of the table.")
  var json = false
  @Option(
    help: ArgumentHelp(
      "Also write an SVG chart (bars per workload) to this file.", valueName: "file"))
  var svg: String?
  @Option(help: ArgumentHelp("Window slots.", valueName: "slots"))
  var nsfbufs = 512
  @Option(help: ArgumentHelp("Trials per cell (default 5, --quick 3).", valueName: "count"))
  var trials: Int?
  @Option(
    help: ArgumentHelp("Batch of the batched policy (default nsfbufs / 4).", valueName: "slots"))
  var batch: Int?
  @Option(
    name: .customLong("run"),
    help: ArgumentHelp(
      """
      Pages per run in the sequential scan of the batched peer (default nsfbufs / 4, at \
      most 128: a window maps runs of 128 pages at most, one region of its address space).
      """, valueName: "pages"))
  var runPages: Int?
  @Option(
    name: .customLong("workload"),
    help: ArgumentHelp(
      "Only these workloads (repeatable: hot, uniform, zipf, seq; default all).",
      valueName: "name"))
  var workloads: [BenchWorkload] = []
  @Option(
    name: .customLong("threads"),
    help: ArgumentHelp("Only this thread count (1 or 2; default both).", valueName: "count"))
  var threadCounts: [Int] = []
  @Option(
    name: .customLong("peer"),
    help: ArgumentHelp(
      "Only these peers besides direct and pread, which the ratios need (repeatable).",
      valueName: "name"))
  var peers: [BenchPeer] = []

  func validate() throws {
    guard (64...SFBufPool.maxSlots / 16).contains(nsfbufs) else {
      throw ValidationError("--nsfbufs must be in 64...\(SFBufPool.maxSlots / 16)")
    }
    if let trials, !(1...100).contains(trials) {
      throw ValidationError("--trials must be in 1...100")
    }
    if let batch, !(1...nsfbufs).contains(batch) {
      throw ValidationError("--batch must be in 1...nsfbufs")
    }
    let maxRun = min(nsfbufs / 2, SFBufPool.maxRunPages)
    if let runPages, !(2...maxRun).contains(runPages) {
      throw ValidationError(
        "--run must be in 2...\(maxRun) (nsfbufs/2, at most \(SFBufPool.maxRunPages): a "
          + "window maps runs of \(SFBufPool.maxRunPages) pages at most)")
    }
    if let t = threadCounts.first(where: { !(1...2).contains($0) }) {
      throw ValidationError("--threads must be 1 or 2, not \(t)")
    }
    let chosen = workloads.isEmpty ? BenchWorkload.allCases : workloads
    if let p = peers.first(where: { p in !chosen.contains { p.measures($0) } }) {
      let wanted = BenchWorkload.allCases.filter { p.measures($0) }.map(\.rawValue)
      throw ValidationError(
        "--peer \(p.rawValue) measures only --workload \(wanted.joined(separator: ", "))")
    }
  }

  func run() throws {
    SignalWatcher.start()
    let bench = try PageBench(
      nsfbufs: nsfbufs, batch: batch ?? nsfbufs / 4, run: runPages, quick: quick,
      allocatePerAccess: allocatePerAccess, trials: trials ?? (quick ? 3 : 5),
      workloads: workloads.isEmpty ? BenchWorkload.allCases : workloads,
      peers: BenchPeer.allCases.filter {
        peers.isEmpty || peers.contains($0) || $0 == .direct || $0 == .pread
      },
      threads: threadCounts.isEmpty ? [1, 2] : threadCounts)
    let faithful = bench.faithful
    let batched = bench.batched
    SignalWatcher.onStatus {
      ["faithful window:"] + faithful.stats.netstatLines.map { "  " + $0 } + ["batched window:"]
        + batched.stats.netstatLines.map { "  " + $0 }
    }
    let cells = bench.measure(quiet: json)
    if json {
      try printJSON(bench.report(cells))
    } else {
      bench.printTable(cells)
    }
    if let svg { try writePagesChart(bench, cells, to: svg) }
  }
}

// MARK: - The bench

/// What one access does.
enum BenchPeer: String, CaseIterable, ExpressibleByArgument {
  case direct, pread, mmap, faithful, batched
  /// The batched window with map-ahead (`SFBufReadAhead`): the sequential scan only.
  case ahead
  /// The scan's runs mapped and summed by a C loop with no library (`sfb_c_scan`): what
  /// the kernel costs. The sequential scan only.
  case c
  /// The direct map's read between a locked increment and decrement of a word in the
  /// page's own cache line, in C (`sfb_c_counted_reads`): the least a hit that counts
  /// references costs. The hot cell only.
  case refs
}

extension BenchPeer {
  /// What the table's footer says of the peers whose names do not say what they are.
  static let legend: [(BenchPeer, String)] = [
    (.ahead, "the batched window with map-ahead (a helper thread maps the next run)."),
    (.c, "the same runs in a C loop with no library (the kernel's share)."),
    (
      .refs,
      "the direct map's read between a locked increment and decrement (a counted hit's floor)."
    ),
  ]

  /// Whether this peer has a cell in workload `w`: map-ahead and the C loop scan, the
  /// reference-count floor takes hot hits.
  func measures(_ w: BenchWorkload) -> Bool {
    switch self {
    case .ahead, .c: w == .seq
    case .refs: w == .hot
    default: true
    }
  }
}

/// The access pattern.
enum BenchWorkload: String, CaseIterable, ExpressibleByArgument {
  case hot, uniform, zipf, seq
}

/// One trial's measurements.
struct BenchTrial {
  var seconds = 0.0
  var pages = 0
  var hits = 0
  var misses = 0
  var mapCalls = 0
  var allocations: Int?
  var shootdowns: Int?
}

/// All trials of one cell, and what they add up to.
struct BenchCell {
  var workload: BenchWorkload
  var threads: Int
  var peer: BenchPeer
  var trials: [BenchTrial] = []

  var nsPerPage: [Double] {
    trials.map { $0.seconds * 1e9 * Double(threads) / Double(max($0.pages, 1)) }.sorted()
  }
  var median: Double {
    let v = nsPerPage
    return v.isEmpty
      ? .nan : v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
  }
  var pages: Int { trials.reduce(0) { $0 + $1.pages } }
  var isWindow: Bool { peer == .faithful || peer == .batched || peer == .ahead }
  var hitRate: Double? {
    let h = trials.reduce(0) { $0 + $1.hits }
    let m = trials.reduce(0) { $0 + $1.misses }
    return isWindow && h + m > 0 ? Double(h) / Double(h + m) : nil
  }
  var mapCallsPerPage: Double {
    Double(trials.reduce(0) { $0 + $1.mapCalls }) / Double(max(pages, 1))
  }
  var shootdowns: Int? {
    trials.reduce(0 as Int?) { acc, t in acc.flatMap { a in t.shootdowns.map { a + $0 } } }
  }
  var shootdownsPerPage: Double? { shootdowns.map { Double($0) / Double(max(pages, 1)) } }
  /// Heap allocations per access; nil where they could not be counted.
  var allocsPerAccess: Double? {
    trials.contains { $0.allocations == nil }
      ? nil : Double(trials.reduce(0) { $0 + $1.allocations! }) / Double(max(pages, 1))
  }
  var shootdownsPerMiss: Double? {
    let m = trials.reduce(0) { $0 + $1.misses }
    guard isWindow, m > 0, let s = shootdowns else { return nil }
    return Double(s) / Double(m)
  }
}

// @unchecked: `sequences` is filled by the main thread between trials, never during one.
final class PageBench: @unchecked Sendable {
  let nsfbufs: Int
  let batch: Int
  let runLength: Int
  let quick: Bool
  let trialCount: Int
  let allocatePerAccess: Bool
  /// Whether heap allocations are counted: malloc-interposer's malloc is the one this
  /// process calls (not so under a sanitizer, whose runtime defines malloc itself).
  let countsAllocations: Bool
  let workloads: [BenchWorkload]
  let peers: [BenchPeer]
  let threadCounts: [Int]
  let object: VMObject
  let pages: Int
  let direct = SFBufPool.directMap()
  let faithful: SFBufPool
  let batched: SFBufPool
  /// The hot workload's pages per thread: thread `t` hits pages `t * 32 ..< (t + 1) * 32`.
  static let hotPagesPerThread = 32
  /// The hot pages of both threads, which the keeper holds in a window during a hot trial.
  let hotPages: Int
  /// The refs peer's pages (the hot ones), held in the direct map for the bench's life, and
  /// a word per page, each in a cache line of its own, for their counts.
  let refsHeld: SFBufBatch
  let refsAddresses: [UnsafeMutableRawPointer]
  let refsCounts: UnsafeMutablePointer<UInt64>
  /// Per workload and thread count, each thread's page sequence (the same for every peer).
  var sequences: [String: [[Int]]] = [:]
  /// The pages the uniform workload draws from (`sfbuf bench sweep` varies it).
  var uniformPages: Int

  init(
    nsfbufs: Int, batch: Int, run: Int? = nil, quick: Bool, allocatePerAccess: Bool = false,
    trials: Int,
    workloads: [BenchWorkload] = BenchWorkload.allCases,
    peers: [BenchPeer] = BenchPeer.allCases, threads: [Int] = [1, 2], objectPages: Int? = nil
  ) throws {
    self.workloads = workloads
    self.peers = peers
    self.threadCounts = threads
    self.nsfbufs = nsfbufs
    self.batch = batch
    // By default a quarter of the window, and never longer than a window maps in one run.
    self.runLength = run ?? min(nsfbufs / 4, SFBufPool.maxRunPages)
    self.quick = quick
    self.trialCount = trials
    self.allocatePerAccess = allocatePerAccess
    MallocInterposerSwift.setAllocationHook(sfb_count_allocation)
    MallocInterposerSwift.hook()
    let before = sfb_thread_allocations()
    free(opaqueMalloc(24))
    countsAllocations = sfb_thread_allocations() != before
    pages = objectPages ?? 16 * nsfbufs
    hotPages = min(2 * Self.hotPagesPerThread, pages)
    uniformPages = 8 * nsfbufs
    // Read-only, as every peer only reads (the C loop and the mmap peer map with PROT_READ):
    // a writable mapping of a memfd costs more per remapped page (VMObject.anonymous).
    object = try VMObject.anonymous(
      size: pages * vmPageSize, name: "sfbuf-bench", access: .readOnly)
    try tagPages(object, count: pages)
    try object.wire(pages: 0..<pages)
    faithful = try SFBufPool(nsfbufs: nsfbufs, policy: .faithful)
    batched = try SFBufPool(nsfbufs: nsfbufs, policy: .batched(batch: batch))
    var held = SFBufBatch(pool: direct, capacity: hotPages)
    for i in 0..<hotPages { held.append(try direct.allocate(object.page(i))) }
    refsAddresses = (0..<hotPages).map { held.address($0) }
    refsHeld = held
    refsCounts = .allocate(capacity: hotPages * 8)
    refsCounts.initialize(repeating: 0, count: hotPages * 8)
  }

  deinit { refsCounts.deallocate() }

  /// Accesses per thread in one trial.
  func accesses(_ w: BenchWorkload, threads: Int) -> Int {
    let scale = quick ? 4 : 1
    switch w {
    case .hot: return 400_000 / scale
    case .uniform: return 16_000 / scale
    case .zipf: return 32_000 / scale
    case .seq: return pages / threads
    }
  }

  /// Fewer accesses per trial for the peers that pay a system call on every hot access.
  func limit(_ w: BenchWorkload, _ p: BenchPeer) -> Int {
    guard w == .hot else { return .max }
    let scale = quick ? 4 : 1
    switch p {
    case .mmap: return 8_000 / scale
    case .pread: return 40_000 / scale
    default: return .max
    }
  }

  func sequence(_ w: BenchWorkload, threads: Int) -> [[Int]] {
    let key = "\(w.rawValue)/\(threads)" + (w == .uniform ? "/\(uniformPages)" : "")
    if let s = sequences[key] { return s }
    let n = accesses(w, threads: threads)
    let zipf = w == .zipf ? Zipf(n: pages, s: 0.99) : nil
    var out: [[Int]] = []
    for t in 0..<threads {
      var rng = FastRandom(
        seed: 0x5EED &+ UInt64(t) &* 7919 &+ UInt64(BenchWorkload.allCases.firstIndex(of: w)!))
      switch w {
      case .hot:
        let per = Self.hotPagesPerThread
        out.append((0..<n).map { _ in t * per + Int(rng.next() % UInt64(per)) })
      case .uniform: out.append((0..<n).map { _ in Int(rng.next() % UInt64(uniformPages)) })
      case .zipf: out.append((0..<n).map { _ in zipf!.draw(&rng) })
      case .seq: out.append(Array((t * n)..<((t + 1) * n)))
      }
    }
    sequences[key] = out
    return out
  }

  func pool(_ p: BenchPeer) -> SFBufPool? {
    switch p {
    case .direct: direct
    case .faithful: faithful
    case .batched, .ahead: batched
    default: nil
    }
  }

  /// Every cell, trial by trial, the peers interleaved within each round.
  func measure(quiet: Bool = true) -> [BenchCell] {
    var cells: [BenchCell] = []
    for w in workloads {
      for threads in threadCounts {
        for p in peers where p.measures(w) {
          cells.append(BenchCell(workload: w, threads: threads, peer: p))
        }
      }
    }
    // Warm-up: fault the object in, make the direct mapping, fill the windows, and let
    // every path run once (the Swift runtime allocates on a first call of some generics;
    // the allocator makes its sleepers on its first waits).
    for c in cells { _ = trial(c.workload, threads: c.threads, peer: c.peer, limit: 2000) }
    let progress = Progress.make(
      total: trialCount * cells.count, unit: .count("cell"), quiet: quiet)
    for r in 0..<trialCount {
      for i in 0..<cells.count {
        let c = cells[i]
        cells[i].trials.append(
          trial(c.workload, threads: c.threads, peer: c.peer, limit: limit(c.workload, c.peer)))
        progress?.update(r * cells.count + i + 1)
      }
    }
    progress?.finish()
    return cells
  }

  /// One trial of one cell: `threads` threads run their sequences; counters around it.
  func trial(_ w: BenchWorkload, threads: Int, peer: BenchPeer, limit: Int = .max) -> BenchTrial {
    let seqs = sequence(w, threads: threads)
    let pool = pool(peer)
    // Hot hits find mappings in use: a keeper holds each hot page during the trial.
    var kept = pool.map { SFBufBatch(pool: $0, capacity: hotPages) }
    if w == .hot, let pool, !pool.isDirectMap {
      for i in 0..<hotPages { kept!.append(try! pool.allocate(object.page(i))) }
    }
    let before = (pool?.stats, pool?.mapCalls ?? 0, pool?.unmapCalls ?? 0, tlbShootdowns())
    let start = BenchBarrier(threads)
    let sink = Atomic<UInt64>(0)
    let calls = Atomic<Int>(0)
    let allocations = Atomic<Int>(0)
    let t0 = BenchShared(0.0)
    runThreads(threads) { t in
      let seq = seqs[t]
      let n = min(seq.count, limit)
      start.wait {
        t0.set(now())
      }
      let (value, mapCalls, allocs) = self.run(w, peer, pool, seq, n)
      sink.add(value, ordering: .relaxed)
      calls.add(mapCalls, ordering: .relaxed)
      allocations.add(allocs, ordering: .relaxed)
    }
    let elapsed = now() - t0.get()
    _ = consume kept
    var r = BenchTrial()
    r.seconds = elapsed
    r.pages = seqs.reduce(0) { $0 + min($1.count, limit) }
    r.allocations = countsAllocations ? allocations.load(ordering: .relaxed) : nil
    if let pool, let s0 = before.0 {
      let s1 = pool.stats
      r.hits = s1.hits - s0.hits
      r.misses = s1.misses - s0.misses
      r.mapCalls = pool.mapCalls - before.1 + pool.unmapCalls - before.2
    } else {
      r.mapCalls = calls.load(ordering: .relaxed)
    }
    if let a = before.3, let b = tlbShootdowns() { r.shootdowns = b - a }
    precondition(sink.load(ordering: .relaxed) != 1, "unreachable: keeps the reads")
    return r
  }

  /// One thread's share of a trial; returns a value of the data read, the mapping system
  /// calls it made itself (the mmap peer), and the heap allocations its accesses made.
  func run(_ w: BenchWorkload, _ peer: BenchPeer, _ pool: SFBufPool?, _ seq: [Int], _ n: Int)
    -> (UInt64, Int, Int)
  {
    var acc: UInt64 = 0
    var calls = 0
    // A local copy: reading `self.object` in the loop would retain and release the object
    // on every page, one reference count that both threads would bounce between the cores.
    let object = self.object
    let file = object.fileDescriptor!
    let fd = file.rawValue
    let whole = w == .seq
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: vmPageSize, alignment: vmPageSize)
    defer { buffer.deallocate() }
    let allocations = sfb_thread_allocations()
    switch peer {
    case .pread:
      for k in 0..<n {
        let i = seq[k]
        if whole {
          _ = try? file.read(
            fromAbsoluteOffset: Int64(i * vmPageSize),
            into: UnsafeMutableRawBufferPointer(start: buffer, count: vmPageSize))
          acc &+= benchSumPage(buffer)
        } else {
          _ = try? file.read(
            fromAbsoluteOffset: Int64(i * vmPageSize + wordOffset(i)),
            into: UnsafeMutableRawBufferPointer(start: buffer, count: 8))
          acc &+= buffer.load(as: UInt64.self)
        }
      }
    case .mmap:
      for k in 0..<n {
        let i = seq[k]
        let p = mmap(nil, vmPageSize, PROT_READ, MAP_SHARED, fd, off_t(i * vmPageSize))!
        acc &+= whole ? benchSumPage(p) : p.load(fromByteOffset: wordOffset(i), as: UInt64.self)
        munmap(p, vmPageSize)
        calls += 2
      }
    case .batched where whole:
      // Each run mapped into one batch, and freed in one step (one lock) before the next.
      var run = SFBufBatch(pool: pool!, capacity: runLength)
      var k = 0
      while k < n {
        let m = min(runLength, n - k)
        try! run.map(object, pages: seq[k]..<(seq[k] + m))
        for j in 0..<run.count { acc &+= benchSumPage(run.address(j)) }
        run.removeAll()
        k += m
      }
    case .refs:
      // The hot pages through the direct map, each read between a locked increment and
      // decrement of a word of its own (in C): the floor of a hit that counts references.
      // Its cells are hot ones, whose pages (`hotPages`) are all held.
      acc &+= seq.withUnsafeBufferPointer { s in
        refsAddresses.withUnsafeBufferPointer { a in
          sfb_c_counted_reads(
            UnsafeRawPointer(s.baseAddress!).assumingMemoryBound(to: CLong.self), n,
            UnsafeRawPointer(a.baseAddress!).assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
            refsCounts)
        }
      }
    case .c where whole:
      let bytes = nsfbufs * vmPageSize
      let window = mmap(nil, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
      acc &+= sfb_c_scan(fd, seq[0], n, runLength, window, nsfbufs)
      munmap(window, bytes)
    case .ahead where whole:
      // The same runs, mapped (and their page-table entries filled) by a helper thread
      // while this one reads the run before.
      let ahead = try! SFBufReadAhead(
        pool: pool!, object: object, pages: seq[0]..<(seq[0] + n), runLength: runLength)
      while let run = try! ahead.next() {
        for j in 0..<run.count { acc &+= benchSumPage(run.address(j)) }
      }
    default:
      let pool = pool!
      for k in 0..<n {
        let i = seq[k]
        acc &+= try! pool.withMapping(of: object.page(i)) { bytes in
          whole
            ? benchSumPage(bytes.baseAddress!)
            : bytes.load(fromByteOffset: wordOffset(i), as: UInt64.self)
        }
      }
    }
    if allocatePerAccess {
      for k in 0..<n { acc &+= UInt64(truncatingIfNeeded: opaqueArray(k).count) }
    }
    return (acc, calls, Int(sfb_thread_allocations() - allocations))
  }

  // MARK: Output

  func table(_ cells: [BenchCell]) -> [(BenchCell, Double, Double)] {
    cells.map { c in
      let d = cells.first {
        $0.workload == c.workload && $0.threads == c.threads && $0.peer == .direct
      }!
      let p = cells.first {
        $0.workload == c.workload && $0.threads == c.threads && $0.peer == .pread
      }!
      return (c, c.median / d.median, c.median / p.median)
    }
  }

  func printTable(_ cells: [BenchCell]) {
    let tlb = tlbShootdowns() != nil
    print(
      "sfbuf bench: window of \(nsfbufs) slots, batch \(batch), runs of \(runLength) pages,"
        + " object of \(pages) pages, \(trialCount) trials per cell, \(Int(sfbCPUs())) CPUs")
    var t = Table(
      [
        "workload", "thr", "peer", "ns/page", "min", "max", "hit%", "maps/pg", "tlb/pg",
        "tlb/miss", "allocs", "xdirect", "xpread",
      ], leftColumns: 3)
    for (c, vd, vp) in table(cells) {
      let v = c.nsPerPage
      t.add([
        c.workload.rawValue, String(c.threads), c.peer.rawValue, fmt(c.median, 1),
        fmt(v.first, 1, missing: "n/a"), fmt(v.last, 1, missing: "n/a"),
        fmt(c.hitRate.map { $0 * 100 }, 1, missing: "-"), fmt(c.mapCallsPerPage, 3),
        fmt(c.shootdownsPerPage, 3, missing: "n/a"),
        fmt(c.shootdownsPerMiss, 3, missing: tlb ? "-" : "n/a"),
        fmt(c.allocsPerAccess, 3, missing: "n/a"), fmt(vd, 2), fmt(vp, 2),
      ])
    }
    t.print()
    print("ns/page: median of the trials (per thread with 2 threads); x: median over the")
    print("direct map's / pread's in the same row group; tlb: TLB shootdown interrupts.")
    let shown = Set(cells.map(\.peer))
    for (peer, meaning) in BenchPeer.legend where shown.contains(peer) {
      print("\(peer.rawValue): \(meaning)")
    }
  }

  /// The `--json` document.
  struct Report: Encodable {
    struct Config: Encodable {
      var nsfbufs, batch, runPages, objectPages, trials, cpus: Int
      var quick: Bool
    }
    struct NsPerPage: Encodable {
      var median, min, max: Figure<Double>
    }
    struct Cell: Encodable {
      var workload: String
      var threads: Int
      var peer: String
      var pages: Int
      var nsPerPage: NsPerPage
      var hitRate, mapCallsPerPage, shootdownsPerPage, shootdownsPerMiss: Figure<Double>
      var allocsPerAccess, vsDirect, vsPread: Figure<Double>
    }
    var schema = "sfbuf-bench-pages/2"
    var config: Config
    var tlbCounter: Bool
    var allocationsCounted: Bool
    var cells: [Cell]
  }

  func report(_ cells: [BenchCell]) -> Report {
    Report(
      config: .init(
        nsfbufs: nsfbufs, batch: batch, runPages: runLength, objectPages: pages,
        trials: trialCount, cpus: sfbCPUs(), quick: quick),
      tlbCounter: tlbShootdowns() != nil, allocationsCounted: countsAllocations,
      cells: table(cells).map { c, vd, vp in
        let v = c.nsPerPage
        return Report.Cell(
          workload: c.workload.rawValue, threads: c.threads, peer: c.peer.rawValue,
          pages: c.pages,
          nsPerPage: .init(median: Figure(c.median), min: Figure(v.first), max: Figure(v.last)),
          hitRate: Figure(c.hitRate), mapCallsPerPage: Figure(c.mapCallsPerPage),
          shootdownsPerPage: Figure(c.shootdownsPerPage),
          shootdownsPerMiss: Figure(c.shootdownsPerMiss),
          allocsPerAccess: Figure(c.allocsPerAccess),
          vsDirect: Figure(vd), vsPread: Figure(vp))
      })
  }
}

// MARK: - Helpers

/// malloc(3), out of the optimiser's sight (it may drop a malloc whose memory is unused).
@_optimize(none) func opaqueMalloc(_ n: Int) -> UnsafeMutableRawPointer? { malloc(n) }

/// A new heap array of `k % 7 + 1` elements, out of the optimiser's sight.
@_optimize(none) func opaqueArray(_ k: Int) -> [Int] { Array(repeating: k, count: k % 7 + 1) }

/// Where in page `i` a one-word access reads (spread over the page's cache lines).
@inline(__always) func wordOffset(_ i: Int) -> Int { (i & 63) * 64 }

/// Every word of a page, added up.
@inline(__always) func benchSumPage(_ p: UnsafeRawPointer) -> UInt64 {
  var s: UInt64 = 0
  for k in 0..<(vmPageSize / 8) { s &+= p.load(fromByteOffset: k * 8, as: UInt64.self) }
  return s
}

func sfbCPUs() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

/// The sum over CPUs of the `TLB:` line of /proc/interrupts, or nil without it.
func tlbShootdowns() -> Int? {
  guard let f = fopen("/proc/interrupts", "r") else { return nil }
  defer { fclose(f) }
  var line = [CChar](repeating: 0, count: 4096)
  while fgets(&line, Int32(line.count), f) != nil {
    let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let fields = s.split(separator: " ", omittingEmptySubsequences: true)
    guard fields.first == "TLB:" else { continue }
    return fields.dropFirst().prefix { Int($0) != nil }.reduce(0) { $0 + Int($1)! }
  }
  return nil
}

/// A one-shot start line for the threads of a trial; the last to arrive runs `atStart`.
final class BenchBarrier: Sendable {
  private let arrived = Atomic<Int>(0)
  private let parties: Int
  init(_ parties: Int) { self.parties = parties }
  func wait(atStart: () -> Void) {
    if arrived.add(1, ordering: .acquiringAndReleasing).newValue == parties {
      atStart()
      arrived.store(-1, ordering: .releasing)
    }
    while arrived.load(ordering: .acquiring) != -1 {}
  }
}

/// The start time of a trial, written by one thread and read after the join.
final class BenchShared: Sendable {
  private let bits = Atomic<UInt64>(0)
  init(_ v: Double) { set(v) }
  func set(_ v: Double) { bits.store(v.bitPattern, ordering: .releasing) }
  func get() -> Double { Double(bitPattern: bits.load(ordering: .acquiring)) }
}
