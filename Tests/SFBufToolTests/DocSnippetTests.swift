import Foundation
import Glibc
import SFBufTestSupport
import Testing

/// Every ```swift block of the README and of the DocC articles compiles against the
/// package's modules as built for these tests, with only the imports the block shows
/// (`swiftc -typecheck`, one file per block), twice: as top-level code (a `main.swift`),
/// and with everything but its imports in the body of a `throws` function, `async` when
/// the block uses `await` (there overload resolution prefers async functions: as in the
/// task a reader pastes it into).
/// A block that declares an extension, a protocol or an operator is checked at top level
/// only.
enum SnippetChecker {
  /// The block with its statements moved into `func snippet() throws` (`async throws` when
  /// it uses `await`), its imports left at the top; nil when the block declares what a
  /// function body cannot.
  static func wrapped(_ code: String) -> String? {
    let lines = code.split(separator: "\n", omittingEmptySubsequences: false)
    let topOnly = ["extension ", "protocol ", "infix operator", "prefix operator", "@main"]
    if lines.contains(where: { line in topOnly.contains { line.hasPrefix($0) } }) { return nil }
    let imports = lines.filter { $0.hasPrefix("import ") || $0.hasPrefix("@testable import ") }
    let body = lines.filter { !($0.hasPrefix("import ") || $0.hasPrefix("@testable import ")) }
    let effects = code.contains("await ") ? "async throws" : "throws"
    return (imports + ["func snippet() \(effects) {"] + body.map { "  " + $0 } + ["}"])
      .joined(separator: "\n") + "\n"
  }

  /// Typechecks `code` both ways (see above); nil when both compile, else the diagnostics.
  static func check(_ code: String, name: String) throws -> String? {
    if let e = try typecheck(code, name: name) { return "at top level:\n" + e }
    if let w = wrapped(code), let e = try typecheck(w, name: name + "_async") {
      return "in a function:\n" + e
    }
    return nil
  }

  /// The package's root: the nearest folder above this test bundle with a Package.swift.
  static func packageRoot() throws -> String {
    var dir = try buildDirectory()
    while let slash = dir.lastIndex(of: "/") {
      dir = String(dir[..<slash])
      if access(dir + "/Package.swift", R_OK) == 0 { return dir }
    }
    throw ToolProcessError.notBuilt("Package.swift above the test bundle")
  }

  /// The build folder of this configuration (…/.build/x86_64-unknown-linux-gnu/debug).
  static func buildDirectory() throws -> String {
    let tool = try toolPath()
    return String(tool[..<tool.lastIndex(of: "/")!])
  }

  /// The Markdown files whose Swift blocks are checked: README.md and every article of a
  /// DocC catalog under Sources/.
  static func documents() throws -> [String] {
    let root = try packageRoot()
    var out = [root + "/README.md"]
    let sources = root + "/Sources"
    let walker = FileManager.default.enumerator(atPath: sources)
    while let p = walker?.nextObject() as? String {
      if p.contains(".docc/") && p.hasSuffix(".md") { out.append(sources + "/" + p) }
    }
    return out.sorted()
  }

  /// The ```swift blocks of `text`, with the line each starts on.
  static func swiftBlocks(_ text: String) -> [(line: Int, code: String)] {
    var blocks: [(Int, String)] = []
    var current: [Substring]?
    var start = 0
    for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let trimmed = line.drop { $0 == " " }
      if current == nil, trimmed.hasPrefix("```swift") {
        current = []
        start = i + 2
      } else if current != nil, trimmed.hasPrefix("```") {
        blocks.append((start, current!.joined(separator: "\n") + "\n"))
        current = nil
      } else {
        current?.append(line)
      }
    }
    return blocks
  }

  /// The swiftc on PATH.
  static func swiftc() -> String? {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin"
    return path.split(separator: ":").map { "\($0)/swiftc" }.first { access($0, X_OK) == 0 }
  }

  /// Typechecks `code` as the only file of a program against the built modules; returns
  /// nil when it compiles, else the compiler's diagnostics.
  static func typecheck(_ code: String, name: String) throws -> String? {
    let build = try buildDirectory()
    let root = try packageRoot()
    guard let swiftc = swiftc() else {
      Issue.record("no swiftc on PATH")
      return "no swiftc"
    }
    let dir = makeTempPath("sfbuf-snippet")
    unlink(dir)
    mkdir(dir, 0o700)
    let file = dir + "/\(name).swift"
    let log = dir + "/diagnostics"
    defer {
      unlink(file)
      unlink(log)
      rmdir(dir)
    }
    FileManager.default.createFile(atPath: file, contents: Data(code.utf8))
    // The C modules: those SwiftPM made a module map for, and those with their own in an
    // include folder (the package's and its dependencies').
    var args = [swiftc, "-typecheck", file, "-I", build + "/Modules"]
    let fm = FileManager.default
    for entry in (try? fm.contentsOfDirectory(atPath: build)) ?? []
    where fm.fileExists(atPath: "\(build)/\(entry)/module.modulemap") {
      args += ["-Xcc", "-fmodule-map-file=\(build)/\(entry)/module.modulemap"]
    }
    for base in [root + "/Sources", root + "/.build/checkouts"] {
      let walker = fm.enumerator(atPath: base)
      while let p = walker?.nextObject() as? String {
        if p.hasSuffix("include/module.modulemap") {
          args += ["-Xcc", "-I" + base + "/" + String(p.dropLast("/module.modulemap".count))]
        }
      }
    }
    let p = try ToolProcess(args, stdout: log, stderr: log)
    let status = p.wait(timeout: 120, "for swiftc -typecheck of \(name)")
    return status == 0 ? nil : readText(log)
  }
}

@Suite("Documentation: every Swift block compiles")
struct DocSnippetTests {
  @Test("every ```swift block of README.md and of the DocC articles typechecks")
  func everyBlock() throws {
    let docs = try SnippetChecker.documents()
    var checked = 0
    for doc in docs {
      let text = readText(doc)
      let name = doc.split(separator: "/").last!.split(separator: ".").first!
      for (line, code) in SnippetChecker.swiftBlocks(text) {
        let errors = try SnippetChecker.check(code, name: "\(name)_line\(line)")
        #expect(errors == nil, "\(doc):\(line): the Swift block does not compile:\n\(errors ?? "")")
        checked += 1
      }
    }
    #expect(checked >= 2, "the README's examples were found (\(checked) blocks in \(docs))")
  }

  @Test("the checker catches a block that does not compile: a missing import, a missing await")
  func catchesBroken() throws {
    // The README's Swift example once omitted its import…
    let noImport = "let pool = try SFBufPool(nsfbufs: 8)\n"
    let e1 = try SnippetChecker.check(noImport, name: "noImport")
    #expect(e1?.contains("cannot find 'SFBufPool' in scope") == true, "\(e1 ?? "compiled")")
    // …and, in a block that also uses await, called allocate without it: the async
    // overload is chosen there.
    let noAwait = """
      import SFBufHost
      let pool = try SFBufPool(nsfbufs: 8)
      let object = try VMObject.anonymous(size: 1 << 16)
      try object.wire(pages: 0..<2)
      do {
        let buf = try pool.allocate(object.page(0), flags: .noWait)
        _ = buf
      }
      let other = try await pool.allocate(object.page(1), flags: .interruptible)
      _ = other

      """
    let e2 = try SnippetChecker.check(noAwait, name: "noAwait")
    #expect(
      e2?.contains("expression is 'async' but is not marked with 'await'") == true,
      "\(e2 ?? "compiled")")
    // The extraction: two blocks, the languages told apart, lines counted from 1.
    let md = "a\n```swift\nlet x = 1\n```\n```sh\nls\n```\n  ```swift\nlet y = 2\n  ```\n"
    let blocks = SnippetChecker.swiftBlocks(md)
    #expect(blocks.map(\.line) == [3, 9] && blocks.map(\.code) == ["let x = 1\n", "let y = 2\n"])
  }
}
