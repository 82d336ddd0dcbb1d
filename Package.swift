// swift-tools-version: 6.2
import PackageDescription

let package = Package(
  name: "sfbuf",
  products: [
    .library(name: "SFBufCore", targets: ["SFBufCore"]),
    .library(name: "SFBufHost", targets: ["SFBufHost"]),
    .executable(name: "sfbuf", targets: ["sfbuf"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    // The portable allocator. Imports neither Glibc nor Foundation; builds as Embedded Swift.
    .target(name: "SFBufCore"),
    // What Glibc does not export: memfd, futex, sched_getcpu, affinity, thread-local pin count.
    .target(name: "CSFBufLinux"),
    // The Linux machine: VM objects, wiring, the reserved window, futex sleeping, sched_pin,
    // the Swift API and the C-style sf_buf_* functions.
    .target(name: "SFBufHost", dependencies: ["SFBufCore", "CSFBufLinux"]),
    .executableTarget(
      name: "sfbuf",
      dependencies: [
        "SFBufHost",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    ),
    .testTarget(name: "SFBufCoreTests", dependencies: ["SFBufCore"]),
    .testTarget(name: "SFBufHostTests", dependencies: ["SFBufHost", "CSFBufLinux"]),
  ],
  swiftLanguageModes: [.v6]
)
