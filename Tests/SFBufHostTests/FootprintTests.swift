import Glibc
import SFBufTestSupport
import Testing

@testable import SFBufHost

/// The resident memory a window's bookkeeping costs per slot, measured as the growth of the
/// process's anonymous resident memory (`RssAnon` in `/proc/self/status`; the pages the slots
/// map are shared memory, counted apart) while pools are made and every slot allocated and
/// freed once. The marginal cost between a 16384-slot and a 32768-slot pool leaves out the
/// fixed cost of a pool; the granularity of the measurement is one 4 KiB page.
@Suite("Window footprint")
struct FootprintTests {
  @Test(
    "a window costs at most 64 bytes of resident memory per slot (in a child process)",
    .enabled(
      if: sanitizer != "address",
      "AddressSanitizer's shadow memory and redzones count in the resident memory measured"))
  func bytesPerSlot() async throws {
    await #expect(processExitsWith: .success) {
      let perSlot = marginalBytesPerSlot()
      // The exit status says the figure when the bound is broken.
      exit(perSlot < 64.5 ? 0 : Int32(min(perSlot, 255)))
    }
  }

  @Test("the figure, printed (in this process, which other tests share: not checked)")
  func printFigure() throws {
    print("sf_buf window bookkeeping: \(marginalBytesPerSlot()) bytes of resident memory per slot")
  }
}

/// (RSS growth for a 32768-slot pool − RSS growth for a 16384-slot pool) / 16384, each pool
/// made and each of its slots allocated and freed once.
func marginalBytesPerSlot() -> Double {
  let slots = SFBufPool.maxSlots
  let o = try! VMObject.anonymous(size: slots * vmPageSize)
  try! o.wire(pages: 0..<slots)
  func growth(_ n: Int) -> (Int, SFBufPool) {
    let before = rssAnonBytes()
    let pool = try! SFBufPool(nsfbufs: n)
    for i in 0..<n { try! pool.allocate(o.page(i)).free() }
    return (rssAnonBytes() - before, pool)
  }
  let (small, a) = growth(slots / 2)
  let (large, b) = growth(slots)
  withExtendedLifetime((a, b)) {}
  return Double(large - small) / Double(slots / 2)
}

/// `RssAnon` of this process, in bytes.
func rssAnonBytes() -> Int {
  guard let f = fopen("/proc/self/status", "r") else { return 0 }
  defer { fclose(f) }
  var line = [CChar](repeating: 0, count: 256)
  while fgets(&line, 256, f) != nil {
    let s = String(cString: line)
    if s.hasPrefix("RssAnon:") {
      return (Int(s.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
    }
  }
  return 0
}
