// MPSC rings: many producers, one consumer. Every message arrives exactly once, whole, and in its
// producer's order, across processes and across threads; the one consumer role is refused to a
// second holder and taken over from a dead one. The run itself is in stress.hpp.
#include "stress.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <string>

using stress::Message;

namespace {

// A consumer child that pops `pops` messages (checking they are seq 0..pops-1 of producer 0),
// raises *ready, and then holds the role: asleep in join_shm_pop on an empty ring when
// blockInPop, otherwise in pause() with messages still queued.
void holdingConsumer(const char *name, int pops, bool blockInPop, std::atomic<int> &ready, stress::Report &report) {
    join_shm_queue *q = nullptr;
    int r = join_shm_queue_open(&q, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, sizeof(Message), 16);
    if (r != 0) {
        report.fail("consumer open returned %d (%s)", r, join_shm_last_error_detail());
        ready = -1;
        return;
    }
    for (int i = 0; i < pops; ++i) {
        Message m{};
        if ((r = join_shm_timed_pop(q, &m, 5'000'000'000)) != 0 || stress::damage(m) || m.seq != uint64_t(i))
            report.fail("pop %d: returned %d, seq %llu", i, r, (unsigned long long)m.seq);
    }
    ready = 1;
    if (blockInPop) {
        Message m{};
        r = join_shm_pop(q, &m);  // nothing more is pushed: sleeps here until killed
        report.fail("pop on an empty ring returned %d before the consumer was killed", r);
    }
    for (;;)
        pause();
}

}  // namespace

TEST_CASE("four producer processes deliver every message exactly once and in order to one consumer", "[mpsc]") {
    const uint64_t capacity = GENERATE(as<uint64_t>{}, 1, 3, 1000);
    stress::runStress(
        {JOIN_SHM_MPSC, capacity, 4, 1, stress::scaled(1'000'000), stress::Mode::Processes, stress::Ops::Mixed});
}

TEST_CASE("four producer threads, each with its own handle, deliver exactly once and in order", "[mpsc][threads]") {
    const uint64_t capacity = GENERATE(as<uint64_t>{}, 1, 3, 1000);
    stress::runStress(
        {JOIN_SHM_MPSC, capacity, 4, 1, stress::scaled(50'000), stress::Mode::Threads, stress::Ops::Mixed});
}

TEST_CASE("a second MPSC consumer is refused with EBUSY naming the holder's pid", "[mpsc]") {
    test::ShmName name("mpsc-busy");
    stress::SharedArray<std::atomic<int>> ready(1);
    stress::SharedArray<stress::Report> report(1);
    stress::Group group(stress::Mode::Processes);
    const pid_t holder = group.spawn("holder", [&] { holdingConsumer(name, 0, true, ready[0], report[0]); });
    REQUIRE(stress::waitUntil([&] { return ready[0].load() != 0; }));
    REQUIRE(ready[0].load() == 1);

    join_shm_queue *second = nullptr;
    CHECK(join_shm_queue_open(&second, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, sizeof(Message), 16) == -EBUSY);
    CHECK(second == nullptr);
    const std::string detail = join_shm_last_error_detail();
    INFO("detail: " << detail << "; holder pid " << holder);
    CHECK(detail.find(std::to_string(holder)) != std::string::npos);

    // Producers are not limited: this process and the holder's peers may push at will.
    join_shm_queue *p1 = nullptr, *p2 = nullptr;
    CHECK(join_shm_queue_open(&p1, name, JOIN_SHM_MPSC, JOIN_SHM_PRODUCER, sizeof(Message), 16) == 0);
    CHECK(join_shm_queue_open(&p2, name, JOIN_SHM_MPSC, JOIN_SHM_PRODUCER, sizeof(Message), 16) == 0);
    join_shm_queue_close(p1);
    join_shm_queue_close(p2);

    group.killAndReap(holder);
    CHECK(report[0].text() == "ok");
    CHECK(group.wait() == "");
}

TEST_CASE("a second MPSC consumer in the holder's own process is refused too, and close frees the role", "[mpsc]") {
    test::ShmName name("mpsc-self");
    join_shm_queue *first = nullptr, *second = nullptr;
    REQUIRE(join_shm_queue_open(&first, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, 8, 3) == 0);
    CHECK(join_shm_queue_open(&second, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, 8, 3) == -EBUSY);
    CHECK(std::string(join_shm_last_error_detail()).find(std::to_string(getpid())) != std::string::npos);
    join_shm_queue_close(first);
    CHECK(join_shm_queue_open(&second, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, 8, 3) == 0);
    join_shm_queue_close(second);
}

TEST_CASE("an MPSC consumer killed with messages queued is taken over, and nothing is lost", "[mpsc]") {
    test::ShmName name("mpsc-takeover");
    join_shm_queue *producer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_MPSC, JOIN_SHM_PRODUCER, sizeof(Message), 16) == 0);
    for (uint64_t i = 0; i < 10; ++i) {
        Message m = stress::makeMessage(0, i);
        REQUIRE(join_shm_try_push(producer, &m) == 0);
    }
    stress::SharedArray<std::atomic<int>> ready(1);
    stress::SharedArray<stress::Report> report(1);
    stress::Group group(stress::Mode::Processes);
    const pid_t holder = group.spawn("holder", [&] { holdingConsumer(name, 4, false, ready[0], report[0]); });
    REQUIRE(stress::waitUntil([&] { return ready[0].load() != 0; }));
    CHECK(report[0].text() == "ok");

    join_shm_queue *next = nullptr;
    REQUIRE(join_shm_queue_open(&next, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, sizeof(Message), 16) == -EBUSY);
    group.killAndReap(holder);
    REQUIRE(join_shm_queue_open(&next, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, sizeof(Message), 16) == 0);
    CHECK(join_shm_pending(next) == 6);
    for (uint64_t i = 4; i < 10; ++i) {
        Message m{};
        REQUIRE(join_shm_try_pop(next, &m) == 0);
        CHECK(stress::damage(m) == nullptr);
        CHECK(m.seq == i);
    }
    Message m{};
    CHECK(join_shm_try_pop(next, &m) == -EAGAIN);
    // And the ring goes on as usual.
    Message more = stress::makeMessage(0, 10);
    REQUIRE(join_shm_try_push(producer, &more) == 0);
    REQUIRE(join_shm_try_pop(next, &m) == 0);
    CHECK(m.seq == 10);
    join_shm_queue_close(next);
    join_shm_queue_close(producer);
    CHECK(group.wait() == "");
}

TEST_CASE("an MPSC consumer killed while asleep in pop is taken over, before and after it is reaped", "[mpsc]") {
    const bool reap = GENERATE(false, true);
    INFO((reap ? "holder reaped before the new open" : "holder a zombie (killed, not reaped) at the new open"));
    test::ShmName name("mpsc-asleep");
    join_shm_queue *producer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_MPSC, JOIN_SHM_PRODUCER, sizeof(Message), 16) == 0);
    for (uint64_t i = 0; i < 3; ++i) {
        Message m = stress::makeMessage(0, i);
        REQUIRE(join_shm_try_push(producer, &m) == 0);
    }
    stress::SharedArray<std::atomic<int>> ready(1);
    stress::SharedArray<stress::Report> report(1);
    stress::Group group(stress::Mode::Processes);
    const pid_t holder = group.spawn("holder", [&] { holdingConsumer(name, 3, true, ready[0], report[0]); });
    REQUIRE(stress::waitUntil([&] { return ready[0].load() != 0; }));

    if (reap) {
        group.killAndReap(holder);
    } else {
        REQUIRE(kill(holder, SIGKILL) == 0);
        siginfo_t info{};
        // WNOWAIT: wait until it is a zombie, but leave it unreaped.
        REQUIRE(waitid(P_PID, static_cast<id_t>(holder), &info, WEXITED | WNOWAIT) == 0);
    }
    join_shm_queue *next = nullptr;
    const int r = join_shm_queue_open(&next, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, sizeof(Message), 16);
    INFO("detail: " << join_shm_last_error_detail());
    REQUIRE(r == 0);
    CHECK(join_shm_pending(next) == 0);
    Message m = stress::makeMessage(0, 3), got{};
    REQUIRE(join_shm_try_push(producer, &m) == 0);
    REQUIRE(join_shm_try_pop(next, &got) == 0);
    CHECK(got.seq == 3);
    CHECK(stress::damage(got) == nullptr);
    join_shm_queue_close(next);
    join_shm_queue_close(producer);
    group.killAndReap(holder);
    CHECK(report[0].text() == "ok");
    CHECK(group.wait() == "");
}
