// Raw system calls of SFSendfile. Each sits in an `@inline(never)` function so `errno` is
// read right after the call, before anything else can change it; each returns the result or
// throws a typed `Errno` through SFBufHost's `Posix.check`, the package's one checked-call
// helper. It retries on EINTR only where asked: a send or a wait interrupted by a signal is
// reported, as the kernel's sendfile reports it.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufHost
  import Synchronization
  import SystemPackage

  enum Sys {

    /// sendmsg(2) of `count` iovecs with `flags`; never retried (EINTR is the caller's).
    @inline(never)
    static func sendmsg(_ fd: CInt, _ iov: UnsafeMutablePointer<iovec>, _ count: Int, _ flags: CInt)
      throws(Errno) -> Int
    {
      var msg = msghdr()
      msg.msg_iov = iov
      msg.msg_iovlen = count
      let n = Glibc.sendmsg(fd, &msg, flags)
      if n < 0 { throw Errno(rawValue: errno) }
      return n
    }

    /// read(2); never retried.
    @inline(never)
    static func read(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
      let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
      if n < 0 { throw Errno(rawValue: errno) }
      return n
    }

    /// write(2) of all of `bytes` to a file (not a socket), retrying EINTR and short writes.
    static func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) throws(Errno) {
      var done = 0
      while done < bytes.count {
        done += try Posix.check { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
      }
    }

    /// poll(2) of one descriptor for `events`; returns the revents, 0 on timeout.
    @inline(never)
    static func poll(_ fd: CInt, _ events: Int16, timeoutMS: Int32) throws(Errno) -> Int16 {
      var p = pollfd(fd: fd, events: events, revents: 0)
      let r = Glibc.poll(&p, 1, timeoutMS)
      if r < 0 { throw Errno(rawValue: errno) }
      return r == 0 ? 0 : p.revents
    }

    /// fcntl(2) F_GETFL.
    @inline(never)
    static func statusFlags(_ fd: CInt) throws(Errno) -> CInt {
      let r = fcntl(fd, F_GETFL)
      if r < 0 { throw Errno(rawValue: errno) }
      return r
    }

    /// fcntl(2) F_SETFL.
    @inline(never)
    static func setStatusFlags(_ fd: CInt, _ flags: CInt) throws(Errno) {
      if fcntl(fd, F_SETFL, flags) < 0 { throw Errno(rawValue: errno) }
    }

    /// setsockopt(2) of a value of type `T`.
    @inline(never)
    static func setOption<T: BitwiseCopyable>(_ fd: CInt, _ level: CInt, _ name: CInt, _ value: T)
      throws(Errno)
    {
      var v = value
      if setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<T>.size)) < 0 {
        throw Errno(rawValue: errno)
      }
    }

    /// getsockopt(2) of an `Int32` option.
    @inline(never)
    static func intOption(_ fd: CInt, _ level: CInt, _ name: CInt) throws(Errno) -> Int32 {
      var v: Int32 = 0
      var len = socklen_t(MemoryLayout<Int32>.size)
      if getsockopt(fd, level, name, &v, &len) < 0 { throw Errno(rawValue: errno) }
      return v
    }

    /// socket(2) of a TCP stream socket of `family`, close-on-exec.
    @inline(never)
    static func tcpSocket(_ family: CInt) throws(Errno) -> CInt {
      let fd = socket(family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
      if fd < 0 { throw Errno(rawValue: errno) }
      return fd
    }

    /// connect(2); EINTR is returned to the caller (the connection goes on in the background).
    @inline(never)
    static func connect(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t)
      throws(Errno)
    {
      if Glibc.connect(fd, addr, len) < 0 { throw Errno(rawValue: errno) }
    }

    /// bind(2).
    @inline(never)
    static func bind(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) throws(Errno) {
      if Glibc.bind(fd, addr, len) < 0 { throw Errno(rawValue: errno) }
    }

    /// listen(2).
    @inline(never)
    static func listen(_ fd: CInt, _ backlog: CInt) throws(Errno) {
      if Glibc.listen(fd, backlog) < 0 { throw Errno(rawValue: errno) }
    }

    /// accept4(2) with SOCK_CLOEXEC (through the shim: a GNU function); never retried.
    @inline(never)
    static func accept(_ fd: CInt) throws(Errno) -> CInt {
      let r = sfb_accept_cloexec(fd)
      if r < 0 { throw Errno(rawValue: errno) }
      return r
    }

    /// getsockname(2): the IPv4 or IPv6 port the socket is bound to.
    @inline(never)
    static func localPort(_ fd: CInt) throws(Errno) -> Int {
      var storage = sockaddr_storage()
      var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
      let r = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
      }
      if r < 0 { throw Errno(rawValue: errno) }
      return withUnsafePointer(to: &storage) { p -> Int in
        if CInt(p.pointee.ss_family) == AF_INET6 {
          return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
            Int(UInt16(bigEndian: $0.pointee.sin6_port))
          }
        }
        return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
          Int(UInt16(bigEndian: $0.pointee.sin_port))
        }
      }
    }

    /// shutdown(2).
    @inline(never)
    static func shutdown(_ fd: CInt, _ how: CInt) throws(Errno) {
      if Glibc.shutdown(fd, how) < 0 { throw Errno(rawValue: errno) }
    }

    /// setsockopt SO_ZEROCOPY = 1 (through the shim, which has the kernel's constant).
    @inline(never)
    static func enableZeroCopy(_ fd: CInt) throws(Errno) {
      if sfb_enable_zerocopy(fd) < 0 { throw Errno(rawValue: errno) }
    }

    /// Up to `max` messages of the socket's error queue, without waiting.
    @inline(never)
    static func reap(
      _ fd: CInt, _ out: UnsafeMutablePointer<sfb_zc_completion>, _ max: Int
    ) throws(Errno) -> Int {
      let n = sfb_zerocopy_reap(fd, out, CInt(max))
      if n < 0 { throw Errno(rawValue: errno) }
      return Int(n)
    }

    /// The number of leading pages of the range that are in the page cache (cachestat(2),
    /// else mincore(2)).
    @inline(never)
    static func residentPrefix(_ fd: CInt, offset: Int, pages: Int, pageSize: Int)
      throws(Errno) -> Int
    {
      let r = sfb_resident_prefix(fd, off_t(offset), pages, pageSize)
      if r < 0 { throw Errno(rawValue: errno) }
      return r
    }

    /// posix_fadvise(2) POSIX_FADV_WILLNEED: starts reading the range, does not wait.
    @inline(never)
    static func willNeed(_ fd: CInt, offset: Int, length: Int) {
      _ = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_WILLNEED)
    }

    /// epoll_create1(2) with EPOLL_CLOEXEC.
    @inline(never)
    static func epollCreate() throws(Errno) -> CInt {
      let r = sfb_epoll_create()
      if r < 0 { throw Errno(rawValue: errno) }
      return r
    }

    /// epoll_ctl(2) ADD or MOD, one-shot, for errors and optionally for writability.
    @inline(never)
    static func epollArm(_ epfd: CInt, _ fd: CInt, add: Bool, writable: Bool, token: UInt64)
      throws(Errno)
    {
      if sfb_epoll_arm(epfd, fd, add ? 1 : 0, writable ? 1 : 0, token) < 0 {
        throw Errno(rawValue: errno)
      }
    }

    /// epoll_ctl(2) DEL; errors (the descriptor already gone) are ignored.
    @inline(never)
    static func epollDelete(_ epfd: CInt, _ fd: CInt) {
      _ = sfb_epoll_del(epfd, fd)
    }

    /// epoll_wait(2); EINTR is returned as 0 events.
    @inline(never)
    static func epollWait(
      _ epfd: CInt, _ tokens: UnsafeMutablePointer<UInt64>, _ what: UnsafeMutablePointer<UInt32>,
      _ max: Int, timeoutMS: Int32
    ) throws(Errno) -> Int {
      let r = sfb_epoll_wait(epfd, tokens, what, CInt(max), timeoutMS)
      if r < 0 {
        let e = errno
        if e == EINTR { return 0 }
        throw Errno(rawValue: e)
      }
      return Int(r)
    }
  }
#endif

#if os(Linux)
  import Glibc

  /// A value behind a `Mutex`, for state that holds non-`Sendable` things (continuations,
  /// buffers) and is shared between threads.
  // @unchecked: Value is not Sendable: only the lock guards it.
  final class Locked<Value>: @unchecked Sendable {
    private let mutex: Mutex<Value>

    init(_ value: consuming sending Value) { mutex = Mutex(value) }

    /// Runs `body` with the value, holding the lock.
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
      try withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        return try mutex.locked { v -> UncheckedBox<R> in UncheckedBox(try box.value(&v)) }.value
      }
    }
  }

  /// Carries a value across the `sending` boundary of `Mutex.withLock`: the callers of
  /// ``Locked/withLock(_:)`` keep what they pass and get under their own discipline.
  struct UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
  }
#endif
