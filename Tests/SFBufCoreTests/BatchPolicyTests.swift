@_spi(Testing) import SFBufCore
import Testing

/// A machine that only records: which slot maps which page, and every batch release.
final class BatchRecordingMachine: UntrackedTestMachine {
  /// Pages `n` and `n + 1000` share a hash key (a collision, which a key alone must not
  /// take for a match).
  struct Key: SFBufPageKey {
    var n: Int
    var hashKey: UInt { UInt(n % 1000) }
  }
  final class Sleeper {}

  var mapped: [Int: Int] = [:]
  var releases: [Range<Int>] = []
  var maps = 0
  var runMaps = 0
  /// Slots the test holds references to, which a release must never cover.
  var held: Set<Int> = []
  /// The machine's ``SFBufMachine/runBoundary``.
  var boundary = Int.max
  /// Every run mapped: its first slot and length.
  var runs: [(slot: Int, count: Int)] = []

  func lock() {}
  func unlock() {}
  func map(_ page: Key, slot: Int) throws(SFBufMapError) -> Bool {
    maps += 1
    mapped[slot] = page.n
    return true
  }
  func makeSleeper() -> Sleeper { Sleeper() }
  func prepareToSleep(_ sleeper: Sleeper) {}
  func sleep(_ sleeper: Sleeper, interruptible: Bool) -> Bool { false }
  func wake(_ sleeper: Sleeper) {}
  func unmap(slots: Range<Int>) {
    precondition(held.isDisjoint(with: slots), "a release covered a slot in use")
    releases.append(slots)
  }
  static var mapsRuns: Bool { true }
  var runBoundary: Int { boundary }
  func map(run first: Key, count: Int, slot: Int) throws(SFBufMapError) -> Bool {
    runMaps += 1
    runs.append((slot, count))
    for i in 0..<count { mapped[slot + i] = first.n + i }
    return true
  }
}

@Suite("Batched reclaim and runs in the core")
struct BatchPolicyTests {
  typealias Key = BatchRecordingMachine.Key

  @Test("both policies hand out the same slots in the same order, with the same counters")
  func samePolicy() throws {
    var results: [[Int]] = []
    var counters: [SFBufStats] = []
    for policy in [SFBufReclaimPolicy.faithful, .batched(batch: 3)] {
      let m = BatchRecordingMachine()
      let a = SFBufAllocator(machine: m, nsfbufs: 8, policy: policy)
      var slots: [Int] = []
      var held: [Int] = []
      var rng: UInt64 = 42
      for step in 0..<2000 {
        rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let page = Int(rng >> 33) % 24
        if let s = try? a.allocate(Key(n: page), flags: .noWait) {
          #expect(m.mapped[s] == page)
          slots.append(s)
          held.append(s)
          m.held.insert(s)
        }
        if held.count > 3 || (step % 3 == 0 && !held.isEmpty) {
          let s = held.removeFirst()
          if a.free(s) { m.held.remove(s) }
        }
        #expect(a.checkInvariants() == nil)
      }
      for s in held { a.free(s) }
      results.append(slots)
      counters.append(a.stats)
      if case .batched = policy { #expect(!m.releases.isEmpty) }
    }
    #expect(results[0] == results[1])
    #expect(counters[0] == counters[1])
  }

  @Test("a batch covers the least recently freed slots, never a slot in use")
  func batchSkipsInUse() throws {
    let m = BatchRecordingMachine()
    let a = SFBufAllocator(machine: m, nsfbufs: 8, policy: .batched(batch: 8))
    for i in 0..<8 { _ = try a.allocate(Key(n: i)) }
    // Keep slots 2 and 5 in use; free the rest in address order.
    m.held = [2, 5]
    for s in [0, 1, 3, 4, 6, 7] { a.free(s) }
    _ = try a.allocate(Key(n: 100))  // a miss on a slot whose translation is present
    #expect(m.releases == [0..<2, 3..<5, 6..<8])
    // The next misses land on released slots: no new release until they are used up.
    for i in 101..<106 { _ = try a.allocate(Key(n: i)) }
    #expect(m.releases.count == 3)
    #expect(a.checkInvariants() == nil)
  }

  @Test("a run maps adjacent slots with one call; each slot is its own mapping")
  func runs() throws {
    let m = BatchRecordingMachine()
    let a = SFBufAllocator(machine: m, nsfbufs: 16)
    let run = try #require(try a.allocateRun(count: 4) { Key(n: 40 + $0) })
    let first = run.first
    #expect(run.count == 4)
    #expect(m.runMaps == 1 && m.maps == 0)
    for i in 0..<4 {
      #expect(a.page(ofSlot: first + i).n == 40 + i)
      #expect(a.cachedSlot(of: Key(n: 40 + i)) == first + i)
      #expect(a.references(ofSlot: first + i) == 1)
    }
    #expect(a.stats.misses == 4 && a.stats.remaps == 4 && a.stats.nsfbufsused == 4)
    // Freed one by one; a hit finds each.
    for i in 0..<4 { a.free(first + i) }
    #expect(try a.allocate(Key(n: 42)) == first + 2)
    // 41, 42, 43 are still cached in order in adjacent slots (one free, one in use): a run
    // hit, with no mapping; 44 is not cached, so the run ends before it.
    let again = try #require(try a.allocateRun(count: 4) { Key(n: 41 + $0) })
    #expect(again == (first + 1, 3))
    #expect(m.runMaps == 1 && m.maps == 0)
    #expect(a.stats.hits == 4 && a.stats.misses == 4)
    #expect(a.references(ofSlot: first + 2) == 2)
    for s in again.first..<(again.first + again.count) { a.free(s) }
    a.free(first + 2)
    // A run stops before a page in use: 100, alone in its slot, is the caller's next hit.
    _ = try a.allocate(Key(n: 100))
    #expect(try a.allocateRun(count: 4) { Key(n: 100 + $0) } == nil)
    // 40 in use: 38 and 39 come before it, a run of 2 (38 is not cached: no run hit).
    _ = try a.allocate(Key(n: 40))
    let cut = try #require(try a.allocateRun(count: 4) { Key(n: 38 + $0) })
    #expect(cut.count == 2 && m.runMaps == 2)
    for i in 0..<2 { #expect(a.cachedSlot(of: Key(n: 38 + i)) == cut.first + i) }
    #expect(a.cachedSlot(of: Key(n: 40)) == first)
    #expect(a.stats.nsfbufsused == 4)
    #expect(a.checkInvariants() == nil)
  }

  /// Runs look pages up by key and make a page only to confirm a key found: a page in use
  /// (40) and one cached (41) whose keys are those of 1040 and 1041 neither stop nor
  /// shorten the run of 1040..<1044, and stay cached where they were.
  @Test("a run looked up by key confirms a key found with the page itself")
  func runKeyCollision() throws {
    let m = BatchRecordingMachine()
    let a = SFBufAllocator(machine: m, nsfbufs: 16)
    let s40 = try a.allocate(Key(n: 40))
    let s41 = try a.allocate(Key(n: 41))
    a.free(s41)
    let run = try #require(
      try a.allocateRun(
        count: 4, key: { Key(n: 1040 + $0).hashKey }, fill: { $1 = Key(n: 1040 + $0) })
    )
    #expect(run.count == 4 && m.runMaps == 1)
    for i in 0..<4 { #expect(a.cachedSlot(of: Key(n: 1040 + i)) == run.first + i) }
    #expect(a.cachedSlot(of: Key(n: 40)) == s40 && a.cachedSlot(of: Key(n: 41)) == s41)
    #expect(a.checkInvariants() == nil)
  }

  /// A run's `fill` is handed each slot's cell with the page the slot cached, so that the
  /// host can reuse it (a page of the same object costs no retain then); a fresh slot's
  /// cell is empty. What `fill` stores is what the slot caches.
  @Test("a run's fill is given the page each slot cached")
  func runFillSeesCachedPage() throws {
    let m = BatchRecordingMachine()
    let a = SFBufAllocator(machine: m, nsfbufs: 4)
    // The cells that held a page when `fill` was called, by page number.
    var given: [Int: Key] = [:]
    func run(from n: Int) throws -> (first: Int, count: Int) {
      try #require(
        try a.allocateRun(
          count: 4, key: { Key(n: n + $0).hashKey },
          fill: {
            if let old = $1 { given[$0] = old }
            $1 = Key(n: n + $0)
          }))
    }
    let first = try run(from: 100)
    #expect(given.isEmpty)
    for s in first.first..<(first.first + 4) { a.free(s) }
    let second = try run(from: 200)
    #expect(second.first == first.first)
    #expect(given == [0: Key(n: 100), 1: Key(n: 101), 2: Key(n: 102), 3: Key(n: 103)])
    for i in 0..<4 {
      #expect(a.cachedSlot(of: Key(n: 200 + i)) == second.first + i)
      #expect(a.cachedSlot(of: Key(n: 100 + i)) == nil)
    }
    #expect(a.checkInvariants() == nil)
  }

  /// A `fill` that stores another page than the one whose key the run looked up would
  /// leave a slot hashed under a key that is not its page's: the run stops the process.
  @Test("a run's fill that stores the wrong page traps")
  func runFillWrongPage() async {
    await #expect(processExitsWith: .failure) {
      let a = SFBufAllocator(machine: BatchRecordingMachine(), nsfbufs: 4)
      _ = try? a.allocateRun(
        count: 4, key: { Key(n: 100 + $0).hashKey }, fill: { $1 = Key(n: 200 + $0) })
    }
  }

  @Test("a run hit does not take pages cached out of order")
  func runHitNeedsOrder() throws {
    let m = BatchRecordingMachine()
    let a = SFBufAllocator(machine: m, nsfbufs: 16)
    // 7 then 6, one by one: adjacent slots, but in the wrong order.
    let s7 = try a.allocate(Key(n: 7))
    let s6 = try a.allocate(Key(n: 6))
    a.free(s7)
    a.free(s6)
    let run = try #require(try a.allocateRun(count: 2) { Key(n: 6 + $0) })
    #expect(m.runMaps == 1, "mapped again as a run: \(run)")
    #expect(a.stats.hits == 0)
    #expect(a.checkInvariants() == nil)
  }

  @Test("runs never cross the machine's run boundary, and are at most that long")
  func runBoundary() throws {
    let m = BatchRecordingMachine()
    m.boundary = 4
    let a = SFBufAllocator(machine: m, nsfbufs: 16, policy: .batched(batch: 4))
    // A longer run asked for is cut to the boundary's length, not refused.
    let long = try #require(try a.allocateRun(count: 6) { Key(n: 1000 + $0) })
    #expect(long.count == 4 && long.first % 4 == 0)
    var held: [(first: Int, count: Int)] = [long]
    var rng: UInt64 = 7
    var next = 0
    for _ in 0..<300 {
      rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let want = 2 + Int(rng >> 40) % 5
      if let run = try a.allocateRun(count: want, flags: .noWait, page: { Key(n: next + $0) }) {
        held.append(run)
        next += run.count
      } else {
        next += 1
      }
      if held.count > 2 || rng >> 62 == 0, !held.isEmpty {
        let run = held.removeFirst()
        for s in run.first..<(run.first + run.count) { a.free(s) }
      }
      #expect(a.checkInvariants() == nil)
    }
    #expect(m.runs.count > 50)
    for run in m.runs {
      #expect(run.count <= 4)
      #expect(run.slot / 4 == (run.slot + run.count - 1) / 4, "run \(run) crosses a boundary")
    }
    // Lengths that do not divide the boundary still find a block inside a stretch.
    #expect(m.runs.contains { $0.count == 3 })
  }
}
