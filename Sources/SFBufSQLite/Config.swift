// The URI parameters of the `sfbuf` VFS: which pool a database's pages are mapped through.

#if os(Linux)
  import SFBufHost

  /// The pool a database opened with `vfs=sfbuf` maps its pages through, as its URI
  /// parameters say: `nsfbufs=N` (a window of N slots, default 512), `direct=1` (the direct
  /// map), `policy=faithful|batched` (the window's reclaim policy, default faithful).
  ///
  /// Databases opened with equal configurations share one pool per process.
  public struct SFBufSQLiteConfig: Hashable, Sendable, CustomStringConvertible {
    /// The window's slots, or `nil` for the direct map.
    public var nsfbufs: Int?
    /// Whether the window recycles slots in batches (`policy=batched`, batches of a quarter
    /// of the window) rather than one by one.
    public var batched: Bool

    /// The default window: 512 slots, the faithful policy.
    public static let defaultWindowSlots = 512

    /// A window of `nsfbufs` slots.
    public static func window(_ nsfbufs: Int, batched: Bool = false) -> SFBufSQLiteConfig {
      SFBufSQLiteConfig(nsfbufs: nsfbufs, batched: batched)
    }

    /// The direct map.
    public static let direct = SFBufSQLiteConfig(nsfbufs: nil, batched: false)

    /// Reads the three URI parameters (each `nil` when absent). O(1).
    /// - Throws: ``SFBufSQLiteConfigError`` naming the parameter and its value: a window
    ///   size that is not a whole number from 1 to ``SFBufPool/maxSlots``, a `direct` that
    ///   is not a boolean, an unknown policy, or a window setting given with `direct=1`.
    public init(nsfbufs: String?, direct: String?, policy: String?)
      throws(SFBufSQLiteConfigError)
    {
      var isDirect = false
      if let direct {
        switch direct.lowercased() {
        case "1", "true", "yes", "on": isDirect = true
        case "0", "false", "no", "off": isDirect = false
        default: throw .badValue(parameter: "direct", value: direct, expected: "1 or 0")
        }
      }
      var isBatched = false
      if let policy {
        switch policy {
        case "faithful": isBatched = false
        case "batched": isBatched = true
        default:
          throw .badValue(parameter: "policy", value: policy, expected: "faithful or batched")
        }
      }
      if isDirect {
        if let nsfbufs { throw .conflict(parameter: "nsfbufs", value: nsfbufs) }
        if let policy { throw .conflict(parameter: "policy", value: policy) }
        self = .direct
        return
      }
      var slots = SFBufSQLiteConfig.defaultWindowSlots
      if let nsfbufs {
        guard let n = Int(nsfbufs), (1...SFBufPool.maxSlots).contains(n) else {
          throw .badValue(
            parameter: "nsfbufs", value: nsfbufs,
            expected: "a whole number of slots from 1 to \(SFBufPool.maxSlots)")
        }
        slots = n
      }
      self = .window(slots, batched: isBatched)
    }

    private init(nsfbufs: Int?, batched: Bool) {
      self.nsfbufs = nsfbufs
      self.batched = batched
    }

    /// The reclaim policy of the window (`.faithful` for the direct map, which has none).
    public var policy: SFBufReclaimPolicy {
      guard batched, let n = nsfbufs else { return .faithful }
      return .batched(batch: max(1, n / 4))
    }

    /// As URI parameters: `direct=1`, `nsfbufs=512`, `nsfbufs=64&policy=batched`.
    public var description: String {
      guard let n = nsfbufs else { return "direct=1" }
      return batched ? "nsfbufs=\(n)&policy=batched" : "nsfbufs=\(n)"
    }
  }

  /// Why the `sfbuf` VFS refused a database's URI parameters. The description is the
  /// message SQLite reports when the connection is opened.
  public enum SFBufSQLiteConfigError: Error, Equatable, CustomStringConvertible {
    /// `parameter=value` is not one of the values `expected` describes.
    case badValue(parameter: String, value: String, expected: String)
    /// `parameter=value` sets a window, but `direct=1` asks for the direct map.
    case conflict(parameter: String, value: String)
    /// The pool could not be made (the window's address space could not be reserved).
    case pool(String)
    /// The database file could not be opened for mapping.
    case file(String)

    public var description: String {
      switch self {
      case .badValue(let p, let v, let e): "sfbuf: bad URI parameter \(p)=\(v): expected \(e)"
      case .conflict(let p, let v):
        "sfbuf: URI parameter \(p)=\(v) applies to a window, not to the direct map (direct=1)"
      case .pool(let m): "sfbuf: \(m)"
      case .file(let m): "sfbuf: cannot map the database: \(m)"
      }
    }
  }
#endif
