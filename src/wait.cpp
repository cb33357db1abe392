#include "wait.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cstdlib>
#include <ctime>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449  // the same number on every architecture
#endif

namespace join::shm {

std::atomic<bool> publisherMustFence{false};

namespace {

// pid for which membarrier registration was done; 0 before the first open.
std::atomic<pid_t> registeredPid{0};
// Whether this process may call MEMBARRIER_CMD_GLOBAL_EXPEDITED.
std::atomic<bool> haveMembarrier{false};

constexpr int64_t kFallbackSliceNs = 1'000'000;

// The longest any sleep lasts before its caller looks at the ring again, even when nothing looks
// stuck. A peer killed inside wakeAll, after it cleared bit 0 and before its FUTEX_WAKE, leaves the
// waiters asleep with nothing to say they are there: later publishers see bit 0 clear and wake
// nobody. The waiters then find the work within this slice (a producer blocked in push on a full
// SPSC ring slept through a consumer's successor emptying it, until the test's watchdog, once in
// about 60 runs of test_crash's consumer kills under two loads). Every caller of sleepOn and
// sleepOnAny loops and re-checks, so the user sees nothing. Ten looks a second cost 0.04% of a CPU:
// a timed_pop blocked 3 s on an empty ring used 4.2 ms of CPU, against 3.0 ms without them.
constexpr int64_t kLostWakeSliceNs = 100'000'000;

// The deadline a sleep may use: at most a lost-wake slice away, or a fallback slice without membarrier.
int64_t napUntil(int64_t deadlineNs) noexcept {
    const bool fenced = haveMembarrier.load(std::memory_order_relaxed);
    const int64_t slice = deadlineAfter(monotonicNs(), fenced ? kLostWakeSliceNs : kFallbackSliceNs);
    return slice < deadlineNs ? slice : deadlineNs;
}

thread_local int64_t lastWake = INT64_MIN / 2;  // far in the past, without overflow in a subtraction

long membarrier(int cmd) noexcept { return syscall(SYS_membarrier, cmd, 0, 0); }

void heavyBarrier() noexcept {
    if (haveMembarrier.load(std::memory_order_relaxed) && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace

int64_t monotonicNs() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

int64_t lastWakeNs() noexcept { return lastWake; }

void pauseBriefly() noexcept {
    timespec ts{0, 100'000};
    nanosleep(&ts, nullptr);
}

void registerPublisher() noexcept {
    const pid_t self = getpid();
    if (registeredPid.load(std::memory_order_acquire) == self) return;
    long supported = membarrier(MEMBARRIER_CMD_QUERY);
    bool ok = supported > 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
              membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    haveMembarrier.store(ok, std::memory_order_relaxed);
    publisherMustFence.store(!ok, std::memory_order_relaxed);
    // Release: a thread that sees our pid here also sees the two flags above.
    registeredPid.store(self, std::memory_order_release);
}

void wakeAll(WaitWord &w) noexcept {
    uint32_t v = w.word.load(std::memory_order_relaxed);
    while (v & 1u) {
        // v | 1 plus one clears bit 0 and bumps the epoch in bits 1..31, so a waiter between its
        // re-check and futex_wait finds the word changed. Release: pairs with the waiter's
        // acquire in announceWaiter, for the ring change published before this wake.
        if (w.word.compare_exchange_weak(v, v + 1u, std::memory_order_release, std::memory_order_relaxed)) {
            syscall(SYS_futex, &w.word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
            lastWake = monotonicNs();
            return;
        }
    }
}

uint32_t markWaiter(WaitWord &w) noexcept {
    // Acq_rel: the read half pairs with wakeAll's release; the write half is what publishers test.
    return w.word.fetch_or(1u, std::memory_order_acq_rel) | 1u;
}

// The barrier of the protocol in wait.hpp: orders our bits against the re-check.
void waiterBarrier() noexcept { heavyBarrier(); }

uint32_t announceWaiter(WaitWord &w) noexcept {
    uint32_t seen = markWaiter(w);
    heavyBarrier();
    return seen;
}

bool sleepOnAny(WaitWord *const *words, const uint32_t *expected, unsigned n, int64_t deadlineNs) noexcept {
    static const bool forced = [] {
        const char *e = std::getenv("JOIN_SHM_WAITV_FALLBACK");
        return e && e[0] == '1';
    }();
    static std::atomic<bool> missing{false};  // relaxed: a cache of what the kernel answered
    if (forced || missing.load(std::memory_order_relaxed) || n > FUTEX_WAITV_MAX) return false;
    deadlineNs = napUntil(deadlineNs);
    futex_waitv waiters[FUTEX_WAITV_MAX] = {};
    for (unsigned i = 0; i < n; ++i) {
        waiters[i].val = expected[i];
        waiters[i].uaddr = reinterpret_cast<uintptr_t>(&words[i]->word);
        waiters[i].flags = FUTEX_32;  // not private: the words live in memory shared with other processes
    }
    timespec abs{deadlineNs / 1'000'000'000, deadlineNs % 1'000'000'000};
    if (syscall(SYS_futex_waitv, waiters, n, 0, deadlineNs == INT64_MAX ? nullptr : &abs, CLOCK_MONOTONIC) < 0 &&
        errno == ENOSYS) {
        missing.store(true, std::memory_order_relaxed);
        return false;
    }
    return true;
}

void sleepOn(WaitWord &w, uint32_t expected, int64_t deadlineNs) noexcept {
    deadlineNs = napUntil(deadlineNs);
    timespec abs{deadlineNs / 1'000'000'000, deadlineNs % 1'000'000'000};
    // Not FUTEX_PRIVATE_FLAG: the word lives in memory shared with other processes.
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so EINTR simply loops.
    syscall(SYS_futex, &w.word, FUTEX_WAIT_BITSET, expected, deadlineNs == INT64_MAX ? nullptr : &abs, nullptr,
            FUTEX_BITSET_MATCH_ANY);
}

}  // namespace join::shm
