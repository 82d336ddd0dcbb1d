import Glibc
import SFBufTestSupport
import Testing

/// `sfbuf serve` as its users meet it: a process on loopback, spoken to by curl, wrk and raw
/// sockets that misbehave. Every wait is bounded.
@Suite("sfbuf serve: HTTP over sendfile, against real clients", .serialized)
struct ServeTests {
  /// A served folder: `index.html`, `big.bin` (3 MiB of a pattern), `sub/index.html`, a
  /// symbolic link that leads out of it, and a secret beside it.
  final class Site {
    let dir: String
    let root: String
    let big: [UInt8]
    init() throws {
      dir = makeTempPath("sfbuf-serve")
      unlink(dir)
      mkdir(dir, 0o700)
      root = dir + "/root"
      mkdir(root, 0o755)
      mkdir(root + "/sub", 0o755)
      write("<h1>hello</h1>\n", to: root + "/index.html")
      write("sub\n", to: root + "/sub/index.html")
      write("secret\n", to: dir + "/secret.txt")
      symlink(dir + "/secret.txt", root + "/out")
      symlink("../secret.txt", root + "/out-relative")
      big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
      writeBytes(big, to: root + "/big.bin")
    }
    deinit {
      for f in [
        "/root/index.html", "/root/sub/index.html", "/root/big.bin", "/root/out",
        "/root/out-relative", "/root/grow.bin", "/secret.txt",
      ] {
        unlink(dir + f)
      }
      rmdir(root + "/sub")
      rmdir(root)
      rmdir(dir)
    }
  }

  /// A running `sfbuf serve`.
  final class Server {
    let process: ToolProcess
    let port: Int
    let out: String
    let err: String
    init(_ site: Site, _ extra: [String] = []) throws {
      out = makeTempPath("sfbuf-serve-out")
      err = makeTempPath("sfbuf-serve-err")
      process = try ToolProcess(
        [try toolPath(), "serve", site.root, "--port", "0", "--status"] + extra,
        stdout: out, stderr: err)
      let text = waitForText(out, "listening on http://", timeout: 30, from: "sfbuf serve")
      let digits = text.split(separator: ":").last?.prefix { $0.isNumber } ?? ""
      port = Int(digits) ?? 0
      if port == 0 { Issue.record("no port in: \(text) / \(readText(err))") }
    }
    deinit {
      unlink(out)
      unlink(err)
    }
    var base: String { "http://127.0.0.1:\(port)" }
    /// The status page's first line: "N/P/M sfbufs in use (current/peak/max)".
    func inUse() -> Int? {
      let r = Client.exchange(
        port, "GET /.well-known/sfbuf HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
      guard let body = r.text.split(separator: "\r\n\r\n", maxSplits: 1).last,
        let first = body.split(separator: "/").first
      else { return nil }
      return Int(first)
    }
  }

  /// curl, its output in a file; returns (exit status, what -w printed, the body).
  func curl(_ args: [String], timeout: Double = 60) throws -> (Int32, String, [UInt8]) {
    let body = makeTempPath("sfbuf-curl-body")
    let meta = makeTempPath("sfbuf-curl-meta")
    defer {
      unlink(body)
      unlink(meta)
    }
    let p = try ToolProcess(
      ["curl", "-s", "--max-time", "30", "-o", body] + args, stdout: meta)
    let status = p.wait(timeout: timeout, "for curl \(args.joined(separator: " "))")
    return (status, readText(meta), readBytes(body))
  }

  @Test("curl: whole files, HEAD, ranges, 416, conditional requests, index.html, keep-alive")
  func curlFeatures() throws {
    let site = try Site()
    // A window of 16 slots: a 3 MiB file recycles every slot many times.
    let server = try Server(site, ["--nsfbufs", "16"])
    let base = server.base
    var (status, meta, body) = try curl(["-w", "%{http_code}", "\(base)/big.bin"])
    #expect(status == 0 && meta == "200")
    #expect(body == site.big, "the body differs from the file (\(body.count) bytes)")

    (status, meta, body) = try curl(["-I", "-w", "%{http_code}", "\(base)/big.bin"])
    let head = String(decoding: body, as: UTF8.self)
    #expect(meta == "200" && head.contains("Content-Length: \(site.big.count)\r\n"))
    let etag = head.split(separator: "\r\n").first { $0.hasPrefix("ETag: ") }?.dropFirst(6)
    let modified = head.split(separator: "\r\n").first { $0.hasPrefix("Last-Modified: ") }?
      .dropFirst(15)
    #expect(etag != nil && modified != nil)

    (status, meta, body) = try curl(["-r", "1000-2999", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "206" && body == Array(site.big[1000...2999]))
    (status, meta, body) = try curl(["-r", "-100", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "206" && body == Array(site.big.suffix(100)))
    (status, meta, body) = try curl(["-r", "5000000-", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "416")

    (status, meta, _) = try curl(
      ["-H", "If-None-Match: \(etag ?? "")", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "304")
    (status, meta, _) = try curl(
      ["-H", "If-Modified-Since: \(modified ?? "")", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "304")
    (status, meta, _) = try curl(
      ["-H", "If-None-Match: \"other\"", "-w", "%{http_code}", "\(base)/big.bin"])
    #expect(meta == "200")

    (status, meta, body) = try curl(["-w", "%{http_code} %{content_type}", "\(base)/"])
    #expect(meta == "200 text/html; charset=utf-8" && body == Array("<h1>hello</h1>\n".utf8))
    (status, meta, body) = try curl(["-w", "%{http_code}", "\(base)/missing"])
    #expect(meta == "404")
    // A folder named without its slash is redirected to its own address, query kept.
    (status, meta, _) = try curl(["-w", "%{http_code} %{redirect_url}", "\(base)/sub?x=1"])
    #expect(meta == "301 \(base)/sub/?x=1")
    (status, meta, body) = try curl(["-L", "-w", "%{http_code}", "\(base)/sub"])
    #expect(meta == "200" && body == Array("sub\n".utf8))

    // Three URLs over one connection: one connect in all.
    (status, meta, _) = try curl([
      "-w", "%{num_connects} ", "-o", "/dev/null", "-o", "/dev/null", "\(base)/",
      "\(base)/sub/", "\(base)/big.bin",
    ])
    #expect(meta == "1 0 0 ", "connects per URL: \(meta)")
    #expect(server.inUse() == 0)

    server.process.signal(SIGTERM)
    #expect(server.process.wait(timeout: 20, "to stop after SIGTERM") == 0)
  }

  @Test("--zerocopy: whole files and ranges arrive intact; the window is given back")
  func zeroCopy() throws {
    let site = try Site()
    let server = try Server(site, ["--nsfbufs", "16", "--zerocopy"])
    for _ in 0..<3 {
      let (status, meta, body) = try curl(["-w", "%{http_code}", "\(server.base)/big.bin"])
      #expect(status == 0 && meta == "200")
      #expect(body == site.big, "the body differs from the file (\(body.count) bytes)")
    }
    let (_, meta, body) = try curl(
      ["-r", "4095-1000000", "-w", "%{http_code}", "\(server.base)/big.bin"])
    #expect(meta == "206" && body == Array(site.big[4095...1_000_000]))
    // A slow reader with a small receive buffer: the server waits for room (EPOLLOUT)
    // while completions arrive on the error queue, which raises EPOLLERR. That must not end
    // the response (it did: the server took EPOLLERR for an error and closed).
    if let slow = Client(port: server.port, receiveBuffer: 4096) {
      slow.send(Array("GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8))
      var got: [UInt8] = []
      var reads = 0
      let deadline = monotonic() + 5
      while monotonic() < deadline {
        let more = slow.receive(max: 2048, timeout: 1)
        if more.isEmpty && slow.closedByPeer { break }
        got += more
        reads += 1
        if reads % 64 == 0 { usleep(2000) }
      }
      let head = got.firstRange(of: Array("\r\n\r\n".utf8)).map { $0.upperBound } ?? 0
      let complete = got.count - head == site.big.count && Array(got[head...]) == site.big
      #expect(
        complete || !slow.closedByPeer, "the response ended early: \(got.count - head) bytes")
      // Known, and Linux's own: to a loopback reader with a 4 KiB receive buffer,
      // MSG_ZEROCOPY sends crawl (kilobytes per second, any window size; a plain Python
      // sender does the same: scripts/zerocopy-slow-reader.py), where copying sends
      // finish in 0.1 s.
      withKnownIssue(
        "zero-copy stalls behind a slow reader on a small window", isIntermittent: true
      ) {
        #expect(complete, "\(got.count - head) of \(site.big.count) bytes in 5 s")
      }
      // A reader that gives up resets the connection, so the server learns of it at once.
      // (Closed gracefully with nothing left unread, the server would learn of it only
      // from TCP's next zero-window probe, which backs off to seconds: once, under the full
      // suite, that took longer than the bound below.)
      slow.reset()
    } else {
      Issue.record("cannot connect")
    }
    // The kernel's completions come after the response: the pages are freed then.
    #expect(waitUntil("every mapping freed", seconds: 30) { server.inUse() == 0 })
    server.process.signal(SIGTERM)
    #expect(server.process.wait(timeout: 20, "to stop after SIGTERM") == 0)
  }

  @Test("IPv6: --host ::1 listens there and serves the same bytes")
  func ipv6() throws {
    let site = try Site()
    let server = try Server(site, ["--host", "::1"])
    let line = readText(server.out)
    #expect(line.hasPrefix("listening on http://[::1]:\(server.port) "), "\(line)")
    let (status, meta, body) = try curl(
      ["-g", "-w", "%{http_code}", "http://[::1]:\(server.port)/big.bin"])
    #expect(status == 0 && meta == "200")
    #expect(body == site.big, "the body differs from the file (\(body.count) bytes)")
    server.process.signal(SIGTERM)
    #expect(server.process.wait(timeout: 20, "to stop after SIGTERM") == 0)
  }

  @Test("nothing outside the root is served, and the server keeps serving")
  func confinement() throws {
    let site = try Site()
    let server = try Server(site)
    let attempts = [
      "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/..%2fsecret.txt",
      "//../secret.txt", "http://evil/../secret.txt", "/out", "/out-relative",
      "/sub/../../secret.txt",
      "/a%00b", "/.%2e/.%2e/etc/passwd",
    ]
    for target in attempts {
      let r = Client.exchange(
        server.port, "GET \(target) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
      #expect(!r.text.contains("secret\n"), "\(target) served the secret")
      #expect(r.status.map { $0 >= 400 } == true, "\(target): \(r.text.prefix(60))")
    }
    let ok = Client.exchange(server.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    #expect(ok.status == 200)
  }

  @Test("malformed input: an error status and a closed connection, the server unharmed")
  func malformed() throws {
    let site = try Site()
    let server = try Server(site)
    let cases: [(String, Int)] = [
      ("garbage\r\n\r\n", 400),
      ("GET / HTTP/1.1\r\n\r\n", 400),
      ("POST / HTTP/1.1\r\nHost: t\r\n\r\n", 405),
      ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", 405),
      ("GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
      ("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: t\r\n\r\n", 414),
      ("GET / HTTP/1.1\r\nHost: t\r\nX: " + String(repeating: "b", count: 20000) + "\r\n\r\n", 431),
      ("GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ]
    for (request, expected) in cases {
      let r = Client.exchange(server.port, request)
      #expect(r.status == expected, "\(request.prefix(40)): \(r.text.prefix(60))")
      #expect(r.closed, "\(request.prefix(40)): the connection stayed open")
    }
    var g: UInt64 = 0x2545_F491_4F6C_DD1D
    for _ in 0..<20 {
      let bytes = (0..<200).map { _ -> UInt8 in
        g ^= g << 13
        g ^= g >> 7
        g ^= g << 17
        return UInt8(truncatingIfNeeded: g)
      }
      let r = Client.exchange(server.port, bytes + Array("\r\n\r\n".utf8))
      #expect(
        r.status.map { (400..<600).contains($0) } == true, "random bytes: \(r.text.prefix(60))")
    }
    #expect(Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 200)
  }

  @Test("a client that trickles its head is timed out with 408")
  func trickle() throws {
    let site = try Site()
    let server = try Server(site, ["--header-timeout", "1"])
    let start = monotonic()
    let r = Client.exchange(server.port, "GET / HTTP/1.1\r\nHo", halfClose: false, timeout: 10)
    #expect(r.status == 408 && r.closed, "\(r.text.prefix(60))")
    #expect(monotonic() - start < 8)
  }

  @Test("a client that vanishes mid-transfer gives its mappings back")
  func vanishing() throws {
    let site = try Site()
    let server = try Server(site, ["--nsfbufs", "64"])
    for _ in 0..<4 {
      let c = try #require(Client(port: server.port, receiveBuffer: 4096))
      c.send(Array("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
      _ = c.receive(max: 1000, timeout: 5)
      c.reset()  // an RST, as a crashed client's kernel sends
    }
    var used: Int?
    #expect(
      waitUntil("for the server to free the vanished clients' mappings", seconds: 20) {
        used = server.inUse()
        return used == 0
      }, "in use: \(String(describing: used))")
    #expect(Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 200)
  }

  @Test("a file truncated while it is sent: a short response and a close, never a crash")
  func truncated() throws {
    let site = try Site()
    let server = try Server(site, ["--nsfbufs", "32"])
    let path = site.root + "/grow.bin"
    writeBytes([UInt8](repeating: 7, count: 32 << 20), to: path)
    let c = try #require(Client(port: server.port, receiveBuffer: 8192))
    c.send(Array("GET /grow.bin HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
    var got = c.receive(max: 65536, timeout: 5)
    #expect(truncate(path, 100_000) == 0)
    while true {
      let more = c.receive(max: 1 << 20, timeout: 10)
      if more.isEmpty { break }
      got += more
      if got.count > 40 << 20 { break }
    }
    #expect(got.count < 32 << 20, "the whole 32 MiB arrived after the truncation")
    #expect(c.closedByPeer, "the server did not close the short response")
    #expect(Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 200)
  }

  @Test("a cap on connections: one more is answered 503")
  func connectionCap() throws {
    let site = try Site()
    let server = try Server(site, ["--max-connections", "2", "--threads", "1"])
    let a = try #require(Client(port: server.port))
    let b = try #require(Client(port: server.port))
    #expect(
      waitUntil("for two connections", seconds: 10) {
        Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 503
      })
    a.reset()
    b.reset()
    #expect(
      waitUntil("for the cap to admit again", seconds: 10) {
        Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 200
      })
  }

  @Test("SIGINT stops it with status 0 and the counters on stderr")
  func sigint() throws {
    let site = try Site()
    let server = try Server(site)
    #expect(Client.exchange(server.port, "GET / HTTP/1.0\r\n\r\n").status == 200)
    server.process.signal(SIGINT)
    #expect(server.process.wait(timeout: 20, "to stop after SIGINT") == 0)
    #expect(readText(server.err).contains("sfbufs in use"))
  }

  @Test("wrk: a few seconds of load, no socket errors, only 2xx answers")
  func wrkLoad() throws {
    guard access("/usr/bin/wrk", X_OK) == 0 else {
      Issue.record("wrk is not installed (scripts/test.sh installs it as root)")
      return
    }
    let site = try Site()
    let server = try Server(site, ["--nsfbufs", "64"])
    for path in ["/", "/big.bin"] {
      let out = makeTempPath("sfbuf-wrk")
      defer { unlink(out) }
      let p = try ToolProcess(
        ["wrk", "-t2", "-c32", "-d2s", "--timeout", "5s", server.base + path], stdout: out)
      #expect(p.wait(timeout: 60, "for wrk") == 0)
      let text = readText(out)
      #expect(text.contains("Requests/sec"), "wrk printed: \(text)")
      #expect(!text.contains("Socket errors"), "wrk: \(text)")
      #expect(!text.contains("Non-2xx"), "wrk: \(text)")
    }
    #expect(
      waitUntil("for every mapping to be freed after wrk", seconds: 10) {
        server.inUse() == 0
      })
  }
}

/// A raw TCP client on loopback, for requests curl will not send.
final class Client {
  let fd: Int32
  private(set) var closedByPeer = false

  init?(port: Int, receiveBuffer: Int? = nil) {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if fd < 0 { return nil }
    if var size = receiveBuffer.map(Int32.init) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let r = withUnsafePointer(to: &addr) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    if r != 0 {
      close(fd)
      return nil
    }
  }
  deinit { close(fd) }

  func send(_ bytes: [UInt8]) {
    var sent = 0
    while sent < bytes.count {
      let n = bytes.withUnsafeBytes {
        Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
      }
      if n <= 0 { return }
      sent += n
    }
  }

  /// Up to `max` bytes, waiting at most `timeout` seconds for the first; [] at the end of
  /// the stream (then ``closedByPeer``) or on timeout.
  func receive(max: Int, timeout: Double) -> [UInt8] {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&p, 1, Int32(timeout * 1000)) > 0 else { return [] }
    var buf = [UInt8](repeating: 0, count: max)
    let n = recv(fd, &buf, max, 0)
    if n <= 0 {
      closedByPeer = true
      return []
    }
    return Array(buf[0..<n])
  }

  /// Closes with an RST (SO_LINGER 0).
  func reset() {
    var l = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    shutdown(fd, Int32(SHUT_RDWR))
  }

  struct Exchange {
    var bytes: [UInt8]
    var closed: Bool
    var text: String { String(decoding: bytes, as: UTF8.self) }
    var status: Int? {
      guard text.hasPrefix("HTTP/1.") else { return nil }
      return Int(text.dropFirst(9).prefix(3))
    }
  }

  /// Sends `request` on a new connection (then half-closes, unless told not to) and reads
  /// until the server closes or `timeout` seconds pass.
  static func exchange(_ port: Int, _ request: String, halfClose: Bool = true, timeout: Double = 10)
    -> Exchange
  {
    exchange(port, Array(request.utf8), halfClose: halfClose, timeout: timeout)
  }

  static func exchange(
    _ port: Int, _ request: [UInt8], halfClose: Bool = true, timeout: Double = 10
  )
    -> Exchange
  {
    guard let c = Client(port: port) else { return Exchange(bytes: [], closed: true) }
    c.send(request)
    if halfClose { shutdown(c.fd, Int32(SHUT_WR)) }
    var got: [UInt8] = []
    let deadline = monotonic() + timeout
    while monotonic() < deadline {
      let more = c.receive(max: 1 << 16, timeout: max(0.01, deadline - monotonic()))
      if more.isEmpty { break }
      got += more
    }
    return Exchange(bytes: got, closed: c.closedByPeer)
  }
}

func write(_ text: String, to path: String) { writeBytes(Array(text.utf8), to: path) }

func writeBytes(_ bytes: [UInt8], to path: String) {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  precondition(fd >= 0, "cannot create \(path): errno \(errno)")
  var done = 0
  while done < bytes.count {
    let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
    precondition(n > 0, "write \(path): errno \(errno)")
    done += n
  }
  close(fd)
}
