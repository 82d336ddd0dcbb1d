#define _GNU_SOURCE
#include "CSFBufLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SFB_TSAN 1
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif
#endif

void sfb_tsan_acquire(const void *tag) {
#ifdef SFB_TSAN
  __tsan_acquire((void *)tag);
#else
  (void)tag;
#endif
}

void sfb_tsan_release(const void *tag) {
#ifdef SFB_TSAN
  __tsan_release((void *)tag);
#else
  (void)tag;
#endif
}

int sfb_memfd_create(const char *name) {
  return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

int sfb_seals_size(void) { return F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL; }

int sfb_memfd_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, sfb_seals_size()); }

int sfb_memfd_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }

int sfb_fallocate(int fd, off_t offset, off_t length) { return fallocate(fd, 0, offset, length); }

int sfb_futex_wait(uint32_t *addr, uint32_t expected) {
  return (int)syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

int sfb_futex_wake(uint32_t *addr, int n) {
  return (int)syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

int sfb_current_cpu(void) { return sched_getcpu(); }

int sfb_cpu_count(void) { return (int)sysconf(_SC_NPROCESSORS_CONF); }

static __thread int pin_count;
static __thread int pinned_cpu = -1;
static __thread cpu_set_t saved_affinity;

int sfb_sched_pin(void) {
  if (pin_count == 0) {
    if (sched_getaffinity(0, sizeof saved_affinity, &saved_affinity) != 0) return -1;
    int cpu = sched_getcpu();
    if (cpu < 0) return -1;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return -1;
    pinned_cpu = cpu;
  }
  return ++pin_count;
}

int sfb_sched_unpin(void) {
  if (pin_count == 0) {
    errno = EINVAL;
    return -1;
  }
  if (--pin_count == 0) {
    pinned_cpu = -1;
    if (sched_setaffinity(0, sizeof saved_affinity, &saved_affinity) != 0) return -2;
  }
  return pin_count;
}

int sfb_pin_count(void) { return pin_count; }

int sfb_pinned_cpu(void) { return pinned_cpu; }

int sfb_affinity_single_cpu(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1) return -1;
  for (int i = 0; i < CPU_SETSIZE; i++)
    if (CPU_ISSET(i, &set)) return i;
  return -1;
}

pid_t sfb_gettid(void) { return (pid_t)syscall(SYS_gettid); }

// MARK: sockets, for sendfile and zero-copy send

#include <limits.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

int sfb_send_flags(int zerocopy, int dontwait) {
  return MSG_NOSIGNAL | (zerocopy ? MSG_ZEROCOPY : 0) | (dontwait ? MSG_DONTWAIT : 0);
}

int sfb_iov_max(void) { return IOV_MAX; }

int sfb_enable_zerocopy(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one);
}

int sfb_zerocopy_reap(int fd, struct sfb_zc_completion *out, int max) {
  int n = 0;
  while (n < max) {
    char control[128];
    struct msghdr msg = {0};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || n > 0) break;
      return -1;
    }
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
      int ip = cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR;
      int ip6 = cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR;
      if (!ip && !ip6) continue;
      struct sock_extended_err ee;
      memcpy(&ee, CMSG_DATA(cm), sizeof ee);
      struct sfb_zc_completion c = {0, 0, 0, 0};
      if (ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY && ee.ee_errno == 0) {
        c.lo = ee.ee_info;
        c.hi = ee.ee_data;
        c.copied = (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0;
      } else {
        c.error = ee.ee_errno ? (int32_t)ee.ee_errno : EIO;
      }
      out[n++] = c;
      break;
    }
  }
  return n;
}

// cachestat(2) arrived in Linux 6.5; the C library headers here may predate it.
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct sfb_cachestat_range {
  uint64_t off;
  uint64_t len;
};
struct sfb_cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

long sfb_resident_prefix(int fd, off_t offset, long pages, long page_size) {
  if (pages <= 0) return 0;
  struct sfb_cachestat_range range = {(uint64_t)offset, (uint64_t)pages * (uint64_t)page_size};
  struct sfb_cachestat cs;
  if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0 && cs.nr_cache >= (uint64_t)pages)
    return pages;
  // Some page is missing (or no cachestat): find the first with mincore(2). A mapping is
  // made and dropped; mincore reads the page cache and never faults a page in.
  size_t length = (size_t)pages * (size_t)page_size;
  void *p = mmap(NULL, length, PROT_READ, MAP_SHARED, fd, offset);
  if (p == MAP_FAILED) return -1;
  unsigned char *vec = malloc((size_t)pages);
  if (vec == NULL) {
    munmap(p, length);
    errno = ENOMEM;
    return -1;
  }
  long r = -1;
  if (mincore(p, length, vec) == 0) {
    r = 0;
    while (r < pages && (vec[r] & 1)) r++;
  }
  int saved = errno;
  free(vec);
  munmap(p, length);
  errno = saved;
  return r;
}

int sfb_set_affinity_cpu(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(0, sizeof one, &one);
}

int sfb_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int sfb_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int sfb_epoll_arm(int epfd, int fd, int add, int writable, uint64_t token) {
  struct epoll_event ev;
  ev.events = EPOLLONESHOT | EPOLLERR | (writable ? EPOLLOUT : 0);
  ev.data.u64 = token;
  return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

int sfb_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int sfb_epoll_wait(int epfd, uint64_t *tokens, uint32_t *what, int max, int timeout_ms) {
  struct epoll_event evs[64];
  if (max > 64) max = 64;
  int n = epoll_wait(epfd, evs, max, timeout_ms);
  for (int i = 0; i < n; i++) {
    tokens[i] = evs[i].data.u64;
    what[i] = ((evs[i].events & EPOLLOUT) ? SFB_EV_WRITABLE : 0) |
              ((evs[i].events & EPOLLERR) ? SFB_EV_ERROR : 0) |
              ((evs[i].events & EPOLLHUP) ? SFB_EV_HANGUP : 0);
  }
  return n;
}

int sfb_accept_nonblocking(int fd) {
  return accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

int sfb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
  struct epoll_event ev;
  // EPOLLEXCLUSIVE admits no EPOLLRDHUP; a writer waiting for room does not want it.
  ev.events = EPOLLERR | EPOLLHUP |
              ((events & SFB_EPOLL_IN) && !(events & SFB_EPOLL_EXCLUSIVE) ? EPOLLRDHUP : 0) |
              ((events & SFB_EPOLL_IN) ? EPOLLIN : 0) |
              ((events & SFB_EPOLL_OUT) ? EPOLLOUT : 0) |
              ((events & SFB_EPOLL_EXCLUSIVE) ? EPOLLEXCLUSIVE : 0);
  ev.data.u64 = token;
  int o = op == 0 ? EPOLL_CTL_ADD : op == 1 ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
  return epoll_ctl(epfd, o, fd, o == EPOLL_CTL_DEL ? NULL : &ev);
}

int sfb_epoll_wait_events(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
  struct epoll_event evs[64];
  if (max > 64) max = 64;
  int n = epoll_wait(epfd, evs, max, timeout_ms);
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events;
    tokens[i] = evs[i].data.u64;
    events[i] = ((e & EPOLLIN) ? SFB_EPOLL_IN : 0) | ((e & EPOLLOUT) ? SFB_EPOLL_OUT : 0) |
                ((e & EPOLLERR) ? SFB_EPOLL_ERR : 0) |
                ((e & (EPOLLHUP | EPOLLRDHUP)) ? SFB_EPOLL_HUP : 0);
  }
  return n;
}

#include <linux/openat2.h>

int sfb_open_beneath(int dirfd, const char *path) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

// MARK: hazard words

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>

_Alignas(64) unsigned char sfb_hazard_records[SFB_HAZARD_RECORDS * SFB_HAZARD_STRIDE];
static atomic_int hazard_taken[SFB_HAZARD_RECORDS];
static atomic_long hazard_high_water;
/// 0 not tried, 1 registered, -1 refused.
static atomic_int hazard_registered;
static pthread_key_t hazard_key;
static pthread_once_t hazard_once = PTHREAD_ONCE_INIT;
__thread int sfb_hazard_slot_plus_one;


long sfb_hazard_high_water(void) {
  return atomic_load_explicit(&hazard_high_water, memory_order_acquire);
}

/// At thread exit: the record goes back (its word is 0: no thread exits inside a hit).
static void hazard_release(void *value) {
  long i = (long)(intptr_t)value - 1;
  atomic_store_explicit(
      (_Atomic uintptr_t *)(sfb_hazard_records + i * SFB_HAZARD_STRIDE), 0, memory_order_release);
  atomic_store_explicit(&hazard_taken[i], 0, memory_order_release);
}

static void hazard_init(void) {
  int ok = pthread_key_create(&hazard_key, hazard_release) == 0
      && syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  atomic_store(&hazard_registered, ok ? 1 : -1);
}

int sfb_hazard_register(void) {
  pthread_once(&hazard_once, hazard_init);
  if (atomic_load(&hazard_registered) < 0) {
    sfb_hazard_slot_plus_one = -1;
    return -1;
  }
  for (int i = 0; i < SFB_HAZARD_RECORDS; i++) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&hazard_taken[i], &expected, 1)) {
      // Sequentially consistent: a thread that remaps after reading a smaller high water
      // cannot miss this thread's first hazard (see SFBufAllocator's quietFreeSlots).
      long hw = atomic_load(&hazard_high_water);
      while (hw < i + 1 && !atomic_compare_exchange_weak(&hazard_high_water, &hw, i + 1)) {}
      if (pthread_setspecific(hazard_key, (void *)(intptr_t)(i + 1)) != 0) {
        atomic_store(&hazard_taken[i], 0);
        sfb_hazard_slot_plus_one = -1;
        return -1;
      }
      sfb_hazard_slot_plus_one = i + 1;
      return i;
    }
  }
  sfb_hazard_slot_plus_one = -1;
  return -1;
}

int sfb_membarrier(void) {
  int r = (int)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  if (r != 0 && errno == EPERM) {
    // The registration belongs to the address space. A child of fork(2) inherits it on
    // the kernels tried (6.18); one that does not is registered here, and tries again.
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
      r = (int)syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    }
  }
  return r;
}
