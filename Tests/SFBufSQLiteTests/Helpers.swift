// SQLite driven from the tests: the system's libsqlite3 with the extension linked in (an
// automatic extension, as a program embedding it would), and the stock `sqlite3` shell.

import CSFBufSQLite
import CSQLite3
import Glibc
import SFBufSQLite
import SFBufTestSupport
import Testing

/// Registers the extension with the process's SQLite once: every connection opened after
/// this gets sfbuf_stats() and the configuration check; the first registers the VFS.
let registered: Bool = {
  let entry:
    @convention(c) (
      OpaquePointer?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
      OpaquePointer?
    ) -> Int32 = { db, err, api in sfbufsqlite_connection_init(db, err, api) }
  precondition(
    sqlite3_auto_extension(unsafeBitCast(entry, to: (@convention(c) () -> Void).self))
      == SQLITE_OK)
  var db: OpaquePointer?
  precondition(sqlite3_open(":memory:", &db) == SQLITE_OK)
  sqlite3_close(db)
  return sqlite3_vfs_find("sfbuf") != nil
}()

struct SQLiteError: Error, CustomStringConvertible {
  let description: String
}

/// One connection, closed by `close()` (or when it goes away).
final class Connection {
  private(set) var db: OpaquePointer?

  /// Opens `uri` (a `file:` URI) read-write.
  init(_ uri: String) throws {
    #expect(registered, "the sfbuf VFS is registered")
    let rc = sqlite3_open_v2(
      uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, nil)
    if rc != SQLITE_OK {
      let msg = String(cString: sqlite3_errmsg(db))
      sqlite3_close_v2(db)
      db = nil
      throw SQLiteError(description: "open \(uri): \(msg)")
    }
    sqlite3_busy_timeout(db, 10_000)
  }

  deinit { close() }

  func close() {
    if let db { #expect(sqlite3_close(db) == SQLITE_OK, "every statement finalized") }
    db = nil
  }

  /// Runs every statement of `sql` and returns the rows as the shell prints them in list
  /// mode: columns as SQLite's text, joined by `|`, one line per row.
  @discardableResult
  func run(_ sql: String) throws -> String {
    var out = ""
    var rest = sql
    while true {
      var stmt: OpaquePointer?
      var tail: UnsafePointer<CChar>?
      let consumed: Int = try rest.withCString { base in
        let rc = sqlite3_prepare_v2(db, base, -1, &stmt, &tail)
        if rc != SQLITE_OK {
          throw SQLiteError(description: "prepare: \(String(cString: sqlite3_errmsg(db)))")
        }
        return tail! - base
      }
      rest = String(rest.utf8.dropFirst(consumed))!
      guard let stmt else { break }
      defer { sqlite3_finalize(stmt) }
      let n = sqlite3_column_count(stmt)
      while true {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_DONE { break }
        guard rc == SQLITE_ROW else {
          throw SQLiteError(description: "step: \(String(cString: sqlite3_errmsg(db)))")
        }
        for i in 0..<n {
          if i > 0 { out += "|" }
          if let t = sqlite3_column_text(stmt, i) { out += String(cString: t) }
        }
        out += "\n"
      }
    }
    return out
  }

  /// The first column of the first row.
  func value(_ sql: String) throws -> String {
    String(try run(sql).split(separator: "\n", omittingEmptySubsequences: false)[0])
  }
}

/// A scratch directory, removed with everything in it by `remove()`.
struct ScratchDir {
  let path: String
  init(_ prefix: String) {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    precondition(mkdtemp(&template) != nil, "mkdtemp failed: \(errno)")
    path = String(
      decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
  func remove() {
    _ = try? Shell.run(["/bin/rm", "-rf", path])
  }
  func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// Programs run to completion with a deadline (posix_spawn), their output captured.
enum Shell {
  struct Result {
    let status: Int32
    let stdout: String
    let stderr: String
  }

  /// The stock shell; a missing one fails the test naming the package to install.
  static var sqlite3: String {
    get throws {
      guard access("/usr/bin/sqlite3", X_OK) == 0 else {
        throw SQLiteError(description: "sqlite3 is not installed: apt-get install -y sqlite3")
      }
      return "/usr/bin/sqlite3"
    }
  }

  /// Runs `argv` with `stdin` (a file) and waits at most `timeout` seconds; a program still
  /// running then is killed and the test fails naming it.
  static func run(_ argv: [String], stdin: String? = nil, timeout: Double = 120) throws -> Result {
    let n = counter.with { c -> Int in
      c += 1
      return c
    }
    let scratch = "/tmp/sfbuf-sqlite-out-\(getpid())-\(n)"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(
      &actions, 1, scratch + ".1", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(
      &actions, 2, scratch + ".2", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var pid = pid_t()
    let args = argv.map { strdup($0) } + [nil]
    defer { for a in args { free(a) } }
    // Under a sanitizer the extension is instrumented and needs the sanitizer's runtime,
    // which the stock shell does not have: preload it.
    var env = environment()
    if let preload = sanitizerPreload { env.append("LD_PRELOAD=\(preload)") }
    let envp = env.map { strdup($0) } + [nil]
    defer { for e in envp { free(e) } }
    let r = posix_spawn(&pid, argv[0], &actions, nil, args, envp)
    guard r == 0 else { throw SQLiteError(description: "posix_spawn \(argv[0]): \(r)") }
    let deadline = monotonic() + timeout
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) == 0 {
      if monotonic() > deadline {
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        throw SQLiteError(description: "\(argv.joined(separator: " ")) ran over \(timeout) s")
      }
      usleep(2000)
    }
    defer {
      unlink(scratch + ".1")
      unlink(scratch + ".2")
    }
    let sig = status & 0x7f
    return Result(
      status: sig == 0 ? (status >> 8) & 0xff : 128 + sig,
      stdout: try readFile(scratch + ".1"), stderr: try readFile(scratch + ".2"))
  }

  static let counter = Shared(0)

  /// This process's environment, as `NAME=value` strings.
  static func environment() -> [String] {
    var out: [String] = []
    var e = environ
    while let p = e.pointee {
      out.append(String(cString: p))
      e += 1
    }
    return out
  }
}

/// The whole of a file, as text.
func readFile(_ path: String) throws -> String {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else { throw SQLiteError(description: "open \(path): errno \(errno)") }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var buf = [UInt8](repeating: 0, count: 1 << 16)
  while true {
    let n = read(fd, &buf, buf.count)
    if n <= 0 { break }
    bytes += buf[0..<n]
  }
  return String(decoding: bytes, as: UTF8.self)
}

func writeFile(_ path: String, _ text: String) {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
  precondition(fd >= 0)
  _ = text.withCString { write(fd, $0, strlen($0)) }
  close(fd)
}

/// A file's size in bytes.
func fileSize(_ path: String) -> Int {
  var st = stat()
  return stat(path, &st) == 0 ? Int(st.st_size) : -1
}

/// `file:<path>?vfs=sfbuf&<params>`.
func sfbufURI(_ path: String, _ config: SFBufSQLiteConfig) -> String {
  "file:\(path)?vfs=sfbuf&\(config)"
}

/// The directory holding the test binary (the build directory, where
/// `swift build --product SFBufSQLite` leaves the extension).
var buildDirectory: String {
  var buf = [CChar](repeating: 0, count: 4096)
  let n = readlink("/proc/self/exe", &buf, buf.count - 1)
  let exe = String(decoding: buf.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)])
}
