// Recovery from a peer that died holding a slot it claimed through a shared cursor:
//  - an MPSC/MPMC producer that moved head past a position and died before publishing it stalls
//    every consumer at that position: a consumer marks the slot abandoned, and it is then
//    skipped and counted like the slot of a producer closed mid-reservation;
//  - an MPMC consumer that moved tail past a position and died before freeing the slot stalls
//    the producers a lap later: a producer frees the slot again, counting the element as skipped.
// Whether the claimant is dead is judged from its tag or, if it died before tagging, from the
// participants' intents (participants.hpp), at any instruction it may have died at. A dead process
// writes nothing more, so its slot needs no race-proofing against it; the take-over is a CAS only
// because several peers may attempt it at once. tests/test_model.cpp checks the protocol.
#include "participants.hpp"
#include "ring.hpp"

namespace join::shm {

namespace {

// Whether the cursor of a side has moved past position. Acquire: the judge then sees the intent
// that position's claimant stored before its CAS (participants.hpp). `latest` reads it with an
// RMW, which returns the last value in its modification order: settling a dead holder's intent
// must not take a stale cursor for "nothing claimed" and free a record a stuck slot depends on
// (a stale reading elsewhere only makes us look again later).
bool claimed(Queue &q, uint64_t position, bool consumerSide, bool latest = false) noexcept {
    std::atomic<uint64_t> &cursor = consumerSide ? q.header().tail : q.header().head;
    const uint64_t value =
        latest ? cursor.fetch_add(0, std::memory_order_acquire) : cursor.load(std::memory_order_acquire);
    return static_cast<int64_t>(value - position) > 0;
}

// Whether the slot of a claimed position is unfinished: still free (producer side), or still full
// or abandoned (consumer side, which was about to step over it). Gives the state a take-over
// moves it to.
bool unfinished(const Queue &q, const SlotHeader *slot, uint64_t position, bool consumerSide, uint64_t &seq,
                uint64_t &recovered) noexcept {
    // Relaxed: only picks what to try; takeOver's CAS decides.
    seq = slot->seq.load(std::memory_order_relaxed);
    if (!consumerSide) {
        recovered = 4 * position + kAbandoned;  // the consumer's claim then skips and counts it
        return seq == 4 * position + kFree;
    }
    recovered = 4 * (position + q.capacity) + kFree;
    return seq == 4 * position + kFull || seq == 4 * position + kAbandoned;
}

bool takeOver(Queue &q, SlotHeader *slot, bool consumerSide, uint64_t stuck, uint64_t recovered) noexcept {
    // Acq_rel: acquire orders our later use of the slot after the claimant's last writes;
    // release hands the slot on as ring.hpp's publish/releaseRead would have.
    if (!slot->seq.compare_exchange_strong(stuck, recovered, std::memory_order_acq_rel, std::memory_order_relaxed))
        return false;
    if (consumerSide) {
        q.header().skipped.fetch_add(1, std::memory_order_relaxed);  // a statistic: orders nothing
        notify(q.header().not_full);
    }
    return true;
}

// Takes over position (of a side) once its slot has looked stuck for the grace period and its
// claimant is dead. True when we did.
bool recover(Queue &q, uint64_t position, bool consumerSide) noexcept {
    SlotHeader *slot = slotOf(q, position);
    uint64_t stuck, recovered;
    if (!claimed(q, position, consumerSide) || !unfinished(q, slot, position, consumerSide, stuck, recovered)) {
        q.stuckSinceNs = 0;  // simply empty or full
        return false;
    }
    const int64_t now = monotonicNs();
    if (q.stuckSinceNs == 0 || q.stuckPosition != position) {
        q.stuckPosition = position;
        q.stuckSinceNs = now;
        return false;
    }
    if (now - q.stuckSinceNs < kClaimGraceNs) return false;
    if (judgeClaimant(q, slot, position, consumerSide) != Claimant::Dead) {
        q.stuckSinceNs = now;  // alive, or maybe: ask again after another grace period
        return false;
    }
    q.stuckSinceNs = 0;
    return takeOver(q, slot, consumerSide, stuck, recovered);
}

}  // namespace

bool recoverForConsumer(Queue &q, uint64_t position) noexcept { return recover(q, position, false); }

bool recoverForProducer(Queue &q, uint64_t position) noexcept {
    if (q.policy != JOIN_SHM_MPMC || position < q.capacity) return false;  // lone consumers resume by themselves
    // The consumer of a lap ago may have died holding an element, or holding an abandoned position
    // it was about to step over; either way the position was never finished, and we count it.
    return recover(q, position - q.capacity, true);
}

bool settleIntent(Queue &q, uint64_t intent) noexcept {
    if (intent == kNoIntent) return true;
    const bool consumerSide = intent & 1;
    if (consumerSide ? !sharedConsumers(q) : !sharedProducers(q)) return true;  // claims nothing through a cursor
    for (uint64_t position = intent >> 1, n = 0; n < q.capacity; ++position, ++n) {
        if (!claimed(q, position, consumerSide, true)) return true;  // nor anything after it
        SlotHeader *slot = slotOf(q, position);
        uint64_t stuck, recovered;
        if (!unfinished(q, slot, position, consumerSide, stuck, recovered)) continue;
        switch (judgeClaimant(q, slot, position, consumerSide)) {
            case Claimant::Alive:  // its tag names a live claimant: not ours to settle
                continue;
            case Claimant::Unsure:
                return false;
            case Claimant::Dead:
                takeOver(q, slot, consumerSide, stuck, recovered);  // or somebody else just did
        }
    }
    return true;
}

}  // namespace join::shm
