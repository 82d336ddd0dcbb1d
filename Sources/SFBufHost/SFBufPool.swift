// The public Swift API: a pool of temporary page mappings, direct map or managed window.

#if os(Linux)
  import Glibc
  import SFBufCore
  import SystemPackage

  /// A source of short-lived virtual mappings of single pages (FreeBSD's sf_buf(9)).
  ///
  /// A pool is one of two implementations, chosen when it is made:
  /// - **direct map** (``directMap()``): each object is mapped whole, once; a page's address is
  ///   arithmetic. Never sleeps, counts nothing, costs one address space range per object.
  /// - **window** (``init(nsfbufs:)``): `nsfbufs` one-page slots of one reserved range.
  ///   Freed mappings stay cached and are found again; when every slot is in use an
  ///   allocation sleeps, or fails with `.noWait`. Bounded address space whatever the
  ///   objects' sizes, at the price of an `mmap` per miss.
  ///
  /// Pages must be wired (``VMPage/wire()``) before they are mapped; freeing a mapping never
  /// unwires its page. A pool is safe to use from any number of threads and tasks.
  public final class SFBufPool: @unchecked Sendable {
    /// The `SFB_*` flags.
    public typealias Flags = SFBufFlags
    /// The portable allocator behind a window pool, over the host machine.
    public typealias Window = SFBufAllocator<HostMachine>

    /// The window allocator, or `nil` for a direct map.
    public let window: Window?
    @usableFromInline let base: UnsafeMutableRawPointer?

    /// A direct-map pool. Cheap: objects are mapped when their first page is allocated.
    public static func directMap() -> SFBufPool { SFBufPool(window: nil) }

    /// A window pool of `nsfbufs` slots (see ``maxSlots``).
    /// - Throws: ``SFBufConfigError`` when `nsfbufs` is out of range or the window's address
    ///   space cannot be reserved.
    public convenience init(nsfbufs: Int) throws(SFBufConfigError) {
      guard (1...SFBufPool.maxSlots).contains(nsfbufs) else {
        throw .outOfRange(setting: "nsfbufs", value: String(nsfbufs))
      }
      do {
        self.init(window: Window(machine: try HostMachine(nsfbufs: nsfbufs), nsfbufs: nsfbufs))
      } catch {
        throw .cannotReserve(slots: nsfbufs, error)
      }
    }

    private init(window: Window?) {
      self.window = window
      self.base = window?.machine.base
    }

    /// The largest window: each slot can be a mapping region of its own, and the host allows
    /// about 65530 per process (`vm.max_map_count`), which the process needs for other things.
    public static let maxSlots = 32768

    /// Whether this pool is a direct map.
    public var isDirectMap: Bool { window == nil }

    /// The counters (all zero for a direct map, which counts nothing).
    public var stats: SFBufStats { window?.stats ?? SFBufStats() }

    /// `mmap` calls made to map pages into window slots (0 for a direct map).
    public var mapCalls: Int {
      guard let window else { return 0 }
      window.machine.lock()
      defer { window.machine.unlock() }
      return window.machine.mapCalls
    }

    // MARK: Allocation

    /// Maps `page`, returning a handle that frees the mapping when it goes away
    /// (`sf_buf_alloc`).
    ///
    /// Cost: direct map, two loads; window hit, a lock and a hash lookup; window miss, one
    /// `mmap` (about 3 µs); a full window sleeps unless `.noWait`.
    /// - Precondition: `page` is wired; with `.cpuPrivate`, the thread is pinned
    ///   (``sched_pin()``). Otherwise the process stops with a message naming the mistake.
    /// - Throws: ``SFBufError/wouldBlock``, ``SFBufError/interrupted`` (a signal, with
    ///   `.interruptible`), or ``SFBufError/mappingRefused(errno:)``.
    @inlinable
    public func allocate(_ page: VMPage, flags: Flags = []) throws(SFBufError) -> SFBuf {
      guard let window else { return try directAllocate(page) }
      let slot = try window.allocate(page, flags: flags)
      return SFBuf(pool: self, slot: slot, page: page, address: base! + slot * vmPageSize)
    }

    /// Maps `page`, suspending the task while the window is full (`sf_buf_alloc` for tasks).
    ///
    /// Tasks and threads wait in one first-come, first-served queue. With `.interruptible`,
    /// cancelling the task ends the wait with ``SFBufError/interrupted``; without it,
    /// cancellation is ignored until a slot is free, as a kernel sleep without `PCATCH`.
    public func allocate(_ page: VMPage, flags: Flags = []) async throws(SFBufError) -> SFBuf {
      guard let window else { return try directAllocate(page) }
      var waiter: Window.Waiter? = nil
      while true {
        if let slot = try window.tryAllocate(page, flags: flags, waiter: &waiter) {
          return SFBuf(pool: self, slot: slot, page: page, address: base! + slot * vmPageSize)
        }
        let woke = await waiter!.sleeper.sleepAsync(
          interruptible: flags.contains(.interruptible))
        if !woke {
          window.abandon(waiter!)
          throw .interrupted
        }
      }
    }

    /// Maps `page` for the duration of `body`, which receives the page's bytes.
    ///
    /// - Throws: what ``allocate(_:flags:)`` throws, or what `body` throws.
    public func withMapping<R>(
      of page: VMPage, flags: Flags = [], _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
      let buf = try allocate(page, flags: flags)
      return try body(buf.bytes)
    }

    @usableFromInline
    func directAllocate(_ page: VMPage) throws(SFBufError) -> SFBuf {
      if !page.object.wiring.isWired(page.index) {
        fatalError("sf_buf_alloc: the page is not wired (wire it before mapping it)")
      }
      let address = try page.object.directMapping().address(of: page.index)
      return SFBuf(pool: self, slot: -1, page: page, address: address)
    }

    /// Drops the reference of a slot (window) or nothing (direct map).
    @inlinable func release(slot: Int) {
      if slot >= 0 { window!.free(slot) }
    }
  }

  extension WireTable {
    @usableFromInline func isWired(_ index: Int) -> Bool { count(index) > 0 }
  }

  /// A mapping of one page: its address is valid until the handle goes away.
  ///
  /// Non-copyable: exactly one owner frees it, exactly once, when it goes out of scope or
  /// when ``free()`` consumes it. To split one mapping among several owners, hand it over to
  /// a C-style ``sf_buf`` (``release()``) and use ``SFBufPool/sf_buf_ref(_:)``.
  ///
  /// The handle keeps its pool alive, and on a direct map its object too (on a window, the
  /// slot's cached page does).
  @frozen
  public struct SFBuf: ~Copyable, @unchecked Sendable {
    @usableFromInline let _pool: Unmanaged<SFBufPool>
    @usableFromInline let _object: Unmanaged<VMObject>
    /// The window slot, or -1 on a direct map.
    public let slot: Int
    /// The index of the page mapped in its object.
    public let pageIndex: Int
    /// Where the page is mapped (`sf_buf_kva`).
    public let address: UnsafeMutableRawPointer

    /// Takes +1 on the pool, and on the object for a direct map.
    @inlinable
    init(pool: SFBufPool, slot: Int, page: VMPage, address: UnsafeMutableRawPointer) {
      _pool = Unmanaged.passRetained(pool)
      _object =
        slot < 0 ? Unmanaged.passRetained(page.object) : Unmanaged.passUnretained(page.object)
      self.slot = slot
      self.pageIndex = page.index
      self.address = address
    }

    /// The pool the mapping came from.
    @inlinable public var pool: SFBufPool { _pool.takeUnretainedValue() }

    /// The page mapped (`sf_buf_page`).
    @inlinable public var page: VMPage {
      VMPage(object: _object.takeUnretainedValue(), index: pageIndex)
    }

    /// The page's bytes. Writing them needs an object opened for writing.
    @inlinable public var bytes: UnsafeMutableRawBufferPointer {
      UnsafeMutableRawBufferPointer(start: address, count: vmPageSize)
    }

    /// Frees the mapping now (`sf_buf_free`).
    @inlinable public consuming func free() {}

    /// Hands the mapping over to a C-style ``sf_buf`` handle, which must then be freed with
    /// ``SFBufPool/sf_buf_free(_:)`` (or ``sf_buf_free(_:)`` for the default pool).
    @inlinable public consuming func release() -> sf_buf {
      let h = sf_buf(pool: pool, slot: slot, page: page, address: address)
      _pool.release()
      if slot < 0 { _object.release() }
      discard self
      return h
    }

    @inlinable deinit {
      _pool.takeUnretainedValue().release(slot: slot)
      _pool.release()
      if slot < 0 { _object.release() }
    }
  }

  /// Why a pool could not be made.
  public enum SFBufConfigError: Error, CustomStringConvertible, Equatable {
    /// A setting has a value that is not a whole number in range.
    case outOfRange(setting: String, value: String)
    /// The window's address space could not be reserved.
    case cannotReserve(slots: Int, Errno)

    public var description: String {
      switch self {
      case .outOfRange(let setting, let value):
        "\(setting)=\(value) is not a number of slots between 1 and \(SFBufPool.maxSlots)"
      case .cannotReserve(let slots, let e):
        "cannot reserve a window of \(slots) slots: \(e)"
      }
    }
  }
#endif
