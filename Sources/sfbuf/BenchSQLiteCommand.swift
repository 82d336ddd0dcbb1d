import ArgumentParser
import CSFBufSQLite
import CSQLite3
import Glibc
import SFBufHost
import SFBufSQLite

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// `sfbuf bench sqlite`: SQLite reading a database many times larger than the window, five
/// ways, interleaved, in this process (the system's libsqlite3 with the extension linked in).
struct BenchSQLiteCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sqlite",
    abstract: "SQLite through the sfbuf VFS against its own xRead and mmap.",
    discussion: """
      Ways: the default VFS with mmap_size=0 (every page copied by xRead into SQLite's page \
      cache), the default VFS with the whole file mapped (SQLite's own mmap), the sfbuf VFS \
      with windows of 64 and 512 slots (default admission, admit=16), the window of 512 with \
      admit=1 (every page mapped at its first fetch), and the sfbuf VFS's direct map. Every way uses \
      SQLite's default page cache (cache_size -2000, 2 MB).

      Suites: (1) hot point lookups through an index, keys drawn from Zipf(0.99) and \
      scattered over the table; (2) uniform point lookups over the whole table; (3) scans and \
      aggregates (a table scan, an index range scan, a rowid range, a join, ORDER BY with \
      LIMIT). Each run measures every way on every suite, in a rotated order, after a \
      warm-up of a tenth of the lookups; the table shows the medians of the runs.

      Per way and suite: milliseconds (median, min, max), the window's hit rate and mmap \
      calls per query, xFetch calls answered with NULL (SQLite then reads the page with \
      xRead), and ratios to mmap_size=0 and to SQLite's own mapping (below 1: faster). \
      Then the sweep: suite 1 through windows of 64 to 32768 slots, beside SQLite's \
      mapping.

      --json prints one object (keys sorted): {"schema": "sfbuf-bench-sqlite/1", "config": \
      {...}, "suites": [{"suite", "queries", "ways": [{"way", "msMedian", "msMin", "msMax", \
      "msRuns", "hitRate", "mapCallsPerQuery", "fallbacks", "vsMmapOff", "vsMmapWhole"}]}], \
      "sweep": [{"nsfbufs", "msMedian", "hitRate", "mapCallsPerQuery", "fallbacks", \
      "vsMmapWhole"}]}; null where a figure does not apply (the default VFS has no window).
      """
  )

  @Flag(help: "A short run: fewer lookups, runs and sweep points (about a minute).")
  var quick = false
  @Flag(help: "Print JSON instead of the tables.")
  var json = false
  @Option(
    help: ArgumentHelp(
      "Point lookups per suite (default 300000, --quick 30000).", valueName: "count"))
  var lookups: Int?
  @Option(help: ArgumentHelp("Runs (default 5, --quick 2).", valueName: "count"))
  var runs: Int?
  @Option(
    help: ArgumentHelp(
      "Rows of the orders table (at the default, a database of about 160 MB).", valueName: "count"))
  var rows = 1_100_000
  @Option(
    help: ArgumentHelp("Use (or create and keep) the database at this path.", valueName: "path"))
  var db: String?
  @Flag(help: "Skip the sweep of window sizes.")
  var noSweep = false
  @Option(
    name: .customLong("sweep"),
    help: ArgumentHelp("Only these window sizes in the sweep (repeatable).", valueName: "slots"))
  var sweepOnly: [Int] = []
  @Flag(help: "Skip the three suites (with --sweep: measure only the sweep).")
  var noSuites = false
  @Option(
    help: ArgumentHelp("Also a window of 512 with this admit=N (repeatable).", valueName: "n"))
  var admit: [Int] = []

  func validate() throws {
    if let lookups, lookups < 100 { throw ValidationError("--lookups must be at least 100") }
    if let runs, !(1...50).contains(runs) { throw ValidationError("--runs must be in 1...50") }
    if rows < 10_000 { throw ValidationError("--rows must be at least 10000") }
    for n in admit where !(1...SFBufSQLiteConfig.maxAdmit).contains(n) {
      throw ValidationError("--admit \(n): admit is 1 to \(SFBufSQLiteConfig.maxAdmit)")
    }
    for n in sweepOnly where !(1...SFBufPool.maxSlots).contains(n) {
      throw ValidationError("--sweep \(n): a window has 1 to \(SFBufPool.maxSlots) slots")
    }
  }

  func run() throws {
    SQLiteBench.register()
    let path = db ?? "/var/tmp/sfbuf-bench-sqlite-\(getpid()).db"
    defer { if db == nil { unlink(path) } }
    if access(path, R_OK) != 0 {
      if !json { print("generating \(path) (\(rows) orders)...") }
      try SQLiteBench.generate(path, rows: rows)
    }
    let bench = try SQLiteBench(
      path: path, lookups: lookups ?? (quick ? 30_000 : 300_000),
      runs: runs ?? (quick ? 2 : 5), verbose: !json)
    let suites = noSuites ? [] : try bench.measureSuites(admits: admit)
    let sweepSizes =
      !sweepOnly.isEmpty
      ? sweepOnly
      : quick ? [64, 512, 4096, 32768] : [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    let sweep = noSweep ? [] : try bench.measureSweep(sweepSizes, runs: runs ?? (quick ? 1 : 3))
    let report = SQLiteBenchReport(config: bench.config, suites: suites, sweep: sweep)
    if json {
      let enc = JSONEncoder()
      enc.outputFormatting = [.sortedKeys]
      print(String(decoding: try enc.encode(report), as: UTF8.self))
    } else {
      report.printTables()
    }
  }
}

// MARK: the report

struct SQLiteBenchConfig: Codable {
  var databaseBytes: Int
  var pageSize: Int
  var rows: Int
  var lookups: Int
  var runs: Int
  var zipfSkew: Double
  var cacheSize: Int
}

struct SQLiteBenchWay: Codable {
  var way: String
  var msMedian: Double
  var msMin: Double
  var msMax: Double
  var msRuns: [Double]
  var hitRate: Double?
  var mapCallsPerQuery: Double?
  var fallbacks: Int?
  var vsMmapOff: Double?
  var vsMmapWhole: Double?

  func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(way, forKey: .way)
    try c.encode(msMedian, forKey: .msMedian)
    try c.encode(msMin, forKey: .msMin)
    try c.encode(msMax, forKey: .msMax)
    try c.encode(msRuns, forKey: .msRuns)
    try c.encode(hitRate, forKey: .hitRate)
    try c.encode(mapCallsPerQuery, forKey: .mapCallsPerQuery)
    try c.encode(fallbacks, forKey: .fallbacks)
    try c.encode(vsMmapOff, forKey: .vsMmapOff)
    try c.encode(vsMmapWhole, forKey: .vsMmapWhole)
  }
}

struct SQLiteBenchSuite: Codable {
  var suite: String
  var queries: Int
  var ways: [SQLiteBenchWay]
}

struct SQLiteBenchSweepPoint: Codable {
  var nsfbufs: Int?
  var way: String
  var msMedian: Double
  var hitRate: Double?
  var mapCallsPerQuery: Double?
  var fallbacks: Int?
  var vsMmapWhole: Double?

  func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(nsfbufs, forKey: .nsfbufs)
    try c.encode(way, forKey: .way)
    try c.encode(msMedian, forKey: .msMedian)
    try c.encode(hitRate, forKey: .hitRate)
    try c.encode(mapCallsPerQuery, forKey: .mapCallsPerQuery)
    try c.encode(fallbacks, forKey: .fallbacks)
    try c.encode(vsMmapWhole, forKey: .vsMmapWhole)
  }
}

struct SQLiteBenchReport: Codable {
  var schema = "sfbuf-bench-sqlite/1"
  var config: SQLiteBenchConfig
  var suites: [SQLiteBenchSuite]
  var sweep: [SQLiteBenchSweepPoint]

  func printTables() {
    let c = config
    print(
      "database \(c.databaseBytes / 1_000_000) MB, page \(c.pageSize) bytes, \(c.rows) orders; "
        + "\(c.lookups) lookups per lookup suite; medians of \(c.runs) runs; cache_size "
        + "\(c.cacheSize)")
    for s in suites {
      print("\nsuite \(s.suite) (\(s.queries) queries)")
      var t = Table([
        "way", "ms", "min", "max", "hit rate", "mmap/q", "xRead fb", "vs mmap=0", "vs mmap",
      ])
      for w in s.ways {
        t.add(
          [w.way, fmt(w.msMedian, 0), fmt(w.msMin, 0), fmt(w.msMax, 0)]
            + Self.windowCells(w.hitRate, w.mapCallsPerQuery, w.fallbacks)
            + [fmt(w.vsMmapOff, 2, missing: "-"), fmt(w.vsMmapWhole, 2, missing: "-")])
      }
      t.print()
    }
    if !sweep.isEmpty {
      print("\nsweep: suite 1 (Zipf 0.99 lookups) by window size")
      var t = Table(["way", "ms", "hit rate", "mmap/q", "xRead fb", "vs mmap"])
      for p in sweep {
        t.add(
          [p.way, fmt(p.msMedian, 0)]
            + Self.windowCells(p.hitRate, p.mapCallsPerQuery, p.fallbacks)
            + [fmt(p.vsMmapWhole, 2, missing: "-")])
      }
      t.print()
    }
  }

  /// The window's figures of a row, "-" where they do not apply (the default VFS).
  static func windowCells(_ hitRate: Double?, _ mapCalls: Double?, _ fallbacks: Int?)
    -> [String]
  {
    [
      hitRate.map { fmt($0 * 100, 1) + "%" } ?? "-", fmt(mapCalls, 2, missing: "-"),
      fallbacks.map { "\($0)" } ?? "-",
    ]
  }
}

// MARK: the benchmark

/// One way of reading the database.
struct SQLiteWay {
  let name: String
  /// The sfbuf configuration, or nil for the default VFS.
  let config: SFBufSQLiteConfig?
  let mmapSize: Int

  var uri: String { "" }

  static let mmapOff = SQLiteWay(name: "default, mmap_size=0", config: nil, mmapSize: 0)
  static let mmapWhole = SQLiteWay(
    name: "default, whole file mapped", config: nil, mmapSize: 2_000_000_000)
  static func window(_ n: Int, admit: Int = SFBufSQLiteConfig.defaultAdmit) -> SQLiteWay {
    let suffix = admit == SFBufSQLiteConfig.defaultAdmit ? "" : ", admit=\(admit)"
    return SQLiteWay(
      name: "sfbuf, window of \(n)" + suffix, config: .window(n, admit: admit),
      mmapSize: 2_000_000_000)
  }
  static let direct = SQLiteWay(
    name: "sfbuf, direct map", config: .direct, mmapSize: 2_000_000_000)
}

enum SQLiteSuite: String, CaseIterable {
  case hot = "1: hot point lookups, Zipf 0.99"
  case uniform = "2: uniform point lookups"
  case scans = "3: scans and aggregates"
}

/// What one measurement of one way on one suite gave.
struct SQLiteSample {
  var ms: Double
  var hits = 0
  var misses = 0
  var mapCalls = 0
  var fallbacks = 0
  var queries = 0
}

final class SQLiteBench {
  let path: String
  let lookups: Int
  let runs: Int
  let verbose: Bool
  let rows: Int
  let pageSize: Int
  let hotKeys: [Int64]
  let uniformKeys: [Int64]

  static let scanQueries = [
    "SELECT count(*), sum(amount) FROM orders",
    "SELECT day % 7, count(*), sum(amount) FROM orders WHERE day < 1200 GROUP BY 1",
    "SELECT max(length(note)), sum(amount) FROM orders WHERE id BETWEEN 200000 AND 500000",
    "SELECT c.region, sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer "
      + "WHERE o.id < 150000 GROUP BY c.region",
    "SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 10",
  ]
  static let lookup = "SELECT amount, length(note) FROM orders WHERE k = ?1"

  /// Registers the extension with this process's SQLite (an automatic extension), and the
  /// VFS, by opening one connection.
  static func register() {
    let entry:
      @convention(c) (
        OpaquePointer?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, OpaquePointer?
      ) -> Int32 = { db, err, api in sfbufsqlite_connection_init(db, err, api) }
    sqlite3_auto_extension(unsafeBitCast(entry, to: (@convention(c) () -> Void).self))
    var db: OpaquePointer?
    sqlite3_open(":memory:", &db)
    sqlite3_close(db)
  }

  /// The benchmark's database: the tests' tables, plus a column `k` (a permutation of the
  /// row numbers) with a unique index, through which the lookups go.
  static func generate(_ path: String, rows: Int) throws {
    let customers = rows / 10
    let db = try SQLiteConnection("file:\(path)")
    try db.exec(
      """
      PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-131072;
      CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region INTEGER, balance REAL);
      CREATE TABLE orders(id INTEGER PRIMARY KEY, k INTEGER, customer INTEGER,
        amount INTEGER, day INTEGER, note TEXT);
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<\(customers))
      INSERT INTO customers SELECT x, 'customer-' || ((x*7919) % 100003), (x*31) % 50,
        ((x*2654435761) % 1000003) / 100.0 FROM c;
      WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<\(rows))
      INSERT INTO orders SELECT x, ((x - 1) * 2654435761) % \(rows),
        1 + (x*2654435761) % \(customers), (x*40503) % 10007, (x*13) % 3650,
        printf('%.60c%d', char(97 + x % 26), x) FROM c;
      CREATE UNIQUE INDEX orders_k ON orders(k);
      CREATE INDEX orders_customer ON orders(customer);
      CREATE INDEX orders_day ON orders(day, amount);
      CREATE INDEX customers_region ON customers(region, name);
      PRAGMA journal_mode=DELETE;
      """)
    db.close()
  }

  var config: SQLiteBenchConfig {
    SQLiteBenchConfig(
      databaseBytes: fileBytes(path), pageSize: pageSize, rows: rows, lookups: lookups,
      runs: runs, zipfSkew: 0.99, cacheSize: -2000)
  }

  init(path: String, lookups: Int, runs: Int, verbose: Bool) throws {
    self.path = path
    self.lookups = lookups
    self.runs = runs
    self.verbose = verbose
    let db = try SQLiteConnection("file:\(path)")
    rows = Int(try db.scalar("SELECT count(*) FROM orders"))
    pageSize = Int(try db.scalar("PRAGMA page_size"))
    db.close()
    // Hot keys: Zipf ranks scattered over the key space (rank r is key r * 7919 mod rows),
    // as hot rows of an OLTP table lie all over its file.
    var rng = FastRandom(seed: 12_345)
    let zipf = Zipf(n: rows, s: 0.99)
    let n = rows
    var g = 7919
    while gcd(g, n) != 1 { g += 2 }
    hotKeys = (0..<lookups).map { _ in Int64(zipf.draw(&rng) * g % n) }
    uniformKeys = (0..<lookups).map { _ in Int64(Int(rng.next() % UInt64(n))) }
  }

  /// One measurement: opens a connection the way says, warms up with a tenth of the work,
  /// then times the suite.
  func sample(_ way: SQLiteWay, _ suite: SQLiteSuite) throws -> SQLiteSample {
    let uri =
      way.config.map { "file:\(path)?vfs=sfbuf&\($0)" } ?? "file:\(path)"
    let before = way.config.map { SFBufSQLite.closedFileCounters(for: $0) }
    let db = try SQLiteConnection(uri)
    try db.exec("PRAGMA mmap_size=\(way.mmapSize)")
    var s = SQLiteSample(ms: 0)
    switch suite {
    case .hot, .uniform:
      let keys = suite == .hot ? hotKeys : uniformKeys
      let stmt = try db.prepare(SQLiteBench.lookup)
      defer { sqlite3_finalize(stmt) }
      var sink = 0
      for k in keys.prefix(keys.count / 10) { sink &+= try db.lookup(stmt, k) }
      let pool = way.config.flatMap { SFBufSQLite.pool(for: $0) }
      let s0 = pool?.stats
      let m0 = pool?.mapCalls ?? 0
      let t0 = now()
      for k in keys { sink &+= try db.lookup(stmt, k) }
      s.ms = (now() - t0) * 1000
      if let pool, let s0 {
        let s1 = pool.stats
        s.hits = s1.hits - s0.hits
        s.misses = s1.misses - s0.misses
        s.mapCalls = pool.mapCalls - m0
      }
      s.queries = keys.count
      if sink == 42 { print("") }  // keep the results alive
    case .scans:
      let pool = way.config.flatMap { SFBufSQLite.pool(for: $0) }
      let s0 = pool?.stats
      let m0 = pool?.mapCalls ?? 0
      let t0 = now()
      for q in SQLiteBench.scanQueries { _ = try db.scalar(q) }
      s.ms = (now() - t0) * 1000
      if let pool, let s0 {
        let s1 = pool.stats
        s.hits = s1.hits - s0.hits
        s.misses = s1.misses - s0.misses
        s.mapCalls = pool.mapCalls - m0
      }
      s.queries = SQLiteBench.scanQueries.count
    }
    db.close()
    if let config = way.config, let before {
      let after = SFBufSQLite.closedFileCounters(for: config)
      s.fallbacks = after.fellBack - before.fellBack
    }
    return s
  }

  static let ways: [SQLiteWay] = [
    .mmapOff, .mmapWhole, .window(64), .window(512), .window(512, admit: 1), .direct,
  ]

  /// The ways, with a window of 512 for each of `admits` after the default ones.
  func measureSuites(admits: [Int] = []) throws -> [SQLiteBenchSuite] {
    let ways = SQLiteBench.ways + admits.map { SQLiteWay.window(512, admit: $0) }
    var samples = [[[SQLiteSample]]](
      repeating: [[SQLiteSample]](repeating: [], count: ways.count),
      count: SQLiteSuite.allCases.count)
    for r in 0..<runs {
      for (si, suite) in SQLiteSuite.allCases.enumerated() {
        for j in 0..<ways.count {
          let wi = (j + r) % ways.count
          let s = try sample(ways[wi], suite)
          samples[si][wi].append(s)
          if verbose {
            print("run \(r + 1)/\(runs) suite \(si + 1) \(ways[wi].name): \(fmt(s.ms, 0)) ms")
          }
        }
      }
    }
    return SQLiteSuite.allCases.enumerated().map { si, suite in
      let med = ways.indices.map { median(samples[si][$0].map(\.ms)) }
      return SQLiteBenchSuite(
        suite: suite.rawValue, queries: samples[si][0][0].queries,
        ways: ways.indices.map { wi in
          let ss = samples[si][wi]
          let ms = ss.map(\.ms)
          let windowed = ways[wi].config?.nsfbufs != nil
          let hits = ss.map(\.hits).reduce(0, +)
          let misses = ss.map(\.misses).reduce(0, +)
          let queries = ss.map(\.queries).reduce(0, +)
          return SQLiteBenchWay(
            way: ways[wi].name, msMedian: med[wi], msMin: ms.min()!, msMax: ms.max()!,
            msRuns: ms,
            hitRate: windowed && hits + misses > 0 ? Double(hits) / Double(hits + misses) : nil,
            mapCallsPerQuery: windowed
              ? Double(ss.map(\.mapCalls).reduce(0, +)) / Double(queries) : nil,
            fallbacks: ways[wi].config != nil ? ss.map(\.fallbacks).reduce(0, +) / ss.count : nil,
            vsMmapOff: med[wi] / med[0], vsMmapWhole: med[wi] / med[1])
        })
    }
  }

  /// Suite 1 through windows of each size, with SQLite's own mapping and mmap_size=0
  /// measured in the same rounds. Each window's pool is discarded after its samples, so
  /// that the largest windows fit under the host's limit of mappings.
  func measureSweep(_ sizes: [Int], runs: Int) throws -> [SQLiteBenchSweepPoint] {
    var whole: [Double] = []
    var off: [Double] = []
    var points: [SQLiteBenchSweepPoint] = []
    for n in sizes {
      let way = SQLiteWay.window(n)
      var ss: [SQLiteSample] = []
      for _ in 0..<runs {
        whole.append(try sample(.mmapWhole, .hot).ms)
        ss.append(try sample(way, .hot))
        if verbose { print("sweep \(n): \(fmt(ss.last!.ms, 0)) ms") }
      }
      SFBufSQLite.discardPool(for: way.config!)
      let hits = ss.map(\.hits).reduce(0, +)
      let misses = ss.map(\.misses).reduce(0, +)
      let queries = ss.map(\.queries).reduce(0, +)
      points.append(
        SQLiteBenchSweepPoint(
          nsfbufs: n, way: way.name, msMedian: median(ss.map(\.ms)),
          hitRate: hits + misses > 0 ? Double(hits) / Double(hits + misses) : nil,
          mapCallsPerQuery: Double(ss.map(\.mapCalls).reduce(0, +)) / Double(queries),
          fallbacks: ss.map(\.fallbacks).reduce(0, +) / ss.count, vsMmapWhole: nil))
    }
    for _ in 0..<runs { off.append(try sample(.mmapOff, .hot).ms) }
    let w = median(whole)
    for i in points.indices { points[i].vsMmapWhole = points[i].msMedian / w }
    points.append(
      SQLiteBenchSweepPoint(
        nsfbufs: nil, way: SQLiteWay.mmapWhole.name, msMedian: w, hitRate: nil,
        mapCallsPerQuery: nil, fallbacks: nil, vsMmapWhole: 1))
    points.append(
      SQLiteBenchSweepPoint(
        nsfbufs: nil, way: SQLiteWay.mmapOff.name, msMedian: median(off), hitRate: nil,
        mapCallsPerQuery: nil, fallbacks: nil, vsMmapWhole: median(off) / w))
    return points
  }
}

private func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

private func fileBytes(_ path: String) -> Int {
  var st = stat()
  return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

// MARK: a minimal SQLite connection

struct SQLiteBenchError: Error, CustomStringConvertible {
  let description: String
}

/// One connection of the system's SQLite.
final class SQLiteConnection {
  private var db: OpaquePointer?

  init(_ uri: String) throws {
    let rc = sqlite3_open_v2(
      uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, nil)
    guard rc == SQLITE_OK else {
      let msg = String(cString: sqlite3_errmsg(db))
      sqlite3_close_v2(db)
      throw SQLiteBenchError(description: "cannot open \(uri): \(msg)")
    }
  }

  deinit { close() }

  func close() {
    if let db { sqlite3_close_v2(db) }
    db = nil
  }

  private var error: SQLiteBenchError {
    SQLiteBenchError(description: String(cString: sqlite3_errmsg(db)))
  }

  func exec(_ sql: String) throws {
    var msg: UnsafeMutablePointer<CChar>?
    if sqlite3_exec(db, sql, nil, nil, &msg) != SQLITE_OK {
      let text = msg.map { String(cString: $0) } ?? "error"
      sqlite3_free(msg)
      throw SQLiteBenchError(description: text)
    }
  }

  func prepare(_ sql: String) throws -> OpaquePointer {
    var stmt: OpaquePointer?
    guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else { throw error }
    return stmt
  }

  /// The first column of the first row, as an integer; every row is stepped through.
  func scalar(_ sql: String) throws -> Int64 {
    let stmt = try prepare(sql)
    defer { sqlite3_finalize(stmt) }
    var v: Int64 = 0
    var first = true
    while true {
      let rc = sqlite3_step(stmt)
      if rc == SQLITE_DONE { break }
      guard rc == SQLITE_ROW else { throw error }
      if first { v = sqlite3_column_int64(stmt, 0) }
      first = false
    }
    return v
  }

  /// One point lookup: binds `key`, steps, and returns the sum of the row's two columns.
  @inline(__always)
  func lookup(_ stmt: OpaquePointer, _ key: Int64) throws -> Int {
    sqlite3_bind_int64(stmt, 1, key)
    defer { sqlite3_reset(stmt) }
    var v = 0
    while true {
      let rc = sqlite3_step(stmt)
      if rc == SQLITE_DONE { break }
      guard rc == SQLITE_ROW else { throw error }
      v &+= Int(sqlite3_column_int64(stmt, 0)) &+ Int(sqlite3_column_int64(stmt, 1))
    }
    return v
  }
}
