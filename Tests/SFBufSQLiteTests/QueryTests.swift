// The query suite on a database of more than 100 MB, through every kind of pool, against the
// default VFS read by the stock shell.

import CSQLite3
import Glibc
import SFBufHost
import Testing

@testable import SFBufSQLite

/// The counters of files closed with `config` since `before`.
func countersSince(_ before: SFBufSQLiteCounters, _ config: SFBufSQLiteConfig)
  -> SFBufSQLiteCounters
{
  let now = SFBufSQLite.closedFileCounters(for: config)
  var d = SFBufSQLiteCounters()
  d.fetches = now.fetches - before.fetches
  d.mapped = now.mapped - before.mapped
  d.windowFull = now.windowFull - before.windowFull
  d.pastEnd = now.pastEnd - before.pastEnd
  d.notAdjacent = now.notAdjacent - before.notAdjacent
  d.refused = now.refused - before.refused
  d.cold = now.cold - before.cold
  d.unfetches = now.unfetches - before.unfetches
  d.unmapAll = now.unmapAll - before.unmapAll
  return d
}

/// Slots of `config`'s pool still in use (0 for the direct map, which has none).
func slotsInUse(_ config: SFBufSQLiteConfig) -> Int {
  SFBufSQLite.pool(for: config)?.stats.nsfbufsused ?? -1
}

let mapAll = "PRAGMA mmap_size=2000000000"

@Suite("SQLite query suite through sf_buf", .serialized)
struct QueryTests {
  @Test(
    "a database over 100 MB: windows of 1, 8, 64, 512 slots and the direct map answer byte for byte as the default VFS"
  )
  func querySuite() throws {
    let dir = ScratchDir("sfbuf-sqlite-big")
    defer { dir.remove() }
    let db = dir.file("big.db")
    try Fixture.build(db, orders: 1_000_000)
    #expect(fileSize(db) >= 100 << 20, "the database is at least 100 MB")
    let reference = try Fixture.reference(db)
    #expect(reference.split(separator: "\n").count > 100)

    let configs: [SFBufSQLiteConfig] = [
      .window(1, admit: 1), .window(8), .window(64), .window(512), .window(64, admit: 1),
      .window(512, admit: 1), .direct,
    ]
    for config in configs {
      let before = SFBufSQLite.closedFileCounters(for: config)
      let c = try Connection(sfbufURI(db, config))
      #expect(try c.value(mapAll) == "2000000000", "PRAGMA mmap_size reports the limit")
      #expect(try c.run(Fixture.suite) == reference, "\(config): same rows as the default VFS")
      // The full check (every index against its table) once, the structural one for each.
      let check = config == .direct ? "integrity_check" : "quick_check"
      #expect(try c.value("PRAGMA \(check)") == "ok", "\(config): \(check)")
      let stats = try c.run("SELECT sfbuf_stats()")
      if config.nsfbufs != nil {
        // Between statements SQLite holds no page: each xUnfetch found its slot again.
        #expect(slotsInUse(config) == 0, "\(config): \(slotsInUse(config)) slots held")
      }
      c.close()
      let n = countersSince(before, config)
      #expect(n.mapped > (config.nsfbufs == 1 ? 0 : 1000), "\(config): mapped: \(n.line)")
      #expect(n.unfetches == n.mapped, "\(config): every mapping given back")
      #expect(stats.contains("this connection: fetches"))
      if config.nsfbufs != nil {
        #expect(stats.contains("sfbufs in use (current/peak/max)"))
        #expect(slotsInUse(config) == 0, "\(config): nsfbufsused back to 0 after close")
      }
      if config.nsfbufs == 1 {
        // The B-tree cursors hold several pages at once: one slot cannot hold them all
        // (admit=1, so that every page they hold is asked of the window).
        #expect(n.windowFull > 0, "window of 1: fell back to xRead, and says so")
        #expect((SFBufSQLite.pool(for: config)?.stats.sf_allocfail ?? 0) > 0)
      } else if config.nsfbufs == 512 || config == .direct {
        #expect(n.windowFull == 0)
      }
    }
  }

  @Test("a VFS mapping the wrong page is caught by the comparison (mutant)")
  func wrongPageMutantIsCaught() throws {
    let dir = ScratchDir("sfbuf-sqlite-mutant")
    defer { dir.remove() }
    let db = dir.file("m.db")
    try Fixture.build(db, orders: 30_000)
    let reference = try Fixture.reference(db)
    let config = SFBufSQLiteConfig.window(40)
    MappedFile.mutantWindow = 40
    defer { MappedFile.mutantWindow = nil }
    let c = try Connection(sfbufURI(db, config))
    try c.run(mapAll)
    let out = Result { try c.run(Fixture.suite) }
    c.close()
    switch out {
    case .success(let text): #expect(text != reference, "the shifted mapping must show")
    case .failure(let e): #expect("\(e)".contains("malformed"), "\(e)")
    }
  }

  @Test("pages of 16 KiB are mapped as runs of adjacent slots, with the same answers")
  func largePages() throws {
    let dir = ScratchDir("sfbuf-sqlite-16k")
    defer { dir.remove() }
    let db = dir.file("p.db")
    try Fixture.build(db, orders: 60_000)
    let r = try Shell.run([try Shell.sqlite3, db, "PRAGMA page_size=16384; VACUUM;"])
    try Fixture.expectSuccess(r, "page_size=16384")
    let reference = try Fixture.reference(db)
    for config in [SFBufSQLiteConfig.window(8), .window(64), .direct] {
      let before = SFBufSQLite.closedFileCounters(for: config)
      let c = try Connection(sfbufURI(db, config))
      #expect(try c.value("PRAGMA page_size") == "16384")
      try c.run(mapAll)
      #expect(try c.run(Fixture.suite) == reference, "\(config)")
      #expect(try c.run(Fixture.suite) == reference, "\(config), again (hits on cached runs)")
      c.close()
      let n = countersSince(before, config)
      #expect(n.mapped > 100, "\(config): \(n.line)")
      if config.nsfbufs != nil { #expect(slotsInUse(config) == 0) }
    }
    let pool = SFBufSQLite.pool(for: .window(64))!
    #expect(pool.stats.hits > 0, "cached runs are found again: \(pool.stats)")
  }

  @Test("PRAGMA mmap_size: a smaller limit maps less, 0 maps nothing; answers unchanged")
  func mmapLimit() throws {
    let dir = ScratchDir("sfbuf-sqlite-limit")
    defer { dir.remove() }
    let db = dir.file("l.db")
    try Fixture.build(db, orders: 60_000)
    let reference = try Fixture.reference(db)
    let config = SFBufSQLiteConfig.window(48)
    let c = try Connection(sfbufURI(db, config))
    let before = SFBufSQLite.closedFileCounters(for: config)
    try c.run(mapAll)
    #expect(try c.run(Fixture.suite) == reference)
    #expect(try c.value("PRAGMA mmap_size=1048576") == "1048576")
    #expect(try c.run(Fixture.suite) == reference)
    #expect(try c.value("PRAGMA mmap_size=0") == "0")
    #expect(try c.run(Fixture.suite) == reference)
    c.close()
    let n = countersSince(before, config)
    #expect(n.pastEnd > 0, "pages past a 1 MiB limit read with xRead: \(n.line)")
    #expect(n.mapped > 0)
    #expect(slotsInUse(config) == 0)
  }

  @Test("a pool is discarded only when no open database uses it; the next one starts afresh")
  func discardPool() throws {
    let dir = ScratchDir("sfbuf-sqlite-discard")
    defer { dir.remove() }
    let db = dir.file("d.db")
    try Fixture.build(db, orders: 5000)
    let config = SFBufSQLiteConfig.window(56, admit: 1)  // the one scan maps pages
    let c = try Connection(sfbufURI(db, config))
    try c.run(mapAll)
    try c.run("SELECT count(*), sum(amount) FROM orders")
    let first = SFBufSQLite.pool(for: config)
    #expect(first != nil && first!.stats.misses > 0)
    #expect(!SFBufSQLite.discardPool(for: config), "in use by an open database")
    c.close()
    #expect(SFBufSQLite.discardPool(for: config))
    #expect(SFBufSQLite.pool(for: config) == nil)
    let d = try Connection(sfbufURI(db, config))
    let second = SFBufSQLite.pool(for: config)
    #expect(second != nil && second !== first && second!.stats.misses == 0)
    d.close()
  }

  @Test("admission: pages asked for once are refused to xRead, pages asked for often are mapped")
  func admission() throws {
    let dir = ScratchDir("sfbuf-sqlite-admit")
    defer { dir.remove() }
    let db = dir.file("a.db")
    try Fixture.build(db, orders: 60_000)
    let scan = "SELECT sum(amount), count(*) FROM orders"
    let reference = try Fixture.reference(db, sql: scan + ";\n")
    let lookup = "SELECT amount FROM orders WHERE id = 31337"
    // Windows of their own (sizes no other test uses), so the counters are these files' only.
    let admitting = SFBufSQLiteConfig.window(72, admit: 6)
    let eager = SFBufSQLiteConfig.window(72, admit: 1)
    for config in [admitting, eager] {
      // One scan: every leaf of the table is asked for about once.
      var before = SFBufSQLite.closedFileCounters(for: config)
      var c = try Connection(sfbufURI(db, config))
      try c.run(mapAll)
      #expect(try c.run(scan + ";\n") == reference, "\(config): same answer")
      c.close()
      let scanned = countersSince(before, config)
      // Then one row again and again: the same few pages (root, interior, leaf) each time.
      before = SFBufSQLite.closedFileCounters(for: config)
      c = try Connection(sfbufURI(db, config))
      try c.run(mapAll)
      var answers = Set<String>()
      for _ in 0..<20 { answers.insert(try c.value(lookup)) }
      c.close()
      let looked = countersSince(before, config)
      #expect(answers.count == 1, "\(config): the same row every time: \(answers)")
      for n in [scanned, looked] {
        #expect(n.unfetches == n.mapped, "\(config): every mapping given back: \(n.line)")
      }
      #expect(slotsInUse(config) == 0)
      if config.admit == 1 {
        #expect(scanned.cold == 0 && looked.cold == 0, "admit=1 refuses nothing")
        #expect(scanned.mapped > 100, "admit=1 maps the scanned leaves: \(scanned.line)")
      } else {
        // Cold: the scan's leaves went to xRead; nearly none was mapped.
        #expect(scanned.cold > 100, "the scan's pages were refused: \(scanned.line)")
        #expect(scanned.mapped * 10 < scanned.cold, "few scanned pages mapped: \(scanned.line)")
        // Hot: from the 6th lookup on, the lookup's pages are mapped.
        #expect(looked.mapped >= 15, "the lookup's pages were admitted: \(looked.line)")
        #expect(looked.cold <= 5 * 6, "refused only until hot: \(looked.line)")
      }
    }
  }

  @Test("bad URI parameters are refused with a message naming them; nothing is mapped")
  func badParameters() throws {
    let dir = ScratchDir("sfbuf-sqlite-bad")
    defer { dir.remove() }
    let db = dir.file("b.db")
    try Fixture.build(db, orders: 1000)
    let cases = [
      ("nsfbufs=abc", "nsfbufs=abc"), ("nsfbufs=0", "nsfbufs=0"),
      ("nsfbufs=40000", "nsfbufs=40000"), ("nsfbufs=-3", "nsfbufs=-3"),
      ("direct=2", "direct=2"), ("policy=lru", "policy=lru"),
      ("direct=1&nsfbufs=8", "nsfbufs=8 applies to a window"),
      ("direct=1&policy=batched", "policy=batched applies to a window"),
      ("admit=0", "admit=0"), ("admit=256", "admit=256"), ("admit=often", "admit=often"),
      ("direct=1&admit=2", "admit=2 applies to a window"),
    ]
    for (params, expected) in cases {
      #expect(throws: SQLiteError.self, "\(params)") {
        try Connection("file:\(db)?vfs=sfbuf&\(params)")
      }
      do {
        _ = try Connection("file:\(db)?vfs=sfbuf&\(params)")
      } catch {
        #expect("\(error)".contains(expected), "\(params): \(error)")
        #expect("\(error)".contains("sfbuf:"), "\(params): \(error)")
      }
    }
    // ATTACH gets no message of ours (SQLite has no place for it) but is refused all the same.
    let c = try Connection("file:\(db)")
    #expect(throws: SQLiteError.self) {
      try c.run("ATTACH 'file:\(db)?vfs=sfbuf&nsfbufs=x' AS x; SELECT count(*) FROM x.orders")
    }
    c.close()
    #expect(SFBufSQLite.pool(for: .window(40000)) == nil)
  }
}
