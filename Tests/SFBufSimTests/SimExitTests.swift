// The traps misuse of the simulated machine must hit.

import SFBufCore
import SFBufSim
import Testing

@Suite("Simulated machine traps")
struct SimExitTests {
  @Test("SFB_CPUPRIVATE from an unpinned simulated thread traps")
  func cpuPrivateUnpinnedTraps() async {
    await #expect(processExitsWith: .failure) {
      let system = SimSystem(cpus: 2, slots: 2, frames: 2)
      let t = system.machine.spawnThread(cpu: 1)
      var waiter: SimSystem.Waiter?
      _ = try? system.allocate(SimPage(frame: 0), flags: .cpuPrivate, thread: t, waiter: &waiter)
    }
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
    await #expect(processExitsWith: .failure) {
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
  }

  @Test("migrating a pinned thread traps")
  func migratePinnedTraps() async {
    await #expect(processExitsWith: .failure) {
      let m = SimMachine(cpus: 2, slots: 1, frames: 1)
      m.running = m.spawnThread(cpu: 0)
      m.sched_pin()
      m.migrate(thread: 0, to: 1)
    }
  }

  @Test("taking the pool lock twice traps")
  func lockReentryTraps() async {
    await #expect(processExitsWith: .failure) {
      let m = SimMachine(cpus: 1, slots: 1, frames: 1)
      m.lock()
      m.lock()
    }
  }

  @Test("a blocking sleep on the simulated machine traps")
  func sleepTraps() async {
    await #expect(processExitsWith: .failure) {
      let system = SimSystem(cpus: 1, slots: 1, frames: 2)
      system.machine.spawnThread(cpu: 0)
      system.machine.running = 0
      _ = try? system.allocator.allocate(SimPage(frame: 0))
      _ = try? system.allocator.allocate(SimPage(frame: 1))  // window full: would sleep
    }
  }
}
