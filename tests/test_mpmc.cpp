// MPMC rings: many producers, many consumers. Every message is delivered to exactly one consumer,
// whole, and each consumer sees each producer's messages in order; the inspection calls stay
// within [0, capacity] throughout. The run itself is in stress.hpp.
#include "stress.hpp"

#include <cerrno>
#include <vector>

TEST_CASE("four producer processes deliver every message exactly once across four consumer processes", "[mpmc]") {
    const uint64_t capacity = GENERATE(as<uint64_t>{}, 1, 3, 1000);
    stress::runStress(
        {JOIN_SHM_MPMC, capacity, 4, 4, stress::scaled(1'000'000), stress::Mode::Processes, stress::Ops::Mixed});
}

TEST_CASE("four producer threads and four consumer threads, each with its own handle, deliver exactly once",
          "[mpmc][threads]") {
    const uint64_t capacity = GENERATE(as<uint64_t>{}, 1, 3, 1000);
    stress::runStress(
        {JOIN_SHM_MPMC, capacity, 4, 4, stress::scaled(100'000), stress::Mode::Threads, stress::Ops::Mixed});
}

TEST_CASE("an MPMC ring admits any number of producers and consumers, in one process or many", "[mpmc]") {
    test::ShmName name("mpmc-roles");
    std::vector<join_shm_queue *> handles;
    for (int i = 0; i < 4; ++i)
        for (join_shm_role role : {JOIN_SHM_PRODUCER, JOIN_SHM_CONSUMER}) {
            join_shm_queue *q = nullptr;
            INFO("handle " << handles.size());
            REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_MPMC, role, sizeof(stress::Message), 3) == 0);
            handles.push_back(q);
        }
    stress::SharedArray<stress::Report> report(1);
    stress::Group group(stress::Mode::Processes);
    group.spawn("another process", [&] {
        join_shm_queue *p = nullptr, *c = nullptr;
        int r = join_shm_queue_open(&p, name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, sizeof(stress::Message), 3);
        int s = join_shm_queue_open(&c, name, JOIN_SHM_MPMC, JOIN_SHM_CONSUMER, sizeof(stress::Message), 3);
        if (r != 0 || s != 0) report[0].fail("opens returned %d and %d (%s)", r, s, join_shm_last_error_detail());
        stress::Message m = stress::makeMessage(7, 0);
        if ((r = join_shm_try_push(p, &m)) != 0) report[0].fail("try_push returned %d", r);
        join_shm_queue_close(p);
        join_shm_queue_close(c);
    });
    CHECK(group.wait() == "");
    CHECK(report[0].text() == "ok");
    // Any of our consumers may take what the other process pushed.
    stress::Message m{};
    REQUIRE(join_shm_try_pop(handles[3], &m) == 0);
    CHECK(stress::damage(m) == nullptr);
    CHECK(m.producer == 7);
    CHECK(join_shm_try_pop(handles[1], &m) == -EAGAIN);
    for (join_shm_queue *q : handles)
        join_shm_queue_close(q);
}
