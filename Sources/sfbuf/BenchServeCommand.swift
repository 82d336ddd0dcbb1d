import ArgumentParser
import Foundation
import Glibc
import SFBufHost
import SFSendfile
import SystemPackage

/// `sfbuf bench serve`: wrk against `sfbuf serve` (a window and the direct map), nginx from
/// the distribution and Hummingbird 2, interleaved in one run, on the same files with the
/// same number of worker threads. Prints medians of requests per second (small files) and
/// GB/s (a large file), with the ratios, as a table or one JSON object.
///
/// The JSON document (`--json`, keys sorted, camelCase): `schema` (`sfbuf-bench-serve/1`),
/// `seconds`, `rounds`, `threads`, `nsfbufs`, `servers` (names, in the order measured),
/// `cells` (an array of objects with `file`, `bytes`, `connections`, `unit`
/// (`requestsPerSecond` or `gbPerSecond`), `results`: per server, in the order of `servers`,
/// `server`, `median`, `min`, `max`, `runs` and `errors`, wrk's socket errors and non-2xx
/// answers summed over the runs, and `ratios`: `windowVsNginx`, `directVsNginx`, `windowVsHummingbird`,
/// `directVsHummingbird`, ratios of medians, null when a server was left out). Server
/// names: `sfbuf_window`, `sfbuf_direct`, `nginx`, `hummingbird`.
struct BenchServeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve",
    abstract: "Benchmark sfbuf serve against nginx and Hummingbird 2 with wrk.",
    discussion: """
      Writes three files (4 KiB, 64 KiB, 256 MiB) under --directory and serves them by \
      `sfbuf serve` through a window of --nsfbufs slots, by `sfbuf serve --direct`, by \
      nginx (sendfile on, access log off, --threads workers, no open-file cache) and by \
      Hummingbird 2's FileMiddleware (--threads event loops; built on first use from \
      Benchmarks/HummingbirdServe, which takes a few minutes). wrk (--threads threads) then \
      loads each server for --seconds per run: the small files with --connections \
      connections (requests per second), the large one with --large-connections (GB/s). \
      Servers and wrk share the machine's CPUs, as on any one-box benchmark. Each cell is \
      measured --rounds times, the servers interleaved and rotated; medians are printed.
      """
  )

  @Option(help: ArgumentHelp("Seconds of load per run (whole seconds).", valueName: "time"))
  var seconds = 3
  @Option(help: ArgumentHelp("Runs of every server on every file.", valueName: "count"))
  var rounds = 3
  @Option(help: ArgumentHelp("Worker threads of every server, and of wrk.", valueName: "count"))
  var threads = 2
  @Option(help: ArgumentHelp("wrk's connections for the small files.", valueName: "count"))
  var connections = 64
  @Option(help: ArgumentHelp("wrk's connections for the large file.", valueName: "count"))
  var largeConnections = 8
  @Option(help: ArgumentHelp("Window slots of the window server.", valueName: "slots"))
  var nsfbufs = 512
  @Option(
    help: ArgumentHelp(
      "Leave out a server: sfbuf_window, sfbuf_direct, nginx or hummingbird (repeatable).",
      valueName: "server"))
  var without: [String] = []
  @Option(
    help: ArgumentHelp(
      "A built hb-serve to use instead of building Benchmarks/HummingbirdServe.",
      valueName: "path"))
  var hummingbird: String?
  @Option(help: ArgumentHelp("Where to write the files served.", valueName: "folder"))
  var directory = "/var/tmp"
  @Flag(help: "A short run: 1 second per run, 1 round, no warm-up.")
  var quick = false
  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  static let servers = ["sfbuf_window", "sfbuf_direct", "nginx", "hummingbird"]
  static let labels = [
    "sfbuf_window": "sfbuf window", "sfbuf_direct": "sfbuf direct", "nginx": "nginx",
    "hummingbird": "Hummingbird",
  ]

  func validate() throws {
    guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
    guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be 1...100") }
    guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1...64") }
    for (name, c) in [("--connections", connections), ("--large-connections", largeConnections)]
    where !(threads...10000).contains(c) {
      throw ValidationError("\(name) must be from --threads (\(threads)) to 10000")
    }
    for w in without where !Self.servers.contains(w) {
      throw ValidationError(
        "unknown server '\(w)' for --without; the servers: \(Self.servers.joined(separator: ", "))")
    }
    guard Set(without).count < Self.servers.count else {
      throw ValidationError("--without leaves no server to measure")
    }
    _ = try SFBufPool.parseSlots(String(nsfbufs), setting: "--nsfbufs")
  }

  func run() throws {
    SignalWatcher.start()
    do { try measure() } catch {
      // Ctrl-C stops the servers and wrk under the work in progress, which then fails: the
      // process must end by the signal, not by that failure.
      SignalWatcher.yieldIfTerminating()
      throw error
    }
  }

  private func measure() throws {
    let servers = Self.servers.filter { !without.contains($0) }
    let secs = quick ? 1 : seconds
    let reps = quick ? 1 : rounds
    guard let wrkPath = find("wrk") else {
      throw CommandFailure("wrk is not installed (Debian: apt-get install -y wrk)")
    }
    let nginxPath = servers.contains("nginx") ? find("nginx") : nil
    if servers.contains("nginx") && nginxPath == nil {
      throw CommandFailure(
        "nginx is not installed (Debian: apt-get install -y nginx); or leave it out with"
          + " --without nginx")
    }
    let hbBinary = servers.contains("hummingbird") ? try hummingbirdBinary() : nil
    let site = try BenchSite(in: directory)
    defer { site.remove() }
    SignalWatcher.onTermination { site.remove() }
    let cells = [
      ServeCell(file: "4k.bin", bytes: 4 << 10, connections: connections, perRequest: true),
      ServeCell(file: "64k.bin", bytes: 64 << 10, connections: connections, perRequest: true),
      ServeCell(
        file: "256m.bin", bytes: 256 << 20, connections: largeConnections, perRequest: false),
    ]
    for cell in cells { try site.write(cell.file, bytes: cell.bytes) }
    var running: [String: RunningServer] = [:]
    defer { for server in running.values { server.process.stop() } }
    for name in servers {
      running[name] = try start(name, site: site, nginx: nginxPath, hummingbird: hbBinary)
    }
    let total = cells.count * servers.count * (reps + (quick ? 0 : 1))
    let progress = Progress.make(total: total, unit: .count("wrk run"), quiet: json)
    var done = 0
    var results: [String: [String: ServeCellRuns]] = [:]
    for round in (quick ? 0 : -1)..<reps {  // round -1: warm-up, not kept
      for (c, cell) in cells.enumerated() {
        for i in 0..<servers.count {
          let name = servers[(i + c + max(round, 0)) % servers.count]
          let outcome = try wrk(
            wrkPath, cell, port: running[name]!.port, seconds: secs, site: site)
          if round >= 0 {
            results[name, default: [:]][cell.file, default: ServeCellRuns()].add(outcome, cell)
          }
          done += 1
          progress?.update(done)
        }
      }
    }
    progress?.finish()
    var windowLines: [String] = []
    for name in servers {
      let server = running.removeValue(forKey: name)!
      let status = server.process.stop()
      if name.hasPrefix("sfbuf"), status != 0 {
        throw CommandFailure(
          "sfbuf serve (\(name)) ended with wait status \(status):\n\(server.process.errorTail())")
      }
      if name == "sfbuf_window" {
        windowLines = server.process.errorTail(12).split(separator: "\n").map(String.init)
      }
    }
    let report = ServeReport(
      seconds: secs, rounds: reps, threads: threads, nsfbufs: nsfbufs, servers: servers,
      cells: cells.map { cell in
        ServeReport.Cell(
          file: cell.file, bytes: cell.bytes, connections: cell.connections,
          unit: cell.perRequest ? "requestsPerSecond" : "gbPerSecond",
          results: servers.map { results[$0]![cell.file]!.summary(server: $0) })
      })
    if json {
      try printJSON(report)
    } else {
      printTable(report, windowLines: windowLines)
    }
  }

  private func printTable(_ report: ServeReport, windowLines: [String]) {
    let servers = report.servers
    let ratioNames = [
      ("window/nginx", "sfbuf_window", "nginx"), ("direct/nginx", "sfbuf_direct", "nginx"),
      ("window/HB", "sfbuf_window", "hummingbird"), ("direct/HB", "sfbuf_direct", "hummingbird"),
    ].filter { servers.contains($0.1) && servers.contains($0.2) }
    var table = Table(
      ["file", "conns", "unit"] + servers.map { Self.labels[$0]! } + ratioNames.map(\.0),
      leftColumns: 3)
    for cell in report.cells {
      let perRequest = cell.unit == "requestsPerSecond"
      let figures = servers.map { s in
        let m = cell.result(s)!.median
        return perRequest ? String(Int(m.rounded())) : fmt(m, 2)
      }
      let ratios = ratioNames.map { _, a, b in
        fmt(cell.result(a)!.median / cell.result(b)!.median, 2) + "x"
      }
      table.add(
        [bytesText(cell.bytes), String(cell.connections), perRequest ? "req/s" : "GB/s"]
          + figures + ratios)
    }
    print(
      "wrk -t\(report.threads), \(report.seconds) s per run, median of \(report.rounds)"
        + " interleaved run(s); servers with \(report.threads) workers each;"
        + " window: \(report.nsfbufs) slots")
    table.print()
    for cell in report.cells {
      for s in servers where cell.result(s)!.errors > 0 {
        print(
          "warning: \(Self.labels[s]!) on \(bytesText(cell.bytes)): \(cell.result(s)!.errors)"
            + " socket errors or non-2xx answers")
      }
    }
    if !windowLines.isEmpty {
      print("the window after the run (sfbuf serve's counters):")
      for line in windowLines { print("  " + line) }
    }
  }

  /// Starts one server on a free port and waits until it accepts.
  private func start(
    _ name: String, site: BenchSite, nginx: String?, hummingbird: String?
  ) throws
    -> RunningServer
  {
    let log = site.path + "/\(name).log"
    switch name {
    case "sfbuf_window", "sfbuf_direct":
      let pool = name == "sfbuf_window" ? ["--nsfbufs", "\(nsfbufs)"] : ["--direct"]
      let p = try ChildProcess(
        [
          try ChildProcess.thisProgram(), "serve", site.root, "--port", "0", "--threads",
          "\(threads)", "--max-connections", "100000",
        ] + pool,
        name: "sfbuf serve", errorLog: log)
      return try RunningServer(process: p, port: listeningPort(p))
    case "hummingbird":
      let p = try ChildProcess(
        [hummingbird!, site.root, "0", "\(threads)"], name: "hb-serve", errorLog: log)
      return try RunningServer(process: p, port: listeningPort(p))
    default:
      let port = try freePort()
      let conf = site.path + "/nginx.conf"
      try site.writeText(
        conf,
        """
        worker_processes \(threads);
        daemon off;
        user root;
        pid \(site.path)/nginx.pid;
        error_log \(site.path)/nginx-error.log;
        events { worker_connections 16384; }
        http {
          access_log off;
          sendfile on;
          keepalive_requests 100000000;
          default_type application/octet-stream;
          client_body_temp_path \(site.path)/nginx-body;
          proxy_temp_path \(site.path)/nginx-proxy;
          fastcgi_temp_path \(site.path)/nginx-fastcgi;
          uwsgi_temp_path \(site.path)/nginx-uwsgi;
          scgi_temp_path \(site.path)/nginx-scgi;
          server { listen 127.0.0.1:\(port) reuseport backlog=1024; root \(site.root); }
        }

        """)
      let p = try ChildProcess(
        [nginx!, "-e", site.path + "/nginx-error.log", "-p", site.path, "-c", conf],
        name: "nginx", errorLog: log)
      let deadline = now() + 10
      while true {
        if let s = try? Socket.connect(host: "127.0.0.1", port: port, timeout: .seconds(1)) {
          s.close()
          break
        }
        guard now() < deadline else {
          p.stop()
          throw CommandFailure("nginx did not accept on port \(port) in 10 s:\n\(p.errorTail())")
        }
        usleep(20_000)
      }
      return RunningServer(process: p, port: port)
    }
  }

  private func listeningPort(_ p: ChildProcess) throws -> Int {
    let line = try p.waitForLine(timeout: 30) { $0.hasPrefix("listening on http://") }
    let afterHost = line.dropFirst("listening on http://".count).split(separator: ":").last ?? ""
    guard let port = Int(afterHost.prefix(while: \.isNumber)) else {
      throw CommandFailure("\(p.name) printed no port: \(line)")
    }
    return port
  }

  /// One wrk run; its figures come from a Lua `done` hook, exact where wrk's own summary
  /// rounds.
  private func wrk(
    _ wrk: String, _ cell: ServeCell, port: Int, seconds: Int, site: BenchSite
  ) throws
    -> WrkOutcome
  {
    let p = try ChildProcess(
      [
        wrk, "-t", "\(threads)", "-c", "\(cell.connections)", "-d", "\(seconds)s",
        "--timeout", "10s", "-s", site.wrkScript, "http://127.0.0.1:\(port)/\(cell.file)",
      ], name: "wrk", errorLog: site.path + "/wrk.log")
    let text: String
    do { text = try p.readAll(timeout: Double(seconds) + 60) } catch {
      p.stop(signal: SIGKILL)
      throw error
    }
    let status = p.stop(signal: nil)
    guard status == 0,
      let line = text.split(separator: "\n").last(where: { $0.hasPrefix("SFBUF-WRK ") })
    else {
      throw CommandFailure("wrk failed (wait status \(status)):\n\(text)\n\(p.errorTail())")
    }
    return try JSONDecoder().decode(
      WrkOutcome.self, from: Data(line.dropFirst("SFBUF-WRK ".count).utf8))
  }

  private func hummingbirdBinary() throws -> String {
    if let hummingbird {
      guard access(hummingbird, X_OK) == 0 else {
        throw CommandFailure("--hummingbird \(hummingbird): no such program")
      }
      return hummingbird
    }
    let package = "Benchmarks/HummingbirdServe"
    guard access(package + "/Package.swift", R_OK) == 0 else {
      throw CommandFailure(
        "\(package)/Package.swift not found: run from the repository's root, give"
          + " --hummingbird PATH to a built hb-serve, or leave it out with --without hummingbird")
    }
    printError("building Hummingbird (swift build -c release --package-path \(package))…")
    let p = try ChildProcess(
      ["swift", "build", "-c", "release", "--package-path", package, "--product", "hb-serve"],
      name: "swift build", errorLog: "/dev/null")
    let output = try p.readAll(timeout: 3600)
    guard p.stop(signal: nil) == 0 else {
      throw CommandFailure(
        "building \(package) failed:\n"
          + output.split(separator: "\n").suffix(15).joined(separator: "\n"))
    }
    return package + "/.build/release/hb-serve"
  }

  private func freePort() throws -> Int {
    // Closed when the listener goes away, at the end of this scope.
    try Listener(host: "127.0.0.1", port: 0).port
  }

  /// Where `tool` is: on PATH, or in the system folders a user's PATH may lack.
  private func find(_ tool: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
    return folders.map { "\($0)/\(tool)" }.first { access($0, X_OK) == 0 }
  }

}

/// A file served in the benchmark, and how it is loaded.
struct ServeCell {
  var file: String
  var bytes: Int
  var connections: Int
  /// Requests per second when true, GB/s when false.
  var perRequest: Bool
}

struct RunningServer {
  var process: ChildProcess
  var port: Int
}

/// What the Lua hook prints after a wrk run.
struct WrkOutcome: Decodable {
  var requests: Int
  var bytes: Int
  var microseconds: Int
  var errors: Int
}

/// The runs of one server on one file.
struct ServeCellRuns {
  var values: [Double] = []
  var errors = 0

  mutating func add(_ o: WrkOutcome, _ cell: ServeCell) {
    let seconds = Double(o.microseconds) / 1e6
    values.append(cell.perRequest ? Double(o.requests) / seconds : Double(o.bytes) / seconds / 1e9)
    errors += o.errors
  }

  func summary(server: String) -> ServeReport.Result {
    ServeReport.Result(
      server: server, median: median(values), min: values.min()!, max: values.max()!, runs: values,
      errors: errors)
  }
}

struct ServeReport: Encodable {
  var schema = "sfbuf-bench-serve/1"
  var seconds: Int
  var rounds: Int
  var threads: Int
  var nsfbufs: Int
  var servers: [String]
  var cells: [Cell]

  struct Result: Encodable {
    var server: String
    var median: Double
    var min: Double
    var max: Double
    var runs: [Double]
    var errors: Int
  }
  struct Cell: Encodable {
    var file: String
    var bytes: Int
    var connections: Int
    var unit: String
    var results: [Result]
    /// Ratios of medians, null where a server was left out.
    var ratios: [String: Figure<Double>]

    init(file: String, bytes: Int, connections: Int, unit: String, results: [Result]) {
      self.file = file
      self.bytes = bytes
      self.connections = connections
      self.unit = unit
      self.results = results
      func r(_ a: String, _ b: String) -> Figure<Double> {
        guard let x = results.first(where: { $0.server == a }),
          let y = results.first(where: { $0.server == b })
        else { return Figure(nil) }
        return Figure(x.median / y.median)
      }
      ratios = [
        "windowVsNginx": r("sfbuf_window", "nginx"), "directVsNginx": r("sfbuf_direct", "nginx"),
        "windowVsHummingbird": r("sfbuf_window", "hummingbird"),
        "directVsHummingbird": r("sfbuf_direct", "hummingbird"),
      ]
    }

    func result(_ server: String) -> Result? { results.first { $0.server == server } }
  }
}

/// The benchmark's temporary folder: the served root, the logs, nginx's files and wrk's
/// script; removed at the end, and on Ctrl-C.
final class BenchSite: Sendable {
  let path: String
  var root: String { path + "/root" }
  var wrkScript: String { path + "/done.lua" }

  init(in directory: String) throws {
    var template = Array((directory + "/sfbuf-bench-serve-XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
      throw CommandFailure("cannot make a folder in \(directory): \(Errno(rawValue: errno))")
    }
    path = String(cString: made)
    chmod(path, 0o755)
    guard mkdir(path + "/root", 0o755) == 0 else {
      throw CommandFailure("cannot make \(path)/root: \(Errno(rawValue: errno))")
    }
    try writeText(
      wrkScript,
      """
      done = function(summary, latency, requests)
        local e = summary.errors
        io.write(string.format(
          "SFBUF-WRK {\\"requests\\":%d,\\"bytes\\":%d,\\"microseconds\\":%d,\\"errors\\":%d}\\n",
          summary.requests, summary.bytes, summary.duration,
          e.connect + e.read + e.write + e.status + e.timeout))
      end

      """)
  }

  func writeText(_ file: String, _ text: String) throws {
    try create(file) { fd in _ = try fd.writeAll(Array(text.utf8)) }
  }

  /// A file of `bytes` pseudo-random bytes under the root.
  func write(_ name: String, bytes: Int) throws {
    var block = [UInt8](repeating: 0, count: 1 << 20)
    var rng = FastRandom(seed: UInt64(bytes))
    block.withUnsafeMutableBytes { b in
      for i in 0..<(b.count / 8) {
        b.storeBytes(of: rng.next(), toByteOffset: i * 8, as: UInt64.self)
      }
    }
    try create(root + "/" + name) { fd in
      var left = bytes
      while left > 0 {
        let n = min(left, block.count)
        _ = try block[0..<n].withUnsafeBytes { try fd.writeAll($0) }
        left -= n
      }
    }
  }

  /// Creates (or empties) `path`, readable by all (nginx's workers), and fills it.
  private func create(_ path: String, _ fill: (FileDescriptor) throws -> Void) throws {
    do {
      let fd = try FileDescriptor.open(
        path, .writeOnly, options: [.create, .truncate],
        permissions: [.ownerReadWrite, .groupRead, .otherRead])
      defer { try? fd.close() }
      try fill(fd)
    } catch { throw CommandFailure("cannot write \(path): \(error)") }
  }

  /// Removes the folder and everything in it (it holds files only, one level deep, and
  /// nginx's empty temporary folders).
  func remove() {
    for dir in [root, path] {
      guard let d = opendir(dir) else { continue }
      while let entry = readdir(d) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) {
          String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name == "." || name == ".." { continue }
        let full = dir + "/" + name
        if unlink(full) != 0 { rmdir(full) }
      }
      closedir(d)
    }
    rmdir(root)
    rmdir(path)
  }
}
