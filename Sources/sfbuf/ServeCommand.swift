import ArgumentParser
import Glibc
import SFBufHost
import SFHTTP
import SystemPackage

/// `sfbuf serve`: the HTTP/1.1 static file server on the project's sendfile.
struct ServeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve",
    abstract: "Serve the files under a folder over HTTP/1.1 through sendfile on sf_buf.",
    discussion: """
      Prints "listening on http://HOST:PORT" (--port 0 picks a free port), then serves GET \
      and HEAD: keep-alive and pipelining, Range (one range; several get the whole file), \
      ETag/If-None-Match and Last-Modified/If-Modified-Since (304), index.html for a \
      folder (named without its final slash: 301 to it), 405 for other methods. Files \
      are opened below the folder with openat2(RESOLVE_BENEATH): no path, encoded or \
      not, and no symbolic link leads out of it. One epoll loop per thread; all \
      connections share the window (--nsfbufs) or the direct map (--direct).

      SIGUSR1 prints the pool's netstat -m lines; SIGINT and SIGTERM stop accepting, give \
      responses in flight --grace seconds, and exit 0.
      """
  )

  @Argument(help: ArgumentHelp("The folder to serve.", valueName: "root"))
  var root: String
  @Option(
    help: ArgumentHelp(
      "Numeric IPv4 or IPv6 address to listen on (:: or 0.0.0.0: all).", valueName: "address"))
  var host = "127.0.0.1"
  @Option(help: ArgumentHelp("Port to listen on (0: any free port).", valueName: "number"))
  var port = 8080
  @Option(help: ArgumentHelp("Event loops, one thread each (1...64).", valueName: "count"))
  var threads = 2
  @OptionGroup var poolOptions: PoolOptions
  @Flag(help: "Send with MSG_ZEROCOPY.")
  var zerocopy = false
  @Flag(help: "Answer GET /.well-known/sfbuf with the pool's counters.")
  var status = false
  @Flag(help: "Log every response on standard output in common log format.")
  var accessLog = false
  @Option(help: ArgumentHelp("Connections open at once, at most.", valueName: "count"))
  var maxConnections = 4096
  @Option(
    help: ArgumentHelp("Seconds a client may take to send a request head.", valueName: "time"))
  var headerTimeout = 10.0
  @Option(help: ArgumentHelp("Seconds an idle connection stays open.", valueName: "time"))
  var idleTimeout = 60.0
  @Option(
    help: ArgumentHelp(
      "Seconds responses in flight get after SIGINT or SIGTERM.", valueName: "time"))
  var grace = 2.0

  func validate() throws {
    guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1...64") }
    guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
    guard maxConnections >= 1 else { throw ValidationError("--max-connections must be positive") }
    for (name, v) in [
      ("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout), ("--grace", grace),
    ] {
      guard v > 0 && v <= 86400 else { throw ValidationError("\(name) must be in (0, 86400]") }
    }
  }

  func run() throws {
    SignalWatcher.start()
    let pool = try poolOptions.makePool()
    var options = FileServerOptions(root: FilePath(root))
    options.host = host
    options.port = port
    options.threads = threads
    options.statusPage = status
    options.accessLog = accessLog
    options.zeroCopy = zerocopy
    options.maxConnections = maxConnections
    options.headerTimeout = .milliseconds(Int64(headerTimeout * 1000))
    options.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
    options.grace = .milliseconds(Int64(grace * 1000))
    let server: FileServer
    do { server = try FileServer(options: options, pool: pool) } catch {
      throw ToolError(error.description)
    }
    SignalWatcher.onStatus { server.statusLines }
    SignalWatcher.onGracefulStop { _ in server.stop() }
    let authority = host.contains(":") ? "[\(host)]" : host
    print("listening on http://\(authority):\(server.port) (\(poolOptions.describe(pool)))")
    fflush(nil)
    server.run()
    if !accessLog {
      for line in server.statusLines { printError(line) }
    }
  }
}
