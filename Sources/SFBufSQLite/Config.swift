// The URI parameters of the `sfbuf` VFS: which pool a database's pages are mapped through.

#if os(Linux)
  import SFBufHost

  /// The pool a database opened with `vfs=sfbuf` maps its pages through, as its URI
  /// parameters say: `nsfbufs=N` (a window of N slots, default 512), `direct=1` (the direct
  /// map), `policy=faithful|batched` (the window's reclaim policy, default faithful),
  /// `admit=N` (the window's admission policy: a page not already mapped is mapped only at
  /// the N-th of SQLite's recent requests for it, default 16; `admit=1` maps every page at
  /// its first request). Until then xFetch answers NULL and SQLite reads the page into its
  /// own page cache with xRead (`pread`), as with `mmap_size=0`.
  ///
  /// Databases opened with equal configurations share one pool per process.
  public struct SFBufSQLiteConfig: Hashable, Sendable, CustomStringConvertible {
    /// The window's slots, or `nil` for the direct map.
    public var nsfbufs: Int?
    /// Whether the window recycles slots in batches (`policy=batched`, batches of a quarter
    /// of the window) rather than one by one.
    public var batched: Bool
    /// Window only: how many recent xFetch requests for a page (counted per file, the
    /// counts halved every ``agingPeriod(slots:)`` requests) it takes before a page not
    /// already held is mapped; 1 maps every page at its first request. 1 for the direct
    /// map, which maps nothing.
    public var admit: Int

    /// The default window: 512 slots, the faithful policy.
    public static let defaultWindowSlots = 512
    /// The default admission threshold of a window.
    public static let defaultAdmit = 16
    /// The largest admission threshold (the per-page counters saturate at 255).
    public static let maxAdmit = 255

    /// xFetch requests between two halvings of a file's per-page counters: 16 per slot
    /// (8192 for the default window), so a page must be asked for `admit` times within a
    /// few passes over the window's worth of requests to be mapped.
    public static func agingPeriod(slots: Int) -> Int { max(1024, 16 * slots) }

    /// A window of `nsfbufs` slots.
    public static func window(_ nsfbufs: Int, batched: Bool = false, admit: Int = defaultAdmit)
      -> SFBufSQLiteConfig
    {
      SFBufSQLiteConfig(nsfbufs: nsfbufs, batched: batched, admit: admit)
    }

    /// The direct map.
    public static let direct = SFBufSQLiteConfig(nsfbufs: nil, batched: false, admit: 1)

    /// Reads the four URI parameters (each `nil` when absent). O(1).
    /// - Throws: ``SFBufSQLiteConfigError`` naming the parameter and its value: a window
    ///   size that is not a whole number from 1 to ``SFBufPool/maxSlots``, a `direct` that
    ///   is not a boolean, an unknown policy, an `admit` that is not a whole number from 1
    ///   to ``maxAdmit``, or a window setting given with `direct=1`.
    public init(nsfbufs: String?, direct: String?, policy: String?, admit: String? = nil)
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
        if let admit { throw .conflict(parameter: "admit", value: admit) }
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
      var threshold = SFBufSQLiteConfig.defaultAdmit
      if let admit {
        guard let n = Int(admit), (1...SFBufSQLiteConfig.maxAdmit).contains(n) else {
          throw .badValue(
            parameter: "admit", value: admit,
            expected: "a whole number of requests from 1 to \(SFBufSQLiteConfig.maxAdmit)")
        }
        threshold = n
      }
      self = .window(slots, batched: isBatched, admit: threshold)
    }

    private init(nsfbufs: Int?, batched: Bool, admit: Int) {
      self.nsfbufs = nsfbufs
      self.batched = batched
      self.admit = admit
    }

    /// The reclaim policy of the window (`.faithful` for the direct map, which has none).
    public var policy: SFBufReclaimPolicy {
      guard batched, let n = nsfbufs else { return .faithful }
      return .batched(batch: max(1, n / 4))
    }

    /// As URI parameters: `direct=1`, `nsfbufs=512`, `nsfbufs=64&policy=batched`,
    /// `nsfbufs=512&admit=1` (`admit` only when not the default).
    public var description: String {
      guard let n = nsfbufs else { return "direct=1" }
      let a = admit == SFBufSQLiteConfig.defaultAdmit ? "" : "&admit=\(admit)"
      return (batched ? "nsfbufs=\(n)&policy=batched" : "nsfbufs=\(n)") + a
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
