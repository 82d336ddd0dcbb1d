import PropertyBased
import SFHTTP
import Testing

/// The request parser under generated input (swift-property-based, which shrinks a failing
/// input to a small one and prints its seed): whatever the bytes, it answers, and what it
/// answers is safe to act on.
@Suite("HTTP request parsing, property-based")
struct ParserPropertyTests {
  /// Pieces of requests, right and wrong, that random concatenations are made of.
  static let pieces = [
    "GET", "HEAD", "POST", "PUT", " ", "  ", "/", "/..", "..", "%2e", "%2E", "%2F", "%2f", "%00",
    "%", "%zz", "?", "#", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.", "\r\n", "\n", "\r",
    "Host: h", "Host:", ":", "\t", "Range: bytes=", "-", "0", "7", "99999999999999999999", ",",
    "Connection: close", "Connection: keep-alive", "\u{0}", "\u{7F}", "é", "a", "index.html",
    "If-None-Match: *", "If-Modified-Since: x", "Content-Length: 1", "Transfer-Encoding: chunked",
  ]

  /// One of the pieces (`element(of:)` is nil only for an empty collection).
  static let piece = Gen.element(of: pieces).map { $0 ?? "" }

  /// Checks one parse of `bytes`; returns whether it was a request.
  @discardableResult
  static func check(_ bytes: [UInt8]) -> Bool {
    switch parseHTTPRequest(bytes) {
    case .incomplete:
      return false
    case .request(let r, let consumed):
      #expect(consumed > 0 && consumed <= bytes.count)
      #expect(r.method == "GET" || r.method == "HEAD", "method \(r.method)")
      #expect(!r.path.contains("\0"), "a NUL in \(r.path)")
      #expect(!r.path.hasPrefix("/"), "a path that is not relative to the root: \(r.path)")
      #expect(!r.path.split(separator: "/").contains(".."), "climbs: \(r.path)")
      for size in [0, 1, 4096, 1 << 40] {
        if case .partial(let range) = interpretRange(r.range, size: size) {
          #expect(range.offset >= 0 && range.count > 0 && range.offset + range.count <= size)
        }
      }
      return true
    case .error(let status):
      #expect((400...599).contains(status.rawValue), "refused with \(status)")
      return false
    }
  }

  @Test("random bytes: never a crash; a request only when it is safe to serve")
  func randomBytes() async {
    await propertyCheck(count: 3000, input: Gen<UInt8>.value(in: 0...255).array(of: 0...200)) {
      Self.check($0)
    }
  }

  @Test("requests made of pieces, ended or not: every refusal a 4xx or 5xx, no path escapes")
  func pieces() async {
    let heads = Self.piece.array(of: 0...30)
    await propertyCheck(count: 5000, input: heads, Gen.bool) { parts, ended in
      Self.check(Array((parts.joined() + (ended ? "\r\n\r\n" : "")).utf8))
    }
  }

  /// Empty lines before the request line are skipped (RFC 9112, section 2.2), so a head of
  /// nothing but empty lines is still waiting for its request line: not generated here.
  @Test("a complete head is always decided: a request or an error, never 'more, please'")
  func completeHeadsDecide() async {
    let lines = Self.piece.array(of: 0...8).map { $0.joined() }
    await propertyCheck(count: 3000, input: lines.array(of: 1...6)) { lines in
      // By scalar: in a String, "\r\n" is one Character, which replacing "\r" misses.
      let clean = lines.map { line in
        String(String.UnicodeScalarView(line.unicodeScalars.filter { $0 != "\r" && $0 != "\n" }))
      }
      guard clean.contains(where: { !$0.isEmpty }) else { return }
      let head = Array((clean.joined(separator: "\r\n") + "\r\n\r\n").utf8)
      #expect(parseHTTPRequest(head) != .incomplete, "undecided: \(clean)")
    }
  }

  @Test("well-formed GETs of generated paths parse to that path, whatever the headers after")
  func roundTrip() async {
    let segment = Gen.letterOrNumber.string(of: 1...12)
    await propertyCheck(count: 2000, input: segment.array(of: 1...6), Gen.bool) { segs, head in
      let text =
        "\(head ? "HEAD" : "GET") /\(segs.joined(separator: "/")) HTTP/1.1\r\n"
        + "Host: h\r\nRange: bytes=0-0\r\n\r\n"
      guard case .request(let r, let consumed) = parseHTTPRequest(Array(text.utf8)) else {
        Issue.record("refused: \(text)")
        return
      }
      #expect(r.path == segs.joined(separator: "/"))
      #expect(r.method == (head ? "HEAD" : "GET"))
      #expect(consumed == text.utf8.count)
    }
  }
}
