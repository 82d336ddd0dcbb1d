import CSFBufLinux
import Glibc
import SFBufCore
import SFBufTestSupport
import SystemPackage

@testable import SFBufHost

/// The tag of page `index` of `object`: written with pwrite(2), read through mappings.
func tag(_ object: VMObject, _ index: Int) -> UInt64 {
  UInt64(object.id) << 32 | UInt64(index) | 0xA5 << 56
}

/// An anonymous object of `pages` pages, each tagged and wired.
func taggedAnonymous(pages: Int, access: FileDescriptor.AccessMode = .readWrite) throws
  -> VMObject
{
  let o = try VMObject.anonymous(size: pages * vmPageSize, access: access)
  try writeTags(o, pages: pages)
  try o.wire(pages: 0..<pages)
  return o
}

/// A real file of `pages` pages under a fresh temporary directory, tagged, opened with
/// `access` and wired (unless write-only).
func taggedFile(pages: Int, access: FileDescriptor.AccessMode = .readOnly) throws -> VMObject {
  let path = makeTempPath("sfbuf-file")
  let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
  precondition(fd >= 0)
  precondition(ftruncate(fd, off_t(pages * vmPageSize)) == 0)
  close(fd)
  let o = try VMObject.file(FilePath(path), access: access)
  if access != .writeOnly {
    try writeTags(o, pages: pages, path: path)
    try o.wire(pages: 0..<pages)
  }
  unlink(path)
  return o
}

func writeTags(_ o: VMObject, pages: Int, path: String? = nil) throws {
  // A read-only object's descriptor cannot write: write the tags through another one.
  let fd = path.map { open($0, O_RDWR) } ?? o.fileDescriptor!.rawValue
  for i in 0..<pages {
    var t = tag(o, i)
    precondition(pwrite(fd, &t, 8, off_t(i * vmPageSize)) == 8)
  }
  if path != nil { close(fd) }
}

/// Reads the tag through a mapping.
func readTag(_ buf: borrowing SFBuf) -> UInt64 {
  buf.address.load(as: UInt64.self)
}

/// The reclaim policies every window test runs under: the original, and batches (small, so
/// that the tests' tiny windows recycle in batches too).
let policies: [SFBufReclaimPolicy] = [.faithful, .batched(batch: 2)]
