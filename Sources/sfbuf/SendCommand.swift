import ArgumentParser

/// `sfbuf send` and `sfbuf recv`: issue 4; written by its owner.
struct SendCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "send")
  func run() throws { throw ValidationError("sfbuf send is not built yet") }
}

struct RecvCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "recv")
  func run() throws { throw ValidationError("sfbuf recv is not built yet") }
}
