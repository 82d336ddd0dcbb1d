// swift-tools-version: 6.2
// The microbenchmarks of sfbuf, with ordo-one/package-benchmark, in a package of their own so
// that the main package does not depend on the benchmark tooling.
//
//   swift package --package-path Benchmarks benchmark                   run them all
//   swift package --package-path Benchmarks benchmark thresholds check  CI: allocation limits
import PackageDescription

let package = Package(
  name: "sfbuf-benchmarks",
  platforms: [.macOS(.v13)],
  dependencies: [
    .package(name: "sfbuf", path: ".."),
    .package(
      url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1",
      traits: ["MallocInterposer"]),
  ],
  targets: [
    .executableTarget(
      name: "SFBufBenchmarks",
      dependencies: [
        .product(name: "SFBufCore", package: "sfbuf"),
        .product(name: "SFBufHost", package: "sfbuf"),
        .product(name: "Benchmark", package: "package-benchmark"),
      ],
      path: "Benchmarks/SFBufBenchmarks",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
    )
  ],
  swiftLanguageModes: [.v6]
)
