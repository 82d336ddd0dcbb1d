// A full consistency check of the allocator's state, for tests and stress runs.

import Synchronization

extension SFBufAllocator {
  /// Checks every invariant of the allocator; returns a description of the first one that
  /// does not hold, or `nil`.
  ///
  /// - every slot with no reference is on the free list exactly once, and no other slot is;
  /// - the free count, `nsfbufsused` and `nsfbufspeak` agree with the slots;
  /// - every slot holding a page is in the hash under that page's bucket, once; no page is
  ///   cached by two slots; the hash holds nothing else;
  /// - no sleeper waits while a free slot is promised to nobody.
  ///
  /// - Complexity: O(`nsfbufs`), with the lock held.
  @_spi(Testing) public func checkInvariants() -> String? {
    machine.lock()
    defer { machine.unlock() }
    return invariantViolation()
  }

  func invariantViolation() -> String? {
    let n = nsfbufs
    var onFree = [Bool](repeating: false, count: n)
    var count = 0
    var prev = -1
    var s = book.pointee.freeHead
    while s >= 0 {
      if s >= n { return "free list holds \(s), not a slot" }
      if onFree[s] { return "slot \(s) is on the free list twice" }
      if line(s).pointee.freePrev != prev {
        return "free list back link of slot \(s) is wrong"
      }
      onFree[s] = true
      count += 1
      prev = s
      s = line(s).pointee.freeNext
    }
    let book = book.pointee
    let counters = book.counters
    if book.freeTail != prev { return "free list tail is \(book.freeTail), last slot is \(prev)" }
    if count != book.freeCount {
      return "free count is \(book.freeCount), free list holds \(count)"
    }
    var used = 0
    var mapping = 0
    for i in 0..<n {
      let word = line(i).pointee.word.load(ordering: .relaxed)
      let refs = SlotLine.references(word)
      if refs == 0 && SlotLine.hits(word) != 0 { return "free slot \(i) still counts hits" }
      if word & SlotLine.lockedOnly != 0 && (refs == 0 || SlotLine.hits(word) != 0) {
        return refs == 0
          ? "free slot \(i) is still marked locked-only"
          : "slot \(i) is locked-only but counts hits taken without the lock"
      }
      if refs < 0 { return "slot \(i) has \(refs) references" }
      if refs == 0 && !onFree[i] { return "slot \(i) has no reference but is not free" }
      if refs > 0 && onFree[i] { return "slot \(i) has \(refs) references but is free" }
      if refs > 0 { used += 1 }
      if refs > 0 && state(i).pointee.page == nil { return "slot \(i) is in use but maps no page" }
      if word & SlotLine.mapping != 0 {
        mapping += 1
        if refs != 1 { return "slot \(i) is being mapped but has \(refs) references" }
      } else if state(i).pointee.mappingWaiters != nil {
        return "allocations wait for slot \(i)'s mapping, but nobody maps it"
      }
    }
    if mapping != book.mappingsInFlight {
      return
        "\(mapping) slots are flagged as being mapped, \(book.mappingsInFlight) mappings are in flight"
    }
    if used != counters.nsfbufsused {
      return "nsfbufsused is \(counters.nsfbufsused), \(used) slots are in use"
    }
    if counters.nsfbufspeak < used { return "nsfbufspeak \(counters.nsfbufspeak) < used \(used)" }
    var inHash = [Bool](repeating: false, count: n)
    for b in 0...bucketMask {
      var s = head(b).pointee.firstSlot
      var steps = 0
      while s >= 0 {
        steps += 1
        if s >= n || steps > n { return "hash chain of bucket \(b) is corrupt" }
        if inHash[s] { return "slot \(s) is in the hash twice" }
        inHash[s] = true
        guard let p = state(s).pointee.page else {
          return "slot \(s) is hashed but maps no page"
        }
        if bucket(p.hashKey) != b {
          return "slot \(s) is in bucket \(b), its page hashes elsewhere"
        }
        if line(s).pointee.key.load(ordering: .relaxed) != p.hashKey {
          return "slot \(s)'s hash key is not its page's"
        }
        s = line(s).pointee.nextSlot
      }
    }
    for i in 0..<n where state(i).pointee.page != nil {
      if !inHash[i] { return "slot \(i) maps a page but is not in the hash" }
      if lookup(state(i).pointee.page!) != i {
        return "slot \(i)'s page is mapped by another slot too"
      }
    }
    if book.waitHead != nil && book.freeCount > book.reserved {
      return
        "a sleeper waits while \(book.freeCount - book.reserved) free slots are promised to nobody"
    }
    if book.reserved < 0 { return "reservations went negative (\(book.reserved))" }
    var owed = 0
    for r in 0..<machine.hazardsHandedOut() {
      let d = record(r).pointee.debt.load(ordering: .relaxed)
      guard d >= 0 else { continue }
      owed += 1
      if d >= n || SlotLine.references(line(d).pointee.word.load(ordering: .relaxed)) == 0 {
        return "hazard record \(r) is owed a reference to slot \(d), which is free"
      }
    }
    if owed != book.owed {
      return "\(owed) hazard records are owed references, the count is \(book.owed)"
    }
    var spare = book.spareWaiters
    while let w = spare {
      if w.state != .idle { return "a spare waiter is still \(w.state)" }
      spare = w.next
    }
    return nil
  }
}

extension SFBufAllocator {
  /// Breaks the allocator's state on purpose, so that tests can show ``checkInvariants()``
  /// catching each kind of corruption. Never used outside tests.
  @_spi(Testing) public enum Corruption {
    /// Enter slot `a`'s page under slot `b` too (a duplicate mapping).
    case duplicatePage(Int, Int)
    /// Drop slot `s` from the free list although it has no reference.
    case leakFreeSlot(Int)
    /// Count one more slot in use than there is.
    case miscountUsed
    /// Leave slot `s`, in use, flagged as being mapped when nobody maps it: its hits would
    /// wait forever.
    case stuckMappingFlag(Int)
    /// Mark slot `s` (in use) locked-only and count a hit on it taken without the lock: what
    /// a hit that ignored the flag would leave, racing the run's free, which stores the word.
    case lockedOnlyHit(Int)
    /// Record hazard word `record` as owed a reference to slot `slot` (free): the pool would
    /// drop a reference nobody took.
    case owedFreeSlot(record: Int, slot: Int)
    /// Not a corruption: take a reference to slot `slot` (in use) for hazard word `record`,
    /// whose thread is in no hit: the state a reader leaves when it clears its word just
    /// before a scan records its debt (a race too narrow to make happen in a test).
    case forgottenDebt(record: Int, slot: Int)
  }

  /// Applies `c` (see ``Corruption``).
  @_spi(Testing) public func corrupt(_ c: Corruption) {
    machine.lock()
    defer { machine.unlock() }
    switch c {
    case .duplicatePage(let a, let b):
      if state(b).pointee.page != nil { unhash(b) }
      state(b).pointee.page = state(a).pointee.page
      hash(b, key: state(a).pointee.page!.hashKey)
    case .leakFreeSlot(let s):
      removeFree(s)
    case .miscountUsed:
      book.pointee.counters.nsfbufsused += 1
    case .stuckMappingFlag(let s):
      line(s).pointee.word.bitwiseOr(SlotLine.mapping, ordering: .relaxed)
    case .lockedOnlyHit(let s):
      precondition(isInUse(s))
      line(s).pointee.word.bitwiseOr(
        SlotLine.lockedOnly | SlotLine.oneHit, ordering: .relaxed)
    case .owedFreeSlot(let r, let s):
      record(r).pointee.debt.store(s, ordering: .relaxed)
    case .forgottenDebt(let r, let s):
      precondition(isInUse(s) && record(r).pointee.debt.load(ordering: .relaxed) < 0)
      referenceLocked(s)
      record(r).pointee.debt.store(s, ordering: .relaxed)
      book.pointee.owed += 1
    }
  }
}
