import ArgumentParser
import Glibc
import SFBufCore
import SFBufHost

/// How a window recycles free slots, as the tool's `--policy` names it.
enum PolicyName: String, CaseIterable, ExpressibleByArgument {
  case faithful, batched
}

/// The pool options that `run` and `send` share: the window's size and policy, or the
/// direct map.
struct PoolOptions: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "Window slots, 1...32768 (default: SFBUF_NSFBUFS, else 512).", valueName: "slots"))
  var nsfbufs: Int?
  @Flag(help: "Map pages through the direct map instead of a window.")
  var direct = false
  @Option(
    help: ArgumentHelp(
      """
      How the window recycles free slots: faithful (one remap per miss, under the pool \
      lock, as the original) or batched (translations dropped in batches, misses mapped \
      outside the pool lock).
      """, valueName: "name"))
  var policy: PolicyName = .faithful
  @Option(
    help: ArgumentHelp(
      "Slots per batch of the batched policy (default nsfbufs / 4).", valueName: "slots"))
  var batch: Int?

  func validate() throws {
    if direct && nsfbufs != nil {
      throw ValidationError("--nsfbufs and --direct are exclusive: a window or the direct map")
    }
    if direct && (policy != .faithful || batch != nil) {
      throw ValidationError("--policy and --batch apply to a window, not to the direct map")
    }
    if let batch, batch < 1 { throw ValidationError("--batch must be at least 1, not \(batch)") }
    if batch != nil && policy != .batched {
      throw ValidationError("--batch applies to --policy batched")
    }
  }

  /// The pool asked for: `--direct`, else a window of `--nsfbufs`, else of `SFBUF_NSFBUFS`,
  /// else of 512 slots, recycled by `--policy`. A bad value is reported naming its setting.
  func makePool() throws -> SFBufPool {
    if direct { return .directMap() }
    do {
      let n: Int
      if let nsfbufs {
        n = try SFBufPool.parseSlots(String(nsfbufs), setting: "--nsfbufs") ?? nsfbufs
      } else {
        let env = getenv(SFBufPool.environmentVariable).map { String(cString: $0) }
        n = try SFBufPool.parseSlots(env) ?? 512
      }
      let reclaim: SFBufReclaimPolicy =
        policy == .faithful ? .faithful : .batched(batch: batch ?? max(1, n / 4))
      return try SFBufPool(nsfbufs: n, policy: reclaim)
    } catch {
      throw ToolError(error.description)
    }
  }

  /// "window of N slots (policy)" or "direct map", for the commands' first line.
  func describe(_ pool: SFBufPool) -> String {
    guard !pool.isDirectMap else { return "direct map" }
    guard case .batched(let b) = pool.policy else {
      return "window of \(pool.nsfbufs) slots"
    }
    return "window of \(pool.nsfbufs) slots (batched, \(b) per batch)"
  }
}
