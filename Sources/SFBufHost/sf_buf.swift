// The kernel interface, names and all: sf_buf_alloc, sf_buf_kva, sf_buf_page, sf_buf_free,
// sf_buf_ref and the SFB_* flags, on the process-wide default pool or on an explicit one.

#if os(Linux)
  import SFBufCore

  /// `SFB_DEFAULT`: sleep until a slot is free, not interruptible.
  public let SFB_DEFAULT: Int32 = 0
  /// `SFB_CATCH`: sleep interruptibly; a signal while waiting makes `sf_buf_alloc` return nil.
  public let SFB_CATCH: Int32 = SFBufFlags.interruptible.rawValue
  /// `SFB_CPUPRIVATE`: the mapping need only be valid on the calling, pinned CPU.
  public let SFB_CPUPRIVATE: Int32 = SFBufFlags.cpuPrivate.rawValue
  /// `SFB_NOWAIT`: return nil rather than sleep.
  public let SFB_NOWAIT: Int32 = SFBufFlags.noWait.rawValue

  /// A reference to a mapping, as the kernel's `struct sf_buf *`: copyable, freed by hand.
  ///
  /// Each ``sf_buf_alloc(_:_:)`` or ``sf_buf_ref(_:)`` must be matched by one ``sf_buf_free(_:)``
  /// on the pool it came from. On a window pool, freeing a mapping that has no reference
  /// left, or through another pool, stops the process with a message; so does freeing (or
  /// referencing) a handle whose mapping was freed and whose slot has since gone back to use,
  /// for another page or the same one (the handle records which period of use of its slot it
  /// belongs to). On a direct map the handle is the page and freeing is a no-op, as in the
  /// kernel.
  // @unchecked: a raw address, valid across threads.
  public struct sf_buf: Equatable, @unchecked Sendable {
    @usableFromInline let pool: SFBufPool
    @usableFromInline let slot: Int
    @usableFromInline let page: VMPage
    @usableFromInline let address: UnsafeMutableRawPointer
    /// The slot's period of use when the handle was made (0 on a direct map).
    @usableFromInline let generation: UInt32

    @usableFromInline
    init(
      pool: SFBufPool, slot: Int, page: VMPage, address: UnsafeMutableRawPointer,
      generation: UInt32
    ) {
      self.pool = pool
      self.slot = slot
      self.page = page
      self.address = address
      self.generation = generation
    }

    /// Two handles are equal when they are the same mapping: the same pool, slot, page and
    /// period of use of the slot.
    public static func == (a: sf_buf, b: sf_buf) -> Bool {
      a.pool === b.pool && a.slot == b.slot && a.page == b.page && a.generation == b.generation
    }
  }

  /// `sf_buf_kva(sf)`: the address at which the page is mapped, valid until the last
  /// reference is freed.
  @inlinable public func sf_buf_kva(_ sf: sf_buf) -> UnsafeMutableRawPointer { sf.address }

  /// `sf_buf_page(sf)`: the page originally passed to `sf_buf_alloc`.
  @inlinable public func sf_buf_page(_ sf: sf_buf) -> VMPage { sf.page }

  /// `sf_buf_alloc(m, flags)` on the default pool (``SFBufPool/default``).
  @inlinable public func sf_buf_alloc(_ m: VMPage, _ flags: Int32) -> sf_buf? {
    SFBufPool.default.sf_buf_alloc(m, flags)
  }

  /// `sf_buf_free(sf)` on the default pool.
  @inlinable public func sf_buf_free(_ sf: sf_buf) { SFBufPool.default.sf_buf_free(sf) }

  /// `sf_buf_ref(sf)` on the default pool.
  @inlinable public func sf_buf_ref(_ sf: sf_buf) { SFBufPool.default.sf_buf_ref(sf) }

  extension SFBufPool {
    /// `sf_buf_alloc(m, flags)`: a mapping of `m`, or nil when the window is full and
    /// `SFB_NOWAIT` was given, when a signal interrupted an `SFB_CATCH` sleep, or when the
    /// host refused the mapping. `allocate(_:flags:)` says which.
    ///
    /// - Precondition: `flags` holds only `SFB_*` bits; `m` is wired.
    @inlinable public func sf_buf_alloc(_ m: VMPage, _ flags: Int32) -> sf_buf? {
      if flags & ~(SFB_CATCH | SFB_CPUPRIVATE | SFB_NOWAIT) != 0 {
        fatalError("sf_buf_alloc: unknown flags \(flags)")
      }
      return try? allocate(m, flags: SFBufFlags(rawValue: flags)).release()
    }

    /// `sf_buf_free(sf)`: drops one reference; the last one frees the mapping (which stays
    /// cached). Never unwires the page.
    @inlinable public func sf_buf_free(_ sf: sf_buf) {
      checkOwn(sf, "sf_buf_free")
      if case .window(let w, _) = backing {
        w._withUnsafeGuaranteedRef { _ = $0.free(sf.slot, generation: sf.generation) }
      }
    }

    /// `sf_buf_ref(sf)`: adds a reference to a mapping in use.
    @inlinable public func sf_buf_ref(_ sf: sf_buf) {
      checkOwn(sf, "sf_buf_ref")
      if case .window(let w, _) = backing {
        w._withUnsafeGuaranteedRef { $0.ref(sf.slot, generation: sf.generation) }
      }
    }

    @inlinable func checkOwn(_ sf: sf_buf, _ caller: StaticString) {
      if sf.pool !== self {
        fatalError("\(caller): the sf_buf belongs to another pool (foreign handle)")
      }
    }
  }
#endif
