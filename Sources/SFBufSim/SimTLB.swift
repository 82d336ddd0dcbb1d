// One CPU's translation lookaside buffer: bounded, with a replacement policy, and never
// coherent by itself.

/// Which entry a full TLB gives up for a new one.
public enum SimTLBReplacement: Sendable, Equatable {
  /// The least recently used entry.
  case lru
  /// The oldest entry, however recently used.
  case fifo
}

/// A CPU's TLB: up to ``capacity`` translations from a window page to a frame.
///
/// An entry stays until it is invalidated or evicted to make room; nothing else removes it.
/// In particular writing the page table does not touch it: that is what makes a stale
/// translation real on the simulated machine.
///
/// - Complexity: O(``capacity``) per operation (a linear search; capacities are small).
public struct SimTLB: Sendable {
  /// The most entries the TLB holds.
  public let capacity: Int
  /// Which entry a full TLB evicts.
  public let replacement: SimTLBReplacement

  struct Entry {
    var page: Int
    var frame: Int
    var stamp: UInt64
  }
  var entries: [Entry] = []
  var clock: UInt64 = 0

  /// An empty TLB of `capacity` entries.
  ///
  /// - Precondition: `capacity >= 1`.
  public init(capacity: Int, replacement: SimTLBReplacement = .lru) {
    precondition(capacity >= 1, "SimTLB: the capacity must be at least 1")
    self.capacity = capacity
    self.replacement = replacement
    entries.reserveCapacity(capacity)
  }

  /// The number of translations held.
  public var count: Int { entries.count }

  /// The frame cached for window page `page`, marking the entry used; `nil` on a miss.
  public mutating func lookup(_ page: Int) -> Int? {
    guard let i = entries.firstIndex(where: { $0.page == page }) else { return nil }
    if replacement == .lru {
      clock &+= 1
      entries[i].stamp = clock
    }
    return entries[i].frame
  }

  /// The frame cached for `page`, without counting as a use (for checks and tests).
  public func peek(_ page: Int) -> Int? {
    entries.first(where: { $0.page == page })?.frame
  }

  /// Caches `page → frame`, evicting an entry when full.
  ///
  /// - Precondition: `page` is not cached (the caller looked it up first).
  /// - Returns: whether an entry was evicted.
  public mutating func fill(_ page: Int, frame: Int) -> Bool {
    clock &+= 1
    let entry = Entry(page: page, frame: frame, stamp: clock)
    if entries.count < capacity {
      entries.append(entry)
      return false
    }
    var victim = 0
    for i in 1..<entries.count where entries[i].stamp < entries[victim].stamp { victim = i }
    entries[victim] = entry
    return true
  }

  /// Drops the translation of `page` (`invlpg`); returns whether one was cached.
  @discardableResult
  public mutating func invalidate(_ page: Int) -> Bool {
    guard let i = entries.firstIndex(where: { $0.page == page }) else { return false }
    entries.remove(at: i)
    return true
  }
}
