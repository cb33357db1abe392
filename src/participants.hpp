// Who takes part in a ring, and how a peer tells whether the claimant of a stuck slot is dead.
//
// Every handle holds a record in the segment's participant table (layout.hpp) from open to close:
// its process identity (pid and start time, so a reused pid is not mistaken for the process that
// died) and a generation that names this holding. Claim tags in slots and the single-holder role
// words name holdings, so a holder's liveness is always judged from its record.
//
// The window this closes. MPSC/MPMC producers and MPMC consumers claim positions with a CAS on a
// shared cursor and then tag the slots they took. A claimant killed between the two (and the CAS,
// the slowest instruction of a claim, is exactly where a signal tends to land) would leave slots
// nobody could judge. So a claimant first stores an intent in its own record ("about to claim from
// position X of head/tail"), then makes the CAS a release, then tags, then drops the intent
// (release). A peer that finds position P claimed but unfinished for the grace period:
//   1. reads the cursor with acquire and sees it past P. Every change of a shared cursor is a CAS,
//      so it now sees the intent that P's winner stored before its CAS, or something newer;
//   2. reads the slot's tag: if it names P, P's claimant is that holding, dead or alive;
//   3. else reads every record (acquire), then the tag again. A winner drops its intent only after
//      tagging, so either some record's intent still covers P or the re-read tag names P;
//   4. still untagged: P is given up only when at least one record covers it and every record that
//      covers it is dead. A loser of the CAS whose stale intent also covers P delays this while it
//      lives (it replaces its intent on its next attempt); if it is dead too, both are.
// Tags are never stored before the CAS: a loser's late tag could overwrite the winner's.
// A record left by a dead holder is reused only once every position its intent covers is settled
// (claimed by nobody, finished, tagged, or taken over right then), so an intent never vanishes
// while a slot depends on it. tests/test_model.cpp checks the protocol, tests/test_killsweep.cpp
// kills claimants at every instruction.
//
// Limits: kMaxParticipants (128) handles per ring at once (-EBUSY past it); an intent covers a lap
// from its position, so positions are assumed below 2^63; a generation has 24 bits, so a tag
// could be misread as alive (a stall, never a loss) only if its record changed hands 2^24 times
// while the tagged slot stayed stuck. A live process that is stopped (SIGSTOP, a debugger) with a
// stale intent delays take-overs within a lap of that position until it resumes: it is alive.
#pragma once

#include "queue.hpp"

namespace join::shm {

// How long a peer must look stuck (a slot claimed and unfinished, a subscriber gating the
// publisher) before we ask whether it lives: liveness costs system calls.
constexpr int64_t kClaimGraceNs = 2'000'000;

// At open: takes a free record, or one whose holder died and whose claims are settled. -EBUSY
// with a detail when all are held.
int joinParticipants(Queue &q) noexcept;
// At close, by the process that opened the handle.
void leaveParticipants(Queue &q) noexcept;

bool holdingAlive(const Queue &q, uint32_t holding) noexcept;
uint32_t holdingPid(const Queue &q, uint32_t holding) noexcept;  // 0 when it names no current holding

// The verdict on the claimant of position P, whose slot is claimed through the cursor of one side
// and unfinished: Dead (take it over), Alive (its tag names a live holding), or Unsure (a live
// intent covers it, or nothing names it: wait).
enum class Claimant { Dead, Alive, Unsure };
Claimant judgeClaimant(const Queue &q, const SlotHeader *slot, uint64_t position, bool consumerSide) noexcept;

// The hot half of the protocol, on the claimant's side (ring.hpp).
inline void announceClaim(Queue &q, uint64_t position, bool consumerSide) noexcept {
    // The cursor CAS that follows is a release and orders this store before it. Release here too
    // (free on x86): a judge that reads this newer intent instead of our dropped one must still
    // see the tags we stored before (C++20 no longer lets a relaxed store extend dropIntent's
    // release sequence).
    q.self->intent.store(intentFor(position, consumerSide), std::memory_order_release);
}
inline void dropIntent(Queue &q) noexcept {
    // Release: pairs with judgeClaimant's acquire; whoever sees the intent gone sees our tags.
    q.self->intent.store(kNoIntent, std::memory_order_release);
}

}  // namespace join::shm
