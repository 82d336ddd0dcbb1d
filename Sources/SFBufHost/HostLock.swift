#if os(Linux)
  import Glibc

  /// A `pthread_mutex_t` at a stable address: the small locks of the host
  /// layer. `lock()` and `unlock()` pair up like the kernel's `mtx_lock` / `mtx_unlock`.
  @usableFromInline
  final class HostLock: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
      mutex = .allocate(capacity: 1)
      mutex.initialize(to: pthread_mutex_t())
      let r = pthread_mutex_init(mutex, nil)
      precondition(r == 0, "pthread_mutex_init failed: \(r)")
    }

    deinit {
      pthread_mutex_destroy(mutex)
      mutex.deallocate()
    }

    @inlinable func lock() { pthread_mutex_lock(mutex) }
    @inlinable func unlock() { pthread_mutex_unlock(mutex) }
  }
#endif
