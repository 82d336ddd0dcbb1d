import CSFBufAllocCount
import Glibc
import SFBufTestSupport
import Testing

/// The heap-allocation counter behind `sfbuf bench`'s allocs column. This test bundle links
/// it too, so every test here runs on its malloc (which forwards to glibc's).
@Suite("Allocation counter")
struct AllocCountTests {
  @Test("each heap allocation of the calling thread is counted, and nothing else")
  func counts() {
    // Read the counter between steps, check afterwards: `#expect` itself allocates.
    var reads: [UInt64] = []
    reads.reserveCapacity(8)
    reads.append(sfb_thread_allocations())
    var sum = 0
    for i in 0..<1000 { sum &+= i }
    reads.append(sfb_thread_allocations())
    free(malloc(32))
    free(calloc(4, 8))
    reads.append(sfb_thread_allocations())
    var p: UnsafeMutableRawPointer? = nil
    let aligned = posix_memalign(&p, 4096, 4096)
    let address = Int(bitPattern: p)
    free(p)
    let refused = posix_memalign(&p, 3, 16)
    reads.append(sfb_thread_allocations())
    let box = Box()
    reads.append(sfb_thread_allocations())
    withExtendedLifetime(box) {}
    let d = reads.map { $0 - reads[0] }
    #expect(sum == 499_500)
    #expect(
      d == [0, 0, 2, 3, 4],
      "arithmetic 0; malloc and calloc 1 each; posix_memalign 1; a class instance 1")
    #expect(aligned == 0 && address % 4096 == 0)
    #expect(refused == EINVAL, "an alignment that is not a power of two, not counted")
  }

  final class Box { var x = 1 }

  @Test("another thread's allocations are its own")
  func perThread() {
    let theirs = Shared<UInt64>(0)
    let t = TestThread {
      let before = sfb_thread_allocations()
      for _ in 0..<100 { free(malloc(16)) }
      let after = sfb_thread_allocations()
      theirs.with { $0 = after - before }
    }
    let start = sfb_thread_allocations()
    t.join()
    let mine = sfb_thread_allocations() - start
    #expect(theirs.get == 100)
    #expect(mine < 100, "the other thread's mallocs are not counted here (\(mine))")
  }
}
