// Counting heap allocations per thread, for `sfbuf bench`'s allocs column.
//
// This target does not define malloc. The counting is done by ordo-one/malloc-interposer,
// a shared library linked into the sfbuf tool only, which calls an allocation hook on the
// allocating thread for every counted malloc, calloc, realloc and aligned allocation;
// `sfb_count_allocation` is that hook, and adds one to a thread-local word (static TLS:
// touching it allocates nothing, so it is safe inside the allocator).

#ifndef CSFBUFALLOCCOUNT_H
#define CSFBUFALLOCCOUNT_H

#include <stddef.h>
#include <stdint.h>

/// The allocation hook: counts one heap allocation of the calling thread.
void sfb_count_allocation(size_t size);

/// Heap allocations counted on the calling thread so far (0 until the hook is installed).
uint64_t sfb_thread_allocations(void);

/// The C peer of `sfbuf bench pages`' sequential scan, for measuring what the library adds
/// to the kernel's cost: maps pages `first ..< first + count` of `fd` in runs of `run`
/// pages with one `mmap(MAP_FIXED)` each, into a region of `window_pages` pages at
/// `window` (reserved by the caller) that it goes round as the window's batched policy
/// does, and sums every 8-byte word of every page. No reference counts, no lock, no
/// bookkeeping: the same system calls and the same reads. Returns the sum, or 0 with errno
/// set when a mapping is refused.
uint64_t sfb_c_scan(int fd, long first, long count, long run, void *window, long window_pages);

/// The `refs` peer of `sfbuf bench pages`' hot cell, the least that a hit which counts
/// references can cost: for each `k < count`, page `i = seq[k]` is read at `pages[i]` (the
/// word at byte `(i % 64) * 64`, as the other peers read it) between a locked increment
/// and a locked decrement (acquire, release) of `counts[i * 8]`, a word in a cache line of
/// its own. No hash, no lock, no handle: what is left of a window's hit once it is
/// subtracted. Returns the sum of the words read.
uint64_t sfb_c_counted_reads(const long *seq, long count, void *const *pages,
                             uint64_t *counts);

#endif
