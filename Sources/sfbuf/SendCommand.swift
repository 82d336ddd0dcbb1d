import ArgumentParser
import CSFBufLinux
import Glibc
import SFBufHost
import SFSendfile
import SystemPackage

/// `sfbuf send FILE HOST:PORT`: sends a file with sendfile on sf_buf (SFSendfile) to a peer
/// listening on HOST:PORT, then prints what it sent and the window's counters on standard
/// error.
struct SendCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "send",
    abstract: "Send a file to HOST:PORT over TCP with sendfile on sf_buf.",
    discussion: """
      The file's pages are wired, mapped with sf_buf_alloc (a window of --nsfbufs slots, or \
      the direct map with --direct) and written with scatter-gather sendmsg. For loopback \
      use: the peer can be `sfbuf recv PORT`, `socat -u TCP-LISTEN:PORT -`, or `nc -l \
      PORT`. The window size comes from --nsfbufs, else from SFBUF_NSFBUFS, else 512 slots.

      On a terminal, progress is shown on standard error (bytes, percent, rate, time left); \
      SIGUSR1 prints the window's counters. --json prints one object, keys sorted: \
      {"schema": "sfbuf-send/1", "file", "destination", "offset", "bytesSent", \
      "elapsedSeconds", "gigabytesPerSecond", "pool", "stats" (null for the direct map), \
      "zeroCopy" (null without --zerocopy: {"notifications", "completed", "copied"})}.
      """
  )

  @Argument(help: ArgumentHelp("The file to send.", valueName: "file"))
  var file: String

  @Argument(
    help: ArgumentHelp(
      "Where to send it: HOST:PORT (e.g. 127.0.0.1:9000, [::1]:9000).", valueName: "host:port"))
  var destination: String

  @Option(help: ArgumentHelp("The first byte of the file to send.", valueName: "byte"))
  var offset = 0

  @Option(
    help: ArgumentHelp(
      "Bytes of the file to send; 0 sends to the end of the file.", valueName: "bytes"))
  var count = 0

  @OptionGroup var poolOptions: PoolOptions

  @Flag(help: "Ask for zero-copy sends (SO_ZEROCOPY, MSG_ZEROCOPY).")
  var zerocopy = false

  @Option(help: ArgumentHelp("Seconds to wait for the connection.", valueName: "seconds"))
  var timeout = 10.0

  @Flag(help: "Print one JSON object on standard output instead of the summary.")
  var json = false

  func validate() throws {
    guard offset >= 0 else { throw ValidationError("--offset must not be negative, not \(offset)") }
    guard count >= 0 else { throw ValidationError("--count must not be negative, not \(count)") }
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    _ = try Endpoint(destination)
  }

  func run() throws {
    let to = try Endpoint(destination)
    SignalWatcher.start()
    let pool = try poolOptions.makePool()
    if !pool.isDirectMap { SignalWatcher.onStatus { pool.stats.netstatLines } }
    let object: VMObject
    do { object = try VMObject.file(FilePath(file)) } catch {
      throw CommandFailure("cannot open \(file): \(error.reason)")
    }
    let socket: Socket
    do {
      socket = try Socket.connect(host: to.host, port: to.port, timeout: .seconds(timeout))
    } catch {
      throw CommandFailure("cannot connect to \(destination): \(error.errno)")
    }
    if zerocopy && !socket.enableZeroCopy() {
      printError("sfbuf send: the socket refuses zero-copy (SO_ZEROCOPY); sending with copies")
    }
    // What will be sent, for the progress line: to the end of the file, or `count` bytes.
    let fileSize = (try? object.size()) ?? 0
    let total = count == 0 ? max(0, fileSize - offset) : min(count, max(0, fileSize - offset))
    let progress = Progress.make(total: total, unit: .bytes, quiet: json)
    let start = now()
    var sent = 0
    do {
      if let progress {
        // In pieces of 8 MiB, to show progress between them; the bytes on the wire are
        // the same.
        while sent < total {
          let piece = min(8 << 20, total - sent)
          let n = try sendfile(object, to: socket, offset: offset + sent, count: piece, pool: pool)
          sent += n
          progress.update(sent)
          if n < piece { break }
        }
        progress.finish()
      } else {
        sent = try sendfile(object, to: socket, offset: offset, count: count, pool: pool)
      }
    } catch {
      progress?.finish()
      socket.close()
      throw CommandFailure("sendfile to \(destination): \(error)")
    }
    if zerocopy && !socket.waitForCompletions(timeout: .seconds(10)) {
      printError("sfbuf send: some zero-copy notifications did not arrive in 10 s")
    }
    let zc = socket.zeroCopyStats
    socket.close()
    let elapsed = now() - start
    if json {
      try printJSON(
        Report(
          file: file, destination: destination, offset: offset, bytesSent: sent,
          elapsedSeconds: elapsed, gigabytesPerSecond: Figure(Double(sent) / elapsed / 1e9),
          pool: poolOptions.describe(pool),
          stats: Figure(pool.isDirectMap ? nil : StatsJSON(pool.stats)),
          zeroCopy: Figure(
            zerocopy
              ? Report.ZeroCopy(
                notifications: zc.notifications, completed: zc.completed, copied: zc.copied)
              : nil)))
      return
    }
    let kind = "the " + poolOptions.describe(pool)
    printError(
      "sfbuf send: sent \(sent) bytes of \(file) to \(destination) in \(fmt(elapsed, 3)) s"
        + " (\(fmt(Double(sent) / elapsed / 1e9, 3)) GB/s) through \(kind)")
    if !pool.isDirectMap { for line in pool.stats.netstatLines { printError("  \(line)") } }
    if zerocopy {
      printError(
        "  zero-copy: \(zc.notifications) notifications, \(zc.completed) completed,"
          + " \(zc.copied) copied by the kernel\(zc.copied > 0 ? " (zero-copy turned off)" : "")")
    }
  }

  /// The `--json` document.
  struct Report: Encodable {
    struct ZeroCopy: Encodable {
      var notifications, completed, copied: Int
    }
    var schema = "sfbuf-send/1"
    var file, destination: String
    var offset, bytesSent: Int
    var elapsedSeconds: Double
    var gigabytesPerSecond: Figure<Double>
    var pool: String
    var stats: Figure<StatsJSON>
    var zeroCopy: Figure<ZeroCopy>
  }
}

/// `sfbuf recv PORT`: accepts one connection on a loopback port and writes what arrives to
/// a file or to standard output.
struct RecvCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "recv",
    abstract: "Receive one TCP connection on PORT and write what arrives to a file or stdout.",
    discussion: """
      Prints "listening on HOST:PORT" on standard error once it listens (with PORT 0, the \
      port the kernel chose; an IPv6 host in brackets), and the byte count at the end. \
      --json prints, at the end, one object on standard output, keys sorted: {"schema": \
      "sfbuf-recv/1", "host", "port", "bytesReceived", "elapsedSeconds", \
      "gigabytesPerSecond"} (so it needs --out for the data).
      """
  )

  @Argument(
    help: ArgumentHelp("The port to listen on (0: any free port, printed).", valueName: "port"))
  var port: Int

  @Option(
    help: ArgumentHelp(
      "Write what arrives to this file (created or truncated) instead of stdout.",
      valueName: "file"))
  var out: String?

  @Option(
    help: ArgumentHelp(
      "The numeric address to listen on, IPv4 or IPv6 (127.0.0.1, ::1).", valueName: "address"))
  var host = "127.0.0.1"

  @Option(help: ArgumentHelp("Seconds to wait for the connection.", valueName: "seconds"))
  var timeout = 60.0

  @Flag(help: "Print one JSON object on standard output at the end (requires --out).")
  var json = false

  /// A listening descriptor inherited from the parent (the benchmark's reader).
  @Option(help: .hidden)
  var listenFD: Int32?

  /// The benchmark's reader: for each connection, read to the end into a buffer, answer
  /// with the byte count (8 bytes, little-endian), close.
  @Flag(help: .hidden)
  var sink = false

  @Option(help: .hidden)
  var connections = 1

  /// The benchmark's pid: its reader ends when its parent is no longer that process.
  @Option(help: .hidden)
  var parent: Int32?

  /// The CPU the benchmark's reader runs on.
  @Option(help: .hidden)
  var cpu: Int32?

  func validate() throws {
    guard (0...65535).contains(port) else {
      throw ValidationError("PORT must be in 0...65535, not \(port)")
    }
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
    if json && out == nil && !sink {
      throw ValidationError("--json needs --out: standard output carries the JSON")
    }
  }

  func run() throws {
    let listener: Listener
    do throws(SocketError) {
      if let listenFD {
        listener = try Listener(adopting: FileDescriptor(rawValue: listenFD))
      } else {
        listener = try Listener(host: host, port: port)
      }
    } catch {
      throw CommandFailure("cannot listen on \(Endpoint.text(host, port)): \(error.errno)")
    }
    if sink {
      try runSink(listener)
      return
    }
    printError("sfbuf recv: listening on \(Endpoint.text(host, listener.port))")
    var fd = FileDescriptor.standardOutput
    if let out {
      fd = try openForWriting(out)
    }
    defer { if fd != .standardOutput { try? fd.close() } }
    let socket: Socket
    do { socket = try listener.accept(timeout: .seconds(timeout)) } catch {
      throw CommandFailure(
        "nobody connected to \(Endpoint.text(host, listener.port)): \(error.errno)")
    }
    let start = now()
    let n: Int
    do { n = try socket.drain(to: fd) } catch {
      throw CommandFailure("\(error)")
    }
    let elapsed = now() - start
    if json {
      try printJSON(
        Report(
          host: host, port: listener.port, bytesReceived: n, elapsedSeconds: elapsed,
          gigabytesPerSecond: Figure(Double(n) / max(elapsed, 1e-9) / 1e9)))
      return
    }
    printError(
      "sfbuf recv: received \(n) bytes in \(fmt(elapsed, 3)) s"
        + " (\(fmt(Double(n) / max(elapsed, 1e-9) / 1e9, 3)) GB/s)")
  }

  /// The `--json` document.
  struct Report: Encodable {
    var schema = "sfbuf-recv/1"
    var host: String
    var port, bytesReceived: Int
    var elapsedSeconds: Double
    var gigabytesPerSecond: Figure<Double>
  }

  private func runSink(_ listener: Listener) throws {
    if let cpu, sfb_set_affinity_cpu(cpu) != 0 {
      throw CommandFailure("cannot run on CPU \(cpu)")
    }
    // The benchmark's reader outlives nothing: when its parent is gone (killed, even with
    // SIGKILL), it stops waiting within a second.
    let parent = self.parent ?? getppid()
    if getppid() != parent {
      throw CommandFailure("the benchmark that started this reader is gone")
    }
    for _ in 0..<connections {
      var waited = 0
      var accepted: Socket?
      while accepted == nil {
        do { accepted = try listener.accept(timeout: .seconds(1)) } catch {
          guard error.errno == .timedOut else { throw error }
          waited += 1
          if getppid() != parent || waited >= 600 {
            throw CommandFailure("the benchmark that started this reader is gone")
          }
        }
      }
      let socket = accepted!
      var n = UInt64(try socket.drain()).littleEndian
      try withUnsafeBytes(of: &n) { try socket.sendAll($0) }
      socket.close()
    }
  }
}

/// open(2) of `path` for writing (created or truncated, mode 0644).
private func openForWriting(_ path: String) throws -> FileDescriptor {
  do {
    return try FileDescriptor.open(
      FilePath(path), .writeOnly, options: [.create, .truncate, .closeOnExec],
      permissions: [.ownerReadWrite, .groupRead, .otherRead])
  } catch {
    throw CommandFailure("cannot open \(path): \(error)")
  }
}

/// HOST:PORT, with HOST possibly in brackets (IPv6).
struct Endpoint {
  /// `host:port`, or `[host]:port` for an IPv6 address.
  static func text(_ host: String, _ port: Int) -> String {
    host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
  }

  let host: String
  let port: Int

  init(_ text: String) throws {
    guard let colon = text.lastIndex(of: ":") else {
      throw ValidationError("'\(text)' is not HOST:PORT")
    }
    var h = text[..<colon]
    if h.hasPrefix("[") && h.hasSuffix("]") { h = h.dropFirst().dropLast() }
    guard !h.isEmpty, let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p)
    else {
      throw ValidationError("'\(text)' is not HOST:PORT with a port in 1...65535")
    }
    host = String(h)
    port = p
  }
}

/// A failure to report as `Error: <message>`, exit status 1, without the usage text.
struct CommandFailure: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}

extension VMError {
  /// The reason alone, without the operation (`No such file or directory`).
  var reason: String {
    if case .system(_, let e) = self { return "\(e)" }
    return description
  }
}

/// Writes a line to standard error.
func printError(_ line: String) {
  var s = line + "\n"
  s.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
