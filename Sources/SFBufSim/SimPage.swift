// Physical pages of the simulated machine and what they hold.

import SFBufCore

/// A physical page (a frame) of the simulated machine: what `vm_page` is to the kernel.
///
/// Frame `n` starts with a contents that names it (see ``SimMachine/initialWord(frame:word:)``),
/// so an access that lands in the wrong frame shows it in the value it reads.
public struct SimPage: SFBufPageKey, Hashable, Sendable, CustomStringConvertible {
  /// The frame number, `0 ..< SimMachine.frames`.
  public var frame: Int

  /// The page of frame `frame`.
  @inlinable public init(frame: Int) { self.frame = frame }

  /// The frame number: equal pages have equal keys.
  @inlinable public var hashKey: UInt { UInt(bitPattern: frame) }

  /// `frame N`.
  public var description: String { "frame \(frame)" }
}

/// One page-table entry of the window: the frame a slot maps, and the valid and accessed
/// bits of an x86 PTE.
public struct SimPTE: Equatable, Sendable {
  /// The frame the entry points at (meaningful only when ``valid``).
  public var frame: Int = 0
  /// Whether the entry translates at all; an access through an invalid entry faults.
  public var valid = false
  /// Set by the hardware when a CPU loads the entry into its TLB; cleared by a PTE write.
  public var accessed = false

  /// An invalid entry.
  public init() {}
}

/// An access that found no valid translation (a page fault in the window).
public struct SimPageFault: Error, Equatable, Sendable, CustomStringConvertible {
  /// The CPU that faulted.
  public var cpu: Int
  /// The virtual address accessed.
  public var address: Int

  /// A fault of `cpu` at `address`.
  public init(cpu: Int, address: Int) {
    self.cpu = cpu
    self.address = address
  }

  /// `page fault on CPU c at 0x…`.
  public var description: String { "page fault on CPU \(cpu) at \(hex(address))" }
}

/// `0x` followed by the hexadecimal digits of `n`.
func hex(_ n: Int) -> String { "0x" + String(n, radix: 16) }
