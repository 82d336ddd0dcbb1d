// The C peers of the sequential scan and of the hot hits: see CSFBufAllocCount.h.
#include "CSFBufAllocCount.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

uint64_t sfb_c_scan(int fd, long first, long count, long run, void *window, long window_pages) {
  long page = sysconf(_SC_PAGESIZE);
  if (run > window_pages) run = window_pages;
  if (run < 1) run = 1;
  long blocks = window_pages / run;
  long block = 0;
  uint64_t sum = 0;
  for (long k = 0; k < count; k += run) {
    long n = count - k < run ? count - k : run;
    char *at = (char *)window + block * run * page;
    block = (block + 1) % blocks;
    void *p = mmap(at, (size_t)(n * page), PROT_READ, MAP_SHARED | MAP_FIXED, fd,
                   (off_t)((first + k) * page));
    if (p == MAP_FAILED) return 0;
    const uint64_t *w = (const uint64_t *)p;
    for (long i = 0; i < n * page / 8; i++) sum += w[i];
  }
  return sum;
}

uint64_t sfb_c_counted_reads(const long *seq, long count, void *const *pages,
                             uint64_t *counts) {
  uint64_t sum = 0;
  for (long k = 0; k < count; k++) {
    long i = seq[k];
    uint64_t *word = &counts[i * 8];
    __atomic_fetch_add(word, 1, __ATOMIC_ACQUIRE);
    sum += *(const volatile uint64_t *)((const char *)pages[i] + (i & 63) * 64);
    __atomic_fetch_sub(word, 1, __ATOMIC_RELEASE);
  }
  return sum;
}
