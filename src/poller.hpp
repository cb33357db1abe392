// Waiting from an event loop: a pollable fd per handle (join_shm_queue_fd) and waiting on many
// rings at once (join_shm_wait_any). See poller.cpp for how and why.
#pragma once

#include "queue.hpp"

#include <join/shm.h>

namespace join::shm {

// The handle's fd, created on first use, and armed: it polls readable while the handle has work.
// A negative errno (with a detail) when it cannot be made.
int pollerFd(Queue &q) noexcept;

// Closes the fd and everything behind it (close()); after fork, in the child, only closes.
void closePoller(Queue &q) noexcept;

// join_shm_wait_any on handles already checked by the C glue (distinct, open, ours).
int waitAny(Queue *const *queues, int *ready, unsigned n, int64_t timeoutNs) noexcept;

void rearm(Queue &q) noexcept;

// After a try_ call on q found nothing to do (-EAGAIN): makes sure the fd will turn readable
// when work arrives. Cheap when it is still armed from last time; a no-op without an fd.
inline void rearmAfterEmpty(Queue &q) noexcept {
    if (q.poller) rearm(q);
}

}  // namespace join::shm
