// Memory objects and their pages: the host's stand-in for the kernel's `vm_object` and
// `vm_page`.

#if os(Linux)
  import CSFBufLinux
  import Glibc
  import SFBufCore
  import Synchronization
  import SystemPackage

  /// The size of a page on this host, in bytes (`sysconf(_SC_PAGESIZE)`, read once): sf_buf
  /// maps one page per slot. A size that is not a power of two from 4 KiB to 64 KiB stops
  /// the process with a message naming it, at the first use.
  public let vmPageSize: Int = {
    let size = Int(sysconf(CInt(_SC_PAGESIZE)))
    guard (4096...65536).contains(size), size & (size - 1) == 0 else {
      fatalError(
        "sfbuf: the host's page size (\(size) bytes) is not supported: a power of two from 4096 to 65536"
      )
    }
    return size
  }()

  /// A memory object whose pages sf_bufs map: anonymous memory (a sealed memfd) or a regular
  /// file (the "buffer cache").
  ///
  /// An object owns its file descriptor and closes it when it is deinitialised or when
  /// ``close()`` is called; mappings made earlier stay valid (the host kernel keeps the file
  /// alive), later mappings are refused with `EBADF`.
  // @unchecked: its vars are guarded by `lock`.
  public final class VMObject: @unchecked Sendable {
    /// What the object is made of.
    public enum Backing: Sendable, Equatable {
      /// Anonymous memory: a memfd of fixed size, sealed so it cannot shrink or grow.
      case anonymous
      /// A regular file, at this path.
      case file(FilePath)
    }

    /// What the object is made of.
    public let backing: Backing
    /// How the pages may be accessed through mappings.
    public let access: FileDescriptor.AccessMode
    /// A number unique to this object in this process; pages hash by it.
    public let id: UInt32
    /// Whether the object is a file, whose size may change under it.
    @usableFromInline let isFile: Bool
    /// The wire counts of the pages (see ``VMPage/wire()``).
    @usableFromInline let wiring = WireTable()

    @usableFromInline var fdStorage: CInt
    private var direct: DirectMapping?
    /// `direct`, published once made (an unretained `DirectMapping`), read without the lock.
    @usableFromInline let directCell = Atomic<UnsafeMutableRawPointer?>(nil)
    let lock = Mutex(())
    /// The callers inside ``withDescriptor(_:)``, plus ``closing`` once ``close()`` began.
    let descriptorUsers = Atomic<Int>(0)
    static let closing = 1 << 40

    private static let nextIDs = Mutex<UInt32>(0)

    private init(fd: CInt, backing: Backing, access: FileDescriptor.AccessMode) {
      fdStorage = fd
      self.backing = backing
      self.isFile = backing != .anonymous
      self.access = access
      id = VMObject.nextIDs.locked { n in
        n &+= 1
        return n
      }
    }

    /// Creates an anonymous object of `size` bytes (rounded up to whole pages), filled with
    /// zeros, whose size is sealed (`memfd_create`, `ftruncate`, `F_ADD_SEALS`).
    ///
    /// Memory is used only for the pages that are written or wired.
    ///
    /// - Parameters:
    ///   - size: The object's size in bytes.
    ///   - name: The memfd's name, as `/proc/<pid>/maps` shows it.
    ///   - access: `.readWrite` (the default: mappings may be written) or `.readOnly`
    ///     (mappings are read-only; the object's ``fileDescriptor`` can still write its
    ///     contents, with `pwrite`). `.writeOnly` is a programming error and traps.
    ///     A reader that never writes through its mappings should ask for `.readOnly`: the
    ///     host keeps the pages of a memfd dirty, so a writable mapping's page-table entries
    ///     are made dirty, and each remap of a slot then marks its old page dirty again as it
    ///     tears the entry down; mapping a run of pages and reading it costs tens of
    ///     nanoseconds more per page for that (see the README's "Reading only? Map read-only").
    /// - Throws: ``VMError`` when `size` is not positive or the host refuses.
    public static func anonymous(
      size: Int, name: String = "sfbuf", access: FileDescriptor.AccessMode = .readWrite
    ) throws(VMError) -> VMObject {
      precondition(
        access != .writeOnly,
        "VMObject.anonymous: access .writeOnly makes no sense for memory (use .readOnly or .readWrite)"
      )
      guard size > 0 else { throw VMError.invalidSize(size) }
      let bytes = (size + vmPageSize - 1) / vmPageSize * vmPageSize
      let fd: CInt
      do throws(Errno) {
        fd = try Posix.check { sfb_memfd_create(name) }
        do {
          try Posix.ftruncate(fd, bytes)
          _ = try Posix.check { sfb_memfd_seal_size(fd) }
        } catch {
          Glibc.close(fd)
          throw error
        }
      } catch {
        throw VMError.system("memfd_create", error)
      }
      return VMObject(fd: fd, backing: .anonymous, access: access)
    }

    /// Opens the regular file at `path` as an object (`open(2)`).
    ///
    /// - Parameters:
    ///   - path: The file's path.
    ///   - access: `.readOnly` (mappings are read-only), `.readWrite`, or `.writeOnly` (every
    ///     mapping is then refused with `EACCES`, as the host refuses to map a file it may
    ///     not read).
    /// - Throws: ``VMError/system(_:_:)`` naming the path and the errno (missing file, no
    ///   permission), or ``VMError/notARegularFile(_:)``.
    public static func file(
      _ path: FilePath, access: FileDescriptor.AccessMode = .readOnly
    ) throws(VMError) -> VMObject {
      let fd: FileDescriptor
      do {
        fd = try FileDescriptor.open(path, access, options: .closeOnExec)
      } catch {
        throw VMError.system("open \(path)", error as? Errno ?? .ioError)
      }
      var st = stat()
      if fstat(fd.rawValue, &st) != 0 || (st.st_mode & S_IFMT) != S_IFREG {
        try? fd.close()
        throw VMError.notARegularFile(path)
      }
      return VMObject(fd: fd.rawValue, backing: .file(path), access: access)
    }

    /// Adopts `fd`, an open regular file, as an object named `path` (for messages): for a
    /// caller that opened the file its own way (below a directory, say). The object owns the
    /// descriptor from then on, even when this throws.
    ///
    /// - Throws: ``VMError/notARegularFile(_:)``.
    public static func file(
      adopting fd: FileDescriptor, path: FilePath, access: FileDescriptor.AccessMode = .readOnly
    ) throws(VMError) -> VMObject {
      var st = stat()
      if fstat(fd.rawValue, &st) != 0 || (st.st_mode & S_IFMT) != S_IFREG {
        try? fd.close()
        throw VMError.notARegularFile(path)
      }
      return VMObject(fd: fd.rawValue, backing: .file(path), access: access)
    }

    deinit {
      direct?.unmap()
      if fdStorage >= 0 { Glibc.close(fdStorage) }
    }

    /// The object's file descriptor (a memfd or the opened file), or `nil` after
    /// ``close()``. The object still owns it: do not close it.
    public var fileDescriptor: FileDescriptor? {
      let fd = rawDescriptor
      return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    /// The descriptor, or -1 after ``close()``.
    var rawDescriptor: CInt {
      lock.locked { _ in fdStorage }
    }

    /// Closes the object's descriptor now. Existing mappings stay valid; new mappings of its
    /// pages are refused (`EBADF`). Wire counts are kept.
    public func close() {
      lock.locked { _ in closeLocked() }
    }

    private func closeLocked() {
      // No new user gets the descriptor; the ones inside (an `mmap` each) finish first.
      var users = descriptorUsers.bitwiseOr(VMObject.closing, ordering: .acquiringAndReleasing)
        .newValue
      while users != VMObject.closing {
        sched_yield()
        users = descriptorUsers.load(ordering: .acquiring)
      }
      if fdStorage >= 0 { Glibc.close(fdStorage) }
      fdStorage = -1
    }

    /// The object's size in bytes now (`fstat`); a file may have been truncated or extended.
    public func size() throws(VMError) -> Int {
      do { return try Posix.fileSize(rawDescriptor) } catch {
        throw VMError.system("fstat", error)
      }
    }

    /// The number of pages of the object now, the last one possibly partial.
    public func pageCount() throws(VMError) -> Int {
      (try size() + vmPageSize - 1) / vmPageSize
    }

    /// Page `index` of this object. Does not check that the page exists; wiring does.
    @inlinable public func page(_ index: Int) -> VMPage { VMPage(object: self, index: index) }

    /// The ``VMPage/hashKey`` of page `index`, without making the page (which retains the
    /// object).
    @inlinable public func pageKey(_ index: Int) -> UInt {
      UInt(id) &<< 40 ^ UInt(bitPattern: index)
    }

    /// Throws `EINVAL` when a file object is now too short to hold every page of `pages`
    /// (it was truncated after they were wired): one `fstat`. An anonymous object's size is
    /// sealed, so it is not checked.
    func checkExists(_ pages: Range<Int>, fd: CInt) throws(Errno) {
      guard isFile, !pages.isEmpty else { return }
      if (pages.upperBound - 1) * vmPageSize >= (try Posix.fileSize(fd)) {
        throw Errno.invalidArgument
      }
    }

    /// ``checkExists(_:fd:)`` with the object's descriptor, as an allocation's refusal.
    @inlinable func checkMappable(_ pages: Range<Int>) throws(SFBufError) {
      if isFile { try checkFileMappable(pages) }
    }

    @usableFromInline func checkFileMappable(_ pages: Range<Int>) throws(SFBufError) {
      do throws(Errno) {
        try withDescriptor { fd throws(Errno) in try checkExists(pages, fd: fd) }
      } catch {
        throw .mappingRefused(errno: error.rawValue)
      }
    }

    /// The protection mappings of this object get (`PROT_READ`, plus `PROT_WRITE` unless the
    /// object is read-only).
    var protection: CInt {
      access == .readOnly ? PROT_READ : PROT_READ | PROT_WRITE
    }

    /// The object mapped whole, for the direct map; made on first use, then kept.
    func directMapping() throws(SFBufError) -> DirectMapping {
      try lock.locked { _ throws(SFBufError) -> DirectMapping in try directMappingLocked() }
    }

    private func directMappingLocked() throws(SFBufError) -> DirectMapping {
      if let d = direct { return d }
      let d = try DirectMapping(object: self, fd: fdStorage)
      direct = d
      directCell.store(Unmanaged.passUnretained(d).toOpaque(), ordering: .releasing)
      return d
    }

    /// The address of page `index` in the direct mapping: a few loads once the mapping is
    /// made and covers the page; else it is made or extended first (under the lock).
    @inlinable
    func directAddress(of index: Int) throws(SFBufError) -> UnsafeMutableRawPointer {
      if let p = directCell.load(ordering: .acquiring),
        let a = Unmanaged<DirectMapping>.fromOpaque(p)._withUnsafeGuaranteedRef({
          $0.mappedAddress(of: index)
        })
      {
        return a
      }
      return try directAddressSlow(of: index)
    }

    @usableFromInline
    func directAddressSlow(of index: Int) throws(SFBufError) -> UnsafeMutableRawPointer {
      try directMapping().address(of: index)
    }
  }

  /// One page of a ``VMObject``: the host's `vm_page`.
  ///
  /// Two pages are equal when they are the same page of the same object.
  public struct VMPage: SFBufPageKey, Hashable, Sendable, CustomStringConvertible {
    /// The object the page belongs to.
    public let object: VMObject
    /// The page's index in the object (its byte offset divided by ``vmPageSize``).
    @inlinable public var index: Int { pageIndex }
    @usableFromInline var pageIndex: Int

    @inlinable public init(object: VMObject, index: Int) {
      self.object = object
      self.pageIndex = index
    }

    /// Stores page `index` of `object` in `cell`: when `cell` holds a page of the same
    /// object, only its index changes, so that neither a retain of the object nor the
    /// release of the page replaced is paid (a window slot that cached a page of the file a
    /// run maps, see ``SFBufAllocator/allocateRun(count:flags:key:fill:)``).
    static func store(_ object: VMObject, _ index: Int, in cell: inout VMPage?) {
      if cell != nil && cell.unsafelyUnwrapped.object === object {
        cell!.pageIndex = index
      } else {
        cell = VMPage(object: object, index: index)
      }
    }

    @inlinable public static func == (a: VMPage, b: VMPage) -> Bool {
      a.index == b.index && a.object === b.object
    }

    public func hash(into h: inout Hasher) {
      h.combine(ObjectIdentifier(object))
      h.combine(index)
    }

    /// The object number in the high bits, the page index in the low bits.
    @inlinable public var hashKey: UInt { object.pageKey(index) }

    /// The byte offset of the page in its object.
    @inlinable public var offset: Int { index * vmPageSize }

    public var description: String { "page \(index) of object \(object.id)" }

    /// Wires the page (`vm_page_wire`): checks it lies inside the object, makes it resident,
    /// and adds one to its wire count. Only wired pages may be given to `sf_buf_alloc`.
    ///
    /// Cost: one `fstat`, one `fallocate` (anonymous) or `posix_fadvise` (file), and a lock.
    /// - Throws: ``VMError/pageOutOfRange(page:pages:)`` past the end of the object.
    public func wire() throws(VMError) {
      try object.wire(pages: index..<(index + 1))
    }

    /// Drops one wire (`vm_page_unwire`). Unwiring a page that is not wired stops the
    /// process: it is a bookkeeping bug in the caller.
    public func unwire() {
      object.unwire(pages: index..<(index + 1))
    }

    /// The page's wire count.
    public var wireCount: Int { Int(object.wiring.count(index)) }
  }

  extension VMObject {
    /// Wires every page of `pages` (see ``VMPage/wire()``) with one size check and one
    /// residency call for the whole run.
    public func wire(pages: Range<Int>) throws(VMError) {
      guard !pages.isEmpty else { return }
      let n = try pageCount()
      guard pages.lowerBound >= 0, pages.upperBound <= n else {
        throw VMError.pageOutOfRange(
          page: pages.lowerBound < 0 ? pages.lowerBound : pages.upperBound - 1, pages: n)
      }
      let fd = rawDescriptor
      let offset = pages.lowerBound * vmPageSize
      let length = pages.count * vmPageSize
      do throws(Errno) {
        switch backing {
        case .anonymous: try Posix.fallocate(fd, offset, length)
        case .file: try Posix.willNeed(fd, offset, length)
        }
      } catch {
        throw VMError.system("wire", error)
      }
      wiring.add(pages, 1)
    }

    /// Unwires every page of `pages`, each of which must be wired.
    public func unwire(pages: Range<Int>) {
      wiring.add(pages, -1)
    }
  }

  /// Why a memory object could not be made or a page not wired.
  public enum VMError: Error, Equatable, CustomStringConvertible {
    /// An anonymous object needs a positive size.
    case invalidSize(Int)
    /// The path names something other than a regular file.
    case notARegularFile(FilePath)
    /// The page lies past the end of the object, which has `pages` pages.
    case pageOutOfRange(page: Int, pages: Int)
    /// The host refused: the operation and its errno.
    case system(String, Errno)

    public var description: String {
      switch self {
      case .invalidSize(let s): "an anonymous object needs a positive size, not \(s)"
      case .notARegularFile(let p): "\(p) is not a regular file"
      case .pageOutOfRange(let page, let pages):
        "page \(page) is past the end of the object (\(pages) pages)"
      case .system(let what, let e): "\(what): \(e)"
      }
    }
  }
#endif
