// The simulated machine running the real sf_buf allocator, with a mapping policy and the
// coherence checker on every access. The drivers (random programs, workloads) act through
// it on behalf of simulated threads.

import SFBufCore

/// One mapping a simulated thread holds: one reference to a slot.
public struct SimMapping: Equatable, Sendable {
  /// The slot (`struct sf_buf`).
  public var slot: Int
  /// The page it maps (`sf_buf_page`).
  public var page: SimPage
  /// Whether it was allocated with `SFB_CPUPRIVATE`.
  public var cpuPrivate: Bool
  /// The CPU it was allocated on: the only CPU that may touch a CPU-private mapping.
  public var cpu: Int
}

/// The simulated machine, the sf_buf allocator over it, a ``SimPolicy``, and the coherence
/// checker.
///
/// Every operation names the simulated thread that performs it, which becomes the
/// machine's running thread. Every access goes through ``load(_:word:thread:)`` or
/// ``store(_:word:thread:)``, which check that it sees the mapping's page: the loaded word
/// must be the one last stored to (or initially in) the mapping's frame, and a store must
/// land in that frame. A failure is recorded in ``violations`` with ``seed`` and ``step``.
public final class SimSystem {
  /// The allocator's waiter type on this machine.
  public typealias Waiter = SFBufAllocator<SimMachine>.Waiter

  /// The machine.
  public let machine: SimMachine
  /// The allocator, over ``machine``'s whole window.
  public let allocator: SFBufAllocator<SimMachine>
  /// What happens to a mapping at its last free.
  public let policy: SimPolicy
  /// The seed of the run, for reports.
  public var seed: UInt64 = 0
  /// The driver's current step, for reports.
  public var step = 0

  /// The checker's findings, in order.
  public private(set) var violations: [SimViolation] = []
  /// Successful allocations.
  public private(set) var allocations = 0
  /// Allocations that re-entered the PTE of a slot unmapped at free (``SimPolicy/unmapOnFree``
  /// only): the allocator counted them as hits, the policy pays them as misses.
  public private(set) var reentries = 0

  /// What each frame should hold: the checker's shadow of physical memory.
  var shadow: [UInt64]
  var stores: UInt64 = 0

  /// A system with a fresh machine of `cpus` CPUs, `slots` window pages (all managed by the
  /// allocator), `frames` physical pages (all wired) and TLBs of `tlbEntries` entries.
  ///
  /// - Complexity: O(`frames` × page size) to fill memory and the shadow.
  public init(
    cpus: Int, slots: Int, frames: Int, tlbEntries: Int = 64, policy: SimPolicy = .caching
  ) {
    machine = SimMachine(cpus: cpus, slots: slots, frames: frames, tlbEntries: tlbEntries)
    machine.wireAll()
    allocator = SFBufAllocator(machine: machine, nsfbufs: slots)
    self.policy = policy
    shadow = machine.memory
  }

  /// Allocations the allocator found cached whose PTE was still valid (for
  /// ``SimPolicy/caching``, every hit).
  public var hits: Int { allocator.stats.hits - reentries }

  // MARK: Allocation and free

  /// `sf_buf_alloc(page, flags)` by thread `thread`, waiting the simulated way: returns the
  /// mapping, or `nil` when the thread is now blocked (`waiter` set); call again with the
  /// same `waiter` once the machine shows the thread unblocked.
  ///
  /// - Throws: what the allocator throws (`.wouldBlock` with `.noWait`).
  /// - Precondition: as for `SFBufAllocator.tryAllocate`; a CPU-private allocation traps
  ///   unless the thread is pinned.
  public func allocate(
    _ page: SimPage, flags: SFBufFlags, thread: Int, waiter: inout Waiter?
  ) throws(SFBufError) -> SimMapping? {
    machine.running = thread
    guard let slot = try allocator.tryAllocate(page, flags: flags, waiter: &waiter) else {
      return nil
    }
    if policy == .unmapOnFree && !machine.pte(ofSlot: slot).valid {
      machine.remap(page, slot: slot)
      reentries += 1
    }
    allocations += 1
    waiter = nil
    return SimMapping(
      slot: slot, page: page, cpuPrivate: flags.contains(.cpuPrivate),
      cpu: machine.cpu(ofThread: thread))
  }

  /// Gives up thread `thread`'s wait (a signal with `SFB_CATCH`): the allocation fails and
  /// the thread is runnable again.
  public func abandon(_ waiter: Waiter, thread: Int) {
    machine.running = thread
    allocator.abandon(waiter)
    machine.threads[thread].isBlocked = false
  }

  /// `sf_buf_ref` by thread `thread`: a second reference, returned as a mapping of its own.
  public func ref(_ mapping: SimMapping, thread: Int) -> SimMapping {
    machine.running = thread
    allocator.ref(mapping.slot)
    return mapping
  }

  /// `sf_buf_free` by thread `thread`; with ``SimPolicy/unmapOnFree`` the last free also
  /// unmaps the slot everywhere.
  public func free(_ mapping: SimMapping, thread: Int) {
    machine.running = thread
    allocator.free(mapping.slot)
    if policy == .unmapOnFree && allocator.references(ofSlot: mapping.slot) == 0 {
      machine.unmap(slot: mapping.slot)
    }
  }

  // MARK: Checked accesses

  /// Loads word `word` of `mapping` on thread `thread`'s CPU and checks it is the word the
  /// mapping's frame holds. Returns whether the access was right.
  ///
  /// - Precondition: a CPU-private mapping is touched on its own CPU only (the caller's
  ///   contract for `SFB_CPUPRIVATE`).
  @discardableResult
  public func load(_ mapping: SimMapping, word: Int, thread: Int) -> Bool {
    let (cpu, address) = prepare(mapping, word: word, thread: thread)
    let expected = shadow[mapping.page.frame * SimMachine.wordsPerPage + word]
    do {
      let seen = try machine.load(address, cpu: cpu)
      if seen.frame == mapping.page.frame && seen.value == expected { return true }
      report(.staleRead, mapping, thread, cpu, address, expected, seen.frame, seen.value)
    } catch {
      report(.pageFault, mapping, thread, cpu, address, expected, nil, nil)
    }
    return false
  }

  /// Stores a fresh value to word `word` of `mapping` on thread `thread`'s CPU and checks it
  /// landed in the mapping's frame. Returns whether the access was right.
  ///
  /// - Precondition: as for ``load(_:word:thread:)``; `word >= 1` (word 0 of every frame
  ///   keeps the frame's name).
  @discardableResult
  public func store(_ mapping: SimMapping, word: Int, thread: Int) -> Bool {
    precondition(word >= 1, "SimSystem.store: word 0 names the frame and is never stored to")
    let (cpu, address) = prepare(mapping, word: word, thread: thread)
    stores += 1
    let value = 0x5700_0000_0000_0000 | stores
    let index = mapping.page.frame * SimMachine.wordsPerPage + word
    shadow[index] = value
    do {
      let seen = try machine.store(value, at: address, cpu: cpu)
      if seen.frame == mapping.page.frame { return true }
      let now = machine.physicalWord(frame: mapping.page.frame, word: word)
      report(.staleWrite, mapping, thread, cpu, address, value, seen.frame, now)
    } catch {
      report(.pageFault, mapping, thread, cpu, address, value, nil, nil)
    }
    return false
  }

  func prepare(_ mapping: SimMapping, word: Int, thread: Int) -> (Int, Int) {
    precondition(word >= 0 && word < SimMachine.wordsPerPage, "SimSystem: no word \(word)")
    machine.running = thread
    let cpu = machine.cpu(ofThread: thread)
    precondition(
      !mapping.cpuPrivate || cpu == mapping.cpu,
      "SimSystem: a CPU-private mapping of CPU \(mapping.cpu) touched on CPU \(cpu)")
    return (cpu, machine.address(ofSlot: mapping.slot) + word * 8)
  }

  func report(
    _ kind: SimViolation.Kind, _ mapping: SimMapping, _ thread: Int, _ cpu: Int,
    _ address: Int, _ expected: UInt64, _ frame: Int?, _ value: UInt64?
  ) {
    violations.append(
      SimViolation(
        kind: kind, seed: seed, step: step, thread: thread, cpu: cpu, slot: mapping.slot,
        address: address, expectedFrame: mapping.page.frame, observedFrame: frame,
        expectedValue: expected, observedValue: value))
  }
}
