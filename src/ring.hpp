// The ring algorithm shared by all policies: a bounded queue with a sequence number per slot
// (after D. Vyukov), so each side touches only the slot's own cache line, a slot becomes visible
// only after its producer finished writing it, and free only after its consumer finished reading.
// Slot states are encoded in SlotHeader::seq (layout.hpp).
//
// Who moves which cursor:
//  - SPSC producer, SPSC and MPSC consumer: alone on their side, they keep the cursor in the
//    handle and store it to the segment after each element, for inspection and for a successor
//    after close or crash. No read-modify-write at all.
//  - MPSC and MPMC producers, MPMC consumers: claim a position with a CAS on the shared cursor.
//
// Every value read from the segment only selects between "go", "retry" and "-EAGAIN"; slot
// addresses come from the handle's own position reduced modulo its own capacity. Loops are
// bounded, so a corrupt segment makes a call fail, never hang.
#pragma once

#include "queue.hpp"
#include "wait.hpp"

#include <cerrno>
#include <cstring>

namespace join::shm {

constexpr int kMaxClaimAttempts = 1 << 12;

struct Claim {
    uint64_t position;
    SlotHeader *slot;
};

inline SlotHeader *slotAt(const Queue &q, uint64_t index) noexcept {
    return reinterpret_cast<SlotHeader *>(q.segment.slots + index * q.stride + q.headerOffset);
}

inline unsigned char *elementOf(const Queue &q, const SlotHeader *slot) noexcept {
    return const_cast<unsigned char *>(reinterpret_cast<const unsigned char *>(slot)) - q.headerOffset;
}

inline uint64_t indexOf(const Queue &q, uint64_t position) noexcept {
    return q.mask || q.capacity == 1 ? position & q.mask : position % q.capacity;
}

inline void advanceLone(Queue &q) noexcept {
    ++q.position;
    if (++q.index == q.capacity) q.index = 0;
}

// Producer: finds a free slot for the next position. 0 or -EAGAIN (full).
inline int claimForWrite(Queue &q, Claim &c) noexcept {
    if (q.policy == JOIN_SHM_SPSC) {
        SlotHeader *slot = slotAt(q, q.index);
        // Acquire pairs with the consumer's release in releaseRead: its copy out of this slot
        // happened before we write over it.
        if (slot->seq.load(std::memory_order_acquire) != 4 * q.position + kFree) return -EAGAIN;
        c = {q.position, slot};
        return 0;
    }
    std::atomic<uint64_t> &head = q.header().head;
    // Relaxed: a stale head only costs a retry; the slot's seq decides.
    uint64_t position = head.load(std::memory_order_relaxed);
    for (int attempt = 0; attempt < kMaxClaimAttempts; ++attempt) {
        SlotHeader *slot = slotAt(q, indexOf(q, position));
        // Acquire: same pairing with releaseRead as above.
        const auto diff = static_cast<int64_t>(slot->seq.load(std::memory_order_acquire) - 4 * position);
        if (diff == 0) {
            // Relaxed: head only arbitrates among producers; the element is ordered by seq.
            if (head.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) {
                // Relaxed: names who holds the claim, for diagnostics and dead-claimant checks.
                slot->claimant.store(static_cast<uint32_t>(q.owner), std::memory_order_relaxed);
                c = {position, slot};
                return 0;
            }
        } else if (diff < 0) {
            return -EAGAIN;  // the slot still holds (or is yielding) an element of the last lap
        } else {
            position = head.load(std::memory_order_relaxed);  // claimed by another producer
        }
    }
    return -EAGAIN;
}

// Producer: makes the claimed slot visible as kFull (or kAbandoned, which consumers skip).
inline void publish(Queue &q, const Claim &c, uint64_t state) noexcept {
    // Release pairs with the consumer's acquire in claimForRead: the element is complete before
    // anyone can see the slot as full.
    c.slot->seq.store(4 * c.position + state, std::memory_order_release);
    if (q.policy == JOIN_SHM_SPSC) {
        advanceLone(q);
        // Relaxed: the cursor copy is for inspection and for a successor, who re-checks the slot.
        q.header().head.store(q.position, std::memory_order_relaxed);
    }
    notify(q.header().not_empty);
}

// Consumer: hands the slot back to producers (and steps the lone cursor).
inline void releaseRead(Queue &q, const Claim &c) noexcept {
    // Release pairs with the producer's acquire in claimForWrite: our reads of the element are
    // done before the slot can be written again.
    c.slot->seq.store(4 * (c.position + q.capacity) + kFree, std::memory_order_release);
    if (q.lonePosition()) {
        advanceLone(q);
        // Relaxed: as for head in publish.
        q.header().tail.store(q.position, std::memory_order_relaxed);
    }
    notify(q.header().not_full);
}

// Consumer: steps over an abandoned position and counts it.
inline void skipAbandoned(Queue &q, const Claim &c) noexcept {
    releaseRead(q, c);
    q.header().skipped.fetch_add(1, std::memory_order_relaxed);  // a statistic: orders nothing
}

// Consumer: finds the oldest full slot. 0 or -EAGAIN (empty).
inline int claimForRead(Queue &q, Claim &c) noexcept {
    if (q.lonePosition()) {
        for (uint64_t skipped = 0; skipped <= q.capacity; ++skipped) {
            SlotHeader *slot = slotAt(q, q.index);
            // Acquire pairs with the producer's release in publish: the element is complete.
            const uint64_t seq = slot->seq.load(std::memory_order_acquire);
            if (seq == 4 * q.position + kFull) {
                c = {q.position, slot};
                return 0;
            }
            if (seq != 4 * q.position + kAbandoned) return -EAGAIN;
            skipAbandoned(q, {q.position, slot});
        }
        return -EAGAIN;
    }
    std::atomic<uint64_t> &tail = q.header().tail;
    uint64_t position = tail.load(std::memory_order_relaxed);  // relaxed: as head in claimForWrite
    for (int attempt = 0; attempt < kMaxClaimAttempts; ++attempt) {
        SlotHeader *slot = slotAt(q, indexOf(q, position));
        // Acquire: same pairing with publish as above.
        const auto diff = static_cast<int64_t>(slot->seq.load(std::memory_order_acquire) - (4 * position + kFull));
        if (diff == 0 || diff == kAbandoned - kFull) {
            // Relaxed: tail only arbitrates among consumers; the element is ordered by seq.
            if (tail.compare_exchange_weak(position, position + 1, std::memory_order_relaxed)) {
                if (diff == 0) {
                    c = {position, slot};
                    return 0;
                }
                skipAbandoned(q, {position, slot});
                position = tail.load(std::memory_order_relaxed);
            }
        } else if (diff < 0) {
            return -EAGAIN;  // not yet published
        } else {
            position = tail.load(std::memory_order_relaxed);  // taken by another consumer
        }
    }
    return -EAGAIN;
}

inline int tryPush(Queue &q, const void *element) noexcept {
    Claim c;
    if (int r = claimForWrite(q, c)) return r;
    std::memcpy(elementOf(q, c.slot), element, q.elementSize);
    publish(q, c, kFull);
    return 0;
}

inline int tryPop(Queue &q, void *element) noexcept {
    Claim c;
    if (int r = claimForRead(q, c)) return r;
    std::memcpy(element, elementOf(q, c.slot), q.elementSize);
    releaseRead(q, c);
    return 0;
}

// Counts from the two shared cursors, clamped: the segment may be lying or mid-update.
inline uint64_t pendingCount(const Queue &q) noexcept {
    // Relaxed: a snapshot for inspection, exact only when nobody acts.
    const uint64_t tail = q.header().tail.load(std::memory_order_relaxed);
    const uint64_t head = q.header().head.load(std::memory_order_relaxed);
    const auto diff = static_cast<int64_t>(head - tail);
    return diff <= 0 ? 0 : static_cast<uint64_t>(diff) > q.capacity ? q.capacity : static_cast<uint64_t>(diff);
}

}  // namespace join::shm
