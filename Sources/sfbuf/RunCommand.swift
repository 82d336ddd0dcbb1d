import ArgumentParser

/// The main job: several threads allocate, verify and free mappings of skewed random pages.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "run")
  func run() throws { throw ValidationError("not built yet") }
}
