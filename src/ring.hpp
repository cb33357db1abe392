// The ring algorithm shared by all policies: a bounded queue with a sequence number per slot
// (after D. Vyukov), so each side touches only the slot's own cache line, a slot becomes visible
// only after its producer finished writing it, and free only after its consumer finished reading.
// Slot states are encoded in SlotHeader::seq (layout.hpp).
//
// Who moves which cursor:
//  - SPSC producer, SPSC and MPSC consumer: alone on their side, they keep the cursor in the
//    handle and store it to the segment after each call, for inspection and for a successor
//    after close or crash. No read-modify-write at all. On SPSC the consumer frees slots through
//    tail alone (the producer reads it only when its last reading is used up), so the slot's
//    lines travel from producer to consumer and never back.
//  - MPSC and MPMC producers, MPMC consumers: claim positions with a CAS on the shared cursor,
//    announced beforehand in their participant record, and tag the slots with their holding, so
//    that a peer can take over the slots of a claimant that died at any instruction
//    (participants.hpp, recovery.cpp).
//
// Batches claim a run of slots with one cursor update and wake sleepers once.
//
// Every value read from the segment only selects between "go", "retry" and "-EAGAIN"; slot
// addresses come from the handle's own position reduced modulo its own capacity. Loops are
// bounded, so a corrupt segment makes a call fail, never hang.
#pragma once

#include "broadcast.hpp"
#include "participants.hpp"
#include "queue.hpp"
#include "wait.hpp"

#include <cerrno>
#include <cstring>

namespace join::shm {

constexpr int kMaxClaimAttempts = 1 << 12;

// A run of claimed positions [position, position + count).
struct Claim {
    uint64_t position = 0;
    SlotHeader *slot = nullptr;  // the first one's
    uint64_t count = 1;
};

inline uint64_t indexOf(const Queue &q, uint64_t position) noexcept {
    return q.mask || q.capacity == 1 ? position & q.mask : position % q.capacity;
}

inline SlotHeader *slotAt(const Queue &q, uint64_t index) noexcept {
    return reinterpret_cast<SlotHeader *>(q.segment.slots + index * q.stride + q.headerOffset);
}

inline SlotHeader *slotOf(const Queue &q, uint64_t position) noexcept { return slotAt(q, indexOf(q, position)); }

inline unsigned char *elementOf(const Queue &q, const SlotHeader *slot) noexcept {
    return const_cast<unsigned char *>(reinterpret_cast<const unsigned char *>(slot)) - q.headerOffset;
}

// The slot after `slot`, wrapping at the end of the ring.
inline SlotHeader *nextSlot(const Queue &q, SlotHeader *slot) noexcept {
    auto *next = reinterpret_cast<unsigned char *>(slot) + q.stride;
    return next == q.segment.slots + q.capacity * q.stride + q.headerOffset ? slotAt(q, 0)
                                                                            : reinterpret_cast<SlotHeader *>(next);
}

inline bool sharedProducers(const Queue &q) noexcept { return q.policy != JOIN_SHM_SPSC; }
inline bool sharedConsumers(const Queue &q) noexcept { return q.policy == JOIN_SHM_MPMC; }

inline void advanceLone(Queue &q, uint64_t count) noexcept {
    q.position += count;
    q.index += count;
    if (q.index >= q.capacity) q.index -= q.capacity;  // count <= capacity
}

// Recovery from dead claimants (recovery.cpp). Called when a claim found nothing to do, every
// kStuckCheckEvery such calls: a claim in flight is normal and brief, so looking more often would
// only make pollers read the other side's cursor line (and the clock) on the hot path. Blocking
// waits also look before each sleep (stuckSlice). They return true when they freed the way.
constexpr uint32_t kStuckCheckEvery = 1024;
bool recoverForConsumer(Queue &q, uint64_t position) noexcept;
bool recoverForProducer(Queue &q, uint64_t position) noexcept;
// Resolves every position a dead holder's intent covers, so that its record can be reused. False
// while a live participant's claim may be among them.
bool settleIntent(Queue &q, uint64_t intent) noexcept;

// Writes our claim tag into each slot of a run just taken through a shared cursor, so that a peer
// finding the run stuck can tell whether we died (participants.hpp). The caller then drops the
// intent that covered the run until now.
inline void tagRun(const Queue &q, const Claim &c, bool consumer) noexcept {
    SlotHeader *s = c.slot;
    for (uint64_t i = 0; i < c.count; ++i, s = nextSlot(q, s))
        // Relaxed: dropIntent's release publishes it; a peer acts on it only once we are dead,
        // and then nothing of ours can race with it.
        s->claim.store(claimTag(c.position + i, consumer, q.holding), std::memory_order_relaxed);
}

inline bool shouldLookForStuck(Queue &q) noexcept { return ++q.idlePolls % kStuckCheckEvery == 0; }

// A consumer that found nothing to take at position: on every kStuckCheckEvery-th such look, checks
// for a dead producer holding that slot (none can on SPSC). True when it freed the way.
[[gnu::always_inline]] inline bool consumerFreedStuckSlot(Queue &q, uint64_t position) noexcept {
    return sharedProducers(q) && shouldLookForStuck(q) && recoverForConsumer(q, position);
}

// One try of a shared producer (MPSC, MPMC) at head, last read as `position`, for up to `want`
// free slots: Claimed (in c), Full (the slot at position is not free yet), or Moved (another
// producer was first; position is head again).
enum class Attempt { Claimed, Full, Moved };

[[gnu::always_inline]] inline Attempt claimAtHead(Queue &q, uint64_t &position, Claim &c, uint64_t want,
                                                  bool &announced) noexcept {
    std::atomic<uint64_t> &head = q.header().head;
    SlotHeader *slot = slotOf(q, position), *s = slot;
    // Acquire pairs with the consumer's release in releaseRead: its copies out of the slot
    // happened before we write over it.
    const auto diff = static_cast<int64_t>(slot->seq.load(std::memory_order_acquire) - 4 * position);
    if (diff < 0) return Attempt::Full;
    if (diff > 0) {
        position = head.load(std::memory_order_relaxed);  // claimed by another producer
        return Attempt::Moved;
    }
    // Free slots stay free until somebody moves head past them, so the run we count here is still
    // ours if the CAS from `position` succeeds.
    uint64_t n = 1;
    while (n < want && (s = nextSlot(q, s))->seq.load(std::memory_order_acquire) == 4 * (position + n))
        ++n;
    announceClaim(q, position, false);
    announced = true;
    // Release: our intent is visible to whoever sees head past position (participants.hpp).
    // Otherwise head only arbitrates among producers; the elements are ordered by seq. A failed
    // CAS loads head into position.
    if (!head.compare_exchange_weak(position, position + n, std::memory_order_release, std::memory_order_relaxed))
        return Attempt::Moved;
    c = {position, slot, n};
    tagRun(q, c, false);
    dropIntent(q);
    announced = false;
    q.stuckSinceNs = 0;
    return Attempt::Claimed;
}

// Producer: claims up to `want` consecutive free slots from the next position. 0 or -EAGAIN (full).
[[gnu::always_inline]] inline int claimForWrite(Queue &q, Claim &c, uint64_t want = 1) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) {
        // Through a copy: handing c's own address to a function out of line would keep c in memory
        // on every queue call too (+70 instructions a push, measured with callgrind).
        Claim b;
        const int r = broadcastClaimForWrite(q, b, want);
        c = b;
        return r;
    }
    if (!sharedProducers(q)) {
        // SPSC: the consumer frees slots by moving tail alone (no store into the slot), so the
        // slot line travels one way only; we read tail again only when our last reading is used up.
        uint64_t used = q.position - q.tailSeen;
        if (used >= q.capacity || q.capacity - used < want) {
            // Acquire pairs with the consumer's release in releaseRead: its copies out of the
            // slots below tail happened before we write over them.
            q.tailSeen = q.header().tail.load(std::memory_order_acquire);
            used = q.position - q.tailSeen;
            if (used >= q.capacity) return -EAGAIN;  // full, or a tail that lies: wait either way
        }
        const uint64_t room = q.capacity - used;
        c = {q.position, slotAt(q, q.index), want < room ? want : room};
        return 0;
    }
    std::atomic<uint64_t> &head = q.header().head;
    // Relaxed: a stale head only costs a retry; the slots' seq decide.
    uint64_t position = head.load(std::memory_order_relaxed);
    bool announced = false;  // our intent names a claim we may not have made: drop it before leaving
    for (int attempt = 0; attempt < kMaxClaimAttempts; ++attempt) {
        const Attempt a = claimAtHead(q, position, c, want, announced);
        if (a == Attempt::Claimed) return 0;
        // A full slot still holds (or is yielding) an element of the last lap.
        if (a == Attempt::Full && (!shouldLookForStuck(q) || !recoverForProducer(q, position))) break;
    }
    if (announced) dropIntent(q);
    return -EAGAIN;
}

// Producer: makes claimed slots visible as kFull (or kAbandoned, which consumers skip).
inline void publishQueued(Queue &q, const Claim &c, uint64_t state) noexcept;
inline void publish(Queue &q, const Claim &c, uint64_t state) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastPublish(q, c);
    publishQueued(q, c, state);
}

// publish for the queue policies (SPSC, MPSC, MPMC).
inline void publishQueued(Queue &q, const Claim &c, uint64_t state) noexcept {
    SlotHeader *s = c.slot;
    for (uint64_t i = 0; i < c.count; ++i, s = nextSlot(q, s))
        // Release pairs with the consumer's acquire in claimForRead: the element is complete
        // before anyone can see the slot as full.
        s->seq.store(4 * (c.position + i) + state, std::memory_order_release);
    if (!sharedProducers(q)) {
        advanceLone(q, c.count);
        // Relaxed: the cursor copy is for inspection and for a successor, who re-checks the slot.
        q.header().head.store(q.position, std::memory_order_relaxed);
    }
    notify(q.header().not_empty);
}

// Consumer: hands claimed slots back to producers (and steps the lone cursor).
inline void releaseQueued(Queue &q, const Claim &c) noexcept;
inline void releaseRead(Queue &q, const Claim &c) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastRelease(q, c);
    releaseQueued(q, c);
}

// releaseRead for the queue policies (SPSC, MPSC, MPMC).
inline void releaseQueued(Queue &q, const Claim &c) noexcept {
    if (!sharedProducers(q)) {
        advanceLone(q, c.count);
        // Release pairs with the SPSC producer's acquire in claimForWrite: our reads of the
        // elements are done before it may write over them.
        q.header().tail.store(q.position, std::memory_order_release);
        notify(q.header().not_full);
        return;
    }
    SlotHeader *s = c.slot;
    for (uint64_t i = 0; i < c.count; ++i, s = nextSlot(q, s))
        // Release pairs with the producer's acquire in claimForWrite: our reads of the element
        // are done before the slot can be written again.
        s->seq.store(4 * (c.position + i + q.capacity) + kFree, std::memory_order_release);
    if (!sharedConsumers(q)) {
        advanceLone(q, c.count);
        // Relaxed: as for head in publish.
        q.header().tail.store(q.position, std::memory_order_relaxed);
    }
    notify(q.header().not_full);
}

// Consumer: frees the abandoned positions at the front of a claimed run and counts them; returns
// the elements that follow (count 0 when there are none).
inline Claim dropAbandoned(Queue &q, Claim c) noexcept {
    uint64_t dropped = 0;
    // Acquire: as in claimForRead (the slot's state was read there already; this re-read is ours).
    while (c.count > 0 && c.slot->seq.load(std::memory_order_acquire) == 4 * c.position + kAbandoned) {
        // Release (as in releaseRead) without the notify: the caller notifies once.
        c.slot->seq.store(4 * (c.position + q.capacity) + kFree, std::memory_order_release);
        ++dropped;
        ++c.position;
        --c.count;
        c.slot = nextSlot(q, c.slot);
    }
    if (dropped) {
        if (!sharedConsumers(q)) {
            advanceLone(q, dropped);
            q.header().tail.store(q.position, std::memory_order_relaxed);  // relaxed: as in releaseRead
        }
        q.header().skipped.fetch_add(dropped, std::memory_order_relaxed);  // a statistic: orders nothing
        notify(q.header().not_full);
    }
    return c;
}

// A poll that found no element or no room, counted toward the look for a dead claimant as
// shouldLookForStuck counts it, unless it is the poll due for that look: then false, uncounted,
// and the claim loop must take it (it counts it there and looks).
[[gnu::always_inline]] inline bool countedIdlePoll(Queue &q) noexcept {
    if ((q.idlePolls + 1) % kStuckCheckEvery == 0) return false;
    ++q.idlePolls;
    return true;
}

// A shared consumer's (MPMC) claim of the run of n slots it found at `position`, by moving tail
// on from there. False when another consumer moved it first.
[[gnu::always_inline]] inline bool takeAtTail(Queue &q, uint64_t position, SlotHeader *slot, uint64_t n,
                                              bool &announced) noexcept {
    announceClaim(q, position, true);
    announced = true;
    // Release: as head's in claimAtHead. Otherwise tail only arbitrates among consumers.
    if (!q.header().tail.compare_exchange_weak(position, position + n, std::memory_order_release,
                                               std::memory_order_relaxed))
        return false;
    tagRun(q, {position, slot, n}, true);
    dropIntent(q);
    announced = false;
    return true;
}

// What a lone consumer (SPSC, MPSC) taking one element learns from one look at the slot at its
// position: Ready (the element is there), Empty (nothing to take, no look for a dead producer
// due), or Undecided: the claim loop decides (an abandoned slot to skip, the look due). The loop
// would settle Ready and Empty the same way, through its run scan and a second load; this is the
// poll that repeats most.
enum class Look { Ready, Empty, Undecided };

[[gnu::always_inline]] inline Look loneConsumerLook(Queue &q, SlotHeader *&slot) noexcept {
    slot = slotAt(q, q.index);
    // Acquire pairs with the producer's release in publish: the element is complete.
    const uint64_t seq = slot->seq.load(std::memory_order_acquire);
    if (seq == 4 * q.position + kFull) {
        q.stuckSinceNs = 0;
        return Look::Ready;
    }
    if (seq == 4 * q.position + kAbandoned || (sharedProducers(q) && !countedIdlePoll(q))) return Look::Undecided;
    return Look::Empty;
}

// The quick paths: a claim of one slot, settled without the claim loops by one look at the slot
// (and, where the cursor is shared, one CAS). They return 0 (claimed, in c), -EAGAIN (full or
// empty, and no look for a dead claimant due), or kUndecided: the loops must decide (another
// claimant was first, an abandoned slot, the look due). Out of the loops so that the entry points'
// common path needs no stack frame: with the loops inline, every call saved and restored six
// registers (capi/shm.cpp reaches the loops by a tail call). A loop taking over where a quick
// path left makes the same claims the quick path would have made.
constexpr int kUndecided = 1;

[[gnu::always_inline]] inline int quickClaimForRead(Queue &q, Claim &c) noexcept {
    if (q.policy == JOIN_SHM_SPSC || q.policy == JOIN_SHM_MPSC) {
        SlotHeader *slot;
        const Look look = loneConsumerLook(q, slot);
        if (look != Look::Ready) return look == Look::Empty ? -EAGAIN : kUndecided;
        c = {q.position, slot, 1};
        return 0;
    }
    if (q.policy != JOIN_SHM_MPMC || q.held) return kUndecided;
    // Shared consumers: one try at tail, for an element there. Relaxed: as in claimForRead.
    const uint64_t position = q.header().tail.load(std::memory_order_relaxed);
    SlotHeader *slot = slotOf(q, position);
    // Acquire pairs with the producer's release in publish: the element is complete.
    const auto diff = static_cast<int64_t>(slot->seq.load(std::memory_order_acquire) - (4 * position + kFull));
    if (diff < 0) return countedIdlePoll(q) ? -EAGAIN : kUndecided;  // empty, as the claim loop finds it
    bool announced = false;
    if (diff > 0 || !takeAtTail(q, position, slot, 1, announced)) {  // abandoned, or another consumer's
        if (announced) dropIntent(q);                                // the loop announces its own tries
        return kUndecided;
    }
    q.stuckSinceNs = 0;
    c = {position, slot, 1};
    return 0;
}

// Consumer: claims up to `want` consecutive elements from the oldest one; abandoned positions on
// the way are skipped and counted. 0 or -EAGAIN (empty).
// Always inlined: the claim loops are the hot path, and with want known (1 for single calls) the
// compiler folds the run scan; out of line they cost a call and the folding.
[[gnu::always_inline]] inline int claimForRead(Queue &q, Claim &c, uint64_t want = 1) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) {  // through a copy, as in claimForWrite
        Claim b;
        const int r = broadcastClaimForRead(q, b);
        c = b;
        return r;
    }
    if (q.held) {  // MPMC: an element this handle claimed earlier and gave back with cancel
        q.held = false;
        c = {q.heldPosition, q.heldSlot, 1};
        return 0;
    }
    if (want == 1) {
        const int r = quickClaimForRead(q, c);
        if (r != kUndecided) return r;
    }
    bool announced = false;  // as in claimForWrite
    for (int attempt = 0; attempt < kMaxClaimAttempts; ++attempt) {
        uint64_t position;
        SlotHeader *slot;
        uint64_t n = 0;
        if (!sharedConsumers(q)) {
            position = q.position;
            slot = slotAt(q, q.index);
        } else {
            // Relaxed: as head in claimForWrite.
            position = q.header().tail.load(std::memory_order_relaxed);
            slot = slotOf(q, position);
        }
        // The run: abandoned positions first (any number, up to a lap), then up to `want` elements.
        uint64_t elements = 0;
        for (SlotHeader *s = slot; n < q.capacity && elements < want; s = nextSlot(q, s), ++n) {
            // Acquire pairs with the producer's release in publish: the element is complete.
            const uint64_t seq = s->seq.load(std::memory_order_acquire);
            if (seq == 4 * (position + n) + kFull)
                ++elements;
            else if (seq != 4 * (position + n) + kAbandoned || elements > 0)
                break;
        }
        if (n == 0) {
            const auto diff = static_cast<int64_t>(slot->seq.load(std::memory_order_relaxed) - (4 * position + kFull));
            if (diff > 0 && sharedConsumers(q)) continue;  // taken by another consumer: reload tail
            if (consumerFreedStuckSlot(q, position)) continue;
            break;
        }
        if (sharedConsumers(q) && !takeAtTail(q, position, slot, n, announced)) continue;
        q.stuckSinceNs = 0;
        c = dropAbandoned(q, {position, slot, n});
        // dropAbandoned re-reads the states the scan read: a peer that rewrote one since (buggy or
        // hostile) must not make us copy more than the `want` elements the caller has room for.
        if (c.count > want) c.count = want;
        if (c.count > 0) return 0;
    }
    if (announced) dropIntent(q);
    return -EAGAIN;
}

// A successful claim holds 1 to `want` slots: each claim bounds what it takes by `want`. Told so for
// want == 1, the compiler drops the copy and release loops of an inlined single call (MPMC, 64 B:
// 289 instructions a push and pop instead of 330, callgrind). Saying it for every `want` made the
// batch loops longer, so only there.
[[gnu::always_inline]] inline void assumeSingleClaim(const Claim &c, uint64_t want) noexcept {
    if (want == 1 && c.count != 1) __builtin_unreachable();
}

// Copies one element. The common small sizes are copied inline: through memcpy's PLT entry and
// size dispatch, an 8 B element cost about 20 instructions a call (callgrind), and batches of 64 B
// elements ran at 0.6x the rate they reach with the copy inline (12 alternated pairs).
inline bool copiedInline(uint64_t size) noexcept { return size == 8 || size == 16 || size == 32 || size == 64; }

// SmallOnly: the caller checked copiedInline, so there is no call to memcpy in it, and no register
// to save around one. One chain of tests either way: a second dispatch cost the batch loops three
// instructions an element.
template <bool SmallOnly = false>
[[gnu::always_inline]] inline void copyElement(unsigned char *to, const unsigned char *from, uint64_t size) noexcept {
    if (size == 8)
        std::memcpy(to, from, 8);
    else if (size == 16)
        std::memcpy(to, from, 16);
    else if (size == 32)
        std::memcpy(to, from, 32);
    else if (SmallOnly || size == 64)
        std::memcpy(to, from, 64);
    else
        std::memcpy(to, from, size);
}

// Always inlined, as the claims: out of line, single calls paid the batch loops (~200 instructions a
// push and pop of 8 B against ~100 inlined, counted with callgrind).
[[gnu::always_inline]] inline int64_t tryPushN(Queue &q, const unsigned char *from, uint64_t count) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastPublishN(q, from, count);
    Claim c;
    if (int r = claimForWrite(q, c, count)) return r;
    assumeSingleClaim(c, count);
    SlotHeader *s = c.slot;
    for (uint64_t i = 0; i < c.count; ++i, s = nextSlot(q, s))
        copyElement(elementOf(q, s), from + i * q.elementSize, q.elementSize);
    publish(q, c, kFull);
    return static_cast<int64_t>(c.count);
}

[[gnu::always_inline]] inline int64_t tryPopN(Queue &q, unsigned char *to, uint64_t count) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastReceiveN(q, to, count);
    Claim c;
    if (int r = claimForRead(q, c, count)) return r;
    assumeSingleClaim(c, count);
    SlotHeader *s = c.slot;
    for (uint64_t i = 0; i < c.count; ++i, s = nextSlot(q, s))
        copyElement(to + i * q.elementSize, elementOf(q, s), q.elementSize);
    releaseRead(q, c);
    return static_cast<int64_t>(c.count);
}

// Always inlined too: out of line (GCC's choice once the broadcast branch made them larger), the
// single calls lost the folding of count == 1 and cost 179 instructions a push instead of 105.
[[gnu::always_inline]] inline int tryPush(Queue &q, const void *element) noexcept {
    const int64_t r = tryPushN(q, static_cast<const unsigned char *>(element), 1);
    return r < 0 ? static_cast<int>(r) : 0;
}

[[gnu::always_inline]] inline int tryPop(Queue &q, void *element) noexcept {
    const int64_t r = tryPopN(q, static_cast<unsigned char *>(element), 1);
    return r < 0 ? static_cast<int>(r) : 0;
}

// A producer's quick path (see quickClaimForRead): SPSC's claim has no loop, shared producers try
// head once.
[[gnu::always_inline]] inline int quickClaimForWrite(Queue &q, Claim &c) noexcept {
    if (q.policy == JOIN_SHM_SPSC) return claimForWrite(q, c);
    if (q.policy == JOIN_SHM_BROADCAST) return kUndecided;
    // Relaxed: as in claimForWrite.
    uint64_t position = q.header().head.load(std::memory_order_relaxed);
    bool announced = false;
    const Attempt a = claimAtHead(q, position, c, 1, announced);
    if (a == Attempt::Claimed) return 0;
    if (announced) dropIntent(q);  // the CAS lost: the loop announces its own tries
    return a == Attempt::Full && countedIdlePoll(q) ? -EAGAIN : kUndecided;
}

// A single push or pop through the quick claims, for the element sizes copied inline (with a call
// to memcpy in it, the path would need its registers saved again). Same results as quick claims.
[[gnu::always_inline]] inline int quickPush(Queue &q, const void *element) noexcept {
    if (!copiedInline(q.elementSize)) return kUndecided;
    Claim c;
    if (int r = quickClaimForWrite(q, c)) return r;
    copyElement<true>(elementOf(q, c.slot), static_cast<const unsigned char *>(element), q.elementSize);
    publishQueued(q, c, kFull);
    return 0;
}

[[gnu::always_inline]] inline int quickPop(Queue &q, void *element) noexcept {
    if (!copiedInline(q.elementSize)) return kUndecided;
    Claim c;
    if (int r = quickClaimForRead(q, c)) return r;
    copyElement<true>(static_cast<unsigned char *>(element), elementOf(q, c.slot), q.elementSize);
    releaseQueued(q, c);
    return 0;
}

// Before a blocking call sleeps: look for a dead claimant now (nobody will wake us for it). Returns
// how long to sleep at most (0: until woken, or kStuckRecheckNs while a slot looks stuck), or -1
// to retry at once because a slot was taken over.
constexpr int64_t kStuckRecheckNs = 5'000'000;
inline int64_t stuckSlice(Queue &q) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastSlice(q);
    Header &h = q.header();
    bool tookOver;
    if (q.role == JOIN_SHM_CONSUMER) {
        if (!sharedProducers(q)) return 0;
        // Relaxed: as in claimForRead.
        tookOver = recoverForConsumer(q, sharedConsumers(q) ? h.tail.load(std::memory_order_relaxed) : q.position);
    } else {
        if (!sharedConsumers(q)) return 0;
        tookOver = recoverForProducer(q, h.head.load(std::memory_order_relaxed));  // relaxed: as in claimForWrite
    }
    return tookOver ? -1 : q.stuckSinceNs ? kStuckRecheckNs : 0;
}

// Counts from the two shared cursors, clamped: the segment may be lying or mid-update.
inline uint64_t pendingCount(const Queue &q) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) return broadcastPending(q);
    // Relaxed: a snapshot for inspection, exact only when nobody acts.
    const uint64_t tail = q.header().tail.load(std::memory_order_relaxed);
    const uint64_t head = q.header().head.load(std::memory_order_relaxed);
    const auto diff = static_cast<int64_t>(head - tail);
    return diff <= 0 ? 0 : static_cast<uint64_t>(diff) > q.capacity ? q.capacity : static_cast<uint64_t>(diff);
}

}  // namespace join::shm
