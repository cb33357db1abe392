#include "queue.hpp"

#include "broadcast.hpp"
#include "error.hpp"
#include "participants.hpp"
#include "poller.hpp"
#include "pool.hpp"
#include "ring.hpp"
#include "wait.hpp"

#include <pthread.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace join::shm {

std::atomic<pid_t> cachedPid{0};  // relaxed everywhere: each thread only needs its own process's pid

namespace {

HandlePool<Queue> queuePool;

std::atomic<uint64_t> cachedIdentity{0};  // relaxed: as cachedPid; recomputed when the pid changes

void refreshPid() noexcept { cachedPid.store(getpid(), std::memory_order_relaxed); }

const char *roleName(uint32_t role) noexcept { return role == JOIN_SHM_PRODUCER ? "producer" : "consumer"; }

// The shared word naming the holding of a single-holder role, or nullptr if the role is shared.
std::atomic<uint32_t> *roleHolder(Queue &q) noexcept {
    if (q.role == JOIN_SHM_PRODUCER)
        return q.policy == JOIN_SHM_SPSC || q.policy == JOIN_SHM_BROADCAST ? &q.header().producer_holder : nullptr;
    return q.policy == JOIN_SHM_MPMC || q.policy == JOIN_SHM_BROADCAST ? nullptr : &q.header().consumer_holder;
}

int claimRole(Queue &q) noexcept {
    std::atomic<uint32_t> *holder = roleHolder(q);
    if (!holder) return 0;
    for (int attempt = 0; attempt < 16; ++attempt) {
        // Acquire: pairs with the release when the previous holder let go (releaseRole), so its
        // last cursor store is visible to us.
        uint32_t current = holder->load(std::memory_order_acquire);
        if (current != 0 && holdingAlive(q, current))
            return fail(EBUSY, "segment \"%s\" already has its %s (pid %u)", q.name, roleName(q.role),
                        holdingPid(q, current));
        // Acq_rel: acquire as above; release publishes our claim to later claimants.
        if (holder->compare_exchange_strong(current, q.holding, std::memory_order_acq_rel)) return 0;
    }
    return fail(EBUSY, "segment \"%s\": the %s role keeps changing hands", q.name, roleName(q.role));
}

void releaseRole(Queue &q) noexcept {
    if (std::atomic<uint32_t> *holder = roleHolder(q)) {
        uint32_t self = q.holding;
        // Release: our cursor stores happen before the next holder's acquire in claimRole.
        holder->compare_exchange_strong(self, 0, std::memory_order_release, std::memory_order_relaxed);
    }
}

// A lone producer or consumer starts from the cursor its predecessor stored. The predecessor may
// have died after finishing slots (a batch publishes or frees several) but before storing the
// cursor: step over every slot already finished for its position, at most a lap. The SPSC
// consumer frees slots through tail alone, so for it the cursor is the whole truth.
void resumeLonePosition(Queue &q) noexcept {
    const bool producer = q.role == JOIN_SHM_PRODUCER;
    std::atomic<uint64_t> &cursor = producer ? q.header().head : q.header().tail;
    uint64_t position = cursor.load(std::memory_order_relaxed);  // ordered by claimRole's acquire
    for (uint64_t n = 0; n < q.capacity && (producer || q.policy == JOIN_SHM_MPSC); ++n, ++position) {
        const uint64_t seq = slotOf(q, position)->seq.load(std::memory_order_acquire);  // as in ring.hpp
        const uint64_t doneFrom = producer ? 4 * position + kFull : 4 * (position + q.capacity);
        if (seq - doneFrom >= 4 * q.capacity) break;  // unsigned: finished means doneFrom <= seq < doneFrom + 4*cap
    }
    q.position = position;
    q.index = indexOf(q, position);
    cursor.store(position, std::memory_order_relaxed);  // relaxed: as in publish/releaseRead
    // Acquire: as the SPSC producer's reading of tail in claimForWrite.
    if (q.role == JOIN_SHM_PRODUCER) q.tailSeen = q.header().tail.load(std::memory_order_acquire);
}

}  // namespace

pid_t currentProcess() noexcept {
    static const bool registered = (pthread_atfork(nullptr, nullptr, refreshPid), refreshPid(), true);
    (void)registered;
    return cachedPid.load(std::memory_order_relaxed);
}

uint64_t currentIdentity() noexcept {
    const auto pid = static_cast<uint32_t>(currentProcess());
    uint64_t identity = cachedIdentity.load(std::memory_order_relaxed);
    if (identity == 0 || identityPid(identity) != pid) {
        identity = processIdentity(pid);
        if (identity == 0) identity = pid;  // we live, whatever /proc says: judged by pid alone
        cachedIdentity.store(identity, std::memory_order_relaxed);
    }
    return identity;
}

int openQueue(Queue *&out, const char *name, uint32_t policy, uint32_t role, uint64_t elementSize, uint64_t capacity,
              const join_shm_options *options) noexcept {
    out = nullptr;
    SegmentOptions segmentOptions{0, 0, 0};
    int64_t spinNs = kDefaultSpinNs;
    Params params{policy, elementSize, capacity};
    uint32_t joinAt = JOIN_SHM_JOIN_NEXT;
    if (options) {
        // Read only the fields the caller's struct has: it may come from an older header.
        join_shm_options o{};
        std::memcpy(&o, options, options->size < sizeof o ? options->size : sizeof o);
        if (o.size < offsetof(join_shm_options, flags) + sizeof o.flags)
            return fail(EINVAL, "options.size is %u, at least %zu is needed", o.size,
                        offsetof(join_shm_options, flags) + sizeof o.flags);
        constexpr uint64_t kKnownFlags = JOIN_SHM_PREFAULT | JOIN_SHM_MLOCK | JOIN_SHM_ALLOW_OTHER_OWNER;
        if (o.flags & ~kKnownFlags)
            return fail(EINVAL, "options.flags has unknown bits 0x%llx", (unsigned long long)(o.flags & ~kKnownFlags));
        if (o.mode & ~07777u) return fail(EINVAL, "options.mode 0%o is not a permission mode", o.mode);
        segmentOptions = {o.mode, o.open_timeout_ns, o.flags};
        if (o.spin_ns != 0) spinNs = o.spin_ns < 0 ? 0 : o.spin_ns;
        if (int r = broadcastOptions(o, policy, params, joinAt)) return r;
    }
    registerPublisher();
    Queue *q = queuePool.take();
    if (!q) return fail(ENOMEM, "out of memory for a queue handle");
    std::snprintf(q->name, sizeof q->name, "%s", name);
    q->policy = policy;
    q->role = role;
    q->owner = currentProcess();
    q->spinNs = spinNs;
    q->joinAt = joinAt;
    int r = openSegment(name, params, segmentOptions, q->segment);
    if (r == 0) {
        q->elementSize = elementSize;
        q->capacity = capacity;
        q->stride = q->segment.geometry.slot_stride;
        q->headerOffset = q->segment.geometry.header_offset;
        q->mask = (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0;
        r = joinParticipants(*q);
        if (r == 0 && (r = claimRole(*q)) != 0) leaveParticipants(*q);
        if (r == 0 && policy == JOIN_SHM_BROADCAST && (r = openBroadcast(*q)) != 0) {
            releaseRole(*q);
            leaveParticipants(*q);
        }
        if (r != 0) closeSegment(q->segment);
    }
    if (r != 0) {
        queuePool.give(q);
        return r;
    }
    if (roleHolder(*q) && policy != JOIN_SHM_BROADCAST) resumeLonePosition(*q);
    q->magic = kQueueMagic;
    out = q;
    return 0;
}

void cancelOutstanding(Queue &q) noexcept {
    q.outstanding = false;
    if (q.policy == JOIN_SHM_BROADCAST) return;  // nothing was published or freed: the position stays
    const Claim c{q.outstandingPosition, q.outstandingSlot};
    if (q.role == JOIN_SHM_PRODUCER) {
        // Claimed in the shared cursor: the position must be filled, and consumers skip it. The
        // lone SPSC producer published nothing and keeps the position for its next element.
        if (sharedProducers(q)) publish(q, c, kAbandoned);
    } else if (sharedConsumers(q)) {
        // Claimed in the shared cursor: other consumers moved past it, so this handle keeps it.
        q.held = true;
        q.heldPosition = c.position;
        q.heldSlot = c.slot;
    }
    // A lone consumer did not advance: the element stays the oldest.
}

void closeQueue(Queue *q) noexcept {
    q->magic = kDeadMagic;
    // An inherited handle (after fork) may only be closed: the parent still owns its role and slot.
    if (q->owner == currentProcess()) {
        if (q->outstanding) cancelOutstanding(*q);
        if (q->held) releaseRead(*q, {q->heldPosition, q->heldSlot});  // MPMC: counts as consumed
        if (q->policy == JOIN_SHM_BROADCAST) closeBroadcast(*q);
        releaseRole(*q);
        leaveParticipants(*q);
    }
    closePoller(*q);  // before the segment goes: a watcher thread may be reading it
    closeSegment(q->segment);
    queuePool.give(q);
}

}  // namespace join::shm
