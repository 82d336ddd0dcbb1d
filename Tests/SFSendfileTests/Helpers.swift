import CSFBufLinux
import Glibc
import SFBufCore
import SFBufHost
import SFBufTestSupport
import SystemPackage
import Testing

@testable import SFSendfile

// MARK: Files

/// A file of `size` bytes of random content (from /dev/urandom) under /tmp, which lives
/// until the value goes away.
final class TempFile: @unchecked Sendable {
  let path: String
  let bytes: [UInt8]

  init(size: Int, prefix: String = "sfsendfile") {
    path = makeTempPath(prefix)
    var b = [UInt8](repeating: 0, count: size)
    if size > 0 {
      let fd = open("/dev/urandom", O_RDONLY)
      precondition(fd >= 0)
      b.withUnsafeMutableBytes { p in
        var done = 0
        while done < size {
          let n = read(fd, p.baseAddress! + done, min(size - done, 1 << 20))
          precondition(n > 0)
          done += n
        }
      }
      close(fd)
    }
    bytes = b
    let fd = open(path, O_WRONLY | O_TRUNC)
    precondition(fd >= 0)
    b.withUnsafeBytes { p in
      var done = 0
      while done < size {
        let n = write(fd, p.baseAddress! + done, size - done)
        precondition(n > 0)
        done += n
      }
    }
    close(fd)
  }

  /// A fresh object for the file (read-only), so each test counts its own wires.
  func object(access: FileDescriptor.AccessMode = .readOnly) throws -> VMObject {
    try VMObject.file(FilePath(path), access: access)
  }

  /// Truncates the file to `size` bytes through a descriptor of its own.
  func truncate(to size: Int) {
    let fd = open(path, O_RDWR)
    precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
    close(fd)
  }

  deinit { unlink(path) }
}

/// The file's bytes `offset ..< offset + count` as sendfile sends them (count 0: to the end).
func expected(_ f: TempFile, offset: Int, count: Int, headers: [UInt8] = [], trailers: [UInt8] = [])
  -> [UInt8]
{
  let start = min(offset, f.bytes.count)
  let end = count == 0 ? f.bytes.count : min(offset + count, f.bytes.count)
  return headers + Array(f.bytes[start..<max(start, end)]) + trailers
}

/// The contents of the file at `path`.
func readAll(_ path: String) -> [UInt8] {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else { return [] }
  defer { close(fd) }
  var out: [UInt8] = []
  var buf = [UInt8](repeating: 0, count: 1 << 20)
  while true {
    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    if n <= 0 { return out }
    out += buf[0..<n]
  }
}

/// Checks that `got` equals `want` (through memcmp: debug builds compare arrays element by
/// element, slowly), reporting lengths and the first difference rather than the bytes.
func expectSame(
  _ got: [UInt8], _ want: [UInt8], _ what: String = "bytes received",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  let n = min(got.count, want.count)
  let equalPrefix = got.withUnsafeBytes { pa in
    want.withUnsafeBytes { pb in n == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, n) == 0 }
  }
  if equalPrefix && got.count == want.count { return }
  var first = n
  if !equalPrefix { first = (0..<n).first { got[$0] != want[$0] } ?? n }
  Issue.record(
    "\(what): \(got.count) bytes, expected \(want.count); first difference at \(first)",
    sourceLocation: sourceLocation)
}

// MARK: Pools and counters

enum PoolKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
  case window, direct
  func make(slots: Int = 16) throws -> SFBufPool {
    self == .direct ? .directMap() : try SFBufPool(nsfbufs: slots)
  }
  var testDescription: String { rawValue }
}

/// Checks what every failure must leave behind: no mapping in use, no page wired.
func expectClean(
  _ pool: SFBufPool, _ object: VMObject, sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(pool.stats.nsfbufsused == 0, "sf_bufs still in use", sourceLocation: sourceLocation)
  let pages = (try? object.pageCount()) ?? 0
  let wired = (0..<max(pages, 1) + 64).filter { object.page($0).wireCount != 0 }
  #expect(wired.isEmpty, "pages still wired: \(wired.prefix(8))", sourceLocation: sourceLocation)
}

// MARK: Bounded calls

/// Calls `send` (a sendfile call that may sleep for a slot of a window) on a thread of its
/// own and waits at most `seconds` for it, so that a sleep nobody ends (a lost wake-up)
/// fails the test naming `what` instead of holding one of the few threads that run every
/// test. Returns what `send` returned, or nil when it has not returned in time. (A closure
/// that must throw `SendfileError` says so: `{ () throws(SendfileError) -> Int in … }`.)
func sendBounded<E: Error>(
  _ what: String = "sendfile to return", seconds: Double = 120,
  sourceLocation: SourceLocation = #_sourceLocation,
  _ send: @escaping @Sendable () throws(E) -> Int
) throws(E) -> Int? {
  try onThread(what, seconds: seconds, sourceLocation: sourceLocation, send)
}

// MARK: Peers

/// A connected pair over loopback TCP: `sender` (ours) and `receiver`, with timeouts so
/// nothing waits forever.
func loopbackPair(timeout: Duration = .seconds(20)) throws -> (sender: Socket, receiver: Socket) {
  let l = try Listener()
  let s = try Socket.connect(host: "127.0.0.1", port: l.port)
  let r = try l.accept(timeout: .seconds(5))
  try s.setTimeouts(send: timeout, receive: timeout)
  try r.setTimeouts(send: timeout, receive: timeout)
  return (s, r)
}

/// A thread reading a socket to the end into memory; `limit` closes it after that many.
final class Reader: @unchecked Sendable {
  private let thread: TestThread
  private let box = Shared<[UInt8]>([])

  init(_ socket: Socket, limit: Int? = nil, startAfter: Double = 0) {
    let box = self.box
    thread = TestThread {
      if startAfter > 0 { usleep(UInt32(startAfter * 1e6)) }
      var got: [UInt8] = []
      var buf = [UInt8](repeating: 0, count: 1 << 18)
      // A receive timeout is not the end of the stream (a sanitizer's slowdown can make the
      // sender that slow): try again, a bounded number of times, and say so if it gives up.
      var timeouts = 0
      while limit.map({ got.count < $0 }) ?? true {
        let want = min(buf.count, limit.map { $0 - got.count } ?? buf.count)
        let n: Int
        do {
          n = try buf.withUnsafeMutableBytes { (b) throws(SocketError) -> Int in
            try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<want]))
          }
        } catch let error as SocketError {
          if error.errno == .resourceTemporarilyUnavailable || error.errno == .timedOut,
            timeouts < 6
          {
            timeouts += 1
            continue
          }
          if timeouts >= 6 {
            Issue.record("the test's reader gave up after 7 receive timeouts in a row")
          }
          break
        } catch {
          break
        }
        if n <= 0 { break }
        got += buf[0..<n]
        timeouts = 0
      }
      if limit != nil { socket.close() }
      box.with { $0 = got }
    }
  }

  /// Waits at most `seconds` for the end of the stream and returns what was read (nothing,
  /// when the reader is still reading then: the failure names it).
  func join(within seconds: Double = 120, sourceLocation: SourceLocation = #_sourceLocation)
    -> [UInt8]
  {
    thread.join(
      within: seconds, "for the test's reader to read to the end of the stream",
      sourceLocation: sourceLocation)
    return box.get
  }
}

/// A program from Debian run as a peer (posix_spawn), waited for with a deadline. A missing
/// program fails the test with a message saying what to install; nothing is skipped.
final class Peer {
  let pid: pid_t
  let name: String
  private var reaped = false

  init(_ argv: [String], stdin: String? = nil, stdout: String? = nil, stderr: String? = nil)
    throws
  {
    name = argv[0]
    guard let exe = argv[0].hasPrefix("/") ? argv[0] : Peer.find(argv[0]) else {
      Issue.record(
        "\(argv[0]) is not installed: apt-get install -y socat netcat-openbsd")
      throw PeerError.missing(argv[0])
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let stdin { posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0) }
    if let stdout {
      posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    }
    if let stderr {
      posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    }
    var p = pid_t()
    let args = ([exe] + argv.dropFirst()).map { strdup($0) } + [nil]
    defer { for a in args { free(a) } }
    let r = posix_spawn(&p, exe, &actions, nil, args, environ)
    guard r == 0 else { throw PeerError.spawn(argv[0], r) }
    pid = p
  }

  deinit { reapIfNeeded() }

  static func find(_ name: String) -> String? {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin"] {
      let path = "\(dir)/\(name)"
      if access(path, X_OK) == 0 { return path }
    }
    return nil
  }

  /// Waits at most `timeout` seconds; a peer still running then is killed and reported.
  /// Returns its exit status (or 128 + signal).
  @discardableResult
  func wait(timeout: Double = 30) -> Int32 {
    reaped = true
    let deadline = monotonic() + timeout
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) == 0 {
      if monotonic() > deadline {
        Issue.record("\(name) (pid \(pid)) did not finish in \(timeout) s; killed")
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        return -1
      }
      usleep(2000)
    }
    let sig = status & 0x7f
    return sig == 0 ? (status >> 8) & 0xff : 128 + sig
  }
}

extension Peer {
  /// A test that failed before waiting for its peer still leaves no process behind.
  func reapIfNeeded() {
    guard !reaped else { return }
    reaped = true
    kill(pid, SIGKILL)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
  }
}

enum PeerError: Error {
  case missing(String)
  case spawn(String, Int32)
}
