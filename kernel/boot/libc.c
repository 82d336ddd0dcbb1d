// What the Embedded Swift standard library expects from its environment, and what i686
// code generation expects from compiler-rt (which the toolchain does not ship for i386):
// putchar on the serial port, the mem* functions, a heap (posix_memalign/free), and the
// 64-bit division and shift helpers.

#include "kernel.h"

// MARK: Console

#define COM1 0x3F8

/// Writes one byte to COM1 (the console QEMU shows with -serial stdio).
int putchar(int c) {
  while ((inb(COM1 + 5) & 0x20) == 0) cpu_pause();  // transmit holding register empty
  outb(COM1, (uint8_t)c);
  return c;
}

// MARK: Memory

void *memset(void *dst, int c, size_t n) {
  void *d = dst;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}

void *memcpy(void *dst, const void *src, size_t n) {
  void *d = dst;
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
  return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
  if ((uintptr_t)dst - (uintptr_t)src >= n) return memcpy(dst, src, n);
  // Overlapping with dst above src: copy backwards.
  const char *s = (const char *)src + n - 1;
  char *d = (char *)dst + n - 1;
  __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
  const unsigned char *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

// MARK: Heap
//
// Power-of-two size classes from 16 bytes to 4 KiB, each with a free list; a 16-byte header
// before every block names its class. Larger or more strictly aligned requests are carved
// from the top and never reused (the kernel makes a handful: page tables, the slot array).
// One spinlock: both CPUs allocate (Swift strings, class instances).

#define HEAP_SIZE (2u << 20)
#define HEADER 16u
#define CLASSES 9              // 16 << 0 ... 16 << 8 = 4096
#define NEVER_FREED 0xFFu

static char heap[HEAP_SIZE] __attribute__((aligned(4096)));
static size_t heap_top;
static void *free_lists[CLASSES];
static int heap_lock;

static void lock(void) {
  while (__atomic_exchange_n(&heap_lock, 1, __ATOMIC_ACQUIRE)) cpu_pause();
}
static void unlock(void) { __atomic_store_n(&heap_lock, 0, __ATOMIC_RELEASE); }

static void *carve(size_t header_at, size_t end, uint32_t tag) {
  if (end > HEAP_SIZE) return NULL;
  heap_top = end;
  *(uint32_t *)(heap + header_at) = tag;
  return heap + header_at + HEADER;
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  void *p = NULL;
  lock();
  if (alignment <= HEADER && size <= (16u << (CLASSES - 1))) {
    unsigned k = 0;
    while ((16u << k) < size) k++;
    if (free_lists[k]) {
      p = free_lists[k];
      free_lists[k] = *(void **)p;
    } else {
      p = carve(heap_top, heap_top + HEADER + (16u << k), k);
    }
  } else {
    if (alignment < HEADER) alignment = HEADER;
    size_t start = (heap_top + HEADER + alignment - 1) & ~(alignment - 1);
    p = carve(start - HEADER, start + size, NEVER_FREED);
  }
  unlock();
  if (!p) return 12;  // ENOMEM
  *out = p;
  return 0;
}

void free(void *p) {
  if (!p) return;
  uint32_t k = *(uint32_t *)((char *)p - HEADER);
  if (k == NEVER_FREED) return;
  lock();
  *(void **)p = free_lists[k];
  free_lists[k] = p;
  unlock();
}

size_t heap_bytes_used(void) { return heap_top; }

// MARK: 64-bit integer helpers (compiler-rt builtins for i386)

uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem) {
  if (d == 0) __builtin_trap();
  uint64_t q = 0, r = 0;
  for (int i = 63; i >= 0; i--) {
    r = (r << 1) | ((n >> i) & 1);
    if (r >= d) {
      r -= d;
      q |= (uint64_t)1 << i;
    }
  }
  if (rem) *rem = r;
  return q;
}

uint64_t __udivdi3(uint64_t n, uint64_t d) { return __udivmoddi4(n, d, NULL); }

uint64_t __umoddi3(uint64_t n, uint64_t d) {
  uint64_t r;
  __udivmoddi4(n, d, &r);
  return r;
}

int64_t __divdi3(int64_t n, int64_t d) {
  uint64_t un = n < 0 ? -(uint64_t)n : (uint64_t)n, ud = d < 0 ? -(uint64_t)d : (uint64_t)d;
  uint64_t q = __udivmoddi4(un, ud, NULL);
  return (n < 0) != (d < 0) ? -(int64_t)q : (int64_t)q;
}

int64_t __moddi3(int64_t n, int64_t d) {
  uint64_t un = n < 0 ? -(uint64_t)n : (uint64_t)n, ud = d < 0 ? -(uint64_t)d : (uint64_t)d;
  uint64_t r;
  __udivmoddi4(un, ud, &r);
  return n < 0 ? -(int64_t)r : (int64_t)r;
}

// The shifts are written on 32-bit halves so the compiler cannot turn them back into calls.
typedef union {
  uint64_t all;
  struct { uint32_t low, high; } s;
} dword;

uint64_t __lshrdi3(uint64_t a, int b) {
  dword x = {.all = a}, r;
  if (b & 32) {
    r.s.high = 0;
    r.s.low = x.s.high >> (b & 31);
  } else if (b == 0) {
    return a;
  } else {
    r.s.high = x.s.high >> b;
    r.s.low = (x.s.high << (32 - b)) | (x.s.low >> b);
  }
  return r.all;
}

uint64_t __ashldi3(uint64_t a, int b) {
  dword x = {.all = a}, r;
  if (b & 32) {
    r.s.low = 0;
    r.s.high = x.s.low << (b & 31);
  } else if (b == 0) {
    return a;
  } else {
    r.s.low = x.s.low << b;
    r.s.high = (x.s.high << b) | (x.s.low >> (32 - b));
  }
  return r.all;
}

int64_t __ashrdi3(int64_t a, int b) {
  dword x = {.all = (uint64_t)a}, r;
  if (b & 32) {
    r.s.high = (uint32_t)((int32_t)x.s.high >> 31);
    r.s.low = (uint32_t)((int32_t)x.s.high >> (b & 31));
  } else if (b == 0) {
    return a;
  } else {
    r.s.high = (uint32_t)((int32_t)x.s.high >> b);
    r.s.low = (x.s.high << (32 - b)) | (x.s.low >> b);
  }
  return (int64_t)r.all;
}
