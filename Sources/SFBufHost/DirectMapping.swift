// The direct map: each object mapped whole, once, so a page's address is arithmetic.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufCore
  import Synchronization
  import SystemPackage

  /// One object mapped whole (`mmap` of the entire object), made on the first direct-map
  /// allocation of one of its pages and kept until the object goes away.
  ///
  /// A larger range of address space than the object is reserved, so that a file which grows
  /// later can be mapped further in place: addresses already handed out never move.
  @usableFromInline
  // @unchecked: a raw mapping, extended under `lock`.
  final class DirectMapping: @unchecked Sendable {
    /// Start of the mapping.
    @usableFromInline let base: UnsafeMutableRawPointer
    /// Bytes of address space reserved.
    let reserved: Int
    /// The page size, kept here so that the hot path reads no global.
    @usableFromInline let pageSize = vmPageSize
    /// Pages mapped so far; read without a lock.
    @usableFromInline let mappedPages = Atomic<UInt32>(0)
    private unowned let object: VMObject
    private let lock = Mutex(())

    init(object: VMObject, fd: CInt) throws(SFBufError) {
      self.object = object
      let size: Int
      do throws(Errno) {
        size = try Posix.fileSize(fd)
        reserved = max(2 * size, size + (1 << 30))
        base = try Posix.mmap(
          nil, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
      } catch {
        throw .mappingRefused(errno: error.rawValue)
      }
      if size > 0 {
        do throws(Errno) {
          _ = try Posix.mmap(base, size, object.protection, MAP_SHARED | MAP_FIXED, fd, 0)
        } catch {
          try? Posix.munmap(base, reserved)
          throw .mappingRefused(errno: error.rawValue)
        }
        mappedPages.store(UInt32((size + vmPageSize - 1) / vmPageSize), ordering: .releasing)
      }
    }

    func unmap() {
      try? Posix.munmap(base, reserved)
    }

    /// The address of page `index` when it is mapped already (two loads), else `nil`.
    @inlinable
    func mappedAddress(of index: Int) -> UnsafeMutableRawPointer? {
      index >= 0 && index < Int(mappedPages.load(ordering: .acquiring))
        ? base + index * pageSize : nil
    }

    /// The address of page `index`: arithmetic when the page is mapped already (the common
    /// case, two loads), else the mapping is extended to the object's current size first.
    @inline(__always)
    func address(of index: Int) throws(SFBufError) -> UnsafeMutableRawPointer {
      if index < Int(mappedPages.load(ordering: .acquiring)) { return base + index * vmPageSize }
      return try extend(toCover: index)
    }

    private func extend(toCover index: Int) throws(SFBufError) -> UnsafeMutableRawPointer {
      let offset = try lock.locked { _ throws(SFBufError) -> Int in
        try extendLocked(toCover: index)
      }
      return base + offset
    }

    /// ``extend(toCover:)`` with the lock held; returns the page's offset in the mapping.
    private func extendLocked(toCover index: Int) throws(SFBufError) -> Int {
      let have = Int(mappedPages.load(ordering: .relaxed))
      if index < have { return index * vmPageSize }
      do throws(Errno) {
        let fd = object.rawDescriptor
        let size = try Posix.fileSize(fd)
        let want = min((size + vmPageSize - 1) / vmPageSize, reserved / vmPageSize)
        guard index < want else { throw Errno.invalidArgument }
        _ = try Posix.mmap(
          base + have * vmPageSize, (want - have) * vmPageSize, object.protection,
          MAP_SHARED | MAP_FIXED, fd, off_t(have * vmPageSize))
        mappedPages.store(UInt32(want), ordering: .releasing)
      } catch {
        throw .mappingRefused(errno: error.rawValue)
      }
      return index * vmPageSize
    }
  }
#endif
