#if os(Linux)
  import CSFBufLinux
  import Glibc

  /// `sched_pin()`: keeps the calling thread on the CPU it runs on until the matching
  /// ``sched_unpin()``. Nests; the first pin sets the thread's CPU affinity to that CPU
  /// (`sched_setaffinity`), the last unpin restores the affinity it had.
  ///
  /// A pinned thread may allocate with `SFB_CPUPRIVATE`.
  public func sched_pin() {
    if sfb_sched_pin() < 0 {
      fatalError("sched_pin: cannot set the thread's CPU affinity: errno \(errno)")
    }
  }

  /// `sched_unpin()`: undoes one ``sched_pin()``. Unpinning a thread that is not pinned stops
  /// the process: the pins are unbalanced.
  public func sched_unpin() {
    let r = sfb_sched_unpin()
    if r == -1 { fatalError("sched_unpin: the thread is not pinned (unbalanced sched_unpin)") }
    if r == -2 {
      fatalError("sched_unpin: cannot restore the thread's CPU affinity: errno \(errno)")
    }
  }

  /// The calling thread's pin count (0: not pinned).
  public var sched_pinned: Int { Int(sfb_pin_count()) }

  /// The CPU the calling thread runs on (`sched_getcpu`).
  public var currentCPU: Int { Int(sfb_current_cpu()) }
#endif
