// swift-tools-version: 6.2
// The server a Swift user would pick for static files, Hummingbird 2 with its
// FileMiddleware, for `sfbuf bench serve` to measure against. A package of its own so that
// neither the library nor the tool depends on Hummingbird; the bench builds it on demand:
//
//   swift build -c release --package-path Benchmarks/HummingbirdServe
//   Benchmarks/HummingbirdServe/.build/release/hb-serve ROOT PORT THREADS
import PackageDescription

let package = Package(
  name: "hb-serve",
  platforms: [.macOS(.v14)],
  dependencies: [
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1")
  ],
  targets: [
    .executableTarget(
      name: "hb-serve",
      dependencies: [.product(name: "Hummingbird", package: "hummingbird")]
    )
  ],
  swiftLanguageModes: [.v6]
)
