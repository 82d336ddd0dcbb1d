// The narrow interface between the portable sf_buf algorithm and a machine.
//
// A machine is whatever owns the window of virtual address space: the Linux host (real
// `mmap`), the simulated SMP machine (page tables and TLBs that go stale), or the bare-metal
// i386 kernel (real PTEs, `invlpg`, IPIs). The allocator never touches a page table itself.

import Synchronization

/// The identity of one physical page, as the allocator's hash sees it.
///
/// Two values are the same page exactly when they compare equal. `hashKey` must be equal for
/// equal pages; the allocator mixes it, so a plain "object number and page index" packing
/// is good enough. Give the next page of an object the next key (the page index in the
/// low bits, as such a packing does): the allocator keeps up to 64 consecutive keys in
/// adjacent buckets, which makes a run's hash work cheaper.
public protocol SFBufPageKey: Equatable {
  /// A value that is equal for equal pages.
  var hashKey: UInt { get }
}

/// A set of CPUs, numbered 0 to 63: the CPUs whose TLBs are known to hold a slot's current
/// translation (FreeBSD's `cpuset_t` in `struct sf_buf`).
public struct CPUSet: Equatable, Sendable {
  /// Bit `n` stands for CPU `n`.
  public var bits: UInt64

  /// The set of the given bits.
  @inlinable public init(bits: UInt64 = 0) { self.bits = bits }

  /// The set holding only `cpu`.
  @inlinable public init(cpu: Int) { self.bits = 1 &<< UInt64(cpu) }

  /// CPUs `0 ..< count`.
  @inlinable public static func first(_ count: Int) -> CPUSet {
    count >= 64 ? CPUSet(bits: ~0) : CPUSet(bits: (1 &<< UInt64(count)) &- 1)
  }

  /// The empty set.
  @inlinable public static var none: CPUSet { CPUSet() }

  /// Whether the set holds no CPU.
  @inlinable public var isEmpty: Bool { bits == 0 }
  /// How many CPUs the set holds.
  @inlinable public var count: Int { bits.nonzeroBitCount }
  /// Whether `cpu` is in the set.
  @inlinable public func contains(_ cpu: Int) -> Bool { bits & (1 &<< UInt64(cpu)) != 0 }
  /// Adds `cpu`.
  @inlinable public mutating func insert(_ cpu: Int) { bits |= 1 &<< UInt64(cpu) }
  /// Adds every CPU of `other`.
  @inlinable public mutating func formUnion(_ other: CPUSet) { bits |= other.bits }
  /// The CPUs of `self` that are not in `other`.
  @inlinable public func subtracting(_ other: CPUSet) -> CPUSet { CPUSet(bits: bits & ~other.bits) }
}

/// How an allocation may behave when no slot is free (`SFB_*` flags of sf_buf(9)).
public struct SFBufFlags: OptionSet, Sendable, Hashable {
  public let rawValue: Int32
  @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

  /// `SFB_CATCH`: sleep interruptibly; a signal (or task cancellation) while waiting makes
  /// the allocation fail with ``SFBufError/interrupted``.
  @inlinable public static var interruptible: SFBufFlags { SFBufFlags(rawValue: 1) }
  /// `SFB_CPUPRIVATE`: the mapping need only be valid on the calling CPU. The caller must be
  /// pinned (`sched_pin`) and touch the address on that CPU only.
  @inlinable public static var cpuPrivate: SFBufFlags { SFBufFlags(rawValue: 2) }
  /// `SFB_NOWAIT`: fail with ``SFBufError/wouldBlock`` instead of sleeping.
  @inlinable public static var noWait: SFBufFlags { SFBufFlags(rawValue: 4) }
}

/// Why an allocation returned no mapping.
///
/// The kernel interface returns `NULL` for all three; the Swift interface says which.
public enum SFBufError: Error, Equatable, Sendable {
  /// `SFB_NOWAIT` was given and every slot was in use.
  case wouldBlock
  /// `SFB_CATCH` was given and a signal (or cancellation) arrived while waiting.
  case interrupted
  /// The machine refused to map the page (`errno` from the host, or a machine code). The
  /// slot went back to the pool; the counters count the failure in `sf_allocfail`.
  case mappingRefused(errno: Int32)
}

/// The machine refused a mapping; `code` is an `errno` value on a host.
public struct SFBufMapError: Error, Sendable {
  /// The `errno` (or machine-specific code) of the refusal.
  public var code: Int32
  @inlinable public init(code: Int32) { self.code = code }
}

/// What the portable allocator needs from a machine.
///
/// Calls marked *locked* are made with the machine's pool lock held (``lock()``); the others
/// are made without it. A machine is used by one allocator.
public protocol SFBufMachine: AnyObject {
  /// A physical page.
  associatedtype Page: SFBufPageKey
  /// The state one waiting thread (or task) sleeps on.
  associatedtype Sleeper: AnyObject

  // MARK: The pool lock

  /// Takes the lock that serialises the allocator (FreeBSD's `sf_buf_lock`).
  func lock()
  /// Releases it.
  func unlock()

  // MARK: Mapping

  /// Makes `slot` map `page` (`pmap_qenter`), replacing whatever it mapped. *Locked*, unless
  /// the machine ``mapsConcurrently``.
  ///
  /// - Returns: whether the slot's previous translation was valid **and** had been used
  ///   (accessed bit set), that is, whether some TLB may still hold it.
  /// - Throws: when the machine cannot map the page. The slot must then map nothing (or
  ///   still its old page); the allocator forgets its old page either way.
  func map(_ page: Page, slot: Int) throws(SFBufMapError) -> Bool

  /// Whether this machine keeps per-CPU TLBs that the allocator must invalidate. When false
  /// (a host whose kernel keeps TLBs coherent), the CPU-set rules are skipped entirely.
  static var tracksTLBs: Bool { get }
  /// The CPU the caller runs on. Read with the lock held.
  var currentCPU: Int { get }
  /// Every CPU of the machine.
  var allCPUs: CPUSet { get }
  /// Invalidates `slot`'s translation in the calling CPU's TLB (`invlpg`). *Locked.*
  func invalidateLocal(slot: Int)
  /// Invalidates `slot`'s translation on every CPU of `cpus` (one inter-processor
  /// interrupt to the set, waited for). `cpus` never holds the calling CPU. *Locked.*
  func shootdown(slot: Int, cpus: CPUSet)

  // MARK: Caller checks

  /// Whether the calling thread is pinned to its CPU (`sched_pin`).
  var isPinned: Bool { get }
  /// Whether `page` is wired (`vm_page_wire`); only wired pages may be mapped.
  func isWired(_ page: Page) -> Bool

  // MARK: Sleeping

  /// A new sleeper. Called rarely (when more allocations wait at once than ever before),
  /// with the lock held: the allocator keeps sleepers and reuses them for later waits, of
  /// any thread.
  func makeSleeper() -> Sleeper
  /// Readies `sleeper` for one sleep of the calling thread: a ``wake(_:)`` after this call
  /// must not be lost. *Locked.*
  func prepareToSleep(_ sleeper: Sleeper)
  /// Blocks until ``wake(_:)`` is called for `sleeper` (returns `true`) or, only when
  /// `interruptible`, until a signal arrives (returns `false`). Called without the lock.
  func sleep(_ sleeper: Sleeper, interruptible: Bool) -> Bool
  /// Ends the sleep of `sleeper`. *Locked.*
  func wake(_ sleeper: Sleeper)

  // MARK: Batches and runs (optional: see the defaults below)

  /// Drops the translations of the free slots `slots` (a contiguous range) with one call, so
  /// that the next ``map(_:slot:)`` of each replaces nothing present and needs no TLB
  /// shootdown. Each slot must still map its page afterwards (a later access may fault it
  /// back in), because the allocator keeps the slots cached. *Locked.*
  func unmap(slots: Range<Int>)

  /// Whether ``map(run:count:slot:)`` maps runs of consecutive pages with one call.
  static var mapsRuns: Bool { get }

  /// Whether ``map(_:slot:)`` may be called *without* the lock, by several threads at once
  /// (each for a slot of its own), while other threads hold the lock. The batched policy
  /// then maps outside the lock, so that one thread's slow mapping call does not stall the
  /// others' hits, frees and misses. False by default.
  static var mapsConcurrently: Bool { get }

  /// Makes slots `slot ..< slot + count` map `count` consecutive pages of one object, the
  /// first being `first`, with one call. Only called when ``mapsRuns`` is true. *Locked.*
  ///
  /// - Returns: as ``map(_:slot:)``, for the run as a whole.
  /// - Throws: when the machine cannot map the run; then none of the slots maps anything.
  func map(run first: Page, count: Int, slot: Int) throws(SFBufMapError) -> Bool

  /// Whether the `count` consecutive pages of one object from `first` are all wired
  /// (``isWired(_:)`` of each, at once). Only called when ``mapsRuns`` is true.
  func isWired(run first: Page, count: Int) -> Bool

  /// A page run that maps never crosses a multiple of this many slots: only within such a
  /// stretch are a run's slots adjacent in the machine's address space (the host spreads its
  /// window's stretches over separate page tables). Runs that map are at most this long; a
  /// run of hits, over pages earlier runs left cached, may be longer and cross it.
  /// Unbounded by default.
  var runBoundary: Int { get }

  // MARK: Slots in use (optional)

  /// The window went from no slot in use to one (`nsfbufsused` from 0 to 1). *Locked.* A
  /// machine that keeps something alive while slots are in use (the host keeps its pool)
  /// takes it here: once for the whole period, not once per slot, so that threads mapping
  /// pages at once do not share a reference count that changes on every page.
  func windowBecameBusy()

  /// The window went back to no slot in use (`nsfbufsused` to 0). Called without the lock
  /// by ``SFBufAllocator/free(_:)`` and ``SFBufAllocator/free(slots:)``, as their last
  /// action, so the machine may let go of the last reference to the allocator's owner here.
  /// Inside an allocation (a lock-free hit that lost a race with a recycling, a refused
  /// mapping) it may be called with the lock held: the allocation's caller keeps the
  /// allocator alive then. Calls made without the lock may come after the next
  /// ``windowBecameBusy()``: the two alternate under the lock, and every busy period gets
  /// exactly one of each.
  func windowBecameIdle()

  // MARK: Hits without a reference (optional: see the defaults below)

  /// How many hazard words the machine's table holds: one per thread that asks for one,
  /// each on a cache line of its own. 0 (the default): the machine has none, and every hit
  /// takes a reference. See ``SFBufAllocator/beginHit(_:flags:hazard:)``.
  static var hazardRecords: Int { get }
  /// The calling thread's hazard word (handed out on its first call), or `nil` when the
  /// table is full or the machine cannot make the barrier of ``fenceAllThreads()``.
  func hazard() -> SFBufHazard?
  /// Hazard word `record`: the address of the slot line its thread reads without a
  /// reference, or 0.
  func hazardWord(_ record: Int) -> UnsafePointer<Atomic<UInt>>
  /// One more than the highest record handed out so far: the words a scan reads. Never
  /// decreases; a record handed out is visible here before its thread publishes a hazard.
  func hazardsHandedOut() -> Int
  /// Stores `value` in the calling thread's hazard `word` with release ordering, and keeps
  /// the compiler from moving the loads that follow before the store. No processor fence:
  /// the reclaimer's ``fenceAllThreads()`` stands for it.
  func publish(_ value: UInt, in word: UnsafePointer<Atomic<UInt>>)
  /// Returns once every thread of the machine has executed a full memory barrier: each
  /// thread's stores before its barrier are then visible to the caller, and the caller's
  /// stores before this call to each thread's loads after its barrier (Linux's
  /// `membarrier(2)`). Called with or without the lock.
  func fenceAllThreads()
}

/// One thread's hazard word, on a machine that has them (``SFBufMachine/hazardRecords``).
public struct SFBufHazard {
  /// The word's record in the machine's table.
  public let record: Int
  /// The word.
  public let word: UnsafePointer<Atomic<UInt>>

  @inlinable public init(record: Int, word: UnsafePointer<Atomic<UInt>>) {
    self.record = record
    self.word = word
  }
}

extension SFBufMachine {
  /// By default a batch release does nothing: the slots keep their translations, and the
  /// batched policy behaves as the faithful one.
  @inlinable public func unmap(slots: Range<Int>) {}

  /// By default a machine maps one page per call.
  @inlinable public static var mapsRuns: Bool { false }

  /// By default a run may take any adjacent slots.
  @inlinable public var runBoundary: Int { .max }

  /// By default a machine maps only with the lock held.
  @inlinable public static var mapsConcurrently: Bool { false }

  /// By default nothing is kept alive while slots are in use.
  @inlinable public func windowBecameBusy() {}

  /// By default nothing is kept alive while slots are in use.
  @inlinable public func windowBecameIdle() {}

  /// By default a machine has no hazard words.
  @inlinable public static var hazardRecords: Int { 0 }
  @inlinable public func hazard() -> SFBufHazard? { nil }
  /// Never called when ``hazardRecords`` is 0.
  public func hazardWord(_ record: Int) -> UnsafePointer<Atomic<UInt>> {
    fatalError("SFBufMachine.hazardWord(_:): this machine has no hazard words")
  }
  @inlinable public func hazardsHandedOut() -> Int { 0 }
  /// Never called when ``hazardRecords`` is 0.
  @inlinable public func publish(_ value: UInt, in word: UnsafePointer<Atomic<UInt>>) {
    word.pointee.store(value, ordering: .releasing)
  }
  @inlinable public func fenceAllThreads() {}

  /// Never called when ``mapsRuns`` is false.
  public func map(run first: Page, count: Int, slot: Int) throws(SFBufMapError) -> Bool {
    fatalError("SFBufMachine.map(run:count:slot:): this machine does not map runs")
  }

  /// Never called when ``mapsRuns`` is false.
  public func isWired(run first: Page, count: Int) -> Bool {
    fatalError("SFBufMachine.isWired(run:count:): this machine does not map runs")
  }
}

/// How a pool recycles free slots when a miss needs one.
public enum SFBufReclaimPolicy: Equatable, Sendable {
  /// The original: each miss remaps the least recently freed slot on its own, replacing its
  /// translation (on a host with other threads running, one TLB shootdown per miss).
  case faithful
  /// When the least recently freed slot still has its translation, drop the translations of
  /// the `batch` least recently freed slots at once (``SFBufMachine/unmap(slots:)``, one
  /// call per stretch of the window between slots in use), so that the next misses map into
  /// slots with nothing present. Which slot a miss takes, and every count, is as `.faithful`.
  ///
  /// On a machine that ``SFBufMachine/mapsConcurrently``, a miss also maps its slot without
  /// the lock: it claims the slot and enters the page in the hash under the lock, maps, and
  /// takes the lock again to publish the mapping. Meanwhile an allocation of the same page
  /// waits for that mapping (as it would have waited for the lock), whatever its flags.
  case batched(batch: Int)
}
