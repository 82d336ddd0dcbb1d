// Raw system calls. Each sits in an `@inline(never)` function so `errno` is read right
// after the call, before anything else can change it; each returns the result or throws a
// typed `Errno`, retrying on EINTR where asked.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SystemPackage

  /// The package's raw system calls; `check` is shared with SFSendfile.
  @usableFromInline
  package enum Posix {
    /// Calls `body` until it returns something other than -1 with `EINTR` (when `retryOnEINTR`),
    /// and turns -1 into the `errno` it left.
    @inline(never)
    package static func check<T: FixedWidthInteger>(retryOnEINTR: Bool = true, _ body: () -> T)
      throws(Errno)
      -> T
    {
      while true {
        let r = body()
        if r != -1 { return r }
        let e = errno
        if e == EINTR && retryOnEINTR { continue }
        throw Errno(rawValue: e)
      }
    }

    /// mmap(2). Returns the address, or throws the errno.
    @inline(never)
    static func mmap(
      _ addr: UnsafeMutableRawPointer?, _ length: Int, _ prot: CInt, _ flags: CInt, _ fd: CInt,
      _ offset: off_t
    ) throws(Errno) -> UnsafeMutableRawPointer {
      let p = Glibc.mmap(addr, length, prot, flags, fd, offset)
      if p == MAP_FAILED { throw Errno(rawValue: errno) }
      return p!
    }

    /// munmap(2).
    @inline(never)
    static func munmap(_ addr: UnsafeMutableRawPointer, _ length: Int) throws(Errno) {
      _ = try check { Glibc.munmap(addr, length) }
    }

    /// madvise(2) with MADV_DONTNEED: drops the page-table entries of the range. On a shared
    /// mapping the data stays; a later access faults the page in again. Never fails on a
    /// range of the window, so errors are ignored.
    @inline(never)
    static func dontNeed(_ addr: UnsafeMutableRawPointer, _ length: Int) {
      _ = madvise(addr, length, MADV_DONTNEED)
    }

    /// fstat(2): the size in bytes of the file behind `fd`.
    @inline(never)
    static func fileSize(_ fd: CInt) throws(Errno) -> Int {
      var st = stat()
      _ = try check { fstat(fd, &st) }
      return Int(st.st_size)
    }

    /// ftruncate(2).
    @inline(never)
    static func ftruncate(_ fd: CInt, _ size: Int) throws(Errno) {
      _ = try check { Glibc.ftruncate(fd, off_t(size)) }
    }

    /// fallocate(2) with mode 0: allocates the byte range, making a memfd's pages resident.
    @inline(never)
    static func fallocate(_ fd: CInt, _ offset: Int, _ length: Int) throws(Errno) {
      _ = try check { sfb_fallocate(fd, off_t(offset), off_t(length)) }
    }

    /// posix_fadvise(2) POSIX_FADV_WILLNEED: starts reading the range into the page cache.
    /// Returns the error number instead of setting errno, as the call does.
    @inline(never)
    static func willNeed(_ fd: CInt, _ offset: Int, _ length: Int) throws(Errno) {
      let r = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
      if r != 0 { throw Errno(rawValue: r) }
    }
  }
#endif
