// Broadcast rings: one publisher, up to max_subscribers subscribers, each of which reads every
// message published after it joined, in order.
//
// Why this shape. A broadcast ring is a queue segment (header, participant table, slots: same
// layout version, so liveness, role take-over and `join-shm ls` work as for queues) plus, between
// the participant table and the slots, one Subscriber record per admitted subscriber: the holding
// that owns it and the next position it will read (Disruptor's per-consumer sequence, Aeron's
// subscriber position). The publisher is a lone producer, its role held in producer_holder like
// SPSC's; its next position lives in the handle and is stored to head after each publish.
//
// Slots: the element, then its SlotHeader, whose seq is a seqlock word in both modes:
//   2p+1: the publisher is writing position p;  2p+2: position p is complete.
// The publisher stores 2p+1 (relaxed), a release fence, the element (relaxed 8-byte atomic stores,
// or memcpy where no reader can meet them: below), then 2p+2 (release), then head. A subscriber at
// position p reads seq (acquire): below 2p+2 means not yet published; equal: copies the element
// (relaxed 8-byte atomic loads: no C++ data race even while the publisher overwrites it), an
// acquire fence, re-reads seq: unchanged means the copy is whole. Above 2p+2, or changed: the slot
// was overwritten, the subscriber was overrun. In block mode, from the head a subscriber read at
// join on, nothing can overwrite its position (below), so it copies with a plain memcpy there (no
// race: the acquire of seq orders the publisher's stores before it, and our cursor's release orders
// our copy before the next overwrite). The publisher copies plainly too, in block mode, unless a
// subscriber is reading its history (a JOIN_OLDEST first lap, the one place a block-mode reader may
// meet a slot being written): such a subscriber sets its bit in history_readers before the join
// barrier and clears it (release) once it reaches the head it read at join. The publisher loads the
// mask (acquire) after marking its claim odd: by the barrier pairing, either it sees the bit and
// stores atomically, or the joiner sees the odd seqs and copies nothing out of those slots. A
// subscriber that dies in its history leaves the bit set (atomic stores: slower, never wrong) until
// its record's next holder clears it. A slot reserved for zero-copy is written by the caller with
// plain stores whatever the mask says; a history reader still validates what it copies out of it.
//
// Block mode: the publisher writes position p only when every subscriber's cursor is above
// p - capacity. It keeps the lowest cursor it saw (gate) and rescans the records only when the gate
// says full. A subscriber stores its cursor with release after its copies (the publisher's acquire
// in the rescan orders its overwrite after them) and wakes a gated publisher through not_full.
// Joining (Dekker): a subscriber raises subscribers_used (the rescan bound) and claims its record
// with seq_cst CASes, pays a membarrier (wait.hpp's asymmetric barrier: the publisher's rescan
// then needs no fence), then reads head and starts there. Either
// the rescan sees the record, whose cursor is then either the new one or the previous holder's
// (lower: conservative), or the joiner's head read sees everything published before the rescan,
// so it starts at or above the gate the rescan computed, and nothing the publisher may write
// before its next rescan reaches it. A JOIN_OLDEST subscriber starts a lap back and may find a slot
// of that first lap overwritten (the publisher may still be writing on the gate of a rescan that
// did not see it yet): the seqlock check catches it and, in block mode, it skips silently to the
// head it found at join. So a JOIN_OLDEST subscriber gets part of the history when the publisher
// is busy, then everything from its join on without a gap. A subscriber that gates the publisher for the grace period
// (kClaimGraceNs, as queues) is judged by its holding (pid and start time: pid reuse safe); a dead one's record is
// freed by the publisher, or reclaimed by the next subscriber to join.
//
// Overwrite mode: the publisher never looks at subscribers. An overrun subscriber returns
// -EOVERFLOW once (lost count in the detail and join_shm_lost()), and resumes at the oldest
// position it can still expect to read whole, head - capacity + 1 (the slot of head - capacity is
// the next to be overwritten; with a capacity of 1, head - 1). Overrun again before it reads
// that one, it gets -EOVERFLOW again; the counts add up.
//
// Waiting: subscribers sleep on not_empty, the publisher notifies it after each publish (one load
// unless someone sleeps; wait.hpp's protocol, one FUTEX_WAKE for all). A gated publisher sleeps on
// not_full, which subscribers notify after advancing in block mode, in slices of the grace period
// so that a dead subscriber is found without anyone waking it.
//
// Crashes: a publisher's message is visible once its seq is 2p+2; a successor resumes at head and
// steps over complete slots after it (the predecessor may have died between the seq and head
// stores), so no position is written twice with different messages. A half-written slot keeps an
// odd seq and is rewritten. Zero-copy: reserve/commit and peek/release in block mode (the peeked
// slot stays gated until release); -EOPNOTSUPP in overwrite mode, where a slot handed out could be
// overwritten under the caller. For the same reason peek lends no slot of a JOIN_OLDEST
// subscriber's first lap: it starts at the head found at join (pop delivers that history).
//
// Untrusted segment: cursors read from Subscriber records only enter distances that are clamped
// to the capacity; slot addresses come from the handle's own position; loops are bounded.
#pragma once

#include "queue.hpp"
#include "wait.hpp"

#include <cstring>

namespace join::shm {

struct Claim;

// Reads the broadcast fields of options into params and joinAt (-EINVAL with a detail when bad).
int broadcastOptions(const join_shm_options &o, uint32_t policy, Params &params, uint32_t &joinAt) noexcept;
// After the role is claimed: the publisher resumes, a subscriber takes a record (-EBUSY past
// max_subscribers).
int openBroadcast(Queue &q) noexcept;
void closeBroadcast(Queue &q) noexcept;

int broadcastClaimForWrite(Queue &q, Claim &c, uint64_t want) noexcept;
// By value, as the queue paths call them: see claimForWrite in ring.hpp.
void broadcastPublish(Queue &q, Claim c) noexcept;
int64_t broadcastPublishN(Queue &q, const unsigned char *from, uint64_t count) noexcept;
int64_t broadcastReceiveN(Queue &q, unsigned char *to, uint64_t count) noexcept;
int broadcastClaimForRead(Queue &q, Claim &c) noexcept;
void broadcastRelease(Queue &q, Claim c) noexcept;
int64_t broadcastSlice(Queue &q) noexcept;
uint64_t broadcastPending(const Queue &q) noexcept;
bool broadcastWorkAt(const Queue &q) noexcept;

// Per-subscriber view for inspection (the tool, stats): lag behind head, clamped to capacity.
uint64_t broadcastLag(const Queue &q, uint64_t position) noexcept;

}  // namespace join::shm
