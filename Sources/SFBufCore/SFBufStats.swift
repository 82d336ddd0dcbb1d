/// The allocator's counters (FreeBSD's `kern.ipc.nsfbufs*` sysctls and `sfstat`).
public struct SFBufStats: Equatable, Sendable {
  /// Slots in the window (`nsfbufs`).
  public var nsfbufs = 0
  /// Slots with at least one reference, not references (`nsfbufsused`).
  public var nsfbufsused = 0
  /// High-water mark of `nsfbufsused`; never reset (`nsfbufspeak`).
  public var nsfbufspeak = 0
  /// Sleeps for a free slot, one per sleep (`sf_allocwait`).
  public var sf_allocwait = 0
  /// Allocations that returned no mapping, for any reason (`sf_allocfail`).
  public var sf_allocfail = 0
  /// Allocations that found the page cached in a slot.
  public var hits = 0
  /// Allocations that had to take a free slot for the page.
  public var misses = 0
  /// Successful `Machine.map` calls.
  public var remaps = 0

  public init() {}

  /// `hits / (hits + misses)`, or 0 before any allocation.
  public var hitRate: Double {
    hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses)
  }

  /// The three lines FreeBSD's `netstat -m` prints for sf_bufs.
  public var netstatLines: [String] {
    [
      "\(nsfbufsused)/\(nsfbufspeak)/\(nsfbufs) sfbufs in use (current/peak/max)",
      "\(sf_allocfail) requests for sfbufs denied",
      "\(sf_allocwait) requests for sfbufs delayed",
    ]
  }
}
