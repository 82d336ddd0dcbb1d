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
  /// `sendfile_free_mext` does: every sf_buf is freed (`sf_buf_free`, one pool lock for the
  /// whole batch) and every page unwired (`vm_page_unwire`). The bytes are never read or
  /// written by user code: the kernel reads them inside `sendmsg(2)`, where a page past the
  /// end of a truncated file is an `EFAULT`, not a `SIGBUS`.
  ///
  /// Cost: one object; releasing frees the mappings as one ``SFBufBatch`` and unwires the
  /// run with one call.
  // @unchecked: `batch` changes only in deinit.
  public final class NetBuffer: @unchecked Sendable {
    /// The mappings, of pages `firstPage`, `firstPage + 1`, ... of one object, owned by this
    /// buffer (`nil` only while it is being released).
    private var batch: SFBufBatch?
    /// The first page carried.
    public let firstPage: VMPage
    /// The number of pages carried.
    public let count: Int

    /// Takes over `batch`, mappings of consecutive wired pages of one object, and one wire
    /// of each page: all are released with the buffer.
    /// - Precondition: `batch` is not empty and maps consecutive pages of one object (the
    ///   ends are checked always, every page in debug builds).
    public init(_ batch: consuming SFBufBatch) {
      precondition(!batch.isEmpty, "a network buffer holds at least one page")
      let first = batch.page(0)
      let last = batch.page(batch.count - 1)
      precondition(
        last.object === first.object && last.index == first.index + batch.count - 1,
        "a network buffer holds consecutive pages of one object")
      assert(
        (0..<batch.count).allSatisfy { batch.page($0) == first.object.page(first.index + $0) },
        "a network buffer holds consecutive pages of one object")
      firstPage = first
      count = batch.count
      self.batch = consume batch
    }

    /// Where page `i` of the buffer is mapped (`sf_buf_kva`).
    public func address(_ i: Int) -> UnsafeMutableRawPointer { batch!.address(i) }

    deinit {
      batch.take()?.free()
      firstPage.object.unwire(pages: firstPage.index..<(firstPage.index + count))
    }
  }

  /// Bytes copied once from the caller (the headers and trailers of a sendfile call, as the
  /// kernel copies them into mbufs), held like a network buffer.
  // @unchecked: immutable bytes behind a raw pointer.
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
