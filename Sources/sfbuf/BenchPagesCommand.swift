import ArgumentParser

/// `sfbuf bench pages` (the default of `sfbuf bench`): issue 5; written by its owner.
struct BenchPagesCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "pages")
  func run() throws { throw ValidationError("sfbuf bench pages is not built yet") }
}
