import Glibc
import SFBufHost
import SFBufTestSupport
import SystemPackage
import Testing

@testable import SFSendfile

/// Our sendfile against peers not written here (socat, nc from Debian), in both directions,
/// over loopback TCP, comparing every byte.
@Suite("Interoperation with socat and nc")
struct InteropTests {
  static let sizes = [0, 1, 4095, 4096, 4097, 64 << 20]
  /// One 64 MiB file shared by the cases that need it (each opens its own object).
  static let big = TempFile(size: 64 << 20, prefix: "sfsendfile-big")

  static func file(_ size: Int) -> TempFile {
    size == big.bytes.count ? big : TempFile(size: size)
  }

  /// Sends with our sendfile to `socat -u TCP:… CREATE:out` and compares what socat wrote.
  func sendToSocat(
    _ f: TempFile, pool: SFBufPool, offset: Int = 0, count: Int = 0, headers: [UInt8] = [],
    trailers: [UInt8] = [], object given: VMObject? = nil
  ) throws {
    let object = try given ?? f.object()
    let out = makeTempPath("sfsendfile-out")
    defer { unlink(out) }
    let listener = try Listener()
    let peer = try Peer(["socat", "-u", "TCP:127.0.0.1:\(listener.port)", "CREATE:\(out)"])
    let socket = try listener.accept(timeout: .seconds(10))
    try socket.setTimeouts(send: .seconds(30))
    let n = try sendBounded("sendfile to socat") {
      try sendfile(
        object, to: socket, offset: offset, count: count,
        headers: headers.isEmpty ? [] : [headers], trailers: trailers.isEmpty ? [] : [trailers],
        pool: pool)
    }
    socket.close()
    #expect(peer.wait() == 0)
    let want = expected(f, offset: offset, count: count, headers: headers, trailers: trailers)
    #expect(n == want.count)
    let got = readAll(out)
    #expect(got.count == want.count)
    expectSame(got, want, "socat received other bytes than the file's")
    expectClean(pool, object)
  }

  @Test(
    "sendfile to socat: sizes × window/direct × headers/trailers",
    arguments: sizes, PoolKind.allCases)
  func toSocat(size: Int, kind: PoolKind) throws {
    let f = Self.file(size)
    let pool = try kind.make()
    try sendToSocat(f, pool: pool)
    try sendToSocat(
      f, pool: pool, headers: Array("HEAD\r\n".utf8), trailers: Array("\r\nTRAILER".utf8))
  }

  @Test(
    "unaligned offsets and counts",
    arguments: [
      (1, 0), (1, 1), (4095, 2), (4097, 8191), (12345, 100_000), (4096, 4096), (70_000, 0),
      (300_001, 1), (0, 299_999), (400_000, 10),
    ], PoolKind.allCases)
  func unaligned(range: (Int, Int), kind: PoolKind) throws {
    let f = Self.unalignedFile
    try sendToSocat(
      f, pool: try kind.make(slots: 4), offset: range.0, count: range.1, headers: [7, 7],
      trailers: [9])
  }
  static let unalignedFile = TempFile(size: 300_003)

  @Test("a file sent again comes from the window's cache, in runs of hits across its regions")
  func sentAgainFromCache() throws {
    // 512 pages in a window of 512 slots, four regions of 128: the first send leaves every
    // page cached in order, the second finds them as hits spanning regions.
    let pool = try SFBufPool(nsfbufs: 512)
    let object = try Self.cachedFile.object()
    try sendToSocat(Self.cachedFile, pool: pool, object: object)
    let before = pool.stats
    try sendToSocat(Self.cachedFile, pool: pool, object: object)
    let after = pool.stats
    #expect(after.hits - before.hits >= 384, "hits: \(before.hits) -> \(after.hits)")
  }
  static let cachedFile = TempFile(size: 2 << 20, prefix: "sfsendfile-again")

  @Test("a window of 8 slots sends 64 MiB")
  func tinyWindowBigFile() throws {
    try sendToSocat(Self.big, pool: try SFBufPool(nsfbufs: 8))
  }

  @Test("socat sends to our receiver", arguments: sizes)
  func fromSocat(size: Int) throws {
    let f = Self.file(size)
    let out = makeTempPath("sfsendfile-recv")
    defer { unlink(out) }
    let listener = try Listener()
    let peer = try Peer(["socat", "-u", "OPEN:\(f.path),rdonly", "TCP:127.0.0.1:\(listener.port)"])
    let socket = try listener.accept(timeout: .seconds(10))
    try socket.setTimeouts(receive: .seconds(30))
    let fd = open(out, O_WRONLY | O_TRUNC)
    let n = try socket.drain(to: FileDescriptor(rawValue: fd))
    close(fd)
    #expect(peer.wait() == 0)
    #expect(n == size)
    expectSame(readAll(out), f.bytes)
  }

  @Test("nc receives from our sendfile, and sends to our receiver", arguments: PoolKind.allCases)
  func netcat(kind: PoolKind) throws {
    let f = TempFile(size: 1 << 20 | 123)
    let pool = try kind.make(slots: 8)
    let object = try f.object()
    let out = makeTempPath("sfsendfile-nc")
    defer { unlink(out) }
    // nc receives.
    let listener = try Listener()
    let receiver = try Peer(["nc", "-d", "127.0.0.1", "\(listener.port)"], stdout: out)
    let socket = try listener.accept(timeout: .seconds(10))
    try socket.setTimeouts(send: .seconds(30))
    let n = try sendBounded("sendfile to nc") {
      try sendfile(object, to: socket, offset: 5, headers: [[1, 2, 3]], pool: pool)
    }
    socket.close()
    #expect(receiver.wait() == 0)
    #expect(n == 3 + f.bytes.count - 5)
    expectSame(readAll(out), expected(f, offset: 5, count: 0, headers: [1, 2, 3]))
    expectClean(pool, object)
    // nc sends.
    let sender = try Peer(["nc", "-N", "127.0.0.1", "\(listener.port)"], stdin: f.path)
    let incoming = try listener.accept(timeout: .seconds(10))
    try incoming.setTimeouts(receive: .seconds(30))
    let fd = open(out, O_WRONLY | O_TRUNC)
    #expect(try incoming.drain(to: FileDescriptor(rawValue: fd)) == f.bytes.count)
    close(fd)
    incoming.close()
    #expect(sender.wait() == 0)
    expectSame(readAll(out), f.bytes)
  }
}
