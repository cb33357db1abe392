// Helpers shared by the test programs.
#pragma once

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <string>

namespace test {

// A segment name unique to this process and call, unlinked (with its endpoint twins) when the
// guard goes out of scope, whatever path the test took.
struct ShmName {
    std::string name;
    explicit ShmName(const char *tag = "t") {
        static std::atomic<unsigned> counter{0};
        name = std::string("jshm-test-") + tag + "-" + std::to_string(getpid()) + "-" +
               std::to_string(counter.fetch_add(1));
        cleanup();
    }
    ~ShmName() { cleanup(); }
    ShmName(const ShmName &) = delete;
    ShmName &operator=(const ShmName &) = delete;
    const char *c_str() const { return name.c_str(); }
    operator const char *() const { return name.c_str(); }
    void cleanup() const {
        join_shm_unlink(name.c_str());
        join_shm_endpoint_unlink(name.c_str());
    }
};

// A producer and a consumer handle on one ring, both closed when the pair goes out of scope.
struct Pair {
    join_shm_queue *producer = nullptr;
    join_shm_queue *consumer = nullptr;
    Pair(const char *name, uint64_t size, uint64_t capacity, join_shm_policy policy = JOIN_SHM_SPSC) {
        REQUIRE(join_shm_queue_open(&producer, name, policy, JOIN_SHM_PRODUCER, size, capacity) == 0);
        REQUIRE(join_shm_queue_open(&consumer, name, policy, JOIN_SHM_CONSUMER, size, capacity) == 0);
    }
    ~Pair() {
        join_shm_queue_close(producer);
        join_shm_queue_close(consumer);
    }
    Pair(const Pair &) = delete;
    Pair &operator=(const Pair &) = delete;
};

}  // namespace test
