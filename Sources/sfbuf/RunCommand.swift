import ArgumentParser
import Glibc
import SFBufHost
import Synchronization

/// The main job: several threads allocate, verify and free mappings of random pages with a
/// skewed popularity, through a window several times smaller than the object; then the
/// counters as `netstat -m` prints them, the hit rate and the throughput.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Allocate, verify and free mappings from several threads; print the counters.",
    discussion: """
      The window size comes from --nsfbufs, else from SFBUF_NSFBUFS, else 512 slots. \
      Every page carries a tag written with pwrite(2); every mapping handed out is checked \
      against it, so a wrong mapping is reported, not just counted. A thread holding \
      nothing sleeps for a slot; one holding mappings asks with SFB_NOWAIT and, refused, \
      gives them all back first, so that every window size finishes.

      SIGUSR1 prints the counters as they are (as dd does). SIGINT (Ctrl-C), SIGTERM or \
      SIGHUP stop the run early: the threads free what they hold, the counters so far are \
      printed as at the end of a run, and the exit status is 128 + the signal's number. \
      --json prints one object, \
      keys sorted: {"schema": "sfbuf-run/1", "threads", "pages", "hold", "seconds", \
      "skew", "seed", "pool" (window or direct map), "nsfbufs" (null for the direct map), \
      "allocations", "wrongMappings", "givenBack", "elapsedSeconds", \
      "allocationsPerSecond", "stats": {"nsfbufs", "nsfbufsused", "nsfbufspeak", \
      "sfAllocwait", "sfAllocfail", "hits", "misses", "remaps", "hitRate"}}.
      """
  )

  @OptionGroup var poolOptions: PoolOptions
  @Option(help: ArgumentHelp("Pages in the anonymous object.", valueName: "count"))
  var pages = 4096
  @Option(help: ArgumentHelp("Threads allocating (1...256).", valueName: "count"))
  var threads = 4
  @Option(
    help: ArgumentHelp(
      "Mappings each thread holds at once (more than nsfbufs / threads: refusals).",
      valueName: "count"))
  var hold = 8
  @Option(help: ArgumentHelp("Seconds to run.", valueName: "time"))
  var seconds = 3.0
  @Option(help: ArgumentHelp("Zipf exponent of page popularity (0: uniform).", valueName: "s"))
  var skew = 0.99
  @Option(help: ArgumentHelp("Random seed.", valueName: "n"))
  var seed: UInt64 = 1
  @Flag(help: "Print one JSON object instead of the text.")
  var json = false

  func validate() throws {
    guard pages > 0 else { throw ValidationError("--pages must be positive, not \(pages)") }
    guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1...256") }
    guard hold >= 1 else { throw ValidationError("--hold must be at least 1") }
    guard seconds > 0 && seconds <= 600 else {
      throw ValidationError("--seconds must be in (0, 600]")
    }
    guard skew >= 0 else { throw ValidationError("--skew must not be negative") }
  }

  func run() throws {
    SignalWatcher.start()
    let pool = try poolOptions.makePool()
    SignalWatcher.onStatus { pool.stats.netstatLines }
    // Its threads only read through their mappings (the tags go in with pwrite).
    let object = try VMObject.anonymous(
      size: pages * vmPageSize, name: "sfbuf-run", access: .readOnly)
    try tagPages(object, count: pages)
    try object.wire(pages: 0..<pages)
    defer { object.unwire(pages: 0..<pages) }

    let kind = poolOptions.describe(pool)
    if !json {
      print(
        "sfbuf: \(threads) threads, \(kind), object of \(pages) pages, Zipf(\(skew)),"
          + " holding \(hold) each, \(fmt(seconds, 1)) s")
    }
    let zipf = Zipf(n: pages, s: skew)
    let results = ThreadResults(threads)
    // A terminating signal ends the run early, and is remembered for the exit status.
    let stop = StopSignal()
    SignalWatcher.onGracefulStop { stop.number.store($0, ordering: .relaxed) }
    let deadline = now() + seconds
    let start = now()
    runThreads(threads) { t in
      var rng = FastRandom(seed: seed &+ UInt64(t) &* 0x1234_5678_9ABC)
      // The last `hold` mappings stay held, in a ring that owns them. Only a thread that
      // holds nothing may sleep for a slot; with mappings held it asks with .noWait and,
      // refused, gives back everything it holds and asks again, sleeping: as sendfile does,
      // so that no window size can leave every thread asleep holding slots.
      var held = HeldRing(capacity: hold)
      var ops = 0
      var bad = 0
      var givenBack = 0
      while ops & 255 != 0 || now() < deadline && stop.number.load(ordering: .relaxed) == 0 {
        let index = zipf.draw(&rng)
        held.free(at: ops % hold)
        let buf: SFBuf
        do throws(SFBufError) {
          buf = try pool.allocate(object.page(index), flags: held.isEmpty ? [] : .noWait)
        } catch .wouldBlock {
          held.freeAll()
          givenBack += 1
          buf = try! pool.allocate(object.page(index))
        } catch {
          fatalError("sfbuf run: allocation of page \(index) failed: \(error)")
        }
        if buf.bytes.load(as: UInt64.self) != tag(object, index) { bad += 1 }
        held.put(buf, at: ops % hold)
        ops += 1
      }
      held.freeAll()
      results.set(t, ops: ops, bad: bad, givenBack: givenBack)
    }
    let elapsed = now() - start
    let s = pool.stats
    if json {
      try printJSON(
        Report(
          threads: threads, pages: pages, hold: hold, seconds: seconds, skew: skew, seed: seed,
          pool: pool.isDirectMap ? "direct map" : "window",
          nsfbufs: Figure(pool.isDirectMap ? nil : pool.nsfbufs), allocations: results.ops,
          wrongMappings: results.bad, givenBack: results.givenBack, elapsedSeconds: elapsed,
          allocationsPerSecond: Figure(Double(results.ops) / elapsed), stats: StatsJSON(s)))
    } else {
      for line in s.netstatLines { print(line) }
      print(
        "hits \(s.hits), misses \(s.misses), remaps \(s.remaps),"
          + " hit rate \(fmt(s.hitRate * 100, 1))%")
      print(
        "\(results.givenBack) times a thread gave back its mappings after a refused SFB_NOWAIT")
      print(
        "\(results.ops) allocations verified in \(fmt(elapsed)) s:"
          + " \(fmt(Double(results.ops) / elapsed / 1e6, 3)) M/s, \(results.bad) wrong mappings")
    }
    if results.bad > 0 { throw ExitCode.failure }
    if s.nsfbufsused != 0 {
      throw ToolError(
        "\(s.nsfbufsused) slots still in use after every thread freed its mappings")
    }
    let sig = stop.number.load(ordering: .relaxed)
    if sig != 0 {
      printError(
        "sfbuf run: stopped by \(signalName(sig)) after \(fmt(elapsed)) s of \(fmt(seconds, 1))")
      throw ExitCode(128 + sig)
    }
  }

  /// The signal that stopped the run early, or 0.
  final class StopSignal: Sendable {
    let number = Atomic<Int32>(0)
  }

  func signalName(_ sig: Int32) -> String {
    switch sig {
    case SIGINT: "SIGINT"
    case SIGTERM: "SIGTERM"
    case SIGHUP: "SIGHUP"
    default: "signal \(sig)"
    }
  }

  /// The `--json` document.
  struct Report: Encodable {
    var schema = "sfbuf-run/1"
    var threads, pages, hold: Int
    var seconds, skew: Double
    var seed: UInt64
    var pool: String
    var nsfbufs: Figure<Int>
    var allocations, wrongMappings, givenBack: Int
    var elapsedSeconds: Double
    var allocationsPerSecond: Figure<Double>
    var stats: StatsJSON
  }
}

/// The mappings a thread of the run holds: a fixed ring of places, each empty or owning one
/// mapping. Ownership stays checked: a mapping goes in by `consuming`, and leaves only by
/// being freed (by the ring, or when the ring goes away).
struct HeldRing: ~Copyable {
  private let places: UnsafeMutablePointer<SFBuf?>
  private let capacity: Int
  /// The number of places that hold a mapping.
  private(set) var count = 0

  init(capacity: Int) {
    precondition(capacity > 0, "HeldRing: capacity must be positive")
    self.capacity = capacity
    places = .allocate(capacity: capacity)
    for i in 0..<capacity { (places + i).initialize(to: nil) }
  }

  var isEmpty: Bool { count == 0 }

  /// Frees the mapping at place `i`, if there is one.
  mutating func free(at i: Int) {
    if let buf = (places + i).move() {
      buf.free()
      count -= 1
    }
    (places + i).initialize(to: nil)
  }

  /// Puts `buf` at place `i`, which must be empty.
  mutating func put(_ buf: consuming SFBuf, at i: Int) {
    switch (places + i).move() {
    case .some(let old):
      _ = consume old
      fatalError("HeldRing.put: place \(i) already holds a mapping")
    case .none:
      (places + i).initialize(to: buf)
      count += 1
    }
  }

  /// Frees every mapping held.
  mutating func freeAll() {
    for i in 0..<capacity { free(at: i) }
  }

  deinit {
    places.deinitialize(count: capacity)
    places.deallocate()
  }
}

/// A pool's counters in JSON (camelCase).
struct StatsJSON: Encodable {
  var nsfbufs, nsfbufsused, nsfbufspeak, sfAllocwait, sfAllocfail, hits, misses, remaps: Int
  var hitRate: Figure<Double>
  init(_ s: SFBufStats) {
    nsfbufs = s.nsfbufs
    nsfbufsused = s.nsfbufsused
    nsfbufspeak = s.nsfbufspeak
    sfAllocwait = s.sf_allocwait
    sfAllocfail = s.sf_allocfail
    hits = s.hits
    misses = s.misses
    remaps = s.remaps
    hitRate = Figure(s.hitRate)
  }
}

/// Per-thread totals, written once per thread.
final class ThreadResults: Sendable {
  private struct Totals {
    var ops: [Int]
    var bad: [Int]
    var givenBack: [Int]
  }
  private let totals: Mutex<Totals>
  init(_ n: Int) {
    let zeros = [Int](repeating: 0, count: n)
    totals = Mutex(Totals(ops: zeros, bad: zeros, givenBack: zeros))
  }
  func set(_ t: Int, ops: Int, bad: Int, givenBack: Int) {
    totals.locked {
      $0.ops[t] = ops
      $0.bad[t] = bad
      $0.givenBack[t] = givenBack
    }
  }
  var ops: Int { totals.locked { $0.ops.reduce(0, +) } }
  var bad: Int { totals.locked { $0.bad.reduce(0, +) } }
  var givenBack: Int { totals.locked { $0.givenBack.reduce(0, +) } }
}

/// The tag of page `index` of `object`: the object's id and the page index.
func tag(_ object: VMObject, _ index: Int) -> UInt64 {
  UInt64(object.id) << 32 | UInt64(index)
}

/// Writes every page's tag with pwrite(2), a different path from the mappings under test.
func tagPages(_ object: VMObject, count: Int) throws {
  let fd = object.fileDescriptor!
  for i in 0..<count {
    let t = tag(object, i)
    let n: Int
    do {
      n = try withUnsafeBytes(of: t) { try fd.write(toAbsoluteOffset: Int64(i * vmPageSize), $0) }
    } catch {
      throw ToolError("pwrite of page \(i)'s tag failed: \(error)")
    }
    if n != 8 { throw ToolError("pwrite of page \(i)'s tag wrote \(n) bytes of 8") }
  }
}

/// An error the tool reports as `Error: <message>` with exit status 1, without usage text.
struct ToolError: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}
