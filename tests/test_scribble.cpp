// Hostile memory (CONTRACT.md §3, "Untrusted memory"): while another process overwrites random
// words of a ring's segment, header included, with random and "nasty" values (0, ~0, counters
// about to wrap, values one off or one lap off), producers and consumers keep making the
// non-blocking, short timed and zero-copy calls, and now and then close and reopen. Every call
// must return promptly with a code from its allowed set, counts must stay within [0, capacity],
// zero-copy pointers must be slots of the ring, and closing must work afterwards. Nothing is
// required of the data: it is corrupt.
//
// The scribbler is always a process of its own: its stores race with the library's accesses by
// design, which a sanitizer would rightly report within one process. The participants run as
// threads of one child process or as child processes; the test itself only watches, so a call
// that hangs is reported by name and its process killed, never left to hang the test.
//
// Deterministic: each participant and the scribbler draw from fixed seeds (the interleaving is
// up to the scheduler). JOIN_SHM_STRESS_SCALE scales the number of calls.
#include "common.hpp"
#include "stress.hpp"

#include "../src/layout.hpp"  // which words of the segment are worth aiming at

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace layout = join::shm;
using stress::Mode;
using stress::nowNs;

constexpr uint64_t kElementSize = 20;            // not a multiple of 8: the slot header sits at 24
constexpr uint64_t kCapacity = 6;                // not a power of two: positions are reduced by division
constexpr int64_t kCallLimitNs = 2'000'000'000;  // far above any call's own bound
constexpr int64_t kShortTimeoutNs = 200'000;
constexpr int64_t kOpenTimeoutNs = 2'000'000;  // a header stuck "initialising" costs 2 ms
constexpr unsigned kMaxBatch = 4;
constexpr unsigned kCallsAfterScribbling = 64;

enum Call : int {
    kNoCall,
    kOpen,
    kClose,
    kTryPush,
    kTimedPush,
    kPushN,
    kReserve,
    kCommit,
    kTryPop,
    kTimedPop,
    kPopN,
    kPeek,
    kRelease,
    kTimedReserve,
    kTimedPeek,
    kCancel,
    kCounts,
};
const char *const kCallNames[] = {"(none)",      "open",          "close",      "try_push",  "timed_push", "try_push_n",
                                  "try_reserve", "commit",        "try_pop",    "timed_pop", "try_pop_n",  "try_peek",
                                  "release",     "timed_reserve", "timed_peek", "cancel",    "counts"};

// What one participant is doing, in memory the test can read while it runs.
struct Seat {
    std::atomic<int64_t> callStart{0};  // monotonic ns when the current call began; 0 between calls
    std::atomic<int> call{kNoCall};
    std::atomic<uint64_t> calls{0};
    std::atomic<uint64_t> moved{0};     // calls that moved an element or handed out a slot
    std::atomic<uint64_t> protocol{0};  // calls that said -EPROTO
    std::atomic<bool> scribbledPhaseDone{false};
    stress::Report report;
};

struct Shared {
    std::atomic<unsigned> opened{0};   // participants past their first open: then the scribbler starts
    std::atomic<bool> started{false};  // the scribbler has mapped the segment
    std::atomic<bool> stop{false};     // every participant finished its calls under scribbling
    std::atomic<bool> stopped{false};  // the scribbler made its last write
    std::atomic<uint64_t> writes{0};
    stress::Report scribbler;
};

struct Rng {  // xorshift64*: deterministic, and the same in every process
    uint64_t state;
    explicit Rng(uint64_t seed) : state(stress::mix(seed) | 1) {}
    uint64_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545f4914f6cdd1dull;
    }
    uint64_t below(uint64_t n) { return next() % n; }
};

struct Plan {
    join_shm_policy policy;
    Mode mode;
    unsigned producers, consumers;
    uint64_t callsPerParticipant;
};

// Broadcast rings are opened with the default max_subscribers, whose records come before the slots.
layout::Geometry geometry(join_shm_policy policy) {
    layout::Geometry g{};
    layout::computeGeometry(kElementSize, kCapacity, g, policy == JOIN_SHM_BROADCAST ? layout::kDefaultSubscribers : 0);
    return g;
}

// ---------------------------------------------------------------------------------------------
// A participant: one handle, in one role, making calls from a fixed seed.

class Participant {
public:
    Participant(const char *name, const Plan &plan, join_shm_role role, unsigned index, Seat &seat, Shared &shared)
        : name_(name),
          plan_(plan),
          role_(role),
          seat_(seat),
          shared_(shared),
          rng_(uint64_t{plan.policy} << 40 | uint64_t{plan.mode == Mode::Threads} << 32 | uint64_t{role} << 8 | index) {
        options_.size = sizeof options_;
        options_.open_timeout_ns = kOpenTimeoutNs;
        options_.spin_ns = index % 2 ? -1 : 0;  // one sleeps at once, one spins first
        // Broadcast: block mode, asked for explicitly, so that a scribbled mode is refused at reopen.
        if (plan.policy == JOIN_SHM_BROADCAST) options_.overflow = JOIN_SHM_OVERFLOW_BLOCK;
        std::snprintf(who_, sizeof who_, "%s %u", role == JOIN_SHM_PRODUCER ? "producer" : "consumer", index);
    }

    void run() {
        const int r = timed(kOpen, [&] { return open(); });
        shared_.opened.fetch_add(1);
        if (r != 0) {
            fail("the first open, before any scribbling, returned %d (%s)", r, join_shm_last_error_detail());
            seat_.scribbledPhaseDone.store(true);
            return;
        }
        if (!stress::waitUntil([&] { return shared_.started.load(); })) fail("the scribbler did not start within 10 s");
        for (uint64_t i = 0; i < plan_.callsPerParticipant && seat_.report.ok(); ++i)
            step();
        seat_.scribbledPhaseDone.store(true);
        if (!stress::waitUntil([&] { return shared_.stopped.load(); })) fail("the scribbler did not stop within 10 s");
        // The segment is as the scribbler left it: calls still return, and closing works.
        for (unsigned i = 0; i < kCallsAfterScribbling && seat_.report.ok(); ++i)
            step();
        timed(kClose, [&] { return close(); });
    }

private:
    void fail(const char *format, ...) __attribute__((format(printf, 2, 3))) {
        char text[400];
        va_list args;
        va_start(args, format);
        std::vsnprintf(text, sizeof text, format, args);
        va_end(args);
        seat_.report.fail("%s: %s", who_, text);
    }

    template <class F>
    auto timed(Call call, F &&f) -> decltype(f()) {
        seat_.call.store(call);
        seat_.callStart.store(nowNs());
        auto r = f();
        seat_.callStart.store(0);
        seat_.calls.fetch_add(1, std::memory_order_relaxed);
        return r;
    }

    void expect(Call call, int64_t got, std::initializer_list<int64_t> allowed) {
        if (got == -EPROTO) seat_.protocol.fetch_add(1, std::memory_order_relaxed);
        if (got == 0 && call != kOpen && call != kCommit && call != kRelease && call != kCancel)
            seat_.moved.fetch_add(1, std::memory_order_relaxed);
        for (int64_t a : allowed)
            if (got == a) return;
        std::string list;
        for (int64_t a : allowed)
            list += " " + std::to_string(a);
        fail("%s returned %lld (%s), allowed:%s; detail: %s", kCallNames[call], (long long)got,
             join_shm_strerror(static_cast<int>(got)), list.c_str(), join_shm_last_error_detail());
    }

    int open() {
        const std::vector<Mapping> before = segmentMappings();
        const int r = join_shm_queue_open_ex(&q_, name_, plan_.policy, role_, kElementSize, kCapacity, &options_);
        outstanding_ = false;
        if (r == 0) findMappings(before);
        return r;
    }
    int close() {
        join_shm_queue_close(q_);
        q_ = nullptr;
        return 0;
    }

    struct Mapping {
        uintptr_t start, end;
        unsigned long inode;
        bool operator==(const Mapping &o) const { return start == o.start && end == o.end && inode == o.inode; }
    };

    // This process's whole-file mappings of shared files, from /proc/self/maps.
    static std::vector<Mapping> segmentMappings() {
        std::vector<Mapping> found;
        FILE *f = std::fopen("/proc/self/maps", "re");
        if (!f) return found;
        char line[512];
        while (std::fgets(line, sizeof line, f)) {
            unsigned long start = 0, end = 0, offset = 0, inode = 0;
            unsigned major = 0, minor = 0;
            char perms[8];
            if (std::sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major, &minor, &inode) ==
                    7 &&
                inode != 0 && offset == 0 && perms[3] == 's')
                found.push_back({start, end, inode});
        }
        std::fclose(f);
        return found;
    }

    // The mappings this handle may point into: those of the file the name links now (a creator
    // maps its file before it has a name, so the path shown in the maps may not be the ring's), and
    // those that appeared while it opened (a peer may have replaced a stale segment under the name
    // since, leaving this handle on the unlinked one).
    void findMappings(const std::vector<Mapping> &before) {
        mappings_.clear();
        struct stat st;
        const unsigned long named = stat(path(), &st) == 0 ? st.st_ino : 0;
        for (const Mapping &m : segmentMappings())
            if (m.inode == named || std::find(before.begin(), before.end(), m) == before.end())
                mappings_.emplace_back(m.start, m.end);
    }
    const char *path() {
        std::snprintf(path_, sizeof path_, "/dev/shm/%s", name_);
        return path_;
    }
    bool isSlot(const void *p) const {
        const layout::Geometry g = geometry(plan_.policy);
        const auto at = reinterpret_cast<uintptr_t>(p);
        for (const auto &m : mappings_) {
            if (at < m.first + g.slots_offset || m.second - m.first < g.total_size) continue;
            const uint64_t from = at - m.first - g.slots_offset;
            if (from % g.slot_stride == 0 && from / g.slot_stride < kCapacity) return true;
        }
        return false;
    }

    void step() {
        if (!q_) {
            // Reopening a scribbled segment: it may pass validation or not; the role may look held.
            const int r = timed(kOpen, [&] { return open(); });
            expect(kOpen, r, {0, -EPROTO, -EINVAL, -EBUSY, -ETIMEDOUT});
            return;
        }
        const uint64_t pick = rng_.below(64);
        if (pick == 0) {
            timed(kClose, [&] { return close(); });  // with or without a slot outstanding
            return;
        }
        if (pick < 8) return counts();
        if (role_ == JOIN_SHM_PRODUCER)
            produce(pick % 8);
        else
            consume(pick % 8);
    }

    void counts() {
        const uint64_t pending = timed(kCounts, [&] { return join_shm_pending(q_); });
        const uint64_t available = timed(kCounts, [&] { return join_shm_available(q_); });
        const int full = timed(kCounts, [&] { return join_shm_full(q_); });
        const int empty = timed(kCounts, [&] { return join_shm_empty(q_); });
        join_shm_stats s{};
        s.size = sizeof s;
        const int r = timed(kCounts, [&] { return join_shm_queue_stats(q_, &s); });
        if (pending > kCapacity || available > kCapacity || (full != 0 && full != 1) || (empty != 0 && empty != 1))
            fail("pending %llu, available %llu, full %d, empty %d with capacity %llu", (unsigned long long)pending,
                 (unsigned long long)available, full, empty, (unsigned long long)kCapacity);
        if (r != 0 || s.pending > kCapacity || s.capacity != kCapacity || s.element_size != kElementSize ||
            s.policy != static_cast<uint32_t>(plan_.policy))
            fail("queue_stats returned %d: pending %llu, capacity %llu, element size %llu, policy %u", r,
                 (unsigned long long)s.pending, (unsigned long long)s.capacity, (unsigned long long)s.element_size,
                 s.policy);
    }

    int64_t timeout() { return rng_.below(2) ? kShortTimeoutNs : 0; }

    // Codes a call may return: -EINVAL exactly while a slot is outstanding (and then it says nothing
    // of the segment); otherwise its own results. A side that claims through a shared cursor may
    // also find that a peer took its claimed slot over (the scribbler made its claim look dead):
    // -ECANCELED.
    using Codes = std::initializer_list<int64_t>;
    static constexpr Codes kInvalid = {-EINVAL};

    int cancelled() const {
        const bool shared = role_ == JOIN_SHM_PRODUCER ? plan_.policy != JOIN_SHM_SPSC : plan_.policy == JOIN_SHM_MPMC;
        return shared ? -ECANCELED : 0;
    }

    void produce(uint64_t what) {
        unsigned char elements[kMaxBatch * kElementSize];
        for (unsigned char &b : elements)
            b = static_cast<unsigned char>(rng_.next());
        const int lost = cancelled();
        switch (what) {
            case 0: {
                const int r = timed(kTryPush, [&] { return join_shm_try_push(q_, elements); });
                return expect(kTryPush, r, outstanding_ ? kInvalid : Codes{0, -EAGAIN, -EPROTO, lost});
            }
            case 1: {
                const int64_t t = timeout();
                const int r = timed(kTimedPush, [&] { return join_shm_timed_push(q_, elements, t); });
                return expect(kTimedPush, r, outstanding_ ? kInvalid : Codes{0, -ETIMEDOUT, -EPROTO, lost});
            }
            case 2: {
                const uint64_t n = 1 + rng_.below(kMaxBatch);
                const int64_t r = timed(kPushN, [&] { return join_shm_try_push_n(q_, elements, n); });
                if (!outstanding_ && r >= 1 && static_cast<uint64_t>(r) <= n) {
                    seat_.moved.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                return expect(kPushN, r, outstanding_ ? kInvalid : Codes{-EAGAIN, -EPROTO, lost});
            }
            case 3:
            case 4: {
                void *slot = nullptr;
                const bool wait = what == 4;
                const int64_t t = timeout();
                const int r = wait ? timed(kTimedReserve, [&] { return join_shm_timed_reserve(q_, &slot, t); })
                                   : timed(kReserve, [&] { return join_shm_try_reserve(q_, &slot); });
                expect(wait ? kTimedReserve : kReserve, r,
                       outstanding_ ? kInvalid : Codes{0, wait ? -ETIMEDOUT : -EAGAIN, -EPROTO});
                if (r != 0) return;
                if (!isSlot(slot))
                    return fail("%s gave %p, not the element of a slot of the ring",
                                wait ? "timed_reserve" : "try_reserve", slot);
                std::memcpy(slot, elements, kElementSize);  // the whole element is writable
                outstanding_ = true;
                return;
            }
            case 5:
            case 6: {
                const int r = timed(kCommit, [&] { return join_shm_commit(q_); });
                expect(kCommit, r, outstanding_ ? Codes{0, lost} : kInvalid);
                outstanding_ = false;
                return;
            }
            default: {
                const int r = timed(kCancel, [&] { return join_shm_cancel(q_); });
                expect(kCancel, r, {outstanding_ ? 0 : -EINVAL});
                outstanding_ = false;
            }
        }
    }

    void consume(uint64_t what) {
        unsigned char elements[kMaxBatch * kElementSize];
        const int lost = cancelled();
        switch (what) {
            case 0: {
                const int r = timed(kTryPop, [&] { return join_shm_try_pop(q_, elements); });
                return expect(kTryPop, r, outstanding_ ? kInvalid : Codes{0, -EAGAIN, -EPROTO, lost});
            }
            case 1: {
                const int64_t t = timeout();
                const int r = timed(kTimedPop, [&] { return join_shm_timed_pop(q_, elements, t); });
                return expect(kTimedPop, r, outstanding_ ? kInvalid : Codes{0, -ETIMEDOUT, -EPROTO, lost});
            }
            case 2: {
                const uint64_t n = 1 + rng_.below(kMaxBatch);
                const int64_t r = timed(kPopN, [&] { return join_shm_try_pop_n(q_, elements, n); });
                if (!outstanding_ && r >= 1 && static_cast<uint64_t>(r) <= n) {
                    seat_.moved.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                return expect(kPopN, r, outstanding_ ? kInvalid : Codes{-EAGAIN, -EPROTO, lost});
            }
            case 3:
            case 4: {
                const void *slot = nullptr;
                const bool wait = what == 4;
                const int64_t t = timeout();
                const int r = wait ? timed(kTimedPeek, [&] { return join_shm_timed_peek(q_, &slot, t); })
                                   : timed(kPeek, [&] { return join_shm_try_peek(q_, &slot); });
                expect(wait ? kTimedPeek : kPeek, r,
                       outstanding_ ? kInvalid : Codes{0, wait ? -ETIMEDOUT : -EAGAIN, -EPROTO});
                if (r != 0) return;
                if (!isSlot(slot))
                    return fail("%s gave %p, not the element of a slot of the ring", wait ? "timed_peek" : "try_peek",
                                slot);
                std::memcpy(elements, slot, kElementSize);  // the whole element is readable
                outstanding_ = true;
                return;
            }
            case 5:
            case 6: {
                const int r = timed(kRelease, [&] { return join_shm_release(q_); });
                expect(kRelease, r, outstanding_ ? Codes{0, lost} : kInvalid);
                outstanding_ = false;
                return;
            }
            default: {
                const int r = timed(kCancel, [&] { return join_shm_cancel(q_); });
                expect(kCancel, r, {outstanding_ ? 0 : -EINVAL});
                outstanding_ = false;
            }
        }
    }

    const char *name_;
    const Plan &plan_;
    join_shm_role role_;
    Seat &seat_;
    Shared &shared_;
    Rng rng_;
    join_shm_options options_{};
    join_shm_queue *q_ = nullptr;
    bool outstanding_ = false;
    std::vector<std::pair<uintptr_t, uintptr_t>> mappings_;
    char who_[32];
    char path_[300];
};

// ---------------------------------------------------------------------------------------------
// The scribbler: plain stores into its own mapping, aimed at the header's fields, the slots'
// sequence and claim words, or anywhere, until the test says stop. Now and then it puts back the
// segment as it was when new (all but the role line): a sound header lets closed handles reopen,
// and a ring back at lap 0 under handles that are laps further on is corruption of its own kind.

uint64_t nastyValue(Rng &rng, uint64_t current) {
    switch (rng.below(16)) {
        case 0:
            return 0;
        case 1:
            return ~uint64_t{0};
        case 2:
            return ~uint64_t{0} - rng.below(8);  // about to wrap
        case 3:
            return current + 1;
        case 4:
            return current - 1;
        case 5:
            return current + 4 * kCapacity;  // one lap later in sequence units
        case 6:
            return current - 4 * kCapacity;
        case 7:
            return current + kCapacity;  // one lap in cursor units
        case 8:
            return current - kCapacity;
        case 9:
            return uint64_t{1} << 63;
        case 10:
            return uint64_t{INT64_MAX};
        case 11:
            return current ^ (uint64_t{1} << rng.below(64));
        case 12:
            return static_cast<uint64_t>(getppid());  // a live pid, for the role words
        case 13:
            return 1;
        default:
            return rng.next();
    }
}

void scribble(const char *name, const Plan &plan, Shared &shared, unsigned participants) {
    char path[300];
    std::snprintf(path, sizeof path, "/dev/shm/%s", name);
    const int fd = ::open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return shared.scribbler.fail("cannot open %s: %s", path, std::strerror(errno));
    const auto size = static_cast<size_t>(st.st_size);
    void *base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) return shared.scribbler.fail("cannot map %s: %s", path, std::strerror(errno));
    auto *bytes = static_cast<unsigned char *>(base);
    std::vector<uint64_t> pristine(size / 8);
    for (size_t i = 0; i < pristine.size(); ++i)
        pristine[i] = __atomic_load_n(reinterpret_cast<uint64_t *>(bytes) + i, __ATOMIC_RELAXED);
    if (!stress::waitUntil([&] { return shared.opened.load() == participants; }))
        shared.scribbler.fail("the participants did not open within 10 s");
    shared.started.store(true);

    using layout::Header;
    static const size_t fields[] = {
        offsetof(Header, magic),
        offsetof(Header, version),
        offsetof(Header, policy),
        offsetof(Header, element_size),
        offsetof(Header, capacity),
        offsetof(Header, slot_stride),
        offsetof(Header, slots_offset),
        offsetof(Header, total_size),
        offsetof(Header, state),
        offsetof(Header, producer_holder),
        offsetof(Header, consumer_holder),
        offsetof(Header, skipped),
        offsetof(Header, max_subscribers),
        offsetof(Header, overflow),
        offsetof(Header, head),
        offsetof(Header, tail),
        offsetof(Header, not_empty),
        offsetof(Header, not_full),
    };
    const layout::Geometry g = geometry(plan.policy);
    Rng rng(uint64_t{plan.policy} << 8 | uint64_t{plan.mode == Mode::Threads});
    const uint64_t maxWrites = stress::scaled(2'000'000, 1000);
    uint64_t writes = 0, restoreAt = 64 + rng.below(448), identityRestoreAt = 0;
    while (!shared.stop.load(std::memory_order_relaxed) && writes < maxWrites) {
        if (writes == restoreAt) {
            for (size_t i = 0; i < pristine.size(); ++i)
                if (i * 8 < offsetof(Header, producer_holder) || i * 8 >= offsetof(Header, head))
                    __atomic_store_n(reinterpret_cast<uint64_t *>(bytes) + i, pristine[i], __ATOMIC_RELAXED);
            restoreAt += 64 + rng.below(448);
        }
        size_t offset;
        const uint64_t aim = rng.below(16);
        if (aim < 2) {
            offset = fields[rng.below(sizeof fields / sizeof fields[0])];
        } else if (aim < 8) {
            offset = g.slots_offset + rng.below(kCapacity) * g.slot_stride + g.header_offset + 8 * rng.below(2);
        } else {
            offset = 4 * rng.below(size / 4);
        }
        // The identity line (magic, parameters, geometry, state) is what attach validates; broken
        // for good, it would only make every later open fail. Broken for a moment, it makes some.
        if (offset < offsetof(Header, producer_holder) && identityRestoreAt == 0)
            identityRestoreAt = writes + 1 + rng.below(4);
        if (writes == identityRestoreAt) {
            for (size_t i = 0; i < offsetof(Header, producer_holder) / 8; ++i)
                __atomic_store_n(reinterpret_cast<uint64_t *>(bytes) + i, pristine[i], __ATOMIC_RELAXED);
            identityRestoreAt = 0;
        }
        // Aligned atomic stores: a torn word is not the point, and other processes' atomics read them.
        if (offset % 8 == 0 && rng.below(4) != 0) {
            auto *word = reinterpret_cast<uint64_t *>(bytes + offset);
            __atomic_store_n(word, nastyValue(rng, __atomic_load_n(word, __ATOMIC_RELAXED)), __ATOMIC_RELAXED);
        } else {
            auto *word = reinterpret_cast<uint32_t *>(bytes + offset);
            const auto value = static_cast<uint32_t>(nastyValue(rng, __atomic_load_n(word, __ATOMIC_RELAXED)));
            __atomic_store_n(word, value, __ATOMIC_RELAXED);
        }
        // Bursts, then room for the participants to act on what the segment now says.
        if (++writes % 8 == 0) sched_yield();
    }
    shared.writes.store(writes);
    munmap(base, size);
    shared.stopped.store(true);
}

// ---------------------------------------------------------------------------------------------

pid_t forkChild(const std::function<void()> &body) {
    std::fflush(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid != 0) return pid;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(71);
    body();
    _exit(0);
}

void runScribbled(const Plan &plan) {
    INFO(stress::policyName(plan.policy) << " with " << plan.producers << " producer(s) and " << plan.consumers
                                         << " consumer(s) as " << stress::modeName(plan.mode));
    test::ShmName name("scribble");
    {
        // Create the ring here, so that every participant's first open attaches to a sound one.
        join_shm_queue *q = nullptr;
        REQUIRE(join_shm_queue_open(&q, name, plan.policy, JOIN_SHM_PRODUCER, kElementSize, kCapacity) == 0);
        join_shm_queue_close(q);
    }
    const unsigned n = plan.producers + plan.consumers;
    stress::SharedArray<Seat> seats(n);
    stress::SharedArray<Shared> shared(1);
    auto participant = [&](unsigned i) {
        const bool producer = i < plan.producers;
        Participant(name, plan, producer ? JOIN_SHM_PRODUCER : JOIN_SHM_CONSUMER, producer ? i : i - plan.producers,
                    seats[i], shared[0])
            .run();
    };
    auto label = [&](unsigned i) {
        return i < plan.producers ? "producer " + std::to_string(i) : "consumer " + std::to_string(i - plan.producers);
    };

    std::vector<std::pair<pid_t, std::string>> children;
    children.emplace_back(forkChild([&] { scribble(name, plan, shared[0], n); }), "the scribbler");
    if (plan.mode == Mode::Processes) {
        for (unsigned i = 0; i < n; ++i)
            children.emplace_back(forkChild([&] { participant(i); }), label(i));
    } else {
        children.emplace_back(forkChild([&] {
                                  std::vector<std::thread> threads;
                                  for (unsigned i = 0; i < n; ++i)
                                      threads.emplace_back(participant, i);
                                  for (std::thread &t : threads)
                                      t.join();
                              }),
                              "the participants' process");
    }
    for (const auto &c : children)
        REQUIRE(c.first > 0);

    // Watch: a call running for kCallLimitNs is a hang; so is the whole run outlasting the
    // stress watchdog. Either way, kill everything and say where it was.
    std::string problems;
    const int64_t deadline = nowNs() + stress::watchdogNs();
    std::vector<bool> reaped(children.size(), false);
    for (size_t running = children.size(); running > 0;) {
        stress::sleepNs(1'000'000);
        bool done = true;
        for (unsigned i = 0; i < n; ++i) {
            done = done && seats[i].scribbledPhaseDone.load();
            const int64_t start = seats[i].callStart.load();
            if (start != 0 && nowNs() - start > kCallLimitNs && problems.empty())
                problems = label(i) + " has been in " + kCallNames[seats[i].call.load()] + " for more than " +
                           std::to_string(kCallLimitNs / 1'000'000) + " ms";
        }
        if (done) shared[0].stop.store(true);
        if (problems.empty() && nowNs() > deadline)
            problems = "still running after " + std::to_string(stress::watchdogNs() / 1'000'000'000) + " s";
        for (size_t c = 0; c < children.size(); ++c) {
            if (reaped[c]) continue;
            if (!problems.empty()) kill(children[c].first, SIGKILL);
            int status = 0;
            const pid_t r = waitpid(children[c].first, &status, problems.empty() ? WNOHANG : 0);
            if (r == 0) continue;
            reaped[c] = true;
            --running;
            if (r < 0)
                problems += "; waitpid for " + children[c].second + " failed";
            else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
                problems += "; " + children[c].second + " died of signal " + std::to_string(WTERMSIG(status));
            else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
                problems += "; " + children[c].second + " exited with " + std::to_string(WEXITSTATUS(status));
        }
    }
    CHECK(problems == "");
    CHECK(shared[0].scribbler.text() == "ok");
    CHECK(shared[0].writes.load() > 0);
    for (unsigned i = 0; i < n; ++i) {
        INFO(label(i) << " made " << seats[i].calls.load() << " calls; " << seats[i].moved.load()
                      << " moved an element or gave a slot, " << seats[i].protocol.load() << " said -EPROTO");
        CHECK(seats[i].report.text() == "ok");
        CHECK(seats[i].calls.load() >= plan.callsPerParticipant);
    }
}

std::vector<Plan> plans(Mode mode) {
    const uint64_t calls = stress::scaled(3000, 200);
    return {{JOIN_SHM_SPSC, mode, 1, 1, calls},
            {JOIN_SHM_MPSC, mode, 2, 1, calls},
            {JOIN_SHM_MPMC, mode, 2, 2, calls},
            {JOIN_SHM_BROADCAST, mode, 1, 2, calls}};
}

}  // namespace

TEST_CASE("calls on a ring scribbled over by another process return promptly with allowed results (threads)",
          "[scribble]") {
    for (const Plan &plan : plans(Mode::Threads))
        runScribbled(plan);
}

TEST_CASE("calls on a ring scribbled over by another process return promptly with allowed results (processes)",
          "[scribble]") {
    for (const Plan &plan : plans(Mode::Processes))
        runScribbled(plan);
}

TEST_CASE("an attach to a segment whose header was scribbled over fails cleanly or works, never crashes",
          "[scribble]") {
    // Each header field in turn, with each nasty value: the open validates before it maps.
    using layout::Header;
    const size_t fields[] = {offsetof(Header, magic),
                             offsetof(Header, version),
                             offsetof(Header, policy),
                             offsetof(Header, element_size),
                             offsetof(Header, capacity),
                             offsetof(Header, slot_stride),
                             offsetof(Header, slots_offset),
                             offsetof(Header, total_size),
                             offsetof(Header, state),
                             offsetof(Header, producer_holder),
                             offsetof(Header, consumer_holder),
                             offsetof(Header, head),
                             offsetof(Header, tail),
                             offsetof(Header, max_subscribers),
                             offsetof(Header, overflow)};
    Rng rng(7);
    for (join_shm_policy policy : {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC, JOIN_SHM_BROADCAST}) {
        for (size_t field : fields) {
            for (int k = 0; k < 6; ++k) {
                INFO(stress::policyName(policy) << ", header offset " << field << ", value #" << k);
                test::ShmName name("scribble-attach");
                join_shm_queue *creator = nullptr;
                REQUIRE(join_shm_queue_open(&creator, name, policy, JOIN_SHM_PRODUCER, kElementSize, kCapacity) == 0);
                join_shm_queue_close(creator);
                char path[300];
                std::snprintf(path, sizeof path, "/dev/shm/%s", name.c_str());
                const int fd = ::open(path, O_RDWR | O_CLOEXEC);
                REQUIRE(fd >= 0);
                const size_t width = field % 8 ? 4 : 8;
                uint64_t value = 0;
                REQUIRE(pread(fd, &value, width, static_cast<off_t>(field)) == static_cast<ssize_t>(width));
                value = nastyValue(rng, value);
                REQUIRE(pwrite(fd, &value, width, static_cast<off_t>(field)) == static_cast<ssize_t>(width));
                uint64_t magic = 0;
                uint32_t version = 0;
                REQUIRE(pread(fd, &magic, sizeof magic, offsetof(Header, magic)) == sizeof magic);
                REQUIRE(pread(fd, &version, sizeof version, offsetof(Header, version)) == sizeof version);
                ::close(fd);

                join_shm_options options{};
                options.size = sizeof options;
                options.open_timeout_ns = kOpenTimeoutNs;
                join_shm_queue *q = nullptr;
                const int r =
                    join_shm_queue_open_ex(&q, name, policy, JOIN_SHM_CONSUMER, kElementSize, kCapacity, &options);
                INFO("open returned " << r << ": " << join_shm_last_error_detail());
                CHECK((r == 0 || r == -EPROTO || r == -EINVAL || r == -EBUSY || r == -ETIMEDOUT));
                CHECK((r == 0) == (q != nullptr));
                if (magic != layout::kMagic || version != layout::kLayoutVersion) CHECK(r == -EPROTO);
                if (q) {
                    unsigned char element[kElementSize];
                    const int p = join_shm_try_pop(q, element);
                    // A broadcast ring whose mode was scribbled to overwrite may report an overrun.
                    CHECK(
                        (p == 0 || p == -EAGAIN || p == -EPROTO || (policy == JOIN_SHM_BROADCAST && p == -EOVERFLOW)));
                    CHECK(join_shm_pending(q) <= kCapacity);
                    join_shm_queue_close(q);
                }
            }
        }
    }
}
