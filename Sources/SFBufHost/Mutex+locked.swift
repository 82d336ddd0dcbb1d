#if os(Linux)
  import CSFBufLinux
  import Synchronization

  extension Mutex where Value: ~Copyable {
    /// Runs `body` with the value, holding the lock: `withLock(_:)`, with the hand-over of
    /// the lock told to ThreadSanitizer.
    ///
    /// `Mutex` on Linux gives a contended lock to its next owner inside the kernel (a
    /// priority-inheritance futex), where the sanitizer cannot see it, so two critical
    /// sections of the same lock look concurrent to it. Every `Mutex` of this package is
    /// taken through this method, so that a report under `--sanitize=thread` is a real
    /// race. Outside a sanitizer build the two extra calls do nothing.
    package borrowing func locked<Result: ~Copyable, E: Error>(
      _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
      let tag = withUnsafePointer(to: self) { UnsafeRawPointer($0) }
      return try withLock { (value: inout sending Value) throws(E) -> sending Result in
        sfb_tsan_acquire(tag)
        defer { sfb_tsan_release(tag) }
        return try body(&value)
      }
    }
  }
#endif
