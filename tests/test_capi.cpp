// The C API as a whole: handles, names, options, zero-copy, endpoints. Bad inputs one by one are
// in test_errors.cpp; the SPSC ring's behaviour in test_spsc.cpp.
#include "common.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace {

const join_shm_policy kPolicies[] = {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC};

}  // namespace

TEST_CASE("the version names the library that is loaded", "[capi]") {
    CHECK(join_shm_version() ==
          ((JOIN_SHM_VERSION_MAJOR << 16) | (JOIN_SHM_VERSION_MINOR << 8) | JOIN_SHM_VERSION_PATCH));
}

TEST_CASE("strerror describes negative and positive errno values alike", "[capi]") {
    CHECK(std::string(join_shm_strerror(-EAGAIN)) == join_shm_strerror(EAGAIN));
    CHECK(std::string(join_shm_strerror(-ETIMEDOUT)) != join_shm_strerror(-EAGAIN));
    CHECK(std::strlen(join_shm_strerror(-EPROTO)) > 0);
}

TEST_CASE("a name with and without its leading slash is the same ring", "[capi]") {
    test::ShmName name;
    std::string slashed = "/" + name.name;
    for (join_shm_policy policy : kPolicies) {
        join_shm_queue *producer = nullptr, *consumer = nullptr;
        REQUIRE(join_shm_queue_open(&producer, name, policy, JOIN_SHM_PRODUCER, 8, 4) == 0);
        REQUIRE(join_shm_queue_open(&consumer, slashed.c_str(), policy, JOIN_SHM_CONSUMER, 8, 4) == 0);
        uint64_t in = 0x1234, out = 0;
        REQUIRE(join_shm_try_push(producer, &in) == 0);
        REQUIRE(join_shm_try_pop(consumer, &out) == 0);
        CHECK(out == in);
        join_shm_queue_close(producer);
        join_shm_queue_close(consumer);
        REQUIRE(join_shm_unlink(slashed.c_str()) == 0);
        struct stat st;
        CHECK(stat(("/dev/shm/" + name.name).c_str(), &st) == -1);
    }
}

TEST_CASE("a closed handle is refused, not used", "[capi]") {
    test::ShmName name;
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);
    join_shm_queue_close(q);
    uint64_t v = 1;
    CHECK(join_shm_try_push(q, &v) == -EINVAL);
    CHECK(std::string(join_shm_last_error_detail()).find("closed") != std::string::npos);
    CHECK(join_shm_pending(q) == 0);
    join_shm_queue_close(q);  // closing twice is harmless
    join_shm_queue *again = nullptr;
    CHECK(join_shm_queue_open(&again, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);  // role was freed
    join_shm_queue_close(again);
}

TEST_CASE("a handle inherited across fork may only be closed in the child", "[capi]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4, JOIN_SHM_SPSC);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        uint64_t v = 7;
        int pushed = join_shm_try_push(pair.producer, &v);
        join_shm_queue_close(pair.producer);
        _exit(pushed == -EINVAL ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // The parent's handle and role are intact.
    uint64_t in = 9, out = 0;
    CHECK(join_shm_try_push(pair.producer, &in) == 0);
    CHECK(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 9);
    join_shm_queue *second = nullptr;
    CHECK(join_shm_queue_open(&second, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == -EBUSY);
}

TEST_CASE("a second holder of a single role is told who holds it", "[capi]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4, JOIN_SHM_MPSC);
    join_shm_queue *consumer = nullptr;
    CHECK(join_shm_queue_open(&consumer, name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, 8, 4) == -EBUSY);
    CHECK(consumer == nullptr);
    CHECK(std::string(join_shm_last_error_detail()).find(std::to_string(getpid())) != std::string::npos);
    join_shm_queue *producer = nullptr;  // MPSC admits more producers
    CHECK(join_shm_queue_open(&producer, name, JOIN_SHM_MPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);
    join_shm_queue_close(producer);
}

TEST_CASE("zero-copy slots carry elements in place for every policy", "[capi]") {
    for (join_shm_policy policy : kPolicies) {
        test::ShmName name;
        test::Pair pair(name, 32, 2, policy);
        void *slot = nullptr;
        const void *peeked = nullptr;
        CHECK(join_shm_commit(pair.producer) == -EINVAL);
        CHECK(join_shm_release(pair.consumer) == -EINVAL);
        CHECK(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);
        REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
        std::memcpy(slot, "in place", 9);
        char element[32] = "copied";
        CHECK(join_shm_try_push(pair.producer, element) == -EINVAL);  // one slot at a time
        CHECK(join_shm_try_reserve(pair.producer, &slot) == -EINVAL);
        CHECK(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);  // not visible before commit
        REQUIRE(join_shm_commit(pair.producer) == 0);
        REQUIRE(join_shm_try_push(pair.producer, element) == 0);
        REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
        CHECK(std::string(static_cast<const char *>(peeked)) == "in place");
        CHECK(join_shm_try_pop(pair.consumer, element) == -EINVAL);
        REQUIRE(join_shm_release(pair.consumer) == 0);
        REQUIRE(join_shm_try_pop(pair.consumer, element) == 0);
        CHECK(std::string(element) == "copied");
        CHECK(join_shm_empty(pair.consumer) == 1);
    }
}

TEST_CASE("a producer closed with a reserved slot leaves no hole in the ring", "[capi]") {
    for (join_shm_policy policy : kPolicies) {
        test::ShmName name;
        test::Pair pair(name, 8, 3, policy);
        join_shm_queue *producer = nullptr;
        if (policy == JOIN_SHM_SPSC) {
            join_shm_queue_close(pair.producer);
            pair.producer = nullptr;
        }
        REQUIRE(join_shm_queue_open(&producer, name, policy, JOIN_SHM_PRODUCER, 8, 3) == 0);
        void *slot = nullptr;
        REQUIRE(join_shm_try_reserve(producer, &slot) == 0);
        join_shm_queue_close(producer);
        if (!pair.producer) REQUIRE(join_shm_queue_open(&pair.producer, name, policy, JOIN_SHM_PRODUCER, 8, 3) == 0);
        uint64_t in = 42, out = 0;
        REQUIRE(join_shm_try_push(pair.producer, &in) == 0);
        REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
        CHECK(out == 42);
        CHECK(join_shm_try_pop(pair.consumer, &out) == -EAGAIN);
        CHECK(join_shm_pending(pair.consumer) == 0);
    }
}

TEST_CASE("a consumer closed with a peeked element leaves it for the next one on SPSC and MPSC", "[capi]") {
    for (join_shm_policy policy : {JOIN_SHM_SPSC, JOIN_SHM_MPSC}) {
        test::ShmName name;
        test::Pair pair(name, 8, 3, policy);
        uint64_t in = 5, out = 0;
        REQUIRE(join_shm_try_push(pair.producer, &in) == 0);
        const void *peeked = nullptr;
        REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
        join_shm_queue_close(pair.consumer);
        REQUIRE(join_shm_queue_open(&pair.consumer, name, policy, JOIN_SHM_CONSUMER, 8, 3) == 0);
        REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
        CHECK(out == 5);
    }
}

TEST_CASE("options set the mode and accept the flags they document", "[capi]") {
    test::ShmName name;
    join_shm_options options{};
    options.size = sizeof options;
    options.mode = 0640;
    options.flags = JOIN_SHM_PREFAULT;
    options.spin_ns = -1;
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open_ex(&q, name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, 100, 10, &options) == 0);
    struct stat st;
    REQUIRE(stat(("/dev/shm/" + name.name).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    join_shm_queue_close(q);

    options.flags = 0x80;
    CHECK(join_shm_queue_open_ex(&q, name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, 100, 10, &options) == -EINVAL);
    options.flags = 0;
    options.size = 4;
    CHECK(join_shm_queue_open_ex(&q, name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, 100, 10, &options) == -EINVAL);
}

TEST_CASE("an endpoint carries messages both ways", "[capi]") {
    for (join_shm_policy policy : kPolicies) {
        test::ShmName name;
        join_shm_endpoint *a = nullptr, *b = nullptr;
        REQUIRE(join_shm_endpoint_open(&a, name, policy, JOIN_SHM_SIDE_A, 16, 2) == 0);
        REQUIRE(join_shm_endpoint_open(&b, name, policy, JOIN_SHM_SIDE_B, 16, 2) == 0);
        char buffer[16] = "ping";
        REQUIRE(join_shm_try_send(a, buffer) == 0);
        CHECK(join_shm_endpoint_available(a) == 1);
        CHECK(join_shm_endpoint_pending(b) == 1);
        CHECK(join_shm_endpoint_pending(a) == 0);
        REQUIRE(join_shm_timed_receive(b, buffer, 1'000'000'000) == 0);
        CHECK(std::string(buffer) == "ping");
        std::strcpy(buffer, "pong");
        REQUIRE(join_shm_send(b, buffer) == 0);
        REQUIRE(join_shm_receive(a, buffer) == 0);
        CHECK(std::string(buffer) == "pong");
        CHECK(join_shm_try_receive(a, buffer) == -EAGAIN);
        join_shm_endpoint_close(a);
        join_shm_endpoint_close(b);
        REQUIRE(join_shm_endpoint_unlink(name) == 0);
        struct stat st;
        CHECK(stat(("/dev/shm/" + name.name + "_AB").c_str(), &st) == -1);
        CHECK(stat(("/dev/shm/" + name.name + "_BA").c_str(), &st) == -1);
    }
}

TEST_CASE("stats report the ring's geometry, cursors, roles and skipped positions", "[capi]") {
    for (join_shm_policy policy : kPolicies) {
        test::ShmName name;
        test::Pair pair(name, 16, 5, policy);
        char element[16] = {};
        for (int i = 0; i < 3; ++i)
            REQUIRE(join_shm_try_push(pair.producer, element) == 0);
        REQUIRE(join_shm_try_pop(pair.consumer, element) == 0);
        join_shm_stats stats{};
        stats.size = sizeof stats;
        REQUIRE(join_shm_queue_stats(pair.consumer, &stats) == 0);
        CHECK(stats.size == sizeof stats);
        CHECK(stats.policy == static_cast<uint32_t>(policy));
        CHECK(stats.element_size == 16);
        CHECK(stats.capacity == 5);
        CHECK(stats.pending == 2);
        CHECK(stats.pushed == 3);
        CHECK(stats.popped == 1);
        CHECK(stats.skipped == 0);
        CHECK(stats.producer_pid == (policy == JOIN_SHM_SPSC ? static_cast<uint32_t>(getpid()) : 0u));
        CHECK(stats.consumer_pid == (policy == JOIN_SHM_MPMC ? 0u : static_cast<uint32_t>(getpid())));

        // A producer closed with a reserved slot: on MPSC/MPMC it leaves an abandoned position,
        // skipped and counted; the lone SPSC producer just leaves the slot to its successor.
        void *slot = nullptr;
        REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
        join_shm_queue_close(pair.producer);
        pair.producer = nullptr;
        while (join_shm_try_pop(pair.consumer, element) == 0) {
        }
        REQUIRE(join_shm_queue_stats(pair.consumer, &stats) == 0);
        CHECK(stats.skipped == (policy == JOIN_SHM_SPSC ? 0u : 1u));
        CHECK(stats.pending == 0);
    }
}

TEST_CASE("stats are refused without a handle or a size, and a smaller size gets what fits", "[capi]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    join_shm_stats stats{};
    CHECK(join_shm_queue_stats(nullptr, &stats) == -EINVAL);
    CHECK(join_shm_queue_stats(pair.producer, nullptr) == -EINVAL);
    CHECK(join_shm_queue_stats(pair.producer, &stats) == -EINVAL);  // size not set
    CHECK(std::string(join_shm_last_error_detail()).find("size") != std::string::npos);
    // A caller compiled when the struct ended after capacity.
    stats.size = offsetof(join_shm_stats, pending);
    stats.pending = 77;
    REQUIRE(join_shm_queue_stats(pair.producer, &stats) == 0);
    CHECK(stats.capacity == 4);
    CHECK(stats.pending == 77);  // not written
}
