import CSFBufLinux
import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import SystemPackage
import Testing

@testable import SFBufHost
@testable import SFSendfile

/// Failure without loss: each failure produced for real, then checked — the error, the
/// bytes it reports against the bytes the peer got, and the counters (no sf_buf in use, no
/// page wired).
@Suite("Failures without loss")
struct FailureTests {
  static let file = TempFile(size: 16 << 20, prefix: "sfsendfile-fail")

  @Test(
    "the peer closing mid-transfer is a broken pipe, not a SIGPIPE", arguments: PoolKind.allCases)
  func brokenPipe(kind: PoolKind) throws {
    var before = sigaction()
    sigaction(SIGPIPE, nil, &before)
    let pool = try kind.make()
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    let reader = Reader(r, limit: 1 << 20)
    var caught: SendfileError? = nil
    do {
      _ = try sendBounded { () throws(SendfileError) -> Int in
        try sendfile(object, to: s, headers: [[1, 2, 3]], pool: pool)
      }
    } catch {
      caught = error
    }
    let got = reader.join()
    let e = try #require(caught, "sendfile to a closed peer must fail")
    #expect(e.code == .brokenPipe)
    #expect(e.errno == .brokenPipe || e.errno == .connectionReset)
    #expect(e.bytesSent >= got.count && e.bytesSent < 3 + Self.file.bytes.count)
    expectSame(got, Array(([1, 2, 3] + Self.file.bytes).prefix(got.count)))
    expectClean(pool, object)
    // Nothing here ignored SIGPIPE process-wide to get there.
    var after = sigaction()
    sigaction(SIGPIPE, nil, &after)
    #expect(
      unsafeBitCast(before.__sigaction_handler.sa_handler, to: Int.self)
        == unsafeBitCast(after.__sigaction_handler.sa_handler, to: Int.self))
  }

  @Test("with SIGPIPE at its default action, a broken pipe does not kill the process")
  func noSIGPIPE() async {
    await #expect(processExitsWith: .success) {
      signal(SIGPIPE, SIG_DFL)
      let f = TempFile(size: 4 << 20)
      let object = try! f.object()
      let (s, r) = try! loopbackPair()
      r.close()
      do throws(SendfileError) {
        _ = try sendfile(object, to: s, pool: .directMap())
        exit(3)
      } catch {
        exit(error.code == .brokenPipe ? 0 : 4)
      }
    }
  }

  @Test(
    "a file truncated during the transfer ends it with a short count", arguments: PoolKind.allCases)
  func truncatedBetweenChains(kind: PoolKind) throws {
    let f = TempFile(size: 16 << 20)
    let pool = try kind.make()
    let object = try f.object()
    let (s, r) = try loopbackPair()
    try s.setSendBufferSize(64 << 10)
    try r.setReceiveBufferSize(64 << 10)
    // The peer truncates the file to 8 MiB once it has read 2 MiB (the sender is then far
    // from 8 MiB: the socket buffers are small), then reads to the end.
    let got = Shared<[UInt8]>([])
    let peer = TestThread {
      var all: [UInt8] = []
      var buf = [UInt8](repeating: 0, count: 1 << 16)
      var truncated = false
      // A receive timeout is not the end of the stream (a sanitizer's slowdown can make the
      // sender that slow): try again, a bounded number of times.
      var timeouts = 0
      while timeouts < 6 {
        let n: Int
        do {
          n = try buf.withUnsafeMutableBytes { (b) throws(SocketError) -> Int in
            try r.receive(into: b)
          }
        } catch let error as SocketError where error.errno == .resourceTemporarilyUnavailable {
          timeouts += 1
          continue
        } catch {
          break
        }
        if n <= 0 { break }
        timeouts = 0
        all += buf[0..<n]
        if !truncated && all.count >= 2 << 20 {
          f.truncate(to: 8 << 20)
          truncated = true
        }
      }
      got.with { $0 = all }
    }
    let n = try sendBounded { () throws(SendfileError) -> Int in
      try sendfile(object, to: s, headers: [[0xAA]], trailers: [[0xBB]], pool: pool)
    }
    s.close()
    peer.join(within: 120, "for the peer to read to the end of the stream")
    #expect(n == 1 + (8 << 20), "the count stops at the new end, without the trailer")
    expectSame(got.get, [0xAA] + Array(f.bytes[0..<(8 << 20)]))
    expectClean(pool, object)
  }

  @Test(
    "a page cut off between the size check and the send is EFAULT in sendmsg, a short count here",
    arguments: PoolKind.allCases)
  func truncatedUnderTheSend(kind: PoolKind) throws {
    let f = TempFile(size: 4 << 20)
    let pool = try kind.make(slots: 128)
    let object = try f.object()
    let (s, r) = try loopbackPair()
    let reader = Reader(r)
    // Before the first send at or past 1 MiB, cut the file 16 pages further: the chain
    // (64 pages) already holds mappings of pages that no longer exist.
    let cut = Shared(0)
    let faults = Shared(0)
    let n = try sendBounded { () throws(SendfileError) -> Int in
      var hooks = SendfileHooks()
      hooks.beforeSend = { pos in
        if pos >= 1 << 20 && cut.get == 0 {
          cut.with { $0 = (pos / 4096 + 16) * 4096 }
          f.truncate(to: cut.get)
        }
      }
      hooks.onSendError = { e in if e == .badAddress { faults.with { $0 += 1 } } }
      return try sendfile(
        object, to: s, offset: 100, count: 0, headers: [], trailers: [[1]], flags: [],
        pool: pool, hooks: hooks)
    }
    s.close()
    let got = reader.join()
    #expect(cut.get > 0)
    #expect(faults.get >= 1, "sendmsg never met the missing page")
    #expect(n == cut.get - 100)
    expectSame(got, Array(f.bytes[100..<cut.get]))
    expectClean(pool, object)
  }

  @Test("a file that grows during the call is sent to its new end")
  func grows() throws {
    let f = TempFile(size: 1 << 20)
    let extra = [UInt8](repeating: 0x5A, count: 12345)
    let object = try f.object()
    let pool = try SFBufPool(nsfbufs: 32)
    let (s, r) = try loopbackPair()
    let reader = Reader(r)
    let grown = Shared(false)
    let n = try sendBounded { () throws(SendfileError) -> Int in
      var hooks = SendfileHooks()
      hooks.beforeSend = { _ in
        if !grown.get {
          grown.with { $0 = true }
          let fd = open(f.path, O_WRONLY | O_APPEND)
          _ = extra.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
          close(fd)
        }
      }
      return try sendfile(
        object, to: s, offset: 0, count: 0, headers: [], trailers: [], flags: [], pool: pool,
        hooks: hooks)
    }
    s.close()
    #expect(n == f.bytes.count + extra.count)
    expectSame(reader.join(), f.bytes + extra)
    expectClean(pool, object)
  }

  @Test("a signal during the first allocation interrupts the call before anything is queued")
  func interrupted() throws {
    installInterruptingHandler(SIGUSR1)
    let pool = try SFBufPool(nsfbufs: 1)
    let other = try VMObject.anonymous(size: 4096)
    try other.wire(pages: 0..<1)
    let held = try pool.allocate(other.page(0))
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    let result = Shared<SendfileError?>(nil)
    let sender = TestThread {
      do throws(SendfileError) {
        _ = try sendfile(object, to: s, headers: [[1, 2, 3]], pool: pool)
      } catch {
        result.with { $0 = error }
      }
    }
    waitUntil("the sender to sleep for a slot") { pool.window!.sleepers == 1 }
    // Signal until the sleeper gives up: the first signal may land before it sleeps.
    let interrupted = waitUntil("signals to interrupt the sender's sleep") {
      sender.signal(SIGUSR1)
      return sender.isDone
    }
    // Bounded either way: without the interruption, freeing the slot lets it finish.
    _ = consume held
    sender.join(within: 120, "for the sender to return")
    s.close()
    let e = try #require(result.get)
    #expect(e.code == .interrupted)
    #expect(e.bytesSent == 0)
    if interrupted { #expect(try r.drain() == 0, "nothing was queued, not even the headers") }
    other.unwire(pages: 0..<1)
    expectClean(pool, object)
    #expect(pool.stats.sf_allocfail == 1)
  }

  @Test("no buffers: a full window on a non-blocking socket")
  func noBuffersFullWindow() throws {
    let pool = try SFBufPool(nsfbufs: 1)
    let other = try VMObject.anonymous(size: 4096)
    try other.wire(pages: 0..<1)
    let held = try pool.allocate(other.page(0))
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    s.isNonBlocking = true
    let e = #expect(throws: SendfileError.self) {
      try sendfile(object, to: s, headers: [[1]], pool: pool)
    }
    #expect(e?.code == .noBuffers && e?.bytesSent == 0)
    s.close()
    #expect(try r.drain() == 0)
    _ = consume held
    other.unwire(pages: 0..<1)
    expectClean(pool, object)
  }

  @Test("no buffers: the host refuses to map the page", arguments: PoolKind.allCases)
  func noBuffersRefused(kind: PoolKind) throws {
    let pool = try kind.make()
    let object = try Self.file.object(access: .writeOnly)
    let (s, r) = try loopbackPair()
    let e = #expect(throws: SendfileError.self) {
      try sendfile(object, to: s, headers: [[1]], pool: pool)
    }
    #expect(e?.code == .noBuffers && e?.bytesSent == 0 && e?.errno == .permissionDenied)
    s.close()
    #expect(try r.drain() == 0)
    expectClean(pool, object)
  }

  @Test(
    "non-blocking: partial progress, would block, and resuming sends the rest exactly",
    arguments: PoolKind.allCases)
  func wouldBlock(kind: PoolKind) throws {
    let pool = try kind.make()
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    try s.setSendBufferSize(64 << 10)
    try r.setReceiveBufferSize(64 << 10)
    s.isNonBlocking = true
    let headers: [UInt8] = [1, 2, 3, 4]
    let total = headers.count + Self.file.bytes.count + 2
    // Nobody reads yet: the first call stops early.
    var sent = 0
    do {
      sent = try sendfile(object, to: s, headers: [headers], trailers: [[8, 9]], pool: pool)
      Issue.record("a non-blocking send of 16 MiB to a peer not reading cannot finish")
    } catch {
      #expect(error.code == .wouldBlock)
      #expect(error.bytesSent > 0 && error.bytesSent < total)
      sent = error.bytesSent
    }
    expectClean(pool, object)
    // Now read, and resume where it stopped until all is sent.
    let reader = Reader(r)
    var rounds = 0
    let deadline = monotonic() + 120
    while sent < total {
      if rounds == 100_000 || monotonic() > deadline {
        Issue.record("gave up resuming after \(rounds) rounds: sent \(sent) of \(total) bytes")
        break
      }
      rounds += 1
      _ = try Sys.poll(s.fileDescriptor.rawValue, Int16(POLLOUT), timeoutMS: 5000)
      // Resume exactly where the last call stopped: in the headers, the file or the
      // trailers.
      let size = Self.file.bytes.count
      let fileSent = min(max(0, sent - headers.count), size)
      let trailerSent = max(0, sent - headers.count - size)
      let h = sent < headers.count ? [Array(headers[sent...])] : []
      let t = trailerSent < 2 ? [Array([UInt8(8), 9][trailerSent...])] : []
      do {
        sent += try sendfile(
          object, to: s, offset: fileSent, headers: h, trailers: t, pool: pool)
      } catch {
        #expect(error.code == .wouldBlock)
        sent += error.bytesSent
      }
      expectClean(pool, object)
    }
    s.close()
    #expect(rounds > 0)
    expectSame(reader.join(), headers + Self.file.bytes + [8, 9])
  }

  @Test("SF_NODISKIO: busy at the first page not in the page cache, with the bytes before it")
  func noDiskIO() throws {
    let f = TempFile(size: 1 << 20)
    // Push the file out of the page cache, then read its first 4 pages back in.
    let fd = open(f.path, O_RDWR)
    fsync(fd)
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    #expect(
      try Sys.residentPrefix(fd, offset: 0, pages: 256, pageSize: 4096) == 0,
      "the kernel kept the pages cached after POSIX_FADV_DONTNEED: cannot test SF_NODISKIO")
    // No read-ahead on this descriptor: exactly 4 pages come in.
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)
    var four = [UInt8](repeating: 0, count: 4 * 4096)
    _ = four.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    close(fd)
    let pool = try SFBufPool(nsfbufs: 64)
    let object = try f.object()
    let (s, r) = try loopbackPair()
    let reader = Reader(r)
    let e = #expect(throws: SendfileError.self) {
      try sendfile(object, to: s, headers: [[7]], flags: .noDiskIO, pool: pool)
    }
    #expect(e?.code == .busy)
    #expect(e?.bytesSent == 1 + 4 * 4096)
    expectClean(pool, object)
    // The call started reading the rest of its chain in the background: the next page
    // comes in without anyone waiting for it.
    let ofd = object.fileDescriptor!.rawValue
    waitUntil("the page after the first chain to come into the page cache") {
      ((try? Sys.residentPrefix(ofd, offset: 4 * 4096, pages: 1, pageSize: 4096)) ?? 0) == 1
    }
    var sent = e?.bytesSent ?? 0
    var rounds = 0
    let deadline = monotonic() + 120
    while sent < 1 + f.bytes.count {
      if rounds == 10_000 || monotonic() > deadline {
        Issue.record("gave up after \(rounds) calls: sent \(sent) of \(1 + f.bytes.count) bytes")
        break
      }
      rounds += 1
      do {
        sent += try sendfile(object, to: s, offset: sent - 1, flags: .noDiskIO, pool: pool)
      } catch {
        #expect(error.code == .busy)
        sent += error.bytesSent
        usleep(10_000)
      }
    }
    s.close()
    expectSame(reader.join(), [7] + f.bytes)
    expectClean(pool, object)
  }

  @Test("bad arguments, an offset past the end, a closed socket")
  func arguments() throws {
    let pool = SFBufPool.directMap()
    let object = try Self.file.object()
    let (s, r) = try loopbackPair()
    let e = #expect(throws: SendfileError.self) {
      try sendfile(object, to: s, offset: -1, pool: pool)
    }
    #expect(e?.code == .invalidArgument)
    #expect(
      try sendfile(
        object, to: s, offset: Self.file.bytes.count + 10, headers: [[1]], trailers: [[2]],
        pool: pool)
        == 2)
    s.close()
    #expect(try r.drain() == 2)
    let closed = #expect(throws: SendfileError.self) { try sendfile(object, to: s, pool: pool) }
    #expect(closed?.code == .closed)
    expectClean(pool, object)
  }
}
