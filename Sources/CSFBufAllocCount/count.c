// See CSFBufAllocCount.h. Allocation calls are counted in a thread-local word (static TLS:
// reading it allocates nothing, so it is safe inside malloc itself), then forwarded to
// glibc's exported implementations, so that memory from here and from glibc's internal
// callers can be freed by either.

#define _GNU_SOURCE
#include "CSFBufAllocCount.h"

#include <errno.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static __thread uint64_t allocations;

uint64_t sfb_thread_allocations(void) { return allocations; }

void *malloc(size_t size) {
  allocations++;
  return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
  allocations++;
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
  allocations++;
  return __libc_realloc(p, size);
}

void *memalign(size_t alignment, size_t size) {
  allocations++;
  return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  allocations++;
  return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  // POSIX: a power of two that is a multiple of sizeof(void *).
  if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  allocations++;
  void *p = __libc_memalign(alignment, size);
  if (p == NULL && size != 0) return ENOMEM;
  *out = p;
  return 0;
}

void *valloc(size_t size) {
  allocations++;
  return __libc_valloc(size);
}

void *pvalloc(size_t size) {
  allocations++;
  return __libc_pvalloc(size);
}
