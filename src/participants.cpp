#include "participants.hpp"

#include "error.hpp"
#include "ring.hpp"

namespace join::shm {

namespace {

Participant &recordAt(const Queue &q, uint32_t index) noexcept { return q.segment.participants[index]; }

uint32_t nextGeneration(uint32_t generation) noexcept {
    generation = (generation + 1) & kGenerationMask;
    return generation ? generation : 1;  // 0 names no holding
}

}  // namespace

int joinParticipants(Queue &q) noexcept {
    const uint64_t self = currentIdentity();
    // First a free record; failing that, one whose holder died (that costs a look into /proc each).
    for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t i = 0; i < kMaxParticipants; ++i) {
            Participant &r = recordAt(q, i);
            // Acquire: pairs with leaveParticipants' release (the last holder's finishes are done).
            uint64_t seen = r.identity.load(std::memory_order_acquire);
            if (seen != 0 &&
                (pass == 0 || identityAlive(seen) || !settleIntent(q, r.intent.load(std::memory_order_acquire))))
                continue;
            // Acq_rel: acquire as above; release is not needed by anyone but costs nothing here.
            if (!r.identity.compare_exchange_strong(seen, self, std::memory_order_acq_rel, std::memory_order_relaxed))
                continue;
            r.intent.store(kNoIntent, std::memory_order_relaxed);  // the dead holder's, settled above
            r.role.store(q.role, std::memory_order_relaxed);       // for inspection only
            const uint32_t generation = nextGeneration(r.generation.load(std::memory_order_relaxed));
            // Release: whoever reads this generation (acquire, identityOfHolding) sees our identity.
            // Until this store an old holding of the record resolves to us: a judge then waits a
            // little longer, and an opener may get a passing -EBUSY, never a false "dead".
            r.generation.store(generation, std::memory_order_release);
            q.self = &r;
            q.holding = holdingOf(i, generation);
            return 0;
        }
    }
    return fail(EBUSY, "segment \"%s\" has %u handles open already, the most one ring admits", q.name,
                kMaxParticipants);
}

void leaveParticipants(Queue &q) noexcept {
    if (!q.self) return;
    q.self->intent.store(kNoIntent, std::memory_order_release);  // release: as dropIntent
    uint64_t self = currentIdentity();
    // Release: our finishes (publish, frees) happen before the next holder's acquire in joinParticipants.
    q.self->identity.compare_exchange_strong(self, 0, std::memory_order_release, std::memory_order_relaxed);
    q.self = nullptr;
}

namespace {

// The identity of a holding's record while that holding lasts, else 0.
uint64_t identityOfHolding(const Queue &q, uint32_t holding) noexcept {
    const uint32_t index = holdingIndex(holding);
    if (index >= kMaxParticipants || holdingGeneration(holding) == 0) return 0;
    const Participant &r = recordAt(q, index);
    // Acquire: pairs with joinParticipants' release of the generation.
    if ((r.generation.load(std::memory_order_acquire) & kGenerationMask) != holdingGeneration(holding)) return 0;
    // Acquire: pairs with leaveParticipants' release, so reading 0 orders the holder's last
    // finishes before a take-over we base on it.
    return r.identity.load(std::memory_order_acquire);
}

}  // namespace

bool holdingAlive(const Queue &q, uint32_t holding) noexcept {
    const uint64_t identity = identityOfHolding(q, holding);
    return identity != 0 && identityAlive(identity);
}

uint32_t holdingPid(const Queue &q, uint32_t holding) noexcept { return identityPid(identityOfHolding(q, holding)); }

Claimant judgeClaimant(const Queue &q, const SlotHeader *slot, uint64_t position, bool consumerSide) noexcept {
    // Relaxed: only the winner of position tags it, so any tag naming it is the claimant's.
    uint64_t tag = slot->claim.load(std::memory_order_relaxed);
    if (!tagNames(tag, position, consumerSide)) {
        bool covered = false;
        for (uint32_t i = 0; i < kMaxParticipants; ++i) {
            const Participant &r = recordAt(q, i);
            // Acquire: a free record covers nothing (its holder finished everything before leaving,
            // and this pairs with that release).
            const uint64_t identity = r.identity.load(std::memory_order_acquire);
            if (identity == 0) continue;
            // Acquire: pairs with dropIntent's release: an intent seen dropped means the tag is visible.
            if (!intentCovers(r.intent.load(std::memory_order_acquire), position, consumerSide, q.capacity)) continue;
            if (identityAlive(identity)) return Claimant::Unsure;  // may hold it right now
            covered = true;
        }
        // The re-read that matters: ordered after the acquires above, it sees the tag of a winner
        // whose intent we found dropped or replaced.
        tag = slot->claim.load(std::memory_order_relaxed);
        if (!tagNames(tag, position, consumerSide)) return covered ? Claimant::Dead : Claimant::Unsure;
    }
    return holdingAlive(q, static_cast<uint32_t>(tag)) ? Claimant::Alive : Claimant::Dead;
}

}  // namespace join::shm
