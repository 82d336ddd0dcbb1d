// What map-ahead can gain at best on this machine, with no library around it: the
// sequential scan's C loop (runs of 128 pages of a 32 MiB memfd, mapped read-only with
// mmap(MAP_SHARED | MAP_FIXED) over the blocks of a 512-page window in turn, each page
// summed), against the same scan split over two threads: a helper that maps each run and
// fills its page-table entries (MAP_POPULATE, or MADV_POPULATE_READ after the mmap) up to
// three runs ahead, and the reader, which only sums. The threads hand runs over by
// spinning on two counters, so no sleep or wake-up is counted: an upper bound on what
// SFBufReadAhead could gain.
//
//   cc -O2 -pthread -o /tmp/ahead-floor scripts/ahead-floor.c && /tmp/ahead-floor [rounds]
//
// Prints, for each round, the best of 8 passes over the file in ns per page for each way,
// and the direct map's (the file mapped whole once, its entries filled, only summed).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

enum { pages = 8192, run = 128, window_pages = 512, blocks = window_pages / run, passes = 8 };
enum way { loop, ahead_map_populate, ahead_madvise, direct, ways };
static const char *names[ways] = {"loop", "ahead, MAP_POPULATE", "ahead, MADV_POPULATE_READ",
                                  "direct map"};

static long page;
static int fd;
static char *window, *whole;
static _Atomic long mapped, consumed;  // runs the helper has mapped, runs the reader read
static enum way current;

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static char *block_of(long r) { return window + (r % blocks) * run * page; }

static void map_run(long r, int flags) {
  if (mmap(block_of(r), (size_t)(run * page), PROT_READ, MAP_SHARED | MAP_FIXED | flags, fd,
           (off_t)(r * run * page)) == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
}

static uint64_t sum_run(const char *at) {
  const uint64_t *w = (const uint64_t *)at;
  uint64_t s = 0;
  for (long i = 0; i < run * page / 8; i++) s += w[i];
  return s;
}

static void *helper(void *unused) {
  (void)unused;
  for (long r = 0; r < pages / run; r++) {
    // Never into the block the reader is reading, nor the one after it.
    while (r - atomic_load(&consumed) >= blocks - 1) {
    }
    map_run(r, current == ahead_map_populate ? MAP_POPULATE : 0);
    if (current == ahead_madvise) madvise(block_of(r), (size_t)(run * page), MADV_POPULATE_READ);
    atomic_store(&mapped, r + 1);
  }
  return NULL;
}

static double one_pass(enum way w, uint64_t *sum) {
  current = w;
  atomic_store(&mapped, 0);
  atomic_store(&consumed, 0);
  double t0 = now_ns();
  if (w == loop) {
    for (long r = 0; r < pages / run; r++) {
      map_run(r, 0);
      *sum += sum_run(block_of(r));
    }
  } else if (w == direct) {
    for (long r = 0; r < pages / run; r++) *sum += sum_run(whole + r * run * page);
  } else {
    pthread_t t;
    if (pthread_create(&t, NULL, helper, NULL) != 0) {
      perror("pthread_create");
      exit(1);
    }
    for (long r = 0; r < pages / run; r++) {
      while (atomic_load(&mapped) <= r) {
      }
      *sum += sum_run(block_of(r));
      atomic_store(&consumed, r + 1);
    }
    pthread_join(t, NULL);
  }
  return (now_ns() - t0) / pages;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 3;
  page = sysconf(_SC_PAGESIZE);
  fd = memfd_create("ahead-floor", 0);
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
  window = mmap(NULL, (size_t)(window_pages * page), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                -1, 0);
  whole = mmap(NULL, (size_t)(pages * page), PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (window == MAP_FAILED || whole == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  uint64_t sum = 0;
  printf("ns per page, best of %d passes:\n", passes);
  for (int r = 0; r < rounds; r++) {
    printf("round %d:", r + 1);
    for (int w = 0; w < ways; w++) {
      double best = 1e18;
      for (int p = 0; p < passes; p++) {
        double ns = one_pass((enum way)w, &sum);
        if (ns < best) best = ns;
      }
      printf("  %s %.1f", names[w], best);
    }
    printf("\n");
  }
  return sum == 1;  // keeps the sums
}
