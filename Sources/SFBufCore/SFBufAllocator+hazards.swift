// Hits that take no reference, on machines with hazard words (the host).
//
// A hit that takes a reference pays two locked read-modify-writes of the slot's word (one
// to take it, one to drop it): 6 to 7 ns each on the machines this was measured on, more
// than the rest of the hit. A scoped hit (a `withMapping` body) can do without them. The
// reader stores the address of the slot's line in its thread's hazard word, then checks
// that the slot is in use and caches its page; until it clears the word, no slot it names
// is remapped. Nothing locked, and no fence, on the reader's side: the one who remaps
// pays, with a barrier on every thread of the process (`membarrier(2)`) before it reads
// the hazard words, and only once for all the slots that went free since its last scan.
//
// The rules, with the lock held:
//
// - A free slot is *quiet* once a scan that began after it went free has ended
//   (``isQuiet(_:)``). Only a quiet slot is claimed (remapped) or dropped from the hash.
// - A scan (``quietFreeSlots()``): barrier (without the lock), then each hazard word naming
//   a slot of this pool that went free before the scan began, and is still free, turns
//   into a reference held for its reader (a *debt*: the slot leaves the free list and
//   counts as used). A reader that validated a slot while it was in use published its
//   word before that slot went free, hence before the barrier; one that stores its word
//   after the barrier finds the slot free, or claimed, and backs off.
// - A debt is settled (its reference dropped) once its word names another slot: by the
//   reader, which looks for a debt each time it clears its word, or by the next scan. A
//   reader that cleared its word just before the scan stored its debt misses it; an
//   allocation that finds no free slot, before it waits or fails, runs the barrier and looks
//   for such a debt, and scans if it finds one.
//
// A scan is worth its barrier only when enough hits went through hazards since the last
// one: with another thread of the process running, the barrier interrupts its CPU (13-22 us
// on the virtual machine this was measured on), while a hit through a hazard saves 10-15 ns
// over a counted one. A window too small for its working set turns its free list over every
// few dozen misses and scans as often, for a few hits each time. So the pool keeps a gate
// (``HazardGate``):
//
// - A scan that finds fewer than `threshold` hits through hazards since the scan before it
//   *closes* the gate (``gateWord``): readers take counted hits from then on. A reader
//   checks the gate after it publishes its word, with the slot (before it trusts it), so
//   that one let through was either seen by this scan's barrier or sees the gate closed.
// - The gate is *closing* until a scan begun after it closed finds no hazard word naming a
//   slot of this pool, other than slots held for their readers as debts: readers let
//   through before have all left, or are protected by references. Then it is *closed*, and
//   free slots are remapped without scans (``isQuiet(_:)``).
// - While it is not open, readers count the accesses that find their page cached (hits,
//   near enough), and every `checkEvery` of its own a reader asks (under the lock) whether
//   hits would now pay for the scans: the accesses counted since the last time it was
//   asked reach `threshold` per turn of the free list (a turn being `nsfbufs` misses, at
//   most one scan each). Then the gate opens again; slots that went free before need a
//   scan as any others (their stamps predate the next scan). With the defaults (1024 hits,
//   every 4096 accesses), a window of 512 slots with one reader closes below 2 hits per
//   miss and opens again above about 2.7.
//
// The gate only ever decides what costs what: a wrong guess is slower, never wrong.

import Synchronization

/// A pool's side of one hazard word: the hits its thread took here without a reference,
/// and the slot whose reference the pool holds for it (its debt), or -1.
@usableFromInline struct HazardRecord: ~Copyable {
  /// Written by the word's thread only (a load and a store), read by ``SFBufAllocator/stats``.
  @usableFromInline let hits = Atomic<UInt64>(0)
  /// Written under the lock; read by the word's thread when it clears its word.
  @usableFromInline let debt = Atomic<Int>(-1)
  /// The thread's accesses that found their page cached while the gate was not open (its
  /// own, as ``hits``).
  @usableFromInline let gated = Atomic<UInt64>(0)

  /// Bytes from one record to the next: a cache line each.
  @inlinable static var stride: Int { 64 }

  @inlinable init() {}
}

/// Whether hits go through hazard words, kept by the lock (see the rules above).
@usableFromInline struct HazardGate {
  @usableFromInline var state = SFBufHazardGateState.open
  /// Hits per scan (per turn of the free list, to open) below which hazards do not pay; 0:
  /// the gate never closes.
  @usableFromInline var threshold = 1024
  /// A reader looks whether to open the gate every this many accesses (a power of two).
  @usableFromInline var checkEvery = 4096
  /// The first scan begun after the gate closed.
  @usableFromInline var closingScan: UInt32 = 0
  /// Hits through hazards when the last scan began, while open.
  @usableFromInline var hitsAtScan = 0
  /// Accesses counted by readers, and misses, when the gate closed or was last looked at.
  @usableFromInline var accessesAtCheck = 0
  @usableFromInline var missesAtCheck = 0
  /// Times the gate closed, ever.
  @usableFromInline var closes = 0

  @inlinable init() {}
}

/// Where a pool's hazard gate stands (see `SFBufAllocator+hazards.swift`). A struct, not an
/// enum: an enum's derived `Hashable` would pull the hasher's random seed into the
/// bare-metal kernel.
public struct SFBufHazardGateState: Equatable, Sendable {
  @usableFromInline let raw: UInt8
  @inlinable init(_ raw: UInt8) { self.raw = raw }
  /// Hits on mappings in use go through hazard words.
  @inlinable public static var open: Self { Self(0) }
  /// Hits take references; free slots still wait for a scan before they are remapped.
  @inlinable public static var closing: Self { Self(1) }
  /// Hits take references, and free slots are remapped without scans.
  @inlinable public static var closed: Self { Self(2) }
}

extension SFBufAllocator {
  @inlinable func record(_ r: Int) -> UnsafeMutablePointer<HazardRecord> {
    (storage.records + r * HazardRecord.stride).assumingMemoryBound(to: HazardRecord.self)
  }

  /// Begins a hit that takes no reference: returns the slot caching `page`, in use, with
  /// `hazard` naming it, or -1 (and `hazard` clear) when the page is not cached in a slot
  /// in use, or `hazard` is already taken (a hit inside another). The slot is not remapped,
  /// nor its page dropped from the hash, until ``endHit(_:)``; the caller holds no
  /// reference to it, and counts as a holder only if its other holders all let go (then
  /// the pool takes a reference for it, and drops it at ``endHit(_:)``). Costs no locked
  /// instruction and no fence.
  ///
  /// - Precondition: `hazard` is the calling thread's (``SFBufMachine/hazard()``); with
  ///   `.cpuPrivate`, the caller is pinned. Only on a machine that does not track TLBs.
  @inlinable @inline(__always)
  public func beginHit(_ page: Page, flags: SFBufFlags = [], hazard: SFBufHazard) -> Int {
    checkPinned(flags)
    guard !Machine.tracksTLBs, hazard.word.pointee.load(ordering: .relaxed) == 0 else {
      return -1
    }
    let s = slotWithoutLock(key: page.hashKey)
    guard s >= 0 else { return -1 }
    let l = line(s)
    machine.publish(UInt(bitPattern: l), in: hazard.word)
    // In use, not being mapped, and the gate still open, seen after the hazard was
    // published: nobody remaps the slot or changes its page until the hazard is cleared (see
    // the rules above).
    let w = l.pointee.word.load(ordering: .acquiring)
    if SlotLine.references(w) > 0 && w & SlotLine.mapping == 0
      && gateWord.load(ordering: .relaxed) == 0 && state(s).pointee.page == page
    {
      let r = record(hazard.record)
      r.pointee.hits.store(r.pointee.hits.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
      return s
    }
    abandonHit(hazard)
    return -1
  }

  /// ``beginHit(_:flags:hazard:)`` found the slot not fit for a hit without a reference,
  /// or the gate shut: clears the hazard, and counts the access if the gate is shut.
  @usableFromInline @inline(never) func abandonHit(_ hazard: SFBufHazard) {
    machine.publish(0, in: hazard.word)
    let gate = gateWord.load(ordering: .relaxed)
    if gate != 0 { gatedAccess(hazard.record, every: gate) }
  }

  /// Ends a hit begun by ``beginHit(_:flags:hazard:)``: clears the hazard, and drops the
  /// reference the pool took for it, if it took one.
  @inlinable public func endHit(_ hazard: SFBufHazard) {
    machine.publish(0, in: hazard.word)
    if record(hazard.record).pointee.debt.load(ordering: .relaxed) >= 0 {
      settleDebt(hazard.record)
    }
  }

  /// ``endHit(_:)``'s rare part: the pool holds a reference for this thread.
  @usableFromInline @inline(never) func settleDebt(_ r: Int) {
    machine.lock()
    let idle = settle(r) && isIdle
    machine.unlock()
    if idle { machine.windowBecameIdle() }
  }

  /// Drops record `r`'s debt, if it has one. Returns whether its slot went free. Locked.
  @inlinable func settle(_ r: Int) -> Bool {
    let s = record(r).pointee.debt.load(ordering: .relaxed)
    guard s >= 0 else { return false }
    record(r).pointee.debt.store(-1, ordering: .relaxed)
    book.pointee.owed -= 1
    return dropReferenceLocked(s, hit: false)
  }

  /// ``settle(_:)`` inside an allocation, which may make the window busy again: a busy
  /// period that ends here is reported at once. Locked.
  @inlinable func settleInside(_ r: Int) {
    if settle(r) && isIdle { machine.windowBecameIdle() }
  }

  /// Whether free slot `s` may be remapped, or dropped from the hash: a scan that began
  /// after it went free has ended. Always, on a machine without hazard words. Locked.
  @inlinable func isQuiet(_ s: Int) -> Bool {
    guard let scan = quietScan else { return true }
    return covers(scan, s)
  }

  /// The scan that a free slot's free must precede for the slot to be quiet, or `nil` when
  /// every free slot is (no hazard words, or the gate is closed). Locked.
  @inlinable var quietScan: UInt32? {
    guard Machine.hazardRecords > 0, book.pointee.gate.state != .closed else { return nil }
    return book.pointee.quietBelow
  }

  /// Whether the scan numbered `scan` began after free slot `s` went free.
  @inlinable func covers(_ scan: UInt32, _ s: Int) -> Bool {
    Self.isScan(scan, after: line(s).pointee.freedAt)
  }

  /// Whether scan number `a` comes after scan number `b`. Scans are counted modulo 2^30: a
  /// slot free for 2^29 scans and more may look uncovered, which only costs a scan.
  @inlinable static func isScan(_ a: UInt32, after b: UInt32) -> Bool {
    let since = (a &- b) & 0x3FFF_FFFF
    return since > 0 && since < 0x2000_0000
  }

  /// Whether record `r` is owed a reference for a slot that its word no longer names: its
  /// reader has left that hit.
  @inlinable func hasLeftDebt(_ r: Int) -> Bool {
    let s = record(r).pointee.debt.load(ordering: .relaxed)
    return s >= 0
      && machine.hazardWord(r).pointee.load(ordering: .acquiring) != UInt(bitPattern: line(s))
  }

  /// The slot of this pool whose line is at `address`, or -1.
  @inlinable func slot(atLine address: UInt) -> Int {
    let base = UInt(bitPattern: storage.lines)
    guard address >= base else { return -1 }
    let s = Int(address - base) / Self.lineStride
    return s < nsfbufs ? s : -1
  }

  /// Makes every slot free now quiet (see the rules above): settles the debts whose readers
  /// have moved on, runs the barrier *without the lock* (on a virtual machine it interrupts
  /// every other CPU running a thread of the process, for 13–22 µs here, which the pool's
  /// other users need not wait for), then turns each hazard on a slot free before the
  /// barrier into a debt. Locked on entry and on return, not in between: the caller looks
  /// again at whatever it decided before.
  @usableFromInline @inline(never) func quietFreeSlots() {
    let words = machine.hazardsHandedOut()
    // Debts settled now free their slots before the barrier, where the scan sees any
    // other reader of them.
    for r in 0..<words where hasLeftDebt(r) { settleInside(r) }
    // This scan covers the slots free now; those freed from here on carry its number.
    book.pointee.scans = (book.pointee.scans &+ 1) & 0x3FFF_FFFF
    let scan = book.pointee.scans
    if book.pointee.gate.state == .open {
      // Closed before the barrier: a reader let through was seen by it, or sees the gate shut.
      let hits = hazardHits
      let gate = book.pointee.gate
      if gate.threshold > 0 && hits &- gate.hitsAtScan < gate.threshold { closeGate(scan) }
      book.pointee.gate.hitsAtScan = hits
    }
    // Whether a word names a slot of this pool that holds no reference for its reader.
    var unprotected = false
    if words > 0 && !book.pointee.faults.contains(.ignoreHazards) {
      machine.unlock()
      machine.fenceAllThreads()
      machine.lock()
      for r in 0..<words {
        let s = slot(atLine: machine.hazardWord(r).pointee.load(ordering: .acquiring))
        guard s >= 0 else { continue }
        // A slot freed after the barrier began is not this scan's (it stays loud).
        guard !isInUse(s), covers(scan, s) else {
          unprotected = unprotected || record(r).pointee.debt.load(ordering: .relaxed) != s
          continue
        }
        settleInside(r)
        removeFree(s)
        becameUsed(s)
        line(s).pointee.word.store(SlotLine.oneRef, ordering: .releasing)
        record(r).pointee.debt.store(s, ordering: .relaxed)
        book.pointee.debts += 1
        book.pointee.owed += 1
      }
    }
    let gate = book.pointee.gate
    let grace = !unprotected || book.pointee.faults.contains(.skipGateGrace)
    if gate.state == .closing && !Self.isScan(gate.closingScan, after: scan) && grace {
      book.pointee.gate.state = .closed
    }
    // Scans end in any order: the newest one ended stands.
    if !Self.isScan(book.pointee.quietBelow, after: scan) { book.pointee.quietBelow = scan }
  }

  /// Shuts the gate before scan number `scan` runs its barrier: hits take references from
  /// now on. Locked.
  @usableFromInline func closeGate(_ scan: UInt32) {
    book.pointee.gate.state = .closing
    book.pointee.gate.closingScan = scan
    book.pointee.gate.accessesAtCheck = gatedAccesses
    book.pointee.gate.missesAtCheck = book.pointee.counters.misses
    book.pointee.gate.closes += 1
    gateWord.store(book.pointee.gate.checkEvery, ordering: .relaxed)
  }

  /// Hits go through hazards again (a scan will cover the slots that go free). Locked.
  @usableFromInline func openGate() {
    book.pointee.gate.state = .open
    book.pointee.gate.hitsAtScan = hazardHits
    gateWord.store(0, ordering: .relaxed)
  }

  /// An access that found its page cached, turned away because the gate is not open:
  /// counted in record `r`; every `every` of them, whether to open the gate is looked at
  /// again.
  @usableFromInline func gatedAccess(_ r: Int, every: Int) {
    let rec = record(r)
    let n = rec.pointee.gated.load(ordering: .relaxed) &+ 1
    rec.pointee.gated.store(n, ordering: .relaxed)
    if Int(truncatingIfNeeded: n) & (every - 1) == 0 { reconsiderGate() }
  }

  /// Opens the gate when the accesses turned away since it was last looked at (hits, near
  /// enough) reach the threshold per turn of the free list (see the rules above).
  @usableFromInline @inline(never) func reconsiderGate() {
    machine.lock()
    defer { machine.unlock() }
    let gate = book.pointee.gate
    guard gate.state != .open else { return }
    let accessesNow = gatedAccesses
    let missesNow = book.pointee.counters.misses
    let accesses = accessesNow &- gate.accessesAtCheck
    let misses = missesNow &- gate.missesAtCheck
    book.pointee.gate.accessesAtCheck = accessesNow
    book.pointee.gate.missesAtCheck = missesNow
    let (needed, overflow) = gate.threshold.multipliedReportingOverflow(
      by: misses / nsfbufs + 1)
    if !overflow && accesses >= needed { openGate() }
  }

  /// The accesses readers counted while the gate was not open. Locked.
  @inlinable var gatedAccesses: Int {
    var n = 0
    for r in 0..<machine.hazardsHandedOut() {
      n &+= Int(truncatingIfNeeded: record(r).pointee.gated.load(ordering: .relaxed))
    }
    return n
  }

  /// Whether a debt's reader has left its hit without seeing the debt (it cleared its word
  /// before the scan that made the debt stored it): then only a scan settles it, and an
  /// allocation about to wait for a free slot makes one first. Runs the barrier when a debt
  /// is owed, so that every reader's clearing of its word is seen here, or its load of its
  /// debt sees the debt. Locked.
  @inlinable func hasForgottenDebt() -> Bool {
    guard Machine.hazardRecords > 0, book.pointee.owed > 0 else { return false }
    machine.fenceAllThreads()
    for r in 0..<machine.hazardsHandedOut() where hasLeftDebt(r) { return true }
    return false
  }

  /// The hits taken through hazards, for ``stats``. Locked.
  @inlinable var hazardHits: Int {
    var n = 0
    for r in 0..<machine.hazardsHandedOut() {
      n &+= Int(truncatingIfNeeded: record(r).pointee.hits.load(ordering: .relaxed))
    }
    return n
  }
}

extension SFBufAllocator {
  /// Where the hazard gate stands, and how many times it closed.
  @_spi(Testing) public var hazardGate: (state: SFBufHazardGateState, closes: Int) {
    machine.lock()
    defer { machine.unlock() }
    return (book.pointee.gate.state, book.pointee.gate.closes)
  }

  /// Sets the gate's threshold (hits per scan; 0: it never closes) and how often a reader
  /// turned away looks whether to open it (a power of two).
  @_spi(Testing) public func tuneHazardGate(threshold: Int, checkEvery: Int = 4096) {
    precondition(threshold >= 0 && checkEvery > 0 && checkEvery & (checkEvery - 1) == 0)
    machine.lock()
    defer { machine.unlock() }
    book.pointee.gate.threshold = threshold
    book.pointee.gate.checkEvery = checkEvery
    if book.pointee.gate.state != .open { gateWord.store(checkEvery, ordering: .relaxed) }
  }

  /// Opens the gate now, as a reader that saw enough hits would.
  @_spi(Testing) public func openHazardGate() {
    guard Machine.hazardRecords > 0 else { return }
    machine.lock()
    if book.pointee.gate.state != .open { openGate() }
    machine.unlock()
  }

  /// Runs a hazard scan now, as a miss on a free slot not yet quiet would.
  @_spi(Testing) public func scanHazards() {
    guard Machine.hazardRecords > 0 else { return }
    machine.lock()
    quietFreeSlots()
    machine.unlock()
  }
}
