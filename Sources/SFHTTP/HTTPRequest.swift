// HTTP/1.x requests as a static file server reads them: the request line, the headers it
// needs, and the path below the served root. A pure function of the bytes received, so that
// it can be tested (and fuzzed) without a socket.

/// A status code the server answers with.
public enum HTTPStatus: Int, Sendable, CaseIterable {
  case ok = 200
  case partialContent = 206
  case movedPermanently = 301
  case notModified = 304
  case badRequest = 400
  case forbidden = 403
  case notFound = 404
  case methodNotAllowed = 405
  case requestTimeout = 408
  case uriTooLong = 414
  case rangeNotSatisfiable = 416
  case headersTooLarge = 431
  case internalError = 500
  case notImplemented = 501
  case unavailable = 503
  case versionNotSupported = 505

  /// The reason phrase of the status line.
  public var reason: String {
    switch self {
    case .ok: "OK"
    case .partialContent: "Partial Content"
    case .movedPermanently: "Moved Permanently"
    case .notModified: "Not Modified"
    case .badRequest: "Bad Request"
    case .forbidden: "Forbidden"
    case .notFound: "Not Found"
    case .methodNotAllowed: "Method Not Allowed"
    case .requestTimeout: "Request Timeout"
    case .uriTooLong: "URI Too Long"
    case .rangeNotSatisfiable: "Range Not Satisfiable"
    case .headersTooLarge: "Request Header Fields Too Large"
    case .internalError: "Internal Server Error"
    case .notImplemented: "Not Implemented"
    case .unavailable: "Service Unavailable"
    case .versionNotSupported: "HTTP Version Not Supported"
    }
  }

  /// Whether it is a client's error (4xx).
  public var isClientError: Bool { (400..<500).contains(rawValue) }
}

/// A parsed request: what the file server acts on.
public struct HTTPRequest: Sendable, Equatable {
  /// `GET` or `HEAD`.
  public var method: String
  /// The request target as sent (for the access log).
  public var target: String
  /// The path below the root, percent-decoded, with `.` segments and empty segments
  /// removed and `..` applied: "" for the root, else segments joined by "/" with no leading
  /// or trailing slash. Never contains a NUL byte or a `..` segment.
  public var path: String
  /// 0 for HTTP/1.0, 1 for HTTP/1.1.
  public var minorVersion: Int
  /// Whether the connection stays open after the response.
  public var keepAlive: Bool
  /// The `Range` header's value, if any.
  public var range: String?
  /// The `If-Modified-Since` header's value, if any.
  public var ifModifiedSince: String?
  /// The `If-None-Match` header's value, if any.
  public var ifNoneMatch: String?

  public var isHead: Bool { method == "HEAD" }
}

/// Limits of what a request may be.
public struct HTTPLimits: Sendable {
  /// The longest request target (longer: 414).
  public var maxTarget = 4096
  /// The largest request line plus headers (larger: 431).
  public var maxHeaderBytes = 16384
  /// The most header lines (more: 431).
  public var maxHeaders = 100
  public init() {}
}

/// What the bytes received so far hold.
public enum HTTPParse: Sendable, Equatable {
  /// Not a whole request yet: read more.
  case incomplete
  /// A request, and how many bytes of the input it took.
  case request(HTTPRequest, consumed: Int)
  /// A request that cannot be served: answer `status` and close the connection.
  case error(HTTPStatus)
}

/// Parses the first request of `bytes`.
public func parseHTTPRequest(_ bytes: some Collection<UInt8>, limits: HTTPLimits = HTTPLimits())
  -> HTTPParse
{
  let input = Array(bytes)
  return input.withUnsafeBufferPointer { parseHTTPRequest($0, limits: limits) }
}

/// Parses the first request of `buf`.
public func parseHTTPRequest(_ buf: UnsafeBufferPointer<UInt8>, limits: HTTPLimits = HTTPLimits())
  -> HTTPParse
{
  let lf = UInt8(ascii: "\n")
  // Empty lines before a request line are skipped (RFC 9112 §2.2), so that a stray CRLF
  // between pipelined requests is harmless.
  var head = 0
  while head < buf.count && (buf[head] == lf || buf[head] == UInt8(ascii: "\r")) { head += 1 }
  // The end of the head: an empty line (CRLF CRLF, or bare LFs).
  var end = -1
  var firstLineEnd = -1
  var i = head
  while i < buf.count {
    if buf[i] == lf {
      if firstLineEnd < 0 { firstLineEnd = i }
      if i + 1 < buf.count && buf[i + 1] == lf {
        end = i + 2
        break
      }
      if i + 2 < buf.count && buf[i + 1] == UInt8(ascii: "\r") && buf[i + 2] == lf {
        end = i + 3
        break
      }
    }
    i += 1
  }
  if end < 0 {
    if firstLineEnd < 0 && buf.count > limits.maxTarget + 32 { return .error(.uriTooLong) }
    if buf.count > limits.maxHeaderBytes { return .error(.headersTooLarge) }
    return .incomplete
  }
  if end > limits.maxHeaderBytes { return .error(.headersTooLarge) }

  // Lines, without their CR.
  var lines: [UnsafeBufferPointer<UInt8>] = []
  var start = head
  for j in head..<end where buf[j] == lf {
    var stop = j
    if stop > start && buf[stop - 1] == UInt8(ascii: "\r") { stop -= 1 }
    lines.append(UnsafeBufferPointer(rebasing: buf[start..<stop]))
    start = j + 1
  }
  guard let requestLine = lines.first else { return .error(.badRequest) }
  if lines.count - 2 > limits.maxHeaders { return .error(.headersTooLarge) }

  // The request line: method SP target SP version.
  let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
  guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else { return .error(.badRequest) }
  guard parts[0].allSatisfy(isTokenChar) else { return .error(.badRequest) }
  let method = String(decoding: parts[0], as: UTF8.self)
  if parts[1].count > limits.maxTarget { return .error(.uriTooLong) }
  let version = String(decoding: parts[2], as: UTF8.self)
  let minor: Int
  switch version {
  case "HTTP/1.1": minor = 1
  case "HTTP/1.0": minor = 0
  default:
    let v = Array(parts[2])
    if v.count == 8 && v.starts(with: Array("HTTP/".utf8)) && isDigit(v[5]) && v[6] == 0x2E
      && isDigit(v[7])
    {
      return .error(.versionNotSupported)
    }
    return .error(.badRequest)
  }
  guard parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return .error(.badRequest) }
  let target = String(decoding: parts[1], as: UTF8.self)

  // Headers.
  var host = false
  var connection = ""
  var range: String?
  var ims: String?
  var inm: String?
  // A request with a body is refused, after the method: a POST with one is told 405.
  var body: HTTPStatus?
  for line in lines.dropFirst() where !line.isEmpty {
    // No folded lines (obs-fold), no space before the colon.
    if line[0] == UInt8(ascii: " ") || line[0] == UInt8(ascii: "\t") { return .error(.badRequest) }
    guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else {
      return .error(.badRequest)
    }
    let name = line[..<colon]
    guard name.allSatisfy(isTokenChar) else { return .error(.badRequest) }
    var value = line[(colon + 1)...]
    while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
    while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
    if value.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
      return .error(.badRequest)
    }
    let lower = String(decoding: name, as: UTF8.self).lowercased()
    let text = String(decoding: value, as: UTF8.self)
    switch lower {
    case "host":
      if host { return .error(.badRequest) }
      host = true
    case "connection": connection = text.lowercased()
    case "range": range = text
    case "if-modified-since": ims = text
    case "if-none-match": inm = text
    case "transfer-encoding": body = body ?? .notImplemented
    case "content-length":
      // A request body is not read: only an explicit empty one is accepted.
      if text != "0" { body = body ?? .badRequest }
    default: break
    }
  }
  if minor == 1 && !host { return .error(.badRequest) }

  guard method == "GET" || method == "HEAD" else {
    return .error(.methodNotAllowed)
  }
  if let body { return .error(body) }
  guard let path = resolvePath(target) else { return .error(.badRequest) }
  let tokens = connection.split(separator: ",").map { $0.trimmingSpaces }
  let keepAlive = minor == 1 ? !tokens.contains("close") : tokens.contains("keep-alive")
  return .request(
    HTTPRequest(
      method: method, target: target, path: path, minorVersion: minor, keepAlive: keepAlive,
      range: range, ifModifiedSince: ims, ifNoneMatch: inm),
    consumed: end)
}

/// The path below the root that `target` names, or nil when it is malformed (not
/// origin-form nor absolute-form, a bad or NUL percent escape) or climbs above the root.
func resolvePath(_ target: String) -> String? {
  var t = Substring(target)
  if t.hasPrefix("http://") || t.hasPrefix("https://") {
    // Absolute form: the path after the authority.
    t = t.drop { $0 != ":" }.dropFirst(3)
    guard let slash = t.firstIndex(of: "/") else { return "" }
    t = t[slash...]
  }
  guard t.first == "/" else { return nil }
  if let q = t.firstIndex(where: { $0 == "?" || $0 == "#" }) { t = t[..<q] }
  // Percent-decoding first: an encoded slash or dot counts as one.
  var bytes: [UInt8] = []
  var u = Array(t.utf8)[...]
  while let b = u.popFirst() {
    if b == UInt8(ascii: "%") {
      guard u.count >= 2, let h = hexValue(u[u.startIndex]), let l = hexValue(u[u.startIndex + 1])
      else { return nil }
      u = u.dropFirst(2)
      bytes.append(h << 4 | l)
    } else {
      bytes.append(b)
    }
  }
  if bytes.contains(0) { return nil }
  var segments: [ArraySlice<UInt8>] = []
  for s in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
    if s.elementsEqual([UInt8(ascii: ".")]) { continue }
    if s.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
      if segments.popLast() == nil { return nil }
      continue
    }
    segments.append(s)
  }
  let joined = segments.joined(separator: [UInt8(ascii: "/")])
  guard let path = String(validating: Array(joined), as: UTF8.self) else { return nil }
  return path
}

@inline(__always) func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

func hexValue(_ c: UInt8) -> UInt8? {
  switch c {
  case 0x30...0x39: c - 0x30
  case 0x41...0x46: c - 0x41 + 10
  case 0x61...0x66: c - 0x61 + 10
  default: nil
  }
}

/// A character of an RFC 9110 token (methods, header names).
func isTokenChar(_ c: UInt8) -> Bool {
  switch c {
  case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
  case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"),
    UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"),
    UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
    UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
    true
  default: false
  }
}

extension Substring {
  var trimmingSpaces: String {
    String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
  }
}

/// A byte range of a file to send.
public struct ByteRange: Sendable, Equatable {
  public var offset: Int
  public var count: Int
  public init(offset: Int, count: Int) {
    self.offset = offset
    self.count = count
  }
}

/// What a `Range` header asks of a file of `size` bytes.
public enum RangeAnswer: Sendable, Equatable {
  /// The whole file (no range, a range that is not `bytes=`, several ranges, or a malformed
  /// one, which RFC 9110 says to ignore).
  case whole
  /// One satisfiable range: 206.
  case partial(ByteRange)
  /// Not satisfiable: 416.
  case unsatisfiable
}

/// Interprets `header` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) for a file of `size` bytes.
public func interpretRange(_ header: String?, size: Int) -> RangeAnswer {
  guard let header, header.hasPrefix("bytes=") else { return .whole }
  let spec = header.dropFirst(6).trimmingSpaces
  if spec.contains(",") { return .whole }
  guard let dash = spec.firstIndex(of: "-") else { return .whole }
  let a = spec[..<dash]
  let b = spec[spec.index(after: dash)...]
  func number(_ s: Substring) -> Int? {
    guard !s.isEmpty, s.count <= 18, s.utf8.allSatisfy(isDigit) else { return nil }
    return Int(s)
  }
  if a.isEmpty {
    guard let n = number(b) else { return .whole }
    if n == 0 || size == 0 { return .unsatisfiable }
    let count = min(n, size)
    return .partial(ByteRange(offset: size - count, count: count))
  }
  guard let first = number(a) else { return .whole }
  var last = size - 1
  if !b.isEmpty {
    guard let l = number(b) else { return .whole }
    if l < first { return .whole }
    last = min(l, size - 1)
  }
  if first >= size { return .unsatisfiable }
  return .partial(ByteRange(offset: first, count: last - first + 1))
}
