// What freeing one slot of a run costs at least on this machine, with no library around
// it: a loop over 128 slots of 64-byte lines (the window's layout) that drops each slot's
// one reference, in three ways:
//   cas          a compare-and-swap of the reference word alone (what the free must do,
//                since hits may add references without the lock);
//   cas+list     the same, plus the stores that put the slot at the free list's tail;
//   store+list   a plain store instead of the compare-and-swap (what a free could cost if
//                no hit could race with it).
// Between runs, 512 KiB of other memory is read (a run's page sums), as in the scan.
//
//   cc -O2 -o /tmp/cas-floor scripts/cas-floor.c && /tmp/cas-floor
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { slots = 512, run = 128, rounds = 20000, evict = 512 << 10 };

struct line {
  uint64_t word, key;
  int32_t next, generation, bucket, prev_free, next_free;
  uint32_t bits;
  char pad[24];
} __attribute__((aligned(64)));

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static double measure(struct line *l, const char *junk, int cas, int list, uint64_t *sink) {
  double total = 0;
  int tail = -1;
  for (long r = 0; r < rounds; r++) {
    int base = (int)(r % (slots / run)) * run;
    for (int i = 0; i < run; i++) l[base + i].word = 1;
    for (int k = 0; k < evict; k += 64) *sink += (uint64_t)junk[(k + r * 64) % (2 * evict)];
    double t0 = now_ns();
    for (int i = 0; i < run; i++) {
      int s = base + i;
      uint64_t w = __atomic_load_n(&l[s].word, __ATOMIC_RELAXED);
      if (cas) {
        __atomic_compare_exchange_n(&l[s].word, &w, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
      } else {
        __atomic_store_n(&l[s].word, 0, __ATOMIC_RELEASE);
      }
      if (list) {
        l[s].next_free = -1;
        l[s].prev_free = tail;
        if (tail >= 0) l[tail].next_free = s;
        tail = s;
        l[s].bits = (uint32_t)r;
      }
    }
    total += now_ns() - t0;
  }
  return total / rounds / run;
}

int main(void) {
  struct line *l = aligned_alloc(64, slots * sizeof *l);
  char *junk = malloc(2 * evict);
  if (!l || !junk) return 1;
  memset(l, 0, slots * sizeof *l);
  memset(junk, 1, 2 * evict);
  uint64_t sink = 0;
  double a = measure(l, junk, 1, 0, &sink);
  double b = measure(l, junk, 1, 1, &sink);
  double c = measure(l, junk, 0, 1, &sink);
  printf("cas %.1f ns per slot, cas+list %.1f, store+list %.1f (%llu)\n", a, b, c,
         (unsigned long long)(sink & 1));
  return 0;
}
