// Simulated threads: where they run, pinning, migration, and blocking.

import SFBufCore

/// The machine's view of one simulated thread.
struct SimThreadState {
  var cpu: Int
  var pinCount = 0
  var isBlocked = false
}

/// The sleep state of one simulated thread waiting for a slot.
///
/// Created by the allocator through ``SimMachine/makeSleeper()``; ``isWoken`` tells the
/// driver that the thread may retry its allocation.
public final class SimSleeper {
  /// The thread that sleeps (the last one that prepared to).
  public internal(set) var thread: Int
  /// Whether the allocator woke the thread since it last went to sleep.
  public internal(set) var isWoken = false

  init(thread: Int) { self.thread = thread }
}

extension SimMachine {
  /// Creates a simulated thread on CPU `cpu`, unpinned and runnable; returns its number
  /// (threads are numbered from 0 in creation order).
  ///
  /// - Precondition: `cpu` is a CPU of this machine.
  @discardableResult
  public func spawnThread(cpu: Int) -> Int {
    precondition(cpu >= 0 && cpu < cpuCount, "SimMachine: no CPU \(cpu)")
    threads.append(SimThreadState(cpu: cpu))
    return threads.count - 1
  }

  /// The number of threads created.
  public var threadCount: Int { threads.count }

  /// The CPU thread `thread` runs on.
  public func cpu(ofThread thread: Int) -> Int { threads[thread].cpu }

  /// Whether thread `thread` is pinned to its CPU.
  public func isPinned(thread: Int) -> Bool { threads[thread].pinCount > 0 }

  /// Whether thread `thread` waits for a slot (blocked until woken).
  public func isBlocked(thread: Int) -> Bool { threads[thread].isBlocked }

  /// Pins the ``running`` thread to its CPU (`sched_pin`); pins nest.
  public func sched_pin() { threads[runningThread].pinCount += 1 }

  /// Undoes one ``sched_pin()`` of the ``running`` thread (`sched_unpin`).
  ///
  /// - Precondition: the thread is pinned.
  public func sched_unpin() {
    precondition(
      threads[runningThread].pinCount > 0, "sched_unpin: thread \(runningThread) is not pinned")
    threads[runningThread].pinCount -= 1
  }

  /// Moves thread `thread` to CPU `cpu`, as the scheduler does between time slices.
  ///
  /// - Precondition: the thread is not pinned; `cpu` is a CPU of this machine.
  public func migrate(thread: Int, to cpu: Int) {
    precondition(threads[thread].pinCount == 0, "SimMachine: thread \(thread) is pinned")
    precondition(cpu >= 0 && cpu < cpuCount, "SimMachine: no CPU \(cpu)")
    threads[thread].cpu = cpu
  }
}
