import ArgumentParser
import SFBufSim

/// `sfbuf sim`: workloads on the simulated SMP machine (issue 3; written by its owner).
struct SimCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "sim")
  func run() throws { throw ValidationError("sfbuf sim is not built yet") }
}
