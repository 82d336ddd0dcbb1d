// The Linux host as an sf_buf machine: a reserved window of address space, `mmap` for
// `pmap_qenter`, a futex lock for `sf_buf_lock`, futexes for sleeping.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufCore
  import Synchronization
  import SystemPackage

  /// The window of a managed pool on the Linux host.
  ///
  /// Address space reserved with `PROT_NONE` (any access where nothing is mapped faults),
  /// in *regions* of ``regionSlots`` adjacent slots, each region at the start of its own
  /// span of one page table (2 MiB with 4 KiB pages): see ``address(ofSlot:)``. Mapping a
  /// page into a slot is one `mmap(MAP_FIXED | MAP_SHARED)` of the object's page; the host
  /// kernel performs whatever TLB shootdown that needs, so ``tracksTLBs`` is false and
  /// `SFB_CPUPRIVATE` saves nothing here (its pinning contract is still checked).
  // @unchecked: raw window and lock word; `keeper` set before sharing.
  public final class HostMachine: SFBufMachine, @unchecked Sendable {
    public typealias Page = VMPage

    /// Start of the window: slot 0.
    public var base: UnsafeMutableRawPointer { layout.base }
    /// Where each slot lies.
    @usableFromInline let layout: Layout
    /// Slots in the window.
    public let nsfbufs: Int
    /// Adjacent slots per region of the window (128): page runs are at most this long
    /// (``runBoundary``).
    ///
    /// Each region starts a span of address space mapped by one page table of its own
    /// (2 MiB with 4 KiB pages), and nothing else lies in that span. The kernel takes one
    /// lock per page table for the faults, fills and teardowns of its entries: two threads
    /// mapping runs into one span wait for each other there (with two threads scanning a
    /// file through a window of 512 contiguous slots, 94–184 ns per page spun on it; none
    /// with regions). Regions cost address space (2 MiB per 128 slots), and one page table
    /// per region in use.
    public static var regionSlots: Int { 1 << regionShift }
    @usableFromInline static var regionShift: Int { 7 }
    /// The reservation that holds the window's regions (unmapped in `deinit`).
    let reservation: (start: UnsafeMutableRawPointer, length: Int)
    /// `mmap` calls made to map pages or runs into slots (successful or not).
    public var mapCalls: Int { mapCallCount.load(ordering: .relaxed) }
    private let mapCallCount = Atomic<Int>(0)
    /// Whether ``map(_:slot:)`` fills the slot's page-table entry at once (`MAP_POPULATE`)
    /// rather than at the first access. Populating is cheaper for one thread; but it runs
    /// under the process's mapping lock, which then stalls every other thread's `mmap`,
    /// while a first-access fault takes only the lock of its own mapping region.
    public let populates: Bool
    /// `madvise` calls made to release batches of slots.
    public var unmapCalls: Int { unmapCallCount.load(ordering: .relaxed) }
    private let unmapCallCount = Atomic<Int>(0)
    /// The pool lock's word: 0 free, 1 held, 2 held with sleepers (a futex).
    @usableFromInline let lockWord: UnsafeMutablePointer<Atomic<UInt32>>
    private let cpuCount = Int(sfb_cpu_count())

    /// Reserves the window.
    /// - Throws: the `mmap` errno when the address space cannot be reserved.
    init(nsfbufs: Int, populates: Bool = true) throws(Errno) {
      self.nsfbufs = nsfbufs
      self.populates = populates
      // One page table maps pageSize / 8 entries of pageSize bytes: its span is the stride.
      let stride = max(vmPageSize / 8 * vmPageSize, HostMachine.regionSlots * vmPageSize)
      let regions = (nsfbufs + HostMachine.regionSlots - 1) >> HostMachine.regionShift
      // One stride more than the regions need, so that the first can start on a multiple.
      let length = (regions + 1) * stride
      let start = try Posix.mmap(
        nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
      reservation = (start, length)
      let misalignment = Int(bitPattern: start) & (stride - 1)
      layout = Layout(
        base: start + (misalignment == 0 ? 0 : stride - misalignment),
        strideShift: stride.trailingZeroBitCount, pageSize: vmPageSize)
      lockWord = .allocate(capacity: 1)
      lockWord.initialize(to: Atomic(0))
    }

    /// Where the slots of a window lie: slot `i` at the start of region
    /// `i / regionSlots` (one stride after the region before it) plus `i % regionSlots`
    /// pages.
    @usableFromInline struct Layout: @unchecked Sendable {
      /// Slot 0.
      @usableFromInline let base: UnsafeMutableRawPointer
      /// log2 of the bytes from one region's start to the next.
      @usableFromInline let strideShift: Int
      /// The size of a slot.
      @usableFromInline let pageSize: Int

      /// The address of slot `slot`. (Inlined: a run's batch computes one per region it spans.)
      @inlinable @inline(__always) func address(ofSlot slot: Int) -> UnsafeMutableRawPointer {
        let region = (slot &>> HostMachine.regionShift) &<< strideShift
        let inRegion = (slot & (HostMachine.regionSlots &- 1)) &* pageSize
        return base + (region &+ inRegion)
      }
    }

    /// The address of slot `slot`: its region's start plus its place in the region.
    @inlinable public func address(ofSlot slot: Int) -> UnsafeMutableRawPointer {
      layout.address(ofSlot: slot)
    }

    /// The slot whose page holds `address`, or `nil` when no slot's page does (outside the
    /// window, or in the gap after a region's slots).
    public func slot(containing address: UnsafeRawPointer) -> Int? {
      let offset = address - UnsafeRawPointer(base)
      guard offset >= 0 else { return nil }
      let inRegion = (offset & ((1 << layout.strideShift) - 1)) / layout.pageSize
      guard inRegion < HostMachine.regionSlots else { return nil }
      let slot = (offset >> layout.strideShift) << HostMachine.regionShift + inRegion
      return slot < nsfbufs ? slot : nil
    }

    /// Runs stay inside one region, whose slots are adjacent.
    public var runBoundary: Int { HostMachine.regionSlots }

    deinit {
      try? Posix.munmap(reservation.start, reservation.length)
      lockWord.deinitialize(count: 1)
      lockWord.deallocate()
    }

    /// Takes the pool lock: one compare-and-swap when it is free; else a short spin, then a
    /// futex wait. Not a `pthread_mutex_t`: the uncontended path is inlined into the caller.
    @inlinable public func lock() {
      if !lockWord.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
      {
        lockContended()
      }
    }

    /// Releases the pool lock, waking one waiter if some sleep on it.
    @inlinable public func unlock() {
      if lockWord.pointee.exchange(0, ordering: .releasing) == 2 { unlockContended() }
    }

    @usableFromInline @inline(never) func lockContended() {
      for _ in 0..<100 {
        if lockWord.pointee.load(ordering: .relaxed) == 0,
          lockWord.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
        {
          return
        }
      }
      // Mark the lock contended, so that its holder wakes us; sleep while it stays held.
      while lockWord.pointee.exchange(2, ordering: .acquiring) != 0 {
        _ = Futex.wait(futexWord, 2)
      }
    }

    @usableFromInline @inline(never) func unlockContended() {
      _ = sfb_futex_wake(futexWord, 1)
    }

    private var futexWord: UnsafeMutablePointer<UInt32> {
      UnsafeMutableRawPointer(lockWord).assumingMemoryBound(to: UInt32.self)
    }

    /// One `mmap(MAP_FIXED | MAP_SHARED)` of `page` over `slot` (with `MAP_POPULATE` when
    /// ``populates``), after one `fstat` when the object is a file: a page past the file's
    /// end now (truncated since it was wired) is refused with `EINVAL`, as the direct map
    /// refuses it, rather than mapped to raise `SIGBUS` at its first touch. On refusal the
    /// slot is reserved again with `PROT_NONE`, so it maps nothing. Safe without the pool
    /// lock (``mapsConcurrently``).
    public func map(_ page: VMPage, slot: Int) throws(SFBufMapError) -> Bool {
      try mapSlots(
        slot, count: 1, of: page,
        flags: (populates ? MAP_POPULATE : 0) | HostMachine.unmergeable(slot))
      return true
    }

    /// One `mmap(MAP_SHARED | MAP_FIXED | flags)` of `count` pages from `first` over slots
    /// `slot ..< slot + count`; on refusal, `PROT_NONE` over them again.
    private func mapSlots(_ slot: Int, count: Int, of first: VMPage, flags: CInt)
      throws(SFBufMapError)
    {
      mapCallCount.add(1, ordering: .relaxed)
      let addr = address(ofSlot: slot)
      let object = first.object
      do throws(Errno) {
        try object.withDescriptor { fd throws(Errno) in
          try object.checkExists(first.index..<(first.index + count), fd: fd)
          _ = try Posix.mmap(
            addr, count * vmPageSize, object.protection, MAP_SHARED | MAP_FIXED | flags, fd,
            off_t(first.offset))
        }
      } catch {
        _ = try? Posix.mmap(
          addr, count * vmPageSize, PROT_NONE,
          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
        throw SFBufMapError(code: error.rawValue)
      }
    }

    /// A flag that differs between neighbouring slots (or runs) and changes nothing else, so
    /// that the kernel does not merge the mappings of neighbours that happen to map adjacent
    /// pages of one object: a merged region must be split again by the next remap of one of
    /// its slots, which makes that remap markedly dearer.
    static func unmergeable(_ n: Int) -> CInt { n & 1 == 1 ? MAP_NORESERVE : 0 }

    /// Runs of consecutive pages map with one `mmap`.
    public static var mapsRuns: Bool { true }

    /// `mmap` needs no pool lock: each call replaces one slot's region, which the allocator
    /// has handed to the caller alone.
    public static var mapsConcurrently: Bool { true }

    /// One `mmap(MAP_FIXED | MAP_SHARED)` of `count` consecutive pages of `first`'s object
    /// over slots `slot ..< slot + count`; refused with `EINVAL` when the last page lies past
    /// the end of its file now (see ``map(_:slot:)``). On refusal the slots are reserved again
    /// with `PROT_NONE`.
    public func map(run first: VMPage, count: Int, slot: Int) throws(SFBufMapError) -> Bool {
      try mapSlots(slot, count: count, of: first, flags: HostMachine.unmergeable(slot / count))
      return true
    }

    /// One `madvise(MADV_DONTNEED)` over the slots: their page-table entries go (one TLB
    /// shootdown for all of them when other threads run), their mappings stay, so a slot still
    /// maps its page and an access faults it back in; the next `mmap` over a slot replaces
    /// nothing present and needs no shootdown. Slots in several regions are still one call,
    /// over the gaps between them too (where nothing is mapped), so that they cost one
    /// shootdown.
    public func unmap(slots: Range<Int>) {
      guard !slots.isEmpty else { return }
      unmapCallCount.add(1, ordering: .relaxed)
      let start = address(ofSlot: slots.lowerBound)
      let end = address(ofSlot: slots.upperBound - 1) + vmPageSize
      Posix.dontNeed(start, start.distance(to: end))
    }

    public static var tracksTLBs: Bool { false }
    public var currentCPU: Int { Int(sfb_current_cpu()) }
    public var allCPUs: CPUSet { .first(cpuCount) }
    public func invalidateLocal(slot: Int) {}
    public func shootdown(slot: Int, cpus: CPUSet) {}

    @inlinable public var isPinned: Bool { sfb_pin_count() > 0 }
    @inlinable public func isWired(_ page: VMPage) -> Bool {
      page.object.wiring.count(page.index) > 0
    }
    @inlinable public func isWired(run first: VMPage, count: Int) -> Bool {
      first.object.wiring.allWired(first.index..<(first.index + count))
    }

    /// What the window keeps alive while any slot is in use (the pool that owns this
    /// machine's allocator), so that mappings need not retain it: set once by the pool,
    /// before any allocation.
    var keeper: Unmanaged<AnyObject>?

    /// Retains the `keeper`, once per busy period. Under the pool lock, never the last
    /// reference.
    public func windowBecameBusy() { _ = keeper?.retain() }

    /// Releases the `keeper`: this may deallocate the pool, and with it the allocator, which
    /// calls this from `SFBufAllocator.free(_:)` as its last action.
    public func windowBecameIdle() { keeper?.release() }

    public func makeSleeper() -> HostSleeper { HostSleeper() }
    public func prepareToSleep(_ s: HostSleeper) { s.prepare() }
    public func sleep(_ s: HostSleeper, interruptible: Bool) -> Bool {
      s.sleep(interruptible: interruptible)
    }
    public func wake(_ s: HostSleeper) { s.wake() }

    // MARK: Hazard words: one table for the process (CSFBufLinux), shared by every pool

    @inlinable public static var hazardRecords: Int { Int(SFB_HAZARD_RECORDS) }

    @inlinable public func hazard() -> SFBufHazard? {
      let r = Int(sfb_hazard_index())
      return r < 0 ? nil : SFBufHazard(record: r, word: hazardWord(r))
    }

    @inlinable public func hazardWord(_ record: Int) -> UnsafePointer<Atomic<UInt>> {
      UnsafePointer(
        (sfb_hazard_table() + record * Int(SFB_HAZARD_STRIDE)).assumingMemoryBound(
          to: Atomic<UInt>.self))
    }

    @inlinable public func hazardsHandedOut() -> Int { sfb_hazard_high_water() }

    @inlinable public func publish(_ value: UInt, in word: UnsafePointer<Atomic<UInt>>) {
      word.pointee.store(value, ordering: .releasing)
      sfb_compiler_barrier()
    }

    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`. Only called once some thread holds a
    /// hazard word, whose registration registered the process.
    public func fenceAllThreads() {
      if sfb_membarrier() != 0 {
        fatalError("membarrier(2) failed after the process registered for it: errno \(errno)")
      }
    }
  }

  /// What one waiting allocation sleeps on: a futex word for threads, a continuation for
  /// tasks. Woken at most once per sleep.
  // @unchecked: a futex word in raw memory.
  public final class HostSleeper: @unchecked Sendable {
    /// 0 until woken, then 1: a futex word.
    private let word: UnsafeMutablePointer<Atomic<UInt32>>
    private struct AsyncState {
      var woken = false
      var cancelled = false
      var continuation: CheckedContinuation<Bool, Never>?
    }
    private let async = Mutex(AsyncState())

    init() {
      word = .allocate(capacity: 1)
      word.initialize(to: Atomic(0))
    }

    deinit {
      word.deinitialize(count: 1)
      word.deallocate()
    }

    private var futexWord: UnsafeMutablePointer<UInt32> {
      UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)
    }

    func prepare() {
      word.pointee.store(0, ordering: .releasing)
      async.locked { $0 = AsyncState() }
    }

    /// Futex wait until woken. A signal ends the wait only when `interruptible`; otherwise
    /// the wait resumes, as a kernel sleep without `PCATCH` does.
    func sleep(interruptible: Bool) -> Bool {
      while word.pointee.load(ordering: .acquiring) == 0 {
        if Futex.wait(futexWord, 0) == EINTR && interruptible {
          return word.pointee.load(ordering: .acquiring) != 0
        }
      }
      return true
    }

    func wake() {
      word.pointee.store(1, ordering: .releasing)
      _ = sfb_futex_wake(futexWord, 1)
      let c = async.locked { s -> CheckedContinuation<Bool, Never>? in
        s.woken = true
        defer { s.continuation = nil }
        return s.continuation
      }
      c?.resume(returning: true)
    }

    /// Suspends the task until woken (true) or, when `interruptible`, cancelled (false).
    func sleepAsync(interruptible: Bool) async -> Bool {
      await withTaskCancellationHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
          let now = async.locked { s -> Bool? in
            if s.woken { return true }
            if s.cancelled { return false }
            s.continuation = c
            return nil
          }
          if let now { c.resume(returning: now) }
        }
      } onCancel: {
        guard interruptible else { return }
        let c = async.locked { s -> CheckedContinuation<Bool, Never>? in
          s.cancelled = true
          defer { s.continuation = nil }
          return s.woken ? nil : s.continuation
        }
        c?.resume(returning: false)
      }
    }
  }

  enum Futex {
    /// FUTEX_WAIT; returns 0, or the errno (EAGAIN, EINTR), read right after the call.
    @inline(never)
    static func wait(_ p: UnsafeMutablePointer<UInt32>, _ expected: UInt32) -> CInt {
      sfb_futex_wait(p, expected) == 0 ? 0 : errno
    }
  }

  extension VMObject {
    /// Runs `body` with the object's descriptor, counted as one of its users so that a
    /// concurrent ``close()`` waits for `body` before closing (and the number cannot be handed
    /// to another file meanwhile). Takes no lock: two threads mapping pages of one object do
    /// not serialise here.
    /// - Throws: `EBADF` once ``close()`` has begun, or what `body` throws.
    func withDescriptor<R>(_ body: (CInt) throws(Errno) -> R) throws(Errno) -> R {
      let state = descriptorUsers.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
      defer { descriptorUsers.wrappingSubtract(1, ordering: .releasing) }
      if state & VMObject.closing != 0 { throw Errno.badFileDescriptor }
      return try body(fdStorage)
    }
  }
#endif
