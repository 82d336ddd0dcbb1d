import SFHTTP
import Testing

@Suite("HTTP request parsing")
struct ParserTests {
  func parse(_ text: String) -> HTTPParse { parseHTTPRequest(Array(text.utf8)) }

  func request(_ text: String) -> HTTPRequest? {
    if case .request(let r, _) = parse(text) { return r }
    return nil
  }

  func status(_ text: String) -> HTTPStatus? {
    if case .error(let s) = parse(text) { return s }
    return nil
  }

  @Test("a GET, its path, version and keep-alive")
  func simpleGet() throws {
    let text = "GET /a/b.txt?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    guard case .request(let r, let consumed) = parse(text) else {
      Issue.record("not parsed: \(parse(text))")
      return
    }
    #expect(consumed == text.utf8.count)
    #expect(r.method == "GET" && r.path == "a/b.txt" && r.minorVersion == 1 && r.keepAlive)
    #expect(r.target == "/a/b.txt?x=1")
  }

  @Test("HTTP/1.0 closes unless asked to keep alive; 1.1 keeps alive unless asked to close")
  func keepAlive() {
    #expect(request("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
    #expect(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")?.keepAlive == true)
    #expect(request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")?.keepAlive == false)
    #expect(request("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")?.isHead == true)
  }

  @Test("an incomplete head asks for more; pipelined requests are taken one at a time")
  func incompleteAndPipelined() {
    #expect(parse("GET / HTTP/1.1\r\nHost: h\r\n") == .incomplete)
    #expect(parse("") == .incomplete)
    let two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
    guard case .request(let r, let n) = parse(two) else {
      Issue.record("first not parsed")
      return
    }
    #expect(r.path == "1")
    let rest = String(two.utf8.dropFirst(n))!
    #expect(request(rest)?.path == "2")
    // A stray CRLF before a request is skipped.
    #expect(request("\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n")?.path == "3")
  }

  @Test(
    "paths are decoded and normalised, and never climb above the root",
    arguments: [
      ("/", ""), ("/a/./b//c/", "a/b/c"), ("/a/../b", "b"), ("/%61%2fb", "a/b"),
      ("/a/%2e%2e/b", "b"), ("http://example.com/x/y", "x/y"), ("/caf%C3%A9", "café"),
    ])
  func paths(_ target: String, _ path: String) {
    #expect(request("GET \(target) HTTP/1.1\r\nHost: h\r\n\r\n")?.path == path)
  }

  @Test(
    "escapes above the root, NULs and bad escapes are 400",
    arguments: [
      "/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x", "/%2E%2E%2Fx", "/a%00b", "/%zz", "/%4",
      "*", "x",
    ])
  func badPaths(_ target: String) {
    #expect(status("GET \(target) HTTP/1.1\r\nHost: h\r\n\r\n") == .badRequest)
  }

  @Test("malformed requests get the status that names what is wrong")
  func malformed() {
    #expect(status("garbage\r\n\r\n") == .badRequest)
    #expect(status("GET /\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\n\r\n") == .badRequest)  // no Host
    #expect(status("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == .versionNotSupported)
    #expect(status("GET / FTP/1.0\r\n\r\n") == .badRequest)
    #expect(status("POST / HTTP/1.1\r\nHost: h\r\n\r\n") == .methodNotAllowed)
    #expect(status("DELETE / HTTP/1.1\r\nHost: h\r\n\r\n") == .methodNotAllowed)
    #expect(status("G(T / HTTP/1.1\r\nHost: h\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\nHost : h\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n") == .badRequest)
    #expect(
      status("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") == .notImplemented)
    #expect(status("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n") == .badRequest)
    #expect(status("GET / HTTP/1.1\r\nHost: h\r\nX: a\u{1}b\r\n\r\n") == .badRequest)
    // A method that is not served is named as the error even when the request has a body.
    #expect(
      status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello") == .methodNotAllowed)
    #expect(
      status("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") == .methodNotAllowed
    )
  }

  @Test("an overlong target is 414; an oversized head or too many headers 431")
  func limits() {
    let long = "/" + String(repeating: "a", count: 5000)
    #expect(status("GET \(long) HTTP/1.1\r\nHost: h\r\n\r\n") == .uriTooLong)
    #expect(status("GET \(long)") == .uriTooLong)  // even before the line ends
    let big = "GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "b", count: 20000)
    #expect(status(big) == .headersTooLarge)
    let many = "GET / HTTP/1.1\r\nHost: h\r\n" + String(repeating: "X: y\r\n", count: 150) + "\r\n"
    #expect(status(many) == .headersTooLarge)
  }

  @Test(
    "ranges: a-b, a-, -n; past the end 416; several or malformed mean the whole file",
    arguments: [
      ("bytes=0-9", RangeAnswer.partial(ByteRange(offset: 0, count: 10))),
      ("bytes=90-", .partial(ByteRange(offset: 90, count: 10))),
      ("bytes=-30", .partial(ByteRange(offset: 70, count: 30))),
      ("bytes=-300", .partial(ByteRange(offset: 0, count: 100))),
      ("bytes=50-500", .partial(ByteRange(offset: 50, count: 50))),
      ("bytes=100-", .unsatisfiable), ("bytes=-0", .unsatisfiable),
      ("bytes=0-1,5-6", .whole), ("bytes=5-1", .whole), ("bytes=x-1", .whole),
      ("items=0-1", .whole),
    ])
  func ranges(_ header: String, _ answer: RangeAnswer) {
    #expect(interpretRange(header, size: 100) == answer)
  }

  /// Seeded xorshift, so that a failure names its input and can be replayed.
  struct Generator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      return state
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
  }

  @Test("fuzz: generated requests never crash the parser; every refusal is a 4xx or 5xx it names")
  func fuzz() {
    var g = Generator(state: 0x9E37_79B9_7F4A_7C15)
    let pieces = [
      "GET", "HEAD", "POST", " ", "  ", "/", "/..", "%2e", "%2F", "%00", "%", "?", "#",
      "HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "\r\n", "\n", "\r", "Host: h", "Host:", ":", "\t",
      "Range: bytes=", "-", "0", "99999999999999999999", ",", "Connection: close", "\u{0}",
      "\u{7F}", "é", "x", "If-None-Match: *", "Content-Length: 1",
    ]
    var parsed = 0
    var refused = 0
    let valid = Array("GET /a/b.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=1-2\r\n\r\n".utf8)
    for _ in 0..<20000 {
      // Half from random pieces, half a valid request with a few random mutations.
      var bytes: [UInt8] = []
      if g.below(2) == 0 {
        for _ in 0..<g.below(24) {
          if g.below(5) == 0 {
            bytes.append(UInt8(truncatingIfNeeded: g.next()))
          } else {
            bytes += Array(pieces[g.below(pieces.count)].utf8)
          }
        }
        if g.below(2) == 0 { bytes += Array("\r\n\r\n".utf8) }
      } else {
        bytes = valid
        for _ in 0..<g.below(4) {
          let at = g.below(bytes.count)
          switch g.below(3) {
          case 0: bytes[at] = UInt8(truncatingIfNeeded: g.next())
          case 1: bytes.remove(at: at)
          default: bytes.insert(contentsOf: pieces[g.below(pieces.count)].utf8, at: at)
          }
        }
      }
      switch parseHTTPRequest(bytes) {
      case .incomplete: break
      case .request(let r, let consumed):
        parsed += 1
        #expect(consumed > 0 && consumed <= bytes.count)
        #expect(!r.path.contains("\0") && !r.path.split(separator: "/").contains(".."))
        #expect(r.method == "GET" || r.method == "HEAD")
        _ = interpretRange(r.range, size: g.below(1000))
      case .error(let s):
        refused += 1
        #expect(s.rawValue >= 400, "refused with \(s) for \(bytes)")
      }
    }
    // The generator reaches both outcomes.
    #expect(parsed > 0 && refused > 1000)
  }
}
