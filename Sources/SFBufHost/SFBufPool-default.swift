// The process-wide default pool, configured like the kernel's `kern.ipc.nsfbufs` tunable.

#if os(Linux)
  import Glibc

  extension SFBufPool {
    /// The environment variable that asks for a window of N slots for the default pool.
    public static let environmentVariable = "SFBUF_NSFBUFS"

    /// Parses a slot count given by the user (`SFBUF_NSFBUFS`, a command-line option).
    /// - Returns: the count, or `nil` when `value` is nil (not set).
    /// - Throws: ``SFBufConfigError/outOfRange(setting:value:)`` for anything but a whole
    ///   number from 1 to ``maxSlots``.
    public static func parseSlots(_ value: String?, setting: String = environmentVariable)
      throws(SFBufConfigError) -> Int?
    {
      guard let value else { return nil }
      let trimmed = value.trimmingWhitespace
      guard let n = Int(trimmed), (1...maxSlots).contains(n) else {
        throw .outOfRange(setting: setting, value: "'\(value)'")
      }
      return n
    }

    /// Makes the pool the process would use by default: a window of `SFBUF_NSFBUFS` slots
    /// when the variable is set, else a direct map (this host is 64-bit).
    /// - Throws: ``SFBufConfigError`` for a bad value or a window that cannot be reserved.
    public static func makeDefault() throws(SFBufConfigError) -> SFBufPool {
      let value = getenv(environmentVariable).map { String(cString: $0) }
      if let n = try parseSlots(value) { return try SFBufPool(nsfbufs: n) }
      return .directMap()
    }

    /// The process-wide pool behind the C-style functions, made on first use by
    /// ``makeDefault()``. A bad `SFBUF_NSFBUFS` stops the process with a message naming it;
    /// programs that want to report it themselves call ``makeDefault()`` first.
    public static let `default`: SFBufPool = {
      do { return try makeDefault() } catch { fatalError("sfbuf: \(error)") }
    }()
  }

  extension String {
    var trimmingWhitespace: Substring {
      let s = drop { $0.isWhitespace }
      return s.dropLast(s.reversed().prefix { $0.isWhitespace }.count)
    }
  }
#endif
