// hb-serve ROOT PORT THREADS: Hummingbird 2 serving the files under ROOT with its
// FileMiddleware on 127.0.0.1:PORT (0: any free port) with THREADS event loops. Prints
// "listening on http://127.0.0.1:PORT" once it accepts, as `sfbuf serve` does, and runs
// until SIGINT or SIGTERM.
import Hummingbird
import Logging
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count == 4, let port = Int(arguments[2]), (0...65535).contains(port),
  let threads = Int(arguments[3]), (1...64).contains(threads)
else {
  print("usage: hb-serve ROOT PORT(0...65535) THREADS(1...64)")
  exit(64)
}

var logger = Logger(label: "hb-serve")
logger.logLevel = .error
let router = Router()
router.middlewares.add(FileMiddleware(arguments[1], searchForIndexHtml: true, logger: logger))
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let app = Application(
  router: router,
  configuration: .init(address: .hostname("127.0.0.1", port: port), backlog: 1024),
  onServerRunning: { channel in
    print("listening on http://127.0.0.1:\(channel.localAddress?.port ?? port)")
    fflush(nil)
  },
  eventLoopGroupProvider: .shared(group),
  logger: logger
)
try await app.runService()
