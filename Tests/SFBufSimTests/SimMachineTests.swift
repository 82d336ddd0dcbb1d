// The simulated machine itself: TLBs that really go stale, counted invalidations and
// shootdowns, bounded TLBs, the accessed bit, threads and pinning.

import SFBufCore
import SFBufSim
import Testing

/// Runs `body` as the allocator would: with the machine's pool lock held.
func locked<T>(_ m: SimMachine, _ body: () throws -> T) rethrows -> T {
  m.lock()
  defer { m.unlock() }
  return try body()
}

/// Maps `frame` into `slot` as the allocator does, returning what `map` returned.
@discardableResult
func map(_ m: SimMachine, _ frame: Int, slot: Int) -> Bool {
  locked(m) { try! m.map(SimPage(frame: frame), slot: slot) }
}

/// The frame word 0 of `slot` names, loaded on `cpu`.
func frameSeen(_ m: SimMachine, slot: Int, cpu: Int) throws -> Int {
  try m.load(m.address(ofSlot: slot), cpu: cpu).frame
}

@Suite("Simulated machine")
struct SimMachineTests {
  @Test("a TLB entry that is not invalidated really returns the old page")
  func staleEntryReturnsOldPage() throws {
    let m = SimMachine(cpus: 2, slots: 1, frames: 2)
    m.spawnThread(cpu: 0)
    m.running = 0
    map(m, 0, slot: 0)
    let address = m.address(ofSlot: 0)
    #expect(try m.load(address, cpu: 1).value == SimMachine.initialWord(frame: 0, word: 0))
    map(m, 1, slot: 0)
    // CPU 1 still holds slot 0 -> frame 0; CPU 0 walks the new PTE.
    let stale = try m.load(address, cpu: 1)
    #expect(stale.frame == 0 && stale.tlbHit)
    #expect(stale.value == SimMachine.initialWord(frame: 0, word: 0))
    #expect(try frameSeen(m, slot: 0, cpu: 0) == 1)
    // A store through the stale entry lands in the old frame.
    try m.store(42, at: address + 8, cpu: 1)
    #expect(m.physicalWord(frame: 0, word: 1) == 42)
    #expect(m.physicalWord(frame: 1, word: 1) == SimMachine.initialWord(frame: 1, word: 1))
    // The shootdown from CPU 0 makes CPU 1 walk the page table again.
    locked(m) { m.shootdown(slot: 0, cpus: CPUSet(cpu: 1)) }
    let fresh = try m.load(address, cpu: 1)
    #expect(fresh.frame == 1 && !fresh.tlbHit)
  }

  @Test("map reports whether the old PTE was valid and accessed")
  func mapReportsAccessedBit() throws {
    let m = SimMachine(cpus: 1, slots: 2, frames: 3)
    #expect(map(m, 0, slot: 0) == false)  // was invalid
    #expect(
      m.pte(ofSlot: 0)
        == {
          var p = SimPTE()
          p.frame = 0
          p.valid = true
          return p
        }())
    #expect(map(m, 1, slot: 0) == false)  // valid, never loaded into a TLB
    _ = try m.load(m.address(ofSlot: 0), cpu: 0)
    #expect(m.pte(ofSlot: 0).accessed)
    #expect(map(m, 2, slot: 0) == true)  // valid and accessed
    #expect(!m.pte(ofSlot: 0).accessed)
    #expect(m.counters.pageTableWrites == 3)
  }

  @Test("local invalidation drops the calling CPU's entry only")
  func localInvalidation() throws {
    let m = SimMachine(cpus: 2, slots: 1, frames: 1)
    m.spawnThread(cpu: 1)
    m.running = 0
    map(m, 0, slot: 0)
    _ = try m.load(m.address(ofSlot: 0), cpu: 0)
    _ = try m.load(m.address(ofSlot: 0), cpu: 1)
    locked(m) { m.invalidateLocal(slot: 0) }
    #expect(m.cachedFrame(slot: 0, cpu: 1) == nil)
    #expect(m.cachedFrame(slot: 0, cpu: 0) == 0)
    #expect(m.counters.localInvalidations == 1)
    #expect(m.counters.ipisSent == 0)
  }

  @Test("a shootdown interrupts the set and is counted", arguments: [2, 4, 8, 64])
  func shootdownCounts(cpus: Int) throws {
    let m = SimMachine(cpus: cpus, slots: 2, frames: 2)
    m.spawnThread(cpu: 0)
    m.running = 0
    map(m, 0, slot: 0)
    map(m, 1, slot: 1)
    for cpu in 0..<cpus {
      _ = try m.load(m.address(ofSlot: 0), cpu: cpu)
      _ = try m.load(m.address(ofSlot: 1), cpu: cpu)
    }
    let others = m.allCPUs.subtracting(CPUSet(cpu: 0))
    locked(m) { m.shootdown(slot: 0, cpus: others) }
    #expect(m.counters.ipisSent == 1)
    #expect(m.counters.cpusInterrupted == cpus - 1)
    #expect(m.cachedFrame(slot: 0, cpu: 0) == 0)
    for cpu in 1..<cpus {
      #expect(m.cachedFrame(slot: 0, cpu: cpu) == nil)
      #expect(m.cachedFrame(slot: 1, cpu: cpu) == 1)  // other slots untouched
    }
    locked(m) { m.shootdown(slot: 1, cpus: CPUSet(cpu: cpus - 1)) }
    #expect(m.counters.ipisSent == 2)
    #expect(m.counters.cpusInterrupted == cpus)
  }

  @Test(
    "a full TLB evicts by its replacement policy",
    arguments: [(SimTLBReplacement.lru, 1), (SimTLBReplacement.fifo, 0)])
  func capacityEviction(replacement: SimTLBReplacement, evicted: Int) throws {
    let m = SimMachine(cpus: 1, slots: 3, frames: 3, tlbEntries: 2, replacement: replacement)
    for s in 0..<3 { map(m, s, slot: s) }
    _ = try m.load(m.address(ofSlot: 0), cpu: 0)
    _ = try m.load(m.address(ofSlot: 1), cpu: 0)
    _ = try m.load(m.address(ofSlot: 0), cpu: 0)  // slot 0 is now the most recently used
    _ = try m.load(m.address(ofSlot: 2), cpu: 0)  // evicts one entry
    #expect(m.tlbCount(cpu: 0) == 2)
    #expect(m.counters.tlbEvictions == 1)
    #expect(m.cachedFrame(slot: evicted, cpu: 0) == nil)
    #expect(m.cachedFrame(slot: 1 - evicted, cpu: 0) == 1 - evicted)
    #expect(m.cachedFrame(slot: 2, cpu: 0) == 2)
    // An evicted stale entry is gone: the next access walks the current PTE.
    map(m, 2, slot: evicted)
    #expect(try frameSeen(m, slot: evicted, cpu: 0) == 2)
  }

  @Test("an access through an invalid PTE or outside the window faults")
  func pageFaults() throws {
    let m = SimMachine(cpus: 1, slots: 2, frames: 1)
    #expect(throws: SimPageFault(cpu: 0, address: m.address(ofSlot: 1))) {
      try m.load(m.address(ofSlot: 1), cpu: 0)
    }
    #expect(throws: SimPageFault.self) { try m.load(SimMachine.windowBase - 8, cpu: 0) }
    #expect(throws: SimPageFault.self) { try m.store(1, at: m.address(ofSlot: 2), cpu: 0) }
    #expect(m.counters.pageFaults == 3)
  }

  @Test("unmap-on-free invalidates everywhere; remap enters the PTE again")
  func unmapEverywhere() throws {
    let m = SimMachine(cpus: 4, slots: 1, frames: 2)
    m.spawnThread(cpu: 2)
    m.running = 0
    map(m, 0, slot: 0)
    for cpu in 0..<4 { _ = try m.load(m.address(ofSlot: 0), cpu: cpu) }
    m.unmap(slot: 0)
    #expect(!m.pte(ofSlot: 0).valid)
    for cpu in 0..<4 { #expect(m.cachedFrame(slot: 0, cpu: cpu) == nil) }
    #expect(m.counters.pageTableWrites == 2)
    #expect(m.counters.localInvalidations == 1)
    #expect(m.counters.ipisSent == 1 && m.counters.cpusInterrupted == 3)
    #expect(map(m, 1, slot: 0) == false)  // nothing valid was replaced
    m.unmap(slot: 0)
    m.remap(SimPage(frame: 1), slot: 0)
    #expect(try frameSeen(m, slot: 0, cpu: 3) == 1)
  }

  @Test("threads run where the scheduler puts them, unless pinned")
  func threadsAndPinning() {
    let m = SimMachine(cpus: 3, slots: 1, frames: 1)
    let a = m.spawnThread(cpu: 0)
    let b = m.spawnThread(cpu: 2)
    m.running = b
    #expect(m.currentCPU == 2 && !m.isPinned)
    m.migrate(thread: b, to: 1)
    #expect(m.currentCPU == 1)
    m.sched_pin()
    m.sched_pin()
    #expect(m.isPinned && m.isPinned(thread: b) && !m.isPinned(thread: a))
    m.sched_unpin()
    #expect(m.isPinned)
    m.sched_unpin()
    #expect(!m.isPinned)
    m.running = a
    #expect(m.currentCPU == 0)
    #expect(m.allCPUs == CPUSet.first(3))
  }

  @Test("the random generator is a pure function of its seed")
  func randomIsSeeded() {
    var a = SimRandom(seed: 7)
    var b = SimRandom(seed: 7)
    var c = SimRandom(seed: 8)
    let xs = (0..<16).map { _ in a.next() }
    #expect(xs == (0..<16).map { _ in b.next() })
    #expect(xs != (0..<16).map { _ in c.next() })
    for bound in [1, 2, 3, 7, 100] {
      #expect((0..<200).allSatisfy { _ in (0..<bound).contains(a.below(bound)) })
    }
  }
}
