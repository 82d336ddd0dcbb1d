import Glibc
import SFBufHost
import SFBufTestSupport
import Testing

@testable import SFSendfile

/// Zero-copy sends (`SO_ZEROCOPY`, `MSG_ZEROCOPY`): buffers held until the notification, the
/// "copied" notification of loopback turning zero-copy off, and borrowed memory.
@Suite("Zero-copy sends")
struct ZeroCopyTests {
  static let file = TempFile(size: 8 << 20, prefix: "sfsendfile-zc")

  @Test(
    "sendfile with MSG_ZEROCOPY to socat; loopback copies, which turns zero-copy off",
    arguments: PoolKind.allCases)
  func toSocat(kind: PoolKind) throws {
    let pool = try kind.make(slots: 64)
    let object = try Self.file.object()
    let out = makeTempPath("sfsendfile-zc-out")
    defer { unlink(out) }
    let listener = try Listener()
    let peer = try Peer(["socat", "-u", "TCP:127.0.0.1:\(listener.port)", "CREATE:\(out)"])
    let socket = try listener.accept(timeout: .seconds(10))
    try socket.setTimeouts(send: .seconds(30))
    #expect(socket.enableZeroCopy())
    #expect(socket.isZeroCopyActive)
    let n = try sendBounded("sendfile with MSG_ZEROCOPY to socat") {
      try sendfile(object, to: socket, offset: 3, headers: [[1, 2]], pool: pool)
    }
    #expect(n == 2 + Self.file.bytes.count - 3)
    #expect(socket.waitForCompletions(timeout: .seconds(10)))
    let st = socket.zeroCopyStats
    #expect(st.notifications >= 1)
    #expect(st.completed == st.notifications && st.pending == 0)
    #expect(st.copied >= 1, "loopback always copies, and says so")
    #expect(!socket.isZeroCopyActive, "a copied notification turns zero-copy off")
    socket.close()
    #expect(peer.wait() == 0)
    expectSame(readAll(out), expected(Self.file, offset: 3, count: 0, headers: [1, 2]))
    expectClean(pool, object)
  }

  @Test(
    "buffers stay held until the notification; the completion thread releases them",
    arguments: PoolKind.allCases)
  func heldUntilCompletion(kind: PoolKind) throws {
    let pool = try kind.make(slots: 256)
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    try s.setSendBufferSize(64 << 10)
    try r.setReceiveBufferSize(64 << 10)
    #expect(s.enableZeroCopy())
    s.isNonBlocking = true
    // Nobody reads: what the first send queued cannot all be transmitted, so its
    // notification cannot come, and its pages stay wired and mapped.
    var sent = 0
    do {
      sent = try sendfile(object, to: s, pool: pool)
      Issue.record("a non-blocking send of 8 MiB to a peer not reading cannot finish")
    } catch {
      #expect(error.code == .wouldBlock)
      sent = error.bytesSent
    }
    #expect(sent > 0)
    usleep(50_000)
    s.reapCompletions()
    #expect(s.zeroCopyStats.pending >= 1)
    if kind == .window { #expect(pool.stats.nsfbufsused >= 1) }
    let wired = (0..<2048).filter { object.page($0).wireCount > 0 }.count
    #expect(wired >= 1, "the pages of a send not yet done stay wired")
    // The peer reads: the kernel is done, and the completion thread, not this one,
    // reads the notification and releases the buffers.
    let reader = Reader(r)
    waitUntil("the zero-copy notifications of the send") { s.zeroCopyStats.pending == 0 }
    waitUntil("the completion thread to free the mappings") { pool.stats.nsfbufsused == 0 }
    // A buffer frees its mappings, then unwires its pages: wait for both.
    waitUntil("the completion thread to unwire the pages") {
      (0..<2048).allSatisfy { object.page($0).wireCount == 0 }
    }
    s.close()
    expectSame(reader.join(), Array(Self.file.bytes.prefix(sent)))
    expectClean(pool, object)
  }

  @Test("borrowed memory: the async send returns once the kernel is done with it")
  func borrowed() async throws {
    let (s, r) = try loopbackPair()
    #expect(s.enableZeroCopy())
    let bytes = Self.file.bytes
    let memory = Borrowed(bytes)
    defer { memory.free() }
    let buffer = memory.buffer
    // The peer starts reading only after a while: the send must wait for it.
    let start = monotonic()
    let reader = Reader(r, startAfter: 0.3)
    let n = try await withDeadline("the zero-copy send of 8 MiB to return", seconds: 120) {
      try await s.sendZeroCopy(UnsafeRawBufferPointer(memory.buffer))
    }
    #expect(n == bytes.count)
    #expect(monotonic() - start >= 0.25)
    let st = s.zeroCopyStats
    #expect(st.notifications >= 1 && st.pending == 0)
    // The memory may be reused now: scribbling over it changes nothing the peer gets.
    buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
    s.close()
    expectSame(reader.join(), bytes)
  }

  @Test("borrowed memory: cancelling stops queueing, and still waits for what was queued")
  func borrowedCancelled() async throws {
    let (s, r) = try loopbackPair()
    try s.setSendBufferSize(64 << 10)
    try r.setReceiveBufferSize(64 << 10)
    #expect(s.enableZeroCopy())
    let bytes = Self.file.bytes
    let memory = Borrowed(bytes)
    defer { memory.free() }
    let task = Task { () async throws(SendfileError) -> Int in
      try await s.sendZeroCopy(UnsafeRawBufferPointer(memory.buffer))
    }
    await waitUntilAsync("a first zero-copy notification (something queued)") {
      s.zeroCopyStats.notifications > 0
    }
    task.cancel()
    // The queued part can only complete once the peer reads it.
    let reader = Reader(r, startAfter: 0.2)
    var sent = 0
    do {
      let r = await result(of: task, within: 120, "the cancelled zero-copy send to return")
      _ = try r?.get()
      if r != nil { Issue.record("the send cannot finish: nobody read before the cancellation") }
    } catch let e as SendfileError {
      #expect(e.code == .interrupted)
      sent = e.bytesSent
    }
    #expect(sent > 0 && sent < bytes.count)
    #expect(s.zeroCopyStats.pending == 0, "returned before the kernel was done")
    s.close()
    expectSame(reader.join(), Array(bytes.prefix(sent)))
  }
}

/// Memory of our own holding a copy of some bytes, to lend to a zero-copy send.
final class Borrowed: @unchecked Sendable {
  let buffer: UnsafeMutableRawBufferPointer
  init(_ bytes: [UInt8]) {
    buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 4096)
    bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
  }
  func free() { buffer.deallocate() }
}
