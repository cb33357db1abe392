// Waiting without burning CPU: spin briefly, then sleep on a futex word inside the segment.
//
// The protocol, per direction (WaitWord in layout.hpp; bit 0 = "a waiter may be asleep"):
//   waiter:    word.fetch_or(1); heavyBarrier(); re-check the ring; futex_wait(word, value seen)
//   publisher: change the ring (release store); compiler barrier; if (word & 1) bump epoch, clear
//              bit 0 and FUTEX_WAKE everyone
// No lost wake-up: heavyBarrier() is membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), a full barrier on
// every CPU running a process registered as a publisher (every process that opens a ring). For a
// publisher P and waiter W, the barrier lands in P's program order either after P's ring store
// (then the store is visible to W's re-check) or before P's load of the word (then P sees bit 0,
// which W set before the barrier). A P that is not running has passed a context switch, itself a
// full barrier. So the publish path stays a release store plus one plain load, and the waiter,
// who is about to sleep anyway, pays the ~1 us barrier. If a wake lands between W's re-check and
// its futex_wait, the word no longer holds the value W saw and futex_wait returns at once.
// Where membarrier is unavailable, publishers in this process fence instead, and waiters here
// sleep in slices of 1 ms, so a wake-up missed from a publisher elsewhere costs at most a slice.
#pragma once

#include "layout.hpp"

#include <sched.h>
#include <cerrno>
#include <climits>
#include <cstdint>

namespace join::shm {

int64_t monotonicNs() noexcept;
void pauseBriefly() noexcept;  // sleeps ~100 us: for polling rare states, never on a hot path

inline void cpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Registers this process for membarrier once per pid (registration does not survive fork).
void registerPublisher() noexcept;

// True when this process could not register and its publishers must fence.
extern std::atomic<bool> publisherMustFence;

// Cold and out of line: the publish path stays a leaf that only tests a bit.
[[gnu::cold, gnu::noinline]] void wakeAll(WaitWord &w) noexcept;

// The publisher's half of a pairing with waiterBarrier(), between its stores and the load that
// follows: free where the other side pays membarrier (the compiler must keep the order; the
// barrier lands on one side of it), a full fence where it cannot.
inline void publisherFence() noexcept {
    if (__builtin_expect(publisherMustFence.load(std::memory_order_relaxed), false))
        std::atomic_thread_fence(std::memory_order_seq_cst);
    else
        std::atomic_signal_fence(std::memory_order_seq_cst);
}

// Called by a publisher right after its release store made the ring change visible.
inline void notify(WaitWord &w) noexcept {
    publisherFence();  // keep the load after the store; see above
    // Relaxed: ordering comes from the barrier pairing described at the top of this file.
    if (__builtin_expect(w.word.load(std::memory_order_relaxed) & 1u, 0)) wakeAll(w);
}

// Announces a waiter on w and returns the word's value to sleep on.
uint32_t announceWaiter(WaitWord &w) noexcept;

// announceWaiter in two halves, for a waiter on many words (join_shm_wait_any): set bit 0 on each
// word, then pay the barrier once for all of them.
uint32_t markWaiter(WaitWord &w) noexcept;
void waiterBarrier() noexcept;

// Sleeps until one of n words no longer holds its expected value, a wake, a signal or deadlineNs
// (futex_waitv, Linux 5.16+). False, without sleeping, where the kernel lacks futex_waitv or
// JOIN_SHM_WAITV_FALLBACK=1 (tests use it to cover the caller's fallback).
bool sleepOnAny(WaitWord *const *words, const uint32_t *expected, unsigned n, int64_t deadlineNs) noexcept;

// Sleeps while w still holds expected, until deadlineNs (INT64_MAX: no deadline). Returns early
// on wake, signal or a changed word; the caller re-checks.
void sleepOn(WaitWord &w, uint32_t expected, int64_t deadlineNs) noexcept;

inline int64_t deadlineAfter(int64_t now, int64_t timeoutNs) noexcept {
    int64_t deadline;
    if (timeoutNs < 0 || __builtin_add_overflow(now, timeoutNs, &deadline)) return INT64_MAX;
    return deadline;
}

// A thread that has just woken a sleeping peer spins up to this long before sleeping itself: the
// peer was blocked because it has work for us, and comes back within its wake-up latency (about
// 0.3 ms on a VM). Sleeping instead makes the two sides take turns sleeping, and a stream then
// moves one ring-full per wake-up.
constexpr int64_t kAfterWakeSpinNs = 1'000'000;

// Polls a waiter makes before it first reads the clock (a clock read costs about as much as a poll
// and a pause, ~30 ns each on a VM): the reply of a round trip usually lands within them, and then
// the clock read would have delayed seeing it.
constexpr int kPollsBeforeClock = 16;

// When this thread last woke a sleeper (monotonicNs), or a long time ago.
int64_t lastWakeNs() noexcept;

// Past this much spinning, a waiter yields its CPU at every clock read (every kPollsPerClock polls,
// under a microsecond): with more runnable threads than cores, the peer it waits for may be queued
// behind it. Yielding only every 256 polls (~10 us) after 5 us, four processes on two CPUs (a
// broadcast ring of capacity 1 with three subscribers) took 50 us a message; this way, 9 to 12 us.
// A round trip's reply usually lands before the first yield: the bench's round trips did not move.
constexpr int64_t kYieldAfterNs = 1'000;
constexpr unsigned kPollsPerClock = 16;

// The spin of every blocking wait: calls poll() (true once the wait is over) between pauses, for
// spinNs (longer just after this thread woke a peer; never when spinNs is 0), the first polls before
// any clock read. True when poll() ended it. deadline is set from timeoutNs, counted from the first
// clock read.
template <class Poll>
bool spinFirst(int64_t spinNs, int64_t timeoutNs, int64_t &deadline, Poll &&poll) noexcept {
    for (int i = 0; spinNs > 0 && i < kPollsBeforeClock; ++i) {
        cpuRelax();
        if (poll()) return true;
    }
    const int64_t start = monotonicNs();
    deadline = deadlineAfter(start, timeoutNs);
    if (spinNs > 0 && spinNs < kAfterWakeSpinNs && start - lastWakeNs() < kAfterWakeSpinNs) spinNs = kAfterWakeSpinNs;
    const int64_t spinUntil = start + spinNs < deadline ? start + spinNs : deadline;
    for (unsigned i = 1; spinNs > 0; ++i) {
        cpuRelax();
        if (poll()) return true;
        if (i % kPollsPerClock == 0) {
            const int64_t now = monotonicNs();
            if (now >= spinUntil) break;
            if (now - start > kYieldAfterNs) sched_yield();
        }
    }
    return false;
}

// Retries tryOp (returning 0, -EAGAIN, or another error) until it does not return -EAGAIN or the
// timeout passes (-ETIMEDOUT). Spins (spinFirst), then sleeps on w. Before each sleep,
// sleepSlice() says how long the caller may sleep at most (0: until woken) or that it should retry
// at once (< 0); it lets recovery from a dead peer, which nobody will wake us for, make progress.
template <class TryOp, class SleepSlice>
int waitFor(WaitWord &w, int64_t spinNs, int64_t timeoutNs, TryOp &&tryOp, SleepSlice &&sleepSlice) noexcept {
    int r = tryOp();
    if (r != -EAGAIN) return r;
    if (timeoutNs == 0) return -ETIMEDOUT;
    int64_t deadline;
    if (spinFirst(spinNs, timeoutNs, deadline, [&] { return (r = tryOp()) != -EAGAIN; })) return r;
    for (;;) {
        uint32_t expected = announceWaiter(w);
        if ((r = tryOp()) != -EAGAIN) return r;
        const int64_t now = monotonicNs();
        if (now >= deadline) return -ETIMEDOUT;
        const int64_t slice = sleepSlice();
        if (slice < 0) continue;
        sleepOn(w, expected, slice > 0 && slice < deadline - now ? now + slice : deadline);
        // Most returns from sleepOn are a wake for a ring change: look before paying for another
        // announcement (a locked RMW and a membarrier, ~2 us on a VM). A miss here is harmless: the
        // loop announces and re-checks before it sleeps again, so no wake-up can be lost.
        if ((r = tryOp()) != -EAGAIN) return r;
    }
}

}  // namespace join::shm
