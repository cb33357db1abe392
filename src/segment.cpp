#include "segment.hpp"

#include "error.hpp"
#include "process.hpp"
#include "wait.hpp"

#include <join/shm.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace join::shm {

namespace {

// Where glibc's shm_open keeps POSIX shared memory on Linux. Opening files there directly is what
// shm_open does, and lets creation use O_TMPFILE + linkat.
constexpr const char *kShmDir = "/dev/shm";
constexpr int64_t kDefaultOpenTimeoutNs = 1'000'000'000;

const char *policyName(uint64_t policy) noexcept {
    switch (policy) {
        case JOIN_SHM_SPSC:
            return "SPSC";
        case JOIN_SHM_MPSC:
            return "MPSC";
        case JOIN_SHM_MPMC:
            return "MPMC";
        case JOIN_SHM_BROADCAST:
            return "BROADCAST";
        default:
            return "unknown";
    }
}

const char *overflowName(uint32_t overflow) noexcept {
    return overflow == JOIN_SHM_OVERFLOW_BLOCK       ? "block"
           : overflow == JOIN_SHM_OVERFLOW_OVERWRITE ? "overwrite"
                                                     : "unknown";
}

struct Path {
    char text[sizeof "/dev/shm/" + kNameBufferSize];
    explicit Path(const char *name) noexcept { std::snprintf(text, sizeof text, "%s/%s", kShmDir, name); }
};

int mapSegment(int fd, uint64_t size, const SegmentOptions &options, Segment &out) noexcept {
    int flags = MAP_SHARED | ((options.flags & JOIN_SHM_PREFAULT) ? MAP_POPULATE : 0);
    void *base = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (base == MAP_FAILED)
        return fail(errno, "cannot map %llu bytes: %s", (unsigned long long)size, std::strerror(errno));
    if ((options.flags & JOIN_SHM_MLOCK) && mlock(base, size) != 0) {
        int err = errno;
        munmap(base, size);
        return fail(err, "cannot lock %llu bytes in memory: %s", (unsigned long long)size, std::strerror(err));
    }
    out.header = static_cast<Header *>(base);
    out.participants = reinterpret_cast<Participant *>(static_cast<unsigned char *>(base) + kParticipantsOffset);
    out.slots = static_cast<unsigned char *>(base) + out.geometry.slots_offset;
    out.subscribers = out.maxSubscribers
                          ? reinterpret_cast<Subscriber *>(static_cast<unsigned char *>(base) + kSubscribersOffset)
                          : nullptr;
    out.mapSize = size;
    return 0;
}

// Creates an unnamed file, initialises it fully, then links it under NAME: other processes can
// only ever see a finished segment, and a creator that dies midway leaves nothing behind.
// Returns -EEXIST (without a detail) when another process linked the name first.
int createSegment(const char *name, const Params &params, const SegmentOptions &options, Segment &out) noexcept {
    mode_t mode = options.mode ? static_cast<mode_t>(options.mode & 07777) : 0600;
    int fd = open(kShmDir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
    if (fd < 0) return fail(errno, "cannot create a segment in %s: %s", kShmDir, std::strerror(errno));
    int r = 0;
    // The umask would silently narrow the mode the caller asked for. fallocate reserves every page
    // now: a full /dev/shm is an -ENOSPC here rather than a SIGBUS on first touch.
    if (fchmod(fd, mode) != 0 || fallocate(fd, 0, 0, static_cast<off_t>(out.geometry.total_size)) != 0) {
        r = fail(errno, "cannot size segment \"%s\" to %llu bytes: %s", name,
                 (unsigned long long)out.geometry.total_size, std::strerror(errno));
    } else if ((r = mapSegment(fd, out.geometry.total_size, options, out)) == 0) {
        Header &h = *out.header;  // the file is fresh and zero-filled
        h.magic = kMagic;
        h.version = kLayoutVersion;
        h.policy = params.policy;
        h.element_size = params.elementSize;
        h.capacity = params.capacity;
        h.slot_stride = out.geometry.slot_stride;
        h.slots_offset = out.geometry.slots_offset;
        h.total_size = out.geometry.total_size;
        h.creator_pid = static_cast<uint32_t>(getpid());
        h.creator_identity = processIdentity(h.creator_pid);
        h.max_subscribers = out.maxSubscribers;
        h.overflow = out.overflow;
        for (uint32_t i = 0; i < kMaxParticipants; ++i)
            out.participants[i].intent.store(kNoIntent, std::memory_order_relaxed);  // zero would claim position 0
        for (uint64_t i = 0; i < params.capacity; ++i) {
            auto *slot =
                reinterpret_cast<SlotHeader *>(out.slots + i * out.geometry.slot_stride + out.geometry.header_offset);
            // Broadcast seqs count 2 per position (broadcast.hpp): 0 is "nothing written yet".
            slot->seq.store(params.policy == JOIN_SHM_BROADCAST ? 0 : 4 * i + kFree, std::memory_order_relaxed);
        }
        // Release: everything above is visible to whoever reads Ready with acquire (attachSegment).
        h.state.store(static_cast<uint32_t>(State::Ready), std::memory_order_release);

        char procPath[64];
        std::snprintf(procPath, sizeof procPath, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, procPath, AT_FDCWD, Path(name).text, AT_SYMLINK_FOLLOW) != 0) {
            r = errno == EEXIST ? -EEXIST
                                : fail(errno, "cannot publish segment \"%s\": %s", name, std::strerror(errno));
            closeSegment(out);
        }
    }
    close(fd);
    return r;
}

uint64_t readU64(const unsigned char *raw, size_t offset) noexcept {
    uint64_t v;
    std::memcpy(&v, raw + offset, sizeof v);
    return v;
}
uint32_t readU32(const unsigned char *raw, size_t offset) noexcept {
    uint32_t v;
    std::memcpy(&v, raw + offset, sizeof v);
    return v;
}

// A broadcast ring's own parameters: within bounds, and as asked where the opener asked (0: take
// the ring's). The geometry is then the one they give.
int attachBroadcast(const unsigned char *raw, const char *name, const Params &params, Segment &out) noexcept {
    if (params.policy != JOIN_SHM_BROADCAST) return 0;
    const uint32_t subscribers = readU32(raw, offsetof(Header, max_subscribers));
    const uint32_t overflow = readU32(raw, offsetof(Header, overflow));
    if (subscribers == 0 || subscribers > kMaxSubscribers ||
        (overflow != JOIN_SHM_OVERFLOW_BLOCK && overflow != JOIN_SHM_OVERFLOW_OVERWRITE))
        return fail(EPROTO, "segment \"%s\" has a corrupt header (max_subscribers %u, overflow %u)", name, subscribers,
                    overflow);
    if (params.maxSubscribers && params.maxSubscribers != subscribers)
        return fail(EINVAL, "segment \"%s\" has max_subscribers %u, opened with %u", name, subscribers,
                    params.maxSubscribers);
    if (params.overflow && params.overflow != overflow)
        return fail(EINVAL, "segment \"%s\" has overflow mode %s, opened with %s", name, overflowName(overflow),
                    overflowName(params.overflow));
    out.maxSubscribers = subscribers;
    out.overflow = overflow;
    computeGeometry(params.elementSize, params.capacity, out.geometry, subscribers);  // fits: checked at open
    return 0;
}

// Validates an existing segment before mapping it. The header is read with pread into a private
// copy: the file may be short, truncated meanwhile, or hostile, and nothing of it is trusted.
// Returns, without a detail, -EINPROGRESS while a valid header is not yet marked ready, and
// -ESTALE when it never will be because its creator died.
int attachSegment(int fd, const char *name, const Params &params, const SegmentOptions &options,
                  Segment &out) noexcept {
    struct stat st;
    if (fstat(fd, &st) != 0) return fail(errno, "cannot stat segment \"%s\": %s", name, std::strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(EPROTO, "\"%s\" is not a join-shm segment (not a regular file)", name);
    // Another user's segment could be made to lie in ways ours cannot; attach only when asked to.
    if (st.st_uid != geteuid() && !(options.flags & JOIN_SHM_ALLOW_OTHER_OWNER))
        return fail(EACCES,
                    "segment \"%s\" belongs to uid %u, not to this process's uid %u (see JOIN_SHM_ALLOW_OTHER_OWNER)",
                    name, (unsigned)st.st_uid, (unsigned)geteuid());
    alignas(Header) unsigned char raw[sizeof(Header)];
    ssize_t got = st.st_size >= static_cast<off_t>(sizeof raw) ? pread(fd, raw, sizeof raw, 0) : 0;
    if (got != static_cast<ssize_t>(sizeof raw))
        return fail(EPROTO, "\"%s\" is not a join-shm segment (%lld bytes, too short for a header)", name,
                    (long long)st.st_size);
    if (readU64(raw, offsetof(Header, magic)) != kMagic)
        return fail(EPROTO, "\"%s\" is not a join-shm segment (bad magic)", name);
    uint32_t version = readU32(raw, offsetof(Header, version));
    if (version != kLayoutVersion)
        return fail(EPROTO, "segment \"%s\" has layout version %u, this library reads version %u", name, version,
                    kLayoutVersion);
    const uint32_t state = readU32(raw, offsetof(Header, state));
    if (state != static_cast<uint32_t>(State::Ready) && state != static_cast<uint32_t>(State::Initialising))
        return fail(EPROTO, "segment \"%s\" has a corrupt header (state %u)", name, state);
    if (state == static_cast<uint32_t>(State::Initialising)) {
        // Our own creators link the name only once the segment is ready; this one was made by
        // something else (an older writer, a crash in a foreign tool). Nobody can hold a segment
        // that never became ready, so once its creator is gone it is ours to replace.
        return creatorAlive(readU32(raw, offsetof(Header, creator_pid)),
                            readU64(raw, offsetof(Header, creator_identity)))
                   ? -EINPROGRESS
                   : -ESTALE;
    }

    uint32_t policy = readU32(raw, offsetof(Header, policy));
    uint64_t elementSize = readU64(raw, offsetof(Header, element_size));
    uint64_t capacity = readU64(raw, offsetof(Header, capacity));
    if (policy != params.policy)
        return fail(EINVAL, "segment \"%s\" has policy %s, opened as %s", name, policyName(policy),
                    policyName(params.policy));
    if (elementSize != params.elementSize)
        return fail(EINVAL, "segment \"%s\" has element size %llu, opened with %llu", name,
                    (unsigned long long)elementSize, (unsigned long long)params.elementSize);
    if (capacity != params.capacity)
        return fail(EINVAL, "segment \"%s\" has capacity %llu, opened with %llu", name, (unsigned long long)capacity,
                    (unsigned long long)params.capacity);
    if (int r = attachBroadcast(raw, name, params, out)) return r;
    const Geometry &g = out.geometry;
    if (readU64(raw, offsetof(Header, slot_stride)) != g.slot_stride ||
        readU64(raw, offsetof(Header, slots_offset)) != g.slots_offset ||
        readU64(raw, offsetof(Header, total_size)) != g.total_size)
        return fail(EPROTO, "segment \"%s\" has a corrupt header (geometry does not match its parameters)", name);
    if (static_cast<uint64_t>(st.st_size) != g.total_size)
        return fail(EPROTO, "segment \"%s\" is %lld bytes, its parameters need %llu", name, (long long)st.st_size,
                    (unsigned long long)g.total_size);
    int r = mapSegment(fd, g.total_size, options, out);
    // Acquire pairs with the creator's release of Ready: the initialised slots are visible to us.
    if (r == 0) (void)out.header->state.load(std::memory_order_acquire);
    return r;
}

// Removes a stale segment: unlinks name only if it still names the file open as fd (a racing
// opener may have replaced it already, and theirs must stay). The check and the unlink happen
// under an exclusive flock of the stale file, so of several openers that found it stale one
// removes it, and the others, checking under the same lock, find the name gone or naming the
// replacement and leave it. Without the lock a replacement linked between another opener's check
// and its unlink was removed, and its openers held an unnamed ring (test_crash's sixteen racing
// openers hit that about once in 60 runs). The lock is only tried: a holder (alive only for these
// few system calls, or a hostile process) makes us go round again, within open's deadline.
// -EINPROGRESS to go round again.
int unlinkIfSame(const char *name, int fd) noexcept {
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) return -EINPROGRESS;
    struct stat opened, named;
    int r = -EINPROGRESS;
    if (fstat(fd, &opened) == 0 && stat(Path(name).text, &named) == 0 && opened.st_ino == named.st_ino &&
        opened.st_dev == named.st_dev && unlink(Path(name).text) != 0 && errno != ENOENT)
        r = fail(errno, "segment \"%s\" was left half-initialised by a process that died, and removing it failed: %s",
                 name, std::strerror(errno));
    flock(fd, LOCK_UN);
    return r;
}

}  // namespace

int normaliseName(const char *name, const char *suffix, char (&out)[kNameBufferSize]) noexcept {
    if (!name) return fail(EINVAL, "the name is NULL");
    if (*name == '/') ++name;
    size_t length = std::strlen(name), suffixLength = std::strlen(suffix);
    if (length == 0) return fail(EINVAL, "the name is empty");
    if (std::strchr(name, '/')) return fail(EINVAL, "the name \"%s\" has a '/' after its first character", name);
    if (!std::strcmp(name, ".") || !std::strcmp(name, ".."))
        return fail(EINVAL, "the name \"%s\" is reserved by the file system", name);
    if (length + suffixLength > kMaxNameLength)
        return fail(EINVAL, "the name is %zu characters long, at most %zu are allowed", length,
                    kMaxNameLength - suffixLength);
    std::memcpy(out, name, length);
    std::memcpy(out + length, suffix, suffixLength + 1);
    return 0;
}

int openSegment(const char *name, const Params &params, const SegmentOptions &options, Segment &out) noexcept {
    out = Segment{};
    if (params.policy == JOIN_SHM_BROADCAST) {  // as created; an attach takes the ring's own
        out.maxSubscribers = params.maxSubscribers ? params.maxSubscribers : kDefaultSubscribers;
        out.overflow = params.overflow ? params.overflow : JOIN_SHM_OVERFLOW_BLOCK;
    }
    // With the most subscribers a ring may have: whatever an attach finds then fits too.
    Geometry largest;
    if (!computeGeometry(params.elementSize, params.capacity, out.geometry, out.maxSubscribers) ||
        (params.policy == JOIN_SHM_BROADCAST &&
         !computeGeometry(params.elementSize, params.capacity, largest, kMaxSubscribers)))
        return fail(EINVAL, "element size %llu times capacity %llu is too large for a segment",
                    (unsigned long long)params.elementSize, (unsigned long long)params.capacity);
    const int64_t timeout = options.openTimeoutNs > 0 ? options.openTimeoutNs : kDefaultOpenTimeoutNs;
    const int64_t deadline = monotonicNs() + timeout;
    int staleRemoved = 0;
    for (;;) {
        int fd = open(Path(name).text, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        bool retryAtOnce = false;
        if (fd >= 0) {
            int r = attachSegment(fd, name, params, options, out);
            if (r == -ESTALE) {
                r = unlinkIfSame(name, fd);  // then create it afresh, or attach to a replacement
                // Past the deadline only a few times: somebody planting stale segments in a loop
                // must not keep open from returning.
                retryAtOnce = ++staleRemoved <= 4;
            }
            close(fd);
            if (r != -EINPROGRESS) return r;
        } else if (errno != ENOENT) {
            return fail(errno, "cannot open segment \"%s\": %s", name, std::strerror(errno));
        } else {
            int r = createSegment(name, params, options, out);
            if (r != -EEXIST) return r;
            // Another process linked the name first: attach to theirs at once.
        }
        if (!retryAtOnce && monotonicNs() >= deadline)
            return fail(ETIMEDOUT, "segment \"%s\" was still being initialised after %lld ms", name,
                        (long long)(timeout / 1'000'000));
        if (fd >= 0 && !retryAtOnce) pauseBriefly();
    }
}

void closeSegment(Segment &segment) noexcept {
    if (segment.header) munmap(segment.header, segment.mapSize);
    // The geometry stays: it belongs to the parameters, and a creator that lost the race to
    // link its segment goes on to attach with it.
    segment.header = nullptr;
    segment.participants = nullptr;
    segment.slots = nullptr;
    segment.subscribers = nullptr;
    segment.mapSize = 0;
}

int unlinkSegment(const char *name) noexcept {
    if (unlink(Path(name).text) == 0 || errno == ENOENT) return 0;
    return fail(errno, "cannot unlink segment \"%s\": %s", name, std::strerror(errno));
}

}  // namespace join::shm
