// The shared segment: naming, creation (atomic: the name appears only once initialised),
// attachment with validation of an untrusted header, and removal.
#pragma once

#include "layout.hpp"

#include <climits>
#include <cstdint>

namespace join::shm {

constexpr size_t kMaxNameLength = NAME_MAX;  // one file name under /dev/shm
constexpr size_t kNameBufferSize = kMaxNameLength + 1;

struct Params {
    uint32_t policy;
    uint64_t elementSize;
    uint64_t capacity;
    // Broadcast only: 0 takes what the ring has (attach) or the default (create).
    uint32_t maxSubscribers = 0;
    uint32_t overflow = 0;
};

struct SegmentOptions {
    uint32_t mode;          // permission bits for a segment this call creates
    int64_t openTimeoutNs;  // how long to wait for a segment still initialising
    uint64_t flags;         // JOIN_SHM_PREFAULT, JOIN_SHM_MLOCK
};

struct Segment {
    Header *header = nullptr;
    Participant *participants = nullptr;  // kMaxParticipants records
    unsigned char *slots = nullptr;       // slot 0
    uint64_t mapSize = 0;
    Geometry geometry{};
    // Broadcast: the Subscriber records, and the parameters as validated at open (the header's
    // copies are untrusted afterwards).
    Subscriber *subscribers = nullptr;
    uint32_t maxSubscribers = 0;
    uint32_t overflow = 0;
};

// Checks NAME ("x" or "/x"), strips the leading slash into out, and appends suffix (may be "").
// -EINVAL with a detail for empty names, "." and "..", inner slashes and names that are too long.
int normaliseName(const char *name, const char *suffix, char (&out)[kNameBufferSize]) noexcept;

// Opens NAME (normalised), creating and initialising it when it does not exist yet.
int openSegment(const char *name, const Params &params, const SegmentOptions &options, Segment &out) noexcept;

void closeSegment(Segment &segment) noexcept;

// Removes NAME (normalised); a missing one is success.
int unlinkSegment(const char *name) noexcept;

}  // namespace join::shm
