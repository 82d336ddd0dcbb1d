// swift-tools-version: 6.2
// Linux only: the host machine maps with mmap(MAP_FIXED), sleeps on futexes and pins with
// sched_setaffinity; the other platforms build nothing useful.
import PackageDescription

let package = Package(
  name: "sfbuf",
  products: [
    .library(name: "SFBufCore", targets: ["SFBufCore"]),
    .library(name: "SFBufHost", targets: ["SFBufHost"]),
    .library(name: "SFBufSim", targets: ["SFBufSim"]),
    .library(name: "SFSendfile", targets: ["SFSendfile"]),
    .library(name: "SFHTTP", targets: ["SFHTTP"]),
    .executable(name: "sfbuf", targets: ["sfbuf"]),
    // The loadable SQLite extension: `.build/<config>/libSFBufSQLite.so`, entry point
    // `sqlite3_sfbufsqlite_init`, a VFS named `sfbuf`.
    .library(name: "SFBufSQLite", type: .dynamic, targets: ["SFBufSQLite"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
    // `swift package generate-documentation`: the DocC catalogs of SFBufHost and SFBufCore.
    .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    // Property-based tests of the HTTP parser (tests only).
    .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
  ],
  targets: [
    // The portable allocator. Imports neither Glibc nor Foundation; builds as Embedded Swift.
    .target(name: "SFBufCore"),
    // What Glibc does not export: memfd, futex, sched_getcpu, affinity, thread-local pin count.
    .target(name: "CSFBufLinux"),
    // The Linux machine: VM objects, wiring, the reserved window, futex sleeping, sched_pin,
    // the Swift API and the C-style sf_buf_* functions.
    .target(
      name: "SFBufHost",
      dependencies: [
        "SFBufCore", "CSFBufLinux", .product(name: "SystemPackage", package: "swift-system"),
      ]
    ),
    // The simulated SMP machine: page tables, per-CPU TLBs that go stale, shootdowns, a
    // seeded scheduler, and the coherence checker.
    .target(name: "SFBufSim", dependencies: ["SFBufCore"]),
    // The users the manual names: sendfile(2) and zero-copy send, on the public API only.
    .target(
      name: "SFSendfile",
      dependencies: [
        "SFBufHost", "SFBufCore", "CSFBufLinux",
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    // The HTTP/1.1 static file server on sendfile: request parsing, epoll loops.
    .target(
      name: "SFHTTP",
      dependencies: [
        "SFSendfile", "SFBufHost", "CSFBufLinux",
        .product(name: "SystemPackage", package: "swift-system"),
      ]),
    // The SQLite extension: C glue over sqlite3ext.h (the VFS, its io_methods, the entry
    // point; no link to libsqlite3, SQLite hands it its API) and the Swift side that maps
    // database pages through an sf_buf pool.
    .target(name: "CSFBufSQLite"),
    .target(
      name: "SFBufSQLite",
      dependencies: [
        "SFBufHost", "CSFBufSQLite", .product(name: "SystemPackage", package: "swift-system"),
      ]),
    // The system's libsqlite3, for the tool's `bench sqlite` and the extension's tests only.
    .systemLibrary(
      name: "CSQLite3", path: "Sources/CSQLite3", pkgConfig: "sqlite3",
      providers: [.apt(["libsqlite3-dev"])]),
    // Small hand-written SVG charts (line and bar panels, log axes, crossings) for the tool.
    .target(name: "SFBufCharts"),
    // Heap allocations counted per thread, for `sfbuf bench`: the hook that
    // malloc-interposer (a shared library linked into the tool only) calls.
    .target(name: "CSFBufAllocCount"),
    .executableTarget(
      name: "sfbuf",
      dependencies: [
        "CSFBufAllocCount",
        "SFBufCharts",
        "CSFBufLinux",
        "SFBufCore",
        "SFBufHost",
        "SFBufSim",
        "SFSendfile",
        "SFHTTP",
        "SFBufSQLite",
        "CSFBufSQLite",
        "CSQLite3",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]
    ),
    .testTarget(name: "SFBufCoreTests", dependencies: ["SFBufCore", "SFBufTestSupport"]),
    .testTarget(name: "SFBufSimTests", dependencies: ["SFBufSim", "SFBufCore"]),
    .testTarget(name: "SFBufChartsTests", dependencies: ["SFBufCharts"]),
    // Threads, signals and bounded waits shared by the test targets.
    .target(
      name: "SFBufTestSupport", dependencies: ["CSFBufLinux"], path: "Tests/SFBufTestSupport"),
    .testTarget(
      name: "SFHTTPTests",
      dependencies: [
        "SFHTTP", "SFBufTestSupport",
        .product(name: "PropertyBased", package: "swift-property-based"),
      ]),
    .testTarget(
      name: "SFSendfileTests",
      dependencies: ["SFSendfile", "SFBufHost", "SFBufTestSupport"]),
    // The tool as users run it: a process, its output, its exit status, signals, no hangs.
    .testTarget(name: "SFBufToolTests", dependencies: ["SFBufTestSupport"]),
    .testTarget(
      name: "SFBufHostTests", dependencies: ["SFBufHost", "CSFBufLinux", "SFBufTestSupport"]),
    .testTarget(
      name: "SFBufSQLiteTests",
      dependencies: ["SFBufSQLite", "CSFBufSQLite", "CSQLite3", "SFBufHost", "SFBufTestSupport"]),
  ],
  swiftLanguageModes: [.v6]
)
