import ArgumentParser

/// `sfbuf bench sendfile`: issue 4; written by its owner.
struct BenchSendfileCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "sendfile")
  func run() throws { throw ValidationError("sfbuf bench sendfile is not built yet") }
}
