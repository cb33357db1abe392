// Broadcast rings: every subscriber sees every message (block mode) or exactly what it did not
// lose (overwrite mode), never a torn one; subscribers and publishers die and are succeeded; bad
// input is refused with a detail. Subscribers and publishers are forked processes; children open
// their own handles, report through shared memory and leave with _exit, never touching Catch2.
#include "common.hpp"
#include "stress.hpp"

#include "../src/layout.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>
#include <join/shared.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

using stress::Message;
using stress::Report;
using stress::SharedArray;

join_shm_options broadcastOptions(uint32_t overflow, uint32_t maxSubscribers = 0, uint32_t joinAt = 0) {
    join_shm_options o{};
    o.size = sizeof o;
    o.overflow = overflow;
    o.max_subscribers = maxSubscribers;
    o.join_at = joinAt;
    return o;
}

int openBroadcast(join_shm_queue **q, const char *name, join_shm_role role, uint64_t capacity, uint32_t overflow,
                  uint32_t maxSubscribers = 0, uint32_t joinAt = 0) {
    const join_shm_options o = broadcastOptions(overflow, maxSubscribers, joinAt);
    return join_shm_queue_open_ex(q, name, JOIN_SHM_BROADCAST, role, sizeof(Message), capacity, &o);
}

pid_t forkChild(const std::function<bool()> &body) {
    const pid_t pid = fork();
    if (pid == 0) _exit(body() ? 0 : 1);
    REQUIRE(pid > 0);
    return pid;
}

int reap(pid_t pid) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return status;
}

// What a subscriber saw, in shared memory.
struct Tally {
    std::atomic<bool> joined{false};
    std::atomic<uint64_t> received{0};
    std::atomic<uint64_t> lost{0};
};

// Receives messages of one publisher, in order, until seq last; checks each. In overwrite mode a
// gap must equal the loss reported by the -EOVERFLOW just before it.
bool subscribe(const char *name, uint64_t capacity, uint32_t overflow, uint64_t last, Tally &tally, Report &report,
               bool slow = false) {
    join_shm_queue *q = nullptr;
    if (int r = openBroadcast(&q, name, JOIN_SHM_CONSUMER, capacity, overflow)) {
        report.fail("subscriber open: %s (%s)", join_shm_strerror(r), join_shm_last_error_detail());
        return false;
    }
    tally.joined.store(true);
    uint64_t expected = 0, reportedLoss = 0;
    const int64_t deadline = stress::nowNs() + stress::watchdogNs();
    for (;;) {
        Message m;
        const int r = join_shm_timed_pop(q, &m, 1'000'000'000);
        if (r == -EOVERFLOW) {
            const uint64_t total = join_shm_lost(q);
            if (total <= tally.lost.load()) report.fail("-EOVERFLOW without a loss (%llu)", (unsigned long long)total);
            reportedLoss += total - tally.lost.load();  // overrun again before it could read: both count
            tally.lost.store(total);
            continue;
        }
        if (r == -ETIMEDOUT && stress::nowNs() < deadline) continue;
        if (r != 0) {
            report.fail("pop: %s (%s) after %llu", join_shm_strerror(r), join_shm_last_error_detail(),
                        (unsigned long long)expected);
            break;
        }
        if (const char *why = stress::damage(m)) {
            report.fail("message after seq %llu: %s", (unsigned long long)expected, why);
            break;
        }
        if (m.seq != expected + reportedLoss) {
            report.fail("seq %llu, expected %llu (+%llu reported lost)", (unsigned long long)m.seq,
                        (unsigned long long)expected, (unsigned long long)reportedLoss);
            break;
        }
        expected = m.seq + 1;
        reportedLoss = 0;
        tally.received.fetch_add(1, std::memory_order_relaxed);
        if (m.seq == last) break;
        if (slow && m.seq % 64 == 0) stress::sleepNs(50'000);
    }
    join_shm_queue_close(q);
    return report.ok();
}

bool publishAll(const char *name, uint64_t capacity, uint32_t overflow, uint64_t count, uint32_t producer = 0,
                uint64_t first = 0) {
    join_shm_queue *q = nullptr;
    if (openBroadcast(&q, name, JOIN_SHM_PRODUCER, capacity, overflow) != 0) return false;
    bool ok = true;
    for (uint64_t seq = first; seq < first + count && ok; ++seq) {
        const Message m = stress::makeMessage(producer, seq);
        ok = join_shm_push(q, &m) == 0;
    }
    join_shm_queue_close(q);
    return ok;
}

void runStream(uint64_t capacity, uint32_t overflow, uint64_t count, unsigned subscribers, bool slowLast) {
    test::ShmName name("bc");
    SharedArray<Tally> tallies(subscribers);
    SharedArray<Report> reports(subscribers);
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < subscribers; ++i)
        pids.push_back(forkChild([&, i] {
            return subscribe(name, capacity, overflow, count - 1, tallies[i], reports[i],
                             slowLast && i + 1 == subscribers);
        }));
    REQUIRE(stress::waitUntil([&] {
        for (unsigned i = 0; i < subscribers; ++i)
            if (!tallies[i].joined.load()) return false;
        return true;
    }));
    REQUIRE(publishAll(name, capacity, overflow, count));
    for (unsigned i = 0; i < subscribers; ++i) {
        const int status = reap(pids[i]);
        INFO("subscriber " << i << ": " << reports[i].text());
        CHECK(reports[i].ok());
        CHECK(WIFEXITED(status));
        CHECK(tallies[i].received.load() + tallies[i].lost.load() == count);
        if (overflow == JOIN_SHM_OVERFLOW_BLOCK) CHECK(tallies[i].lost.load() == 0);
    }
}

// The history_readers mask of a ring's header (layout.hpp), through a read-only mapping of our own.
uint64_t historyReaders(const char *name) {
    const int fd = open(("/dev/shm/" + std::string(name)).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    void *p = mmap(nullptr, sizeof(join::shm::Header), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    REQUIRE(p != MAP_FAILED);
    const auto &h = *static_cast<const join::shm::Header *>(p);
    const uint64_t mask = h.history_readers[0].load() | h.history_readers[1].load();
    munmap(p, sizeof(join::shm::Header));
    return mask;
}

}  // namespace

TEST_CASE("block mode: three subscriber processes each receive every message, in order, whole", "[broadcast]") {
    // At capacities 1 and 3 the publisher waits for all three subscribers nearly every message, and
    // four processes on two CPUs hand over by spinning and yielding: about 9 us (capacity 1) and
    // 3.5 us (capacity 3) a message in release, so this case takes about a minute there.
    const uint64_t capacity = GENERATE(1000, 3, 1);
    const uint64_t count = stress::scaled(4'000'000, 20'000);
    INFO("capacity " << capacity << ", " << count << " messages");
    runStream(capacity, JOIN_SHM_OVERFLOW_BLOCK, count, 3, false);
}

TEST_CASE("overwrite mode: a slow subscriber loses messages, and received + lost == published, exactly",
          "[broadcast]") {
    const uint64_t capacity = GENERATE(1, 8, 256);
    INFO("capacity " << capacity);
    runStream(capacity, JOIN_SHM_OVERFLOW_OVERWRITE, stress::scaled(400'000, 20'000), 2, true);
}

TEST_CASE("overwrite mode: -EOVERFLOW once with the count, then the oldest message still in the ring", "[broadcast]") {
    test::ShmName name("bco");
    join_shm_queue *pub = nullptr, *sub = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 4, JOIN_SHM_OVERFLOW_OVERWRITE) == 0);
    REQUIRE(openBroadcast(&sub, name, JOIN_SHM_CONSUMER, 4, JOIN_SHM_OVERFLOW_OVERWRITE) == 0);
    for (uint64_t i = 0; i < 10; ++i) {
        const Message m = stress::makeMessage(0, i);
        REQUIRE(join_shm_try_push(pub, &m) == 0);  // never waits
    }
    Message m;
    CHECK(join_shm_try_pop(sub, &m) == -EOVERFLOW);
    CHECK(std::string(join_shm_last_error_detail()).find("lost 7 messages") != std::string::npos);
    CHECK(join_shm_lost(sub) == 7);
    for (uint64_t i = 7; i < 10; ++i) {
        REQUIRE(join_shm_try_pop(sub, &m) == 0);
        CHECK(m.seq == i);
    }
    CHECK(join_shm_try_pop(sub, &m) == -EAGAIN);
    const void *slot = nullptr;
    CHECK(join_shm_try_peek(sub, &slot) == -EOPNOTSUPP);
    CHECK(std::string(join_shm_last_error_detail()).find("overwrite") != std::string::npos);
    CHECK(join_shm_lost(pub) == 0);
    join_shm_queue_close(sub);
    join_shm_queue_close(pub);
}

TEST_CASE("late joiners start at the next message, or at the oldest one still in the ring", "[broadcast]") {
    test::ShmName name("bcj");
    join_shm_queue *pub = nullptr, *next = nullptr, *oldest = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 4, 0) == 0);
    for (uint64_t i = 0; i < 3; ++i) {
        const Message m = stress::makeMessage(0, i);
        REQUIRE(join_shm_try_push(pub, &m) == 0);  // nobody subscribed: nothing gates
    }
    REQUIRE(openBroadcast(&next, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_NEXT) == 0);
    REQUIRE(openBroadcast(&oldest, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0);
    Message m;
    CHECK(join_shm_try_pop(next, &m) == -EAGAIN);
    for (uint64_t i = 0; i < 3; ++i) {
        REQUIRE(join_shm_try_pop(oldest, &m) == 0);
        CHECK(m.seq == i);
    }
    const Message m3 = stress::makeMessage(0, 3);
    REQUIRE(join_shm_try_push(pub, &m3) == 0);
    REQUIRE(join_shm_try_pop(next, &m) == 0);
    CHECK(m.seq == 3);
    CHECK(join_shm_pending(oldest) == 1);
    join_shm_queue_close(oldest);
    join_shm_queue_close(next);
    join_shm_queue_close(pub);
}

TEST_CASE("block mode: the slowest subscriber gates the publisher; peek holds its slot until release", "[broadcast]") {
    test::ShmName name("bcg");
    join_shm_queue *pub = nullptr, *a = nullptr, *b = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 2, JOIN_SHM_OVERFLOW_BLOCK) == 0);
    REQUIRE(openBroadcast(&a, name, JOIN_SHM_CONSUMER, 2, 0) == 0);
    REQUIRE(openBroadcast(&b, name, JOIN_SHM_CONSUMER, 2, 0) == 0);
    Message m = stress::makeMessage(0, 0);
    REQUIRE(join_shm_try_push(pub, &m) == 0);
    m = stress::makeMessage(0, 1);
    void *w = nullptr;
    REQUIRE(join_shm_try_reserve(pub, &w) == 0);  // zero-copy publish
    std::memcpy(w, &m, sizeof m);
    REQUIRE(join_shm_commit(pub) == 0);
    m = stress::makeMessage(0, 2);
    CHECK(join_shm_try_push(pub, &m) == -EAGAIN);
    CHECK(join_shm_timed_push(pub, &m, 1'000'000) == -ETIMEDOUT);
    CHECK(join_shm_full(pub) == 1);
    Message two[2];
    REQUIRE(join_shm_try_pop_n(a, two, 2) == 2);
    CHECK((two[0].seq == 0 && two[1].seq == 1 && !stress::damage(two[1])));
    CHECK(join_shm_try_push(pub, &m) == -EAGAIN);  // b has not moved
    const void *slot = nullptr;
    REQUIRE(join_shm_try_peek(b, &slot) == 0);
    CHECK(static_cast<const Message *>(slot)->seq == 0);
    CHECK(join_shm_try_push(pub, &m) == -EAGAIN);  // still held by the peek
    REQUIRE(join_shm_release(b) == 0);
    CHECK(join_shm_try_push(pub, &m) == 0);
    CHECK(join_shm_pending(b) == 2);
    join_shm_queue_close(b);  // a closed subscriber gates nobody
    REQUIRE(join_shm_try_pop(a, &m) == 0);
    m = stress::makeMessage(0, 3);
    CHECK(join_shm_try_push(pub, &m) == 0);
    join_shm_queue_close(a);
    join_shm_queue_close(pub);
}

TEST_CASE("block mode: peek lends no slot the publisher may still overwrite (a JOIN_OLDEST subscriber's history)",
          "[broadcast]") {
    // The publisher's last rescan saw only a subscriber that keeps up, so it may write most of a
    // lap without looking again; a JOIN_OLDEST subscriber joining now starts in that lap's history.
    test::ShmName name("bch");
    join_shm_queue *pub = nullptr, *keeper = nullptr, *oldest = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 4, JOIN_SHM_OVERFLOW_BLOCK) == 0);
    REQUIRE(openBroadcast(&keeper, name, JOIN_SHM_CONSUMER, 4, 0) == 0);
    uint64_t seq = 0;
    Message m;
    for (; seq < 7; ++seq) {
        m = stress::makeMessage(0, seq);
        REQUIRE(join_shm_try_push(pub, &m) == 0);
        REQUIRE(join_shm_try_pop(keeper, &m) == 0);
    }
    REQUIRE(openBroadcast(&oldest, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0);
    bool lentOne = false;  // the check below must run: one publish after the join lends a slot
    for (int round = 0; round < 2 && !lentOne; ++round) {
        const void *slot = nullptr;
        const int r = join_shm_try_peek(oldest, &slot);
        if (r == -EAGAIN) {  // its history is not lent: publish the next one and look again
            m = stress::makeMessage(0, seq++);
            REQUIRE(join_shm_try_push(pub, &m) == 0);
            continue;
        }
        REQUIRE(r == 0);
        Message lent;
        std::memcpy(&lent, slot, sizeof lent);
        CHECK(!stress::damage(lent));
        // The keeper keeps up; the publisher fills whatever room it has.
        for (int i = 0; i < 8; ++i) {
            const int64_t got = join_shm_try_pop_n(keeper, &m, 1);
            REQUIRE((got == 1 || got == -EAGAIN));
            m = stress::makeMessage(0, seq);
            if (join_shm_try_push(pub, &m) == 0) ++seq;
        }
        CHECK(std::memcmp(slot, &lent, sizeof lent) == 0);  // nobody wrote over the lent slot
        REQUIRE(join_shm_release(oldest) == 0);
        lentOne = true;
    }
    CHECK(lentOne);
    join_shm_queue_close(oldest);
    join_shm_queue_close(keeper);
    join_shm_queue_close(pub);
}

TEST_CASE("a JOIN_OLDEST subscriber is marked as reading history until it reaches its join, closes or is replaced",
          "[broadcast]") {
    // While the mark is set the publisher stores elements word by word; a mark left behind would
    // slow it for good, one missing would let it memcpy over a slot being read.
    test::ShmName name("bcm");
    join_shm_queue *pub = nullptr, *keeper = nullptr, *oldest = nullptr, *next = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 4, JOIN_SHM_OVERFLOW_BLOCK) == 0);
    REQUIRE(openBroadcast(&oldest, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0);
    CHECK(historyReaders(name) == 0);  // nothing published yet: no history
    join_shm_queue_close(oldest);
    REQUIRE(openBroadcast(&keeper, name, JOIN_SHM_CONSUMER, 4, 0) == 0);
    Message m;
    for (uint64_t seq = 0; seq < 3; ++seq) {
        m = stress::makeMessage(0, seq);
        REQUIRE(join_shm_try_push(pub, &m) == 0);
        REQUIRE(join_shm_try_pop(keeper, &m) == 0);
    }
    CHECK(historyReaders(name) == 0);  // the keeper joined at the next message
    REQUIRE(openBroadcast(&oldest, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0);
    CHECK(historyReaders(name) != 0);
    for (uint64_t seq = 0; seq < 3; ++seq) {
        CHECK(historyReaders(name) != 0);
        REQUIRE(join_shm_try_pop(oldest, &m) == 0);
        CHECK(m.seq == seq);
    }
    CHECK(historyReaders(name) == 0);  // it reached the head it read at join
    join_shm_queue_close(oldest);
    REQUIRE(openBroadcast(&oldest, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0);
    CHECK(historyReaders(name) != 0);
    join_shm_queue_close(oldest);
    CHECK(historyReaders(name) == 0);  // closed in its history
    // A subscriber that dies in its history leaves its mark to whoever takes its record next.
    const pid_t child = forkChild([&] {
        join_shm_queue *q = nullptr;
        return openBroadcast(&q, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_OLDEST) == 0;  // no close
    });
    CHECK(reap(child) == 0);
    CHECK(historyReaders(name) != 0);
    REQUIRE(openBroadcast(&next, name, JOIN_SHM_CONSUMER, 4, 0, 0, JOIN_SHM_JOIN_NEXT) == 0);
    CHECK(historyReaders(name) == 0);
    join_shm_queue_close(next);
    join_shm_queue_close(keeper);
    join_shm_queue_close(pub);
}

TEST_CASE("JOIN_OLDEST subscribers joining a busy block-mode publisher read whole messages, in order", "[broadcast]") {
    // A JOIN_OLDEST joiner's history is the one place where a block-mode reader may meet a slot
    // the publisher is writing: it validates each copy and skips what was overwritten, and from
    // its join on it misses nothing. Thousands of joins race a publisher that a steady subscriber
    // lets overwrite the oldest slots.
    test::ShmName name("bco");
    constexpr uint64_t kCapacity = 8;
    const uint64_t count = stress::scaled(200'000, 20'000);
    join_shm_queue *pub = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, kCapacity, JOIN_SHM_OVERFLOW_BLOCK) == 0);
    Report steadyReport, joinerReport;
    std::atomic<bool> steadyJoined{false}, done{false};
    std::atomic<uint64_t> published{0}, joins{0}, historyJoins{0};
    std::thread steady([&] {  // gates the publisher, so that it keeps overwriting the joiners' history
        join_shm_queue *q = nullptr;
        if (openBroadcast(&q, name, JOIN_SHM_CONSUMER, kCapacity, 0) != 0) {
            steadyReport.fail("open: %s", join_shm_last_error_detail());
            steadyJoined.store(true);
            return;
        }
        steadyJoined.store(true);
        for (uint64_t seq = 0; seq < count; ++seq) {
            Message m;
            const int r = join_shm_timed_pop(q, &m, 10'000'000'000);
            if (r != 0 || stress::damage(m) || m.seq != seq) {
                steadyReport.fail("r %d, seq %llu where %llu was due", r, (unsigned long long)m.seq,
                                  (unsigned long long)seq);
                break;
            }
        }
        join_shm_queue_close(q);
    });
    std::thread joiner([&] {
        while (!done.load()) {
            join_shm_queue *q = nullptr;
            const uint64_t before = published.load();
            if (openBroadcast(&q, name, JOIN_SHM_CONSUMER, kCapacity, 0, 0, JOIN_SHM_JOIN_OLDEST) != 0) {
                joinerReport.fail("open: %s", join_shm_last_error_detail());
                return;
            }
            // Its join read a head of at most this plus one (a push may be under way): from there on
            // nothing may be missing.
            const uint64_t contiguousFrom = published.load() + 1;
            joins.fetch_add(1);
            uint64_t previous = ~uint64_t{0};
            for (uint64_t i = 0; i < 3 * kCapacity && !done.load(); ++i) {
                Message m;
                const int r = join_shm_timed_pop(q, &m, 10'000'000);
                if (r == -ETIMEDOUT) continue;
                const bool gap = previous != ~uint64_t{0} && m.seq != previous + 1 && m.seq > contiguousFrom;
                if (r != 0 || stress::damage(m) || (previous != ~uint64_t{0} && m.seq <= previous) || gap) {
                    joinerReport.fail("r %d, seq %llu after %llu", r, (unsigned long long)m.seq,
                                      (unsigned long long)previous);
                    return;
                }
                if (previous == ~uint64_t{0} && m.seq < before) historyJoins.fetch_add(1);
                previous = m.seq;
            }
            join_shm_queue_close(q);
        }
    });
    REQUIRE(stress::waitUntil([&] { return steadyJoined.load(); }));
    for (uint64_t seq = 0; seq < count; ++seq) {
        // Halfway, hold still until a joiner has read history: racing joiners (slow under TSan) can
        // all find theirs overwritten, and then the history path would go unchecked.
        if (seq == count / 2) CHECK(stress::waitUntil([&] { return historyJoins.load() > 0; }));
        const Message m = stress::makeMessage(0, seq);
        if (join_shm_push(pub, &m) != 0) break;
        published.store(seq + 1);
    }
    steady.join();
    done.store(true);
    joiner.join();
    join_shm_queue_close(pub);
    INFO("steady: " << steadyReport.text() << "; joiner: " << joinerReport.text());
    CHECK(published.load() == count);
    CHECK(steadyReport.ok());
    CHECK(joinerReport.ok());
    INFO(joins.load() << " joins");
}

TEST_CASE("a sleeping subscriber is woken by a publish, and its fd polls readable", "[broadcast]") {
    test::ShmName name("bcw");
    join_shm_queue *pub = nullptr, *sub = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 8, 0) == 0);
    REQUIRE(openBroadcast(&sub, name, JOIN_SHM_CONSUMER, 8, 0) == 0);
    const int fd = join_shm_queue_fd(sub);
    REQUIRE(fd >= 0);
    pollfd p{fd, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 0);
    std::thread publisher([&] {
        stress::sleepNs(20'000'000);
        const Message m = stress::makeMessage(0, 0);
        join_shm_push(pub, &m);
    });
    CHECK(poll(&p, 1, 10'000) == 1);
    Message m;
    CHECK(join_shm_pop(sub, &m) == 0);
    CHECK(m.seq == 0);
    publisher.join();
    join_shm_queue_close(sub);
    join_shm_queue_close(pub);
}

TEST_CASE("bad input: too many subscribers, a second publisher, mismatched parameters", "[broadcast]") {
    test::ShmName name("bcb");
    join_shm_queue *pub = nullptr, *pub2 = nullptr, *s1 = nullptr, *s2 = nullptr, *s3 = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 16, JOIN_SHM_OVERFLOW_BLOCK, 2) == 0);
    CHECK(openBroadcast(&pub2, name, JOIN_SHM_PRODUCER, 16, 0) == -EBUSY);
    CHECK(std::string(join_shm_last_error_detail()).find("producer") != std::string::npos);
    REQUIRE(openBroadcast(&s1, name, JOIN_SHM_CONSUMER, 16, 0) == 0);
    REQUIRE(openBroadcast(&s2, name, JOIN_SHM_CONSUMER, 16, 0, 2) == 0);
    CHECK(openBroadcast(&s3, name, JOIN_SHM_CONSUMER, 16, 0) == -EBUSY);
    CHECK(std::string(join_shm_last_error_detail()).find("max_subscribers") != std::string::npos);
    CHECK(openBroadcast(&s3, name, JOIN_SHM_CONSUMER, 16, JOIN_SHM_OVERFLOW_OVERWRITE) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("overflow mode block") != std::string::npos);
    CHECK(openBroadcast(&s3, name, JOIN_SHM_CONSUMER, 16, 0, 3) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("max_subscribers 2") != std::string::npos);
    CHECK(s3 == nullptr);
    join_shm_queue_close(s2);
    CHECK(openBroadcast(&s3, name, JOIN_SHM_CONSUMER, 16, 0) == 0);  // its place came free

    test::ShmName other("bcb2");
    join_shm_queue *q = nullptr;
    CHECK(openBroadcast(&q, other, JOIN_SHM_CONSUMER, 16, 3) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("overflow") != std::string::npos);
    CHECK(openBroadcast(&q, other, JOIN_SHM_CONSUMER, 16, 0, 128) == -EINVAL);
    CHECK(openBroadcast(&q, other, JOIN_SHM_CONSUMER, 16, 0, 0, 3) == -EINVAL);
    join_shm_options o = broadcastOptions(JOIN_SHM_OVERFLOW_BLOCK);
    CHECK(join_shm_queue_open_ex(&q, other, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 16, &o) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("broadcast") != std::string::npos);
    o = broadcastOptions(0);
    o.reserved = 1;
    CHECK(join_shm_queue_open_ex(&q, other, JOIN_SHM_BROADCAST, JOIN_SHM_CONSUMER, 8, 16, &o) == -EINVAL);
    CHECK(join_shm_queue_open(&q, other, static_cast<join_shm_policy>(5), JOIN_SHM_CONSUMER, 8, 16) == -EINVAL);
    CHECK(q == nullptr);
    join_shm_endpoint *e = nullptr;
    CHECK(join_shm_endpoint_open(&e, other, JOIN_SHM_BROADCAST, JOIN_SHM_SIDE_A, 8, 16) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("policy") != std::string::npos);
    CHECK(join_shm_lost(nullptr) == 0);
    join_shm_queue_close(s3);
    join_shm_queue_close(s1);
    join_shm_queue_close(pub);
}

TEST_CASE("subscribers join and leave at random during a stream; a steady one misses nothing", "[broadcast]") {
    test::ShmName name("bcr");
    const uint64_t count = stress::scaled(400'000, 20'000);
    constexpr unsigned kChurners = 3;
    SharedArray<Tally> tallies(kChurners + 1);
    SharedArray<Report> reports(kChurners + 1);
    SharedArray<std::atomic<bool>> done(1);
    std::vector<pid_t> pids;
    pids.push_back(
        forkChild([&] { return subscribe(name, 64, JOIN_SHM_OVERFLOW_BLOCK, count - 1, tallies[0], reports[0]); }));
    for (unsigned c = 1; c <= kChurners; ++c)
        pids.push_back(forkChild([&, c] {
            uint64_t rng = stress::mix(getpid());
            tallies[c].joined.store(true);
            while (!done[0].load()) {
                join_shm_queue *q = nullptr;
                if (openBroadcast(&q, name, JOIN_SHM_CONSUMER, 64, 0) != 0) {
                    reports[c].fail("open: %s", join_shm_last_error_detail());
                    return false;
                }
                rng = stress::mix(rng);
                const uint64_t want = rng % 2000;
                uint64_t previous = ~uint64_t{0};
                for (uint64_t i = 0; i < want && !done[0].load(); ++i) {
                    Message m;
                    const int r = join_shm_timed_pop(q, &m, 10'000'000);
                    if (r == -ETIMEDOUT) continue;
                    if (r != 0 || stress::damage(m) || (previous != ~uint64_t{0} && m.seq != previous + 1)) {
                        reports[c].fail("r %d, seq %llu after %llu", r, (unsigned long long)m.seq,
                                        (unsigned long long)previous);
                        return false;
                    }
                    previous = m.seq;
                    tallies[c].received.fetch_add(1);
                }
                join_shm_queue_close(q);
            }
            return true;
        }));
    REQUIRE(stress::waitUntil([&] {
        for (unsigned i = 0; i <= kChurners; ++i)
            if (!tallies[i].joined.load()) return false;
        return true;
    }));
    REQUIRE(publishAll(name, 64, JOIN_SHM_OVERFLOW_BLOCK, count));
    reap(pids[0]);
    done[0].store(true);
    for (unsigned i = 1; i <= kChurners; ++i)
        reap(pids[i]);
    for (unsigned i = 0; i <= kChurners; ++i) {
        INFO("subscriber " << i << ": " << reports[i].text());
        CHECK(reports[i].ok());
    }
    CHECK(tallies[0].received.load() == count);
}

TEST_CASE("a SIGKILLed subscriber stops gating the publisher within the grace period; its place is reclaimed",
          "[broadcast]") {
    test::ShmName name("bck");
    const unsigned rounds = static_cast<unsigned>(stress::scaled(20, 4));
    join_shm_queue *pub = nullptr;
    REQUIRE(openBroadcast(&pub, name, JOIN_SHM_PRODUCER, 16, JOIN_SHM_OVERFLOW_BLOCK, 1) == 0);
    SharedArray<Tally> tally(1);
    uint64_t seq = 0;
    int64_t worstStallNs = 0;
    for (unsigned round = 0; round < rounds; ++round) {
        tally[0].joined.store(false);
        // The only subscriber place: a dead holder must be reclaimed for this open to succeed.
        const pid_t pid = forkChild([&] {
            join_shm_queue *q = nullptr;
            if (openBroadcast(&q, name, JOIN_SHM_CONSUMER, 16, 0) != 0) return false;
            tally[0].joined.store(true);
            for (;;) {
                Message m;
                if (join_shm_pop(q, &m) != 0 || stress::damage(m)) return false;
                tally[0].received.fetch_add(1);
            }
        });
        REQUIRE(stress::waitUntil([&] { return tally[0].joined.load(); }));
        // Let it read some, then kill it at a random moment while we publish.
        const uint64_t killAt = seq + 32 + stress::mix(round) % 256;
        for (; seq < killAt + 200; ++seq) {
            if (seq == killAt) {
                kill(pid, SIGKILL);
                reap(pid);
            }
            const Message m = stress::makeMessage(0, seq);
            const int64_t start = stress::nowNs();
            REQUIRE(join_shm_push(pub, &m) == 0);
            if (seq >= killAt) worstStallNs = std::max(worstStallNs, stress::nowNs() - start);
        }
    }
    join_shm_queue_close(pub);
    INFO("worst stall after a kill: " << worstStallNs / 1000 << " us");
    CHECK(worstStallNs < 500'000'000);  // the grace period is 2 ms; generous for sanitizers and a loaded CI
}

TEST_CASE("a SIGKILLed publisher is succeeded at the position it reached; subscribers miss nothing", "[broadcast]") {
    test::ShmName name("bcp");
    const unsigned publishers = static_cast<unsigned>(stress::scaled(12, 4));
    SharedArray<Tally> tally(1);
    SharedArray<Report> report(1);
    SharedArray<std::atomic<uint64_t>> sent(publishers);  // per publisher: messages it may have pushed
    const pid_t sub = forkChild([&] {
        join_shm_queue *q = nullptr;
        if (openBroadcast(&q, name, JOIN_SHM_CONSUMER, 8, 0) != 0) return false;
        tally[0].joined.store(true);
        uint32_t producer = 0;
        uint64_t next = 0;
        for (;;) {
            Message m;
            const int r = join_shm_timed_pop(q, &m, 20'000'000'000);
            if (r != 0 || stress::damage(m)) {
                report[0].fail("r %d (%s)", r, r ? join_shm_last_error_detail() : stress::damage(m));
                return false;
            }
            if (m.producer != producer) {  // a successor: its predecessor's last message was seen whole
                producer = m.producer;
                next = 0;
            }
            if (m.seq != next) {
                report[0].fail("publisher %u: seq %llu, expected %llu", producer, (unsigned long long)m.seq,
                               (unsigned long long)next);
                return false;
            }
            next = m.seq + 1;
            tally[0].received.fetch_add(1);
            if (m.kind == stress::kStop) return true;
        }
    });
    REQUIRE(stress::waitUntil([&] { return tally[0].joined.load(); }));
    for (unsigned p = 0; p < publishers; ++p) {
        const bool last = p + 1 == publishers;
        const pid_t pid = forkChild([&, p, last] {
            join_shm_queue *q = nullptr;
            const int64_t deadline = stress::nowNs() + 10'000'000'000;
            int r;
            while ((r = openBroadcast(&q, name, JOIN_SHM_PRODUCER, 8, 0)) == -EBUSY && stress::nowNs() < deadline)
                stress::sleepNs(1'000'000);  // the killed predecessor may not be reaped yet
            if (r != 0) return false;
            for (uint64_t seq = 0;; ++seq) {
                const Message m = stress::makeMessage(p, seq, last && seq == 1000 ? stress::kStop : stress::kData);
                if (join_shm_push(q, &m) != 0) return false;
                sent[p].store(seq + 1);
                if (last && seq == 1000) return true;
            }
        });
        if (!last) {
            REQUIRE(stress::waitUntil([&] { return sent[p].load() > 100 + stress::mix(p) % 500; }));
            kill(pid, SIGKILL);
        }
        reap(pid);
    }
    const int status = reap(sub);
    INFO(report[0].text());
    CHECK(report[0].ok());
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("the C++ facade: Broadcast::Publisher and Broadcast::Subscriber", "[broadcast]") {
    test::ShmName name("bcf");
    join::Broadcast::Publisher pub(name.name, sizeof(uint64_t), 2, join::Broadcast::Overflow::Overwrite, 4);
    join::Broadcast::Subscriber sub(name.name, sizeof(uint64_t), 2);
    REQUIRE(pub.open() == 0);
    REQUIRE(sub.open() == 0);
    CHECK(sub.open() == -1);
    CHECK(join::lastError == join::Errc::InUse);
    for (uint64_t i = 0; i < 5; ++i)
        REQUIRE(pub.tryPush(&i) == 0);
    uint64_t v = 0;
    CHECK(sub.tryPop(&v) == -1);
    CHECK(join::lastError == std::errc::value_too_large);
    CHECK(sub.lost() == 4);
    REQUIRE(sub.pop(&v) == 0);
    CHECK(v == 4);
    CHECK(sub.timedPop(&v, std::chrono::milliseconds(1)) == -1);
    CHECK(join::lastError == join::Errc::TimedOut);
    join::Broadcast::Subscriber other(name.name, sizeof(uint64_t), 2, join::Broadcast::JoinAt::Oldest,
                                      join::Broadcast::Overflow::Block);
    CHECK(other.open() == -1);
    CHECK(join::lastError == join::Errc::InvalidParam);
}
