#if os(Linux)
  import Glibc

  /// Map-ahead for a reader that goes through pages of an object in order: while the reader
  /// reads one run, a helper thread maps the next as a page run and fills its page-table
  /// entries (`MADV_POPULATE_READ`), so that the reader finds it ready, its first touches
  /// free of faults.
  ///
  /// ```swift
  /// let ahead = try SFBufReadAhead(pool: pool, object: file, pages: 0..<pageCount)
  /// while let run = try ahead.next() {
  ///   for i in 0..<run.count { consume(run.address(i)) }
  /// }  // each run is freed, in one step, when the reader lets it go
  /// ```
  ///
  /// The runs mapped ahead are slots in use of the same window, at most `depth` runs. The
  /// helper asks with `SFB_NOWAIT`: when the window is full it maps less, or nothing, and
  /// the reader maps the run itself (sleeping for slots as an allocation does), so a full
  /// window means less read-ahead, never a deadlock. Runs come back in order, each covering
  /// the pages after the last. A reader that finds its next run still being mapped maps a
  /// later one meanwhile (with a `depth` of 2 or more), so that two threads map. When the
  /// reader must sleep for slots, it first gives back the runs mapped ahead of it. Letting
  /// the reader go stops the helper and frees the runs it mapped ahead.
  ///
  /// Measure before you use it. On the 2-CPU virtual machine this was built on it gained
  /// nothing over a reader that maps its own runs (``SFBufPool/allocateRun(of:pages:flags:_:)``):
  /// the helper's mapping of a run, with the teardown of the slots it reuses and the TLB
  /// shootdowns that interrupt the reader's CPU, cost more per page than the reading, so
  /// the reader waited for it; the README's "Performance" gives the figures.
  ///
  /// - Precondition: the pages are wired for as long as the reader lives.
  public final class SFBufReadAhead {
    /// Where the mappings come from.
    public var pool: SFBufPool { state.pool }
    /// The object read.
    public var object: VMObject { state.object }
    /// The pages read, in order.
    public var pages: Range<Int> { state.pages }
    /// Pages per run.
    public var runLength: Int { state.runLength }
    /// Runs mapped ahead of the reader, at most.
    public var depth: Int { state.depth }
    /// Runs the helper mapped ahead, and runs the reader had to map itself (the helper was
    /// behind, or the window was full).
    public var counts: (ahead: Int, byReader: Int) { state.counts }

    private let state: ReadAheadState

    /// Starts the helper thread.
    /// - Parameters:
    ///   - pool: where the mappings come from.
    ///   - object: the object read.
    ///   - pages: the pages read, in order; wired for as long as the reader lives.
    ///   - runLength: pages per run (at least 1). On a window, at most
    ///     `nsfbufs / (depth + 2)`, so that the runs mapped ahead, the run the reader holds
    ///     and the one it maps can never fill the window by themselves.
    ///   - depth: runs mapped ahead at most (at least 1). With 2 or more, a reader that
    ///     finds its next run still being mapped maps a later one meanwhile; on the 2-CPU
    ///     machine this was measured on, the two threads' `mmap` calls then contend for the
    ///     process's mapping lock and the scan got slower, hence the default of 1.
    /// - Throws: `SFBufError.mappingRefused(errno:)` with the error of `pthread_create`
    ///   when no thread can be started.
    public init(
      pool: SFBufPool, object: VMObject, pages: Range<Int>, runLength: Int = 64, depth: Int = 1
    ) throws(SFBufError) {
      precondition(runLength >= 1 && depth >= 1, "SFBufReadAhead: runLength and depth >= 1")
      let cap = max(1, pool.nsfbufs / (depth + 2))
      let run = pool.isDirectMap ? runLength : min(runLength, cap)
      state = ReadAheadState(
        pool: pool, object: object, pages: pages, runLength: run, depth: depth)
      try state.start()
    }

    /// Stops the helper and frees what it mapped ahead.
    deinit { state.stop() }

    /// The next run, mapped (and, when the helper mapped it, its page-table entries
    /// filled); `nil` after the last page. Sleeps only as
    /// ``SFBufPool/allocateBatch(of:pages:flags:)`` does, when the helper could not map the
    /// run and the window is full.
    /// - Throws: what ``SFBufPool/allocateBatch(of:pages:flags:)`` throws.
    public func next() throws(SFBufError) -> SFBufBatch? { try state.next() }
  }

  /// The state the reader and the helper thread share, guarded by `mutex`; the helper
  /// retains it while it runs. Runs are numbered from 0; run `r` waits in ring entry
  /// `r % depth` from the time it is claimed until the reader takes it.
  // @unchecked: every mutable field is read and written with `mutex` held.
  final class ReadAheadState: @unchecked Sendable {
    let pool: SFBufPool
    let object: VMObject
    let pages: Range<Int>
    let runLength: Int
    let depth: Int
    let runCount: Int

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let ring: UnsafeMutablePointer<SFBufBatch>
    private enum Entry { case empty, mapping, ready }
    private var entries: [Entry]
    /// The next run nobody has claimed, and the next run the reader takes.
    private var nextClaim = 0
    private var nextTake = 0
    /// Pages of the run taken last that its mapper could not have (a full window).
    private var remainder: Range<Int>? = nil
    /// The helper found the window full: it waits for the reader before trying again.
    private var starved = false
    /// The reader is mapping a run itself, and may sleep for slots: the helper must not
    /// take any meanwhile.
    private var readerMapping = false
    private var stopping = false
    private var helper = pthread_t()
    private var ahead = 0
    private var byReader = 0

    init(pool: SFBufPool, object: VMObject, pages: Range<Int>, runLength: Int, depth: Int) {
      self.pool = pool
      self.object = object
      self.pages = pages
      self.runLength = runLength
      self.depth = depth
      runCount = (pages.count + runLength - 1) / runLength
      ring = .allocate(capacity: depth)
      entries = Array(repeating: .empty, count: depth)
      pthread_mutex_init(mutex, nil)
      pthread_cond_init(changed, nil)
    }

    deinit {
      ring.deallocate()
      pthread_cond_destroy(changed)
      pthread_mutex_destroy(mutex)
      mutex.deallocate()
      changed.deallocate()
    }

    var counts: (ahead: Int, byReader: Int) {
      pthread_mutex_lock(mutex)
      defer { pthread_mutex_unlock(mutex) }
      return (ahead, byReader)
    }

    func start() throws(SFBufError) {
      let me = Unmanaged.passRetained(self).toOpaque()
      let r = pthread_create(
        &helper, nil,
        { arg in
          Unmanaged<ReadAheadState>.fromOpaque(arg!).takeRetainedValue().helperLoop()
          return nil
        }, me)
      if r != 0 {
        Unmanaged<ReadAheadState>.fromOpaque(me).release()
        stopping = true
        throw .mappingRefused(errno: r)
      }
    }

    func pages(ofRun r: Int) -> Range<Int> {
      let first = pages.lowerBound + r * runLength
      return first..<min(first + runLength, pages.upperBound)
    }

    /// Whether a run may be claimed for mapping ahead: there is one, and room in the ring.
    private var canClaim: Bool { nextClaim < runCount && nextClaim - nextTake < depth }

    func next() throws(SFBufError) -> SFBufBatch? {
      pthread_mutex_lock(mutex)
      if let rest = remainder {
        remainder = nil
        return try mapHere(rest)
      }
      while true {
        let k = nextTake
        guard k < runCount else {
          pthread_mutex_unlock(mutex)
          return nil
        }
        if nextClaim == k {
          // Nobody has it, and no later run is mapped: map it here.
          nextClaim += 1
          nextTake += 1
          byReader += 1
          starved = false
          return try mapHere(pages(ofRun: k))
        }
        if entries[k % depth] == .ready {
          let run = (ring + k % depth).move()
          entries[k % depth] = .empty
          nextTake += 1
          starved = false
          let want = pages(ofRun: k)
          pthread_cond_broadcast(changed)
          if run.count == 0 {
            byReader += 1
            return try mapHere(want)
          }
          if run.count < want.count { remainder = (want.lowerBound + run.count)..<want.upperBound }
          pthread_mutex_unlock(mutex)
          return run
        }
        // Run k is being mapped by the helper: map a later one meanwhile, or wait.
        if canClaim && !starved {
          mapClaimed()
        } else {
          pthread_cond_wait(changed, mutex)
        }
      }
    }

    /// Maps `want` for the reader, sleeping for slots if need be. The helper claims nothing
    /// meanwhile, and runs already mapped ahead are given back first when the window cannot
    /// take `want` without sleeping (they will be mapped again), so that what the reader
    /// sleeps for is held by others only. Locked on entry, unlocked on return.
    private func mapHere(_ want: Range<Int>) throws(SFBufError) -> SFBufBatch {
      readerMapping = true
      defer {
        pthread_mutex_lock(mutex)
        readerMapping = false
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
      }
      while entries.contains(.mapping) { pthread_cond_wait(changed, mutex) }
      guard entries.contains(.ready) else {
        pthread_mutex_unlock(mutex)
        return try pool.allocateBatch(of: object, pages: want)
      }
      pthread_mutex_unlock(mutex)
      let got = try pool.allocateBatch(of: object, pages: want, flags: .noWait)
      if got.count == want.count { return got }
      pthread_mutex_lock(mutex)
      for e in 0..<depth where entries[e] == .ready {
        (ring + e).move().free()
        entries[e] = .empty
      }
      nextClaim = nextTake
      if got.count > 0 { remainder = (want.lowerBound + got.count)..<want.upperBound }
      pthread_mutex_unlock(mutex)
      if got.count > 0 { return got }
      return try pool.allocateBatch(of: object, pages: want)
    }

    /// Claims the next run, maps it without sleeping (fewer pages, or none, when the window
    /// is full) and fills its page-table entries, then puts it in the ring. Locked on entry
    /// and on return; unlocked while mapping.
    private func mapClaimed() {
      let r = nextClaim
      nextClaim += 1
      entries[r % depth] = .mapping
      pthread_mutex_unlock(mutex)
      let run: SFBufBatch
      do {
        run = try pool.allocateBatch(of: object, pages: pages(ofRun: r), flags: .noWait)
      } catch {
        // The reader meets the error itself when it maps these pages.
        run = SFBufBatch(pool: pool, capacity: 1)
      }
      populate(run)
      pthread_mutex_lock(mutex)
      if run.count == 0 { starved = true } else { ahead += 1 }
      (ring + r % depth).initialize(to: run)
      entries[r % depth] = .ready
      pthread_cond_broadcast(changed)
    }

    /// Stops the helper, waits for it, and frees the runs mapped ahead.
    func stop() {
      pthread_mutex_lock(mutex)
      let running = !stopping
      stopping = true
      pthread_cond_broadcast(changed)
      pthread_mutex_unlock(mutex)
      if running { pthread_join(helper, nil) }
      pthread_mutex_lock(mutex)
      for e in 0..<depth where entries[e] == .ready {
        (ring + e).move().free()
        entries[e] = .empty
      }
      pthread_mutex_unlock(mutex)
    }

    private func helperLoop() {
      pthread_mutex_lock(mutex)
      while true {
        while !stopping && (!canClaim || starved || readerMapping) {
          pthread_cond_wait(changed, mutex)
        }
        if stopping { break }
        mapClaimed()
      }
      pthread_mutex_unlock(mutex)
    }

    /// Fills the page-table entries of the run's mappings: one `madvise(MADV_POPULATE_READ)`
    /// per stretch of adjacent addresses (a page run is one), else a read of each page.
    private func populate(_ run: borrowing SFBufBatch) {
      let size = vmPageSize
      var i = 0
      while i < run.count {
        let start = run.address(i)
        var n = 1
        while i + n < run.count && run.address(i + n) == start + n * size { n += 1 }
        if madvise(start, n * size, Self.populateRead) != 0 {
          // Before Linux 5.14: touch each page instead.
          for k in 0..<n { _ = (start + k * size).load(as: UInt8.self) }
        }
        i += n
      }
    }

    /// `MADV_POPULATE_READ` (Linux 5.14), which older C headers lack.
    static let populateRead: Int32 = 22
  }
#endif
