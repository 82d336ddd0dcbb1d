// Writes mixed with reads: this connection's own, another connection's in this process,
// another process's; rollback journal and WAL; truncation by VACUUM and by checkpoints.

import CSQLite3
import Glibc
import SFBufTestSupport
import Testing

@testable import SFBufSQLite

/// Queries whose answers change with every kind of write below.
let checks = [
  "SELECT count(*), sum(amount), sum(length(note)), max(id) FROM orders",
  "SELECT id, amount, note FROM orders WHERE customer = 77 ORDER BY id",
  "SELECT day, count(*) FROM orders WHERE day BETWEEN 10 AND 20 GROUP BY day",
  "SELECT count(*), sum(balance) FROM customers",
]

/// Expects `a` (mapping through sf_buf) and `b` (the default VFS) to agree on every check.
func expectSame(_ a: Connection, _ b: Connection, _ what: String) throws {
  for q in checks {
    let x = try a.run(q)
    #expect(!x.isEmpty, "\(what): \(q)")
    #expect(x == (try b.run(q)), "\(what): \(q)")
  }
}

@Suite("SQLite writes and reads through sf_buf stay coherent", .serialized)
struct CoherenceTests {
  @Test(
    "UPDATE, INSERT, DELETE, VACUUM by this connection and by another agree with the default VFS",
    arguments: [SFBufSQLiteConfig.window(16), .window(16, batched: true), .direct])
  func writesAndVacuum(config: SFBufSQLiteConfig) throws {
    let dir = ScratchDir("sfbuf-sqlite-rw")
    defer { dir.remove() }
    let db = dir.file("rw.db")
    try Fixture.build(db, orders: 60_000)
    let before = SFBufSQLite.closedFileCounters(for: config)
    let m = try Connection(sfbufURI(db, config))
    let r = try Connection("file:\(db)")
    try m.run(mapAll)
    try expectSame(m, r, "start")

    try m.run("UPDATE orders SET amount = amount + 1 WHERE customer % 7 = 0")
    try expectSame(m, r, "UPDATE through sf_buf")
    try r.run("UPDATE orders SET note = upper(note) WHERE id % 11 = 0")
    try expectSame(m, r, "UPDATE by another connection")

    let small = fileSize(db)
    try m.run(
      """
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<30000)
      INSERT INTO orders(customer, amount, day, note)
        SELECT x % 500, x, x % 365, printf('%.80c', char(65 + x % 26)) FROM c
      """)
    #expect(fileSize(db) > small, "the file grew")
    try expectSame(m, r, "INSERT (growth) through sf_buf")
    try r.run("INSERT INTO customers(name, region, balance) VALUES ('late', 3, 1.5)")
    try expectSame(m, r, "INSERT by another connection")

    try m.run("DELETE FROM orders WHERE id % 3 = 0")
    try expectSame(m, r, "DELETE through sf_buf")
    let big = fileSize(db)
    try m.run("VACUUM")
    #expect(fileSize(db) < big, "VACUUM truncated the file")
    try expectSame(m, r, "VACUUM through sf_buf")
    try r.run("DELETE FROM orders WHERE id > 40000; VACUUM")
    try expectSame(m, r, "DELETE and VACUUM (truncation) by another connection")
    try m.run("INSERT INTO orders(customer, amount, day, note) VALUES (77, 5, 15, 'after')")
    try expectSame(m, r, "growth after truncation")

    #expect(try m.value("PRAGMA integrity_check") == "ok")
    m.close()
    r.close()
    let n = countersSince(before, config)
    #expect(n.mapped > 100, "\(n.line)")
    #expect(n.unmapAll > 0, "another connection's writes made SQLite drop the mappings")
    if config.nsfbufs != nil { #expect(slotsInUse(config) == 0) }
  }

  @Test("WAL mode: reads through the window across commits and a truncating checkpoint")
  func walCheckpoint() throws {
    let dir = ScratchDir("sfbuf-sqlite-wal")
    defer { dir.remove() }
    let db = dir.file("w.db")
    try Fixture.build(db, orders: 60_000)
    let config = SFBufSQLiteConfig.window(20)
    let before = SFBufSQLite.closedFileCounters(for: config)
    let m = try Connection(sfbufURI(db, config))
    let r = try Connection("file:\(db)")
    #expect(try m.value("PRAGMA journal_mode=WAL") == "wal")
    try m.run(mapAll)
    try expectSame(m, r, "start")
    try m.run("UPDATE orders SET amount = amount * 2 WHERE day < 100")
    try expectSame(m, r, "UPDATE in the WAL")
    try r.run("INSERT INTO orders(customer, amount, day, note) VALUES (77, 1, 12, 'wal')")
    try expectSame(m, r, "INSERT by another connection, in the WAL")
    #expect(try r.value("PRAGMA wal_checkpoint(PASSIVE)").hasPrefix("0|"))
    try expectSame(m, r, "after a checkpoint copied the WAL into the database")

    let big = fileSize(db)
    try m.run("DELETE FROM orders WHERE id > 20000")
    try m.run("VACUUM")
    try expectSame(m, r, "VACUUM in the WAL (the database file not yet shorter)")
    #expect(try m.value("PRAGMA wal_checkpoint(TRUNCATE)") == "0|0|0")
    #expect(fileSize(db) < big, "the checkpoint truncated the database file")
    #expect(fileSize(db + "-wal") == 0, "and the WAL")
    try expectSame(m, r, "after the truncating checkpoint")
    try r.run("UPDATE orders SET day = day + 1 WHERE id < 500")
    #expect(try r.value("PRAGMA wal_checkpoint(TRUNCATE)") == "0|0|0")
    try expectSame(m, r, "after another connection's truncating checkpoint")
    #expect(try m.value("PRAGMA integrity_check") == "ok")
    m.close()
    r.close()
    let n = countersSince(before, config)
    #expect(n.mapped > 100, "\(n.line)")
    #expect(slotsInUse(config) == 0)
  }

  @Test(
    "a second process writes (transfers, inserts, VACUUM) while this one reads through a 12-slot window",
    arguments: ["DELETE", "WAL"])
  func secondProcessWriter(journal: String) throws {
    let dir = ScratchDir("sfbuf-sqlite-2p")
    defer { dir.remove() }
    let db = dir.file("p.db")
    // 1000 accounts of 100 (their sum never changes) and a log whose rows carry a check.
    let setup = db + ".setup.sql"
    writeFile(
      setup,
      """
      PRAGMA journal_mode=\(journal);
      CREATE TABLE accounts(id INTEGER PRIMARY KEY, v INTEGER);
      CREATE TABLE log(id INTEGER PRIMARY KEY, payload TEXT, len INTEGER);
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000)
      INSERT INTO accounts SELECT x, 100 FROM c;
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<20000)
      INSERT INTO log(payload, len) SELECT printf('%.*c', 50 + x % 400, 'p'), 50 + x % 400 FROM c;

      """)
    try Fixture.expectSuccess(try Shell.run([try Shell.sqlite3, db], stdin: setup), "setup")
    var script = ".timeout 20000\n"
    for i in 0..<400 {
      let a = 1 + (i * 7919) % 1000
      let b = 1 + (i * 104_729 + 13) % 1000
      script += """
        BEGIN IMMEDIATE;
        UPDATE accounts SET v = v - \(i % 50) WHERE id = \(a);
        UPDATE accounts SET v = v + \(i % 50) WHERE id = \(b);
        INSERT INTO log(payload, len) SELECT printf('%.*c', \(1 + i * 7), 'w'), \(1 + i * 7);
        COMMIT;

        """
      if i == 150 { script += "DELETE FROM log WHERE id % 2 = 0 AND id <= 20000; VACUUM;\n" }
      if i == 300 && journal == "WAL" { script += "PRAGMA wal_checkpoint(TRUNCATE);\n" }
    }
    writeFile(db + ".writer.sql", script)

    // admit=1: every page read is mapped, so the mappings themselves race the writer.
    let config = SFBufSQLiteConfig.window(12, admit: 1)
    let before = SFBufSQLite.closedFileCounters(for: config)
    let m = try Connection(sfbufURI(db, config))
    try m.run(mapAll)
    let writer = TestThread {
      let r = try? Shell.run([try! Shell.sqlite3, db], stdin: db + ".writer.sql", timeout: 120)
      #expect(r?.status == 0 && r?.stderr == "", "the writer: \(String(describing: r))")
    }
    var reads = 0
    let deadline = monotonic() + 150
    while !writer.isDone && monotonic() < deadline {
      #expect(try m.run("SELECT sum(v), count(*) FROM accounts") == "100000|1000\n")
      let bad = try m.run(
        "SELECT id, length(payload), len FROM log WHERE length(payload) != len LIMIT 3")
      #expect(bad == "", "torn: \(bad)")
      reads += 1
    }
    writer.join(within: 60, "for the writing sqlite3 process (bounded to 120 s itself) to end")
    #expect(monotonic() < deadline, "the writer finished within 150 s")
    #expect(reads > 0)
    #expect(try m.value("SELECT count(*) FROM log WHERE payload LIKE 'w%'") == "400")
    #expect(try m.value("PRAGMA integrity_check") == "ok")
    m.close()
    let n = countersSince(before, config)
    #expect(n.mapped > 0, "\(n.line)")
    #expect(n.unmapAll > 0, "the other process's commits made SQLite drop the mappings")
    #expect(slotsInUse(config) == 0)
  }

  @Test("two connections on two threads share one pool: hits across them, correct answers")
  func sharedPool() throws {
    let dir = ScratchDir("sfbuf-sqlite-shared")
    defer { dir.remove() }
    let db = dir.file("s.db")
    try Fixture.build(db, orders: 60_000)
    let reference = try Fixture.reference(db)
    let config = SFBufSQLiteConfig.window(96)
    let failures = Shared(0)
    let threads = (0..<2).map { _ in
      TestThread {
        guard let c = try? Connection(sfbufURI(db, config)) else {
          failures.with { $0 += 1 }
          return
        }
        _ = try? c.run(mapAll)
        for _ in 0..<3 where (try? c.run(Fixture.suite)) != reference {
          failures.with { $0 += 1 }
        }
        c.close()
      }
    }
    TestThread.join(threads, within: 120, "for the two connections' threads to run the suite")
    #expect(failures.get == 0, "every run on both connections matched the default VFS")
    let pool = SFBufSQLite.pool(for: config)!
    #expect(pool.stats.hits > 0)
    #expect(pool.stats.nsfbufsused == 0)
  }
}
