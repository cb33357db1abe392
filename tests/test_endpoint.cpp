// Endpoints: duplex channels made of the rings NAME_AB and NAME_BA. Ping-pong across processes
// for every policy with content checks, the counts each side sees, role admission per side, and
// join_shm_endpoint_unlink removing exactly the two rings.
#include "stress.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <string>

using stress::Message;

namespace {

const join_shm_policy kPolicies[] = {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC};

bool segmentExists(const std::string &name) {
    struct stat st;
    return stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

// One side of the ping-pong. Side A sends request i (producer 0, seq i) and waits for reply i
// (producer 1, seq i); side B answers each request with its reply. The calls rotate through the
// blocking, timed and try_ forms. Between messages the two rings are quiet, so the counts are exact.
void pingPong(const char *name, join_shm_policy policy, uint64_t capacity, join_shm_side side, uint64_t rounds,
              stress::Report &report) {
    const bool a = side == JOIN_SHM_SIDE_A;
    const char *who = a ? "side A" : "side B";
    join_shm_endpoint *e = nullptr;
    int r = join_shm_endpoint_open(&e, name, policy, side, sizeof(Message), capacity);
    if (r != 0) {
        report.fail("%s: endpoint_open returned %d (%s)", who, r, join_shm_last_error_detail());
        return;
    }
    auto send = [&](const Message &m, uint64_t i) {
        const char *call = "send";
        switch (i % 3) {
            case 0:
                r = join_shm_send(e, &m);
                break;
            case 1:
                call = "timed_send";
                r = join_shm_timed_send(e, &m, stress::kStallNs);
                break;
            default:
                call = "try_send";
                r = join_shm_try_send(e, &m);
                if (r == -EAGAIN)
                    report.fail("%s: try_send of #%llu found the outbound ring full", who, (unsigned long long)i);
        }
        if (r != 0)
            report.fail("%s: %s of #%llu returned %d (%s)", who, call, (unsigned long long)i, r,
                        join_shm_last_error_detail());
        return r == 0;
    };
    auto receive = [&](Message &m, uint64_t i) {
        const char *call = "receive";
        switch (i % 3) {
            case 0:
                r = join_shm_receive(e, &m);
                break;
            case 1:
                call = "timed_receive";
                r = join_shm_timed_receive(e, &m, stress::kStallNs);
                break;
            default:
                call = "try_receive then receive";
                r = join_shm_try_receive(e, &m);
                if (r == -EAGAIN) r = join_shm_receive(e, &m);
        }
        if (r != 0)
            report.fail("%s: %s of #%llu returned %d (%s)", who, call, (unsigned long long)i, r,
                        join_shm_last_error_detail());
        return r == 0;
    };
    auto expect = [&](const Message &m, uint32_t from, uint64_t i) {
        if (const char *why = stress::damage(m))
            report.fail("%s: message #%llu is damaged: %s", who, (unsigned long long)i, why);
        else if (m.producer != from || m.seq != i || m.kind != stress::kData)
            report.fail("%s: expected message %u/%llu, got %u/%llu", who, from, (unsigned long long)i, m.producer,
                        (unsigned long long)m.seq);
    };
    auto quiet = [&](uint64_t i) {
        // The peer waits for us: our inbound ring is empty and our outbound one was drained.
        const uint64_t pending = join_shm_endpoint_pending(e), available = join_shm_endpoint_available(e);
        if (pending != 0 || available != capacity)
            report.fail("%s: at #%llu pending %llu (expected 0), available %llu (expected %llu)", who,
                        (unsigned long long)i, (unsigned long long)pending, (unsigned long long)available,
                        (unsigned long long)capacity);
    };
    Message m{};
    for (uint64_t i = 0; i < rounds && report.ok(); ++i) {
        if (a) {
            if (!send(stress::makeMessage(0, i), i) || !receive(m, i)) break;
            expect(m, 1, i);
            if (i % 16 == 0) quiet(i);
        } else {
            if (!receive(m, i)) break;
            expect(m, 0, i);
            if (i % 16 == 0) quiet(i);
            if (!send(stress::makeMessage(1, i), i)) break;
        }
        report.progress.store(i + 1, std::memory_order_relaxed);
    }
    join_shm_endpoint_close(e);
}

}  // namespace

TEST_CASE("endpoint ping-pong across processes delivers every request and reply intact, for each policy",
          "[endpoint]") {
    const join_shm_policy policy = GENERATE(JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC);
    const uint64_t capacity = GENERATE(as<uint64_t>{}, 1, 3, 144);
    const uint64_t rounds = stress::scaled(10'000);
    INFO(stress::policyName(policy) << " capacity " << capacity << ", " << rounds << " round trips");
    test::ShmName name("ep-pingpong");
    stress::SharedArray<stress::Report> reports(2);
    auto status = [&] {
        return "side A did " + std::to_string(reports[0].progress.load()) + " (" + reports[0].text() +
               "), side B did " + std::to_string(reports[1].progress.load()) + " (" + reports[1].text() + ")";
    };
    std::string problems;
    {
        stress::Group group(stress::Mode::Processes, status, [&] { return !reports[0].ok() || !reports[1].ok(); });
        group.spawn("side B", [&] { pingPong(name, policy, capacity, JOIN_SHM_SIDE_B, rounds, reports[1]); });
        group.spawn("side A", [&] { pingPong(name, policy, capacity, JOIN_SHM_SIDE_A, rounds, reports[0]); });
        problems = group.wait();
    }
    CHECK(problems == "");
    CHECK(reports[0].text() == "ok");
    CHECK(reports[1].text() == "ok");
    CHECK(reports[0].progress.load() == rounds);
    CHECK(reports[1].progress.load() == rounds);
}

TEST_CASE("endpoint_available counts free outbound slots and endpoint_pending waiting inbound messages", "[endpoint]") {
    for (join_shm_policy policy : kPolicies) {
        INFO(stress::policyName(policy));
        test::ShmName name("ep-counts");
        join_shm_endpoint *a = nullptr, *b = nullptr;
        REQUIRE(join_shm_endpoint_open(&a, name, policy, JOIN_SHM_SIDE_A, sizeof(Message), 3) == 0);
        REQUIRE(join_shm_endpoint_open(&b, name, policy, JOIN_SHM_SIDE_B, sizeof(Message), 3) == 0);
        CHECK(join_shm_endpoint_available(a) == 3);
        CHECK(join_shm_endpoint_available(b) == 3);
        CHECK(join_shm_endpoint_pending(a) == 0);
        CHECK(join_shm_endpoint_pending(b) == 0);

        for (uint64_t i = 0; i < 3; ++i) {
            Message m = stress::makeMessage(0, i);
            REQUIRE(join_shm_try_send(a, &m) == 0);
        }
        Message m = stress::makeMessage(0, 3);
        CHECK(join_shm_try_send(a, &m) == -EAGAIN);
        CHECK(join_shm_timed_send(a, &m, 1'000'000) == -ETIMEDOUT);
        CHECK(join_shm_endpoint_available(a) == 0);
        CHECK(join_shm_endpoint_pending(b) == 3);
        CHECK(join_shm_endpoint_pending(a) == 0);  // the other direction is untouched
        CHECK(join_shm_endpoint_available(b) == 3);

        Message reply = stress::makeMessage(1, 0);
        REQUIRE(join_shm_try_send(b, &reply) == 0);
        CHECK(join_shm_endpoint_pending(a) == 1);
        CHECK(join_shm_endpoint_available(b) == 2);

        Message got{};
        REQUIRE(join_shm_try_receive(b, &got) == 0);
        CHECK(stress::damage(got) == nullptr);
        CHECK(got.producer == 0);
        CHECK(got.seq == 0);
        CHECK(join_shm_endpoint_pending(b) == 2);
        CHECK(join_shm_endpoint_available(a) == 1);

        REQUIRE(join_shm_receive(a, &got) == 0);
        CHECK(stress::damage(got) == nullptr);
        CHECK(got.producer == 1);
        CHECK(got.seq == 0);
        CHECK(join_shm_endpoint_pending(a) == 0);
        CHECK(join_shm_try_receive(a, &got) == -EAGAIN);
        CHECK(join_shm_timed_receive(a, &got, 1'000'000) == -ETIMEDOUT);

        for (uint64_t i = 1; i < 3; ++i) {
            REQUIRE(join_shm_timed_receive(b, &got, 0) == 0);
            CHECK(got.seq == i);
        }
        CHECK(join_shm_endpoint_pending(b) == 0);
        CHECK(join_shm_endpoint_available(a) == 3);

        join_shm_endpoint_close(a);
        join_shm_endpoint_close(b);
        CHECK(join_shm_endpoint_available(nullptr) == 0);
        CHECK(join_shm_endpoint_pending(nullptr) == 0);
    }
}

TEST_CASE("endpoint_unlink removes both rings and nothing else; open handles keep working", "[endpoint]") {
    for (join_shm_policy policy : kPolicies) {
        INFO(stress::policyName(policy));
        test::ShmName name("ep-unlink");
        const std::string ab = name.name + "_AB", ba = name.name + "_BA";
        // A plain ring under the bare name must survive the endpoint's unlink.
        join_shm_queue *plain = nullptr;
        REQUIRE(join_shm_queue_open(&plain, name, policy, JOIN_SHM_PRODUCER, 8, 2) == 0);

        join_shm_endpoint *a = nullptr, *b = nullptr;
        REQUIRE(join_shm_endpoint_open(&a, name, policy, JOIN_SHM_SIDE_A, sizeof(Message), 4) == 0);
        REQUIRE(join_shm_endpoint_open(&b, name, policy, JOIN_SHM_SIDE_B, sizeof(Message), 4) == 0);
        CHECK(segmentExists(ab));
        CHECK(segmentExists(ba));
        Message left = stress::makeMessage(0, 99);
        REQUIRE(join_shm_try_send(a, &left) == 0);  // never received: must not survive a reopen

        CHECK(join_shm_endpoint_unlink(name) == 0);
        CHECK_FALSE(segmentExists(ab));
        CHECK_FALSE(segmentExists(ba));
        CHECK(segmentExists(name.name));

        // The open handles still share the unlinked rings.
        Message m = stress::makeMessage(1, 5), got{};
        REQUIRE(join_shm_try_send(b, &m) == 0);
        REQUIRE(join_shm_try_receive(a, &got) == 0);
        CHECK(got.seq == 5);
        CHECK(join_shm_endpoint_pending(b) == 1);

        CHECK(join_shm_endpoint_unlink(name) == 0);  // both missing: still success
        join_shm_endpoint_close(a);
        join_shm_endpoint_close(b);

        // Opening again creates fresh, empty rings.
        REQUIRE(join_shm_endpoint_open(&b, name, policy, JOIN_SHM_SIDE_B, sizeof(Message), 4) == 0);
        CHECK(join_shm_endpoint_pending(b) == 0);
        CHECK(join_shm_try_receive(b, &got) == -EAGAIN);
        join_shm_endpoint_close(b);

        // Only one of the two present: removed, and success.
        CHECK(join_shm_endpoint_unlink(name) == 0);
        join_shm_queue *half = nullptr;
        REQUIRE(join_shm_queue_open(&half, ba.c_str(), policy, JOIN_SHM_PRODUCER, sizeof(Message), 4) == 0);
        join_shm_queue_close(half);
        CHECK(join_shm_endpoint_unlink(name) == 0);
        CHECK_FALSE(segmentExists(ba));
        CHECK(segmentExists(name.name));
        join_shm_queue_close(plain);
    }
}

TEST_CASE("a second endpoint side is admitted as its rings' roles allow, and a dead holder's side is taken over",
          "[endpoint]") {
    const join_shm_policy policy = GENERATE(JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC);
    INFO(stress::policyName(policy));
    test::ShmName name("ep-roles");
    stress::SharedArray<std::atomic<int>> ready(1);
    stress::SharedArray<stress::Report> report(1);
    stress::Group group(stress::Mode::Processes);
    const pid_t holder = group.spawn("side A holder", [&] {
        join_shm_endpoint *e = nullptr;
        int r = join_shm_endpoint_open(&e, name, policy, JOIN_SHM_SIDE_A, sizeof(Message), 4);
        if (r != 0) report[0].fail("endpoint_open returned %d (%s)", r, join_shm_last_error_detail());
        ready[0] = r == 0 ? 1 : -1;
        for (;;)
            pause();
    });
    REQUIRE(stress::waitUntil([&] { return ready[0].load() != 0; }));
    REQUIRE(report[0].text() == "ok");

    join_shm_endpoint *second = nullptr;
    const int r = join_shm_endpoint_open(&second, name, policy, JOIN_SHM_SIDE_A, sizeof(Message), 4);
    const std::string detail = join_shm_last_error_detail();
    if (policy == JOIN_SHM_MPMC) {
        // Side A is a producer of NAME_AB and a consumer of NAME_BA: both unlimited.
        CHECK(r == 0);
        join_shm_endpoint_close(second);
    } else {
        // SPSC: NAME_AB's one producer is taken; MPSC: NAME_BA's one consumer is.
        INFO("detail: " << detail << "; holder pid " << holder);
        CHECK(r == -EBUSY);
        CHECK(second == nullptr);
        CHECK(detail.find(std::to_string(holder)) != std::string::npos);
    }
    // Side B is free whatever the policy.
    join_shm_endpoint *b = nullptr;
    CHECK(join_shm_endpoint_open(&b, name, policy, JOIN_SHM_SIDE_B, sizeof(Message), 4) == 0);
    join_shm_endpoint_close(b);

    group.killAndReap(holder);
    join_shm_endpoint *again = nullptr;
    CHECK(join_shm_endpoint_open(&again, name, policy, JOIN_SHM_SIDE_A, sizeof(Message), 4) == 0);
    join_shm_endpoint_close(again);
    CHECK(group.wait() == "");
}
