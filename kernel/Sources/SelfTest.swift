// The self-test: sf_buf access patterns on both CPUs, every access checked through the MMU.

import KernelSupport
@_spi(Testing) import SFBufCore
import Synchronization

/// The self-test both CPUs run, phase by phase, in step.
///
/// Every test frame holds its own tag (see ``Content``), so any read through a slot shows
/// which frame the reading CPU's translation really reaches. A read that finds another
/// frame's tag is a *stale read*: that CPU's TLB still held a translation the page table no
/// longer has, which is what a missing invalidation or shootdown looks like on hardware.
///
/// The phases, after CPU0 writes every frame through private mappings:
/// 1. the TLB probe: shows that this machine does keep a stale translation until `invlpg`;
/// 2. short copies on both CPUs at once, with `SFB_CPUPRIVATE`, then without it;
/// 3. streaming: one CPU maps pages, the other reads and frees them, both ways round;
/// 4. private becomes shared, both ways round: the mapper fills the window with pages the
///    reader reads (so the reader's TLB holds every slot), tries a full window (SFB_NOWAIT
///    fails, a hit still succeeds, a default allocation on the reader sleeps until a slot is
///    freed), remaps every slot with `SFB_CPUPRIVATE` (no IPI), then takes each cached page
///    again shared (a hit, which must shoot the reader's old translation down) and hands it
///    to the reader.
final class SelfTest {
  /// The pool under test.
  let pool: SFBufAllocator<I386Machine>
  private var machine: I386Machine { pool.machine }
  private let barrier = Barrier(parties: testCPUs)
  /// `inbox[c]`: the messages for CPU `c`.
  private let inbox: [Channel]
  private let failures = Atomic<Int>(0)
  private let staleReads = Atomic<Int>(0)
  /// What each CPU's scratch frames hold now: `scratchContent[8 * cpu + i]` is the frame
  /// whose content was last copied into that CPU's scratch frame `i`.
  private let scratchContent: UnsafeMutablePointer<Int>
  /// CPU0's snapshot at the start of the current phase.
  private var phaseStart = Snapshot()

  /// Copy sources: frames `0 ..< copySources`.
  private static let copySources = 128
  /// Copies each CPU makes per copy phase.
  private static let copiesPerCPU = 256
  /// Scratch frames of CPU `c`: `scratchBase + 8 * c ..< scratchBase + 8 * c + 8`.
  private static let scratchBase = 240
  /// Streaming runs twice over frames `0 ..< streamFrames` (three times the window).
  private static let streamFrames = 192
  /// The two frames of the TLB probe.
  private static let probeFrames = (200, 201)

  /// A test over `pool`, whose machine has `testFrames` frames.
  init(pool: SFBufAllocator<I386Machine>) {
    self.pool = pool
    inbox = (0..<testCPUs).map { _ in Channel() }
    scratchContent = .allocate(capacity: 8 * testCPUs)
    for i in 0..<8 * testCPUs { scratchContent[i] = SelfTest.scratchBase + i }
  }

  /// Runs the test on CPU `cpu`, in step with the other CPU. On CPU0, prints the report and
  /// returns the verdict (`true`: passed).
  func run(cpu: Int) -> Bool {
    if cpu == 0 { writeAllFrames() }
    _ = phase(cpu, "TLB probe") { probe($0) }
    let privateCopies = phase(cpu, "copies, SFB_CPUPRIVATE, both CPUs") {
      copies($0, flags: .cpuPrivate)
    }
    let sharedCopies = phase(cpu, "copies, shared, both CPUs") { copies($0, flags: []) }
    _ = phase(cpu, "streaming, CPU0 maps, CPU1 reads and frees") { stream($0, producer: 0) }
    _ = phase(cpu, "streaming, CPU1 maps, CPU0 reads and frees") { stream($0, producer: 1) }
    _ = phase(cpu, "private becomes shared, CPU0 maps, CPU1 reads") {
      privateBecomesShared($0, mapper: 0)
    }
    _ = phase(cpu, "private becomes shared, CPU1 maps, CPU0 reads") {
      privateBecomesShared($0, mapper: 1)
    }
    barrier.wait()
    guard cpu == 0 else { return true }
    return report(privateCopies: privateCopies, sharedCopies: sharedCopies)
  }

  // MARK: - Phases

  /// Runs `body` on both CPUs between barriers; on CPU0, prints and returns what the phase
  /// cost.
  private func phase(_ cpu: Int, _ name: StaticString, _ body: (Int) -> Void) -> Delta {
    barrier.wait()
    if cpu == 0 { phaseStart = Snapshot(self) }
    barrier.wait()
    body(cpu)
    barrier.wait()
    guard cpu == 0 else { return Delta() }
    let d = Snapshot(self) - phaseStart
    Console.line("  \(name): \(d.allocations) allocations, \(d.hits) hits, \(d.ipis) IPIs")
    return d
  }

  /// Writes every test frame's content through private mappings on CPU0 (highest frame
  /// first, so the frames left cached are the copy sources).
  private func writeAllFrames() {
    for frame in stride(from: machine.frameCount - 1, through: 0, by: -1) {
      guard let s = allocate(frame, .cpuPrivate, on: 0) else { return }
      let page = AddressSpace.address(ofSlot: s)
      for i in 0..<1024 { volatile_store32(page + UInt(i) * 4, Content.word(i, ofFrame: frame)) }
      pool.free(s)
    }
    Console.line("wrote \(machine.frameCount) test frames through sf_bufs; phases:")
  }

  /// Phase 1: CPU1 caches a translation, CPU0 rewrites the entry without invalidating; CPU1
  /// must still read the old frame until it runs `invlpg`. If it does not, this machine
  /// cannot show a missing shootdown and the test proves nothing: that is a failure.
  private func probe(_ cpu: Int) {
    guard cpu == 0 else { return serve(cpu) }
    let (old, new) = SelfTest.probeFrames
    guard let s = allocate(old, [], on: 0) else { return inbox[1].send(.done) }
    _ = check(s, holds: old, on: 0, "probe")
    _ = ask(1, .check(slot: s, frame: old))
    let saved = machine.probeRewrite(slot: s, to: Frame(number: new))
    machine.invalidateLocal(slot: s)
    _ = check(s, holds: new, on: 0, "probe after invlpg")
    let answer = ask(1, .probe(slot: s, stale: old, fresh: new))
    machine.probeRestore(slot: s, entry: saved)
    machine.invalidateLocal(slot: s)
    _ = ask(1, .invalidate(slot: s))
    pool.free(s)
    inbox[1].send(.done)
    let keptOld = answer >= 0 && answer & 1 != 0
    let refreshed = answer >= 0 && answer & 2 != 0
    if keptOld && refreshed {
      Console.line("  TLB probe: CPU1 kept slot \(s)'s old translation until its invlpg")
    } else if !keptOld {
      fail("TLB probe: CPU1 did not keep the old translation: no stale read could be seen here")
    } else {
      fail("TLB probe: CPU1 still read the old page after invlpg")
    }
  }

  /// Phase 2: each CPU makes short copies from the shared source frames (in different
  /// orders, so the CPUs hit each other's cached slots) into its own scratch frames,
  /// holding both mappings only for the copy.
  private func copies(_ cpu: Int, flags: SFBufFlags) {
    for k in 0..<SelfTest.copiesPerCPU {
      let source = cpu == 0 ? k % SelfTest.copySources : (7 * k + 3) % SelfTest.copySources
      let scratch = 8 * cpu + k % 8
      guard let from = allocate(source, flags, on: cpu) else { return }
      guard let to = allocate(SelfTest.scratchBase + scratch, flags, on: cpu) else { return }
      _ = check(from, holds: source, on: cpu, "copy source")
      _ = check(to, holds: scratchContent[scratch], on: cpu, "copy destination")
      UnsafeMutableRawPointer(bitPattern: AddressSpace.address(ofSlot: to))!.copyMemory(
        from: UnsafeRawPointer(bitPattern: AddressSpace.address(ofSlot: from))!, byteCount: 4096)
      scratchContent[scratch] = source
      _ = check(to, holds: source, on: cpu, "copy result")
      pool.free(from)
      pool.free(to)
    }
  }

  /// Phase 3: the producer maps frames in order (shared) and hands each mapping over; the
  /// consumer reads it and frees it. Three window-fulls, twice: every remap replaces a
  /// translation the consumer used one round earlier, so the miss path's shootdown is what
  /// keeps the consumer's reads right.
  private func stream(_ cpu: Int, producer: Int) {
    guard cpu == producer else { return serve(cpu) }
    let consumer = 1 - producer
    for k in 0..<2 * SelfTest.streamFrames {
      let frame = k % SelfTest.streamFrames
      guard let s = allocate(frame, [], on: cpu) else { break }
      _ = check(s, holds: frame, on: cpu, "stream producer")
      // Every fourth mapping is split between two owners (sf_buf_ref): the producer drops
      // its reference at once, the consumer's keeps the mapping alive until it has read.
      let split = k % 4 == 0
      if split { pool.ref(s) }
      inbox[consumer].send(.consume(slot: s, frame: frame))
      if split { pool.free(s) }
    }
    inbox[consumer].send(.done)
  }

  /// Phase 4: see the type's description. The frames are `256 + 128 * mapper` onward: 64
  /// to fill the window, 64 to remap it privately, and two more (`192 + mapper`,
  /// `194 + mapper`) for the full-window checks.
  private func privateBecomesShared(_ cpu: Int, mapper: Int) {
    guard cpu == mapper else { return serve(cpu) }
    defer { inbox[1 - mapper].send(.done) }
    let reader = 1 - mapper
    let n = pool.nsfbufs
    let filler = 256 + 128 * mapper
    let remapped = filler + n
    let (blocked, refused) = (192 + mapper, 194 + mapper)
    guard pool.stats.nsfbufsused == 0 else { return fail("the window is not empty") }
    for frame in [blocked, refused] + Array(filler..<remapped + n)
    where pool.cachedSlot(of: Frame(number: frame)) != nil {
      return fail("page \(frame) is already cached; the phase would not remap what it should")
    }

    // A. Fill the window with shared mappings; the reader reads every one.
    var slots = [Int](repeating: -1, count: n)
    for j in 0..<n {
      guard let s = allocate(filler + j, .noWait, on: cpu) else { return }
      slots[j] = s
      _ = check(s, holds: filler + j, on: cpu, "fill")
      _ = ask(reader, .check(slot: s, frame: filler + j))
    }

    // The window is full: SFB_NOWAIT is refused, a hit is not, a default allocation sleeps.
    do {
      let s = try pool.allocate(Frame(number: refused), flags: .noWait)
      fail("SFB_NOWAIT allocation succeeded (slot \(s)) with every slot in use")
      pool.free(s)
    } catch {
      if error != .wouldBlock { fail("SFB_NOWAIT on a full window: \(describe(error))") }
    }
    if let s = allocate(filler, .noWait, on: cpu) {
      if s != slots[0] { fail("a hit on a full window returned slot \(s), not \(slots[0])") }
      pool.free(s)
    }
    inbox[reader].send(.allocate(frame: blocked))
    var spins = 0
    while pool.sleepers == 0 && spins < 50_000_000 {
      cpu_pause()
      spins += 1
    }
    if pool.sleepers != 1 { fail("CPU\(reader)'s allocation on a full window did not sleep") }
    pool.free(slots[0])
    let woken = inbox[cpu].receive()
    if woken != .acknowledge(slots[0]) {
      fail("the woken allocation did not take the freed slot \(slots[0])")
    }
    for j in 1..<n { pool.free(slots[j]) }

    // B. Remap every slot privately: each replaces a translation in the reader's TLB.
    let ipisBefore = Snapshot(self).ipis
    for j in 0..<n {
      guard let s = allocate(remapped + j, .cpuPrivate, on: cpu) else { return }
      if s != slots[j] { fail("private remap took slot \(s), expected \(slots[j])") }
      if pool.cpus(ofSlot: s) != CPUSet(cpu: cpu) {
        fail("slot \(s) mapped privately is valid on CPUs \(pool.cpus(ofSlot: s).bits)")
      }
      _ = check(s, holds: remapped + j, on: cpu, "private remap")
      pool.free(s)
    }
    let privateIPIs = Snapshot(self).ipis - ipisBefore
    if privateIPIs != 0 { fail("private remaps sent \(privateIPIs) IPIs") }

    // C. The same pages again, shared: hits on slots the reader holds stale translations of.
    let hitsBefore = pool.stats.hits
    for j in 0..<n {
      guard let s = allocate(remapped + j, [], on: cpu) else { return }
      if s != slots[j] { fail("shared hit returned slot \(s), expected \(slots[j])") }
      _ = check(s, holds: remapped + j, on: cpu, "shared hit")
      _ = ask(reader, .check(slot: s, frame: remapped + j))
      pool.free(s)
    }
    if pool.stats.hits - hitsBefore != n { fail("the shared allocations were not all hits") }
  }

  /// The other CPU's side of phases 1, 3 and 4: answers messages until `.done`.
  private func serve(_ cpu: Int) {
    let reply = inbox[1 - cpu]
    while true {
      switch inbox[cpu].receive() {
      case .check(let slot, let frame):
        _ = check(slot, holds: frame, on: cpu, "handed over")
        reply.send(.acknowledge(slot))
      case .consume(let slot, let frame):
        _ = check(slot, holds: frame, on: cpu, "streamed")
        pool.free(slot)
      case .allocate(let frame):
        guard let s = allocate(frame, [], on: cpu) else {
          reply.send(.acknowledge(-1))
          continue
        }
        _ = check(s, holds: frame, on: cpu, "after sleeping")
        pool.free(s)
        reply.send(.acknowledge(s))
      case .probe(let slot, let stale, let fresh):
        let before = tag(at: slot)
        invlpg(AddressSpace.address(ofSlot: slot))
        let after = tag(at: slot)
        let keptOld = before == Content.tag(stale) ? 1 : 0
        let refreshed = after == Content.tag(fresh) ? 2 : 0
        reply.send(.acknowledge(keptOld | refreshed))
      case .invalidate(let slot):
        invlpg(AddressSpace.address(ofSlot: slot))
        reply.send(.acknowledge(slot))
      case .acknowledge:
        fail("CPU\(cpu) got an unexpected acknowledgement")
      case .done:
        return
      }
    }
  }

  // MARK: - Checks

  /// Sends `message` to CPU `cpu` and waits for its acknowledgement; returns its value.
  private func ask(_ cpu: Int, _ message: Message) -> Int {
    inbox[cpu].send(message)
    guard case .acknowledge(let value) = inbox[1 - cpu].receive() else {
      fail("CPU\(1 - cpu) got a message where it expected an acknowledgement")
      return -1
    }
    return value
  }

  /// The first word of the page at `slot`, read through the calling CPU's MMU.
  private func tag(at slot: Int) -> UInt32 {
    volatile_load32(AddressSpace.address(ofSlot: slot))
  }

  /// Reads the first and last word of the page at `slot` through the calling CPU's MMU and
  /// checks that they are `frame`'s content. Another frame's tag is a stale read (reported
  /// with the frame it came from); anything else is corruption.
  private func check(_ slot: Int, holds frame: Int, on cpu: Int, _ context: StaticString)
    -> Bool
  {
    let address = AddressSpace.address(ofSlot: slot)
    let first = volatile_load32(address)
    let last = volatile_load32(address + 4092)
    let expected = Content.tag(frame)
    if first == expected && last == ~expected { return true }
    let what = "CPU\(cpu) (\(context)) read slot \(slot) at \(hex(UInt32(address)))"
    if let seen = Content.frame(ofTag: first), last == ~first {
      staleReads.add(1, ordering: .relaxed)
      let found = "page \(seen) (tag \(hex(first)))"
      let mapped = "page \(frame) (tag \(hex(expected)))"
      fail("stale read: \(what): found \(found) where \(mapped) is mapped (old TLB entry)")
    } else {
      fail("\(what): expected tag \(hex(expected)), found \(hex(first)) / \(hex(last))")
    }
    return false
  }

  /// `sf_buf_alloc` of test frame `frame`; a failure is reported and gives `nil`.
  private func allocate(_ frame: Int, _ flags: SFBufFlags, on cpu: Int) -> Int? {
    do {
      return try pool.allocate(Frame(number: frame), flags: flags)
    } catch {
      fail("CPU\(cpu): sf_buf_alloc of page \(frame) failed: \(describe(error))")
      return nil
    }
  }

  /// Counts a failure and prints the first dozen.
  private func fail(_ message: String) {
    let n = failures.add(1, ordering: .relaxed).newValue
    if n <= 12 {
      Console.line("FAIL: \(message)")
    } else if n == 13 {
      Console.line("FAIL: (further failures counted, not shown)")
    }
  }

  // MARK: - Report

  /// Prints the counters, the IPI figures and the verdict; returns it.
  private func report(privateCopies: Delta, sharedCopies: Delta) -> Bool {
    let stats = pool.stats
    Console.line("netstat -m:")
    for line in stats.netstatLines { Console.line("  \(line)") }
    var sent = 0
    var received = 0
    for cpu in 0..<testCPUs {
      let c = machine.counters(of: cpu)
      sent += c.ipisSent
      received += c.ipisReceived
      let ipis = "\(c.ipisSent) IPIs sent, \(c.ipisReceived) IPIs received"
      Console.line("CPU\(cpu): \(c.shootdowns) shootdowns, \(ipis)")
    }
    Console.line("IPIs per allocation, private-copy pattern:")
    Console.line("  with SFB_CPUPRIVATE: \(privateCopies.perAllocation)")
    Console.line("  without:             \(sharedCopies.perAllocation)")
    if sent != received { fail("\(sent) IPIs sent but \(received) received") }
    if stats.nsfbufsused != 0 { fail("\(stats.nsfbufsused) sf_bufs still in use at the end") }
    if stats.sf_allocwait != 2 || stats.sf_allocfail != 2 {
      fail("expected 2 sleeps and 2 refusals (one each per full-window check)")
    }
    if privateCopies.ipis != 0 { fail("SFB_CPUPRIVATE copies sent IPIs") }
    if let broken = pool.checkInvariants() { fail("allocator invariant: \(broken)") }
    let failed = failures.load(ordering: .relaxed)
    let stale = staleReads.load(ordering: .relaxed)
    Console.line(
      "heap used: \(heap_bytes_used() / 1024) KiB; stale reads: \(stale); failures: \(failed)")
    Console.line(failed == 0 ? "PASS" : "FAIL")
    return failed == 0
  }
}

/// What a test frame holds: word 0 is the frame's tag, word 1023 its complement, the words
/// between a pattern derived from it.
enum Content {
  /// The tag of test frame `frame`.
  static func tag(_ frame: Int) -> UInt32 { 0x5F00_0000 | UInt32(frame) }

  /// Word `index` of test frame `frame`.
  static func word(_ index: Int, ofFrame frame: Int) -> UInt32 {
    let t = tag(frame)
    switch index {
    case 0: return t
    case 1023: return ~t
    default: return t ^ (UInt32(index) &* 0x9E37_79B9)
    }
  }

  /// The frame whose tag `word` is, if it is a tag.
  static func frame(ofTag word: UInt32) -> Int? {
    word & 0xFF00_0000 == 0x5F00_0000 ? Int(word & 0x00FF_FFFF) : nil
  }
}

/// A sentence for an allocation error.
func describe(_ error: SFBufError) -> String {
  switch error {
  case .wouldBlock: return "every slot in use (SFB_NOWAIT)"
  case .interrupted: return "interrupted"
  case .mappingRefused(let code): return "mapping refused (\(code))"
  }
}

// MARK: - Between the two CPUs

/// What one CPU asks of the other.
enum Message: Equatable {
  /// Read the page at `slot`, expect `frame`, acknowledge. The sender keeps the sf_buf.
  case check(slot: Int, frame: Int)
  /// Read the page at `slot`, expect `frame`, and free the sf_buf, which is now yours.
  case consume(slot: Int, frame: Int)
  /// Allocate `frame` with SFB_DEFAULT (it may sleep), check, free; acknowledge the slot.
  case allocate(frame: Int)
  /// Read `slot` (expect `stale`), `invlpg` it, read again (expect `fresh`); acknowledge
  /// 1 if the first read was stale plus 2 if the second was fresh.
  case probe(slot: Int, stale: Int, fresh: Int)
  /// `invlpg` the slot's address and acknowledge.
  case invalidate(slot: Int)
  /// The answer to a request.
  case acknowledge(Int)
  /// Stop serving.
  case done
}

/// A single-producer, single-consumer ring of messages from one CPU to the other.
final class Channel {
  private static let capacity = 16
  private let buffer: UnsafeMutablePointer<Message>
  /// Messages received so far.
  private let head = Atomic<Int>(0)
  /// Messages sent so far.
  private let tail = Atomic<Int>(0)

  /// An empty channel.
  init() { buffer = .allocate(capacity: Channel.capacity) }

  /// Queues `message`, spinning while the ring is full.
  func send(_ message: Message) {
    let t = tail.load(ordering: .relaxed)
    while t - head.load(ordering: .acquiring) == Channel.capacity { cpu_pause() }
    (buffer + t % Channel.capacity).initialize(to: message)
    tail.store(t + 1, ordering: .releasing)
  }

  /// Takes the oldest message, spinning while there is none.
  func receive() -> Message {
    let h = head.load(ordering: .relaxed)
    while tail.load(ordering: .acquiring) == h { cpu_pause() }
    let message = (buffer + h % Channel.capacity).move()
    head.store(h + 1, ordering: .releasing)
    return message
  }
}

/// A reusable rendezvous of `parties` CPUs.
final class Barrier {
  private let parties: Int
  private let arrived = Atomic<Int>(0)
  private let generation = Atomic<Int>(0)

  /// A barrier for `parties` CPUs.
  init(parties: Int) { self.parties = parties }

  /// Returns once every party has called `wait` for this round.
  func wait() {
    let round = generation.load(ordering: .acquiring)
    if arrived.add(1, ordering: .acquiringAndReleasing).newValue == parties {
      arrived.store(0, ordering: .relaxed)
      generation.store(round + 1, ordering: .releasing)
    } else {
      while generation.load(ordering: .acquiring) == round { cpu_pause() }
    }
  }
}

/// The counters at one moment (taken by CPU0 between barriers).
struct Snapshot {
  var hits = 0
  var misses = 0
  var ipis = 0

  init() {}

  /// The pool's and the machine's counters now.
  init(_ test: SelfTest) {
    let stats = test.pool.stats
    hits = stats.hits
    misses = stats.misses
    for cpu in 0..<testCPUs { ipis += test.pool.machine.counters(of: cpu).ipisSent }
  }

  /// What happened between `start` and `self`.
  static func - (end: Snapshot, start: Snapshot) -> Delta {
    Delta(
      hits: end.hits - start.hits, misses: end.misses - start.misses, ipis: end.ipis - start.ipis)
  }
}

/// What one phase cost.
struct Delta {
  var hits = 0
  var misses = 0
  var ipis = 0
  /// Allocations that returned a mapping.
  var allocations: Int { hits + misses }
  /// IPIs per allocation, with the counts: "0.426 (436 IPIs / 1024 allocations)".
  var perAllocation: String {
    "\(ratio(ipis, allocations)) (\(ipis) IPIs / \(allocations) allocations)"
  }
}
