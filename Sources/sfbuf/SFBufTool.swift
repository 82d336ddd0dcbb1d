import ArgumentParser
import Glibc

/// `sfbuf`: shows the sf_buf allocator working, benchmarks it, and prints its counters.
@main
struct SFBufTool: ParsableCommand {
  /// The tool's version, printed by `sfbuf --version`.
  static let version = "0.2.0"

  static let configuration = CommandConfiguration(
    commandName: "sfbuf",
    abstract: "Temporary page mappings (FreeBSD's sf_buf(9)) on Linux, simulated, and bare metal.",
    version: version,
    subcommands: [
      RunCommand.self, SimCommand.self, BenchCommand.self, SendCommand.self, RecvCommand.self,
      ServeCommand.self,
    ],
    defaultSubcommand: RunCommand.self
  )

  /// Parses and runs, after one check of its own: `run`, the default subcommand, takes no
  /// argument, so a first word that names no subcommand is a mistyped one (`sfbuf sned`)
  /// and is reported as such, not as an error in `run`'s usage.
  static func main() {
    let args = Array(CommandLine.arguments.dropFirst())
    if let first = args.first, !first.hasPrefix("-") {
      let names = configuration.subcommands.map { $0._commandName }
      if first != "help" && !names.contains(first) {
        printError("Error: unknown subcommand '\(first)'")
        printError("Subcommands: \(names.joined(separator: ", ")). See 'sfbuf --help'.")
        Glibc.exit(ExitCode.validationFailure.rawValue)
      }
    }
    main(args)
  }
}
