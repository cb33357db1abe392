// SPSC rings between processes: a forked consumer checks a stream of a million numbered,
// checksummed messages; roles of killed processes come free; inherited handles may be closed.
// Children open their own handles, never touch Catch2, report through a pipe and leave with _exit.
#include "common.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kWatchdog = std::chrono::seconds(120);

// How many messages a stream carries: 1,000,000, scaled down by JOIN_SHM_STRESS_SCALE for slow
// (sanitizer) builds.
uint64_t streamLength() {
    double scale = 1.0;
    if (const char *s = std::getenv("JOIN_SHM_STRESS_SCALE")) scale = std::strtod(s, nullptr);
    if (!(scale > 0.0) || scale > 1.0) scale = 1.0;
    auto n = static_cast<uint64_t>(1'000'000 * scale);
    return n < 10'000 ? 10'000 : n;
}

// A 64-byte message: its number, words derived from the number, and a checksum over both.
struct Message {
    uint64_t seq;
    uint64_t words[6];
    uint64_t checksum;
};
static_assert(sizeof(Message) == 64, "one message is 64 bytes");

uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t checksumOf(const Message &m) {
    uint64_t sum = mix(m.seq);
    for (uint64_t w : m.words)
        sum = mix(sum ^ w);
    return sum;
}

Message messageFor(uint64_t seq) {
    Message m{};
    m.seq = seq;
    for (uint64_t i = 0; i < 6; ++i)
        m.words[i] = mix(seq * 8 + i);
    m.checksum = checksumOf(m);
    return m;
}

// What a child sends back through its pipe before _exit.
struct Report {
    int code;           // 0: all good; otherwise one of the Failure values
    int err;            // the errno of a failing call, if any
    uint64_t index;     // how many messages were fine before the failure (or in all)
    uint64_t got;       // the sequence number seen where index was expected
    uint64_t checksum;  // running sum of the checksums received
};

// Progress both sides publish in memory shared across the fork, so that a watchdog that fires
// can say where the stream stood: a stall (lost wake-up) looks different from a slow machine.
struct Progress {
    std::atomic<uint64_t> sent{0};          // parent: messages pushed
    std::atomic<uint64_t> received{0};      // child: messages popped and checked
    std::atomic<int64_t> longestPushNs{0};  // the longest single push call
    std::atomic<int64_t> longestPopNs{0};   // the longest single pop call
};

struct Unmap {
    void operator()(Progress *p) const { munmap(p, sizeof *p); }
};

std::unique_ptr<Progress, Unmap> sharedProgress() {
    void *p = mmap(nullptr, sizeof(Progress), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return std::unique_ptr<Progress, Unmap>(new (p) Progress);
}

int64_t nsSince(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

void noteLongest(std::atomic<int64_t> &longest, int64_t ns) {
    if (ns > longest.load(std::memory_order_relaxed)) longest.store(ns, std::memory_order_relaxed);
}

enum Failure { kOpenFailed = 1, kPopFailed, kWrongSeq, kBadWords, kBadChecksum, kExtraMessage, kOther };

const char *failureName(int code) {
    switch (code) {
        case 0:
            return "none";
        case kOpenFailed:
            return "open failed";
        case kPopFailed:
            return "pop failed";
        case kWrongSeq:
            return "wrong sequence number";
        case kBadWords:
            return "payload does not match its sequence number";
        case kBadChecksum:
            return "checksum does not match";
        case kExtraMessage:
            return "a message after the last one";
        default:
            return "other";
    }
}

[[noreturn]] void childExit(int fd, const Report &r) {
    ssize_t ignored = write(fd, &r, sizeof r);
    (void)ignored;
    _exit(r.code == 0 ? 0 : 10 + r.code);
}

// Runs BODY in a child that reports through a pipe; the parent side keeps the pid and the read
// end, and kills and reaps the child if the test leaves early.
class Child {
public:
    template <class Body>
    explicit Child(Body body) {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        pid_ = fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            close(fds[0]);
            body(fds[1]);  // ends with childExit or _exit
            _exit(99);
        }
        close(fds[1]);
        readFd_ = fds[0];
    }
    ~Child() {
        if (pid_ > 0 && !reaped_) {
            kill(pid_, SIGKILL);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
        if (readFd_ >= 0) close(readFd_);
    }
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;

    pid_t pid() const { return pid_; }

    // Reaps the child if it exited; returns whether it did.
    bool exited() {
        if (reaped_) return true;
        pid_t r = waitpid(pid_, &status_, WNOHANG);
        if (r == pid_) reaped_ = true;
        return reaped_;
    }

    // Waits for the child until the deadline; kills it past it. Returns whether it exited by itself.
    bool waitUntil(Clock::time_point deadline) {
        while (!exited()) {
            if (Clock::now() >= deadline) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status_, 0);
                reaped_ = true;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    int status() const { return status_; }

    // Reads the child's report (after it exited); code -1 when it sent none.
    Report report() {
        Report r{-1, 0, 0, 0, 0};
        ssize_t n = read(readFd_, &r, sizeof r);
        if (n != static_cast<ssize_t>(sizeof r)) r.code = -1;
        return r;
    }

    // Reads one byte the child sends when it is ready; false if it died or the deadline passed first.
    bool awaitSignal(Clock::time_point deadline) {
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) return false;
            pollfd p{readFd_, POLLIN, 0};
            int r = poll(&p, 1, static_cast<int>(left.count()));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            char byte = 0;
            return read(readFd_, &byte, 1) == 1;  // 0: the child exited without signalling
        }
    }

private:
    pid_t pid_ = -1;
    int readFd_ = -1;
    bool reaped_ = false;
    int status_ = 0;
};

// The consumer side of a stream, in the child: opens its own handle, checks every message.
void consumeStream(int fd, const char *name, uint64_t capacity, uint64_t count, bool batches, Progress *progress) {
    Report r{0, 0, 0, 0, 0};
    join_shm_queue *q = nullptr;
    int err = join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, sizeof(Message), capacity);
    if (err != 0) childExit(fd, {kOpenFailed, err, 0, 0, 0});
    std::vector<Message> batch(batches ? 64 : 1);
    const int64_t deadline = 60'000'000'000;  // per call; the parent's watchdog bounds the whole
    while (r.index < count) {
        int64_t got = 0;
        const auto start = Clock::now();
        if (batches) {
            got = join_shm_try_pop_n(q, batch.data(), batch.size());
            if (got == -EAGAIN) {
                int e = join_shm_timed_pop(q, batch.data(), deadline);
                got = e == 0 ? 1 : e;
            }
        } else {
            int e = join_shm_timed_pop(q, batch.data(), deadline);
            got = e == 0 ? 1 : e;
        }
        noteLongest(progress->longestPopNs, nsSince(start));
        if (got < 0) childExit(fd, {kPopFailed, static_cast<int>(-got), r.index, 0, r.checksum});
        for (int64_t k = 0; k < got; ++k) {
            const Message &m = batch[static_cast<size_t>(k)];
            if (m.seq != r.index) childExit(fd, {kWrongSeq, 0, r.index, m.seq, r.checksum});
            const Message expected = messageFor(m.seq);
            if (std::memcmp(m.words, expected.words, sizeof m.words) != 0)
                childExit(fd, {kBadWords, 0, r.index, m.seq, r.checksum});
            if (m.checksum != checksumOf(m)) childExit(fd, {kBadChecksum, 0, r.index, m.seq, r.checksum});
            r.checksum += m.checksum;
            ++r.index;
        }
        progress->received.store(r.index, std::memory_order_relaxed);
    }
    Message extra{};
    if (r.index > count || join_shm_timed_pop(q, &extra, 10'000'000) != -ETIMEDOUT)
        childExit(fd, {kExtraMessage, 0, r.index, extra.seq, r.checksum});
    join_shm_queue_close(q);
    childExit(fd, r);
}

// Streams COUNT messages from this process to a forked consumer through a ring of CAPACITY.
void streamThroughFork(uint64_t capacity, bool batches) {
    const uint64_t count = streamLength();
    INFO("capacity " << capacity << ", " << count << " messages" << (batches ? ", in batches" : ""));
    test::ShmName name("fork");
    join_shm_queue *producer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(Message), capacity) == 0);

    const auto deadline = Clock::now() + kWatchdog;
    const auto progressMapping = sharedProgress();
    Progress *progress = progressMapping.get();
    Child child([&](int fd) { consumeStream(fd, name, capacity, count, batches, progress); });

    uint64_t sent = 0, checksum = 0;
    bool childDiedEarly = false, timedOut = false;
    std::vector<Message> batch(batches ? 48 : 1);
    while (sent < count) {
        const uint64_t n = batches ? std::min<uint64_t>(batch.size(), count - sent) : 1;
        for (uint64_t k = 0; k < n; ++k)
            batch[k] = messageFor(sent + k);
        uint64_t done = 0;
        while (done < n) {
            int64_t moved;
            const auto start = Clock::now();
            if (batches) {
                moved = join_shm_try_push_n(producer, batch.data() + done, n - done);
            } else {
                int e = join_shm_timed_push(producer, batch.data(), 100'000'000);
                moved = e == 0 ? 1 : e;
            }
            noteLongest(progress->longestPushNs, nsSince(start));
            if (moved > 0) {
                done += static_cast<uint64_t>(moved);
                progress->sent.store(sent + done, std::memory_order_relaxed);
                continue;
            }
            if (moved != -EAGAIN && moved != -ETIMEDOUT) {
                FAIL("push failed at message " << sent + done << ": " << join_shm_strerror(static_cast<int>(moved))
                                               << " (" << join_shm_last_error_detail() << ")");
            }
            if (batches) {  // wait a little for room, then look at the child and the clock
                int e = join_shm_timed_push(producer, batch.data() + done, 100'000'000);
                if (e == 0) ++done;
                if (e != 0 && e != -ETIMEDOUT) FAIL("timed_push failed: " << join_shm_strerror(e));
            }
            if (child.exited()) {
                childDiedEarly = true;
                break;
            }
            if (Clock::now() >= deadline) {
                timedOut = true;
                break;
            }
        }
        if (childDiedEarly || timedOut) break;
        for (uint64_t k = 0; k < n; ++k)
            checksum += batch[k].checksum;
        sent += n;
    }
    join_shm_queue_close(producer);

    const bool exitedByItself = child.waitUntil(deadline);
    const Report report = child.report();
    INFO("sent " << sent << "; child report: " << failureName(report.code) << " (code " << report.code << ", errno "
                 << report.err << "), " << report.index << " good messages, then seq " << report.got
                 << "; exit status 0x" << std::hex << child.status() << std::dec << "; the child had checked "
                 << progress->received.load() << "; longest push " << progress->longestPushNs.load() / 1000
                 << " us, longest pop " << progress->longestPopNs.load() / 1000 << " us");
    CHECK_FALSE(timedOut);
    CHECK(exitedByItself);  // else the watchdog killed it after 120 s
    CHECK_FALSE(childDiedEarly);
    CHECK(sent == count);
    CHECK(WIFEXITED(child.status()));
    CHECK(WEXITSTATUS(child.status()) == 0);
    CHECK(report.code == 0);
    CHECK(report.index == count);
    CHECK(report.checksum == checksum);
}

// A child that opens ROLE, tells the parent, and waits to be killed.
void holdRoleUntilKilled(int fd, const char *name, join_shm_role role) {
    join_shm_queue *q = nullptr;
    if (join_shm_queue_open(&q, name, JOIN_SHM_SPSC, role, 8, 4) != 0) _exit(1);
    if (role == JOIN_SHM_CONSUMER) {
        uint64_t v = 0;
        if (join_shm_try_pop(q, &v) != -EAGAIN) _exit(2);
    }
    char byte = 1;
    if (write(fd, &byte, 1) != 1) _exit(3);
    for (;;)
        pause();
}

}  // namespace

TEST_CASE("a forked consumer receives a million messages in order and intact", "[fork]") {
    for (uint64_t capacity : {1, 7, 144, 1024})
        DYNAMIC_SECTION("capacity " << capacity) { streamThroughFork(capacity, false); }
}

TEST_CASE("a forked consumer receives a stream sent and received in batches", "[fork]") {
    for (uint64_t capacity : {7, 144, 1024})
        DYNAMIC_SECTION("capacity " << capacity) { streamThroughFork(capacity, true); }
}

TEST_CASE("the role of a process killed with SIGKILL is free again", "[fork]") {
    for (join_shm_role role : {JOIN_SHM_PRODUCER, JOIN_SHM_CONSUMER}) {
        for (bool reap : {true, false}) {
            DYNAMIC_SECTION((role == JOIN_SHM_PRODUCER ? "producer" : "consumer")
                            << (reap ? ", reaped" : ", not yet reaped (zombie)")) {
                test::ShmName name("killed");
                Child child([&](int fd) { holdRoleUntilKilled(fd, name, role); });
                REQUIRE(child.awaitSignal(Clock::now() + std::chrono::seconds(30)));

                join_shm_queue *q = nullptr;
                CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, role, 8, 4) == -EBUSY);  // alive: held
                CHECK(q == nullptr);
                REQUIRE(kill(child.pid(), SIGKILL) == 0);
                if (reap) {
                    REQUIRE(child.waitUntil(Clock::now() + std::chrono::seconds(30)));
                    CHECK(WIFSIGNALED(child.status()));
                } else {
                    // Wait until it is a zombie, without reaping it.
                    siginfo_t info{};
                    REQUIRE(waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);
                    CHECK(info.si_code == CLD_KILLED);
                }
                INFO("join_shm_last_error_detail: " << join_shm_last_error_detail());
                REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, role, 8, 4) == 0);
                // The freed role works with a peer opened now.
                join_shm_queue *peer = nullptr;
                const join_shm_role other = role == JOIN_SHM_PRODUCER ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER;
                REQUIRE(join_shm_queue_open(&peer, name, JOIN_SHM_SPSC, other, 8, 4) == 0);
                join_shm_queue *producer = role == JOIN_SHM_PRODUCER ? q : peer;
                join_shm_queue *consumer = role == JOIN_SHM_PRODUCER ? peer : q;
                uint64_t in = 4242, out = 0;
                CHECK(join_shm_try_push(producer, &in) == 0);
                CHECK(join_shm_try_pop(consumer, &out) == 0);
                CHECK(out == 4242);
                join_shm_queue_close(q);
                join_shm_queue_close(peer);
            }
        }
    }
}

TEST_CASE("a consumer killed while waiting is replaced by one that continues where it stopped", "[fork]") {
    test::ShmName name("resume");
    join_shm_queue *producer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 8) == 0);
    for (uint64_t i = 0; i < 5; ++i)
        REQUIRE(join_shm_try_push(producer, &i) == 0);

    // The child pops all five, tells us, then waits in pop on the empty ring until it is killed.
    Child child([&](int fd) {
        join_shm_queue *q = nullptr;
        if (join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 8) != 0) _exit(1);
        for (uint64_t i = 0; i < 5; ++i) {
            uint64_t v = 99;
            if (join_shm_try_pop(q, &v) != 0 || v != i) _exit(2);
        }
        char byte = 1;
        if (write(fd, &byte, 1) != 1) _exit(3);
        uint64_t v = 0;
        join_shm_pop(q, &v);
        _exit(4);  // nothing is pushed before the kill
    });
    REQUIRE(child.awaitSignal(Clock::now() + std::chrono::seconds(30)));
    REQUIRE(kill(child.pid(), SIGKILL) == 0);
    REQUIRE(child.waitUntil(Clock::now() + std::chrono::seconds(30)));
    CHECK(WIFSIGNALED(child.status()));

    for (uint64_t i = 5; i < 8; ++i)
        REQUIRE(join_shm_try_push(producer, &i) == 0);
    join_shm_queue *consumer = nullptr;
    REQUIRE(join_shm_queue_open(&consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 8) == 0);
    CHECK(join_shm_pending(consumer) == 3);
    CHECK(join_shm_available(producer) == 5);
    for (uint64_t i = 5; i < 8; ++i) {
        uint64_t v = 99;
        REQUIRE(join_shm_try_pop(consumer, &v) == 0);
        CHECK(v == i);
    }
    uint64_t v = 0;
    CHECK(join_shm_try_pop(consumer, &v) == -EAGAIN);
    join_shm_queue_close(consumer);
    join_shm_queue_close(producer);
}

TEST_CASE("a handle inherited across fork may be closed in the child without disturbing the parent", "[fork]") {
    test::ShmName name("inherit");
    join_shm_queue *producer = nullptr, *consumer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 16, 4) == 0);
    REQUIRE(join_shm_queue_open(&consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 16, 4) == 0);
    uint64_t in[2] = {1, 2};
    REQUIRE(join_shm_try_push(producer, in) == 0);
    void *slot = nullptr;
    REQUIRE(join_shm_try_reserve(producer, &slot) == 0);  // the parent has a slot reserved, too
    std::memcpy(slot, "reserved slot!!", 16);

    Child child([&](int) {
        join_shm_queue_close(producer);
        join_shm_queue_close(consumer);
        // The parent still holds both roles: the child's close released nothing of theirs.
        join_shm_queue *q = nullptr;
        if (join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 16, 4) != -EBUSY) _exit(1);
        if (join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 16, 4) != -EBUSY) _exit(2);
        _exit(0);
    });
    REQUIRE(child.waitUntil(Clock::now() + std::chrono::seconds(30)));
    CHECK(WIFEXITED(child.status()));
    CHECK(WEXITSTATUS(child.status()) == 0);

    // The parent's handles, roles, element and reservation are intact.
    CHECK(join_shm_pending(consumer) == 1);
    REQUIRE(join_shm_commit(producer) == 0);
    uint64_t out[2] = {0, 0};
    REQUIRE(join_shm_try_pop(consumer, out) == 0);
    CHECK(out[0] == 1);
    CHECK(out[1] == 2);
    char text[16] = {};
    REQUIRE(join_shm_try_pop(consumer, text) == 0);
    CHECK(std::string(text) == "reserved slot!!");
    in[0] = 3;
    REQUIRE(join_shm_try_push(producer, in) == 0);
    REQUIRE(join_shm_try_pop(consumer, out) == 0);
    CHECK(out[0] == 3);
    join_shm_queue *q = nullptr;
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 16, 4) == -EBUSY);
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 16, 4) == -EBUSY);
    join_shm_queue_close(producer);
    join_shm_queue_close(consumer);
}
