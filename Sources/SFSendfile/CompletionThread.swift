// The network's side of zero-copy sends: one thread that waits (epoll) on the sockets with
// sends in flight and releases what the kernel is done with, so buffers go back to the pool
// without their sender's help, as mbufs are freed by the network in the kernel.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import Synchronization
  import SystemPackage

  /// One process-wide thread blocked in `epoll_wait` on the sockets that have zero-copy
  /// sends waiting for notifications, or tasks waiting to write. Each socket is armed
  /// one-shot (`EPOLLONESHOT`) and armed again only while something still waits; an event
  /// that changes nothing is armed again after 5 ms, so a socket in a lasting error state
  /// cannot make the thread spin.
  ///
  /// Started on first use; it blocks every signal, so signals meant for the process's own
  /// threads never land on it.
  final class CompletionThread: Sendable {
    static let shared = CompletionThread()

    /// The epoll instance.
    let epfd: CInt
    private struct Entry { weak var socket: Socket? }
    private let registry = Locked<[UInt64: Entry]>([:])
    private let started = Atomic<Bool>(false)

    private init() {
      do { epfd = try Sys.epollCreate() } catch {
        fatalError("SFSendfile: epoll_create1 failed: \(error)")
      }
    }

    /// Enters `socket` in the registry (weakly) and starts the thread on first use.
    func register(_ socket: Socket) {
      registry.withLock { $0[socket.token] = Entry(socket: socket) }
      if !started.exchange(true, ordering: .acquiringAndReleasing) { start() }
    }

    /// Removes the socket: `EPOLL_CTL_DEL`, then the registry entry.
    func unregister(_ token: UInt64, fd: CInt) {
      Sys.epollDelete(epfd, fd)
      _ = registry.withLock { $0.removeValue(forKey: token) }
    }

    private func socket(_ token: UInt64) -> Socket? {
      registry.withLock { $0[token]?.socket }
    }

    private func start() {
      var t = pthread_t()
      let r = pthread_create(
        &t, nil,
        { arg in
          let me = Unmanaged<CompletionThread>.fromOpaque(arg!).takeRetainedValue()
          var all = sigset_t()
          sigfillset(&all)
          pthread_sigmask(SIG_BLOCK, &all, nil)
          me.run()
          return nil
        }, Unmanaged.passRetained(self).toOpaque())
      if r != 0 { fatalError("SFSendfile: cannot start the completion thread: \(r)") }
      pthread_detach(t)
    }

    private func run() {
      let max = 64
      let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: max)
      let what = UnsafeMutablePointer<UInt32>.allocate(capacity: max)
      var idle: [UInt64] = []
      while true {
        let n = (try? Sys.epollWait(epfd, tokens, what, max, timeoutMS: idle.isEmpty ? -1 : 5)) ?? 0
        let retry = idle
        idle = []
        for i in 0..<n {
          if let s = socket(tokens[i]), !s.handleEvent(what[i]) { idle.append(tokens[i]) }
        }
        for t in retry { socket(t)?.rearm() }
      }
    }
  }
#endif
