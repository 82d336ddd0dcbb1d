// The traps misuse of the simulated machine must hit.

import SFBufCore
import SFBufSim
import Testing

/// What the child process of an exit test wrote to its standard error.
func standardError(_ result: ExitTest.Result?) -> String {
  String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
}

@Suite("Simulated machine traps")
struct SimExitTests {
  @Test("SFB_CPUPRIVATE from an unpinned simulated thread traps")
  func cpuPrivateUnpinnedTraps() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let system = SimSystem(cpus: 2, slots: 2, frames: 2)
      let t = system.machine.spawnThread(cpu: 1)
      var waiter: SimSystem.Waiter?
      _ = try? system.allocate(SimPage(frame: 0), flags: .cpuPrivate, thread: t, waiter: &waiter)
    }
    #expect(standardError(result).contains("SFB_CPUPRIVATE from a thread that is not pinned"))
  }

  @Test("SFB_CPUPRIVATE from a pinned simulated thread is served")
  func cpuPrivatePinnedWorks() throws {
    let system = SimSystem(cpus: 2, slots: 2, frames: 2)
    let t = system.machine.spawnThread(cpu: 1)
    system.machine.running = t
    system.machine.sched_pin()
    var waiter: SimSystem.Waiter?
    let m = try #require(
      try system.allocate(SimPage(frame: 0), flags: .cpuPrivate, thread: t, waiter: &waiter))
    #expect(m.cpuPrivate && m.cpu == 1)
    #expect(system.load(m, word: 0, thread: t))
    #expect(system.allocator.cpus(ofSlot: m.slot) == CPUSet(cpu: 1))
    #expect(system.machine.counters.ipisSent == 0)
  }

  @Test("touching a CPU-private mapping on another CPU traps")
  func cpuPrivateElsewhereTraps() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let system = SimSystem(cpus: 2, slots: 2, frames: 2)
      let a = system.machine.spawnThread(cpu: 0)
      let b = system.machine.spawnThread(cpu: 1)
      system.machine.running = a
      system.machine.sched_pin()
      var waiter: SimSystem.Waiter?
      let m = try? system.allocate(
        SimPage(frame: 0), flags: .cpuPrivate, thread: a, waiter: &waiter)
      system.load(m!, word: 0, thread: b)
    }
    #expect(standardError(result).contains("a CPU-private mapping of CPU 0 touched on CPU 1"))
  }

  @Test("migrating a pinned thread traps")
  func migratePinnedTraps() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let m = SimMachine(cpus: 2, slots: 1, frames: 1)
      m.running = m.spawnThread(cpu: 0)
      m.sched_pin()
      m.migrate(thread: 0, to: 1)
    }
    #expect(standardError(result).contains("thread 0 is pinned"))
  }

  @Test("taking the pool lock twice traps")
  func lockReentryTraps() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let m = SimMachine(cpus: 1, slots: 1, frames: 1)
      m.lock()
      m.lock()
    }
    #expect(standardError(result).contains("the pool lock is already held"))
  }

  @Test("a blocking sleep on the simulated machine traps")
  func sleepTraps() async {
    let result = await #expect(
      processExitsWith: .failure, observing: [\.standardErrorContent]
    ) {
      let system = SimSystem(cpus: 1, slots: 1, frames: 2)
      system.machine.spawnThread(cpu: 0)
      system.machine.running = 0
      _ = try? system.allocator.allocate(SimPage(frame: 0))
      _ = try? system.allocator.allocate(SimPage(frame: 1))  // window full: would sleep
    }
    #expect(standardError(result).contains("the simulated machine cannot block"))
  }
}
