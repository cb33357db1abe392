// Waiting from an event loop: a pollable fd per handle, and join_shm_wait_any.
//
// The fd. A handle that asks for one gets an eventfd E: the fd the user polls. E turns readable
// through one of three routes, all built on the futex protocol of wait.hpp, so publishers pay what
// they always paid (a release store and one load of the wait word; a FUTEX_WAKE only when bit 0
// says somebody waits) and the segment layout does not change. The first that passes a probe
// (probeFutexWait: does a wake signal E at once?) serves every fd of the process:
//  - io_uring (Linux 6.7+, the default): a small private io_uring per handle, with E registered as
//    its eventfd. Arming announces a waiter on the ring's word exactly as a blocking waiter does,
//    re-checks the ring, and submits IORING_OP_FUTEX_WAIT on the word. A publisher's FUTEX_WAKE
//    completes it, and the kernel signals E in the waker's own context: the event loop is woken
//    once, as by a pipe, with no helper thread. The ring is set up with DEFER_TASKRUN for that
//    reason: without it a completion is delivered as task work to the thread that submitted,
//    interrupting it like a signal, so an epoll_wait in that thread returned EINTR on 1999 of
//    2000 wake-ups (measured on 6.18) before the ring fd turned readable. DEFER_TASKRUN keeps
//    completions until we reap them, and only the thread that created the ring may reap: a handle
//    used by another thread later (allowed, one thread at a time) gets a fresh ring when
//    io_uring_enter answers -EEXIST, still signalling the same E.
//  - an interrupting io_uring, where a deferred ring does not signal E at the wake (6.18.44 here:
//    only once the ring is reaped, 12 ms or more later). The completion runs as task work in the
//    thread that armed, which the wake interrupts: E is signalled then, one wake-up as by a pipe,
//    and an epoll_wait in that thread returns EINTR first (poll and select restart by themselves).
//  - a watcher thread, where neither works (kernel before 6.7, io_uring disabled or refused by
//    seccomp) or JOIN_SHM_FD_FALLBACK=1 (=2 skips the deferred ring; tests cover each): a thread per
//    handle sleeps on the word as a blocking waiter does and writes E when there is work. Two
//    wake-ups per event instead of one, and a thread per fd.
// Arming happens when the fd is requested and when a try_ call returns -EAGAIN: the rule users
// follow is to call try_ until -EAGAIN, and that is when the handle is known to have run dry.
// Arming drains E (what stops it polling readable) and submits a new wait; while the previous wait
// is still pending it costs two loads (sq flags, cq tail) and no system call.
//
// Dead peers: before arming, as before a blocking sleep, stuckSlice() (ring.hpp) looks for a
// claimant that died holding the next slot, and takes the slot over once the claimant is dead.
// While a slot looks stuck, the futex wait carries a linked timeout of stuckSlice's 5 ms (the
// watcher sleeps that long at most), so E turns readable, the user's try_ returns -EAGAIN, and the
// next arming looks again. wait_any calls stuckSlice on each item before it sleeps, likewise.
// A waker killed between clearing bit 0 and its FUTEX_WAKE (wait.cpp, kLostWakeSliceNs): wait_any
// and the watcher look again every slice, unseen by the user; the io_uring route does not yet (a
// timeout there would make E readable with no work), so its fd can stay quiet until another waiter
// sets bit 0 again.
//
// wait_any: set bit 0 on every item's word, pay one barrier for all, re-check every item, then
// futex_waitv on all the words: any publisher's wake ends the sleep. Without futex_waitv (Linux
// before 5.16, or JOIN_SHM_WAITV_FALLBACK=1) it sleeps on the first word in slices of 1 ms and
// polls all: correct, but up to 1 ms late for the others and about 1000 wake-ups a second while
// idle. Every ready item is marked, so a caller that serves what is marked starves no ring; there
// is no scan order to rotate.
#include "poller.hpp"

#include "error.hpp"
#include "ring.hpp"
#include "wait.hpp"

#include <linux/futex.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <new>

namespace join::shm {

namespace {

// Newer than the kernel headers of Debian 12 (6.1).
constexpr uint8_t kOpFutexWait = 51;   // IORING_OP_FUTEX_WAIT, Linux 6.7
constexpr uint32_t kFutex2Size32 = 2;  // FUTEX2_SIZE_U32; not FUTEX2_PRIVATE: the word is shared

WaitWord &wordOf(const Queue &q) noexcept {
    return q.role == JOIN_SHM_PRODUCER ? q.header().not_full : q.header().not_empty;
}

// How the fd's io_uring is set up in this process, found by probing at its first fd (openPoller).
enum Route : int { kUnknown, kDeferred, kInterrupting, kNoUring };
std::atomic<int> uringRoute{kUnknown};  // relaxed: a cache; every value found is valid

// JOIN_SHM_FD_FALLBACK=1 skips io_uring (the watcher serves every fd), =2 the deferred ring (the
// interrupting one serves, where it works), so that tests cover each route on any kernel.
int routeLimit() noexcept {
    static const int limit = [] {
        const char *e = std::getenv("JOIN_SHM_FD_FALLBACK");
        return e && e[0] == '1' ? kNoUring : e && e[0] == '2' ? kInterrupting : kDeferred;
    }();
    return limit;
}

long futexPrivate(std::atomic<uint32_t> &word, int op, uint32_t value) noexcept {
    return syscall(SYS_futex, &word, op | FUTEX_PRIVATE_FLAG, value, nullptr, nullptr, 0);
}

// One small io_uring, used by one thread, with raw system calls (no liburing: the library must not
// gain a dependency). Its memory is written by the kernel and by us only, never by other processes.
struct Uring {
    int fd = -1;
    void *rings = MAP_FAILED;
    size_t ringsSize = 0;
    void *sqeMemory = MAP_FAILED;
    size_t sqeSize = 0;
    io_uring_sqe *sqes = nullptr;
    io_uring_cqe *cqes = nullptr;
    unsigned *sqTail = nullptr, *sqMask = nullptr, *sqArray = nullptr, *sqFlags = nullptr;
    unsigned *cqHead = nullptr, *cqTail = nullptr, *cqMask = nullptr;
};

void closeUring(Uring &u) noexcept {
    if (u.sqeMemory != MAP_FAILED) munmap(u.sqeMemory, u.sqeSize);
    if (u.rings != MAP_FAILED) munmap(u.rings, u.ringsSize);
    if (u.fd >= 0) close(u.fd);
    u = Uring{};
}

// 0 or a negative errno. The ring fd is O_CLOEXEC, as io_uring_setup always makes it.
int openUring(Uring &u, int eventFd, int route = uringRoute.load(std::memory_order_relaxed)) noexcept {
    io_uring_params p{};
    if (route == kDeferred)
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    const long fd = syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return -errno;
    u.fd = static_cast<int>(fd);
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        closeUring(u);
        return -EOPNOTSUPP;
    }
    const size_t sq = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    const size_t cq = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    u.ringsSize = sq > cq ? sq : cq;
    u.rings = mmap(nullptr, u.ringsSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u.fd, IORING_OFF_SQ_RING);
    u.sqeSize = p.sq_entries * sizeof(io_uring_sqe);
    u.sqeMemory = mmap(nullptr, u.sqeSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u.fd, IORING_OFF_SQES);
    if (u.rings == MAP_FAILED || u.sqeMemory == MAP_FAILED) {
        const int err = errno;
        closeUring(u);
        return -err;
    }
    auto *base = static_cast<unsigned char *>(u.rings);
    u.sqTail = reinterpret_cast<unsigned *>(base + p.sq_off.tail);
    u.sqMask = reinterpret_cast<unsigned *>(base + p.sq_off.ring_mask);
    u.sqArray = reinterpret_cast<unsigned *>(base + p.sq_off.array);
    u.sqFlags = reinterpret_cast<unsigned *>(base + p.sq_off.flags);
    u.cqHead = reinterpret_cast<unsigned *>(base + p.cq_off.head);
    u.cqTail = reinterpret_cast<unsigned *>(base + p.cq_off.tail);
    u.cqMask = reinterpret_cast<unsigned *>(base + p.cq_off.ring_mask);
    u.cqes = reinterpret_cast<io_uring_cqe *>(base + p.cq_off.cqes);
    u.sqes = static_cast<io_uring_sqe *>(u.sqeMemory);
    if (syscall(__NR_io_uring_register, u.fd, IORING_REGISTER_EVENTFD, &eventFd, 1) < 0) {
        const int err = errno;
        closeUring(u);
        return -err;
    }
    return 0;
}

// The SQE at *tail, zeroed; the caller publishes the tail.
io_uring_sqe *nextSqe(Uring &u, unsigned &tail) noexcept {
    const unsigned i = tail++ & *u.sqMask;
    u.sqArray[i] = i;
    io_uring_sqe *s = &u.sqes[i];
    std::memset(s, 0, sizeof *s);
    return s;
}

void prepareFutexWait(io_uring_sqe *s, std::atomic<uint32_t> &word, uint32_t expected) noexcept {
    s->opcode = kOpFutexWait;
    s->fd = static_cast<int>(kFutex2Size32);
    s->addr = reinterpret_cast<uintptr_t>(&word);
    s->addr2 = expected;
    s->addr3 = FUTEX_BITSET_MATCH_ANY;
}

// io_uring_enter: how many SQEs it took, or a negative errno (-EEXIST: not the ring's thread).
int enter(Uring &u, unsigned submit, unsigned wait, unsigned flags) noexcept {
    for (;;) {
        const long r = syscall(__NR_io_uring_enter, u.fd, submit, wait, flags, nullptr, 0);
        if (r >= 0) return static_cast<int>(r);
        if (errno != EINTR) return -errno;
    }
}

void publishSqes(Uring &u, unsigned tail) noexcept {
    // Release: the kernel reads the SQEs after it sees the tail.
    __atomic_store_n(u.sqTail, tail, __ATOMIC_RELEASE);
}

// Throws away every posted completion: they carry nothing we need beyond "it happened".
void dropCompletions(Uring &u) noexcept {
    // Acquire/release as liburing does: the kernel may reuse a CQE once head moves past it.
    __atomic_store_n(u.cqHead, __atomic_load_n(u.cqTail, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
}

// Whether the wait we submitted has ended: the kernel queued its completion (TASKRUN flag, set by
// DEFER_TASKRUN when work waits for us) or posted a CQE.
bool waitEnded(const Uring &u) noexcept {
    // Acquire: ordered after the kernel's update of these words.
    return (__atomic_load_n(u.sqFlags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN) ||
           __atomic_load_n(u.cqTail, __ATOMIC_ACQUIRE) != *u.cqHead;
}

// Whether a ring set up for the route works here, in two steps. A futex wait on a word that does
// not hold the expected value must fail at once with -EAGAIN: anything else (-EINVAL for an unknown
// opcode) means the kernel lacks IORING_OP_FUTEX_WAIT. Then a FUTEX_WAKE must have signalled E by
// the time it returns to us: on a deferred ring, in the waker's context (some kernels, 6.18.44
// here, leave E quiet until something reaps the ring, 12 ms or more later: a 32 ms round trip); on
// an interrupting one, through the task work that runs as the wake returns to this thread.
bool probeFutexWait(Uring &u, int eventFd) noexcept {
    std::atomic<uint32_t> word{0};
    unsigned tail = *u.sqTail;
    prepareFutexWait(nextSqe(u, tail), word, 1);
    publishSqes(u, tail);
    if (enter(u, 1, 1, IORING_ENTER_GETEVENTS) != 1) return false;
    const unsigned head = *u.cqHead;
    if (__atomic_load_n(u.cqTail, __ATOMIC_ACQUIRE) == head) return false;
    const int res = u.cqes[head & *u.cqMask].res;
    dropCompletions(u);
    if (res != -EAGAIN) return false;
    uint64_t count;
    while (read(eventFd, &count, sizeof count) > 0) {  // the completion above signalled it
    }
    prepareFutexWait(nextSqe(u, tail), word, 0);  // queued at submission: word holds 0
    publishSqes(u, tail);
    if (enter(u, 1, 0, 0) != 1) return false;
    if (syscall(SYS_futex, &word, FUTEX_WAKE, 1, nullptr, nullptr, 0) != 1) return false;  // closing cancels
    pollfd readable{eventFd, POLLIN, 0};
    const bool signalled = poll(&readable, 1, 0) == 1;
    if (enter(u, 0, 1, IORING_ENTER_GETEVENTS) < 0) return false;  // the wake completed it: no wait
    dropCompletions(u);
    return signalled;
}

// Opens u for the route with a throwaway eventfd (a deferred ring that fails may still signal it
// much later) and probes it; closes u unless it works.
bool openProbed(Uring &u, int route) noexcept {
    const int probeFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (probeFd < 0) return false;
    const bool works = openUring(u, probeFd, route) == 0 && probeFutexWait(u, probeFd);
    if (!works) closeUring(u);
    close(probeFd);
    return works;
}

// Has an open ring signal eventFd instead of the eventfd it was opened with.
bool resignal(Uring &u, int eventFd) noexcept {
    return syscall(__NR_io_uring_register, u.fd, IORING_UNREGISTER_EVENTFD, nullptr, 0) == 0 &&
           syscall(__NR_io_uring_register, u.fd, IORING_REGISTER_EVENTFD, &eventFd, 1) == 0;
}

// pthread_create for the library's own threads, which take no signals: they belong to the
// application's threads.
int startThread(pthread_t &thread, void *(*body)(void *), void *arg) noexcept {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const int r = pthread_create(&thread, nullptr, body, arg);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return r;
}

// Whether a deferred ring works here, probed on a short-lived thread: closing a ring interrupts
// the threads that used it some milliseconds later (the kernel's exit work reaches them through
// task work), which the caller's epoll_wait would see as EINTR.
bool deferredWorks() noexcept {
    bool works = false;
    pthread_t prober;
    const auto probe = [](void *result) -> void * {
        Uring u;
        *static_cast<bool *>(result) = openProbed(u, kDeferred);
        closeUring(u);
        return nullptr;
    };
    if (startThread(prober, probe, &works) != 0) return false;
    pthread_join(prober, nullptr);
    return works;
}

enum : uint32_t { kIdle = 0, kArmed = 1, kFiring = 2, kFired = 3, kStop = 4 };

}  // namespace

struct Poller {
    int eventFd = -1;
    pid_t owner = 0;
    Queue *queue = nullptr;
    bool watcherRoute = false;
    // io_uring route (used by the handle's thread only).
    Uring uring;
    bool armed = false;      // a futex wait is in flight
    bool signalled = false;  // eventFd may hold a count we must drain
    __kernel_timespec timeout{};
    // Watcher route. state: kIdle -> kArmed (user thread) -> kFiring -> kFired (watcher, around its
    // write of E) -> kArmed ...; kStop from close. sliceNs: how long the watcher may sleep at most (0: until woken).
    bool watcherStarted = false;
    pthread_t watcher{};
    std::atomic<uint32_t> state{kIdle};
    std::atomic<int64_t> sliceNs{0};
    std::atomic<uint32_t> seen{0};  // the wait word as the arming thread announced itself on it
};

namespace {

void signalFd(Poller &p) noexcept {
    const uint64_t one = 1;
    ssize_t r;
    do
        r = write(p.eventFd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
}

void drainFd(Poller &p) noexcept {
    uint64_t count;
    ssize_t r;
    do
        r = read(p.eventFd, &count, sizeof count);
    while (r < 0 && errno == EINTR);
}

// The word whose change is the first sign of work at an idle handle, and the value it had when
// workAt judged the handle idle: wait_any's spin re-runs workAt only where the word moved. Sound
// because each verdict "idle" rests on that word alone and its values never repeat (64-bit
// positions): a consumer's slot leaves "not yet published" only through a publish, a shared
// producer's slot leaves "last lap's element" only through a release (no other claimant can pass
// it before), and a lone producer's room grows only as tail moves. Even a wrong hint would cost
// only the spin: before sleeping, wait_any announces itself and runs workAt on every item.
struct Watch {
    const std::atomic<uint64_t> *word;  // null: no such word, run workAt every time
    uint64_t value;
};

// Whether a try_ call on q would find an element (consumer) or room (producer) now; when not, sets
// *watch. Inlined: wait_any's scan calls it for every item on every look.
[[gnu::always_inline]] inline bool workAt(const Queue &q, Watch *watch = nullptr) noexcept {
    if (q.policy == JOIN_SHM_BROADCAST) {
        if (watch) watch->word = nullptr;
        return broadcastWorkAt(q);
    }
    const Header &h = q.header();
    // A few reloads when the cursor moves under us; past them, report work and let try_ decide.
    for (int attempt = 0; attempt < 4; ++attempt) {
        if (q.role == JOIN_SHM_CONSUMER) {
            // Relaxed: a lone consumer stored tail itself (program order, or the watcher's acquire
            // of kArmed); MPMC consumers only pick where to look, the slot's seq decides.
            const uint64_t position = h.tail.load(std::memory_order_relaxed);
            const SlotHeader *slot = slotOf(q, position);
            // Acquire: as claimForRead's, so that "work" is a complete element.
            const uint64_t seq = slot->seq.load(std::memory_order_acquire);
            if (seq == 4 * position + kFull || seq == 4 * position + kAbandoned) return true;
            if (static_cast<int64_t>(seq - (4 * position + kFull)) <= 0) {  // not yet published
                if (watch) *watch = {&slot->seq, seq};
                return false;
            }
        } else if (!sharedProducers(q)) {
            // SPSC producer: head is ours (stored in publish); acquire on tail as in claimForWrite.
            const uint64_t head = h.head.load(std::memory_order_relaxed);
            const uint64_t tail = h.tail.load(std::memory_order_acquire);
            if (head - tail < q.capacity) return true;
            if (watch) *watch = {&h.tail, tail};
            return false;
        } else {
            const uint64_t position = h.head.load(std::memory_order_relaxed);  // relaxed: as above
            const SlotHeader *slot = slotOf(q, position);
            // Acquire: as claimForWrite's.
            const uint64_t seq = slot->seq.load(std::memory_order_acquire);
            const auto diff = static_cast<int64_t>(seq - 4 * position);
            if (diff == 0) return true;
            if (diff < 0) {  // the last lap's element is still there
                if (watch) *watch = {&slot->seq, seq};
                return false;
            }
        }
    }
    return true;
}

// ---- the watcher route ----

void *watch(void *arg) noexcept {
    Poller &p = *static_cast<Poller *>(arg);
    const Queue &q = *p.queue;  // only fields fixed at open, and the segment
    WaitWord &w = wordOf(q);
    for (;;) {
        // Acquire: pairs with the release store of kArmed in armWatcher (sliceNs, the cursors).
        const uint32_t s = p.state.load(std::memory_order_acquire);
        if (s == kStop) return nullptr;
        if (s != kArmed) {
            futexPrivate(p.state, FUTEX_WAIT, s);
            continue;
        }
        const int64_t slice = p.sliceNs.load(std::memory_order_relaxed);
        const int64_t deadline = slice > 0 ? deadlineAfter(monotonicNs(), slice) : INT64_MAX;
        // Like the io_uring route's futex wait, we fire on any wake-up, not only on work: the
        // user's next arming then runs stuckSlice (a woken waiter finding the next slot claimed
        // but unpublished is how a dead claimant shows).
        uint32_t seen = p.seen.load(std::memory_order_relaxed);  // announced by armWatcher
        for (bool woken = false, first = true;; first = false) {
            if (!first) seen = announceWaiter(w);
            // Seq_cst: against closePoller's store of kStop and its load of the word.
            if (p.state.load(std::memory_order_seq_cst) != kArmed) break;
            if (woken || workAt(q) || monotonicNs() >= deadline) {
                // kFiring, then E, then kFired: the user, who drains E, waits out kFiring, so it
                // neither returns early believing us armed nor drains before our write landed.
                uint32_t expected = kArmed;
                if (p.state.compare_exchange_strong(expected, kFiring, std::memory_order_relaxed)) {
                    signalFd(p);
                    // Release: our write of E happens before the user's drain. A CAS, not a store:
                    // closePoller may have moved us to kStop meanwhile.
                    expected = kFiring;
                    p.state.compare_exchange_strong(expected, kFired, std::memory_order_release,
                                                    std::memory_order_relaxed);
                }
                break;
            }
            sleepOn(w, seen, deadline);
            woken = w.word.load(std::memory_order_relaxed) != seen;  // relaxed: a hint; workAt decides
        }
    }
}

int startWatcher(Poller &p) noexcept {
    const int r = startThread(p.watcher, watch, &p);
    if (r != 0) return -r;
    p.watcherStarted = true;
    return 0;
}

void armWatcher(Queue &q, Poller &p) noexcept {
    // Acquire: pairs with the watcher's release of kFired (its write of E).
    uint32_t s = p.state.load(std::memory_order_acquire);
    while (s == kFiring) {  // the watcher is one write away from kFired
        sched_yield();
        s = p.state.load(std::memory_order_acquire);
    }
    if (s == kArmed) return;
    if (s == kFired) drainFd(p);
    const int64_t slice = stuckSlice(q);
    if (slice < 0 || q.held || !p.watcherStarted) {        // no watcher: stay readable, never miss work
        p.state.store(kFired, std::memory_order_relaxed);  // only this thread acts outside kArmed
        signalFd(p);
        return;
    }
    // Announce here, in the user's thread, as the io_uring route does: however late the watcher
    // thread runs, a publish after this point has changed the word it first sleeps on. Announcing
    // in the watcher would miss one that came before: if it stands behind a slot whose claimant
    // died, workAt does not see it, and only stuckSlice above (ours alone) finds that slot.
    const uint32_t seen = announceWaiter(wordOf(q));
    if (workAt(q)) {
        p.state.store(kFired, std::memory_order_relaxed);  // as above
        signalFd(p);
        return;
    }
    p.seen.store(seen, std::memory_order_relaxed);
    p.sliceNs.store(slice, std::memory_order_relaxed);
    // Release: seen, sliceNs and our cursor stores are visible to the watcher that sees kArmed.
    p.state.store(kArmed, std::memory_order_release);
    futexPrivate(p.state, FUTEX_WAKE, 1);
}

// io_uring failed after it had worked (out of memory, or fds): go on with a watcher.
void switchToWatcher(Queue &q, Poller &p) noexcept {
    closeUring(p.uring);
    p.armed = false;
    p.watcherRoute = true;
    drainFd(p);
    startWatcher(p);  // if even this fails, armWatcher keeps the fd readable
    armWatcher(q, p);
}

// ---- the io_uring route ----

void armUring(Queue &q, Poller &p) noexcept {
    Uring &u = p.uring;
    if (p.armed) {
        if (!waitEnded(u)) return;                       // still waiting, and still valid: bit 0 stays set until a wake
        int r = enter(u, 0, 0, IORING_ENTER_GETEVENTS);  // runs the deferred completions
        if (r == -EEXIST) {                              // another thread than the ring's: a fresh ring
            closeUring(u);
            r = openUring(u, p.eventFd);
        }
        if (r < 0) return switchToWatcher(q, p);
        dropCompletions(u);
        p.armed = false;
        p.signalled = true;  // posting those completions signalled E too
    }
    if (p.signalled) {
        drainFd(p);
        p.signalled = false;
    }
    const int64_t slice = stuckSlice(q);
    WaitWord &w = wordOf(q);
    const uint32_t seen = announceWaiter(w);
    if (slice < 0 || q.held || workAt(q)) {
        signalFd(p);
        p.signalled = true;
        return;
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
        unsigned tail = *u.sqTail;
        io_uring_sqe *s = nextSqe(u, tail);
        prepareFutexWait(s, w.word, seen);
        unsigned n = 1;
        if (slice > 0) {
            s->flags = IOSQE_IO_LINK;
            p.timeout = {slice / 1'000'000'000, slice % 1'000'000'000};
            io_uring_sqe *t = nextSqe(u, tail);
            t->opcode = IORING_OP_LINK_TIMEOUT;
            t->addr = reinterpret_cast<uintptr_t>(&p.timeout);
            t->len = 1;
            n = 2;
        }
        publishSqes(u, tail);
        const int r = enter(u, n, 0, 0);
        if (r == static_cast<int>(n)) {
            p.armed = true;
            return;
        }
        if (r != -EEXIST) break;
        closeUring(u);  // submitted from another thread than the ring's: a fresh ring, then again
        if (openUring(u, p.eventFd) < 0) break;
    }
    switchToWatcher(q, p);
}

int fdError(const Queue &q, int err, const char *what) noexcept {
    return fail(err, "cannot make a pollable fd for \"%s\": %s: %s", q.name, what, std::strerror(err));
}

int openPoller(Queue &q) noexcept {
    auto *p = new (std::nothrow) Poller;
    if (!p) return fail(ENOMEM, "out of memory for the pollable fd of \"%s\"", q.name);
    p->owner = q.owner;
    p->queue = &q;
    p->eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->eventFd < 0) {
        const int err = errno;
        delete p;
        return fdError(q, err, "eventfd");
    }
    int route = uringRoute.load(std::memory_order_relaxed);
    bool uring = false;
    if (route == kUnknown) {  // the first fd of the process: the first route that passes the probe
        if (routeLimit() == kNoUring) {
            route = kNoUring;
        } else if (routeLimit() == kDeferred && deferredWorks()) {
            route = kDeferred;
            uring = openUring(p->uring, p->eventFd, route) == 0;
        } else {
            // The probed ring is kept: closing it would interrupt this thread.
            route = openProbed(p->uring, kInterrupting) ? kInterrupting : kNoUring;
            uring = route == kInterrupting && resignal(p->uring, p->eventFd);
            if (route == kInterrupting && !uring) closeUring(p->uring);
        }
        uringRoute.store(route, std::memory_order_relaxed);
    } else if (route != kNoUring) {
        uring = openUring(p->uring, p->eventFd, route) == 0;
    }
    if (!uring) {
        p->watcherRoute = true;
        if (int r = startWatcher(*p)) {
            close(p->eventFd);
            delete p;
            return fdError(q, -r, "cannot start its watcher thread");
        }
    }
    q.poller = p;
    return 0;
}

}  // namespace

void rearm(Queue &q) noexcept {
    Poller &p = *q.poller;
    if (p.watcherRoute)
        armWatcher(q, p);
    else
        armUring(q, p);
}

int pollerFd(Queue &q) noexcept {
    if (!q.poller) {
        if (int r = openPoller(q)) return r;
    }
    rearm(q);
    return q.poller->eventFd;
}

void closePoller(Queue &q) noexcept {
    Poller *p = q.poller;
    if (!p) return;
    q.poller = nullptr;
    // After fork the child has no watcher thread and must not touch the parent's io_uring: it only
    // closes its copies of the fds and unmaps its copies of the rings.
    if (p->watcherStarted && p->owner == currentProcess()) {
        // Seq_cst, then a full fence before wakeAll reads the word: the watcher either sees kStop
        // after announcing itself, or it announced before our read and wakeAll wakes it.
        p->state.store(kStop, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        wakeAll(wordOf(q));
        futexPrivate(p->state, FUTEX_WAKE, 1);
        pthread_join(p->watcher, nullptr);
    }
    // E first: its epoll registrations go with the file, at once. Closing the ring cancels the
    // futex wait in flight, later, from a kernel worker, and that completion signals E (the ring
    // holds E's counter, not its file): closed the other way round, a loop in epoll_wait on E could
    // wake for a handle already closed (seen under both sanitizers).
    close(p->eventFd);
    closeUring(p->uring);
    delete p;
}

int waitAny(Queue *const *queues, int *ready, unsigned n, int64_t timeoutNs) noexcept {
    // Not zeroed, as ready is not: scan writes the first n (zeroing 64 cost 130 instructions).
    Watch watch[JOIN_SHM_WAIT_MAX];
    auto scan = [&] {
        int count = 0;
        for (unsigned i = 0; i < n; ++i)
            count += ready[i] = queues[i]->held || workAt(*queues[i], &watch[i]);
        return count;
    };
    int count = scan();
    if (count || timeoutNs == 0) return count ? count : -ETIMEDOUT;
    // While spinning, an item whose watched word has not moved is still idle (see Watch), and its
    // ready stays 0. Relaxed: a hint; workAt decides.
    auto look = [&] {
        int found = 0;
        for (unsigned i = 0; i < n; ++i) {
            const Watch &w = watch[i];
            if (!w.word || w.word->load(std::memory_order_relaxed) != w.value)
                found += ready[i] = workAt(*queues[i], &watch[i]);
        }
        return found;
    };
    // Spin as the blocking calls do (for the least of the handles' spin times), then sleep.
    int64_t spinNs = queues[0]->spinNs;
    for (unsigned i = 1; i < n; ++i)
        if (queues[i]->spinNs < spinNs) spinNs = queues[i]->spinNs;
    int64_t deadline;
    if (spinFirst(spinNs, timeoutNs, deadline, [&] { return (count = look()) != 0; })) return count;
    WaitWord *words[JOIN_SHM_WAIT_MAX];
    uint32_t seen[JOIN_SHM_WAIT_MAX];
    for (;;) {
        for (unsigned i = 0; i < n; ++i)
            seen[i] = markWaiter(*(words[i] = &wordOf(*queues[i])));
        waiterBarrier();
        if ((count = scan())) return count;
        const int64_t now = monotonicNs();
        if (now >= deadline) return -ETIMEDOUT;
        int64_t until = deadline;
        bool retry = false;
        for (unsigned i = 0; i < n; ++i) {
            const int64_t slice = stuckSlice(*queues[i]);
            if (slice < 0) retry = true;
            if (slice > 0 && now + slice < until) until = now + slice;
        }
        if (retry) continue;
        if (!sleepOnAny(words, seen, n, until)) {
            constexpr int64_t kSliceNs = 1'000'000;  // see the top of this file
            sleepOn(*words[0], seen[0], until - now < kSliceNs ? until : now + kSliceNs);
        }
    }
}

}  // namespace join::shm
