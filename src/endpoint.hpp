// An endpoint: side A produces into NAME_AB and consumes NAME_BA; side B the other way round.
#pragma once

#include "queue.hpp"

namespace join::shm {

constexpr uint32_t kEndpointMagic = 0x4a53450a;

struct Endpoint {
    uint32_t magic = 0;
    Queue *outbound = nullptr;
    Queue *inbound = nullptr;
};

// name must be normalised already, without the suffix.
int openEndpoint(Endpoint *&out, const char *name, uint32_t policy, uint32_t side, uint64_t elementSize,
                 uint64_t capacity) noexcept;
void closeEndpoint(Endpoint *e) noexcept;
bool isOpenEndpoint(const Endpoint *e) noexcept;
int unlinkEndpoint(const char *name) noexcept;

}  // namespace join::shm
