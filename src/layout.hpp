// The shared-segment layout: an ABI of its own, shared by every process that maps a ring.
// Fixed-width fields only; anything added goes into reserved space and bumps kLayoutVersion.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace join::shm {

constexpr uint64_t kMagic = 0x314d48534e494f4aULL;  // "JOINSHM1" read as little-endian bytes
// 2: claim tags in slots, cursors on separate line pairs. 3: a participant table; tags and role words
// name holdings of it instead of pids. 4: elements of up to 16 B pair their slots on a cache line.
constexpr uint32_t kLayoutVersion = 4;
constexpr size_t kCacheLine = 64;

static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free in shared memory");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "32-bit atomics must be lock-free in shared memory");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && sizeof(std::atomic<uint32_t>) == 4,
              "atomics must have the size of the value they hold");

// A futex word for one direction (not-empty for consumers, not-full for producers).
// Bit 0: somebody may be asleep (or about to sleep) on it. Bits 1..31: an epoch bumped by each wake.
struct alignas(kCacheLine) WaitWord {
    std::atomic<uint32_t> word;
    uint32_t reserved[15];
};

// Each slot: the element, then (at the next multiple of 8) its SlotHeader. The sequence number sits
// after the data, so a consumer polling it does not pull away the lines a producer is still filling
// with a multi-line element. Slots start on a cache line, or on half of one for elements of up to
// 16 B (computeGeometry). seq encodes (position, state):
//   4*pos + kFree      : free, waiting for the producer of position pos
//   4*pos + kFull      : holds the element of position pos
//   4*pos + kAbandoned : position pos was claimed and given up; consumers skip it
// A consumer frees the slot of pos by storing 4*(pos + capacity). Four codes per position (not two,
// as in a textbook ring) so that a capacity of 1 still tells "full" from "free for the next lap".
//
// claim names whoever took the slot through a shared cursor (MPSC/MPMC producers, MPMC consumers):
// claimTag() below. It lets the other side tell a claimant that died from one that is merely slow.
struct SlotHeader {
    std::atomic<uint64_t> seq;
    std::atomic<uint64_t> claim;
};
constexpr uint64_t kFree = 0, kFull = 1, kAbandoned = 2;
constexpr size_t kSlotHeaderSize = sizeof(SlotHeader);
static_assert(kSlotHeaderSize == 16, "slot header is part of the layout");

// One handle's membership of a ring (participants.hpp has the protocol). Every handle takes a
// record when it opens and frees it when it closes; a record left by a process that died is
// reused once nothing it may have claimed is unresolved.
struct alignas(kCacheLine) Participant {
    std::atomic<uint64_t> identity;    // 0: free; else processIdentity(): pid and start time
    std::atomic<uint32_t> generation;  // bumped by each new holder; its low 24 bits name the holding
    std::atomic<uint32_t> role;        // JOIN_SHM_PRODUCER or JOIN_SHM_CONSUMER, for inspection
    std::atomic<uint64_t> intent;      // kNoIntent, or intentFor(): the claim the holder is about to make
    uint64_t reserved[5];
};
static_assert(sizeof(Participant) == kCacheLine);
constexpr uint32_t kMaxParticipants = 128;     // handles open on one ring at once
constexpr uint64_t kParticipantsOffset = 512;  // the table follows the Header

// A broadcast subscriber's cursor (broadcast.cpp): who holds the record and the next position it
// will read. One line each, so a subscriber advancing does not disturb the others. Broadcast rings
// place max_subscribers of them after the participant table; queues have none.
struct alignas(kCacheLine) Subscriber {
    std::atomic<uint32_t> holding;  // 0: free; else the subscriber's holding (below)
    uint32_t reserved0;
    std::atomic<uint64_t> position;
    uint64_t reserved[6];
};
static_assert(sizeof(Subscriber) == kCacheLine);
constexpr uint32_t kMaxSubscribers = kMaxParticipants - 1;  // each subscriber is a participant, so is the publisher
constexpr uint32_t kDefaultSubscribers = 64;

// A holding: the record's index (bits 0..7) and its generation (bits 8..31); never 0, as generation 0
// is skipped. Claim tags and the single-holder role words name holdings.
constexpr uint32_t kGenerationMask = 0xffffff;
constexpr uint32_t holdingOf(uint32_t index, uint32_t generation) noexcept {
    return (generation & kGenerationMask) << 8 | index;
}
constexpr uint32_t holdingIndex(uint32_t holding) noexcept { return holding & 0xff; }
constexpr uint32_t holdingGeneration(uint32_t holding) noexcept { return holding >> 8; }

// A claim tag: bits 33..63 the position's low 31 bits, bit 32 set for a consumer, bits 0..31 the
// claimant's holding.
constexpr uint64_t kClaimByConsumer = uint64_t{1} << 32;
constexpr uint64_t claimTag(uint64_t position, bool consumer, uint32_t holding) noexcept {
    return position << 33 | (consumer ? kClaimByConsumer : 0) | holding;
}
constexpr bool tagNames(uint64_t tag, uint64_t position, bool consumer) noexcept {
    return (tag >> 32) == ((position << 1 | (consumer ? 1 : 0)) & 0xffffffff) && holdingGeneration(uint32_t(tag)) != 0;
}

// An intent: "I am about to claim from this position of head (producer) or tail (consumer)". It
// covers a lap of positions from there, more than any one claim takes.
constexpr uint64_t kNoIntent = ~uint64_t{0};
constexpr uint64_t intentFor(uint64_t position, bool consumer) noexcept { return position << 1 | (consumer ? 1 : 0); }
constexpr bool intentCovers(uint64_t intent, uint64_t position, bool consumer, uint64_t capacity) noexcept {
    return intent != kNoIntent && (intent & 1) == (consumer ? 1 : 0) && position - (intent >> 1) < capacity;
}

enum class State : uint32_t { Initialising = 0, Ready = 1 };

struct alignas(2 * kCacheLine) Header {
    // Line 0: written once by the creator before the name appears, then read-only.
    uint64_t magic;
    uint32_t version;
    uint32_t policy;
    uint64_t element_size;
    uint64_t capacity;
    uint64_t slot_stride;   // bytes from one slot to the next
    uint64_t slots_offset;  // bytes from the segment start to slot 0
    uint64_t total_size;
    std::atomic<uint32_t> state;  // State::Ready once initialised (release), checked by attachers (acquire)
    uint32_t creator_pid;

    // Line 1: the holdings of the single-holder roles (0: nobody). CAS-claimed; see queue.cpp.
    alignas(kCacheLine) std::atomic<uint32_t> producer_holder;
    std::atomic<uint32_t> consumer_holder;
    std::atomic<uint64_t> skipped;  // abandoned positions consumers stepped over
    uint64_t creator_identity;      // creator_pid with its start time (processIdentity)
    // Broadcast rings only (queues leave them 0): written once by the creator, checked on attach.
    uint32_t max_subscribers;  // Subscriber records after the participant table
    uint32_t overflow;         // JOIN_SHM_OVERFLOW_BLOCK or JOIN_SHM_OVERFLOW_OVERWRITE
    // Broadcast: one past the highest Subscriber record ever claimed, so the publisher's rescans
    // read only those (bumped by joiners before they claim; untrusted: clamped by readers).
    std::atomic<uint32_t> subscribers_used;
    uint32_t reserved1a;
    // Broadcast, block mode: bit i of this 128-bit mask is set while the holder of Subscriber record
    // i reads its history (a JOIN_OLDEST first lap), where the publisher may be overwriting slots;
    // the publisher copies with atomic stores while any bit is set (broadcast.hpp). Added with
    // broadcast rings themselves, which no library before 1.2 opens: no version bump.
    std::atomic<uint64_t> history_readers[2];
    uint64_t reserved1;

    // Lines 2-3: next position to claim for producers. Written only by producers, so a lone
    // producer keeps the line in its own cache. Cursors get a 128-byte pair each: CPUs fetch lines
    // in adjacent pairs, and a shared pair would make head and tail falsely shared after all.
    alignas(2 * kCacheLine) std::atomic<uint64_t> head;
    uint64_t reserved2[15];

    // Lines 4-5: next position to consume. Written only by consumers.
    alignas(2 * kCacheLine) std::atomic<uint64_t> tail;
    uint64_t reserved3[15];

    // Lines 6-7: read by every publish, written only when somebody sleeps.
    WaitWord not_empty;  // consumers sleep here, producers wake them
    WaitWord not_full;   // producers sleep here, consumers wake them
};

static_assert(offsetof(Header, magic) == 0);
static_assert(offsetof(Header, state) == 56);
static_assert(offsetof(Header, producer_holder) == 64);
static_assert(offsetof(Header, creator_identity) == 80);
static_assert(offsetof(Header, max_subscribers) == 88);
static_assert(offsetof(Header, history_readers) == 104);
static_assert(offsetof(Header, head) == 128);
static_assert(offsetof(Header, tail) == 256);
static_assert(offsetof(Header, not_empty) == 384);
static_assert(offsetof(Header, not_full) == 448);
static_assert(sizeof(Header) == kParticipantsOffset);

// Geometry derived from the user's parameters alone: both creator and attacher compute it and
// the attacher insists the segment agrees. Returns false when the sizes overflow.
struct Geometry {
    uint64_t header_offset;  // from a slot's start (its element) to its SlotHeader
    uint64_t slot_stride;
    uint64_t slots_offset;
    uint64_t total_size;
};
constexpr uint64_t kSubscribersOffset = kParticipantsOffset + kMaxParticipants * sizeof(Participant);

// Keep segments far below what mmap could ever hand out, so that arithmetic on them never wraps.
constexpr uint64_t kMaxSegmentSize = uint64_t{1} << 44;

// subscribers: the Subscriber records of a broadcast ring (0 for queues, whose layout it leaves alone).
inline bool computeGeometry(uint64_t elementSize, uint64_t capacity, Geometry &g, uint32_t subscribers = 0) noexcept {
    uint64_t headerOffset = 0, raw = 0, slots = 0, total = 0;
    if (__builtin_add_overflow(elementSize, uint64_t{7}, &headerOffset)) return false;
    headerOffset &= ~uint64_t{7};
    if (__builtin_add_overflow(headerOffset, kSlotHeaderSize + kCacheLine - 1, &raw)) return false;
    // Each slot starts on its own cache line, so a producer filling slot i+1 does not disturb the
    // consumer reading slot i. Except for elements of up to 16 B: their slots (32 B with the header)
    // pair up on a line. There the line moved per message is the cost, not the sharing: single calls
    // moved 1.4-1.9x as many 8 B messages a second (1 and 2 producers, every policy) and 8 B round
    // trips took 6-12% less (bench/ab_libs.py and round-trip A/B runs, 2026-12-04). Elements stay
    // aligned for any type of their size (32 B boundaries).
    const uint64_t stride =
        headerOffset + kSlotHeaderSize <= kCacheLine / 2 ? kCacheLine / 2 : raw / kCacheLine * kCacheLine;
    if (__builtin_mul_overflow(stride, capacity, &slots)) return false;
    const uint64_t slotsOffset =
        kParticipantsOffset + kMaxParticipants * sizeof(Participant) + uint64_t{subscribers} * sizeof(Subscriber);
    if (__builtin_add_overflow(slots, slotsOffset, &total)) return false;
    if (total > kMaxSegmentSize) return false;
    g = {headerOffset, stride, slotsOffset, total};
    return true;
}

}  // namespace join::shm
