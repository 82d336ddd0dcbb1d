import ArgumentParser
import CSFBufLinux
import Glibc
import SFBufHost
import SFSendfile
import Synchronization
import SystemPackage

/// `sfbuf bench sendfile`: one file sent over loopback TCP to a reader process that drains
/// it into a buffer, by five methods interleaved in one run: our sendfile through a window,
/// our sendfile on the direct map, the host kernel's `sendfile(2)`, `pread`+`write`, and
/// `write` from a whole-file mapping. Prints medians of GB/s and the ratios between them as a
/// table or, with `--json`, as one JSON object.
///
/// The JSON document (`--json`, keys sorted, camelCase): `schema`
/// (`sfbuf-bench-sendfile/2`), `sizeBytes`, `repetitions`, `nsfbufs`, `pinned`,
/// `chunkBytes`, `methods` (an array, in the order above, of objects with `name`,
/// `gbpsMedian`, `gbpsMin`, `gbpsMax`, `gbpsRuns`), `ratios` (`sfbufWindowVsMmapWrite`,
/// `sfbufDirectVsMmapWrite`, `sfbufWindowVsPreadWrite`, `sfbufDirectVsPreadWrite`,
/// `sfbufWindowVsKernelSendfile`, `sfbufDirectVsKernelSendfile`: ratios of medians) and
/// `window` (the window's counters after the run: `nsfbufs`, `nsfbufspeak`, `sfAllocwait`,
/// `sfAllocfail`, `hits`, `misses`, `mapCalls`). Method names: `sfbuf_window`,
/// `sfbuf_direct`, `kernel_sendfile`, `pread_write`, `mmap_write`.
struct BenchSendfileCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sendfile",
    abstract: "Benchmark sendfile on sf_buf against the kernel's sendfile and plain writes.",
    discussion: """
      A file (in the page cache) is sent over loopback TCP to a reader process that drains \
      it into a 1 MiB buffer and answers with the byte count. Each transfer is timed from \
      the first byte written to the reader's answer. Methods: our sendfile through a window \
      of --nsfbufs slots and on the direct map (chains of 256 pages, one sendmsg each), the \
      kernel's sendfile(2), pread+write and write from a whole-file mapping (--chunk bytes \
      per call). Every method runs once to warm up, then --repetitions times, interleaved.
      """
  )

  @Option(
    help: ArgumentHelp(
      "Bytes per transfer (a number, or with a suffix K, M or G).", valueName: "bytes"))
  var size = "1G"

  @Option(help: ArgumentHelp("Timed transfers of each method.", valueName: "count"))
  var repetitions = 5

  @Option(help: ArgumentHelp("Window slots for the window method.", valueName: "slots"))
  var nsfbufs = 512

  @Option(
    help: ArgumentHelp(
      "Bytes per call of pread+write and write from a mapping (ours: 1 MiB chains).",
      valueName: "bytes"))
  var chunk = "1M"

  @Flag(help: "A short run (64 MiB, 3 repetitions) that takes a few seconds.")
  var quick = false

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  @Option(
    help: ArgumentHelp(
      "Where to make the temporary file: a disk, not tmpfs, to be realistic.",
      valueName: "folder"))
  var directory = "/var/tmp"

  @Flag(
    help: """
      Run the sender on CPU 0 and the reader on CPU 1 (with two CPUs or more): steadier \
      figures on a quiet machine, worse ones when other work shares the CPUs.
      """)
  var pin = false

  /// Runs only these methods (to profile one); the table then lacks the ratios it needs.
  @Option(name: .customLong("only"), help: .hidden)
  var only: [String] = []

  /// The largest --size: 1 TiB.
  static let maxSize = 1 << 40

  static let methods = [
    "sfbuf_window", "sfbuf_direct", "kernel_sendfile", "pread_write", "mmap_write",
  ]
  static let labels = [
    "sfbuf_window": "sfbuf, window", "sfbuf_direct": "sfbuf, direct map",
    "kernel_sendfile": "kernel sendfile(2)", "pread_write": "pread + write",
    "mmap_write": "write from mmap",
  ]

  func validate() throws {
    guard let s = parseBytes(size), (1...Self.maxSize).contains(s) else {
      throw ValidationError(
        "--size must be a byte count from 1 to 1T (a number, or with K, M, G or T), not '\(size)'")
    }
    guard let c = parseBytes(chunk), c >= 4096, c <= 1 << 30 else {
      throw ValidationError("--chunk must be 4K...1G")
    }
    _ = s
    _ = c
    for m in only where !Self.methods.contains(m) { throw ValidationError("unknown method \(m)") }
    guard (1...1000).contains(repetitions) else {
      throw ValidationError("--repetitions must be in 1...1000")
    }
    _ = try SFBufPool.parseSlots(String(nsfbufs), setting: "--nsfbufs")
  }

  func run() throws {
    let bytes = quick ? 64 << 20 : parseBytes(size)!
    let reps = quick ? min(repetitions, 3) : repetitions
    let chunkBytes = parseBytes(chunk)!
    // Ctrl-C, SIGTERM, SIGHUP: the file is removed and the reader stopped (registered as
    // each comes to be); SIGUSR1: the window's counters.
    SignalWatcher.start()
    let bench = try SendfileBench(
      size: bytes, chunk: chunkBytes, nsfbufs: nsfbufs, directory: directory)
    defer { bench.finish() }
    let methods = only.isEmpty ? Self.methods : only
    let cpus = Int(sfb_cpu_count())
    let pinned = pin && cpus >= 2
    if pinned && sfb_set_affinity_cpu(0) != 0 { throw CommandFailure("cannot run on CPU 0") }
    let window = bench.window
    SignalWatcher.onStatus { ["window:"] + window.stats.netstatLines.map { "  " + $0 } }
    try bench.startReader(connections: methods.count * (reps + 1), cpu: pinned ? 1 : nil)
    var runs: [String: [Double]] = [:]
    let progress = Progress.make(
      total: methods.count * (reps + 1), unit: .count("transfer"), quiet: json)
    var done = 0
    for m in methods {  // warm-up
      _ = try bench.transfer(m)
      done += 1
      progress?.update(done)
    }
    for r in 0..<reps {
      // Interleaved, and rotated so that no method always follows the same one.
      for i in 0..<methods.count {
        let m = methods[(i + r) % methods.count]
        let seconds = try bench.transfer(m)
        runs[m, default: []].append(Double(bytes) / seconds / 1e9)
        done += 1
        progress?.update(done)
      }
    }
    progress?.finish()
    try bench.stopReader()
    if !only.isEmpty {
      for m in methods { print("\(m): median \(fmt(median(runs[m]!))) GB/s") }
      return
    }
    let medians = Dictionary(uniqueKeysWithValues: runs.map { ($0.key, median($0.value)) })
    let ratios: [(String, Double)] = [
      ("sfbufWindowVsMmapWrite", medians["sfbuf_window"]! / medians["mmap_write"]!),
      ("sfbufDirectVsMmapWrite", medians["sfbuf_direct"]! / medians["mmap_write"]!),
      ("sfbufWindowVsPreadWrite", medians["sfbuf_window"]! / medians["pread_write"]!),
      ("sfbufDirectVsPreadWrite", medians["sfbuf_direct"]! / medians["pread_write"]!),
      ("sfbufWindowVsKernelSendfile", medians["sfbuf_window"]! / medians["kernel_sendfile"]!),
      ("sfbufDirectVsKernelSendfile", medians["sfbuf_direct"]! / medians["kernel_sendfile"]!),
    ]
    let st = bench.window.stats
    if json {
      try printJSON(
        Report(
          sizeBytes: bytes, repetitions: reps, nsfbufs: nsfbufs, pinned: pinned,
          chunkBytes: chunkBytes,
          methods: Self.methods.map { m in
            let v = runs[m]!
            return .init(
              name: m, gbpsMedian: Figure(medians[m]!), gbpsMin: Figure(v.min()),
              gbpsMax: Figure(v.max()), gbpsRuns: v.map { Figure($0) })
          },
          ratios: Dictionary(uniqueKeysWithValues: ratios.map { ($0.0, Figure($0.1)) }),
          window: .init(
            nsfbufs: st.nsfbufs, nsfbufspeak: st.nsfbufspeak, sfAllocwait: st.sf_allocwait,
            sfAllocfail: st.sf_allocfail, hits: st.hits, misses: st.misses,
            mapCalls: bench.window.mapCalls)))
      return
    }
    print(
      "sendfile over loopback TCP: \(describe(bytes)) per transfer to a reader process"
        + " draining into a 1 MiB buffer\(pinned ? " (sender on CPU 0, reader on CPU 1)" : "");"
        + " \(reps) interleaved repetitions after a warm-up; GB/s = 1e9 bytes/s")
    var t = Table(["method", "median", "min", "max", "/mmap+wr", "/pread+wr", "/kernel"])
    for m in Self.methods {
      let v = runs[m]!
      let med = medians[m]!
      t.add([
        Self.labels[m]! + (m == "sfbuf_window" ? " \(nsfbufs)" : ""), fmt(med),
        fmt(v.min()!), fmt(v.max()!), fmt(med / medians["mmap_write"]!),
        fmt(med / medians["pread_write"]!), fmt(med / medians["kernel_sendfile"]!),
      ])
    }
    t.print()
    print(
      "targets: >= 0.95x write from mmap, >= 1.0x pread+write. window: "
        + verdict(ratios[0].1, ratios[2].1) + "; direct map: " + verdict(ratios[1].1, ratios[3].1))
    print(
      "window after the run: " + st.netstatLines.joined(separator: "; ")
        + "; \(st.misses) misses, \(bench.window.mapCalls) mmap calls")
  }

  /// The `--json` document.
  struct Report: Encodable {
    struct Method: Encodable {
      var name: String
      var gbpsMedian, gbpsMin, gbpsMax: Figure<Double>
      var gbpsRuns: [Figure<Double>]
    }
    struct Window: Encodable {
      var nsfbufs, nsfbufspeak, sfAllocwait, sfAllocfail, hits, misses, mapCalls: Int
    }
    var schema = "sfbuf-bench-sendfile/2"
    var sizeBytes, repetitions, nsfbufs: Int
    var pinned: Bool
    var chunkBytes: Int
    var methods: [Method]
    var ratios: [String: Figure<Double>]
    var window: Window
  }

  private func verdict(_ vsMap: Double, _ vsPread: Double) -> String {
    (vsMap >= 0.95 ? "met" : "missed") + " (\(fmt(vsMap))x) / "
      + (vsPread >= 1.0 ? "met" : "missed") + " (\(fmt(vsPread))x)"
  }
}

/// The file, the pools, the reader process and the five ways to send.
// @unchecked: raw buffers and the listener, set up before the reader and senders start.
final class SendfileBench: @unchecked Sendable {
  let size: Int
  let chunk: Int
  let path: String
  let object: VMObject
  let window: SFBufPool
  let direct = SFBufPool.directMap()
  let file: FileDescriptor
  let map: UnsafeMutableRawPointer
  let buffer: UnsafeMutableRawPointer
  private var listener: Listener?
  private var reader: pid_t = 0
  /// The reader's pid while it runs, for the clean-up on a terminating signal.
  private let liveReader = Atomic<Int32>(0)

  init(size: Int, chunk: Int, nsfbufs: Int, directory: String) throws {
    self.size = size
    self.chunk = chunk
    window = try SFBufPool(nsfbufs: nsfbufs)
    var template = Array("\(directory)/sfbuf-bench-XXXXXX".utf8CString)
    let wfd = mkstemp(&template)
    guard wfd >= 0 else { throw CommandFailure("cannot create a file in \(directory)") }
    path = String(
      decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let made = path
    SignalWatcher.onTermination { unlink(made) }
    let written = FileDescriptor(rawValue: wfd)
    defer { try? written.close() }
    do {
      try SendfileBench.fill(written, size)
      do {
        file = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
      } catch {
        throw CommandFailure("cannot open \(path): \(error)")
      }
      object = try VMObject.file(FilePath(path))
      guard let m = mmap(nil, size, PROT_READ, MAP_SHARED, file.rawValue, 0), m != MAP_FAILED
      else {
        throw CommandFailure("cannot map \(path)")
      }
      map = m
    } catch {
      unlink(path)
      throw error
    }
    buffer = .allocate(byteCount: chunk, alignment: 4096)
  }

  /// Fills the file with pseudo-random megabytes, each stamped with its index, and pushes
  /// it to the disk, so no write-back runs during the transfers; its pages stay cached.
  static func fill(_ fd: FileDescriptor, _ size: Int) throws {
    let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    defer { block.deallocate() }
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    for i in 0..<(block.count / 8) {
      x ^= x << 13
      x ^= x >> 7
      x ^= x << 17
      block.storeBytes(of: x, toByteOffset: i * 8, as: UInt64.self)
    }
    var at = 0
    while at < size {
      block.storeBytes(of: UInt64(at), as: UInt64.self)
      let n = min(block.count, size - at)
      do {
        _ = try fd.writeAll(
          toAbsoluteOffset: Int64(at), UnsafeRawBufferPointer(rebasing: block[0..<n]))
      } catch {
        throw CommandFailure("cannot write the benchmark's file: \(error)")
      }
      at += n
    }
    fdatasync(fd.rawValue)
  }

  /// Starts the reader: this program's hidden `recv --sink`, as a child process (another
  /// address space, as a real peer), on a listening socket made here.
  func startReader(connections: Int, cpu: Int?) throws {
    let l = try Listener()
    listener = l
    var exe = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &exe, exe.count - 1)
    guard n > 0 else { throw CommandFailure("cannot find this program (/proc/self/exe)") }
    let path = String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, l.fileDescriptor.rawValue, 3)
    let argv =
      [
        path, "recv", "0", "--listen-fd", "3", "--sink", "--connections", "\(connections)",
        "--parent", "\(getpid())",
      ]
      + (cpu.map { ["--cpu", "\($0)"] } ?? [])
    let args = argv.map { strdup($0) } + [nil]
    defer { for a in args { free(a) } }
    // The reader takes signals as usual, whatever this process blocks for its watcher.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    let r = posix_spawn(&reader, path, &actions, &attributes, args, environ)
    guard r == 0 else { throw CommandFailure("cannot start the reader: \(Errno(rawValue: r))") }
    liveReader.store(reader, ordering: .releasing)
    let live = self
    SignalWatcher.onTermination {
      let pid = live.liveReader.load(ordering: .acquiring)
      if pid > 0 { kill(pid, SIGKILL) }
    }
  }

  /// Waits for the reader to exit after its last connection.
  func stopReader() throws {
    var status: Int32 = 0
    waitpid(reader, &status, 0)
    liveReader.store(0, ordering: .releasing)
    reader = 0
    if status != 0 { throw CommandFailure("the reader failed (wait status \(status))") }
  }

  /// Removes the file, and stops a reader still running after an error.
  func finish() {
    if reader > 0 {
      liveReader.store(0, ordering: .releasing)
      kill(reader, SIGTERM)
      var status: Int32 = 0
      waitpid(reader, &status, 0)
    }
    munmap(map, size)
    try? file.close()
    unlink(path)
    buffer.deallocate()
  }

  /// One transfer by `method`; returns its seconds, from connecting to the reader's answer.
  func transfer(_ method: String) throws -> Double {
    let s = try Socket.connect(host: "127.0.0.1", port: listener!.port)
    defer { s.close() }
    let start = now()
    switch method {
    case "sfbuf_window": _ = try sendfile(object, to: s, pool: window)
    case "sfbuf_direct": _ = try sendfile(object, to: s, pool: direct)
    case "kernel_sendfile": try kernelSendfile(s.fileDescriptor.rawValue)
    case "pread_write": try preadWrite(s.fileDescriptor.rawValue)
    default: try mapWrite(s.fileDescriptor.rawValue)
    }
    try s.shutdownWrite()
    var answer: UInt64 = 0
    var got = 0
    while got < 8 {
      let n = try withUnsafeMutableBytes(of: &answer) {
        try s.receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[got...]))
      }
      if n == 0 { throw CommandFailure("the reader closed without answering") }
      got += n
    }
    let seconds = now() - start
    if Int(UInt64(littleEndian: answer)) != size {
      throw CommandFailure(
        "\(method): the reader got \(UInt64(littleEndian: answer)) bytes, not \(size)")
    }
    return seconds
  }

  /// The kernel's own sendfile(2), in calls of at most 1 GiB.
  private func kernelSendfile(_ sock: CInt) throws {
    var off = off_t(0)
    while Int(off) < size {
      let n = rawSendfile(sock, file.rawValue, &off, min(size - Int(off), 1 << 30))
      if n < 0 {
        if -n == Int(EINTR) { continue }
        throw CommandFailure("sendfile(2): \(Errno(rawValue: Int32(-n)))")
      }
    }
  }

  /// pread(2) into a buffer, then send(2) of the buffer.
  private func preadWrite(_ sock: CInt) throws {
    var at = 0
    while at < size {
      let n: Int
      do {
        n = try file.read(
          fromAbsoluteOffset: Int64(at),
          into: UnsafeMutableRawBufferPointer(start: buffer, count: min(chunk, size - at)))
      } catch {
        throw CommandFailure("pread: \(error)")
      }
      if n == 0 { throw CommandFailure("pread: end of file") }
      try sendAll(sock, UnsafeRawPointer(buffer), n)
      at += n
    }
  }

  /// send(2) straight from the whole-file mapping.
  private func mapWrite(_ sock: CInt) throws {
    var at = 0
    while at < size {
      let n = min(chunk, size - at)
      try sendAll(sock, UnsafeRawPointer(map + at), n)
      at += n
    }
  }

  private func sendAll(_ sock: CInt, _ p: UnsafeRawPointer, _ count: Int) throws {
    var done = 0
    while done < count {
      let n = rawSend(sock, p + done, count - done)
      if n < 0 {
        if -n == Int(EINTR) { continue }
        throw CommandFailure("send: \(Errno(rawValue: Int32(-n)))")
      }
      done += n
    }
  }
}

/// sendfile(2); returns the count, or minus the errno read right after.
@inline(never)
private func rawSendfile(_ sock: CInt, _ fd: CInt, _ off: inout off_t, _ count: Int) -> Int {
  let n = Glibc.sendfile(sock, fd, &off, count)
  return n < 0 ? -Int(errno) : n
}

/// send(2) with MSG_NOSIGNAL; returns the count, or minus the errno read right after.
@inline(never)
private func rawSend(_ sock: CInt, _ p: UnsafeRawPointer, _ count: Int) -> Int {
  let n = send(sock, p, count, Int32(MSG_NOSIGNAL))
  return n < 0 ? -Int(errno) : n
}

/// "1G", "256K", "4096" as bytes; nil when it is not such a count or does not fit an Int.
func parseBytes(_ text: String) -> Int? {
  let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
  if let last = text.uppercased().last, let unit = units[last] {
    guard let n = Int(text.dropLast()), n >= 0 else { return nil }
    let (bytes, overflow) = n.multipliedReportingOverflow(by: unit)
    return overflow ? nil : bytes
  }
  return Int(text)
}

/// Bytes in the largest whole unit.
func describe(_ bytes: Int) -> String {
  if bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
  if bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
  return "\(bytes) bytes"
}

func median(_ v: [Double]) -> Double {
  let s = v.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
