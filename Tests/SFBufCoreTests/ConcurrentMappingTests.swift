import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Synchronization
import Testing

/// A machine whose mappings can be held open: `map` of a gated page blocks (at most 10 s)
/// until the test opens the gate, so that a test can look at the allocator while a miss maps
/// outside the lock. It maps concurrently, keeps no TLBs (so hits on slots in use take the
/// lock-free path), and sleeps on real threads.
final class GatedMachine: UntrackedTestMachine, @unchecked Sendable {
  struct Key: SFBufPageKey {
    var n: Int
    var hashKey: UInt { UInt(n) }
  }
  final class Sleeper: @unchecked Sendable {
    let woken = Atomic<Bool>(false)
  }
  struct State {
    var gated: Set<Int> = []
    var refuseOnce: Set<Int> = []
    /// Pages whose `map` began, in order.
    var entered: [Int] = []
    /// For each `map`, whether the allocator's lock was held.
    var lockedDuringMap: [Bool] = []
  }

  let state = Shared(State())
  private let held = Atomic<Bool>(false)
  private let mutex = Shared(())

  func lock() {
    // A spin lock is enough for a test: it is held for a few instructions at a time.
    while !held.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
      sched_yield()
    }
  }
  func unlock() { held.store(false, ordering: .releasing) }

  func map(_ page: Key, slot: Int) throws(SFBufMapError) -> Bool {
    let locked = held.load(ordering: .relaxed)
    state.with {
      $0.entered.append(page.n)
      $0.lockedDuringMap.append(locked)
    }
    _ = waitUntil { !self.state.with { $0.gated.contains(page.n) } }
    if state.with({ $0.refuseOnce.remove(page.n) != nil }) { throw SFBufMapError(code: 13) }
    return true
  }
  static var mapsConcurrently: Bool { true }
  static var mapsRuns: Bool { true }
  /// A run is gated and refused as its first page is.
  func map(run first: Key, count: Int, slot: Int) throws(SFBufMapError) -> Bool {
    try map(first, slot: slot)
  }
  func makeSleeper() -> Sleeper { Sleeper() }
  func prepareToSleep(_ s: Sleeper) { s.woken.store(false, ordering: .relaxed) }
  func sleep(_ s: Sleeper, interruptible: Bool) -> Bool {
    _ = waitUntil { s.woken.load(ordering: .acquiring) }
    return true
  }
  func wake(_ s: Sleeper) { s.woken.store(true, ordering: .releasing) }

  func entered(_ n: Int) -> Int { state.with { $0.entered.filter { $0 == n }.count } }

  /// Gates page `n` (refusing its first mapping if `refusing`), runs `mapper` on a thread
  /// until it is inside the `map` of page `n`, then `waiter` on another, and `meanwhile`
  /// here; 50 ms later opens the gate and joins both. Returns whether both were still
  /// blocked when the gate opened.
  func race(
    page n: Int, refusing: Bool = false, mapper: @escaping @Sendable () -> Void,
    waiter: @escaping @Sendable () -> Void, meanwhile: () throws -> Void = {}
  ) rethrows -> Bool {
    state.with {
      $0.gated.insert(n)
      if refusing { $0.refuseOnce.insert(n) }
    }
    let first = TestThread(mapper)
    #expect(waitUntil { self.entered(n) == 1 })
    let second = TestThread(waiter)
    try meanwhile()
    usleep(50_000)
    let blocked = !first.isDone && !second.isDone
    state.with { _ = $0.gated.remove(n) }
    first.join()
    second.join()
    return blocked
  }
}

/// The batched policy's misses map outside the lock (the batched reclaim policy): what an allocation
/// of the same page, or of another, sees meanwhile.
@Suite("Mapping outside the lock")
struct ConcurrentMappingTests {
  typealias Key = GatedMachine.Key

  @Test("the faithful policy maps with the lock held, the batched one without it")
  func whereTheLockIs() throws {
    for (policy, locked) in [(SFBufReclaimPolicy.faithful, true), (.batched(batch: 2), false)] {
      let m = GatedMachine()
      let a = SFBufAllocator(machine: m, nsfbufs: 4, policy: policy)
      a.free(try a.allocate(Key(n: 1)))
      _ = try a.allocate(Key(n: 2))
      #expect(m.state.get.lockedDuringMap == [locked, locked])
      #expect(a.checkInvariants() == nil)
    }
  }

  func batched(_ slots: Int, _ m: GatedMachine) -> SFBufAllocator<GatedMachine> {
    SFBufAllocator(machine: m, nsfbufs: slots, policy: .batched(batch: 2))
  }

  @Test("a hit on a page being mapped waits for that mapping, even with SFB_NOWAIT")
  func hitWaits() throws {
    let m = GatedMachine()
    nonisolated(unsafe) let a = batched(4, m)
    let first = Shared<Int?>(nil)
    let second = Shared<Int?>(nil)
    var other = -1
    let blocked = try m.race(
      page: 7, mapper: { first.with { $0 = try? a.allocate(Key(n: 7)) } },
      waiter: { second.with { $0 = try? a.allocate(Key(n: 7), flags: .noWait) } },
      meanwhile: {
        // The lock is free meanwhile: another page misses and maps at once.
        other = try a.allocate(Key(n: 3))
        #expect(a.checkInvariants() == nil)
      })
    #expect(blocked, "nobody may use page 7's slot before it is mapped")
    let s = try #require(first.get)
    #expect(second.get == s)
    #expect(a.references(ofSlot: s) == 2)
    #expect(m.entered(7) == 1, "page 7 mapped once")
    #expect(other != s)
    let st = a.stats
    #expect((st.hits, st.misses, st.remaps, st.nsfbufsused) == (1, 2, 2, 2))
    #expect(a.checkInvariants() == nil)
  }

  @Test("a lock-free hit does not take a slot that is still being mapped")
  func lockFreeHitWaits() throws {
    let m = GatedMachine()
    nonisolated(unsafe) let a = batched(4, m)
    // While page 5 is mapped its slot has one reference (the mapper's): the case where hits
    // skip the lock.
    let blocked = try m.race(
      page: 5, mapper: { _ = try? a.allocate(Key(n: 5)) },
      waiter: { _ = try? a.allocate(Key(n: 5)) })
    #expect(blocked)
    #expect(a.stats.hits == 1)
    #expect(a.references(ofSlot: try #require(a.cachedSlot(of: Key(n: 5)))) == 2)
    #expect(a.checkInvariants() == nil)
  }

  @Test("a refused mapping wakes its waiters, which map the page themselves")
  func refusalWakesWaiters() throws {
    let m = GatedMachine()
    nonisolated(unsafe) let a = batched(4, m)
    let first = Shared<Result<Int, SFBufError>?>(nil)
    let second = Shared<Result<Int, SFBufError>?>(nil)
    let blocked = try m.race(
      page: 9, refusing: true,
      mapper: { first.with { $0 = Result { () throws(SFBufError) in try a.allocate(Key(n: 9)) } } },
      waiter: { second.with { $0 = Result { () throws(SFBufError) in try a.allocate(Key(n: 9)) } } }
    )
    #expect(blocked)
    #expect(throws: SFBufError.mappingRefused(errno: 13)) { try first.get!.get() }
    let s = try second.get!.get()
    #expect(a.page(ofSlot: s) == Key(n: 9))
    #expect(m.entered(9) == 2)
    let st = a.stats
    #expect((st.misses, st.remaps, st.sf_allocfail, st.nsfbufsused) == (2, 1, 1, 1))
    #expect(a.checkInvariants() == nil)
  }

  @Test("a page run maps outside the lock too; its pages' hits wait for it")
  func runWaits() throws {
    let m = GatedMachine()
    nonisolated(unsafe) let a = batched(8, m)
    let first = Shared<Int?>(nil)
    let hit = Shared<Int?>(nil)
    var other = -1
    let blocked = try m.race(
      page: 20,
      mapper: { first.with { $0 = (try? a.allocateRun(count: 4) { Key(n: 20 + $0) })?.first } },
      waiter: { hit.with { $0 = try? a.allocate(Key(n: 22)) } },
      meanwhile: {
        other = try a.allocate(Key(n: 1))
        #expect(a.checkInvariants() == nil)
      })
    #expect(blocked)
    let f = try #require(first.get)
    #expect(hit.get == f + 2)
    #expect(!(f..<(f + 4)).contains(other))
    #expect((0..<4).map { a.page(ofSlot: f + $0).n } == [20, 21, 22, 23])
    #expect(a.references(ofSlot: f + 2) == 2)
    let st = a.stats
    #expect((st.hits, st.misses, st.remaps, st.nsfbufsused) == (1, 5, 5, 5))
    #expect(a.checkInvariants() == nil)
  }

  @Test("a refused page run gives every slot back and wakes its pages' waiters")
  func refusedRun() throws {
    let m = GatedMachine()
    nonisolated(unsafe) let a = batched(8, m)
    let run = Shared<Result<(first: Int, count: Int)?, SFBufError>?>(nil)
    let single = Shared<Int?>(nil)
    let blocked = try m.race(
      page: 30, refusing: true,
      mapper: {
        run.with {
          $0 = Result { () throws(SFBufError) in try a.allocateRun(count: 4) { Key(n: 30 + $0) } }
        }
      },
      waiter: { single.with { $0 = try? a.allocate(Key(n: 31)) } })
    #expect(blocked)
    #expect(throws: SFBufError.mappingRefused(errno: 13)) { _ = try run.get!.get() }
    let s = try #require(single.get)
    #expect(a.page(ofSlot: s) == Key(n: 31))
    #expect(m.entered(31) == 1, "the waiter mapped page 31 itself")
    let st = a.stats
    #expect((st.misses, st.remaps, st.sf_allocfail, st.nsfbufsused) == (5, 1, 1, 1))
    #expect(a.freeList().count == 7)
    #expect(a.checkInvariants() == nil)
  }
}

extension GatedMachine.Key: Equatable {}
