// What a writable mapping costs a reader of a memfd, with no library around it: the
// sequential scan's C loop (runs of 128 pages of a 32 MiB memfd mapped with
// mmap(MAP_SHARED | MAP_FIXED) over the blocks of a 512-page window in turn, each page
// summed), once with PROT_READ and once with PROT_READ | PROT_WRITE, alternated.
//
// The memfd's pages are dirty (a memfd is never written back), and a writable shared
// mapping of it has no write-notify, so its entries are made dirty as they are filled;
// the next mmap over the block then marks each old page dirty again and flushes the TLB
// before it lets go of the page (zap_pte_range's delayed rmap). A read-only mapping's
// entries are clean and skip both.
//
//   cc -O2 -o /tmp/prot-cost scripts/prot-cost.c && /tmp/prot-cost [rounds]
//
// Prints, for each round, the best of 10 passes over the file in ns per page for each
// protection, and their difference.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { pages = 8192, run = 128, window_pages = 512, passes = 10 };

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

// One pass over the file; returns ns per page, adds the pages' words to *sum.
static double pass(int fd, char *window, long page, int prot, uint64_t *sum) {
  double t0 = now_ns();
  long block = 0;
  for (long k = 0; k < pages; k += run) {
    char *at = window + block * run * page;
    block = (block + 1) % (window_pages / run);
    void *p = mmap(at, (size_t)(run * page), prot, MAP_SHARED | MAP_FIXED, fd, (off_t)(k * page));
    if (p == MAP_FAILED) {
      perror("mmap");
      exit(1);
    }
    const uint64_t *w = p;
    for (long i = 0; i < run * page / 8; i++) *sum += w[i];
  }
  return (now_ns() - t0) / pages;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  long page = sysconf(_SC_PAGESIZE);
  int fd = memfd_create("prot-cost", 0);
  if (fd < 0 || ftruncate(fd, pages * page) != 0) {
    perror("memfd");
    return 1;
  }
  char *buffer = malloc((size_t)page);
  for (long i = 0; i < pages; i++) {
    memset(buffer, (int)(i & 0xff), (size_t)page);
    if (pwrite(fd, buffer, (size_t)page, (off_t)(i * page)) != page) {
      perror("pwrite");
      return 1;
    }
  }
  char *window = mmap(NULL, (size_t)(window_pages * page), PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (window == MAP_FAILED) {
    perror("mmap window");
    return 1;
  }
  uint64_t sum = 0;
  const int prots[2] = {PROT_READ, PROT_READ | PROT_WRITE};
  printf("round  read-only  read-write  difference (ns per page, best of %d passes)\n", passes);
  for (int r = 0; r < rounds; r++) {
    double best[2] = {1e18, 1e18};
    for (int m = 0; m < 2; m++)
      for (int t = 0; t < passes; t++) {
        double ns = pass(fd, window, page, prots[m], &sum);
        if (ns < best[m]) best[m] = ns;
      }
    printf("%5d  %9.1f  %10.1f  %10.1f\n", r + 1, best[0], best[1], best[1] - best[0]);
  }
  return sum == 1;  // keeps the sums
}
