// A static file server over HTTP/1.1 on the project's sendfile: one epoll loop per thread,
// non-blocking sockets, files opened below the root with openat2(RESOLVE_BENEATH), their
// pages sent through an sf_buf pool shared by every connection.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufHost
  import SFSendfile
  import Synchronization
  import SystemPackage

  /// How a ``FileServer`` runs.
  public struct FileServerOptions: Sendable {
    /// The folder served; nothing outside it is ever sent.
    public var root: FilePath
    /// The numeric IPv4 or IPv6 address to listen on.
    public var host = "127.0.0.1"
    /// The port (0: one the kernel picks).
    public var port = 0
    /// Event loops, one thread each.
    public var threads = 2
    /// Whether `GET /.well-known/sfbuf` answers the pool's counters.
    public var statusPage = false
    /// Whether each response is logged on standard output, in common log format.
    public var accessLog = false
    /// Whether sends use `MSG_ZEROCOPY` (``Socket/enableZeroCopy()``).
    public var zeroCopy = false
    /// Connections open at once, at most; more are answered 503 and closed.
    public var maxConnections = 4096
    /// How long a client may take to send a whole request head once it began (408).
    public var headerTimeout: Duration = .seconds(10)
    /// How long a connection may stay idle between requests, or make no progress reading a
    /// response, before it is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// After ``FileServer/stop()``: how long responses in flight may take to finish.
    public var grace: Duration = .seconds(2)
    /// The limits of a request head.
    public var limits = HTTPLimits()

    public init(root: FilePath) { self.root = root }
  }

  /// Why a server could not start.
  public enum FileServerError: Error, CustomStringConvertible {
    /// The root cannot be opened as a folder.
    case root(FilePath, Errno)
    /// The listening socket could not be made.
    case listen(SocketError)
    /// A system call failed while setting up.
    case system(String, Errno)

    public var description: String {
      switch self {
      case .root(let p, let e): "cannot serve \(p): \(e)"
      case .listen(let e): "cannot listen: \(e)"
      case .system(let what, let e): "\(what): \(e)"
      }
    }
  }

  /// An HTTP/1.1 static file server whose responses go out through ``sendfile(_:to:offset:count:headers:trailers:flags:pool:)``.
  ///
  /// GET and HEAD; keep-alive and pipelining; `Range` (one range; several are answered
  /// with the whole file); `ETag`/`If-None-Match` and `Last-Modified`/`If-Modified-Since`
  /// (exact match, as nginx does by default); `index.html` for a folder (301 to the folder's
  /// address with its final slash when named without). Every loop owns its
  /// connections; a send that would block resumes when the socket is writable, and a full
  /// window makes a sender try again a moment later, never wait.
  public final class FileServer: Sendable {
    public let options: FileServerOptions
    /// Where the mappings come from.
    public let pool: SFBufPool
    let rootFD: CInt
    let listener: Listener
    let stopping = Atomic<Bool>(false)
    let open = Atomic<Int>(0)
    let responses = Atomic<Int>(0)
    let files = Mutex<[String: CachedFile]>([:])
    let log = Mutex(())

    /// The port it listens on.
    public var port: Int { listener.port }

    /// Opens the root and listens; ``run()`` serves.
    public init(options: FileServerOptions, pool: SFBufPool) throws(FileServerError) {
      self.options = options
      self.pool = pool
      let fd = options.root.withPlatformString {
        Glibc.open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
      }
      if fd < 0 { throw .root(options.root, Errno(rawValue: errno)) }
      rootFD = fd
      do {
        listener = try Listener(host: options.host, port: options.port, backlog: 1024)
      } catch {
        Glibc.close(fd)
        throw .listen(error)
      }
      let lfd = listener.fileDescriptor.rawValue
      if fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) != 0 {
        Glibc.close(fd)
        throw .system("fcntl O_NONBLOCK", Errno(rawValue: errno))
      }
    }

    deinit { Glibc.close(rootFD) }

    /// Serves until ``stop()``: runs ``FileServerOptions/threads`` event loops and returns
    /// when all have ended (after the grace period for responses in flight).
    public func run() {
      let loops = (0..<max(1, options.threads)).map { _ in EventLoop(server: self) }
      var threads: [pthread_t] = []
      for loop in loops {
        var t = pthread_t()
        let box = Unmanaged.passRetained(loop).toOpaque()
        let r = pthread_create(
          &t, nil,
          { arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
          }, box)
        precondition(r == 0, "FileServer: pthread_create failed (\(r))")
        threads.append(t)
      }
      for t in threads { pthread_join(t, nil) }
    }

    /// Stops accepting; responses in flight get ``FileServerOptions/grace`` to finish. Safe
    /// from any thread (not from a signal handler).
    public func stop() { stopping.store(true, ordering: .releasing) }

    /// The pool's counters as `netstat -m` prints them, its hit counts and the server's.
    public var statusLines: [String] {
      let s = pool.stats
      return s.netstatLines + [
        "hits \(s.hits), misses \(s.misses), remaps \(s.remaps)",
        "connections \(open.load(ordering: .relaxed)), responses \(responses.load(ordering: .relaxed))",
      ]
    }

    /// The number of connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    func writeLog(_ line: String) {
      log.locked { _ in
        var l = line
        l.withUTF8 { b in _ = Glibc.write(1, b.baseAddress, b.count) }
      }
    }

    /// The object for the regular file `fd` (just opened as `path`): the cached one when it
    /// is the same file (device and inode), so that its pages stay mapped in the window
    /// between requests; else `fd` becomes a new object, cached.
    func object(for path: String, fd: CInt, _ st: stat) -> VMObject? {
      let cached = files.locked { $0[path] }
      if let cached, cached.device == st.st_dev, cached.inode == st.st_ino {
        Glibc.close(fd)
        return cached.object
      }
      guard
        let object = try? VMObject.file(
          adopting: FileDescriptor(rawValue: fd), path: FilePath(path))
      else { return nil }
      let entry = CachedFile(object: object, device: st.st_dev, inode: st.st_ino)
      files.locked { f in
        if f.count >= 1024 { f.removeAll() }
        f[path] = entry
      }
      return object
    }
  }

  /// An open file the server keeps, with what identifies it.
  final class CachedFile: Sendable {
    let object: VMObject
    let device: UInt
    let inode: UInt
    init(object: VMObject, device: UInt, inode: UInt) {
      self.object = object
      self.device = device
      self.inode = inode
    }
  }
#endif
