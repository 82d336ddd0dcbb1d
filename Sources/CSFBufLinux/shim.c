#define _GNU_SOURCE
#include "CSFBufLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

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
