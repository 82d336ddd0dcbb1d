// When a slot's mapping is torn down: at free (FreeBSD's 32-bit arm) or never (caching).

/// What happens to a slot's translation when its last reference is dropped.
public enum SimPolicy: String, Sendable, CaseIterable {
  /// The sf_buf design: the slot keeps its mapping and stays in the hash, so a later request
  /// for the page finds it (a hit). The allocator alone decides.
  case caching
  /// The mapping is removed at free, as FreeBSD's 32-bit arm does (`sf_buf_unmap` →
  /// `pmap_qremove`): the PTE is invalidated and every CPU's TLB entry with it (a local
  /// invalidation and one IPI to the other CPUs). Only a page still referenced by someone is
  /// a hit; a request for a page cached in a freed slot re-enters its PTE, a miss.
  ///
  /// Implemented around the unchanged core: ``SimSystem/free(_:thread:)`` unmaps the slot
  /// when its references reach zero, and ``SimSystem/allocate(_:flags:thread:waiter:)``
  /// re-enters the PTE when the allocator hands back a slot whose PTE is invalid.
  case unmapOnFree = "unmap-on-free"
}
