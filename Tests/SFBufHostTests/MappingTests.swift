import Glibc
import SFBufCore
import SFBufTestSupport
import SystemPackage
import Testing

@testable import SFBufHost

/// Every mapping handed out must show its own page: the tag written with pwrite(2).
@Suite("Mappings show the right page")
struct MappingTests {
  enum Backing: String, CaseIterable { case anonymous, file }
  enum Impl: String, CaseIterable { case direct, window }

  func makePool(_ impl: Impl) throws -> SFBufPool {
    impl == .direct ? .directMap() : try SFBufPool(nsfbufs: 8)
  }

  func makeObject(_ backing: Backing, pages: Int) throws -> VMObject {
    backing == .anonymous ? try taggedAnonymous(pages: pages) : try taggedFile(pages: pages)
  }

  @Test("tags read back through every mapping", arguments: Impl.allCases, Backing.allCases)
  func tagsReadBack(impl: Impl, backing: Backing) throws {
    let pool = try makePool(impl)
    // Two objects in one pool, 40 pages each through 8 slots: many remaps, many hits.
    let objects = try [makeObject(backing, pages: 40), makeObject(backing, pages: 40)]
    var rng = SplitMix(seed: 42)
    for _ in 0..<2000 {
      let o = objects[Int(rng.next() % 2)]
      let i = Int(rng.next() % 40)
      let buf = try pool.allocate(o.page(i))
      #expect(readTag(buf) == tag(o, i))
      #expect(buf.page == o.page(i))
    }
    if impl == .window {
      let s = pool.stats
      #expect(s.hits > 0 && s.remaps > 8)
      #expect(s.nsfbufsused == 0)
    }
  }

  @Test("C-style API: kva and page of each handle", arguments: Impl.allCases)
  func cStyle(impl: Impl) throws {
    let pool = try makePool(impl)
    let o = try taggedAnonymous(pages: 4)
    var handles: [sf_buf] = []
    for i in 0..<4 {
      let sf = try #require(pool.sf_buf_alloc(o.page(i), SFB_DEFAULT))
      #expect(sf_buf_kva(sf).load(as: UInt64.self) == tag(o, i))
      #expect(sf_buf_page(sf) == o.page(i))
      handles.append(sf)
    }
    for sf in handles { pool.sf_buf_free(sf) }
    #expect(pool.stats.nsfbufsused == 0)
  }

  @Test("writes through a mapping reach the object")
  func writesReachObject() throws {
    let pool = try SFBufPool(nsfbufs: 2)
    let o = try taggedAnonymous(pages: 3)
    try pool.withMapping(of: o.page(2)) { bytes in
      bytes.storeBytes(of: 0xDEAD_BEEF as UInt64, toByteOffset: 8, as: UInt64.self)
    }
    var v: UInt64 = 0
    #expect(pread(o.fileDescriptor!.rawValue, &v, 8, off_t(2 * vmPageSize + 8)) == 8)
    #expect(v == 0xDEAD_BEEF)
  }

  /// What `/proc/self/maps` says of the mapping that holds `address`: its permissions
  /// ("r--s", "rw-s").
  func permissions(at address: UnsafeRawPointer) throws -> String? {
    let a = UInt(bitPattern: address)
    for line in try readProcMaps() {
      let fields = line.split(separator: " ")
      let range = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
      if range.count == 2, range[0] <= a, a < range[1] { return String(fields[1]) }
    }
    return nil
  }

  /// An anonymous object asked for read-only maps read-only in every way a page reaches a
  /// mapping (one page, a run, the direct map), and its descriptor still writes its pages;
  /// the default stays writable.
  @Test("an anonymous object's access sets its mappings' protection", arguments: Impl.allCases)
  func anonymousAccess(impl: Impl) throws {
    let pool = try makePool(impl)
    for (access, expected) in [(FileDescriptor.AccessMode.readOnly, "r--s"), (.readWrite, "rw-s")] {
      let o = try taggedAnonymous(pages: 4, access: access)
      #expect(o.access == access)
      let one = try pool.allocate(o.page(0))
      #expect(readTag(one) == tag(o, 0))
      #expect(try permissions(at: one.address) == expected, "one page, \(access)")
      var run = try pool.allocateBatch(of: o, pages: 1..<4)
      #expect(run.count == 3)
      for j in 0..<run.count {
        #expect(run.address(j).load(as: UInt64.self) == tag(o, 1 + j))
        #expect(try permissions(at: run.address(j)) == expected, "a run's page \(j), \(access)")
      }
      run.removeAll()
    }
  }

  @Test("direct map: addresses are arithmetic, flags ignored, counters read 0")
  func directMap() throws {
    let pool = SFBufPool.directMap()
    let o = try taggedAnonymous(pages: 16)
    let a0 = try pool.allocate(o.page(0), flags: .noWait)
    let a5 = try pool.allocate(o.page(5), flags: [.interruptible])
    #expect(a5.address - a0.address == 5 * vmPageSize)
    #expect(a0.slot == nil)
    #expect(pool.stats == SFBufStats())
    #expect(pool.mapCalls == 0)
  }

  @Test("one window serves pages of many objects, and a page's slot is found again")
  func manyObjects() throws {
    let pool = try SFBufPool(nsfbufs: 16)
    let objects = try (0..<8).map { _ in try taggedAnonymous(pages: 2) }
    var slots: [Int] = []
    for o in objects { slots.append(try pool.allocate(o.page(1)).slot!) }
    #expect(Set(slots).count == 8)
    for (o, s) in zip(objects, slots) {
      let b = try pool.allocate(o.page(1))
      #expect(b.slot == s)
      #expect(readTag(b) == tag(o, 1))
    }
    #expect(pool.stats.hits == 8 && pool.stats.remaps == 8)
  }

  @Test("wiring: past the end is an error; counts nest")
  func wiring() throws {
    let o = try VMObject.anonymous(size: 3 * vmPageSize)
    #expect(throws: VMError.pageOutOfRange(page: 3, pages: 3)) { try o.page(3).wire() }
    #expect(throws: VMError.pageOutOfRange(page: -1, pages: 3)) { try o.page(-1).wire() }
    try o.page(1).wire()
    try o.page(1).wire()
    #expect(o.page(1).wireCount == 2)
    #expect(o.page(0).wireCount == 0)
    o.page(1).unwire()
    #expect(o.page(1).wireCount == 1)
    // A huge, sparse object: wiring a far page costs one chunk, not the object's size.
    let big = try VMObject.anonymous(size: 1 << 40)
    try big.page((1 << 28) - 1).wire()
    #expect(big.page((1 << 28) - 1).wireCount == 1)
    #expect(big.page(5).wireCount == 0)
  }

  @Test("a run's wiring is checked at once, across chunks of wire counts, as page by page")
  func runWiring() throws {
    let o = try VMObject.anonymous(size: 3000 * vmPageSize)
    let machine = try #require(try SFBufPool(nsfbufs: 4).window?.machine)
    #expect(!machine.isWired(run: o.page(0), count: 4), "no chunk made yet")
    try o.wire(pages: 1000..<2100)
    for (first, count) in [(1000, 24), (1020, 10), (1000, 1100), (2090, 10)] {
      #expect(machine.isWired(run: o.page(first), count: count), "\(first) + \(count)")
    }
    for (first, count) in [(999, 2), (2099, 2), (2090, 11), (1020, 1081)] {
      #expect(!machine.isWired(run: o.page(first), count: count), "\(first) + \(count)")
    }
    o.page(1025).unwire()
    #expect(!machine.isWired(run: o.page(1020), count: 10))
    #expect(machine.isWired(run: o.page(1026), count: 10))
    // The same answers as each page's own check.
    for first in stride(from: 990, to: 2110, by: 7) {
      let each = (first..<(first + 9)).allSatisfy { machine.isWired(o.page($0)) }
      #expect(machine.isWired(run: o.page(first), count: 9) == each, "\(first)")
    }
  }

  @Test("objects: clear errors for bad input")
  func objectErrors() throws {
    #expect(throws: VMError.invalidSize(0)) { try VMObject.anonymous(size: 0) }
    #expect(throws: VMError.system("open /nonexistent/sfbuf", .noSuchFileOrDirectory)) {
      try VMObject.file("/nonexistent/sfbuf")
    }
    #expect(throws: VMError.notARegularFile("/tmp")) { try VMObject.file("/tmp") }
    // Anonymous objects are sealed: they cannot shrink.
    let o = try VMObject.anonymous(size: vmPageSize)
    #expect(ftruncate(o.fileDescriptor!.rawValue, 0) == -1 && errno == EPERM)
  }
}

/// SplitMix64: a seeded generator for reproducible tests.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
