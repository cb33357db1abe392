// Reading join-shm segments for the `join-shm` tool, without trusting them and without changing them.
// Segments are never mapped (a file truncated under us would raise SIGBUS): the header is pread into a
// private copy and every size in it is checked against the file before anything is derived from it.
#pragma once

#include "../layout.hpp"
#include "../process.hpp"

#include <sys/stat.h>
#include <cstdint>
#include <string>
#include <vector>

namespace join::shm::cli {

// The header as the file holds it, unvalidated.
struct Fields {
    uint64_t magic = 0;
    uint32_t version = 0, policy = 0;
    uint64_t elementSize = 0, capacity = 0, slotStride = 0, slotsOffset = 0, totalSize = 0;
    uint32_t state = 0, creatorPid = 0, producerHolding = 0, consumerHolding = 0;
    uint64_t creatorIdentity = 0;
    uint64_t skipped = 0, head = 0, tail = 0;
    uint32_t notEmpty = 0, notFull = 0;         // futex words; bit 0: somebody sleeps on it
    uint32_t maxSubscribers = 0, overflow = 0;  // broadcast rings
};

// A broadcast subscriber record in use: its holder (through the participant table) and its lag.
struct Subscriber {
    uint32_t index = 0;  // in the subscriber records
    uint32_t pid = 0;    // 0 when its holding names no record in use
    bool alive = false;
    uint64_t lag = 0;  // head - its position, clamped to [0, capacity]
};

// A record in use in the segment's participant table: a handle open on the ring, or left by a
// process that died with it open. Every field is as read, reduced to its defined bits where the
// layout says so; nothing in it is used as an index.
struct Participant {
    uint32_t index = 0;       // in the table, < kMaxParticipants
    uint32_t role = 0;        // 1 producer, 2 consumer (as join_shm_role); anything else as read
    uint32_t generation = 0;  // its 24 bits
    uint32_t pid = 0;         // identityPid(identity)
    uint64_t startTicks = 0;  // the rest of the identity: the process's start time (0: unknown)
    bool alive = false;       // identityAlive(identity): a reused pid reads as dead
    uint64_t intent = kNoIntent;
    bool intentPending() const { return intent != kNoIntent; }
};

// Who holds a role, as far as the segment records it.
struct Role {
    bool many = false;  // the policy lets many processes hold it: holders are the participants in that role
    uint32_t word = 0;  // a single-holder role: its holding as read (0: nobody)
    // many: every participant in the role, by index; single: the one the word names, if it names a
    // record in use (a word that names none is a holder gone without letting go).
    std::vector<Participant> holders;
};

// Slot states counted by `stat` (bounded: only for rings of at most kSlotSummaryLimit slots).
constexpr uint64_t kSlotSummaryLimit = 65536;
struct SlotSummary {
    bool done = false;
    std::string whyNot;  // when not done
    uint64_t free = 0, full = 0, abandoned = 0;
    uint64_t inconsistent = 0;  // a code of 3, or a position that does not belong to the slot
};

enum class Kind {
    Missing,     // no such name
    NotRegular,  // a FIFO, device, directory, symlink...: never opened
    Unreadable,  // open or read failed (EACCES...)
    Foreign,     // a regular file without the join-shm magic: another program's
    Ring,        // carries the magic; see Segment::state
};
enum class RingState { Ready, Initialising, Corrupt };

struct Segment {
    std::string name;
    Kind kind = Kind::Missing;
    std::string problem;  // Missing/Unreadable: the OS error; NotRegular: the file type
    bool haveStat = false;
    struct stat st {};
    bool haveHeader = false;  // the whole header could be read (fields below are meaningful)
    Fields f;
    RingState state = RingState::Corrupt;
    std::string corruptWhy;
    // Derived from a Ready, consistent header only.
    Geometry geometry{};
    uint64_t pending = 0;                   // head - tail, clamped to [0, capacity]: a snapshot
    std::vector<Participant> participants;  // the records in use, by index
    std::vector<Subscriber> subscribers;    // broadcast rings: the subscriber records in use
    bool participantsShort = false;         // the file shrank while the table was read
    Role producer, consumer;
    bool consumersSleep = false, producersSleep = false;
    bool creatorAlive = false;
    SlotSummary slots;
};

// Inspects NAME in the directory open as dirFd. Never fails: what went wrong is in the result.
Segment inspect(int dirFd, const std::string &name, bool summariseSlots);

// Whether the first eight bytes of NAME (a regular file, opened without following links) are the
// join-shm magic. For `rm`, which removes only join-shm segments unless forced.
bool carriesMagic(int dirFd, const std::string &name);

const char *policyName(uint32_t policy);  // "SPSC", "MPSC", "MPMC" or "?"
const char *kindName(Kind kind);          // "missing", "not a regular file", "unreadable", "not join-shm", "ring"
const char *stateName(RingState state);   // "ready", "initialising", "corrupt"

// The base name X when NAME is X_AB or X_BA; empty otherwise.
std::string endpointBase(const std::string &name);

}  // namespace join::shm::cli
