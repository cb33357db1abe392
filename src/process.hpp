// Whether a peer named by pid in a segment still lives. Shared by the library (roles, recovery)
// and the join-shm tool, which does not link the library.
#pragma once

#include <signal.h>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace join::shm {

// A zombie (killed, not yet reaped) counts as dead. Pids that kill() would read as "every
// process" (0, or above INT32_MAX) are dead too. Pids are compared within one pid namespace: peers
// in another namespace look dead or alive at random, which is why sharing rings across pid
// namespaces is not supported (see README).
inline bool processAlive(uint32_t pid) noexcept {
    if (pid == 0 || pid > static_cast<uint32_t>(INT32_MAX)) return false;
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return false;
    char path[32], stat[512] = {};
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *file = std::fopen(path, "re");
    if (!file) return true;  // no /proc: trust kill()
    const size_t n = std::fread(stat, 1, sizeof stat - 1, file);
    std::fclose(file);
    // The command name in parentheses may hold anything, ')' included: the state follows the last one.
    const char *end = n ? std::strrchr(stat, ')') : nullptr;
    return !(end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X'));
}

}  // namespace join::shm
