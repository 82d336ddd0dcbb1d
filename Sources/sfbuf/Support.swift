import Glibc

/// Monotonic time in seconds.
func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body(i)` on `count` new threads and waits for all of them.
func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
  final class Box: Sendable {
    let body: @Sendable (Int) -> Void
    let index: Int
    init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) {
      self.body = body
      self.index = index
    }
  }
  var threads: [pthread_t] = []
  for i in 0..<count {
    var t = pthread_t()
    let box = Unmanaged.passRetained(Box(body, i)).toOpaque()
    let r = pthread_create(
      &t, nil,
      { arg in
        let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        b.body(b.index)
        return nil
      }, box)
    precondition(r == 0, "pthread_create failed: \(r)")
    threads.append(t)
  }
  for t in threads { pthread_join(t, nil) }
}

/// A small, fast, seeded generator (xorshift64*), so runs can be repeated.
struct FastRandom: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
  mutating func next() -> UInt64 {
    state ^= state >> 12
    state ^= state << 25
    state ^= state >> 27
    return state &* 0x2545_F491_4F6C_DD1D
  }
}

/// Zipf-distributed ranks over `0 ..< n` with exponent `s`, by inverse transform of a
/// precomputed cumulative table (binary search per draw).
struct Zipf {
  let cdf: [Double]
  init(n: Int, s: Double) {
    var c = [Double](repeating: 0, count: n)
    var sum = 0.0
    for i in 0..<n {
      sum += 1 / pow(Double(i + 1), s)
      c[i] = sum
    }
    cdf = c.map { $0 / sum }
  }
  func draw(_ rng: inout FastRandom) -> Int {
    let u = Double(rng.next() >> 11) / Double(1 << 53)
    var lo = 0
    var hi = cdf.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }
}
