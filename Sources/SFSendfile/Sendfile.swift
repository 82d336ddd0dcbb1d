// sendfile(2) on sf_buf: the first user the manual names. Pages of a file are wired, mapped
// with sf_buf_alloc, attached to network buffers (NetBuffer, the EXT_SFBUF mbuf) and written
// to the socket with scatter-gather sendmsg(2), as FreeBSD's vn_sendfile builds mbuf chains
// and hands them to the protocol.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufCore
  import SFBufHost
  import SystemPackage

  /// Sends `count` bytes of `file` from `offset` to `socket`, preceded by `headers` and
  /// followed by `trailers` in the same call: FreeBSD's `sendfile(2)`.
  ///
  /// How: the call works in chains of up to 64 pages. For each chain the pages are wired in
  /// one run (`VMObject.wire(pages:)`), each is mapped with `sf_buf_alloc` and attached to a
  /// ``NetBuffer``, and the chain is written with one `sendmsg(2)` of one iovec per page
  /// (`MSG_NOSIGNAL`: a vanished peer is an error, never a `SIGPIPE`). A buffer is released
  /// (sf_buf freed, page unwired) once the kernel has its bytes: when `sendmsg` returns, or
  /// with zero-copy (``Socket/enableZeroCopy()``) when the completion notification says so.
  /// The window of `pool` bounds the pages in flight.
  ///
  /// Mappings, as in the original: the first allocation of each chain may sleep for a free
  /// slot, interruptibly (`SFB_CATCH`); the others never sleep (`SFB_NOWAIT`), and a chain
  /// that cannot grow is sent as it is. A sender therefore never sleeps while holding a
  /// mapping it has not handed to the network, so concurrent senders cannot deadlock on a
  /// small window. A non-blocking socket never sleeps for a mapping at all.
  ///
  /// The size of the file is read again before each chain: a file that grew is sent to its
  /// new end (within `count`); a file truncated during the call ends it early with a short
  /// count and no trailers, as in FreeBSD. A page that disappears between that check and the
  /// send makes `sendmsg` fail with `EFAULT` (the pages are never touched from user code,
  /// which would be a `SIGBUS`); that too ends the call with a short count.
  ///
  /// - Parameters:
  ///   - offset: the first byte of the file to send; at or past the end of the file only the
  ///     headers and trailers are sent.
  ///   - count: bytes of the file to send; 0 sends to the end of the file.
  ///   - headers: bytes sent before the file's, in the first `sendmsg` (copied once).
  ///   - trailers: bytes sent after the file's, in the last `sendmsg` (copied once).
  ///   - flags: ``SendfileFlags/noDiskIO`` (`SF_NODISKIO`).
  ///   - pool: where the mappings come from: a window or the direct map.
  /// - Returns: the bytes queued on the socket, headers and trailers included (FreeBSD's
  ///   `sbytes`); fewer than asked only when the file was truncated during the call.
  /// - Throws: ``SendfileError``, whose ``SendfileError/bytesSent`` counts what was queued
  ///   before the error: ``SendfileError/Code/noBuffers`` (no page could be mapped before
  ///   anything was queued), ``SendfileError/Code/interrupted`` (a signal while sleeping
  ///   for a mapping or in a blocking send), ``SendfileError/Code/brokenPipe``,
  ///   ``SendfileError/Code/wouldBlock`` (non-blocking socket, or a send timeout),
  ///   ``SendfileError/Code/busy`` (`SF_NODISKIO`), ``SendfileError/Code/invalidArgument``.
  ///   After any error every mapping the call made is freed and every page unwired, except
  ///   those still held for a zero-copy notification, which follow when it arrives.
  /// - Precondition: no other send is in progress on `socket`.
  public func sendfile(
    _ file: VMObject, to socket: Socket, offset: Int = 0, count: Int = 0,
    headers: [[UInt8]] = [], trailers: [[UInt8]] = [], flags: SendfileFlags = [],
    pool: SFBufPool = .default
  ) throws(SendfileError) -> Int {
    try sendfile(
      file, to: socket, offset: offset, count: count, headers: headers, trailers: trailers,
      flags: flags, pool: pool, hooks: SendfileHooks())
  }

  /// What tests may change in a call: the chain length, and a look before each send.
  struct SendfileHooks {
    /// Pages per chain (one `sendmsg` each).
    var chainPages = 64
    /// Called before each `sendmsg` with the file offset the send starts at.
    var beforeSend: ((Int) -> Void)? = nil
    /// Called with the errno of each failed `sendmsg`.
    var onSendError: ((Errno) -> Void)? = nil
  }

  func sendfile(
    _ file: VMObject, to socket: Socket, offset: Int, count: Int, headers: [[UInt8]],
    trailers: [[UInt8]], flags: SendfileFlags, pool: SFBufPool, hooks: SendfileHooks
  ) throws(SendfileError) -> Int {
    guard offset >= 0, count >= 0 else { throw SendfileError(.invalidArgument, bytesSent: 0) }
    if socket.isClosed { throw SendfileError(.closed, bytesSent: 0) }
    socket.enterSend()
    defer { socket.leaveSend() }
    var call = SendfileCall(
      file: file, socket: socket, pool: pool, offset: offset, count: count, headers: headers,
      trailers: trailers, flags: flags, hooks: hooks)
    defer { call.finish() }
    return try call.run()
  }

  /// One sendfile call in progress: where it is in the file, what it has queued, and the
  /// chain being sent (one iovec per header, page, or trailer; each with what holds it).
  struct SendfileCall {
    let file: VMObject
    let socket: Socket
    let pool: SFBufPool
    let offset: Int
    let count: Int
    let flags: SendfileFlags
    let hooks: SendfileHooks
    let headers: HeldBytes?
    let trailers: HeldBytes?
    let nonBlocking: Bool
    let zeroCopy: Bool

    /// The file offset where the call stops; moves with the file's size.
    var end = 0
    /// The next file byte to queue.
    var pos: Int
    /// Bytes queued, headers and trailers included.
    var sent = 0
    var headerLeft: Int
    var trailerLeft: Int
    /// The file was truncated below the range asked for: stop there, no trailers.
    var truncated = false
    /// `SF_NODISKIO` trimmed the chain at a page that is not resident.
    var busyAfterChain = false

    enum Kind { case header, file, trailer }
    let capacity: Int
    let iov: UnsafeMutablePointer<iovec>
    var kinds: [Kind] = []
    var holds: [AnyObject?] = []
    /// The first iovec not yet entirely sent.
    var first = 0

    init(
      file: VMObject, socket: Socket, pool: SFBufPool, offset: Int, count: Int,
      headers: [[UInt8]], trailers: [[UInt8]], flags: SendfileFlags, hooks: SendfileHooks
    ) {
      self.file = file
      self.socket = socket
      self.pool = pool
      self.offset = offset
      self.count = count
      self.flags = flags
      self.hooks = hooks
      let h = HeldBytes(headers)
      let t = HeldBytes(trailers)
      self.headers = h.count > 0 ? h : nil
      self.trailers = t.count > 0 ? t : nil
      headerLeft = h.count
      trailerLeft = t.count
      pos = offset
      nonBlocking = socket.isNonBlocking
      zeroCopy = socket.zc.withLock { $0.enabled }
      capacity = min(max(hooks.chainPages, 1), Int(sfb_iov_max()) - 2) + 2
      iov = .allocate(capacity: capacity)
      kinds.reserveCapacity(capacity)
      holds.reserveCapacity(capacity)
    }

    /// Releases the chain's buffers and the iovecs.
    mutating func finish() {
      holds.removeAll()
      iov.deallocate()
    }

    /// The end offset for a file of `size` bytes.
    func end(forSize size: Int) -> Int {
      max(offset, count == 0 ? size : min(offset + count, size))
    }

    /// The file's size now (`fstat`).
    func fileSize() throws(SendfileError) -> Int {
      do { return try file.size() } catch { throw systemError(error) }
    }

    func systemError(_ e: VMError) -> SendfileError {
      if case .system(_, let errno) = e {
        return SendfileError(.system, bytesSent: sent, errno: errno)
      }
      return SendfileError(.invalidArgument, bytesSent: sent)
    }

    /// Follows the file's size: a larger file moves the end out, a smaller one truncates.
    mutating func follow(size: Int) {
      let e = end(forSize: size)
      if e < end {
        truncated = true
        trailerLeft = 0
        end = max(e, pos)
      } else {
        end = e
      }
    }

    mutating func run() throws(SendfileError) -> Int {
      end = end(forSize: try fileSize())
      var firstRound = true
      while true {
        if pos >= end && (truncated || headerLeft == 0 && trailerLeft == 0) { return sent }
        if zeroCopy { socket.reapCompletions() }
        if pos < end && !firstRound {
          // FreeBSD reads the size again for each chain.
          follow(size: try fileSize())
          if truncated && pos >= end { return sent }
        }
        firstRound = false
        if try buildChain() { try sendChain() }
        if busyAfterChain && !truncated {
          throw SendfileError(.busy, bytesSent: sent, errno: .resourceBusy)
        }
      }
    }

    /// Appends one iovec to the chain.
    mutating func append(_ base: UnsafeRawPointer, _ length: Int, _ kind: Kind, _ hold: AnyObject?)
    {
      iov[kinds.count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: length)
      kinds.append(kind)
      holds.append(hold)
    }

    /// Builds the next chain: headers not yet sent, the next pages wired and mapped, and the
    /// trailers when the chain reaches the end. Returns false when the file shrank under the
    /// wiring (the caller looks at the size again).
    mutating func buildChain() throws(SendfileError) -> Bool {
      kinds.removeAll(keepingCapacity: true)
      holds.removeAll(keepingCapacity: true)
      first = 0
      if let headers, headerLeft > 0 {
        append(
          headers.bytes.baseAddress! + (headers.count - headerLeft), headerLeft, .header, headers)
      }
      var chainEnd = pos
      if pos < end {
        let firstPage = pos / vmPageSize
        var pages = min((end - 1) / vmPageSize - firstPage + 1, capacity - 2)
        if flags.contains(.noDiskIO) { pages = try residentPages(firstPage, pages) }
        do {
          try file.wire(pages: firstPage..<(firstPage + pages))
        } catch {
          if case .pageOutOfRange = error { return false }
          throw systemError(error)
        }
        // The first mapping of a chain may sleep (interruptibly); the rest must not. They
        // are asked for as a run: one mmap for all of them when the window has a free block.
        do {
          let flags: SFBufPool.Flags = nonBlocking ? .noWait : .interruptible
          appendPage(try pool.allocate(file.page(firstPage), flags: flags).release())
        } catch {
          file.unwire(pages: firstPage..<(firstPage + pages))
          throw allocationError(error)
        }
        var mapped = 1
        if pages > 1 {
          do {
            try pool.allocateRun(
              of: file, pages: (firstPage + 1)..<(firstPage + pages), flags: .noWait
            ) { buffer in
              appendPage(buffer.release())
              mapped += 1
            }
          } catch {
            // Full window (or a refused mapping): the chain ends here and goes as it is.
          }
        }
        if mapped < pages { file.unwire(pages: (firstPage + mapped)..<(firstPage + pages)) }
        chainEnd = min(end, (firstPage + mapped) * vmPageSize)
      }
      if let trailers, trailerLeft > 0, chainEnd == end, !truncated {
        append(
          trailers.bytes.baseAddress! + (trailers.count - trailerLeft), trailerLeft, .trailer,
          trailers)
      }
      return true
    }

    /// Attaches a mapped page of the chain to a network buffer carrying the part of it the
    /// call sends, and appends it to the chain.
    mutating func appendPage(_ sf: sf_buf) {
      let pageStart = sf_buf_page(sf).offset
      let from = max(pos, pageStart)
      let to = min(end, pageStart + vmPageSize)
      let buffer = NetBuffer(pool: pool, sf: sf, offset: from - pageStart, length: to - from)
      append(buffer.data.baseAddress!, buffer.data.count, .file, buffer)
    }

    /// The error when the first mapping of a chain cannot be had.
    func allocationError(_ e: SFBufError) -> SendfileError {
      switch e {
      case .interrupted: SendfileError(.interrupted, bytesSent: sent, errno: .interrupted)
      case .wouldBlock:
        sent == 0
          ? SendfileError(.noBuffers, bytesSent: sent, errno: .noBufferSpace)
          : SendfileError(.wouldBlock, bytesSent: sent, errno: .resourceTemporarilyUnavailable)
      case .mappingRefused(let errno):
        SendfileError(.noBuffers, bytesSent: sent, errno: Errno(rawValue: errno))
      }
    }

    /// `SF_NODISKIO`: how many of the chain's pages, from the first, are resident. The
    /// missing ones are read in the background (`POSIX_FADV_WILLNEED`, which does not wait)
    /// so that a later call finds them; none resident ends the call busy now.
    mutating func residentPages(_ firstPage: Int, _ pages: Int) throws(SendfileError) -> Int {
      let fd = file.fileDescriptor
      let resident: Int
      do {
        resident = try Sys.residentPrefix(
          fd, offset: firstPage * vmPageSize, pages: pages, pageSize: vmPageSize)
      } catch {
        throw SendfileError(.system, bytesSent: sent, errno: error)
      }
      if resident == pages { return pages }
      Sys.willNeed(
        fd, offset: (firstPage + resident) * vmPageSize, length: (pages - resident) * vmPageSize)
      if resident == 0 { throw SendfileError(.busy, bytesSent: sent, errno: .resourceBusy) }
      busyAfterChain = true
      return resident
    }

    /// Sends the chain, following partial sends, until all of it is queued.
    mutating func sendChain() throws(SendfileError) {
      while first < kinds.count {
        hooks.beforeSend?(pos)
        var zcID: UInt32? = nil
        if zeroCopy {
          zcID = socket.beginZeroCopy(
            holding: holds[first...].compactMap { $0 }, tracker: nil)
        }
        let n: Int
        do {
          n = try Sys.sendmsg(
            socket.fileDescriptor, iov + first, kinds.count - first,
            sfb_send_flags(zcID == nil ? 0 : 1, 0))
        } catch {
          if let zcID { socket.abortZeroCopy(zcID) }
          hooks.onSendError?(error)
          switch error {
          case .badAddress:
            // A page past the end of a file truncated since the size was read.
            let before = end
            follow(size: try fileSize())
            if end >= before { throw SendfileError(.system, bytesSent: sent, errno: error) }
            return
          case .noBufferSpace where zcID != nil:
            // Notification memory used up: let notifications arrive, then send again.
            _ = socket.waitForCompletions(timeout: 0.05)
            continue
          default:
            throw SendfileError.sending(error, bytesSent: sent)
          }
        }
        let touched = advance(by: n)
        if let zcID { socket.confirmZeroCopy(zcID, keeping: touched) }
      }
    }

    /// Accounts for `n` bytes sent from the chain's first unsent iovec on, and lets go of
    /// the iovecs entirely sent. Returns how many holders the sent bytes touched.
    mutating func advance(by n: Int) -> Int {
      sent += n
      var left = n
      var touched = 0
      while left > 0 {
        let length = iov[first].iov_len
        let take = min(left, length)
        switch kinds[first] {
        case .header: headerLeft -= take
        case .file: pos += take
        case .trailer: trailerLeft -= take
        }
        if holds[first] != nil { touched += 1 }
        if take == length {
          holds[first] = nil
          first += 1
        } else {
          iov[first].iov_base += take
          iov[first].iov_len -= take
        }
        left -= take
      }
      return touched
    }
  }
#endif
