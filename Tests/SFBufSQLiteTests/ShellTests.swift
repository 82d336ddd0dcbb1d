// The stock `sqlite3` shell, unmodified, loading the extension the package builds.

import Glibc
import Testing

@testable import SFBufSQLite

/// The extension built next to the test binary, or a failure saying how to build it.
func extensionPath() throws -> String {
  let path = buildDirectory + "/libSFBufSQLite.so"
  guard access(path, R_OK) == 0 else {
    throw SQLiteError(
      description: "\(path) is missing: build it first (swift build --product SFBufSQLite)")
  }
  return String(path.dropLast(3))  // as a user types it: SQLite adds the suffix
}

@Suite("The stock sqlite3 shell on the sfbuf VFS", .serialized)
struct ShellTests {
  @Test("the shell loads the extension, opens vfs=sfbuf and answers as the default VFS")
  func shellRunsSuite() throws {
    let dir = ScratchDir("sfbuf-sqlite-shell")
    defer { dir.remove() }
    let db = dir.file("s.db")
    try Fixture.build(db, orders: 60_000)
    let reference = try Fixture.reference(db)
    let lib = try extensionPath()
    let script = db + ".suite.sql"
    writeFile(script, "PRAGMA mmap_size=1000000000;\n" + Fixture.suite + "SELECT sfbuf_stats();\n")
    for params in ["nsfbufs=64", "nsfbufs=8&policy=batched", "direct=1"] {
      let r = try Shell.run(
        [
          try Shell.sqlite3, "-cmd", ".load \(lib)", "-cmd", ".open file:\(db)?vfs=sfbuf&\(params)",
        ],
        stdin: script)
      #expect(r.status == 0 && r.stderr.isEmpty, "\(params): \(r.stderr)")
      #expect(r.stdout.hasPrefix("1000000000\n" + reference), "\(params)")
      #expect(r.stdout.contains("this connection: fetches"), "\(params)")
      #expect(!r.stdout.contains(", mapped 0,"), "\(params): pages were mapped")
    }
  }

  @Test("a bad URI parameter: the shell reports the message naming it and fails")
  func shellReportsBadParameter() throws {
    let dir = ScratchDir("sfbuf-sqlite-shellbad")
    defer { dir.remove() }
    let db = dir.file("s.db")
    try Fixture.build(db, orders: 100)
    let lib = try extensionPath()
    let r = try Shell.run([
      try Shell.sqlite3, "-bail", "-cmd", ".load \(lib)", "-cmd",
      ".open file:\(db)?vfs=sfbuf&nsfbufs=lots", ":memory:", "SELECT count(*) FROM orders",
    ])
    #expect(r.status != 0)
    #expect(r.stderr.contains("sfbuf: bad URI parameter nsfbufs=lots"), "\(r.stderr)")
  }
}
