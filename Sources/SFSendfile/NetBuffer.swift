// The network buffer of file pages: FreeBSD's mbuf with `EXT_SFBUF` external storage.

#if os(Linux)
  import SFBufHost

  /// A reference-counted network buffer whose storage is a run of consecutive, wired pages
  /// of one object, each mapped by its own sf_buf: the host's mbuf with `EXT_SFBUF` external
  /// storage (one page each in the original; a run here, as FreeBSD's multi-page `M_EXTPG`
  /// mbufs, so that a chain costs one buffer and one unwire call, not one per page).
  ///
  /// Each reference (a Swift strong reference) is one holder: the sendfile call while the
  /// bytes are being written, and a zero-copy notification until the kernel says it is done
  /// with them. When the last holder lets go, the release callback runs, as the kernel's
  /// `sendfile_free_mext` does: every sf_buf is freed (`sf_buf_free`) and every page
  /// unwired (`vm_page_unwire`). The bytes are never read or written by user code: the
  /// kernel reads them inside `sendmsg(2)`, where a page past the end of a truncated file is
  /// an `EFAULT`, not a `SIGBUS`.
  ///
  /// Cost: one object and one array; releasing frees each mapping (a window slot's atomic
  /// reference) and unwires the run with one call.
  public final class NetBuffer: @unchecked Sendable {
    /// The pool the mappings came from.
    public let pool: SFBufPool
    /// The mappings (`struct sf_buf *`), of pages `firstPage`, `firstPage + 1`, ... of one
    /// object, owned by this buffer.
    public let sfbufs: [sf_buf]

    /// Takes over `sfbufs`, mappings of consecutive wired pages of one object, and one wire
    /// of each page: all are released with the buffer.
    /// - Precondition: `sfbufs` is not empty and maps consecutive pages of one object (the
    ///   ends are checked always, every page in debug builds).
    public init(pool: SFBufPool, sfbufs: [sf_buf]) {
      precondition(!sfbufs.isEmpty, "a network buffer holds at least one page")
      let first = sf_buf_page(sfbufs[0])
      let last = sf_buf_page(sfbufs[sfbufs.count - 1])
      precondition(
        last.object === first.object && last.index == first.index + sfbufs.count - 1,
        "a network buffer holds consecutive pages of one object")
      assert(
        sfbufs.enumerated().allSatisfy { sf_buf_page($1) == first.object.page(first.index + $0) },
        "a network buffer holds consecutive pages of one object")
      self.pool = pool
      self.sfbufs = sfbufs
    }

    /// The first page carried.
    public var firstPage: VMPage { sf_buf_page(sfbufs[0]) }

    deinit {
      let first = firstPage
      for sf in sfbufs { pool.sf_buf_free(sf) }
      first.object.unwire(pages: first.index..<(first.index + sfbufs.count))
    }
  }

  /// Bytes copied once from the caller (the headers and trailers of a sendfile call, as the
  /// kernel copies them into mbufs), held like a network buffer.
  final class HeldBytes: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    /// The number of bytes held.
    let count: Int

    init(_ parts: [[UInt8]]) {
      let total = parts.reduce(0) { $0 + $1.count }
      let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 16)
      var at = 0
      for p in parts {
        p.withUnsafeBytes { src in
          if let base = src.baseAddress {
            (bytes.baseAddress! + at).copyMemory(from: base, byteCount: src.count)
          }
        }
        at += p.count
      }
      self.bytes = bytes
      count = total
    }

    deinit { bytes.deallocate() }
  }
#endif
