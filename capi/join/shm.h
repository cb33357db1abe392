/*
 * <join/shm.h> -- the public contract of libjoin-shm.
 *
 * Lock-free rings of fixed-size elements in POSIX shared memory, shared between processes.
 * Everything a program may rely on is declared here; nothing else of the library is public.
 *
 * Conventions (see CONTRACT.md):
 *  - Calls returning int / int64_t give 0 (or a count) on success and a negative errno value on
 *    failure: -EINVAL bad argument or parameters that do not match the segment, -EAGAIN ring
 *    full/empty, -ETIMEDOUT, -EBUSY role taken, -EPROTO not a join-shm segment (or corrupt),
 *    other -errno values from the OS as they come. No call aborts, throws or prints.
 *  - join_shm_last_error_detail() gives one sentence about the calling thread's last failure.
 *  - Timeouts are relative nanoseconds on CLOCK_MONOTONIC: negative waits forever, 0 tries once.
 *  - A handle belongs to the process that opened it and to one thread at a time. After fork()
 *    the child may only close an inherited handle.
 *
 * Valid C99 and C++. Exposes no internal layout.
 */
#ifndef JOIN_SHM_H
#define JOIN_SHM_H

#include <stddef.h>
#include <stdint.h>

#if defined(JOIN_SHM_BUILDING) && defined(__GNUC__)
#define JOIN_SHM_API __attribute__((visibility("default")))
#else
#define JOIN_SHM_API
#endif

#ifdef __cplusplus
#define JOIN_SHM_NOEXCEPT noexcept
extern "C" {
#else
#define JOIN_SHM_NOEXCEPT
#endif

#define JOIN_SHM_VERSION_MAJOR 1
#define JOIN_SHM_VERSION_MINOR 2
#define JOIN_SHM_VERSION_PATCH 0

/* Opaque handles. */
typedef struct join_shm_queue join_shm_queue;
typedef struct join_shm_endpoint join_shm_endpoint;

/* Pinned values: never renumbered, never reused. */
/* JOIN_SHM_BROADCAST since 1.2: one publisher (PRODUCER), many subscribers (CONSUMER), each of
   which receives every message published after it joined. */
typedef enum join_shm_policy {
    JOIN_SHM_SPSC = 1,
    JOIN_SHM_MPSC = 2,
    JOIN_SHM_MPMC = 3,
    JOIN_SHM_BROADCAST = 4
} join_shm_policy;
typedef enum join_shm_role { JOIN_SHM_PRODUCER = 1, JOIN_SHM_CONSUMER = 2 } join_shm_role;
typedef enum join_shm_side { JOIN_SHM_SIDE_A = 0, JOIN_SHM_SIDE_B = 1 } join_shm_side;

/* Option flags. */
#define JOIN_SHM_PREFAULT UINT64_C(0x1) /* touch every page of a segment at open */
#define JOIN_SHM_MLOCK UINT64_C(0x2)    /* mlock(2) the mapping; fails with the OS error if denied */
/* Since 1.1: attach to a segment owned by another user (refused with -EACCES otherwise). */
#define JOIN_SHM_ALLOW_OTHER_OWNER UINT64_C(0x4)

/* Options for join_shm_queue_open_ex. Zero-initialise, set size = sizeof(join_shm_options), then
   change what you need: 0 in any field means its default. Fields are only ever appended. */
typedef struct join_shm_options {
    uint32_t size;           /* sizeof(join_shm_options) as the caller was compiled */
    uint32_t mode;           /* permission bits for a segment this call creates; 0 means 0600 */
    int64_t open_timeout_ns; /* how long open waits for a peer still initialising; 0 = 1 s */
    uint64_t flags;          /* JOIN_SHM_PREFAULT | JOIN_SHM_MLOCK; 0 = none */
    int64_t spin_ns;         /* how long a blocking call spins before sleeping; 0 = default
                                (20 us, or 1 ms right after this thread woke a sleeping peer,
                                whose answer is then due); negative = sleep at once */
    /* Since 1.2, broadcast rings only. max_subscribers and overflow are part of the ring: an
       attach giving other values than the ring's (0 takes the ring's) is -EINVAL. */
    uint32_t max_subscribers; /* subscribers admitted at once (at most 127); 0 means 64 */
    uint32_t overflow;        /* JOIN_SHM_OVERFLOW_*; 0 means BLOCK */
    uint32_t join_at;         /* JOIN_SHM_JOIN_*; 0 means NEXT */
    uint32_t reserved;        /* 0 */
} join_shm_options;

/* Since 1.2: broadcast overflow modes and where a new subscriber starts. */
#define JOIN_SHM_OVERFLOW_BLOCK 1u     /* the publisher waits for the slowest live subscriber */
#define JOIN_SHM_OVERFLOW_OVERWRITE 2u /* the publisher never waits; laggards lose the oldest */
#define JOIN_SHM_JOIN_NEXT 1u          /* the next message published after it joined */
#define JOIN_SHM_JOIN_OLDEST 2u        /* the oldest message still in the ring */

/* (major << 16) | (minor << 8) | patch of the library actually loaded. */
JOIN_SHM_API uint32_t join_shm_version(void) JOIN_SHM_NOEXCEPT;

/* A short description of an errno value, negative or positive; never NULL; thread-safe. */
JOIN_SHM_API const char *join_shm_strerror(int err) JOIN_SHM_NOEXCEPT;

/* One sentence about the calling thread's last failing call (e.g. which parameter did not match).
   Valid until that thread's next failing call; never NULL. */
JOIN_SHM_API const char *join_shm_last_error_detail(void) JOIN_SHM_NOEXCEPT;

/* Open the ring NAME ("orders" and "/orders" are the same) as PRODUCER or CONSUMER, creating and
   initialising it if it does not exist. Parameters must match an existing ring (-EINVAL).
   -EBUSY if the role is held (SPSC: one producer and one consumer; MPSC: one consumer) by a live
   process. On success *out holds the handle; on failure *out is NULL. */
JOIN_SHM_API int join_shm_queue_open(join_shm_queue **out, const char *name, join_shm_policy policy, join_shm_role role,
                                     uint64_t element_size, uint64_t capacity) JOIN_SHM_NOEXCEPT;

/* As join_shm_queue_open, with options (NULL means all defaults). */
JOIN_SHM_API int join_shm_queue_open_ex(join_shm_queue **out, const char *name, join_shm_policy policy,
                                        join_shm_role role, uint64_t element_size, uint64_t capacity,
                                        const join_shm_options *options) JOIN_SHM_NOEXCEPT;

/* Release the role and the mapping. NULL is a no-op. Never unlinks the segment. */
JOIN_SHM_API void join_shm_queue_close(join_shm_queue *q) JOIN_SHM_NOEXCEPT;

/* Remove the name. Handles already open keep working. A missing segment is success. */
JOIN_SHM_API int join_shm_unlink(const char *name) JOIN_SHM_NOEXCEPT;

/* Copy one element (element_size bytes) in. try_: -EAGAIN when full. push: waits (spins briefly,
   then sleeps). timed_push: waits at most timeout_ns, then -ETIMEDOUT. Producer handles only. */
JOIN_SHM_API int join_shm_try_push(join_shm_queue *q, const void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_push(join_shm_queue *q, const void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_timed_push(join_shm_queue *q, const void *element, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;

/* Copy the oldest element out. try_: -EAGAIN when empty. Consumer handles only. */
JOIN_SHM_API int join_shm_try_pop(join_shm_queue *q, void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_pop(join_shm_queue *q, void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_timed_pop(join_shm_queue *q, void *element, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;

/* Batches: move up to count contiguous elements (never more than the capacity) with one update
   of the shared cursor; return how many moved (>= 1), or -EAGAIN if none could. count 0 is
   -EINVAL. */
JOIN_SHM_API int64_t join_shm_try_push_n(join_shm_queue *q, const void *elements, uint64_t count) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int64_t join_shm_try_pop_n(join_shm_queue *q, void *elements, uint64_t count) JOIN_SHM_NOEXCEPT;

/* Zero-copy. try_reserve gives a writable slot (-EAGAIN when full), commit publishes it.
   try_peek gives the oldest element in place (-EAGAIN when empty), release hands it back.
   One outstanding slot per handle; meanwhile other push (or pop) calls are -EINVAL, and so are
   commit/release without a slot. Closing a handle with a reserved slot abandons it. */
JOIN_SHM_API int join_shm_try_reserve(join_shm_queue *q, void **slot) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_commit(join_shm_queue *q) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_try_peek(join_shm_queue *q, const void **slot) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_release(join_shm_queue *q) JOIN_SHM_NOEXCEPT;

/* Since 1.1. Waiting variants of try_reserve/try_peek, with timeouts as timed_push/timed_pop. */
JOIN_SHM_API int join_shm_timed_reserve(join_shm_queue *q, void **slot, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_timed_peek(join_shm_queue *q, const void **slot, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;
/* Since 1.1. Gives the outstanding slot back without completing it (-EINVAL without one).
   Producer: SPSC publishes nothing and reuses the position for the next element; MPSC/MPMC mark
   the position abandoned (consumers skip it; join_shm_stats.skipped counts it). Consumer: SPSC
   and MPSC leave the element the oldest one; MPMC keeps it held by this handle (other consumers
   already moved past it): the next peek or pop on this handle returns it first, and until then
   its slot stays taken, so producers stall a lap later. Closing an MPMC consumer that holds a
   peeked or cancelled element counts that element as consumed. */
JOIN_SHM_API int join_shm_cancel(join_shm_queue *q) JOIN_SHM_NOEXCEPT;

/* Inspection. Exact when nobody is acting, always within [0, capacity]; 0 for a bad handle. */
JOIN_SHM_API uint64_t join_shm_pending(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API uint64_t join_shm_available(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_full(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;  /* 1 or 0 */
JOIN_SHM_API int join_shm_empty(const join_shm_queue *q) JOIN_SHM_NOEXCEPT; /* 1 or 0 */
JOIN_SHM_API uint64_t join_shm_element_size(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API uint64_t join_shm_capacity(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;

/* Since 1.1: a snapshot of a ring for monitoring. Zero-initialise, set size = sizeof(join_shm_stats);
   fields are only ever appended, and a smaller size gets the fields that fit. Values come from
   shared memory: counts are clamped to [0, capacity], cursors and pids are as the segment says. */
typedef struct join_shm_stats {
    uint32_t size;   /* sizeof(join_shm_stats) as the caller was compiled */
    uint32_t policy; /* join_shm_policy */
    uint64_t element_size;
    uint64_t capacity;
    uint64_t pending;      /* elements waiting to be popped */
    uint64_t pushed;       /* positions claimed by producers since creation (the head cursor) */
    uint64_t popped;       /* positions taken by consumers since creation (the tail cursor) */
    uint64_t skipped;      /* positions stepped over: abandoned by a closing producer, or left
                              behind by a producer or (MPMC) consumer that died mid-operation */
    uint32_t producer_pid; /* holder of the producer role (SPSC), 0 if none or if many may push */
    uint32_t consumer_pid; /* holder of the consumer role (SPSC, MPSC), 0 if none or MPMC */
} join_shm_stats;
JOIN_SHM_API int join_shm_queue_stats(const join_shm_queue *q, join_shm_stats *stats) JOIN_SHM_NOEXCEPT;

/* Endpoints: a duplex channel made of two rings, NAME_AB (A -> B) and NAME_BA (B -> A). Each side
   is the producer of its outbound ring and the consumer of its inbound one. Names may be three
   characters shorter than queue names. */
JOIN_SHM_API int join_shm_endpoint_open(join_shm_endpoint **out, const char *name, join_shm_policy policy,
                                        join_shm_side side, uint64_t element_size, uint64_t capacity) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API void join_shm_endpoint_close(join_shm_endpoint *e) JOIN_SHM_NOEXCEPT;
/* Removes NAME_AB and NAME_BA; missing ones are success. */
JOIN_SHM_API int join_shm_endpoint_unlink(const char *name) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_try_send(join_shm_endpoint *e, const void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_send(join_shm_endpoint *e, const void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_timed_send(join_shm_endpoint *e, const void *element, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_try_receive(join_shm_endpoint *e, void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_receive(join_shm_endpoint *e, void *element) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_timed_receive(join_shm_endpoint *e, void *element, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;
/* Free slots outbound; messages waiting inbound. 0 for a bad handle. */
JOIN_SHM_API uint64_t join_shm_endpoint_available(const join_shm_endpoint *e) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API uint64_t join_shm_endpoint_pending(const join_shm_endpoint *e) JOIN_SHM_NOEXCEPT;

/* Since 1.2: waiting from an event loop.
   A file descriptor that polls readable (POLLIN / EPOLLIN) while the handle has work: consumer:
   its ring is not empty; producer: not full; endpoint: its inbound ring is not empty. It belongs
   to the handle (close() closes it; never close it yourself) and is O_CLOEXEC. Rule: after it
   polls readable, call the try_ operations until -EAGAIN; it is then readable again whenever work
   remains or arrives, so edge-triggered epoll is safe. It may poll readable spuriously now and
   then, never persistently while there is no work. Works with poll, select, epoll and io_uring
   poll, from any thread using the handle; on kernels whose io_uring signals late (see README), an
   epoll_wait in the thread whose try_ call last returned -EAGAIN may return EINTR at a wake-up.
   Returns the fd (>= 0) or a negative errno (-EINVAL for a bad handle). */
JOIN_SHM_API int join_shm_queue_fd(join_shm_queue *q) JOIN_SHM_NOEXCEPT;
JOIN_SHM_API int join_shm_endpoint_fd(join_shm_endpoint *e) JOIN_SHM_NOEXCEPT;

/* Waits until at least one item has work (as above). Each item names exactly one of queue or
   endpoint (an endpoint waits for its inbound ring); ready is written for every item (1 or 0).
   Timeout as everywhere: negative waits forever, 0 checks once. Returns how many are ready (>= 1),
   -ETIMEDOUT, or -EINVAL (items NULL, n == 0, n > JOIN_SHM_WAIT_MAX, an item naming both or
   neither handle, a closed handle, the same handle twice). */
#define JOIN_SHM_WAIT_MAX 64
typedef struct join_shm_wait_item {
    join_shm_queue *queue;
    join_shm_endpoint *endpoint;
    int ready;
} join_shm_wait_item;
JOIN_SHM_API int join_shm_wait_any(join_shm_wait_item *items, uint32_t n, int64_t timeout_ns) JOIN_SHM_NOEXCEPT;

/* Since 1.2: broadcast rings, opened with join_shm_queue_open(_ex) and policy JOIN_SHM_BROADCAST.
   PRODUCER is the publisher (one at a time: -EBUSY, taken over from a dead holder, which is
   succeeded at the position it reached); CONSUMER is a subscriber (-EBUSY past max_subscribers;
   a dead one stops gating the publisher and its place is reclaimed). Every consumer call works
   on a subscriber. In OVERWRITE mode a subscriber that was overrun gets -EOVERFLOW from its next
   pop-family call (the detail says how many it lost); the call after returns the oldest message
   still in the ring. Zero-copy (reserve/commit, peek/release) works in BLOCK mode only
   (-EOPNOTSUPP in OVERWRITE mode: a slot may be overwritten while in use); a JOIN_OLDEST
   subscriber's peek starts at its join (its history comes through the pop-family calls).
   join_shm_lost: messages this subscriber lost to overruns since it joined; 0 otherwise. */
JOIN_SHM_API uint64_t join_shm_lost(const join_shm_queue *q) JOIN_SHM_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* JOIN_SHM_H */
