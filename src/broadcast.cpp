// Broadcast rings; the protocol and its reasons are in broadcast.hpp.
#include "broadcast.hpp"

#include "error.hpp"
#include "participants.hpp"
#include "ring.hpp"

#include <cerrno>

namespace join::shm {

namespace {

bool overwriting(const Queue &q) noexcept { return q.segment.overflow == JOIN_SHM_OVERFLOW_OVERWRITE; }

uint64_t completeSeq(uint64_t position) noexcept { return 2 * position + 2; }

// Element copies as 8-byte relaxed atomics, where a subscriber may read a slot the publisher is
// overwriting (overwrite mode, or a JOIN_OLDEST subscriber's history): the seqlock check then
// discards the copy, and no access is a C++ data race. Elsewhere both sides use memcpy: a 1472 B
// push plus pop in one process takes 80 ns that way, 220 ns word by word. Slots are 8-byte aligned
// and the element area is rounded up to 8 bytes (computeGeometry), so the last word stays inside.
void storeElement(unsigned char *slot, const unsigned char *from, uint64_t size) noexcept {
    auto *words = reinterpret_cast<uint64_t *>(slot);
    const uint64_t whole = size / 8;
    for (uint64_t i = 0; i < whole; ++i) {
        uint64_t w;
        std::memcpy(&w, from + i * 8, 8);
        __atomic_store_n(&words[i], w, __ATOMIC_RELAXED);  // ordered by the seq stores around it
    }
    if (size % 8) {
        uint64_t w = 0;
        std::memcpy(&w, from + whole * 8, size % 8);
        __atomic_store_n(&words[whole], w, __ATOMIC_RELAXED);
    }
}

void loadElement(unsigned char *to, const unsigned char *slot, uint64_t size) noexcept {
    auto *words = reinterpret_cast<const uint64_t *>(slot);
    const uint64_t whole = size / 8;
    for (uint64_t i = 0; i < whole; ++i) {
        const uint64_t w = __atomic_load_n(&words[i], __ATOMIC_RELAXED);  // validated by the seq re-read
        std::memcpy(to + i * 8, &w, 8);
    }
    if (size % 8) {
        const uint64_t w = __atomic_load_n(&words[whole], __ATOMIC_RELAXED);
        std::memcpy(to + whole * 8, &w, size % 8);
    }
}

// A subscriber's position as the publisher must respect it: how far behind `position` it is,
// clamped to the capacity (a record that lies, or a previous holder's old cursor, only gates).
uint64_t lagOf(const Queue &q, uint64_t position, uint64_t cursor) noexcept {
    const uint64_t lag = position - cursor;
    return lag > q.capacity ? q.capacity : lag;
}

// Block mode: the largest lag of any subscriber behind the publisher's next position, freeing the
// records of dead subscribers that have gated us for the grace period.
[[gnu::noinline]] uint64_t scanGate(Queue &q, bool reclaim) noexcept {  // off the fast path
    // The publisher's half of the join handshake (broadcast.hpp): our head store is ordered before
    // the loads below by the joiner's membarrier (waiterBarrier); where there is none, by a fence.
    publisherFence();
    // Relaxed: ordered by the barrier pairing above; clamped, as the segment may lie.
    uint32_t used = q.header().subscribers_used.load(std::memory_order_relaxed);
    if (used > q.segment.maxSubscribers) used = q.segment.maxSubscribers;
    uint64_t worst = 0;
    // Liveness (system calls) is judged only once we have been gated for the grace period.
    const bool judge = reclaim && q.stuckSinceNs != 0 && monotonicNs() - q.stuckSinceNs >= kClaimGraceNs;
    for (uint32_t i = 0; i < used; ++i) {
        Subscriber &s = q.segment.subscribers[i];
        // Acquire: pairs with the joiner's CAS (and a previous holder's release at leave).
        uint32_t holding = s.holding.load(std::memory_order_acquire);
        if (holding == 0) continue;
        // Acquire: pairs with the subscriber's release store after its copies; we may then
        // overwrite the slots below its cursor.
        const uint64_t lag = lagOf(q, q.position, s.position.load(std::memory_order_acquire));
        if (lag >= q.capacity && judge && !holdingAlive(q, holding)) {
            // Release: nothing to publish, but keeps the record's hand-over a release sequence.
            s.holding.compare_exchange_strong(holding, 0, std::memory_order_release, std::memory_order_relaxed);
            continue;
        }
        if (lag > worst) worst = lag;
    }
    if (judge) q.stuckSinceNs = 0;  // judged: give the survivors another grace period
    if (reclaim) {
        if (worst < q.capacity)
            q.stuckSinceNs = 0;
        else if (q.stuckSinceNs == 0)
            q.stuckSinceNs = monotonicNs();
    }
    return worst;
}

// Where an overrun subscriber at `position` goes on: the oldest position it can expect to read
// whole (broadcast.hpp), never behind where it was.
uint64_t resumeAfterOverrun(const Queue &q, uint64_t position) noexcept {
    // Acquire: a head that says the slot was reused covers the positions below it.
    const uint64_t head = q.header().head.load(std::memory_order_acquire);
    // With one slot, that slot is the oldest (and perhaps being overwritten: then overrun again).
    const uint64_t oldest = head - q.capacity + (q.capacity > 1 ? 1 : 0);
    return static_cast<int64_t>(oldest - position) > 0 ? oldest : position + 1;
}

// Block mode, from the head we read at join (q.gate) on: the publisher cannot write over our
// position before we store a cursor past it (the join handshake, broadcast.hpp), so its slot may be
// read in place, or lent. Before that (a JOIN_OLDEST subscriber's first lap) and in overwrite mode a
// slot may be overwritten while we read it: copies are validated, and slots are not lent.
bool lentSafely(const Queue &q) noexcept { return !overwriting(q) && static_cast<int64_t>(q.position - q.gate) >= 0; }

// A subscriber's bit in history_readers (layout.hpp): its record's index, below kMaxSubscribers.
std::atomic<uint64_t> &historyWord(const Queue &q) noexcept {
    return q.header().history_readers[(q.subscriber - q.segment.subscribers) / 64];
}
uint64_t historyBit(const Queue &q) noexcept { return uint64_t{1} << (q.subscriber - q.segment.subscribers) % 64; }

void leaveHistory(Queue &q) noexcept {
    // Release: pairs with copyPlainly's acquire; our atomic loads of the history slots come
    // before any plain store the publisher makes over them once it sees the bit clear.
    historyWord(q).fetch_and(~historyBit(q), std::memory_order_release);
    q.readingHistory = false;
}

// Block mode, after claimRun marked the slots odd: true when no subscriber reads history, so none
// can be looking at the claimed slots and the element may be copied in plainly. The pairing with a
// joiner, who sets its bit, pays waiterBarrier(), then reads head: either we see the bit, or our
// odd seqs are visible to it, and it copies nothing out of a slot we are writing.
bool copyPlainly(const Queue &q) noexcept {
    if (overwriting(q)) return false;
    publisherFence();
    const Header &h = q.header();
    // Acquire: pairs with leaveHistory's release.
    return (h.history_readers[0].load(std::memory_order_acquire) |
            h.history_readers[1].load(std::memory_order_acquire)) == 0;
}

void storeCursor(Queue &q) noexcept {
    // Release: pairs with scanGate's acquire: our copies out of the slots below are done.
    q.subscriber->position.store(q.position, std::memory_order_release);
    if (q.readingHistory && static_cast<int64_t>(q.position - q.gate) >= 0) leaveHistory(q);
    if (!overwriting(q)) notify(q.header().not_full);
}

void moveTo(Queue &q, uint64_t position) noexcept {
    q.position = position;
    q.index = indexOf(q, position);
}

// The slots from the handle's index on, with the geometry in registers: the atomic accesses in the
// loops below would otherwise make the compiler reload it from the Queue at every step (callgrind:
// 185 instructions to publish one 64 B element, against 60 for SPSC).
struct Run {
    unsigned char *slots;
    uint64_t stride, headerOffset, capacity, first;
    Run(const Queue &q, uint64_t index)
        : slots(q.segment.slots), stride(q.stride), headerOffset(q.headerOffset), capacity(q.capacity), first(index) {}
    unsigned char *element(uint64_t k) const {  // k < capacity, and first < capacity (the handle's own)
        uint64_t i = first + k;
        if (i >= capacity) i -= capacity;
        return slots + i * stride;
    }
    SlotHeader *slot(uint64_t k) const { return reinterpret_cast<SlotHeader *>(element(k) + headerOffset); }
};

// The publisher's claim and publish, inlined into the copying path (out of line they doubled its
// instructions); zero-copy reserve/commit call them through the exported wrappers below.
[[gnu::always_inline]] inline int claimRun(Queue &q, Claim &c, uint64_t want) noexcept {
    uint64_t room = q.capacity;
    if (!overwriting(q)) {
        uint64_t used = q.position - q.gate;
        if (used >= q.capacity || q.capacity - used < want) {
            used = scanGate(q, true);
            q.gate = q.position - used;
            if (used >= q.capacity) return -EAGAIN;
        }
        room = q.capacity - used;
    }
    const Run run(q, q.index);
    c = {q.position, run.slot(0), want < room ? want : room};
    for (uint64_t i = 0; i < c.count; ++i)
        run.slot(i)->seq.store(completeSeq(c.position + i) - 1, std::memory_order_relaxed);
    // Release fence: the odd seqs above are visible before any element store that follows, so a
    // subscriber whose copy saw part of a new element re-reads a changed seq (seqlock writer).
    std::atomic_thread_fence(std::memory_order_release);
    return 0;
}

[[gnu::always_inline]] inline void publishRun(Queue &q, const Claim &c) noexcept {
    const Run run(q, q.index);  // the claim's first slot: the index moves only below
    for (uint64_t i = 0; i < c.count; ++i)
        // Release: pairs with the subscriber's acquire of seq; the element is complete.
        run.slot(i)->seq.store(completeSeq(c.position + i), std::memory_order_release);
    advanceLone(q, c.count);
    // Release: for a successor (openBroadcast) and the overrun resume, which read it with acquire.
    q.header().head.store(q.position, std::memory_order_release);
    notify(q.header().not_empty);
}

// The slot at our position was overwritten before we read it. Block mode: a JOIN_OLDEST first lap
// (from the join on nothing is lost): skip to the join, silently, and look again. Overwrite mode:
// we were overrun; resume at the oldest position still whole and report the loss once.
int64_t overrun(Queue &q) noexcept {
    const uint64_t from = q.position;
    if (!overwriting(q)) {
        moveTo(q, static_cast<int64_t>(q.gate - from) > 0 ? q.gate : resumeAfterOverrun(q, from));
        storeCursor(q);
        return -EAGAIN;
    }
    moveTo(q, resumeAfterOverrun(q, from));
    storeCursor(q);
    q.lost += q.position - from;
    return fail(EOVERFLOW, "subscriber of \"%s\" was overrun and lost %llu messages (%llu in all)", q.name,
                (unsigned long long)(q.position - from), (unsigned long long)q.lost);
}

// Up to count elements from our position: how many, -EAGAIN, or overrun()'s verdict.
[[gnu::always_inline]] inline int64_t receiveRun(Queue &q, unsigned char *to, uint64_t count) noexcept {
    const Run run(q, q.index);
    const uint64_t size = q.elementSize, position = q.position;
    const bool inPlace = lentSafely(q);  // stays true as the position only grows
    uint64_t n = 0;
    for (; n < count && n < q.capacity; ++n) {
        SlotHeader *slot = run.slot(n);
        const uint64_t want = completeSeq(position + n);
        // Acquire: pairs with publishRun's release; the element is complete.
        const uint64_t seq = slot->seq.load(std::memory_order_acquire);
        if (seq != want) {
            if (static_cast<int64_t>(seq - want) < 0) break;  // not published yet
            if (n == 0) return overrun(q);
            break;  // overwritten: deliver what we have first; the next call reports the loss
        }
        if (inPlace) {  // nothing can overwrite it: a plain (vectorised) copy
            std::memcpy(to + n * size, run.element(n), size);
            continue;
        }
        loadElement(to + n * size, run.element(n), size);
        // Acquire fence: our element loads happen before the re-read; a publisher that began
        // overwriting (odd seq, then its release fence) before any of them is seen below.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (slot->seq.load(std::memory_order_relaxed) != want) {
            if (n == 0) return overrun(q);
            break;
        }
    }
    if (n == 0) return -EAGAIN;
    advanceLone(q, n);
    storeCursor(q);
    return static_cast<int64_t>(n);
}

}  // namespace

int broadcastOptions(const join_shm_options &o, uint32_t policy, Params &params, uint32_t &joinAt) noexcept {
    if (o.size < offsetof(join_shm_options, reserved) + sizeof o.reserved) return 0;  // an older caller
    if (policy != JOIN_SHM_BROADCAST) {
        if (o.max_subscribers || o.overflow || o.join_at)
            return fail(EINVAL, "max_subscribers, overflow and join_at are for broadcast rings; this one is policy %u",
                        policy);
    } else if (o.max_subscribers > kMaxSubscribers) {
        return fail(EINVAL, "options.max_subscribers is %u, at most %u are allowed", o.max_subscribers,
                    kMaxSubscribers);
    } else if (o.overflow > JOIN_SHM_OVERFLOW_OVERWRITE) {
        return fail(EINVAL, "options.overflow %u is not BLOCK (1) or OVERWRITE (2)", o.overflow);
    } else if (o.join_at > JOIN_SHM_JOIN_OLDEST) {
        return fail(EINVAL, "options.join_at %u is not NEXT (1) or OLDEST (2)", o.join_at);
    }
    if (o.reserved) return fail(EINVAL, "options.reserved is %u, it must be 0", o.reserved);
    params.maxSubscribers = o.max_subscribers;
    params.overflow = o.overflow;
    if (o.join_at) joinAt = o.join_at;
    return 0;
}

int openBroadcast(Queue &q) noexcept {
    Header &h = q.header();
    if (q.role == JOIN_SHM_PRODUCER) {
        // Relaxed: ordered by claimRole's acquire. The predecessor may have died after completing
        // slots and before storing head: step over what is complete, at most a lap.
        uint64_t position = h.head.load(std::memory_order_relaxed);
        for (uint64_t n = 0; n < q.capacity; ++n, ++position)
            // Acquire: as a subscriber's; a complete slot stays published.
            if (slotOf(q, position)->seq.load(std::memory_order_acquire) != completeSeq(position)) break;
        moveTo(q, position);
        h.head.store(position, std::memory_order_release);  // release: as in broadcastPublish
        q.gate = position - q.capacity;                     // unknown: the first claim rescans
        return 0;
    }
    for (uint32_t i = 0; i < q.segment.maxSubscribers; ++i) {
        Subscriber &s = q.segment.subscribers[i];
        // Acquire: pairs with a leaving holder's release (its cursor stores are done).
        uint32_t holding = s.holding.load(std::memory_order_acquire);
        if (holding != 0 && holdingAlive(q, holding)) continue;
        // Make the publisher's rescans cover record i before we may hold it (seq_cst: as the CAS).
        uint32_t used = h.subscribers_used.load(std::memory_order_relaxed);
        while (used < i + 1 && !h.subscribers_used.compare_exchange_weak(used, i + 1, std::memory_order_seq_cst)) {
        }
        // Seq_cst: the joiner's half of the handshake in broadcast.hpp (before the head load).
        if (!s.holding.compare_exchange_strong(holding, q.holding, std::memory_order_seq_cst)) continue;
        q.subscriber = &s;
        // Our history_readers bit, before the barrier (a dead holder's is ours to clear).
        // Seq_cst: as the CAS.
        q.readingHistory = q.joinAt == JOIN_SHM_JOIN_OLDEST && !overwriting(q);
        if (q.readingHistory)
            historyWord(q).fetch_or(historyBit(q), std::memory_order_seq_cst);
        else
            historyWord(q).fetch_and(~historyBit(q), std::memory_order_seq_cst);
        // The barrier of the handshake: the publisher either sees our record in its next rescan,
        // or we see every head it stored before that rescan (wait.hpp's asymmetric pairing); and
        // it either sees our history bit, or we see the odd seqs of the slots it writes plainly.
        waiterBarrier();
        const uint64_t head = h.head.load(std::memory_order_seq_cst);
        uint64_t start = head;
        if (q.joinAt == JOIN_SHM_JOIN_OLDEST) start = head > q.capacity ? head - q.capacity : 0;
        s.position.store(start, std::memory_order_seq_cst);  // seq_cst: as the CAS
        q.gate = head;  // for a subscriber: where the history a JOIN_OLDEST one may lose ends
        moveTo(q, start);
        if (q.readingHistory && start == head) leaveHistory(q);  // no history to read
        return 0;
    }
    return fail(EBUSY, "segment \"%s\" has %u subscribers already, its max_subscribers", q.name,
                q.segment.maxSubscribers);
}

void closeBroadcast(Queue &q) noexcept {
    if (!q.subscriber) return;
    if (q.readingHistory) leaveHistory(q);
    uint32_t self = q.holding;
    // Release: our copies are done before a later holder or the publisher acquires the record.
    q.subscriber->holding.compare_exchange_strong(self, 0, std::memory_order_release, std::memory_order_relaxed);
    q.subscriber = nullptr;
    notify(q.header().not_full);  // a publisher gated by us may go on
}

int broadcastClaimForWrite(Queue &q, Claim &c, uint64_t want) noexcept { return claimRun(q, c, want); }

void broadcastPublish(Queue &q, Claim c) noexcept { publishRun(q, c); }

int64_t broadcastPublishN(Queue &q, const unsigned char *from, uint64_t count) noexcept {
    Claim c;
    if (int r = claimRun(q, c, count)) return r;
    const Run run(q, q.index);
    const uint64_t size = q.elementSize;
    if (copyPlainly(q)) {
        for (uint64_t i = 0; i < c.count; ++i)
            std::memcpy(run.element(i), from + i * size, size);
    } else {
        for (uint64_t i = 0; i < c.count; ++i)
            storeElement(run.element(i), from + i * size, size);
    }
    publishRun(q, c);
    return static_cast<int64_t>(c.count);
}

int64_t broadcastReceiveN(Queue &q, unsigned char *to, uint64_t count) noexcept {
    const uint64_t from = q.position;
    const int64_t r = receiveRun(q, to, count);
    // Block mode: a JOIN_OLDEST subscriber whose first lap was overwritten skipped to its join.
    // From there nothing can be overwritten, so one more look settles it.
    return r == -EAGAIN && q.position != from ? receiveRun(q, to, count) : r;
}

int broadcastClaimForRead(Queue &q, Claim &c) noexcept {
    if (overwriting(q))
        return fail(EOPNOTSUPP, "\"%s\" is an overwrite-mode broadcast ring: its slots cannot be lent out", q.name);
    for (int attempt = 0; attempt < kMaxClaimAttempts; ++attempt) {
        SlotHeader *slot = slotAt(q, q.index);
        const uint64_t want = completeSeq(q.position);
        const uint64_t seq = slot->seq.load(std::memory_order_acquire);  // acquire: as in broadcastReceiveN
        if (seq == want && lentSafely(q)) {
            // Our cursor is below this position, so the publisher cannot reuse the slot until release.
            c = {q.position, slot, 1};
            return 0;
        }
        if (static_cast<int64_t>(seq - want) < 0) return -EAGAIN;
        // Complete but not ours to lend (a JOIN_OLDEST first lap, which the publisher may be
        // overwriting right now), or overwritten: go on from where our join made us a gate.
        (void)overrun(q);  // block mode: moves on silently
    }
    return -EAGAIN;
}

void broadcastRelease(Queue &q, Claim c) noexcept {
    advanceLone(q, c.count);
    storeCursor(q);
}

int64_t broadcastSlice(Queue &q) noexcept {
    // A gated publisher looks for dead subscribers every grace period: nobody wakes it for them.
    if (q.role != JOIN_SHM_PRODUCER || overwriting(q)) return 0;
    return q.stuckSinceNs ? kClaimGraceNs : 0;
}

uint64_t broadcastLag(const Queue &q, uint64_t position) noexcept {
    // Relaxed: a snapshot for inspection.
    return lagOf(q, q.header().head.load(std::memory_order_relaxed), position);
}

uint64_t broadcastPending(const Queue &q) noexcept {
    if (q.role == JOIN_SHM_CONSUMER)
        return q.subscriber ? broadcastLag(q, q.subscriber->position.load(std::memory_order_relaxed)) : 0;
    if (overwriting(q)) return 0;  // nothing waits for the publisher
    uint64_t worst = 0;
    for (uint32_t i = 0; i < q.segment.maxSubscribers; ++i) {
        const Subscriber &s = q.segment.subscribers[i];
        // Relaxed: a snapshot for inspection.
        if (s.holding.load(std::memory_order_relaxed) == 0) continue;
        const uint64_t lag = broadcastLag(q, s.position.load(std::memory_order_relaxed));
        if (lag > worst) worst = lag;
    }
    return worst;
}

bool broadcastWorkAt(const Queue &q) noexcept {
    if (q.role == JOIN_SHM_PRODUCER) return overwriting(q) || broadcastPending(q) < q.capacity;
    if (!q.subscriber) return false;
    // Relaxed: our own cursor, stored by the handle's thread (or read by a watcher after the
    // acquire of its arming); the slot's seq decides.
    const uint64_t position = q.subscriber->position.load(std::memory_order_relaxed);
    const uint64_t seq = slotOf(q, position)->seq.load(std::memory_order_acquire);  // acquire: as receive
    return static_cast<int64_t>(seq - completeSeq(position)) >= 0;
}

}  // namespace join::shm
