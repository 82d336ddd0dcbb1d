import Glibc
import SFBufHost
import SFBufTestSupport
import Testing

@testable import SFSendfile

/// Several senders on a window far smaller than what they send: nothing deadlocks, every
/// byte arrives, and the window is empty afterwards. Every wait is bounded: a sender stuck
/// past the deadline is interrupted and the test fails.
@Suite("Concurrent senders on a tiny window")
struct ConcurrencyTests {
  static let files = (0..<4).map { _ in TempFile(size: 8 << 20, prefix: "sfsendfile-conc") }

  @Test(
    "4 senders, 8 MiB each, through a window of 3 slots",
    arguments: [(3, false), (3, true), (1, false)])
  func tinyWindow(slots: Int, zeroCopy: Bool) throws {
    installInterruptingHandler(SIGUSR1)
    let pool = try SFBufPool(nsfbufs: slots)
    var senders: [TestThread] = []
    var readers: [Reader] = []
    let objects = try Self.files.map { try $0.object() }
    let results = Shared<[Int: Result<Int, SendfileError>]>([:])
    for i in 0..<Self.files.count {
      let (s, r) = try loopbackPair(timeout: .seconds(60))
      if zeroCopy { s.enableZeroCopy() }
      readers.append(Reader(r))
      let object = objects[i]
      senders.append(
        TestThread {
          let result: Result<Int, SendfileError>
          do throws(SendfileError) {
            result = .success(
              try sendfile(object, to: s, offset: i, headers: [[UInt8(i)]], pool: pool))
          } catch {
            result = .failure(error)
          }
          _ = s.waitForCompletions(timeout: .seconds(10))
          s.close()
          results.with { $0[i] = result }
        })
    }
    // Senders still running then (a deadlock, or a lost wake-up) are interrupted.
    TestThread.join(senders, within: 60, "for the senders to finish")
    for (i, reader) in readers.enumerated() {
      let f = Self.files[i]
      #expect(try results.get[i]?.get() == 1 + f.bytes.count - i)
      expectSame(reader.join(), [UInt8(i)] + Array(f.bytes[i...]))
      expectClean(pool, objects[i])
    }
    #expect(pool.stats.nsfbufspeak <= slots)
  }
}
