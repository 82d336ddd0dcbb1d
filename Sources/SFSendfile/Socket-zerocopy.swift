// Zero-copy sends (`SO_ZEROCOPY`, `MSG_ZEROCOPY`): what a socket holds until the kernel's
// completion notifications, read from the socket's error queue, say it is done.
//
// The kernel numbers a socket's zero-copy sends 0, 1, 2, ... (each `sendmsg` that queues
// bytes takes the next number) and later reports ranges of numbers as done, possibly
// coalesced, possibly marked "copied" when it had to copy after all (always on loopback).
// Before each send we record what it holds under the number it will get; a failed send
// takes no number and its record is dropped, so a notification can never arrive for a send
// we have not recorded.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import Synchronization
  import SystemPackage

  /// Counters of a socket's zero-copy sends.
  public struct ZeroCopyStats: Sendable, Equatable {
    /// Sends that queued bytes with `MSG_ZEROCOPY` (one notification number each).
    public var notifications = 0
    /// Notification numbers reported done.
    public var completed = 0
    /// Of those, the ones for which the kernel copied the data after all
    /// (`SO_EE_CODE_ZEROCOPY_COPIED`).
    public var copied = 0
    /// Sends whose buffers are still held, waiting for their notification.
    public var pending = 0
    /// Messages on the error queue that were errors, not notifications.
    public var errors = 0

    /// All zero.
    public init() {}
  }

  /// One send waiting for its notification, and what it holds.
  struct Pending {
    let id: UInt32
    var holds: [AnyObject]
    let tracker: CompletionTracker?
  }

  /// The zero-copy state of a socket. Guarded by the socket's `zc` lock.
  struct ZeroCopyState {
    /// `SO_ZEROCOPY` was accepted.
    var enabled = false
    /// Enabled, and no notification said "copied" yet: sends use `MSG_ZEROCOPY`.
    var active = false
    /// The number the kernel will give the next zero-copy send.
    var nextID: UInt32 = 0
    /// Sends waiting for their notification, in number order.
    var pending: [Pending] = []
    /// Tasks waiting for the socket to become writable, by key.
    var writeWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    var registered = false
    var armed = false
    var armedWritable = false
    var closed = false
    var stats = ZeroCopyStats()
  }

  /// A zero-copy send of borrowed memory: how many of its sends still wait for their
  /// notification, and the task waiting for none to be left. Guarded by the socket's lock.
  // @unchecked: vars guarded by the socket's lock.
  final class CompletionTracker: @unchecked Sendable {
    var outstanding = 0
    var abandoned = false
    var continuation: CheckedContinuation<Void, Never>?

    /// One send done; returns the waiter to resume when it was the last.
    func done() -> CheckedContinuation<Void, Never>? {
      outstanding -= 1
      if outstanding > 0 { return nil }
      defer { continuation = nil }
      return continuation
    }

    /// The socket closed: nothing more will be reported.
    func abandon() -> CheckedContinuation<Void, Never>? {
      abandoned = true
      defer { continuation = nil }
      return continuation
    }
  }

  extension Socket {
    /// Asks the kernel for zero-copy sends on this socket (`setsockopt SO_ZEROCOPY`).
    ///
    /// Afterwards sendfile and ``sendZeroCopy(_:)`` pass `MSG_ZEROCOPY`: the kernel sends from
    /// the pages themselves, and each network buffer stays held (its sf_buf mapped, its page
    /// wired) until the completion notification covering it is read from the error queue,
    /// by the sender or by the completion thread (`epoll`). The first notification marked
    /// "copied" turns zero-copy off for the socket: the kernel copied anyway, so later sends
    /// copy at once and release their buffers when `sendmsg` returns.
    ///
    /// - Returns: whether the socket accepted (`EOPNOTSUPP` for a socket that cannot).
    @discardableResult
    public func enableZeroCopy() -> Bool {
      zc.withLock { s in
        if s.closed { return false }
        if s.enabled { return true }
        do { try Sys.enableZeroCopy(fd) } catch { return false }
        s.enabled = true
        s.active = true
        return true
      }
    }

    /// Whether sends use `MSG_ZEROCOPY` now: enabled, and not yet turned off by a "copied"
    /// notification.
    public var isZeroCopyActive: Bool { zc.withLock { $0.active } }

    /// The socket's zero-copy counters.
    public var zeroCopyStats: ZeroCopyStats {
      zc.withLock { s in
        var st = s.stats
        st.pending = s.pending.count
        return st
      }
    }

    /// Reads the notifications on the error queue now, without waiting
    /// (`recvmsg(MSG_ERRQUEUE)`), and releases what the completed sends held.
    /// - Returns: the number of sends reported done.
    @discardableResult
    public func reapCompletions() -> Int {
      var released: [Pending] = []
      var resume: [CheckedContinuation<Void, Never>] = []
      let n = zc.withLock { s -> Int in
        if s.closed || !s.enabled { return 0 }
        var total = 0
        withUnsafeTemporaryAllocation(of: sfb_zc_completion.self, capacity: 16) { buf in
          while true {
            let k = (try? Sys.reap(fd, buf.baseAddress!, buf.count)) ?? 0
            for c in buf[0..<k] { total += Socket.apply(c, &s, &released, &resume) }
            if k < buf.count { break }
          }
        }
        return total
      }
      released.removeAll()  // the release callbacks run here, outside the lock
      for c in resume { c.resume() }
      return n
    }

    /// Applies one notification: drops the sends it covers, counts, and turns zero-copy
    /// off when the kernel copied.
    private static func apply(
      _ c: sfb_zc_completion, _ s: inout ZeroCopyState, _ released: inout [Pending],
      _ resume: inout [CheckedContinuation<Void, Never>]
    ) -> Int {
      if c.error != 0 {
        s.stats.errors += 1
        return 0
      }
      let span = c.hi &- c.lo
      let count = Int(span) + 1
      s.stats.completed += count
      if c.copied != 0 {
        s.stats.copied += count
        s.active = false
      }
      var kept: [Pending] = []
      kept.reserveCapacity(s.pending.count)
      for p in s.pending {
        if p.id &- c.lo <= span {
          if let t = p.tracker, let w = t.done() { resume.append(w) }
          released.append(p)
        } else {
          kept.append(p)
        }
      }
      s.pending = kept
      return count
    }

    /// Waits until every zero-copy send of this socket is reported done, at most `timeout`
    /// (`poll` and `recvmsg(MSG_ERRQUEUE)`). Returns whether none is left.
    public func waitForCompletions(timeout: Duration = .seconds(10)) -> Bool {
      let deadline = monotonicNow() + timeout.inSeconds
      while true {
        reapCompletions()
        if zc.withLock({ $0.pending.isEmpty || $0.closed }) { return true }
        if monotonicNow() >= deadline { return false }
        _ = try? Sys.poll(fd, 0, timeoutMS: 5)
      }
    }

    // MARK: Recording sends (the sender's side)

    /// Before a send: when zero-copy is active, records what the send holds under the number
    /// it will get, and returns that number; else returns nil (send without `MSG_ZEROCOPY`).
    func beginZeroCopy(holding holds: [AnyObject], tracker: CompletionTracker?) -> UInt32? {
      zc.withLock { s -> UInt32? in
        guard s.active, !s.closed else { return nil }
        let id = s.nextID
        s.pending.append(Pending(id: id, holds: holds, tracker: tracker))
        tracker?.outstanding += 1
        armLocked(&s)
        return id
      }
    }

    /// After a send that queued bytes: the number is taken.
    func confirmZeroCopy(_ id: UInt32) {
      zc.withLock { s in
        s.nextID = id &+ 1
        s.stats.notifications += 1
      }
    }

    /// After a send that failed: it took no number; its record goes.
    func abortZeroCopy(_ id: UInt32) {
      var dropped: Pending? = nil
      zc.withLock { s in
        if let i = s.pending.lastIndex(where: { $0.id == id }) {
          dropped = s.pending.remove(at: i)
          if let t = dropped?.tracker { t.outstanding -= 1 }
        }
      }
      dropped = nil
    }

    /// Arms the completion thread for this socket's error queue (and writability when a task
    /// waits for it), unless armed already or nothing waits. Locked.
    func armLocked(_ s: inout ZeroCopyState) {
      guard !s.closed, !s.pending.isEmpty || !s.writeWaiters.isEmpty else { return }
      let writable = !s.writeWaiters.isEmpty
      if s.armed && (s.armedWritable || !writable) { return }
      let thread = CompletionThread.shared
      if !s.registered { thread.register(self) }
      do {
        try Sys.epollArm(
          thread.epfd, fd, add: !s.registered, writable: writable, token: token)
        s.registered = true
        s.armed = true
        s.armedWritable = writable
      } catch {
        // Not armed: the sender's own calls still reap, and waits poll.
      }
    }

    /// The completion thread saw `what` (SFB_EV_* bits) on this socket: reap, wake the
    /// tasks waiting to write, and arm again if something still waits. Returns whether
    /// anything happened (if not, the thread arms the socket again a little later).
    func handleEvent(_ what: UInt32) -> Bool {
      let reaped = reapCompletions()
      var woke: [CheckedContinuation<Void, Never>] = []
      let progress = zc.withLock { s -> Bool in
        s.armed = false
        if !s.writeWaiters.isEmpty {
          woke = Array(s.writeWaiters.values)
          s.writeWaiters = [:]
        }
        let progress = reaped > 0 || !woke.isEmpty
        if progress { armLocked(&s) }
        return progress
      }
      for c in woke { c.resume() }
      return progress
    }

    /// Arms again after an event that changed nothing.
    func rearm() {
      zc.withLock { armLocked(&$0) }
    }

    // MARK: Zero-copy send of borrowed memory

    /// Sends all of `bytes` without copying them where the socket allows it
    /// (`sendmsg(MSG_ZEROCOPY | MSG_DONTWAIT)`), and returns when the kernel is done with
    /// them: the memory may then be reused.
    ///
    /// The bytes are borrowed, never copied by this call: the kernel reads them from the
    /// caller's pages until the completion notifications of every send say it is done (on
    /// loopback it copies them then, and says so). Without zero-copy (not enabled, or turned
    /// off by a "copied" notification) the kernel copies inside `sendmsg` and the call
    /// returns as soon as everything is queued. The task never blocks a thread: a full socket
    /// and the notifications are waited for through the completion thread (`epoll`).
    ///
    /// - Precondition: `bytes` stays valid and unchanged until the call returns.
    /// - Throws: ``SendfileError`` with the bytes queued. Even then the call returns only
    ///   once the kernel is done with what was queued. Cancelling the task stops queueing
    ///   (``SendfileError/Code/interrupted``) but still waits for what was queued.
    public func sendZeroCopy(_ bytes: UnsafeRawBufferPointer) async throws(SendfileError) -> Int {
      enterSend()
      defer { leaveSend() }
      let tracker = CompletionTracker()
      var sent = 0
      var failure: SendfileError? = nil
      var copyOnly = false
      var iov = iovec()
      while sent < bytes.count {
        if isClosed {
          failure = SendfileError(.closed, bytesSent: sent)
          break
        }
        if Task.isCancelled {
          failure = SendfileError(.interrupted, bytesSent: sent)
          break
        }
        iov.iov_base = UnsafeMutableRawPointer(mutating: bytes.baseAddress! + sent)
        iov.iov_len = bytes.count - sent
        let id = copyOnly ? nil : beginZeroCopy(holding: [], tracker: tracker)
        do {
          let n = try Sys.sendmsg(fd, &iov, 1, sfb_send_flags(id == nil ? 0 : 1, 1))
          if let id { confirmZeroCopy(id) }
          sent += n
        } catch {
          if let id { abortZeroCopy(id) }
          switch error {
          case .resourceTemporarilyUnavailable: await waitForEvent()
          case .interrupted: continue
          case .noBufferSpace where id != nil:
            // The socket's notification memory (optmem) or locked-memory limit is used up:
            // wait for notifications, or copy when none is outstanding.
            if zc.withLock({ $0.pending.isEmpty }) { copyOnly = true } else { await waitForEvent() }
          default:
            failure = .sending(error, bytesSent: sent)
          }
          if failure != nil { break }
        }
      }
      await waitUntilDone(tracker)
      if let failure { throw failure }
      if tracker.abandoned { throw SendfileError(.closed, bytesSent: sent) }
      return sent
    }

    /// Suspends until the completion thread sees an event on the socket (writable, an error
    /// or a notification), the socket closes, or the task is cancelled.
    private func waitForEvent() async {
      let key = Socket.nextWaiterKey.wrappingAdd(1, ordering: .relaxed).oldValue
      await withTaskCancellationHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
          let now = zc.withLock { s -> Bool in
            if s.closed || Task.isCancelled { return true }
            s.writeWaiters[key] = c
            armLocked(&s)
            return false
          }
          if now { c.resume() }
        }
      } onCancel: {
        zc.withLock { $0.writeWaiters.removeValue(forKey: key) }?.resume()
      }
    }

    private static let nextWaiterKey = Atomic<UInt64>(1)

    /// Suspends, not cancellably, until none of the tracker's sends is outstanding or the
    /// socket closes: only then may the caller's memory be reused.
    private func waitUntilDone(_ tracker: CompletionTracker) async {
      await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let now = zc.withLock { s -> Bool in
          if tracker.outstanding == 0 || tracker.abandoned || s.closed { return true }
          tracker.continuation = c
          armLocked(&s)
          return false
        }
        if now { c.resume() }
      }
    }
  }
#endif
