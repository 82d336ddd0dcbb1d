import ArgumentParser

/// `sfbuf`: shows the sf_buf allocator working, benchmarks it, and prints its counters.
@main
struct SFBufTool: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sfbuf",
    abstract: "Temporary page mappings (FreeBSD's sf_buf(9)) on Linux, simulated, and bare metal.",
    subcommands: [
      RunCommand.self, SimCommand.self, BenchCommand.self, SendCommand.self, RecvCommand.self,
    ],
    defaultSubcommand: RunCommand.self
  )
}
