// Loads and stores through a CPU's TLB, and the page-table side of the unmap-on-free policy.

import SFBufCore

extension SimMachine {
  /// What one access through the window saw.
  public struct Access: Equatable, Sendable {
    /// The frame the CPU's translation led to.
    public var frame: Int
    /// The word loaded (for a store: the word stored).
    public var value: UInt64
    /// Whether the translation came from the TLB rather than a page-table walk.
    public var tlbHit: Bool
  }

  /// Loads the 64-bit word at `address` as CPU `cpu` does: through its TLB, walking the page
  /// table on a TLB miss (which sets the PTE's accessed bit and fills the TLB, possibly
  /// evicting an entry). A stale TLB entry is used as is.
  ///
  /// - Complexity: O(TLB capacity).
  /// - Throws: ``SimPageFault`` outside the window or through an invalid PTE.
  /// - Precondition: `address` is 8-byte aligned.
  public func load(_ address: Int, cpu: Int) throws(SimPageFault) -> Access {
    let (frame, word, hit) = try translate(address, cpu: cpu)
    counters.accesses += 1
    return Access(frame: frame, value: memory[frame * Self.wordsPerPage + word], tlbHit: hit)
  }

  /// Stores `value` at `address` as CPU `cpu` does (see ``load(_:cpu:)``): the word lands in
  /// whatever frame the CPU's translation names.
  ///
  /// - Throws: ``SimPageFault`` outside the window or through an invalid PTE.
  @discardableResult
  public func store(_ value: UInt64, at address: Int, cpu: Int) throws(SimPageFault) -> Access {
    let (frame, word, hit) = try translate(address, cpu: cpu)
    counters.accesses += 1
    counters.stores += 1
    memory[frame * Self.wordsPerPage + word] = value
    return Access(frame: frame, value: value, tlbHit: hit)
  }

  /// Word `word` of frame `frame` in physical memory, read without any translation (what a
  /// checker uses as the truth).
  public func physicalWord(frame: Int, word: Int) -> UInt64 {
    memory[frame * Self.wordsPerPage + word]
  }

  /// The frame, the word within it, and whether the TLB held the translation.
  func translate(_ address: Int, cpu: Int) throws(SimPageFault) -> (Int, Int, Bool) {
    precondition(cpu >= 0 && cpu < cpuCount, "SimMachine: no CPU \(cpu)")
    precondition(address & 7 == 0, "SimMachine: unaligned access at \(hex(address))")
    let offset = address - Self.windowBase
    let slot = offset >= 0 ? offset / Self.pageSize : -1
    let word = (offset & (Self.pageSize - 1)) / 8
    guard slot >= 0 && slot < slots else {
      counters.pageFaults += 1
      throw SimPageFault(cpu: cpu, address: address)
    }
    if let frame = tlbs[cpu].lookup(slot) {
      counters.tlbHits += 1
      return (frame, word, true)
    }
    guard pageTable[slot].valid else {
      counters.pageFaults += 1
      throw SimPageFault(cpu: cpu, address: address)
    }
    pageTable[slot].accessed = true
    let frame = pageTable[slot].frame
    counters.tlbFills += 1
    if tlbs[cpu].fill(slot, frame: frame) { counters.tlbEvictions += 1 }
    return (frame, word, false)
  }

  // MARK: The unmap-on-free policy's page-table operations

  /// Removes slot `slot`'s translation everywhere, as a machine that unmaps on free does
  /// (`pmap_qremove`): invalidates the PTE (one page-table write), invalidates the current
  /// CPU's TLB (one local invalidation) and, with more than one CPU, interrupts every other
  /// CPU (one IPI). Called without the pool lock, for a slot nobody references.
  public func unmap(slot: Int) {
    precondition(!locked, "SimMachine.unmap: called with the pool lock held")
    _ = writePTE(slot: slot, frame: nil)
    counters.localInvalidations += 1
    tlbs[currentCPU].invalidate(slot)
    let others = allCPUs.subtracting(CPUSet(cpu: currentCPU))
    if !others.isEmpty { interrupt(others, slot: slot) }
  }

  /// Maps `page` into slot `slot` again after ``unmap(slot:)`` (one page-table write, no
  /// invalidation: no TLB holds an invalid entry). Called without the pool lock.
  ///
  /// - Precondition: the slot's PTE is invalid.
  public func remap(_ page: SimPage, slot: Int) {
    precondition(!locked, "SimMachine.remap: called with the pool lock held")
    precondition(!pageTable[slot].valid, "SimMachine.remap: slot \(slot) is still mapped")
    _ = writePTE(slot: slot, frame: page.frame)
  }
}
