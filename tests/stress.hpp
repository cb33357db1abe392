// What the stress tests (mpsc, mpmc, endpoint, blocking) share: the message format and its
// verification, result areas in anonymous shared memory, participants run as processes or threads
// under a watchdog, and the many-producers/many-consumers run itself.
//
// Participants never use Catch2 macros (not thread-safe in Catch2 v2, and meaningless in a forked
// child): they write what went wrong into a Report, and the test's own thread asserts on it.
//
// JOIN_SHM_STRESS_SCALE (default 1.0) scales message counts, e.g. 0.05 for sanitizer builds.
// JOIN_SHM_STRESS_WATCHDOG_S (default 120) bounds one run; past it, children are killed and the
// test fails (threads cannot be killed: the program reports and exits instead).
#pragma once

#include "common.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace stress {

// ---------------------------------------------------------------------------------------------
// Scale, clocks

inline double envNumber(const char *name, double fallback) {
    const char *text = std::getenv(name);
    if (!text || !*text) return fallback;
    char *end = nullptr;
    double value = std::strtod(text, &end);
    return end != text && value > 0 ? value : fallback;
}

inline double scale() {
    static const double value = envNumber("JOIN_SHM_STRESS_SCALE", 1.0);
    return value;
}

// n scaled by JOIN_SHM_STRESS_SCALE, never below atLeast.
inline uint64_t scaled(uint64_t n, uint64_t atLeast = 1) {
    const double x = static_cast<double>(n) * scale();
    const uint64_t r = x < 1.0 ? 0 : static_cast<uint64_t>(x);
    return r < atLeast ? atLeast : r;
}

inline int64_t watchdogNs() {
    static const double seconds = envNumber("JOIN_SHM_STRESS_WATCHDOG_S", 120.0);
    return static_cast<int64_t>(seconds * 1e9);
}

inline int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline void sleepNs(int64_t ns) {
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// Polls pred (every 100 us at first, then up to every 2 ms) until it holds or timeoutNs passed.
// For waiting on another process's progress flag, never for ordering.
template <class Pred>
bool waitUntil(Pred pred, int64_t timeoutNs = 10'000'000'000) {
    const int64_t deadline = nowNs() + timeoutNs;
    int64_t pause = 100'000;
    while (!pred()) {
        if (nowNs() > deadline) return false;
        sleepNs(pause);
        if (pause < 2'000'000) pause *= 2;
    }
    return true;
}

inline const char *policyName(join_shm_policy policy) {
    return policy == JOIN_SHM_SPSC   ? "SPSC"
           : policy == JOIN_SHM_MPSC ? "MPSC"
           : policy == JOIN_SHM_MPMC ? "MPMC"
                                     : "BROADCAST";
}

// ---------------------------------------------------------------------------------------------
// The message: who sent it, its place in that sender's sequence, a payload derived from both,
// and a checksum over everything. A torn copy (parts of two messages) fails the payload or the
// checksum test.

inline uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

constexpr uint32_t kData = 0x44415441;  // "DATA"
constexpr uint32_t kStop = 0x53544f50;  // "STOP": a consumer that takes it stops
constexpr size_t kPayloadWords = 13;

struct Message {
    uint32_t producer;
    uint32_t kind;
    uint64_t seq;
    uint64_t payload[kPayloadWords];
    uint64_t checksum;
};
static_assert(sizeof(Message) == 128, "two cache lines, so a torn copy is likely to show");

inline uint64_t payloadWord(uint32_t producer, uint32_t kind, uint64_t seq, size_t i) {
    return mix((uint64_t{producer} << 40) ^ (uint64_t{kind} << 8) ^ (seq * 0x100000001b3ull) ^ i);
}

inline uint64_t checksumOf(const Message &m) {
    uint64_t h = mix((uint64_t{m.producer} << 32) | m.kind);
    h = mix(h ^ m.seq);
    for (uint64_t w : m.payload)
        h = mix(h ^ w);
    return h;
}

inline Message makeMessage(uint32_t producer, uint64_t seq, uint32_t kind = kData) {
    Message m;
    m.producer = producer;
    m.kind = kind;
    m.seq = seq;
    for (size_t i = 0; i < kPayloadWords; ++i)
        m.payload[i] = payloadWord(producer, kind, seq, i);
    m.checksum = checksumOf(m);
    return m;
}

// nullptr if m is a whole message, else what is wrong with it.
inline const char *damage(const Message &m) {
    if (m.kind != kData && m.kind != kStop) return "unknown kind (garbage or a torn copy)";
    for (size_t i = 0; i < kPayloadWords; ++i)
        if (m.payload[i] != payloadWord(m.producer, m.kind, m.seq, i))
            return "payload does not match its (producer, seq) (torn copy)";
    if (m.checksum != checksumOf(m)) return "checksum mismatch (torn copy)";
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Anonymous MAP_SHARED memory: written by forked children or threads alike, read by the test
// after waitpid/join (both order the children's writes before the parent's reads).

template <class T>
class SharedArray {
public:
    explicit SharedArray(size_t n) : n_(n ? n : 1) {
        void *p = mmap(nullptr, n_ * sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error(std::string("mmap: ") + std::strerror(errno));
        p_ = static_cast<T *>(p);
        for (size_t i = 0; i < n_; ++i)
            new (&p_[i]) T();
    }
    ~SharedArray() {
        for (size_t i = 0; i < n_; ++i)
            p_[i].~T();
        munmap(p_, n_ * sizeof(T));
    }
    SharedArray(const SharedArray &) = delete;
    SharedArray &operator=(const SharedArray &) = delete;
    T &operator[](size_t i) const { return p_[i]; }
    T *data() const { return p_; }
    size_t size() const { return n_; }

private:
    size_t n_;
    T *p_;
};

// What one participant did and the first thing that went wrong.
struct Report {
    std::atomic<uint64_t> progress{0};  // messages handled so far, for the watchdog's account
    std::atomic<uint64_t> failures{0};
    std::atomic<bool> described{false};  // first[] is complete (release/acquire with text())
    char first[512] = {};                // written only by the participant that owns this report

    void fail(const char *format, ...) __attribute__((format(printf, 2, 3))) {
        if (failures.fetch_add(1) != 0) return;
        va_list args;
        va_start(args, format);
        std::vsnprintf(first, sizeof first, format, args);
        va_end(args);
        described.store(true, std::memory_order_release);
    }
    bool ok() const { return failures.load() == 0; }
    std::string text() const {
        const uint64_t n = failures.load();
        if (n == 0) return "ok";
        const std::string what = described.load(std::memory_order_acquire) ? first : "(being described)";
        return what + " (" + std::to_string(n) + " failure(s) in all)";
    }
};

// ---------------------------------------------------------------------------------------------
// Participants as processes or threads, with a watchdog.

enum class Mode { Processes, Threads };

inline const char *modeName(Mode mode) { return mode == Mode::Processes ? "processes" : "threads"; }

class Group {
public:
    // status describes the participants' progress for a failure message; stuck() says that one of
    // them gave up in a way that leaves the others waiting forever (e.g. a consumer that could not
    // open), so there is no point in waiting for the watchdog.
    explicit Group(Mode mode, std::function<std::string()> status = {}, std::function<bool()> stuck = {})
        : mode_(mode), deadline_(nowNs() + watchdogNs()), status_(std::move(status)), stuck_(std::move(stuck)) {}
    ~Group() {
        // Reached early only when the test unwinds: end what we started, never leave it running.
        if (mode_ == Mode::Processes) {
            for (Member &m : members_)
                if (m.pid > 0 && !m.finished) kill(m.pid, SIGKILL);
        }
        wait();
    }
    Group(const Group &) = delete;
    Group &operator=(const Group &) = delete;

    // Runs body in a new child process (which leaves with _exit, never returning into Catch2) or
    // thread. Returns the child's pid (0 for a thread).
    pid_t spawn(std::string label, std::function<void()> body) {
        members_.push_back({std::move(label), 0, false, {}});
        Member &m = members_.back();
        if (mode_ == Mode::Threads) {
            auto shared = state_;
            m.thread = std::thread([shared, body]() {
                try {
                    body();
                } catch (...) {
                    shared->threw.fetch_add(1);
                }
                std::lock_guard<std::mutex> lock(shared->mutex);
                ++shared->finished;
                shared->cv.notify_all();
            });
            return 0;
        }
        std::fflush(nullptr);  // or the child would flush the parent's buffered output again
        const pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        if (pid == 0) {
            // If the test program itself is killed (e.g. by meson's timeout), take the children
            // along instead of leaving them asleep in a ring forever.
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(71);
            int code = 0;
            try {
                body();
            } catch (...) {
                code = 70;
            }
            _exit(code);
        }
        m.pid = pid;
        return pid;
    }

    // Ends a child on purpose (SIGKILL) and reaps it; its death is not reported as a problem.
    void killAndReap(pid_t pid) {
        for (Member &m : members_)
            if (m.pid == pid && !m.finished) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
                m.finished = true;
            }
    }

    // Waits for every participant. "" when all ended normally; otherwise what went wrong
    // (abnormal exit, signal, watchdog, stuck). Children still running past the deadline (or once
    // stuck) are SIGKILLed and reaped; threads cannot be, so the program reports and exits.
    std::string wait() {
        std::string problems;
        int64_t pause = 100'000;
        for (;;) {
            const bool running = mode_ == Mode::Threads ? !threadsFinished(pause) : reapChildren(problems);
            if (!running) break;
            const bool late = nowNs() > deadline_, gaveUp = stuck_ && stuck_();
            if (late || gaveUp) {
                std::string why =
                    late ? "watchdog: still running after " + std::to_string(watchdogNs() / 1'000'000'000) + " s"
                         : "a participant gave up and left the others waiting";
                if (mode_ == Mode::Threads) {
                    std::fprintf(stderr, "stress: %s; threads cannot be killed, ending the program; %s\n", why.c_str(),
                                 status_ ? status_().c_str() : "");
                    std::fflush(stderr);
                    std::_Exit(3);
                }
                problems += why + "; killed:";
                for (Member &m : members_)
                    if (!m.finished) {
                        problems += " " + m.label;
                        kill(m.pid, SIGKILL);
                        waitpid(m.pid, nullptr, 0);
                        m.finished = true;
                    }
                problems += "; ";
                if (status_) problems += status_();
                break;
            }
            if (mode_ == Mode::Processes) sleepNs(pause);
            if (pause < 5'000'000) pause *= 2;
        }
        if (mode_ == Mode::Threads) {
            for (Member &m : members_)
                if (m.thread.joinable()) m.thread.join();
            if (int threw = state_->threw.exchange(0))
                problems += std::to_string(threw) + " thread(s) ended with an exception; ";
        }
        return problems;
    }

private:
    struct Member {
        std::string label;
        pid_t pid;
        bool finished;
        std::thread thread;
    };
    struct ThreadState {
        std::mutex mutex;
        std::condition_variable cv;
        size_t finished = 0;
        std::atomic<int> threw{0};
    };

    // Waits up to pauseNs for every thread to finish.
    bool threadsFinished(int64_t pauseNs) {
        std::unique_lock<std::mutex> lock(state_->mutex);
        return state_->cv.wait_for(lock, std::chrono::nanoseconds(pauseNs),
                                   [&] { return state_->finished == members_.size(); });
    }

    // Reaps the children that ended, noting abnormal ends. True while some still run.
    bool reapChildren(std::string &problems) {
        bool running = false;
        for (Member &m : members_) {
            if (m.finished) continue;
            int status = 0;
            pid_t r = waitpid(m.pid, &status, WNOHANG);
            if (r == 0) {
                running = true;
                continue;
            }
            m.finished = true;
            if (r < 0)
                problems += m.label + ": waitpid failed; ";
            else if (WIFSIGNALED(status))
                problems += m.label + " (pid " + std::to_string(m.pid) + ") died of signal " +
                            std::to_string(WTERMSIG(status)) + "; ";
            else if (WEXITSTATUS(status) != 0)
                problems += m.label + " exited with status " + std::to_string(WEXITSTATUS(status)) + "; ";
        }
        return running;
    }

    Mode mode_;
    int64_t deadline_;
    std::function<std::string()> status_;
    std::function<bool()> stuck_;
    std::vector<Member> members_;  // threads keep no pointer into it
    std::shared_ptr<ThreadState> state_ = std::make_shared<ThreadState>();
};

// ---------------------------------------------------------------------------------------------
// Verification. Each consumer keeps a bitmap over every (producer, seq) it may receive, in shared
// memory, and checks on the spot: intact, in range, not seen before by it, and after the last one
// it saw from that producer (strictly the next one when it is the only consumer). The test then
// checks across consumers that every message was received exactly once.

class Ledger {
public:
    Ledger(unsigned producers, unsigned consumers, uint64_t perProducer)
        : producers_(producers),
          consumers_(consumers),
          perProducer_(perProducer),
          words_((uint64_t{producers} * perProducer + 63) / 64),
          bits_(words_ * consumers),
          reports_(consumers) {}

    Report &report(unsigned consumer) const { return reports_[consumer]; }
    unsigned consumers() const { return consumers_; }

    // Per-consumer view, used inside the consumer only.
    class View {
    public:
        View(const Ledger &ledger, unsigned consumer, bool onlyConsumer)
            : ledger_(ledger),
              consumer_(consumer),
              strict_(onlyConsumer),
              bits_(&ledger.bits_[consumer * ledger.words_]),
              last_(ledger.producers_, -1),
              report_(ledger.report(consumer)) {}

        // Checks one received data message.
        void receive(const Message &m) {
            ++count_;
            if ((count_ & 63) == 0) report_.progress.store(count_, std::memory_order_relaxed);
            if (const char *why = damage(m)) {
                report_.fail("consumer %u: message #%llu received is damaged: %s (producer field %u, seq field %llu)",
                             consumer_, (unsigned long long)count_, why, m.producer, (unsigned long long)m.seq);
                return;
            }
            if (m.kind != kData || m.producer >= ledger_.producers_ || m.seq >= ledger_.perProducer_) {
                report_.fail("consumer %u: message #%llu is out of range (kind %x, producer %u, seq %llu)", consumer_,
                             (unsigned long long)count_, m.kind, m.producer, (unsigned long long)m.seq);
                return;
            }
            const uint64_t bit = m.producer * ledger_.perProducer_ + m.seq;
            uint64_t &word = bits_[bit / 64];
            const uint64_t mask = uint64_t{1} << (bit % 64);
            int64_t &last = last_[m.producer];
            const auto seq = static_cast<int64_t>(m.seq);
            if (word & mask)
                report_.fail("consumer %u: producer %u seq %llu received twice", consumer_, m.producer,
                             (unsigned long long)m.seq);
            else if (strict_ ? seq != last + 1 : seq <= last)
                report_.fail("consumer %u: producer %u out of order: seq %llu after seq %lld (expected %s)", consumer_,
                             m.producer, (unsigned long long)m.seq, (long long)last,
                             strict_ ? "the next one" : "a later one");
            word |= mask;
            if (seq > last) last = seq;
        }
        void finish() { report_.progress.store(count_, std::memory_order_relaxed); }
        uint64_t count() const { return count_; }

    private:
        const Ledger &ledger_;
        unsigned consumer_;
        bool strict_;
        uint64_t *bits_;
        std::vector<int64_t> last_;
        Report &report_;
        uint64_t count_ = 0;
    };

    // After every consumer finished: "" if every message was received by exactly one consumer.
    std::string exactlyOnce() const {
        uint64_t missing = 0, duplicated = 0;
        std::string first;
        const uint64_t total = uint64_t{producers_} * perProducer_;
        for (uint64_t w = 0; w < words_; ++w) {
            uint64_t once = 0, twice = 0;
            for (unsigned c = 0; c < consumers_; ++c) {
                const uint64_t v = bits_[c * words_ + w];
                twice |= once & v;
                once |= v;
            }
            uint64_t valid = ~uint64_t{0};
            if (w == words_ - 1 && total % 64) valid = (uint64_t{1} << (total % 64)) - 1;
            const uint64_t lost = ~once & valid, dup = twice & valid;
            missing += static_cast<uint64_t>(__builtin_popcountll(lost));
            duplicated += static_cast<uint64_t>(__builtin_popcountll(dup));
            if (first.empty() && (lost | dup)) {
                const uint64_t bit = w * 64 + static_cast<uint64_t>(__builtin_ctzll(lost | dup));
                first = std::string(lost ? "never received" : "received by two consumers") + ": producer " +
                        std::to_string(bit / perProducer_) + " seq " + std::to_string(bit % perProducer_);
            }
        }
        if (!missing && !duplicated) return "";
        return std::to_string(missing) + " message(s) of " + std::to_string(total) + " never received, " +
               std::to_string(duplicated) + " received by more than one consumer; first: " + first;
    }

private:
    unsigned producers_, consumers_;
    uint64_t perProducer_, words_;
    SharedArray<uint64_t> bits_;
    SharedArray<Report> reports_;
};

// ---------------------------------------------------------------------------------------------
// The stress run: `producers` participants each push perProducer messages, then the last one to
// finish pushes one STOP per consumer (every data message is then ahead of every STOP); each of
// `consumers` participants receives until it takes a STOP. Every handle is opened by the
// participant that uses it.

enum class Ops {
    Blocking,  // push / pop only
    Mixed,     // rotate push, timed_push, try_push_n, reserve/commit; pop, timed_pop, try_pop_n, peek/release
};

struct StressConfig {
    join_shm_policy policy;
    uint64_t capacity;
    unsigned producers;
    unsigned consumers;
    uint64_t perProducer;
    Mode mode;
    Ops ops;
    int64_t spinNs = 0;  // join_shm_options.spin_ns: 0 default, negative sleeps at once
};

inline std::string describe(const StressConfig &c) {
    char text[256];
    std::snprintf(text, sizeof text, "%s capacity %llu, %u producer(s) x %llu message(s) -> %u consumer(s), %s, %s%s",
                  policyName(c.policy), (unsigned long long)c.capacity, c.producers, (unsigned long long)c.perProducer,
                  c.consumers, modeName(c.mode), c.ops == Ops::Blocking ? "push/pop only" : "mixed calls",
                  c.spinNs < 0 ? ", no spinning" : "");
    return text;
}

constexpr int64_t kStallNs = 20'000'000'000;  // a timed call that waits this long has stalled
constexpr unsigned kBatch = 8;
constexpr uint64_t kRotateEvery = 128;  // messages per call style in Ops::Mixed

inline int openWith(join_shm_queue **q, const char *name, const StressConfig &c, join_shm_role role) {
    join_shm_options options{};
    options.size = sizeof options;
    options.spin_ns = c.spinNs;
    return join_shm_queue_open_ex(q, name, c.policy, role, sizeof(Message), c.capacity, &options);
}

// Samples the inspection calls; they must stay within [0, capacity] while others act.
inline void checkCounts(join_shm_queue *q, const StressConfig &c, Report &report, const char *who) {
    const uint64_t pending = join_shm_pending(q), available = join_shm_available(q);
    const int full = join_shm_full(q), empty = join_shm_empty(q);
    if (pending > c.capacity || available > c.capacity || (full != 0 && full != 1) || (empty != 0 && empty != 1))
        report.fail(
            "%s: inspection out of range during the run: pending %llu, available %llu, full %d, empty %d "
            "(capacity %llu)",
            who, (unsigned long long)pending, (unsigned long long)available, full, empty,
            (unsigned long long)c.capacity);
}

// Shared by the participants of one run.
struct RunState {
    std::atomic<unsigned> producersDone{0};
    std::atomic<int> stuck{0};  // someone gave up in a way that leaves others waiting forever
};

inline void producerBody(const char *name, const StressConfig &c, unsigned p, Report &report, RunState &state) {
    char who[48];
    std::snprintf(who, sizeof who, "producer %u", p);
    join_shm_queue *q = nullptr;
    int r = openWith(&q, name, c, JOIN_SHM_PRODUCER);
    if (r != 0) report.fail("%s: open returned %d (%s)", who, r, join_shm_last_error_detail());
    uint64_t seq = 0;
    Message batch[kBatch];
    while (q && seq < c.perProducer) {
        const unsigned style = c.ops == Ops::Blocking ? 0 : static_cast<unsigned>((seq / kRotateEvery + p) % 4);
        const char *call = "push";
        Message m = makeMessage(p, seq);
        if (style == 0) {
            r = join_shm_push(q, &m);
        } else if (style == 1) {
            call = "timed_push";
            r = join_shm_timed_push(q, &m, kStallNs);
        } else if (style == 2) {
            call = "try_push_n";
            uint64_t n = c.perProducer - seq, toBoundary = kRotateEvery - seq % kRotateEvery;
            n = n < kBatch ? n : kBatch;
            n = n < toBoundary ? n : toBoundary;
            for (uint64_t i = 0; i < n; ++i)
                batch[i] = makeMessage(p, seq + i);
            int64_t moved = join_shm_try_push_n(q, batch, n);
            if (moved > static_cast<int64_t>(n)) {
                report.fail("%s: try_push_n(%llu) returned %lld", who, (unsigned long long)n, (long long)moved);
                break;
            }
            if (moved > 0) {
                seq += static_cast<uint64_t>(moved) - 1;  // the last one is counted below
                r = 0;
            } else if (moved == -EAGAIN) {
                call = "push after try_push_n";
                r = join_shm_push(q, &m);
            } else {
                r = static_cast<int>(moved);
            }
        } else {
            call = "try_reserve";
            void *slot = nullptr;
            r = join_shm_try_reserve(q, &slot);
            if (r == 0) {
                std::memcpy(slot, &m, sizeof m);
                call = "commit";
                r = join_shm_commit(q);
            } else if (r == -EAGAIN) {
                call = "push after try_reserve";
                r = join_shm_push(q, &m);
            }
        }
        if (r != 0) {
            report.fail("%s: %s of seq %llu returned %d (%s)", who, call, (unsigned long long)seq, r,
                        join_shm_last_error_detail());
            break;
        }
        ++seq;
        if ((seq & 1023) == 0) {
            report.progress.store(seq, std::memory_order_relaxed);
            checkCounts(q, c, report, who);
        }
    }
    report.progress.store(seq, std::memory_order_relaxed);
    // The last producer to finish sends the STOPs: every data message is already in the ring.
    if (state.producersDone.fetch_add(1) + 1 == c.producers) {
        if (!q) r = openWith(&q, name, c, JOIN_SHM_PRODUCER);
        for (unsigned i = 0; i < c.consumers; ++i) {
            Message stop = makeMessage(p, i, kStop);
            if (!q || (r = join_shm_timed_push(q, &stop, kStallNs)) != 0) {
                report.fail("%s: pushing STOP %u returned %d (%s)", who, i, r, join_shm_last_error_detail());
                state.stuck = 1;
                break;
            }
        }
    }
    join_shm_queue_close(q);
}

inline void consumerBody(const char *name, const StressConfig &c, unsigned index, const Ledger &ledger,
                         RunState &state) {
    Report &report = ledger.report(index);
    char who[48];
    std::snprintf(who, sizeof who, "consumer %u", index);
    join_shm_queue *q = nullptr;
    int r = openWith(&q, name, c, JOIN_SHM_CONSUMER);
    if (r != 0) {
        report.fail("%s: open returned %d (%s)", who, r, join_shm_last_error_detail());
        state.stuck = 1;
        return;
    }
    // Where a batch takes more than one STOP, this consumer hands the extra ones back, so that
    // every consumer gets its own.
    join_shm_queue *returns = nullptr;
    if (c.consumers > 1 && (r = openWith(&returns, name, c, JOIN_SHM_PRODUCER)) != 0)
        report.fail("%s: opening a producer handle returned %d (%s)", who, r, join_shm_last_error_detail());
    Ledger::View view(ledger, index, c.consumers == 1);
    Message batch[kBatch];
    unsigned stops = 0;
    uint64_t calls = 0;  // for the call style and to sample the counts now and then
    while (stops == 0) {
        ++calls;
        const unsigned style = c.ops == Ops::Blocking ? 0 : static_cast<unsigned>((calls / kRotateEvery + index) % 4);
        const char *call = "pop";
        int64_t got = 1;
        if (style == 0) {
            r = join_shm_pop(q, &batch[0]);
        } else if (style == 1) {
            call = "timed_pop";
            r = join_shm_timed_pop(q, &batch[0], kStallNs);
        } else if (style == 2) {
            call = "try_pop_n";
            got = join_shm_try_pop_n(q, batch, kBatch);
            if (got > static_cast<int64_t>(kBatch)) {
                report.fail("%s: try_pop_n(%u) returned %lld", who, kBatch, (long long)got);
                state.stuck = 1;
                break;
            }
            if (got == -EAGAIN) {
                call = "pop after try_pop_n";
                got = 1;
                r = join_shm_pop(q, &batch[0]);
            } else {
                r = got > 0 ? 0 : static_cast<int>(got);
            }
        } else {
            call = "try_peek";
            const void *slot = nullptr;
            r = join_shm_try_peek(q, &slot);
            if (r == 0) {
                // Read the element in place, then again just before handing the slot back: a
                // producer must not write it in between.
                std::memcpy(&batch[0], slot, sizeof(Message));
                if (damage(batch[0]) == nullptr && std::memcmp(&batch[0], slot, sizeof(Message)) != 0)
                    report.fail("%s: a peeked slot changed before release (producer %u seq %llu)", who,
                                batch[0].producer, (unsigned long long)batch[0].seq);
                call = "release";
                r = join_shm_release(q);
            } else if (r == -EAGAIN) {
                call = "pop after try_peek";
                r = join_shm_pop(q, &batch[0]);
            }
        }
        if (r != 0) {
            report.fail("%s: %s returned %d (%s) after %llu message(s)", who, call, r, join_shm_last_error_detail(),
                        (unsigned long long)view.count());
            state.stuck = 1;
            break;
        }
        for (int64_t i = 0; i < got; ++i) {
            if (batch[i].kind == kStop && damage(batch[i]) == nullptr)
                ++stops;
            else if (stops != 0)
                report.fail("%s: a data message came after a STOP (producer %u seq %llu)", who, batch[i].producer,
                            (unsigned long long)batch[i].seq);
            else
                view.receive(batch[i]);
        }
        if ((calls & 1023) == 0) checkCounts(q, c, report, who);
    }
    for (unsigned i = 1; i < stops && returns; ++i) {
        Message stop = makeMessage(0, 1000 + i, kStop);
        if ((r = join_shm_timed_push(returns, &stop, kStallNs)) != 0)
            report.fail("%s: handing back a STOP returned %d (%s)", who, r, join_shm_last_error_detail());
    }
    view.finish();
    join_shm_queue_close(returns);
    join_shm_queue_close(q);
}

// Runs the configuration and asserts, in the calling (test) thread, on everything the
// participants reported. Returns the wall time in seconds.
inline double runStress(const StressConfig &c) {
    INFO(describe(c));
    test::ShmName name("stress");
    Ledger ledger(c.producers, c.consumers, c.perProducer);
    SharedArray<Report> producerReports(c.producers);
    SharedArray<RunState> state(1);

    auto status = [&]() {
        std::string s;
        for (unsigned p = 0; p < c.producers; ++p)
            s += "producer " + std::to_string(p) + " pushed " + std::to_string(producerReports[p].progress.load()) +
                 " (" + producerReports[p].text() + "); ";
        for (unsigned i = 0; i < c.consumers; ++i)
            s += "consumer " + std::to_string(i) + " received " + std::to_string(ledger.report(i).progress.load()) +
                 " (" + ledger.report(i).text() + "); ";
        return s;
    };
    const int64_t start = nowNs();
    std::string problems;
    {
        Group group(c.mode, status, [&] { return state[0].stuck.load() != 0; });
        const char *ring = name.c_str();
        for (unsigned i = 0; i < c.consumers; ++i)
            group.spawn("consumer " + std::to_string(i), [&, i] { consumerBody(ring, c, i, ledger, state[0]); });
        for (unsigned p = 0; p < c.producers; ++p)
            group.spawn("producer " + std::to_string(p),
                        [&, p] { producerBody(ring, c, p, producerReports[p], state[0]); });
        problems = group.wait();
    }
    const double seconds = static_cast<double>(nowNs() - start) / 1e9;
    CHECK(problems == "");
    for (unsigned p = 0; p < c.producers; ++p) {
        INFO("producer " << p);
        CHECK(producerReports[p].text() == "ok");
    }
    for (unsigned i = 0; i < c.consumers; ++i) {
        INFO("consumer " << i);
        CHECK(ledger.report(i).text() == "ok");
    }
    CHECK(ledger.exactlyOnce() == "");

    // Quiet now: the counts are exact, and the ring must be empty.
    join_shm_queue *q = nullptr;
    REQUIRE(openWith(&q, name, c, JOIN_SHM_PRODUCER) == 0);
    CHECK(join_shm_pending(q) == 0);
    CHECK(join_shm_available(q) == c.capacity);
    CHECK(join_shm_empty(q) == 1);
    join_shm_queue_close(q);
    return seconds;
}

}  // namespace stress
