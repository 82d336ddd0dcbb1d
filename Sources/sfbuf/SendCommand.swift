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
      use: the peer can be `sfbuf recv PORT`, `socat -u TCP-LISTEN:PORT -`, or `nc -l PORT`.
      The window size comes from --nsfbufs, else from SFBUF_NSFBUFS, else 512 slots.
      """
  )

  @Argument(help: "The file to send.")
  var file: String

  @Argument(help: "Where to send it: HOST:PORT (e.g. 127.0.0.1:9000, [::1]:9000).")
  var destination: String

  @Option(help: "The first byte of the file to send.")
  var offset = 0

  @Option(help: "Bytes of the file to send; 0 sends to the end of the file.")
  var count = 0

  @OptionGroup var poolOptions: PoolOptions

  @Flag(help: "Ask for zero-copy sends (SO_ZEROCOPY, MSG_ZEROCOPY).")
  var zerocopy = false

  @Option(help: "Seconds to wait for the connection.")
  var timeout = 10.0

  func validate() throws {
    guard offset >= 0 else { throw ValidationError("--offset must not be negative, not \(offset)") }
    guard count >= 0 else { throw ValidationError("--count must not be negative, not \(count)") }
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    _ = try Endpoint(destination)
  }

  func run() throws {
    let to = try Endpoint(destination)
    let pool = try poolOptions.makePool()
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
    let start = now()
    let sent: Int
    do {
      sent = try sendfile(object, to: socket, offset: offset, count: count, pool: pool)
    } catch {
      socket.close()
      throw CommandFailure("sendfile to \(destination): \(error)")
    }
    if zerocopy && !socket.waitForCompletions(timeout: .seconds(10)) {
      printError("sfbuf send: some zero-copy notifications did not arrive in 10 s")
    }
    let zc = socket.zeroCopyStats
    socket.close()
    let elapsed = now() - start
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
}

/// `sfbuf recv PORT`: accepts one connection on a loopback port and writes what arrives to
/// a file or to standard output.
struct RecvCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "recv",
    abstract: "Receive one TCP connection on PORT and write what arrives to a file or stdout.",
    discussion: """
      Prints "listening on HOST:PORT" on standard error once it listens (with PORT 0, the \
      port the kernel chose), and the byte count at the end.
      """
  )

  @Argument(help: "The port to listen on (0: any free port, printed).")
  var port: Int

  @Option(help: "Write what arrives to FILE (created or truncated) instead of stdout.")
  var out: String?

  @Option(help: "The numeric IPv4 address to listen on.")
  var host = "127.0.0.1"

  @Option(help: "Seconds to wait for the connection.")
  var timeout = 60.0

  /// A listening descriptor inherited from the parent (the benchmark's reader).
  @Option(help: .hidden)
  var listenFD: Int32?

  /// The benchmark's reader: for each connection, read to the end into a buffer, answer
  /// with the byte count (8 bytes, little-endian), close.
  @Flag(help: .hidden)
  var sink = false

  @Option(help: .hidden)
  var connections = 1

  /// The CPU the benchmark's reader runs on.
  @Option(help: .hidden)
  var cpu: Int32?

  func validate() throws {
    guard (0...65535).contains(port) else {
      throw ValidationError("PORT must be in 0...65535, not \(port)")
    }
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
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
      throw CommandFailure("cannot listen on \(host):\(port): \(error.errno)")
    }
    if sink {
      try runSink(listener)
      return
    }
    printError("sfbuf recv: listening on \(host):\(listener.port)")
    var fd = STDOUT_FILENO
    if let out {
      fd = try openForWriting(out)
    }
    defer { if fd != STDOUT_FILENO { close(fd) } }
    let socket: Socket
    do { socket = try listener.accept(timeout: .seconds(timeout)) } catch {
      throw CommandFailure("nobody connected to \(host):\(listener.port): \(error.errno)")
    }
    let start = now()
    let n: Int
    do { n = try socket.drain(to: FileDescriptor(rawValue: fd)) } catch {
      throw CommandFailure("\(error)")
    }
    let elapsed = now() - start
    printError(
      "sfbuf recv: received \(n) bytes in \(fmt(elapsed, 3)) s"
        + " (\(fmt(Double(n) / max(elapsed, 1e-9) / 1e9, 3)) GB/s)")
  }

  private func runSink(_ listener: Listener) throws {
    if let cpu, sfb_set_affinity_cpu(cpu) != 0 {
      throw CommandFailure("cannot run on CPU \(cpu)")
    }
    for _ in 0..<connections {
      let socket = try listener.accept(timeout: .seconds(600))
      var n = UInt64(try socket.drain()).littleEndian
      try withUnsafeBytes(of: &n) { try socket.sendAll($0) }
      socket.close()
    }
  }
}

/// open(2) of `path` for writing (created or truncated); the errno is read right after.
@inline(never)
private func openForWriting(_ path: String) throws -> CInt {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  let e = errno
  if fd < 0 { throw CommandFailure("cannot open \(path): \(Errno(rawValue: e))") }
  return fd
}

/// HOST:PORT, with HOST possibly in brackets (IPv6).
struct Endpoint {
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
