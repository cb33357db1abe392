#include "endpoint.hpp"

#include "error.hpp"
#include "pool.hpp"

#include <cstdio>

namespace join::shm {

namespace {

HandlePool<Endpoint> endpointPool;

void ringName(const char *name, const char *suffix, char (&out)[kNameBufferSize]) noexcept {
    std::snprintf(out, sizeof out, "%s%s", name, suffix);
}

}  // namespace

bool isOpenEndpoint(const Endpoint *e) noexcept { return e && e->magic == kEndpointMagic; }

int openEndpoint(Endpoint *&out, const char *name, uint32_t policy, uint32_t side, uint64_t elementSize,
                 uint64_t capacity) noexcept {
    out = nullptr;
    char ab[kNameBufferSize], ba[kNameBufferSize];
    ringName(name, "_AB", ab);
    ringName(name, "_BA", ba);
    const bool a = side == JOIN_SHM_SIDE_A;
    Endpoint *e = endpointPool.take();
    if (!e) return fail(ENOMEM, "out of memory for an endpoint handle");
    int r = openQueue(e->outbound, a ? ab : ba, policy, JOIN_SHM_PRODUCER, elementSize, capacity, nullptr);
    if (r == 0) r = openQueue(e->inbound, a ? ba : ab, policy, JOIN_SHM_CONSUMER, elementSize, capacity, nullptr);
    if (r != 0) {
        if (e->outbound) closeQueue(e->outbound);
        endpointPool.give(e);
        return r;
    }
    e->magic = kEndpointMagic;
    out = e;
    return 0;
}

void closeEndpoint(Endpoint *e) noexcept {
    e->magic = kDeadMagic;
    closeQueue(e->outbound);
    closeQueue(e->inbound);
    endpointPool.give(e);
}

int unlinkEndpoint(const char *name) noexcept {
    char ab[kNameBufferSize], ba[kNameBufferSize];
    ringName(name, "_AB", ab);
    ringName(name, "_BA", ba);
    int r = unlinkSegment(ab);
    int s = unlinkSegment(ba);
    return r != 0 ? r : s;
}

}  // namespace join::shm
