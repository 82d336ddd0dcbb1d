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
  /// How: the call works in chains of up to 256 pages (1 MiB; at most half the slots of a
  /// window). Pages are wired ahead in runs of up to 1024 (`VMObject.wire(pages:)`); each page
  /// of a chain is mapped with `sf_buf_alloc` (as one page run, one `mmap`, when the window
  /// has a free block), the chain's pages are attached to one ``NetBuffer``, and the chain is
  /// written with one scatter-gather `sendmsg(2)`, one iovec per page, pages adjacent in
  /// memory merged (`MSG_NOSIGNAL`: a vanished peer is an error, never a `SIGPIPE`). A
  /// buffer is released (sf_bufs freed, pages unwired) once the kernel has its bytes: when
  /// `sendmsg` returns, or with zero-copy (``Socket/enableZeroCopy()``) when the completion
  /// notification says so. The window of `pool` bounds the pages in flight.
  ///
  /// Cost per chain, besides the `sendmsg`: an `fstat` (the size), a share of a `fstat` and a
  /// `posix_fadvise` (wiring), one or two `mmap` on a window that misses (none on a direct
  /// map), two allocations.
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
    /// Pages per chain (one `sendmsg` each), at most; a window allows half its slots.
    var chainPages = 256
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

  /// One sendfile call in progress: where it is in the file, what it has queued, the pages
  /// it has wired ahead, and the chain being sent (segments of headers, pages and trailers,
  /// each with what holds it; adjacent segments whose bytes are adjacent in memory go out as
  /// one iovec).
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
    /// Sends use `MSG_ZEROCOPY` (while the socket allows; a call that cannot pin memory
    /// turns it off for itself).
    var zeroCopy: Bool

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
    /// Pages wired by the call and not yet attached to a network buffer, the next chain's
    /// first. Wiring runs ahead (one `wire(pages:)` per `aheadPages`) to keep the system calls
    /// per page low; what is left is unwired when the call ends.
    var ahead = 0..<0
    static let aheadPages = 1024

    enum Kind { case header, file, trailer }
    struct Segment {
      let base: UnsafeRawPointer
      let length: Int
      let kind: Kind
      var hold: AnyObject?
    }
    /// Pages per chain.
    let chainPages: Int
    var segments: [Segment] = []
    /// The first segment not yet entirely sent, and how much of it was.
    var first = 0
    var firstDone = 0
    let iov: UnsafeMutablePointer<iovec>

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
      let windowShare = pool.isDirectMap ? Int.max : max(1, pool.nsfbufs / 2)
      chainPages = min(max(hooks.chainPages, 1), windowShare, Int(sfb_iov_max()) - 2)
      iov = .allocate(capacity: chainPages + 2)
      segments.reserveCapacity(chainPages + 2)
    }

    /// Releases the chain's buffers, the pages wired ahead, and the iovecs.
    mutating func finish() {
      segments.removeAll()
      if !ahead.isEmpty { file.unwire(pages: ahead) }
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

    /// Appends one segment to the chain.
    mutating func append(_ base: UnsafeRawPointer, _ length: Int, _ kind: Kind, _ hold: AnyObject?)
    {
      segments.append(Segment(base: base, length: length, kind: kind, hold: hold))
    }

    /// Builds the next chain: headers not yet sent, the next pages wired and mapped, and the
    /// trailers when the chain reaches the end. Returns false when the file shrank under the
    /// wiring (the caller looks at the size again).
    mutating func buildChain() throws(SendfileError) -> Bool {
      segments.removeAll(keepingCapacity: true)
      first = 0
      firstDone = 0
      if let headers, headerLeft > 0 {
        append(
          headers.bytes.baseAddress! + (headers.count - headerLeft), headerLeft, .header, headers)
      }
      var chainEnd = pos
      if pos < end {
        let firstPage = pos / vmPageSize
        let lastPage = (end - 1) / vmPageSize
        var pages = min(lastPage - firstPage + 1, chainPages)
        if flags.contains(.noDiskIO) { pages = try residentPages(firstPage, pages) }
        guard try wireAhead(firstPage..<(firstPage + pages), upTo: lastPage + 1) else {
          return false
        }
        let mapped = try mapChain(firstPage, pages)
        ahead = (firstPage + mapped)..<ahead.upperBound
        chainEnd = min(end, (firstPage + mapped) * vmPageSize)
      }
      if let trailers, trailerLeft > 0, chainEnd == end, !truncated {
        append(
          trailers.bytes.baseAddress! + (trailers.count - trailerLeft), trailerLeft, .trailer,
          trailers)
      }
      return true
    }

    /// Makes sure `need` is wired ahead: extends the run wired ahead (up to `aheadPages`
    /// pages at once, not past `limit`), or starts a new one. `SF_NODISKIO` wires only what
    /// the chain needs, since wiring reads pages in. Returns false when the file is now
    /// shorter than the pages (nothing is wired then).
    mutating func wireAhead(_ need: Range<Int>, upTo limit: Int) throws(SendfileError) -> Bool {
      if ahead.lowerBound != need.lowerBound {
        if !ahead.isEmpty { file.unwire(pages: ahead) }
        ahead = need.lowerBound..<need.lowerBound
      }
      if ahead.upperBound >= need.upperBound { return true }
      let run = flags.contains(.noDiskIO) ? need.count : Self.aheadPages
      let more = ahead.upperBound..<max(need.upperBound, min(limit, need.lowerBound + run))
      do {
        try file.wire(pages: more)
      } catch {
        if case .pageOutOfRange = error { return false }
        throw systemError(error)
      }
      ahead = ahead.lowerBound..<more.upperBound
      return true
    }

    /// Maps the chain's `pages` pages from `firstPage` and attaches them to one network
    /// buffer. Returns how many were mapped: all, or fewer when the window ran out (or the
    /// file was truncated under the call; none when its first page is gone).
    ///
    /// The first mapping of a chain may sleep (interruptibly), the rest must not. When the
    /// window has room for the whole chain (or for a direct map) all of it is asked for as
    /// one run, without sleeping: one `mmap` when the window has a free block. Otherwise the
    /// first page is asked for alone, sleeping if need be, and the rest as a run.
    mutating func mapChain(_ firstPage: Int, _ pages: Int) throws(SendfileError) -> Int {
      var mapped = SFBufBatch(pool: pool, capacity: pages)
      if pool.isDirectMap || pages > 1 && pool.freeSlots >= pages {
        mapRun(firstPage..<(firstPage + pages), &mapped)
      }
      if mapped.isEmpty {
        do {
          let flags: SFBufPool.Flags = nonBlocking ? .noWait : .interruptible
          mapped.append(try pool.allocate(file.page(firstPage), flags: flags))
        } catch {
          // A page past the end of a file truncated since the size was read is refused
          // (EINVAL): the call follows the size and ends with a short count.
          if error == .mappingRefused(errno: EINVAL), let size = try? file.size(),
            firstPage * vmPageSize >= size
          {
            follow(size: size)
            return 0
          }
          throw allocationError(error)
        }
        mapRun((firstPage + 1)..<(firstPage + pages), &mapped)
      }
      let count = mapped.count
      appendPages(NetBuffer(mapped), firstPage: firstPage)
      return count
    }

    /// Maps `pages` with `SFB_NOWAIT`, as one run where possible, appending each mapping to
    /// `mapped`; stops at the first that cannot be had.
    func mapRun(_ pages: Range<Int>, _ mapped: inout SFBufBatch) {
      guard !pages.isEmpty else { return }
      do {
        try mapped.map(file, pages: pages, flags: .noWait)
      } catch {
        // Full window (or a refused mapping): the chain ends here and goes as it is.
      }
    }

    /// Appends the pages of `buffer` (pages `firstPage`, `firstPage + 1`, ...) to the chain,
    /// one segment per page carrying the part of it the call sends; the last segment holds
    /// the buffer.
    mutating func appendPages(_ buffer: NetBuffer, firstPage: Int) {
      let last = buffer.count - 1
      for i in 0..<buffer.count {
        let pageStart = (firstPage + i) * vmPageSize
        let from = max(pos, pageStart)
        let to = min(end, pageStart + vmPageSize)
        append(
          UnsafeRawPointer(buffer.address(i)) + (from - pageStart), to - from, .file,
          i == last ? buffer : nil)
      }
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
      let fd = file.fileDescriptor?.rawValue ?? -1
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

    /// Fills the iovecs with the chain's unsent bytes, merging segments that are adjacent in
    /// memory (consecutive pages of a direct map, or of a run of window slots). Returns the
    /// number of iovecs.
    func fillIovecs() -> Int {
      var n = 0
      for i in first..<segments.count {
        let skip = i == first ? firstDone : 0
        let base = segments[i].base + skip
        let length = segments[i].length - skip
        if n > 0, UnsafeRawPointer(iov[n - 1].iov_base!) + iov[n - 1].iov_len == base {
          iov[n - 1].iov_len += length
        } else {
          iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: length)
          n += 1
        }
      }
      return n
    }

    /// Sends the chain, following partial sends, until all of it is queued.
    mutating func sendChain() throws(SendfileError) {
      while first < segments.count {
        hooks.beforeSend?(pos)
        var zcID: UInt32? = nil
        if zeroCopy {
          zcID = socket.beginZeroCopy(holding: segments[first...].compactMap(\.hold), tracker: nil)
        }
        let n: Int
        do {
          n = try Sys.sendmsg(
            socket.fd, iov, fillIovecs(), sfb_send_flags(zcID == nil ? 0 : 1, 0))
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
            // Notification memory or the locked-memory limit used up: let notifications
            // arrive and send again; with none outstanding, send the rest with copies.
            if socket.zeroCopyStats.pending == 0 {
              zeroCopy = false
            } else {
              _ = socket.waitForCompletions(timeout: .milliseconds(50))
            }
            continue
          default:
            throw SendfileError.sending(error, bytesSent: sent)
          }
        }
        advance(by: n)
        // The notification holds every buffer the send reached, and the unsent rest of the
        // chain too (a buffer is held by its last segment): the next send holds them again
        // anyway, so they are released only a little later.
        if let zcID { socket.confirmZeroCopy(zcID) }
      }
    }

    /// Accounts for `n` bytes sent from the first unsent segment on, and lets go of the
    /// segments entirely sent (and so of a buffer whose last segment was sent).
    mutating func advance(by n: Int) {
      sent += n
      var left = n
      while left > 0 {
        let length = segments[first].length - firstDone
        let take = min(left, length)
        switch segments[first].kind {
        case .header: headerLeft -= take
        case .file: pos += take
        case .trailer: trailerLeft -= take
        }
        if take == length {
          segments[first].hold = nil
          first += 1
          firstDone = 0
        } else {
          firstDone += take
        }
        left -= take
      }
    }
  }
#endif
