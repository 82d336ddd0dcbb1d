// Counting heap allocations, per thread, in the program that links this target.
//
// The target defines malloc, calloc, realloc and the aligned allocators; the program's
// definitions take the place of glibc's for every library it loads (the Swift runtime
// included), and each forwards to glibc's own (__libc_malloc, ...) after counting. Only
// the sfbuf tool links it, so that `sfbuf bench` can print heap allocations per access.

#ifndef CSFBUFALLOCCOUNT_H
#define CSFBUFALLOCCOUNT_H

#include <stdint.h>

/// Heap allocations the calling thread has made so far: malloc, calloc, realloc (each
/// call), posix_memalign, aligned_alloc, memalign, valloc, pvalloc. Frees are not counted.
uint64_t sfb_thread_allocations(void);

#endif
