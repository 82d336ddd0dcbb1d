// The kernel's one address space: two-level IA-32 paging, 4 KiB pages, no direct map.

import KernelSupport

/// Bits of an IA-32 page-directory or page-table entry (4 KiB pages, no PAE).
enum PTE {
  static let present: UInt32 = 1 << 0
  static let writable: UInt32 = 1 << 1
  static let writeThrough: UInt32 = 1 << 3
  static let cacheDisable: UInt32 = 1 << 4
  /// Set by the MMU when it uses the entry, that is, when a TLB may hold it.
  static let accessed: UInt32 = 1 << 5
  static let dirty: UInt32 = 1 << 6
  /// The physical frame an entry points at.
  static let frameMask: UInt32 = 0xFFFF_F000
}

/// The page tables every CPU runs on.
///
/// Mapped, and nothing else:
/// - the kernel image, `kernel_start ..< kernel_end` (code, data, heap, stacks, these
///   tables), identity-mapped page by page;
/// - the local APIC's page, uncached, at its physical address;
/// - the sf_buf window: one page table, 1024 slots from ``windowBase``, all empty at start.
///
/// The test's "physical pages" lie above the kernel and are reachable only through the
/// window.
final class AddressSpace {
  /// The first virtual address of the window (page-directory entry 768).
  static let windowBase: UInt = 0xC000_0000
  /// Slots in the window: one page table's worth.
  static let windowSlots = 1024

  /// The page directory (loaded into CR3).
  let directory: UnsafeMutablePointer<UInt32>
  /// The window's page table: entry `i` maps slot `i`.
  let window: UnsafeMutablePointer<UInt32>

  /// Builds the page tables; paging stays off until ``activate()``.
  init() {
    directory = AddressSpace.newTable()
    window = AddressSpace.newTable()
    directory[Int(AddressSpace.windowBase >> 22)] =
      UInt32(UInt(bitPattern: window)) | PTE.present | PTE.writable
    var page = UInt32(kernel_start_address())
    while page < UInt32(kernel_end_address()) {
      map(virtual: page, physical: page, flags: PTE.writable)
      page += 4096
    }
    let apic = UInt32(LocalAPIC.base)
    map(virtual: apic, physical: apic, flags: PTE.writable | PTE.cacheDisable | PTE.writeThrough)
  }

  /// The physical (and virtual) address of the page directory, for CR3.
  var cr3: UInt32 { UInt32(UInt(bitPattern: directory)) }

  /// Loads CR3 and turns paging on for the calling CPU (the APs do the same in boot.S).
  func activate() {
    write_cr3(cr3)
    write_cr0(read_cr0() | 0x8000_0000)
  }

  /// The virtual address of window slot `slot`.
  @inline(__always) static func address(ofSlot slot: Int) -> UInt {
    windowBase + UInt(slot) * 4096
  }

  /// Points window slot `slot` at `entry` (a frame and flags, or 0) and returns the entry it
  /// replaces, accessed bit included. Atomic with respect to the MMU setting that bit.
  /// Invalidates nothing.
  func exchangeWindowEntry(slot: Int, with entry: UInt32) -> UInt32 {
    pte_exchange(window + slot, entry)
  }

  /// A zeroed, page-aligned page table from the heap (inside the identity-mapped image).
  private static func newTable() -> UnsafeMutablePointer<UInt32> {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
    let table = raw.bindMemory(to: UInt32.self, capacity: 1024)
    table.initialize(repeating: 0, count: 1024)
    return table
  }

  /// Maps one 4 KiB page, creating its page table if needed.
  private func map(virtual: UInt32, physical: UInt32, flags: UInt32) {
    let pde = Int(virtual >> 22)
    if directory[pde] & PTE.present == 0 {
      directory[pde] =
        UInt32(UInt(bitPattern: AddressSpace.newTable())) | PTE.present
        | PTE.writable
    }
    let table = UnsafeMutablePointer<UInt32>(bitPattern: UInt(directory[pde] & PTE.frameMask))!
    table[Int((virtual >> 12) & 0x3FF)] = (physical & PTE.frameMask) | flags | PTE.present
  }
}
