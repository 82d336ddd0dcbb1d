// One event loop of the file server: its epoll set, its connections, and what each is
// doing (reading a request head, or sending a response).

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufHost
  import SFSendfile
  import SystemPackage

  /// One connection of a loop.
  final class Connection {
    let socket: Socket
    let fd: CInt
    let token: Int
    /// The bytes received and not yet parsed.
    let input: UnsafeMutableBufferPointer<UInt8>
    var received = 0
    /// Reading a request head (or idle), or sending a response.
    var sending = false
    /// When the head being read began (its first byte), and when the connection last made
    /// progress.
    var headStarted = 0.0
    var lastActive: Double
    /// The response: its head (and, for a response without a file, its body), then a range
    /// of a file.
    var out: [UInt8] = []
    var outSent = 0
    var file: VMObject?
    var filePos = 0
    var fileLeft = 0
    var keepAlive = true
    /// The peer shut its side down: answer what it sent, then close.
    var peerClosed = false
    /// The events the connection is registered for.
    var events: UInt32 = 0
    /// For the access log: the peer, and the response's request line, status and bytes.
    var peer = "-"
    var logLine: String?

    init(socket: Socket, token: Int, inputSize: Int, now: Double) {
      self.socket = socket
      fd = socket.fileDescriptor.rawValue
      self.token = token
      input = .allocate(capacity: inputSize)
      lastActive = now
    }
    deinit { input.deallocate() }
  }

  final class EventLoop {
    let server: FileServer
    let epfd: CInt
    var connections: [Connection?] = []
    var freeTokens: [Int] = []
    /// Connections whose send found the window full: tried again on the next turn.
    var retry: [Int] = []
    var listening = true
    var dateSecond = -1
    var dateText = ""
    static let listenToken = UInt64.max
    // The SFB_EPOLL_* bits of the C shim.
    static let readable: UInt32 = 1
    static let writable: UInt32 = 2
    static let error: UInt32 = 4
    static let exclusive: UInt32 = 16

    init(server: FileServer) {
      self.server = server
      epfd = sfb_epoll_create()
      precondition(epfd >= 0, "FileServer: epoll_create1 failed (errno \(errno))")
    }
    deinit { Glibc.close(epfd) }

    var options: FileServerOptions { server.options }

    func run() {
      let lfd = server.listener.fileDescriptor.rawValue
      let exclusive = EventLoop.readable | EventLoop.exclusive
      if sfb_epoll_ctl(epfd, 0, lfd, exclusive, EventLoop.listenToken) != 0 {
        fatalError("FileServer: epoll_ctl of the listener failed (errno \(errno))")
      }
      var tokens = [UInt64](repeating: 0, count: 64)
      var events = [UInt32](repeating: 0, count: 64)
      var stopAt: Double?
      var lastSweep = monotonicNow()
      while true {
        if stopAt == nil && server.stopping.load(ordering: .acquiring) {
          stopAt = monotonicNow() + options.grace.inSeconds
          _ = sfb_epoll_ctl(epfd, 2, lfd, 0, 0)
          listening = false
          for case let c? in connections where !c.sending && c.received == 0 { close(c) }
        }
        if let stopAt {
          let live = connections.contains { $0 != nil }
          if !live || monotonicNow() >= stopAt {
            for case let c? in connections { close(c) }
            return
          }
        }
        let timeout: Int32 = retry.isEmpty ? 100 : 1
        let n = sfb_epoll_wait_events(epfd, &tokens, &events, 64, timeout)
        for i in 0..<max(0, Int(n)) {
          if tokens[i] == EventLoop.listenToken {
            if listening { acceptAll(lfd) }
          } else if Int(tokens[i]) < connections.count, let c = connections[Int(tokens[i])] {
            handle(c, events[i])
          }
        }
        if !retry.isEmpty {
          let again = retry
          retry = []
          for t in again { if let c = connections[t], c.sending { send(c) } }
        }
        let now = monotonicNow()
        if now - lastSweep >= 0.25 {
          lastSweep = now
          sweep(now)
        }
      }
    }

    // MARK: Connections

    func acceptAll(_ lfd: CInt) {
      while true {
        let fd = sfb_accept_nonblocking(lfd)
        if fd < 0 {
          if errno == EINTR || errno == ECONNABORTED { continue }
          return  // EAGAIN, or out of descriptors: the next event tries again
        }
        var one: Int32 = 1
        setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if server.open.load(ordering: .relaxed) >= options.maxConnections {
          let busy =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
          _ = busy.withCString {
            Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
          }
          Glibc.close(fd)
          continue
        }
        let token = freeTokens.popLast() ?? connections.count
        if token == connections.count { connections.append(nil) }
        let c = Connection(
          socket: Socket(adopting: FileDescriptor(rawValue: fd)), token: token,
          inputSize: options.limits.maxHeaderBytes + 1, now: monotonicNow())
        if options.zeroCopy { _ = c.socket.enableZeroCopy() }
        if options.accessLog { c.peer = peerName(fd) }
        connections[token] = c
        server.open.add(1, ordering: .relaxed)
        c.events = EventLoop.readable
        if sfb_epoll_ctl(epfd, 0, fd, c.events, UInt64(token)) != 0 { close(c) }
      }
    }

    func close(_ c: Connection) {
      guard connections[c.token] === c else { return }
      _ = sfb_epoll_ctl(epfd, 2, c.fd, 0, 0)
      c.socket.close()
      c.file = nil
      connections[c.token] = nil
      freeTokens.append(c.token)
      server.open.subtract(1, ordering: .relaxed)
    }

    func want(_ c: Connection, _ e: UInt32) {
      if c.events != e {
        c.events = e
        if sfb_epoll_ctl(epfd, 1, c.fd, e, UInt64(c.token)) != 0 { close(c) }
      }
    }

    func handle(_ c: Connection, _ events: UInt32) {
      if events & EventLoop.error != 0 {
        if options.zeroCopy {
          // MSG_ZEROCOPY's completions wait on the socket's error queue and raise EPOLLERR
          // (level-triggered: until they are read). Reap them; only a pending socket error
          // ends the connection.
          c.socket.reapCompletions()
          if socketError(c.fd) != 0 {
            close(c)
            return
          }
        } else if c.sending {
          close(c)
          return
        }
      }
      if c.sending { send(c) } else { read(c) }
    }

    /// The socket's pending error (`SO_ERROR`, which reading clears), 0 for none.
    func socketError(_ fd: CInt) -> Int32 {
      var e: Int32 = 0
      var len = socklen_t(MemoryLayout<Int32>.size)
      return getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 ? e : errno
    }

    /// Reads what the socket has, then serves every whole request in it.
    func read(_ c: Connection) {
      while c.received < c.input.count {
        let n = recv(c.fd, c.input.baseAddress! + c.received, c.input.count - c.received, 0)
        if n > 0 {
          if c.received == 0 { c.headStarted = monotonicNow() }
          c.received += n
          c.lastActive = monotonicNow()
          continue
        }
        if n == 0 {
          c.peerClosed = true  // what it sent before is still answered
          break
        }
        if errno == EINTR { continue }
        if errno == EAGAIN || errno == EWOULDBLOCK { break }
        close(c)
        return
      }
      serveInput(c)
    }

    /// Serves the requests of `c`'s input, one after the other, while each response is
    /// sent at once (pipelining); stops at an incomplete head or a response that must wait.
    func serveInput(_ c: Connection) {
      while connections[c.token] === c && !c.sending {
        let parse = parseHTTPRequest(
          UnsafeBufferPointer(rebasing: c.input[0..<c.received]), limits: options.limits)
        switch parse {
        case .incomplete:
          if c.peerClosed {
            close(c)
          } else {
            want(c, EventLoop.readable)
          }
          return
        case .error(let status):
          c.received = 0
          respondError(c, status, request: nil)
        case .request(let r, let consumed):
          let left = c.received - consumed
          if left > 0 {
            (c.input.baseAddress! + 0).update(from: c.input.baseAddress! + consumed, count: left)
          }
          c.received = left
          if left > 0 { c.headStarted = monotonicNow() }
          respond(c, r)
        }
        c.sending = true
        send(c)
      }
    }

    // MARK: Responses

    func respond(_ c: Connection, _ r: HTTPRequest) {
      c.keepAlive = r.keepAlive && !server.stopping.load(ordering: .relaxed)
      let line = "\(r.method) \(r.target) HTTP/1.\(r.minorVersion)"
      if options.statusPage && r.path == ".well-known/sfbuf" {
        let body = server.statusLines.joined(separator: "\n") + "\n"
        head(c, .ok, r, [("Content-Type", "text/plain; charset=utf-8")], length: body.utf8.count)
        if !r.isHead { c.out += body.utf8 }
        logged(c, line, .ok, r.isHead ? 0 : body.utf8.count)
        return
      }
      var fd = sfb_open_beneath(server.rootFD, r.path.isEmpty ? "." : r.path)
      var st = stat()
      var name = r.path
      if fd >= 0 && fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
        let path = r.target.prefix { $0 != "?" }
        if !path.hasSuffix("/") {
          // As other servers do: the folder's own address ends in a slash, so that the
          // relative links of its index.html resolve inside it.
          Glibc.close(fd)
          let location = String(path) + "/" + r.target.dropFirst(path.count)
          return respondError(
            c, .movedPermanently, request: r, line: line, extra: [("Location", location)])
        }
        name = r.path.isEmpty ? "index.html" : r.path + "/index.html"
        let index = sfb_open_beneath(fd, "index.html")
        Glibc.close(fd)
        fd = index
        if fd >= 0 && fstat(fd, &st) != 0 {
          Glibc.close(fd)
          fd = -1
        }
      }
      if fd < 0 {
        let status: HTTPStatus =
          switch errno {
          case ENOENT, ENOTDIR, ENAMETOOLONG: .notFound
          case EXDEV, ELOOP, EACCES, EPERM: .forbidden
          default: .internalError
          }
        return respondError(c, status, request: r, line: line)
      }
      guard st.st_mode & S_IFMT == S_IFREG,
        let object = server.object(for: name, fd: fd, st)
      else {
        if st.st_mode & S_IFMT != S_IFREG { Glibc.close(fd) }
        return respondError(c, .notFound, request: r, line: line)
      }
      let size = Int(st.st_size)
      let modified = httpDate(Int(st.st_mtim.tv_sec))
      let etag = "\"\(String(st.st_mtim.tv_sec, radix: 16))-\(String(size, radix: 16))\""
      var fields: [(String, String)] = [
        ("Content-Type", contentType(name)), ("Last-Modified", modified), ("ETag", etag),
        ("Accept-Ranges", "bytes"),
      ]
      if notModified(r, etag: etag, modified: modified) {
        head(c, .notModified, r, fields.filter { $0.0 != "Content-Type" }, length: nil)
        logged(c, line, .notModified, 0)
        return
      }
      var range = ByteRange(offset: 0, count: size)
      var status = HTTPStatus.ok
      switch interpretRange(r.range, size: size) {
      case .whole: break
      case .partial(let part):
        range = part
        status = .partialContent
        fields.append(
          ("Content-Range", "bytes \(part.offset)-\(part.offset + part.count - 1)/\(size)"))
      case .unsatisfiable:
        return respondError(
          c, .rangeNotSatisfiable, request: r, line: line,
          extra: [("Content-Range", "bytes */\(size)")])
      }
      head(c, status, r, fields, length: range.count)
      if !r.isHead && range.count > 0 {
        c.file = object
        c.filePos = range.offset
        c.fileLeft = range.count
      }
      logged(c, line, status, r.isHead ? 0 : range.count)
    }

    func notModified(_ r: HTTPRequest, etag: String, modified: String) -> Bool {
      if let inm = r.ifNoneMatch {
        if Substring(inm).trimmingSpaces == "*" { return true }
        return inm.split(separator: ",").contains { tag in
          var t = Substring(tag.trimmingSpaces)
          if t.hasPrefix("W/") { t = t.dropFirst(2) }
          return t == etag
        }
      }
      return r.ifModifiedSince == modified
    }

    /// An error answer (or a redirection), with a one-line text body; `request` nil (a
    /// request that could not be parsed) closes the connection after it.
    func respondError(
      _ c: Connection, _ status: HTTPStatus, request: HTTPRequest?, line: String = "-",
      extra: [(String, String)] = []
    ) {
      if request == nil { c.keepAlive = false }
      let body = "\(status.rawValue) \(status.reason)\n"
      var fields = [("Content-Type", "text/plain; charset=utf-8")] + extra
      if status == .methodNotAllowed { fields.append(("Allow", "GET, HEAD")) }
      head(c, status, request, fields, length: body.utf8.count)
      if request?.isHead != true { c.out += body.utf8 }
      logged(c, line, status, request?.isHead == true ? 0 : body.utf8.count)
    }

    /// Starts `c.out` with the status line and header fields.
    func head(
      _ c: Connection, _ status: HTTPStatus, _ r: HTTPRequest?, _ fields: [(String, String)],
      length: Int?
    ) {
      var h = "HTTP/1.1 \(status.rawValue) \(status.reason)\r\nServer: sfbuf\r\nDate: \(now())\r\n"
      for (name, value) in fields { h += "\(name): \(value)\r\n" }
      if let length { h += "Content-Length: \(length)\r\n" }
      if !c.keepAlive {
        h += "Connection: close\r\n"
      } else if r?.minorVersion == 0 {
        h += "Connection: keep-alive\r\n"
      }
      h += "\r\n"
      c.out = Array(h.utf8)
      c.outSent = 0
      c.file = nil
      c.fileLeft = 0
    }

    func logged(_ c: Connection, _ line: String, _ status: HTTPStatus, _ bytes: Int) {
      guard options.accessLog else { return }
      c.logLine = "\(c.peer) - - [\(clfDate())] \"\(line)\" \(status.rawValue) \(bytes)\n"
    }

    /// Sends what is left of `c`'s response; when it is all out, reads the next request.
    func send(_ c: Connection) {
      if let file = c.file {
        let headLeft = c.out.count - c.outSent
        let headers = headLeft > 0 ? [Array(c.out[c.outSent...])] : []
        var queued = 0
        var error: SendfileError?
        do {
          queued = try sendfile(
            file, to: c.socket, offset: c.filePos, count: c.fileLeft, headers: headers,
            pool: server.pool)
        } catch let e {
          queued = e.bytesSent
          error = e
        }
        if queued > 0 { c.lastActive = monotonicNow() }
        let fromHead = min(queued, headLeft)
        c.outSent += fromHead
        c.filePos += queued - fromHead
        c.fileLeft -= queued - fromHead
        if let error {
          switch error.code {
          case .wouldBlock:
            want(c, EventLoop.writable)
          case .noBuffers:
            retry.append(c.token)
          default:
            close(c)
          }
          return
        }
        if c.fileLeft > 0 {
          close(c)  // the file was truncated under the response: a short response, closed
          return
        }
        c.file = nil
      } else {
        while c.outSent < c.out.count {
          let n = c.out.withUnsafeBytes { b in
            Glibc.send(
              c.fd, b.baseAddress! + c.outSent, b.count - c.outSent,
              Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
          }
          if n > 0 {
            c.outSent += n
            c.lastActive = monotonicNow()
          } else if n < 0 && errno == EINTR {
            continue
          } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
            want(c, EventLoop.writable)
            return
          } else {
            close(c)
            return
          }
        }
      }
      finished(c)
    }

    func finished(_ c: Connection) {
      server.responses.add(1, ordering: .relaxed)
      if let line = c.logLine {
        server.writeLog(line)
        c.logLine = nil
      }
      c.out = []
      c.outSent = 0
      c.sending = false
      if !c.keepAlive {
        close(c)
        return
      }
      c.lastActive = monotonicNow()
      if c.received > 0 || c.peerClosed {
        serveInput(c)  // a pipelined request already here, or the end
      } else {
        want(c, EventLoop.readable)
      }
    }

    /// Times out slow heads (408), idle connections and stalled responses.
    func sweep(_ now: Double) {
      for case let c? in connections {
        if c.sending {
          if now - c.lastActive > options.idleTimeout.inSeconds { close(c) }
        } else if c.received > 0 {
          if now - c.headStarted > options.headerTimeout.inSeconds {
            c.received = 0
            respondError(c, .requestTimeout, request: nil)
            c.sending = true
            send(c)
          }
        } else if now - c.lastActive > options.idleTimeout.inSeconds {
          close(c)
        }
      }
    }

    // MARK: Text

    /// The Date header's value, made once a second.
    func now() -> String {
      let t = time(nil)
      if Int(t) != dateSecond {
        dateSecond = Int(t)
        dateText = httpDate(Int(t))
      }
      return dateText
    }
  }

  /// `t` (seconds since the epoch) as an HTTP date: "Thu, 03 Dec 2026 23:59:59 GMT".
  func httpDate(_ t: Int) -> String {
    formatTime(t, "%a, %d %b %Y %H:%M:%S GMT")
  }

  /// Now in common log format: "03/Dec/2026:23:59:59 +0000".
  func clfDate() -> String { formatTime(Int(time(nil)), "%d/%b/%Y:%H:%M:%S +0000") }

  func formatTime(_ t: Int, _ format: String) -> String {
    var tt = time_t(t)
    var tm = tm()
    gmtime_r(&tt, &tm)
    var buf = [CChar](repeating: 0, count: 64)
    let n = strftime(&buf, buf.count, format, &tm)
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// The peer's address, for the access log.
  func peerName(_ fd: CInt) -> String {
    var addr = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) == 0 }
    }
    guard ok else { return "-" }
    var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
    let r = withUnsafePointer(to: &addr) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        getnameinfo($0, len, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
      }
    }
    guard r == 0 else { return "-" }
    return String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// The media type of a file, from its extension.
  func contentType(_ path: String) -> String {
    let name = path.split(separator: "/").last ?? ""
    guard let dot = name.lastIndex(of: ".") else { return "application/octet-stream" }
    switch name[name.index(after: dot)...].lowercased() {
    case "html", "htm": return "text/html; charset=utf-8"
    case "txt": return "text/plain; charset=utf-8"
    case "css": return "text/css"
    case "js", "mjs": return "text/javascript"
    case "json": return "application/json"
    case "xml": return "application/xml"
    case "svg": return "image/svg+xml"
    case "png": return "image/png"
    case "jpg", "jpeg": return "image/jpeg"
    case "gif": return "image/gif"
    case "webp": return "image/webp"
    case "ico": return "image/x-icon"
    case "pdf": return "application/pdf"
    case "wasm": return "application/wasm"
    case "mp4": return "video/mp4"
    case "woff2": return "font/woff2"
    default: return "application/octet-stream"
    }
  }
#endif
