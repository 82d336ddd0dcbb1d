// What the databases of one process share: one pool per configuration, one memory object
// per database file.

#if os(Linux)
  import Glibc
  import SFBufHost
  import Synchronization
  import SystemPackage

  /// The process's pools and open database objects, for the `sfbuf` VFS.
  ///
  /// Every database opened with the same configuration maps through the same pool, so that
  /// several connections share one window (and its cache: two connections reading the same
  /// page hit the same slot). A pool, once made, lives as long as the process, as the
  /// kernel's does; its counters go on counting across connections.
  public enum SFBufSQLite {
    struct ObjectEntry {
      let object: VMObject
      var users: Int
    }

    struct State {
      var pools: [SFBufSQLiteConfig: SFBufPool] = [:]
      var objects: [FileKey: ObjectEntry] = [:]
      var closed: [SFBufSQLiteConfig: SFBufSQLiteCounters] = [:]
      var openFiles: [SFBufSQLiteConfig: Int] = [:]
    }

    struct FileKey: Hashable {
      let device: UInt
      let inode: UInt
    }

    static let state = Mutex(State())

    /// The pool databases opened with `config` use, or `nil` before the first of them.
    /// O(1), under the registry lock.
    public static func pool(for config: SFBufSQLiteConfig) -> SFBufPool? {
      state.locked { $0.pools[config] }
    }

    /// The mapping counters of every database file opened with `config` and since closed.
    public static func closedFileCounters(for config: SFBufSQLiteConfig) -> SFBufSQLiteCounters {
      state.locked { $0.closed[config] ?? SFBufSQLiteCounters() }
    }

    /// Forgets the pool of `config` when no open database uses it, so that its window's
    /// address space is given back once the last mapping cached in it goes (a program that
    /// tries many window sizes, as `sfbuf bench sqlite` does, stays under the host's limit
    /// of mappings). Returns whether it was forgotten. The next database opened with
    /// `config` gets a new pool, whose counters start at 0.
    @discardableResult
    public static func discardPool(for config: SFBufSQLiteConfig) -> Bool {
      state.locked { s in
        guard (s.openFiles[config] ?? 0) == 0, s.pools[config] != nil else { return false }
        s.pools[config] = nil
        s.closed[config] = nil
        return true
      }
    }

    /// The pool for `config`, made on first use; one more open file uses it.
    static func makePool(for config: SFBufSQLiteConfig) throws(SFBufSQLiteConfigError)
      -> SFBufPool
    {
      let made = state.locked { s -> Result<SFBufPool, SFBufSQLiteConfigError> in
        if let p = s.pools[config] {
          s.openFiles[config, default: 0] += 1
          return .success(p)
        }
        guard let n = config.nsfbufs else {
          let p = SFBufPool.directMap()
          s.pools[config] = p
          s.openFiles[config, default: 0] += 1
          return .success(p)
        }
        do {
          let p = try SFBufPool(nsfbufs: n, policy: config.policy)
          s.pools[config] = p
          s.openFiles[config, default: 0] += 1
          return .success(p)
        } catch {
          return .failure(.pool("\(error)"))
        }
      }
      return try made.get()
    }

    /// The memory object of the file at `path`, shared by every connection that has it open
    /// (one per device and inode); `release(_:)` when done.
    static func acquireObject(path: String) throws(SFBufSQLiteConfigError) -> (
      VMObject, FileKey
    ) {
      var st = stat()
      guard stat(path, &st) == 0 else {
        throw .file("\(path): \(Errno(rawValue: errno))")
      }
      let key = FileKey(device: UInt(st.st_dev), inode: UInt(st.st_ino))
      let result = state.locked { s -> Result<VMObject, SFBufSQLiteConfigError> in
        if var e = s.objects[key] {
          e.users += 1
          s.objects[key] = e
          return .success(e.object)
        }
        do {
          let o = try VMObject.file(FilePath(path), access: .readOnly)
          s.objects[key] = ObjectEntry(object: o, users: 1)
          return .success(o)
        } catch {
          return .failure(.file("\(error)"))
        }
      }
      return (try result.get(), key)
    }

    /// Drops one user of the object of `key` (a file that could not be opened).
    static func releaseObject(_ key: FileKey) {
      state.locked { s in
        if var e = s.objects[key] {
          e.users -= 1
          s.objects[key] = e.users > 0 ? e : nil
        }
      }
    }

    /// Drops one user of the object of `key` and of the pool of `config`, and adds a closed
    /// file's counters to its configuration's.
    static func release(
      _ key: FileKey, config: SFBufSQLiteConfig, counters: SFBufSQLiteCounters
    ) {
      state.locked { s in
        s.openFiles[config, default: 1] -= 1
        if var e = s.objects[key] {
          e.users -= 1
          s.objects[key] = e.users > 0 ? e : nil
        }
        s.closed[config, default: SFBufSQLiteCounters()].add(counters)
      }
    }
  }

  /// What the `sfbuf` VFS did with SQLite's requests for mappings (xFetch), for one file or
  /// summed over files.
  public struct SFBufSQLiteCounters: Equatable, Sendable {
    /// xFetch calls.
    public var fetches = 0
    /// xFetch calls answered with a mapping.
    public var mapped = 0
    /// xFetch calls answered with NULL because every slot was in use (SQLite then reads the
    /// page with xRead into its own cache).
    public var windowFull = 0
    /// ... because the page lies past what may be mapped: the end of the file as last seen,
    /// or the `mmap_size` limit.
    public var pastEnd = 0
    /// ... because a page larger than 4096 bytes could not be mapped into adjacent slots.
    public var notAdjacent = 0
    /// ... because the host refused to map or wire the page.
    public var refused = 0
    /// ... because the page was not yet admitted: asked for fewer than `admit` times
    /// recently (window only).
    public var cold = 0
    /// xUnfetch calls with a mapping.
    public var unfetches = 0
    /// xUnfetch calls with NULL (SQLite dropping every mapping of the file).
    public var unmapAll = 0

    public init() {}

    /// xFetch calls answered with NULL, for any reason.
    public var fellBack: Int { windowFull + pastEnd + notAdjacent + refused + cold }

    mutating func add(_ o: SFBufSQLiteCounters) {
      fetches += o.fetches
      mapped += o.mapped
      windowFull += o.windowFull
      pastEnd += o.pastEnd
      notAdjacent += o.notAdjacent
      refused += o.refused
      cold += o.cold
      unfetches += o.unfetches
      unmapAll += o.unmapAll
    }

    /// One line: `fetches F, mapped M, fell back to xRead X (not admitted C, window full W,
    /// past the end P, not adjacent A, refused R), unfetches U, unmap-all N`.
    public var line: String {
      "fetches \(fetches), mapped \(mapped), fell back to xRead \(fellBack) (not admitted "
        + "\(cold), window full \(windowFull), past the end \(pastEnd), not adjacent \(notAdjacent), refused "
        + "\(refused)), unfetches \(unfetches), unmap-all \(unmapAll)"
    }
  }
#endif
