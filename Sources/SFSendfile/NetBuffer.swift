// The network buffer of a file page: FreeBSD's mbuf with `EXT_SFBUF` external storage.

#if os(Linux)
  import SFBufHost

  /// A reference-counted network buffer whose storage is part of one mapped, wired page:
  /// the host's mbuf with `EXT_SFBUF` external storage.
  ///
  /// Each reference (a Swift strong reference) is one holder: the sendfile call while the
  /// bytes are being written, and a zero-copy notification until the kernel says it is done
  /// with them. When the last holder lets go, the release callback runs, as the kernel's
  /// `sendfile_free_mext` does: the sf_buf is freed (`sf_buf_free`) and the page unwired
  /// (`vm_page_unwire`). The bytes are never read or written by user code: the kernel reads
  /// them inside `sendmsg(2)`, where a page past the end of a truncated file is an `EFAULT`,
  /// not a `SIGBUS`.
  ///
  /// Cost: one object allocation; releasing takes the pool's lock (window) and the page's
  /// wire-table lock.
  public final class NetBuffer: @unchecked Sendable {
    /// The pool the mapping came from.
    public let pool: SFBufPool
    /// The mapping (`struct sf_buf *`), owned by this buffer.
    public let sf: sf_buf
    /// The bytes of the page this buffer carries: `length` bytes at `offset` in the page.
    public let data: UnsafeRawBufferPointer

    /// Takes over `sf`, a mapping of a wired page, and the page's wire: both are released
    /// with the buffer.
    /// - Precondition: `offset + length` is at most a page.
    public init(pool: SFBufPool, sf: sf_buf, offset: Int, length: Int) {
      precondition(offset >= 0 && length >= 0 && offset + length <= vmPageSize)
      self.pool = pool
      self.sf = sf
      data = UnsafeRawBufferPointer(start: sf_buf_kva(sf) + offset, count: length)
    }

    deinit {
      let page = sf_buf_page(sf)
      pool.sf_buf_free(sf)
      page.unwire()
    }
  }

  /// Bytes copied once from the caller (the headers and trailers of a sendfile call, as the
  /// kernel copies them into mbufs), held like a network buffer.
  final class HeldBytes: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer

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

    /// The number of bytes held.
    let count: Int

    deinit { bytes.deallocate() }
  }
#endif
