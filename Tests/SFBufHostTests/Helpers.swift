import CSFBufLinux
import Glibc
import SFBufCore
import SystemPackage

@testable import SFBufHost

/// The tag of page `index` of `object`: written with pwrite(2), read through mappings.
func tag(_ object: VMObject, _ index: Int) -> UInt64 {
  UInt64(object.id) << 32 | UInt64(index) | 0xA5 << 56
}

/// An anonymous object of `pages` pages, each tagged and wired.
func taggedAnonymous(pages: Int) throws -> VMObject {
  let o = try VMObject.anonymous(size: pages * vmPageSize)
  try writeTags(o, pages: pages)
  try o.wire(pages: 0..<pages)
  return o
}

/// A real file of `pages` pages under a fresh temporary directory, tagged, opened with
/// `access` and wired (unless write-only).
func taggedFile(pages: Int, access: FileDescriptor.AccessMode = .readOnly) throws -> VMObject {
  let path = makeTempPath("sfbuf-file")
  let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
  precondition(fd >= 0)
  precondition(ftruncate(fd, off_t(pages * vmPageSize)) == 0)
  close(fd)
  let o = try VMObject.file(FilePath(path), access: access)
  if access != .writeOnly {
    try writeTags(o, pages: pages, path: path)
    try o.wire(pages: 0..<pages)
  }
  unlink(path)
  return o
}

func writeTags(_ o: VMObject, pages: Int, path: String? = nil) throws {
  // A read-only object's descriptor cannot write: write the tags through another one.
  let fd = path.map { open($0, O_RDWR) } ?? o.fileDescriptor
  for i in 0..<pages {
    var t = tag(o, i)
    precondition(pwrite(fd, &t, 8, off_t(i * vmPageSize)) == 8)
  }
  if path != nil { close(fd) }
}

func makeTempPath(_ prefix: String) -> String {
  var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
  let fd = mkstemp(&template)
  precondition(fd >= 0)
  close(fd)
  return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Reads the tag through a mapping.
func readTag(_ buf: borrowing SFBuf) -> UInt64 {
  buf.address.load(as: UInt64.self)
}

/// Waits, at most `seconds`, until `cond` holds; returns whether it did.
func waitUntil(seconds: Double = 5, _ cond: () -> Bool) -> Bool {
  let deadline = monotonic() + seconds
  while monotonic() < deadline {
    if cond() { return true }
    usleep(1000)
  }
  return cond()
}

func monotonic() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A thread running `body`, joinable, whose pthread id is known (to send it signals).
final class TestThread: @unchecked Sendable {
  private var thread = pthread_t()
  private let body: @Sendable () -> Void
  private let doneFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)

  init(_ body: @escaping @Sendable () -> Void) {
    self.body = body
    doneFlag.initialize(to: 0)
    let r = pthread_create(
      &thread, nil,
      { arg in
        let t = Unmanaged<TestThread>.fromOpaque(arg!).takeRetainedValue()
        // Threads inherit the creator's signal mask, and the test runner's worker threads
        // block signals: let this one receive SIGUSR1, like an ordinary thread.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        t.body()
        sfb_store_u32(t.doneFlag, 1)
        return nil
      }, Unmanaged.passRetained(self).toOpaque())
    precondition(r == 0)
  }

  var isDone: Bool { sfb_load_u32(doneFlag) != 0 }
  func signal(_ sig: Int32) { pthread_kill(thread, sig) }
  func join() { pthread_join(thread, nil) }
}

/// A value shared between threads under a lock.
final class Shared<T>: @unchecked Sendable {
  private var value: T
  private var mutex = pthread_mutex_t()
  init(_ v: T) {
    value = v
    pthread_mutex_init(&mutex, nil)
  }
  func with<R>(_ body: (inout T) -> R) -> R {
    pthread_mutex_lock(&mutex)
    defer { pthread_mutex_unlock(&mutex) }
    return body(&value)
  }
  var get: T { with { $0 } }
}

/// Installs a do-nothing handler for `sig` without SA_RESTART, so that a blocking system
/// call in progress returns EINTR, as the kernel's PCATCH sleeps expect.
func installInterruptingHandler(_ sig: Int32) {
  var sa = sigaction()
  sa.__sigaction_handler.sa_handler = { _ in }
  sigemptyset(&sa.sa_mask)
  sa.sa_flags = 0
  precondition(sigaction(sig, &sa, nil) == 0)
}

/// The reclaim policies every window test runs under: the original, and batches (small, so
/// that the tests' tiny windows recycle in batches too).
let policies: [SFBufReclaimPolicy] = [.faithful, .batched(batch: 2)]
