// A queue handle: one process's view of one ring, in one role. Process-local state (cursor of a
// lone producer or consumer, the outstanding zero-copy slot) lives here, never in the segment.
#pragma once

#include "process.hpp"
#include "segment.hpp"

#include <join/shm.h>

#include <sys/types.h>
#include <cstdint>

namespace join::shm {

constexpr uint32_t kQueueMagic = 0x4a53510a;  // checked on entry to every call
constexpr uint32_t kDeadMagic = 0xdeadbeef;   // left behind by close: use after close is -EINVAL
constexpr int64_t kDefaultSpinNs = 20'000;

struct Poller;  // poller.cpp

struct Queue {
    uint32_t magic = 0;
    uint32_t policy = 0;
    uint32_t role = 0;
    pid_t owner = 0;  // the process that opened the handle
    Segment segment;
    // Our record in the segment's participant table (participants.hpp), and the holding that names
    // it in claim tags and role words.
    Participant *self = nullptr;
    uint32_t holding = 0;
    uint64_t elementSize = 0;
    uint64_t capacity = 0;
    uint64_t stride = 0;
    uint64_t headerOffset = 0;  // from a slot's element to its SlotHeader
    uint64_t mask = 0;          // capacity - 1 when capacity is a power of two, else 0
    // The lone producer (SPSC) or lone consumer (SPSC, MPSC) keeps its cursor here: position and
    // its slot index, advanced without a division.
    uint64_t position = 0;
    uint64_t index = 0;
    // The SPSC producer's last reading of tail: positions below tailSeen + capacity are free.
    uint64_t tailSeen = 0;
    int64_t spinNs = kDefaultSpinNs;
    // The zero-copy slot handed out by try_reserve / try_peek, if any.
    bool outstanding = false;
    uint64_t outstandingPosition = 0;
    SlotHeader *outstandingSlot = nullptr;
    // MPMC consumer: an element peeked and then given back with join_shm_cancel. Other consumers
    // already moved past it, so this handle returns it before anything else.
    bool held = false;
    uint64_t heldPosition = 0;
    SlotHeader *heldSlot = nullptr;
    // Recovery from a peer that died holding a slot (recovery.cpp): calls that found the ring
    // empty or full since the last look, and since when (0: not stuck) which position has looked
    // claimed but unfinished.
    uint32_t idlePolls = 0;
    uint64_t stuckPosition = 0;
    int64_t stuckSinceNs = 0;
    char name[kNameBufferSize] = {};
    // The pollable fd and what keeps it armed (join_shm_queue_fd), made on first request.
    Poller *poller = nullptr;
    // Broadcast (broadcast.hpp): the subscriber's own cursor record; the publisher's reading of the
    // slowest subscriber (positions below gate + capacity are free), or the subscriber's head at join;
    // whether the subscriber's bit in history_readers is set; messages this subscriber lost.
    Subscriber *subscriber = nullptr;
    uint32_t joinAt = 0;
    bool readingHistory = false;
    uint64_t gate = 0;
    uint64_t lost = 0;

    Header &header() const noexcept { return *segment.header; }
    bool lonePosition() const noexcept {
        return policy == JOIN_SHM_SPSC || (policy == JOIN_SHM_MPSC && role == JOIN_SHM_CONSUMER);
    }
};

// getpid() without a system call: cached, and refreshed in the child after fork().
pid_t currentProcess() noexcept;
// processIdentity() of this process, cached per pid.
uint64_t currentIdentity() noexcept;

// name must be normalised already (normaliseName).
int openQueue(Queue *&out, const char *name, uint32_t policy, uint32_t role, uint64_t elementSize, uint64_t capacity,
              const join_shm_options *options) noexcept;
void closeQueue(Queue *q) noexcept;
// Gives back the outstanding zero-copy slot without completing it (join_shm_cancel, close).
void cancelOutstanding(Queue &q) noexcept;
// Inline: the C API checks every handle on every call.
inline bool isOpenQueue(const Queue *q) noexcept { return q && q->magic == kQueueMagic; }

// currentProcess() without the call, for the per-call owner check of an open handle: opening it
// called currentProcess(), which set the cache up (and its refresh after fork).
extern std::atomic<pid_t> cachedPid;
inline pid_t processOfOpenHandle() noexcept { return cachedPid.load(std::memory_order_relaxed); }  // as in queue.cpp

}  // namespace join::shm
