import Foundation
import Testing

/// `sfbuf bench`'s heap allocations per access, counted by malloc-interposer (a shared
/// library linked into the tool only; this test bundle keeps glibc's malloc, so that it
/// runs under the sanitizers).
@Suite("sfbuf bench: heap allocations per access")
struct AllocCountTests {
  /// Whether this bundle, and so the tool built with it, runs under a sanitizer: its
  /// runtime defines malloc in the executable itself, ahead of malloc-interposer's, and
  /// the tool then reports the counts as missing (null) rather than as zeros.
  static let sanitized = ["__tsan_init", "__asan_init"].contains { (name: String) in
    dlsym(dlopen(nil, RTLD_NOW), name) != nil
  }

  /// Runs a quick `bench pages --json` over two workloads; returns its cells.
  func cells(_ extra: [String]) throws -> [[String: Any]] {
    let r = try runTool(
      [
        "bench", "--quick", "--json", "--trials", "1", "--workload", "hot", "--workload",
        "uniform", "--nsfbufs", "64",
      ] + extra, timeout: 120)
    #expect(r.status == 0, "sfbuf bench: \(r.stderr)")
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    return json?["cells"] as? [[String: Any]] ?? []
  }

  @Test("every access of every peer allocates nothing, hits and misses alike")
  func none() throws {
    let cells = try cells([])
    #expect(cells.count == 2 * 2 * 5 + 2)  // and the reference-count floor on hot
    if Self.sanitized {
      #expect(cells.allSatisfy { $0["allocsPerAccess"] is NSNull }, "not counted: null")
      return
    }
    for c in cells {
      // With two threads the batched window's misses may meet on one page, and the
      // second waits for the first one's mapping: a wait the allocator makes a waiter for
      // (reused afterwards) the first time two wait at once, which depends on timing.
      let bound = c["threads"] as? Int == 1 ? 0 : 0.01
      let n = c["allocsPerAccess"] as? Double ?? .infinity
      #expect(
        n <= bound,
        "\(c["workload"] ?? "?") \(c["threads"] ?? "?") \(c["peer"] ?? "?"): \(n) per access")
    }
  }

  /// The sequential scan maps page runs of 16 pages here (`nsfbufs / 4`). Counted per
  /// thread and trial: the C loop allocates nothing; the batched window one batch, whose
  /// storage its runs reuse; map-ahead at most a few batches per run (the one it hands the
  /// reader, the helper's empty one when the window is full, the reader's own for what the
  /// helper could not map), and what starting its helper thread takes.
  @Test("the sequential scan: no allocation per run but map-ahead's one batch per run")
  func seqRuns() throws {
    let r = try runTool(
      [
        "bench", "--quick", "--json", "--trials", "1", "--workload", "seq", "--nsfbufs", "64",
        "--peer", "batched", "--peer", "ahead", "--peer", "c",
      ], timeout: 120)
    #expect(r.status == 0, "sfbuf bench: \(r.stderr)")
    let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    let cells = json?["cells"] as? [[String: Any]] ?? []
    #expect(cells.count == 2 * 5)
    if Self.sanitized { return }
    for c in cells {
      let peer = c["peer"] as? String ?? "?"
      let threads = c["threads"] as? Int ?? 1
      let pages = (c["pages"] as? Int ?? 0) / threads
      let perTrial = (c["allocsPerAccess"] as? Double ?? .infinity) * Double(pages)
      let runs = (pages + 15) / 16
      let bound = peer == "ahead" ? 3 * runs + 40 : peer == "batched" ? 1 : 0
      #expect(
        perTrial <= Double(bound),
        "seq \(threads) \(peer): \(perTrial) allocations per thread and trial")
    }
  }

  @Test("a deliberate allocation per access is counted in every cell")
  func oneEach() throws {
    let cells = try cells(["--allocate-per-access"])
    #expect(cells.count == 2 * 2 * 5 + 2)  // and the reference-count floor on hot
    if Self.sanitized { return }
    for c in cells {
      let n = c["allocsPerAccess"] as? Double ?? 0
      #expect(n >= 1, "\(c["workload"] ?? "?") \(c["peer"] ?? "?"): \(n)")
    }
  }
}
