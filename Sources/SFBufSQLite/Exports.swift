// The functions the C glue (CSFBufSQLite) calls: one per io_method the VFS answers itself.
// Each takes the per-file state as an unretained pointer made by `sfbufsqlite_file_open`.

#if os(Linux)
  import Glibc

  @inline(__always)
  private func file(_ state: UnsafeMutableRawPointer) -> MappedFile {
    Unmanaged<MappedFile>.fromOpaque(state).takeUnretainedValue()
  }

  private func string(_ p: UnsafePointer<CChar>?) -> String? {
    p.map { String(cString: $0) }
  }

  /// Opens the mapping state of a main database at `path` with its URI parameters; on
  /// refusal returns `nil` and a `malloc`'d message in `message`.
  @_cdecl("sfbufsqlite_file_open")
  func sfbufsqlite_file_open(
    _ path: UnsafePointer<CChar>, _ nsfbufs: UnsafePointer<CChar>?,
    _ direct: UnsafePointer<CChar>?, _ policy: UnsafePointer<CChar>?,
    _ admit: UnsafePointer<CChar>?, _ message: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
  ) -> UnsafeMutableRawPointer? {
    do {
      let config = try SFBufSQLiteConfig(
        nsfbufs: string(nsfbufs), direct: string(direct), policy: string(policy),
        admit: string(admit))
      let f = try MappedFile(path: String(cString: path), config: config)
      return Unmanaged.passRetained(f).toOpaque()
    } catch {
      message.pointee = strdup(error.description)
      return nil
    }
  }

  @_cdecl("sfbufsqlite_file_fetch")
  func sfbufsqlite_file_fetch(_ state: UnsafeMutableRawPointer, _ offset: Int64, _ amount: Int32)
    -> UnsafeMutableRawPointer?
  {
    file(state).fetch(offset: Int(offset), amount: Int(amount))
  }

  @_cdecl("sfbufsqlite_file_unfetch")
  func sfbufsqlite_file_unfetch(
    _ state: UnsafeMutableRawPointer, _ offset: Int64, _ pointer: UnsafeMutableRawPointer?
  ) {
    file(state).unfetch(pointer: pointer)
  }

  @_cdecl("sfbufsqlite_file_will_truncate")
  func sfbufsqlite_file_will_truncate(_ state: UnsafeMutableRawPointer, _ size: Int64) {
    file(state).willTruncate(to: Int(size))
  }

  @_cdecl("sfbufsqlite_file_wrote")
  func sfbufsqlite_file_wrote(_ state: UnsafeMutableRawPointer, _ end: Int64) {
    file(state).wrote(end: Int(end))
  }

  @_cdecl("sfbufsqlite_file_mmap_limit")
  func sfbufsqlite_file_mmap_limit(_ state: UnsafeMutableRawPointer, _ limit: Int64) -> Int64 {
    Int64(file(state).setLimit(Int(limit)))
  }

  @_cdecl("sfbufsqlite_file_close")
  func sfbufsqlite_file_close(_ state: UnsafeMutableRawPointer) {
    let f = Unmanaged<MappedFile>.fromOpaque(state).takeRetainedValue()
    f.close()
  }

  @_cdecl("sfbufsqlite_file_stats")
  func sfbufsqlite_file_stats(_ state: UnsafeMutableRawPointer) -> UnsafeMutablePointer<CChar>? {
    strdup(file(state).statsText)
  }
#endif
