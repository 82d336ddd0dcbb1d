import ArgumentParser

/// `sfbuf bench`: side-by-side benchmarks. `sfbuf bench` alone runs the page-mapping
/// benchmark; `sfbuf bench sendfile` the sendfile one.
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Benchmark sf_buf against the alternatives, side by side.",
    subcommands: [
      BenchPagesCommand.self, BenchSendfileCommand.self, BenchSweepCommand.self,
      BenchSQLiteCommand.self, BenchServeCommand.self,
    ],
    defaultSubcommand: BenchPagesCommand.self
  )
}
