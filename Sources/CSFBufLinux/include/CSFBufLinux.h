// What Glibc does not export to Swift, or exports awkwardly: memfd and seals, futex,
// sched_getcpu, CPU affinity, a thread-local pin count, thread ids, and atomics on plain
// memory (futex words, wire counts). Everything else comes from Glibc directly.
#ifndef CSFBUFLINUX_H
#define CSFBUFLINUX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// MARK: memory objects

/// memfd_create(2) with MFD_CLOEXEC | MFD_ALLOW_SEALING. Returns -1 and sets errno on error.
int sfb_memfd_create(const char *name);
/// Adds F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL to a memfd (fcntl F_ADD_SEALS).
int sfb_memfd_seal_size(int fd);
/// The seals of a memfd (fcntl F_GET_SEALS), or -1.
int sfb_memfd_get_seals(int fd);
/// The F_SEAL_* bits that sfb_memfd_seal_size adds.
int sfb_seals_size(void);

/// fallocate(2) with mode 0 (allocate the range). Returns 0 or -1 with errno.
int sfb_fallocate(int fd, off_t offset, off_t length);

// MARK: futex

/// FUTEX_WAIT_PRIVATE on *addr while it equals expected. Returns 0 or -1 with errno
/// (EAGAIN: the value differed; EINTR: a signal arrived and the handler has no SA_RESTART).
int sfb_futex_wait(uint32_t *addr, uint32_t expected);
/// FUTEX_WAKE_PRIVATE of up to n waiters on addr. Returns the number woken or -1.
int sfb_futex_wake(uint32_t *addr, int n);

// MARK: CPUs and pinning

/// sched_getcpu(3): the CPU the caller runs on, or -1.
int sfb_current_cpu(void);
/// The number of CPUs configured (sysconf _SC_NPROCESSORS_CONF).
int sfb_cpu_count(void);
/// Pins the calling thread to its current CPU; nests. Returns the new pin count, or -1 with
/// errno when the affinity could not be set.
int sfb_sched_pin(void);
/// Undoes one sfb_sched_pin; the last one restores the thread's previous affinity. Returns
/// the new pin count, or -1 when the thread was not pinned (errno EINVAL), or -2 when the
/// affinity could not be restored.
int sfb_sched_unpin(void);
/// The calling thread's pin count.
int sfb_pin_count(void);
/// The CPU the calling thread is pinned to, or -1 when it is not pinned.
int sfb_pinned_cpu(void);
/// Whether the calling thread's affinity allows exactly one CPU (returns that CPU), else -1.
int sfb_affinity_single_cpu(void);

// MARK: threads

/// gettid(2).
pid_t sfb_gettid(void);

// MARK: sockets, for sendfile and zero-copy send (SFSendfile)
//
// The kernel's own headers (<linux/errqueue.h>, <sys/epoll.h>, cachestat) stay in shim.c;
// Swift sees plain functions and small structures.

/// MSG_NOSIGNAL | MSG_ZEROCOPY when `zerocopy`, else MSG_NOSIGNAL; | MSG_DONTWAIT when
/// `dontwait`. The flags every send of SFSendfile uses: no SIGPIPE, ever.
int sfb_send_flags(int zerocopy, int dontwait);
/// IOV_MAX: the most iovecs one sendmsg(2) takes.
int sfb_iov_max(void);
/// setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1). Returns 0, or -1 with errno (EOPNOTSUPP or
/// ENOPROTOOPT where the socket or kernel cannot do zero-copy).
int sfb_enable_zerocopy(int fd);

/// One zero-copy completion from a socket's error queue: the notifications `lo` ... `hi`
/// (inclusive, counting modulo 2^32) are done. `copied` is 1 when the kernel copied the data
/// after all (SO_EE_CODE_ZEROCOPY_COPIED). `error` is the ee_errno of an error-queue message
/// that is not a zero-copy completion (then lo and hi are 0), else 0.
struct sfb_zc_completion {
  uint32_t lo;
  uint32_t hi;
  int32_t copied;
  int32_t error;
};
/// Reads up to `max` messages from the socket's error queue without waiting
/// (recvmsg MSG_ERRQUEUE | MSG_DONTWAIT) and decodes their sock_extended_err. Returns how
/// many were read (0 when the queue is empty), or -1 with errno when the first read fails
/// for another reason than an empty queue.
int sfb_zerocopy_reap(int fd, struct sfb_zc_completion *out, int max);

/// How many pages, from the first, of the `pages` pages at `offset` (a multiple of
/// `page_size`) of the file are in the page cache now. Starts no I/O and touches no page:
/// cachestat(2) when the kernel has it, else mincore(2) on a temporary mapping. Returns -1
/// with errno on failure.
long sfb_resident_prefix(int fd, off_t offset, long pages, long page_size);

/// Restricts the calling thread to CPU `cpu` (sched_setaffinity). Returns 0, or -1 with
/// errno. For benchmarks that place a sender and a reader on CPUs of their own.
int sfb_set_affinity_cpu(int cpu);

/// accept4(2) with SOCK_CLOEXEC, the peer's address not wanted.
int sfb_accept_cloexec(int fd);

/// epoll_create1(EPOLL_CLOEXEC).
int sfb_epoll_create(void);
/// Arms `fd` once (EPOLLONESHOT) for errors (always) and, when `writable`, for EPOLLOUT,
/// with `token` as its data: EPOLL_CTL_ADD when `add`, else EPOLL_CTL_MOD.
int sfb_epoll_arm(int epfd, int fd, int add, int writable, uint64_t token);
/// EPOLL_CTL_DEL.
int sfb_epoll_del(int epfd, int fd);
/// Bits of `sfb_epoll_wait`'s `what`.
enum { SFB_EV_WRITABLE = 1, SFB_EV_ERROR = 2, SFB_EV_HANGUP = 4 };
/// epoll_wait: up to `max` events as (token, what) pairs. Returns the count, or -1 with errno.
int sfb_epoll_wait(int epfd, uint64_t *tokens, uint32_t *what, int max, int timeout_ms);

/// accept4(2) with SOCK_CLOEXEC | SOCK_NONBLOCK, the peer's address not wanted.
int sfb_accept_nonblocking(int fd);
/// Bits of `sfb_epoll_events` and `sfb_epoll_wait_events`.
enum { SFB_EPOLL_IN = 1, SFB_EPOLL_OUT = 2, SFB_EPOLL_ERR = 4, SFB_EPOLL_HUP = 8, SFB_EPOLL_EXCLUSIVE = 16 };
/// epoll_ctl: `op` 0 add, 1 modify, 2 delete; `events` a mask of SFB_EPOLL_* (level-triggered;
/// errors and hang-ups always reported).
int sfb_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
/// epoll_wait: up to `max` (at most 64) events as (token, SFB_EPOLL_* mask) pairs. Returns the
/// count, or -1 with errno.
int sfb_epoll_wait_events(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
/// openat2(2) of `path` below the directory `dirfd`, read-only and close-on-exec, with
/// RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS: no `..`, absolute path or symbolic link may
/// lead out of `dirfd`. Returns the descriptor, or -1 with errno (EXDEV for an escape).
int sfb_open_beneath(int dirfd, const char *path);

/// Tell ThreadSanitizer that the calling thread took (`acquire`) or is about to give up
/// (`release`) the lock named by `tag`. Synchronization's `Mutex` hands a contended lock
/// over in the kernel (a priority-inheritance futex, in a library the sanitizer does not
/// instrument), so the sanitizer cannot see that hand-over by itself. No-ops unless this
/// file is built with `-fsanitize=thread`.
void sfb_tsan_acquire(const void *tag);
void sfb_tsan_release(const void *tag);

// MARK: hazard words (hits without a locked instruction)
//
// One word per thread that asks for one, each on a cache line of its own, in one table for
// the process. A thread stores there the address of the window slot it reads without
// holding a reference; a thread about to remap free slots first runs sfb_membarrier (a
// full barrier on every running thread of the process), then reads the words.

/// Records in the table; a thread that finds them all taken has none (it hits the counted way).
enum { SFB_HAZARD_RECORDS = 128, SFB_HAZARD_STRIDE = 64 };
/// The records; record `i` is SFB_HAZARD_STRIDE * i bytes from the first. Each begins with
/// its hazard word (a uintptr_t, 0 when the thread reads no slot).
extern unsigned char sfb_hazard_records[SFB_HAZARD_RECORDS * SFB_HAZARD_STRIDE];
/// The first record.
static inline void *sfb_hazard_table(void) { return sfb_hazard_records; }
/// One more than the highest record ever handed out (scans stop there), read with acquire.
long sfb_hazard_high_water(void);
/// Hands the calling thread a record (given back when the thread exits) and returns its
/// index, or -1 when none is free or the kernel refuses to register the process for
/// membarrier(2) (then every later call returns -1 at once).
int sfb_hazard_register(void);
/// The calling thread's record index + 1; 0 before its first sfb_hazard_index, -1 when it
/// has none.
extern __thread int sfb_hazard_slot_plus_one;
/// The calling thread's record index (registering on first use), or -1.
static inline int sfb_hazard_index(void) {
  int v = sfb_hazard_slot_plus_one;
  if (__builtin_expect(v > 0, 1)) return v - 1;
  return v < 0 ? -1 : sfb_hazard_register();
}
/// Keeps the compiler from moving the memory accesses after this point before it, or those
/// before it after it (no instruction: the processor may still reorder; see sfb_membarrier).
static inline void sfb_compiler_barrier(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
/// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): every running thread of the process
/// executes a full memory barrier before this returns. Only after a successful
/// sfb_hazard_register (which registers the process; a child of fork(2) not registered
/// with it is registered here on first use). Returns 0 or -1 with errno.
int sfb_membarrier(void);

#endif
