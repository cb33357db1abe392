// Recovery from a peer that died holding a slot it claimed through a shared cursor:
//  - an MPSC/MPMC producer that moved head past a position and died before publishing it stalls
//    every consumer at that position: a consumer marks the slot abandoned, and it is then
//    skipped and counted like the slot of a producer closed mid-reservation;
//  - an MPMC consumer that moved tail past a position and died before freeing the slot stalls
//    the producers a lap later: a producer frees the slot again, counting the element as skipped.
// The claimant is judged by the tag it stored into the slot right after its cursor CAS: the slot
// is taken over only when the tag names this very position and role and its pid is dead. A dead
// process writes nothing more, so its slot needs no race-proofing against it; the take-over is a
// CAS only because several peers may attempt it at once. A claimant killed in the few
// instructions between its CAS and its tag store leaves a slot nobody can judge: that ring then
// waits, as for a live claimant (README, "Crashed peers"). tests/test_model.cpp checks the protocol.
#include "ring.hpp"

namespace join::shm {

namespace {

// How long a slot must look stuck before we ask whether its claimant lives (a system call or two).
constexpr int64_t kClaimGraceNs = 2'000'000;

// The slot of `position` has been seen holding stuckSeq. If that lasted long enough and its
// claimant is dead, move it to recoveredSeq. True when we did.
bool takeOver(Queue &q, SlotHeader *slot, uint64_t position, uint64_t stuckSeq, uint64_t recoveredSeq,
              bool claimedByConsumer) noexcept {
    // Relaxed: only a hint; the CAS below decides.
    if (slot->seq.load(std::memory_order_relaxed) != stuckSeq) {
        q.stuckSinceNs = 0;
        return false;
    }
    const int64_t now = monotonicNs();
    if (q.stuckSinceNs == 0 || q.stuckPosition != position) {
        q.stuckPosition = position;
        q.stuckSinceNs = now;
        return false;
    }
    const int64_t stuckFor = now - q.stuckSinceNs;
    if (stuckFor < kClaimGraceNs) return false;
    // Relaxed: the tag only names the claimant; it is acted on once that process is dead.
    const uint64_t tag = slot->claim.load(std::memory_order_relaxed);
    const auto pid = static_cast<uint32_t>(tag);
    if (pid == 0 || tag != claimTag(position, claimedByConsumer, pid)) return false;  // not (yet) tagged
    if (processAlive(pid)) {
        q.stuckSinceNs = now;  // alive but slow: ask again after another grace period
        return false;
    }
    // Acq_rel: acquire orders our later use of the slot after the claimant's last writes;
    // release hands the slot on as ring.hpp's publish/releaseRead would have.
    uint64_t expected = stuckSeq;
    const bool took =
        slot->seq.compare_exchange_strong(expected, recoveredSeq, std::memory_order_acq_rel, std::memory_order_relaxed);
    q.stuckSinceNs = 0;
    return took;
}

}  // namespace

bool recoverForConsumer(Queue &q, uint64_t position) noexcept {
    // Relaxed: a stale head can only make us wait for the next look.
    const uint64_t head = q.header().head.load(std::memory_order_relaxed);
    if (static_cast<int64_t>(head - position) <= 0) {  // nothing claimed there: simply empty
        q.stuckSinceNs = 0;
        return false;
    }
    // Abandoned: the consumer's claim then skips and counts it.
    return takeOver(q, slotOf(q, position), position, 4 * position + kFree, 4 * position + kAbandoned, false);
}

bool recoverForProducer(Queue &q, uint64_t position) noexcept {
    if (q.policy != JOIN_SHM_MPMC || position < q.capacity) return false;  // lone consumers resume by themselves
    const uint64_t previous = position - q.capacity;
    // Relaxed: as head above.
    const uint64_t tail = q.header().tail.load(std::memory_order_relaxed);
    if (static_cast<int64_t>(tail - previous) <= 0) {  // not taken by a consumer: simply full
        q.stuckSinceNs = 0;
        return false;
    }
    // The consumer may have died holding an element, or holding an abandoned position it was
    // about to step over; either way the position was never finished, and we count it.
    SlotHeader *slot = slotOf(q, position);
    // Relaxed: only picks which state to try; takeOver's CAS decides.
    const uint64_t seq = slot->seq.load(std::memory_order_relaxed);
    const uint64_t stuckSeq = seq == 4 * previous + kAbandoned ? seq : 4 * previous + kFull;
    if (!takeOver(q, slot, previous, stuckSeq, 4 * position + kFree, true)) return false;
    q.header().skipped.fetch_add(1, std::memory_order_relaxed);  // a statistic: orders nothing
    notify(q.header().not_full);
    return true;
}

}  // namespace join::shm
