// A connected stream socket: the descriptor, its options, plain reads and writes, and the
// zero-copy state the kernel's notifications drive (Socket-zerocopy.swift).

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import Synchronization
  import SystemPackage

  /// A connected TCP socket that sendfile and zero-copy sends write to.
  ///
  /// The socket owns its descriptor and closes it in ``close()`` or when it goes away. It
  /// also owns what the network still holds: network buffers of zero-copy sends waiting for
  /// their completion notifications (see ``enableZeroCopy()``).
  ///
  /// One send at a time: a sendfile call or a zero-copy send on a socket that is already in
  /// one stops the process (the bytes of two senders would interleave). Reading, options and
  /// completions may be used from any thread.
  public final class Socket: Sendable {
    /// The descriptor. Valid until ``close()``; the socket owns it.
    public let fileDescriptor: FileDescriptor
    /// ``fileDescriptor``'s number, for the system calls.
    var fd: CInt { fileDescriptor.rawValue }
    /// Where zero-copy notifications are matched to the buffers they free. Locked.
    let zc = Locked(ZeroCopyState())
    /// Set while a send is in progress (one at a time).
    private let sending = Atomic<Bool>(false)
    /// This socket's name in the completion thread's registry.
    let token: UInt64

    private static let nextToken = Atomic<UInt64>(1)

    /// Adopts `fd`, a connected stream socket: the socket closes it.
    public init(adopting fd: FileDescriptor) {
      fileDescriptor = fd
      token = Socket.nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    deinit {
      close()
    }

    /// Connects to `host` (a name or a numeric address) on `port` over TCP (`socket`,
    /// `connect`), trying each address the name resolves to (`getaddrinfo`).
    ///
    /// - Parameter timeout: how long to wait for the connection; the descriptor is blocking
    ///   afterwards.
    /// - Throws: ``SocketError``: the resolution failed, or the last `connect` errno
    ///   (`ECONNREFUSED` when nothing listens, `ETIMEDOUT`).
    public static func connect(host: String, port: Int, timeout: Duration = .seconds(10))
      throws(SocketError) -> Socket
    {
      let what = "connect \(host):\(port)"
      guard (1...65535).contains(port) else { throw SocketError(what, .invalidArgument) }
      var hints = addrinfo()
      hints.ai_family = AF_UNSPEC
      hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
      var list: UnsafeMutablePointer<addrinfo>? = nil
      let rc = getaddrinfo(host, String(port), &hints, &list)
      if rc != 0 {
        let message = String(cString: gai_strerror(rc))
        throw SocketError("resolve \(host) (\(message))", .noSuchAddressOrDevice)
      }
      defer { freeaddrinfo(list) }
      var last = Errno.noSuchAddressOrDevice
      var entry = list
      while let ai = entry {
        entry = ai.pointee.ai_next
        do throws(Errno) {
          let fd = try Sys.tcpSocket(ai.pointee.ai_family)
          do throws(Errno) {
            try connect(
              fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen, timeout: timeout.inSeconds)
          } catch {
            Glibc.close(fd)
            throw error
          }
          let s = Socket(adopting: FileDescriptor(rawValue: fd))
          try? Sys.setOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY, Int32(1))
          return s
        } catch {
          last = error
        }
      }
      throw SocketError(what, last)
    }

    /// A non-blocking connect bounded by `timeout`, then back to blocking.
    private static func connect(
      _ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t, timeout: Double
    ) throws(Errno) {
      let flags = try Sys.statusFlags(fd)
      try Sys.setStatusFlags(fd, flags | O_NONBLOCK)
      do {
        try Sys.connect(fd, addr, len)
      } catch .nowInProgress, .interrupted {
        let deadline = monotonicNow() + timeout
        while true {
          let left = deadline - monotonicNow()
          if left <= 0 { throw Errno.timedOut }
          let ev: Int16
          do {
            ev = try Sys.poll(fd, Int16(POLLOUT), timeoutMS: Int32(left * 1000) + 1)
          } catch .interrupted { continue }
          if ev != 0 { break }
        }
        let e = try Sys.intOption(fd, SOL_SOCKET, SO_ERROR)
        if e != 0 { throw Errno(rawValue: e) }
      }
      try Sys.setStatusFlags(fd, flags)
    }

    // MARK: Options

    /// Whether the descriptor is non-blocking (`fcntl` `O_NONBLOCK`). A non-blocking socket
    /// makes sendfile stop with ``SendfileError/Code/wouldBlock`` when the socket is full,
    /// and never sleep for a mapping.
    public var isNonBlocking: Bool {
      get { ((try? Sys.statusFlags(fd)) ?? 0) & O_NONBLOCK != 0 }
      set {
        guard let flags = try? Sys.statusFlags(fd) else { return }
        try? Sys.setStatusFlags(
          fd, newValue ? flags | O_NONBLOCK : flags & ~O_NONBLOCK)
      }
    }

    /// Bounds blocking sends and receives (`SO_SNDTIMEO`, `SO_RCVTIMEO`); `nil` leaves one
    /// unchanged, `.zero` waits forever. A send that times out ends with
    /// ``SendfileError/Code/wouldBlock`` and the bytes it queued.
    public func setTimeouts(send: Duration? = nil, receive: Duration? = nil) throws(SocketError) {
      func timeval(_ d: Duration) -> Glibc.timeval {
        let (s, atto) = d.components
        return Glibc.timeval(tv_sec: Int(s), tv_usec: Int(atto / 1_000_000_000_000))
      }
      do throws(Errno) {
        if let send { try Sys.setOption(fd, SOL_SOCKET, SO_SNDTIMEO, timeval(send)) }
        if let receive {
          try Sys.setOption(fd, SOL_SOCKET, SO_RCVTIMEO, timeval(receive))
        }
      } catch {
        throw SocketError("setsockopt SO_SNDTIMEO/SO_RCVTIMEO", error)
      }
    }

    /// Sets the kernel's send buffer size (`SO_SNDBUF`; the kernel doubles it).
    public func setSendBufferSize(_ bytes: Int) throws(SocketError) {
      do { try Sys.setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(bytes)) } catch {
        throw SocketError("setsockopt SO_SNDBUF", error)
      }
    }

    /// Sets the kernel's receive buffer size (`SO_RCVBUF`; the kernel doubles it).
    public func setReceiveBufferSize(_ bytes: Int) throws(SocketError) {
      do { try Sys.setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(bytes)) } catch {
        throw SocketError("setsockopt SO_RCVBUF", error)
      }
    }

    // MARK: Plain I/O

    /// Ends the sending direction (`shutdown(SHUT_WR)`): the peer reads end-of-file after
    /// the bytes queued.
    public func shutdownWrite() throws(SocketError) {
      do { try Sys.shutdown(fd, CInt(SHUT_WR)) } catch {
        throw SocketError("shutdown", error)
      }
    }

    /// Reads what is there, up to `buffer.count` bytes (`read(2)`, retried on `EINTR`).
    /// Returns 0 at end-of-file.
    /// - Throws: ``SocketError`` (`EAGAIN` on a receive timeout or a non-blocking socket).
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int {
      while true {
        do { return try Sys.read(fd, buffer) } catch .interrupted { continue } catch {
          throw SocketError("read", error)
        }
      }
    }

    /// Reads until end-of-file, writing everything to `out` when given (else discarding it
    /// after it is read into a buffer), and returns the byte count.
    ///
    /// Cost: one `read(2)` (and one `write(2)`) per `bufferSize` bytes at most.
    public func drain(to out: FileDescriptor? = nil, bufferSize: Int = 1 << 20)
      throws(SocketError) -> Int
    {
      let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: bufferSize, alignment: Int(sysconf(CInt(_SC_PAGESIZE))))
      defer { buffer.deallocate() }
      var total = 0
      while true {
        let n = try receive(into: buffer)
        if n == 0 { return total }
        total += n
        if let out {
          do {
            try Sys.writeAll(out.rawValue, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
          } catch {
            throw SocketError("write", error)
          }
        }
      }
    }

    /// Sends all of `bytes`, copying them (`sendmsg(2)` with `MSG_NOSIGNAL`), waiting for room
    /// on a blocking socket.
    /// - Throws: ``SendfileError`` with the bytes queued before the failure.
    public func sendAll(_ bytes: UnsafeRawBufferPointer) throws(SendfileError) {
      enterSend()
      defer { leaveSend() }
      var done = 0
      var iov = iovec()
      while done < bytes.count {
        iov.iov_base = UnsafeMutableRawPointer(mutating: bytes.baseAddress! + done)
        iov.iov_len = bytes.count - done
        do { done += try Sys.sendmsg(fd, &iov, 1, sfb_send_flags(0, 0)) } catch {
          throw SendfileError.sending(error, bytesSent: done)
        }
      }
    }

    // MARK: Lifetime

    /// Whether ``close()`` was called.
    public var isClosed: Bool { zc.withLock { $0.closed } }

    /// Closes the descriptor (`close(2)`). Network buffers still waiting for a zero-copy
    /// completion are released now: the kernel holds its own references to the pages it
    /// still has to send, so their memory stays valid, but their mappings and wires go back
    /// to the pool. Zero-copy sends still waiting end with ``SendfileError/Code/closed``.
    /// Closing twice does nothing.
    public func close() {
      let (released, waiters): ([Pending], [CheckedContinuation<Void, Never>]) = zc.withLock {
        s in
        if s.closed { return ([], []) }
        s.closed = true
        if s.registered { CompletionThread.shared.unregister(token, fd: fd) }
        Glibc.close(fd)
        let p = s.pending
        s.pending = []
        var w = Array(s.writeWaiters.values)
        s.writeWaiters = [:]
        for entry in p {
          if let t = entry.tracker, let c = t.abandon() { w.append(c) }
        }
        return (p, w)
      }
      _ = released
      for c in waiters { c.resume() }
    }

    /// Marks the start of a send; a second concurrent one is a caller's bug.
    func enterSend() {
      if !sending.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
        fatalError("SFSendfile: two sends at once on one socket (their bytes would interleave)")
      }
    }

    func leaveSend() {
      sending.store(false, ordering: .releasing)
    }
  }

  /// A socket listening on a loopback (or given) address, for peers to connect to.
  public final class Listener: Sendable {
    /// The listening descriptor; the listener owns it.
    public let fileDescriptor: FileDescriptor
    /// The port it listens on (the one the kernel chose when asked for port 0).
    public let port: Int

    /// Listens on `host` (a numeric IPv4 or IPv6 address, default `127.0.0.1`; `::` or
    /// `0.0.0.0` for all) and `port` (0: any free port) (`socket`, `bind` with
    /// `SO_REUSEADDR`, `listen`).
    /// - Throws: ``SocketError`` (`EADDRINUSE`, `EACCES`, `EADDRNOTAVAIL`, a bad address or
    ///   port).
    public init(host: String = "127.0.0.1", port: Int = 0, backlog: Int = 16) throws(SocketError) {
      let what = "listen " + (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
      guard (0...65535).contains(port) else { throw SocketError(what, .invalidArgument) }
      var hints = addrinfo()
      hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV
      hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
      var list: UnsafeMutablePointer<addrinfo>?
      guard getaddrinfo(host, String(port), &hints, &list) == 0, let ai = list else {
        throw SocketError(what, .invalidArgument)
      }
      defer { freeaddrinfo(list) }
      do throws(Errno) {
        let fd = try Sys.tcpSocket(ai.pointee.ai_family)
        do throws(Errno) {
          try Sys.setOption(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1))
          try Sys.bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
          try Sys.listen(fd, CInt(backlog))
          self.port = try Sys.localPort(fd)
        } catch {
          Glibc.close(fd)
          throw error
        }
        fileDescriptor = FileDescriptor(rawValue: fd)
      } catch {
        throw SocketError(what, error)
      }
    }

    /// Adopts `fd`, a socket already listening (inherited from a parent process, say).
    public init(adopting fd: FileDescriptor) throws(SocketError) {
      fileDescriptor = fd
      do { port = try Sys.localPort(fd.rawValue) } catch { throw SocketError("getsockname", error) }
    }

    deinit { Glibc.close(fileDescriptor.rawValue) }

    /// Waits up to `timeout` for a connection and accepts it (`poll`, `accept4`).
    /// - Throws: ``SocketError`` with `ETIMEDOUT` when nobody connected in time.
    public func accept(timeout: Duration = .seconds(10)) throws(SocketError) -> Socket {
      let deadline = monotonicNow() + timeout.inSeconds
      while true {
        let left = deadline - monotonicNow()
        if left <= 0 { throw SocketError("accept", .timedOut) }
        do {
          let ev = try Sys.poll(
            fileDescriptor.rawValue, Int16(POLLIN), timeoutMS: Int32(left * 1000) + 1)
          if ev == 0 { continue }
          let fd = try Sys.accept(fileDescriptor.rawValue)
          try? Sys.setOption(fd, CInt(IPPROTO_TCP), TCP_NODELAY, Int32(1))
          return Socket(adopting: FileDescriptor(rawValue: fd))
        } catch .interrupted, .resourceTemporarilyUnavailable, .connectionAbort {
          continue
        } catch {
          throw SocketError("accept", error)
        }
      }
    }
  }

  extension Duration {
    /// The duration in seconds, for deadlines against ``monotonicNow()``.
    package var inSeconds: Double {
      let (s, atto) = components
      return Double(s) + Double(atto) / 1e18
    }
  }

  /// Monotonic time in seconds (`clock_gettime(CLOCK_MONOTONIC)`).
  package func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
  }
#endif
