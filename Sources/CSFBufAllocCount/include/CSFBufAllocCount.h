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

#endif
