@_spi(Testing) import SFBufCore
import Testing

/// The portable algorithm on a machine that records what it is asked to do.
@Suite("Portable allocator")
struct AllocatorTests {
  typealias Allocator = SFBufAllocator<RecordingMachine>

  func make(cpus: Int = 4, slots: Int = 4) -> (Allocator, RecordingMachine) {
    let m = RecordingMachine(cpus: cpus, slots: slots)
    return (Allocator(machine: m, nsfbufs: slots), m)
  }

  @Test("CPU sets: shared miss, private hit, shared hit, remap of a used translation")
  func cpuSetRules() throws {
    let (a, m) = make()
    m.cpu = 1
    // Shared miss on a never-used slot: map, invalidate here, shoot down the other three.
    let s = try a.allocate(Frame(n: 7))
    #expect(
      m.take() == [
        .map(slot: 0, frame: 7), .invalidate(cpu: 1, slot: 0),
        .shootdown(from: 1, slot: 0, cpus: CPUSet(bits: 0b1101)),
      ])
    #expect(a.cpus(ofSlot: s) == .first(4))
    // A hit from any CPU now costs nothing: every TLB is known to be current.
    m.cpu = 3
    _ = try a.allocate(Frame(n: 7))
    #expect(m.take() == [])
    a.free(s)
    a.free(s)
    // Private allocations: pinned, and only the local CPU is made current.
    m.pinned = true
    m.cpu = 2
    for f in 1...3 { _ = try a.allocate(Frame(n: 100 + f), flags: .cpuPrivate) }
    #expect(
      m.take() == [
        .map(slot: 1, frame: 101), .invalidate(cpu: 2, slot: 1),
        .map(slot: 2, frame: 102), .invalidate(cpu: 2, slot: 2),
        .map(slot: 3, frame: 103), .invalidate(cpu: 2, slot: 3),
      ])
    // The private mapping later used shared: the shootdown is paid now, on the hit.
    m.cpu = 0
    _ = try a.allocate(Frame(n: 101))
    #expect(
      m.take() == [
        .invalidate(cpu: 0, slot: 1), .shootdown(from: 0, slot: 1, cpus: CPUSet(bits: 0b1010)),
      ])
    // Remapping slot 0 (live, used): its set is cleared, so the shared use shoots down all.
    m.cpu = 2
    _ = try a.allocate(Frame(n: 200), flags: .cpuPrivate)
    #expect(m.take() == [.map(slot: 0, frame: 200), .invalidate(cpu: 2, slot: 0)])
    #expect(a.cpus(ofSlot: 0) == CPUSet(cpu: 2))
    #expect(a.checkInvariants() == nil)
  }

  @Test("faults take out exactly the step they name")
  func faults() throws {
    let (a, m) = make()
    a.injectFaults(.skipShootdownOnHit)
    m.pinned = true
    let s = try a.allocate(Frame(n: 1), flags: .cpuPrivate)
    _ = m.take()
    m.cpu = 1
    _ = try a.allocate(Frame(n: 1))
    #expect(m.take() == [.invalidate(cpu: 1, slot: s)])  // no shootdown to CPUs 2 and 3
    a.injectFaults(.skipLocalInvalidate)
    _ = try a.allocate(Frame(n: 2), flags: .cpuPrivate)
    #expect(m.take() == [.map(slot: 1, frame: 2)])
  }

  @Test("a refused mapping returns the slot to the head of the free list; counters true")
  func refused() throws {
    let (a, m) = make(slots: 3)
    m.refuse = [9]
    let x = try a.allocate(Frame(n: 1))
    a.free(x)
    #expect(a.freeList() == [1, 2, 0])
    #expect(throws: SFBufError.mappingRefused(errno: 13)) { try a.allocate(Frame(n: 9)) }
    #expect(a.freeList() == [1, 2, 0])
    let s = a.stats
    #expect(s.sf_allocfail == 1 && s.nsfbufsused == 0 && s.misses == 2 && s.remaps == 1)
    #expect(a.checkInvariants() == nil)
  }

  @Test("a mapping refused under the lock leaves the peak, the slot's generation, the hooks")
  func refusedLeavesNoTrace() throws {
    let (a, m) = make(slots: 2)
    m.refuse = [9]
    let x = try a.allocate(Frame(n: 1))
    let g = a.generation(ofSlot: 1)
    #expect(throws: SFBufError.mappingRefused(errno: 13)) { try a.allocate(Frame(n: 9)) }
    #expect(a.stats.nsfbufspeak == 1)
    #expect(a.generation(ofSlot: 1) == g)
    #expect(m.busy && m.busyPeriods == 1)
    a.free(x)
    #expect(a.checkInvariants() == nil)
  }

  @Test("hash: a block of 64 keys in adjacent buckets, strides spread, one bucket for one slot")
  func hashLayout() {
    let (a, _) = make(slots: 600)
    #expect(a.hashBucket(ofKey: 0).of == 512)
    for base: UInt in [0, 64 * 1000, 1 << 40 | 128, 0xFFFF_FFFF_FFFF_FFC0] {
      let first = a.hashBucket(ofKey: base).bucket
      for i: UInt in 1..<64 {
        #expect(a.hashBucket(ofKey: base + i).bucket == (first + Int(i)) % 512, "key \(base + i)")
      }
    }
    // A stride of the bucket count (or of 64) would fill one bucket if the keys were only
    // masked; the blocks are spread instead.
    for stride: UInt in [64, 512, 4096] {
      let buckets = Set((0..<64 as Range<UInt>).map { a.hashBucket(ofKey: $0 &* stride).bucket })
      #expect(buckets.count >= 32, "stride \(stride): \(buckets.count) buckets")
    }
    let (one, _) = make(slots: 1)
    #expect(one.hashBucket(ofKey: 12345) == (0, 1))
    #expect(one.hashBucket(ofKey: UInt.max) == (0, 1))
  }

  @Test("sleepers: FIFO, one woken per free, and a woken sleeper finds a hit")
  func sleepers() throws {
    let (a, m) = make(slots: 1)
    let held = try a.allocate(Frame(n: 1))
    var w1: Allocator.Waiter? = nil
    var w2: Allocator.Waiter? = nil
    var w3: Allocator.Waiter? = nil
    #expect(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w1) == nil)
    #expect(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w2) == nil)
    #expect(try a.tryAllocate(Frame(n: 3), flags: [], waiter: &w3) == nil)
    #expect(a.sleepers == 3 && a.stats.sf_allocwait == 3)
    // A newcomer cannot barge past the queue... it is queued too (NOWAIT fails).
    #expect(throws: SFBufError.wouldBlock) { try a.allocate(Frame(n: 4), flags: .noWait) }
    a.free(held)
    #expect(w1!.sleeper.woken == 1 && w2!.sleeper.woken == 0)
    // A newcomer for another page cannot take the slot promised to the woken sleeper.
    #expect(throws: SFBufError.wouldBlock) { try a.allocate(Frame(n: 5), flags: .noWait) }
    let s1 = try #require(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w1))
    // Frame 2 is mapped now; the second sleeper wants it too. Free nothing, wake nobody:
    #expect(w2!.sleeper.woken == 0)
    // ...a hit never needs a free slot, but the sleeper is asleep until a free.
    a.free(s1)
    #expect(w2!.sleeper.woken == 1)
    let s2 = try #require(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w2))
    #expect(s2 == s1)  // found in the hash again: no duplicate mapping
    // w2 got a hit, so the free slot it was promised passes to w3... but there is none free
    // (w2 reactivated it); w3 stays queued until the next free.
    #expect(w3!.sleeper.woken == 0)
    a.free(s2)
    #expect(w3!.sleeper.woken == 1)
    let s3 = try #require(try a.tryAllocate(Frame(n: 3), flags: [], waiter: &w3))
    a.free(s3)
    #expect(a.sleepers == 0)
    #expect(a.checkInvariants() == nil)
    #expect(a.stats.remaps == 3)
  }

  @Test("waiters are kept and reused: sleeping allocates only past the most ever waiting")
  func waitersReused() throws {
    let (a, m) = make(slots: 1)
    for round in 0..<3 {
      let held = try a.allocate(Frame(n: 1))
      var w1: Allocator.Waiter? = nil
      var w2: Allocator.Waiter? = nil
      #expect(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w1) == nil)
      #expect(try a.tryAllocate(Frame(n: 3), flags: .interruptible, waiter: &w2) == nil)
      #expect(m.sleepersMade == 2, "round \(round)")
      a.free(held)
      let s = try #require(try a.tryAllocate(Frame(n: 2), flags: [], waiter: &w1))
      #expect(w1 == nil, "a finished allocation hands its waiter back")
      a.abandon(w2!)  // and so does one given up
      a.free(s)
      #expect(a.checkInvariants() == nil)
    }
  }

  @Test("abandoning a wait after being woken passes the wake-up on")
  func abandonPassesOn() throws {
    let (a, _) = make(slots: 1)
    let held = try a.allocate(Frame(n: 1))
    var w1: Allocator.Waiter? = nil
    var w2: Allocator.Waiter? = nil
    _ = try a.tryAllocate(Frame(n: 2), flags: .interruptible, waiter: &w1)
    _ = try a.tryAllocate(Frame(n: 3), flags: .interruptible, waiter: &w2)
    a.free(held)
    #expect(w1!.sleeper.woken == 1)
    a.abandon(w1!)  // interrupted after the wake-up: w2 must get it
    #expect(w2!.sleeper.woken == 1)
    #expect(try a.tryAllocate(Frame(n: 3), flags: [], waiter: &w2) != nil)
    #expect(a.stats.sf_allocfail == 1)
    #expect(a.checkInvariants() == nil)
  }
}

/// The invariant checker, fed each kind of corruption it exists to catch.
@Suite("Invariant checker catches corruption")
struct InvariantCheckerTests {
  func populated() throws -> SFBufAllocator<RecordingMachine> {
    let a = SFBufAllocator(machine: RecordingMachine(cpus: 2, slots: 4), nsfbufs: 4)
    let x = try a.allocate(Frame(n: 10))
    _ = try a.allocate(Frame(n: 11))
    a.free(x)
    #expect(a.checkInvariants() == nil)
    return a
  }

  @Test("a page mapped by two slots")
  func duplicate() throws {
    let a = try populated()
    a.corrupt(.duplicatePage(0, 2))
    #expect(a.checkInvariants()?.contains("mapped by another slot") == true)
  }

  @Test("a free slot lost from the free list")
  func leaked() throws {
    let a = try populated()
    a.corrupt(.leakFreeSlot(3))
    let v = try #require(a.checkInvariants())
    #expect(v.contains("free count") || v.contains("not free"))
  }

  @Test("nsfbufsused out of step")
  func miscount() throws {
    let a = try populated()
    a.corrupt(.miscountUsed)
    #expect(a.checkInvariants()?.contains("nsfbufsused") == true)
  }

  @Test("a slot left flagged as being mapped")
  func stuckMapping() throws {
    let a = try populated()
    a.corrupt(.stuckMappingFlag(1))
    #expect(a.checkInvariants()?.contains("being mapped") == true)
  }

  @Test("a hit taken without the lock on a page run's slot")
  func lockedOnlyHit() throws {
    let a = try populated()
    #expect(a.checkInvariants() == nil)
    a.corrupt(.lockedOnlyHit(1))
    #expect(a.checkInvariants()?.contains("locked-only but counts hits") == true)
  }
}

@Suite("Counters")
struct StatsTests {
  @Test("netstat -m lines")
  func netstat() {
    var s = SFBufStats()
    s.nsfbufs = 512
    s.nsfbufsused = 3
    s.nsfbufspeak = 40
    s.sf_allocfail = 2
    s.sf_allocwait = 7
    #expect(
      s.netstatLines == [
        "3/40/512 sfbufs in use (current/peak/max)",
        "2 requests for sfbufs denied",
        "7 requests for sfbufs delayed",
      ])
    #expect(SFBufStats().hitRate == 0)
  }
}

/// The machine hooks that let a host keep something alive while slots are in use, and
/// freeing many slots with one lock.
@Suite("Slots-in-use hooks and batch frees")
struct SlotHookTests {
  @Test("the hooks follow the window's busy periods, through hits, misses, refusals and frees")
  func hooksFollowSlotsInUse() throws {
    let m = RecordingMachine(cpus: 1, slots: 2)
    let a = SFBufAllocator(machine: m, nsfbufs: 2)
    func check(_ line: Int = #line) {
      #expect(m.busy == (a.stats.nsfbufsused > 0), "hooks disagree with nsfbufsused (line \(line))")
    }
    let s0 = try a.allocate(Frame(n: 0))  // miss
    check()
    #expect(try a.allocate(Frame(n: 0)) == s0)  // hit on a slot in use: no hook
    check()
    a.free(s0)
    check()
    a.free(s0)  // the last reference
    check()
    #expect(!m.busy && !m.freedLocked && m.busyPeriods == 1)
    _ = try a.allocate(Frame(n: 0))  // a hit on a free cached slot reactivates it
    check()
    m.refuse = [7]
    #expect(throws: SFBufError.mappingRefused(errno: 13)) { try a.allocate(Frame(n: 7)) }
    check()
    a.free(s0)
    check()
    #expect(!m.busy && m.busyPeriods == 2)
    // Two slots in use: freeing one leaves the window busy; one period for both.
    let s1 = try a.allocate(Frame(n: 1))
    let s2 = try a.allocate(Frame(n: 2))
    a.free(s1)
    check()
    #expect(m.busy)
    a.free(s2)
    check()
    #expect(!m.busy && m.busyPeriods == 3)
  }

  @Test("free(slots:) takes the lock once, and not at all when no reference is the last")
  func batchFreeLocksOnce() throws {
    let m = RecordingMachine(cpus: 1, slots: 8)
    let a = SFBufAllocator(machine: m, nsfbufs: 8)
    var slots: [Int] = []
    for n in 0..<6 { slots.append(try a.allocate(Frame(n: n))) }
    for s in slots { a.ref(s) }
    var before = m.locks
    slots.withUnsafeBufferPointer { a.free(slots: $0) }  // none is the last
    #expect(m.locks == before)
    #expect(a.stats.nsfbufsused == 6)
    before = m.locks
    slots.withUnsafeBufferPointer { a.free(slots: $0) }
    #expect(m.locks == before + 1)
    #expect(a.stats.nsfbufsused == 0 && !m.busy && !m.freedLocked)
    #expect(a.freeList().suffix(6) == slots)  // freed in the order given
    #expect(a.checkInvariants() == nil)
  }
}
