// Whether a peer named in a segment still lives. Shared by the library (roles, recovery,
// participants) and the join-shm tool, which does not link the library.
//
// A pid alone does not name a process for long: pid_max may be 32768 and pids are reused. A
// process identity is its pid (bits 0..21: Linux never hands out pids of 2^22 or more) with its
// start time in clock ticks since boot (field 22 of /proc/PID/stat) above it. A process that has
// died is recognised as dead even when its pid now names another process: the start times differ.
// Start time 0 means "unknown" (no /proc): then the pid alone is compared. Pids are compared
// within one pid namespace: peers in another namespace look dead or alive at random, which is why
// sharing rings across pid namespaces is not supported (see README).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace join::shm {

constexpr unsigned kIdentityPidBits = 22;
constexpr uint64_t kIdentityPidMask = (uint64_t{1} << kIdentityPidBits) - 1;

constexpr uint32_t identityPid(uint64_t identity) noexcept {
    return static_cast<uint32_t>(identity & kIdentityPidMask);
}

// What /proc/PID/stat says of pid: whether it names a process that has not exited, and its start time.
struct ProcessStat {
    bool exists = false;
    bool exited = false;      // dead, or a zombie (killed, not yet reaped) with no thread left
    uint64_t startTicks = 0;  // 0 when /proc could not tell
};

inline ProcessStat readProcessStat(uint32_t pid) noexcept {
    ProcessStat s;
    if (pid == 0 || pid > kIdentityPidMask) return s;
    // Only ESRCH says "no such process"; EPERM is another user's, anything else (a sandbox
    // refusing kill) tells nothing, and /proc decides.
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return s;
    s.exists = true;
    char path[32], stat[1024] = {};
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return s;  // no /proc: trust kill()
    const ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    // The command name in parentheses may hold anything, ')' included: the state (field 3) follows
    // the last one, then the fields up to num_threads (20) and the start time (22).
    const char *p = n > 0 ? std::strrchr(stat, ')') : nullptr;
    if (!p || p[1] != ' ') return s;
    const char state = p[2];
    uint64_t threads = 0;
    p += 2;
    for (int field = 3; field < 22 && p; ++field) {
        p = std::strchr(p, ' ');
        if (!p) break;
        ++p;  // now at field + 1
        if (field + 1 == 20) threads = std::strtoull(p, nullptr, 10);
    }
    if (p) s.startTicks = std::strtoull(p, nullptr, 10);
    // A main thread that called pthread_exit shows 'Z' while the other threads still run.
    s.exited = state == 'X' || (state == 'Z' && threads <= 1);
    return s;
}

// The identity of a live process, or 0 when pid names none.
inline uint64_t processIdentity(uint32_t pid) noexcept {
    const ProcessStat s = readProcessStat(pid);
    if (!s.exists || s.exited) return 0;
    return (s.startTicks << kIdentityPidBits) | pid;
}

inline bool identityAlive(uint64_t identity) noexcept {
    const ProcessStat s = readProcessStat(identityPid(identity));
    const uint64_t start = identity >> kIdentityPidBits;
    return s.exists && !s.exited && (start == 0 || s.startTicks == 0 || s.startTicks == start);
}

// For pids recorded without a start time (the tool's view of foreign fields).
inline bool processAlive(uint32_t pid) noexcept { return pid <= kIdentityPidMask && identityAlive(pid); }

// A segment's creator, recorded as a pid and (layout 3) an identity; a writer that left no
// identity is judged by its pid alone.
inline bool creatorAlive(uint32_t pid, uint64_t identity) noexcept {
    return identityPid(identity) == pid ? identityAlive(identity) : processAlive(pid);
}

}  // namespace join::shm
