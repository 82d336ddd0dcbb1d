// What the coherence checker reports.

/// An access through a mapping that did not see the mapping's page: the checker's finding.
///
/// It names the run (`seed`) and the step of it at which the access happened, so the run
/// replays to exactly this access.
public struct SimViolation: Equatable, Sendable, CustomStringConvertible {
  /// What went wrong.
  public enum Kind: String, Sendable {
    /// A load returned a word of another frame (or a word that is not the frame's).
    case staleRead = "stale read"
    /// A store went to another frame.
    case staleWrite = "stale write"
    /// The access found no valid translation although the mapping was live.
    case pageFault = "page fault"
  }

  /// What went wrong.
  public var kind: Kind
  /// The seed of the run.
  public var seed: UInt64
  /// The step of the run (0-based) at which the access happened.
  public var step: Int
  /// The simulated thread that accessed.
  public var thread: Int
  /// The CPU it ran on.
  public var cpu: Int
  /// The slot of the mapping.
  public var slot: Int
  /// The virtual address accessed.
  public var address: Int
  /// The frame the mapping is of.
  public var expectedFrame: Int
  /// The frame the CPU's translation led to; `nil` for a page fault.
  public var observedFrame: Int?
  /// The word the access should have seen (for a store: the word stored).
  public var expectedValue: UInt64
  /// The word it saw (for a store: what the mapping's frame holds afterwards).
  public var observedValue: UInt64?

  /// Whether the access used a stale translation: a read or a write that reached the wrong
  /// frame or the wrong contents.
  public var isStaleAccess: Bool { kind != .pageFault }

  /// One line: kind, seed, step, who accessed where, and what was seen.
  public var description: String {
    let seen = observedFrame.map { "frame \($0)" } ?? "no translation"
    return "\(kind.rawValue): seed \(seed) step \(step): thread \(thread) on CPU \(cpu) "
      + "accessed \(hex(address)) (slot \(slot)) and reached \(seen), "
      + "the mapping is of frame \(expectedFrame)"
  }
}
