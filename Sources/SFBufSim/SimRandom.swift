// The one source of randomness of the simulation: a seeded SplitMix64 generator, so that any
// run (a random program, a workload) replays exactly from its seed.

/// A small, fast, seeded pseudo-random generator (SplitMix64, Steele, Lea and Flood 2014).
///
/// Every choice the simulation makes (which thread runs, which page, which CPU a thread
/// migrates to) is drawn from one of these, so a run is a pure function of its seed.
///
/// - Complexity: O(1) per draw, no allocation.
public struct SimRandom: RandomNumberGenerator, Sendable {
  /// The generator's whole state.
  public private(set) var state: UInt64

  /// A generator whose sequence is determined by `seed` alone.
  public init(seed: UInt64) { state = seed }

  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A uniform integer in `0 ..< bound`.
  ///
  /// - Precondition: `bound > 0`.
  public mutating func below(_ bound: Int) -> Int {
    precondition(bound > 0, "SimRandom.below: the bound must be positive")
    return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
  }

  /// `true` with probability `percent` / 100.
  public mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

  /// An independent generator for a sub-run (one program of a series, one workload row),
  /// derived from this one's next value.
  public mutating func split() -> SimRandom { SimRandom(seed: next()) }
}
