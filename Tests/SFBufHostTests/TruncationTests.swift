import Glibc
@_spi(Testing) import SFBufCore
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// A page wired while its file was long enough, allocated after the file was truncated
/// below it: both kinds of pool refuse it at allocation with `mappingRefused(EINVAL)`, and
/// nothing is lost (no `SIGBUS` at the first touch, no slot, no counter left wrong).
@Suite("Pages past the end of a truncated file")
struct TruncationTests {
  /// The pools under test: a window under each policy, and a direct map.
  enum Kind: CaseIterable {
    case faithful, batched, direct
    func make() throws -> SFBufPool {
      switch self {
      case .faithful: try SFBufPool(nsfbufs: 4)
      case .batched: try SFBufPool(nsfbufs: 4, policy: .batched(batch: 2))
      case .direct: .directMap()
      }
    }
  }

  /// A read-write file of 4 tagged pages, all wired, each mapped once (so that the direct
  /// map covers all four), then truncated to one page.
  func truncatedFile(_ pool: SFBufPool) throws -> VMObject {
    let o = try taggedFile(pages: 4, access: .readWrite)
    for i in 0..<4 {
      #expect(try pool.withMapping(of: o.page(i)) { $0.load(as: UInt64.self) } == tag(o, i))
    }
    #expect(ftruncate(o.fileDescriptor!.rawValue, off_t(vmPageSize)) == 0)
    return o
  }

  @Test("allocating a page past the new end is refused with EINVAL", arguments: Kind.allCases)
  func refused(kind: Kind) throws {
    let pool = try kind.make()
    let o = try truncatedFile(pool)
    // A free cached slot of the window still maps page 2: a hit would hand it out. Push the
    // pages out of the window first, so that the allocation is a miss.
    let other = try taggedAnonymous(pages: 4)
    for i in 0..<4 { _ = try pool.withMapping(of: other.page(i)) { $0[0] } }
    let failBefore = pool.stats.sf_allocfail
    #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) { try pool.allocate(o.page(2)) }
    #expect(pool.sf_buf_alloc(o.page(3), SFB_NOWAIT) == nil)
    #expect(throws: SFBufError.mappingRefused(errno: EINVAL)) {
      try pool.allocateRun(of: o, pages: 1..<4) { _ in }
    }
    // Page 0 is still there, and the window's books are straight.
    #expect(try pool.withMapping(of: o.page(0)) { $0.load(as: UInt64.self) } == tag(o, 0))
    #expect(pool.stats.nsfbufsused == 0)
    if !pool.isDirectMap {
      #expect(pool.stats.sf_allocfail >= failBefore + 2)
      #expect(pool.window!.checkInvariants() == nil)
    }
  }

  @Test("the file grown again maps the page again", arguments: Kind.allCases)
  func grownAgain(kind: Kind) throws {
    let pool = try kind.make()
    let o = try truncatedFile(pool)
    #expect(ftruncate(o.fileDescriptor!.rawValue, off_t(4 * vmPageSize)) == 0)
    var t = tag(o, 2)
    #expect(pwrite(o.fileDescriptor!.rawValue, &t, 8, off_t(2 * vmPageSize)) == 8)
    #expect(try pool.withMapping(of: o.page(2)) { $0.load(as: UInt64.self) } == tag(o, 2))
  }
}
