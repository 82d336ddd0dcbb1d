// Microbenchmarks of the sf_buf paths, with heap-allocation thresholds for CI.
//
// HitInUse         SFBufPool.allocate + address + free of a page whose mapping another
//                  reference holds (the lock-free hit)
// HitFreeCached    the same for a cached page with no reference (0 -> 1 -> 0, under the lock)
// HitInUseScoped   withMapping of a page in use (no handle)
// DirectMap        allocate + address + free on a direct map (the handle retains its object)
// DirectMapScoped  withMapping on a direct map (no handle)
// MissFaithful     a miss on a window of 64 slots cycling over 256 pages: remap the least
//                  recently freed slot (its page present), touch, free
// MissBatched      the same with the batched policy (batches of 16)
// BareMmapFixedAndTouch  mmap(MAP_FIXED) of the next page over one fixed page, and a touch
//
//   swift package --package-path Benchmarks benchmark
//   swift package --package-path Benchmarks benchmark thresholds check --metric mallocCountTotal

import Benchmark
import Glibc
import SFBufCore
import SFBufHost

/// No allocation at all: checked by `thresholds check` against `Thresholds/`.
var noAllocations: [BenchmarkMetric: BenchmarkThresholds] {
  [
    .mallocCountTotal: BenchmarkThresholds(absolute: [
      .p0: 0, .p25: 0, .p50: 0, .p75: 0, .p90: 0, .p99: 0, .p100: 0,
    ])
  ]
}

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .mallocCountTotal],
    timeUnits: .nanoseconds,
    warmupIterations: 10,
    scalingFactor: .kilo,
    maxDuration: .seconds(1),
    maxIterations: 100_000
  )
  let object = try! VMObject.anonymous(size: 256 * vmPageSize, name: "sfbuf-benchmarks")
  try! object.wire(pages: 0..<256)
  let window = try! SFBufPool(nsfbufs: 512)
  let direct = SFBufPool.directMap()
  let inUse = object.page(3)
  let free = object.page(4)
  // Page 3 stays held: hits on it find a mapping in use (no lock). Page 4 is cached, free.
  let keeper = window.sf_buf_alloc(inUse, SFB_DEFAULT)!
  try! window.allocate(free).free()
  try! direct.allocate(inUse).free()
  _ = keeper

  // Through a handle: allocate, read a word through its address, free.
  func handle(_ name: String, _ pool: SFBufPool, _ page: VMPage) {
    Benchmark(name, configuration: .init(thresholds: noAllocations)) { benchmark in
      for _ in benchmark.scaledIterations {
        let b = try! pool.allocate(page)
        blackHole(b.address.load(as: UInt64.self))
        b.free()
      }
    }
  }
  // Scoped: withMapping, reading a word, no handle.
  func scoped(_ name: String, _ pool: SFBufPool, _ page: VMPage) {
    Benchmark(name, configuration: .init(thresholds: noAllocations)) { benchmark in
      for _ in benchmark.scaledIterations {
        blackHole(try! pool.withMapping(of: page) { $0.load(as: UInt64.self) })
      }
    }
  }
  handle("HitInUse", window, inUse)
  handle("HitFreeCached", window, free)
  scoped("HitInUseScoped", window, inUse)
  handle("DirectMap", direct, inUse)
  scoped("DirectMapScoped", direct, inUse)

  // Misses: a window of 64 slots cycling over 256 pages, so every allocation remaps the least
  // recently freed slot (whose page is present) and touches the page; against the bare
  // system call doing the same to one fixed page of address space.
  let missConfiguration = Benchmark.Configuration(
    scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 20_000)
  for (name, policy) in [
    ("Faithful", SFBufReclaimPolicy.faithful), ("Batched", .batched(batch: 16)),
  ] {
    let pool = try! SFBufPool(nsfbufs: 64, policy: policy)
    var next = 0
    Benchmark("Miss\(name)", configuration: missConfiguration) {
      benchmark in
      for _ in benchmark.scaledIterations {
        let b = try! pool.allocate(object.page(next & 255))
        blackHole(b.address.load(as: UInt64.self))
        b.free()
        next &+= 1
      }
    }
  }
  let fixed = mmap(nil, vmPageSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
  var bareNext = 0
  Benchmark("BareMmapFixedAndTouch", configuration: missConfiguration) { benchmark in
    for _ in benchmark.scaledIterations {
      let p = mmap(
        fixed, vmPageSize, PROT_READ, MAP_SHARED | MAP_FIXED, object.fileDescriptor!.rawValue,
        off_t((bareNext & 255) * vmPageSize))!
      blackHole(p.load(as: UInt64.self))
      bareNext &+= 1
    }
  }
}
