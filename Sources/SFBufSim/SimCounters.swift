// What the simulated machine counts: the costs the sf_buf design is about.

/// The simulated machine's event counters. They only grow (see ``SimMachine/counters``).
public struct SimCounters: Equatable, Sendable {
  /// Writes of a window PTE: one per ``SimMachine/map(_:slot:)``, one per
  /// ``SimMachine/unmap(slot:)``.
  public var pageTableWrites = 0
  /// Invalidations of one translation in the calling CPU's TLB (`invlpg`).
  public var localInvalidations = 0
  /// Shootdowns: inter-processor interrupts sent, one per request, to a set of CPUs.
  public var ipisSent = 0
  /// CPUs interrupted by shootdowns (the sum of the sets' sizes); each invalidates the slot.
  public var cpusInterrupted = 0
  /// Loads and stores through the window.
  public var accesses = 0
  /// Stores through the window.
  public var stores = 0
  /// Accesses whose translation was in the CPU's TLB.
  public var tlbHits = 0
  /// Accesses that walked the page table and filled the TLB.
  public var tlbFills = 0
  /// Entries evicted from a full TLB by a fill.
  public var tlbEvictions = 0
  /// Accesses that found no valid translation.
  public var pageFaults = 0

  /// All zero.
  public init() {}
}
