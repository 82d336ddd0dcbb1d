// See CSFBufAllocCount.h.

#include "CSFBufAllocCount.h"

static __thread uint64_t allocations;

void sfb_count_allocation(size_t size) {
  (void)size;
  allocations++;
}

uint64_t sfb_thread_allocations(void) { return allocations; }
