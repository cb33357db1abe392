// The SPSC ring in one process, through the C API: exact capacity, order and content, wrap-around,
// inspection, batches, roles, zero-copy and timeouts.
#include "common.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

// The bytes of element number SEQ: every byte depends on SEQ and on its offset, so a lost,
// repeated, reordered or torn element shows.
std::vector<unsigned char> pattern(uint64_t seq, size_t size) {
    std::vector<unsigned char> bytes(size);
    uint64_t x = seq * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    for (size_t i = 0; i < size; ++i) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ULL;
        bytes[i] = static_cast<unsigned char>(x >> 56);
    }
    if (size >= sizeof seq) std::memcpy(bytes.data(), &seq, sizeof seq);
    return bytes;
}

// Pending, available, empty and full agree with COUNT, seen from both handles.
void checkCounts(const test::Pair &pair, uint64_t count, uint64_t capacity) {
    INFO(count << " of " << capacity << " slots in use");
    for (const join_shm_queue *q : {pair.producer, pair.consumer}) {
        CHECK(join_shm_pending(q) == count);
        CHECK(join_shm_available(q) == capacity - count);
        CHECK(join_shm_empty(q) == (count == 0 ? 1 : 0));
        CHECK(join_shm_full(q) == (count == capacity ? 1 : 0));
    }
}

using Clock = std::chrono::steady_clock;

}  // namespace

TEST_CASE("an SPSC ring holds exactly its capacity", "[spsc]") {
    for (uint64_t capacity : {1, 3, 7, 144}) {
        INFO("capacity " << capacity);
        test::ShmName name;
        test::Pair pair(name, 8, capacity);
        CHECK(join_shm_capacity(pair.producer) == capacity);
        CHECK(join_shm_capacity(pair.consumer) == capacity);
        for (uint64_t i = 0; i < capacity; ++i) {
            checkCounts(pair, i, capacity);
            REQUIRE(join_shm_try_push(pair.producer, &i) == 0);
        }
        checkCounts(pair, capacity, capacity);
        uint64_t extra = 999;
        CHECK(join_shm_try_push(pair.producer, &extra) == -EAGAIN);
        CHECK(join_shm_try_push(pair.producer, &extra) == -EAGAIN);  // and again: still full
        checkCounts(pair, capacity, capacity);
        for (uint64_t i = 0; i < capacity; ++i) {
            uint64_t out = ~uint64_t{0};
            REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
            CHECK(out == i);
            checkCounts(pair, capacity - i - 1, capacity);
        }
        uint64_t out = 0;
        CHECK(join_shm_try_pop(pair.consumer, &out) == -EAGAIN);
        checkCounts(pair, 0, capacity);
    }
}

TEST_CASE("elements come out in order with every byte intact", "[spsc]") {
    for (uint64_t size : {1, 7, 13, 16, 17, 33, 64, 100, 1472, 65536})
        DYNAMIC_SECTION("element size " << size) {
            test::ShmName name;
            const uint64_t capacity = 5;
            test::Pair pair(name, size, capacity);
            CHECK(join_shm_element_size(pair.producer) == size);
            CHECK(join_shm_element_size(pair.consumer) == size);
            uint64_t pushed = 0, popped = 0;
            std::vector<unsigned char> out(size);
            // Fill, drain half, fill again, drain: 40 elements through a 5-slot ring.
            while (popped < 40) {
                while (pushed < 40 && pushed - popped < capacity) {
                    std::vector<unsigned char> in = pattern(pushed, size);
                    REQUIRE(join_shm_try_push(pair.producer, in.data()) == 0);
                    ++pushed;
                }
                for (int k = 0; k < 3 && popped < pushed; ++k) {
                    REQUIRE(join_shm_try_pop(pair.consumer, out.data()) == 0);
                    CHECK(out == pattern(popped, size));
                    ++popped;
                }
            }
            CHECK(join_shm_empty(pair.consumer) == 1);
        }
}

TEST_CASE("small rings wrap around for many laps", "[spsc]") {
    for (uint64_t capacity : {1, 3}) {
        INFO("capacity " << capacity);
        test::ShmName name;
        test::Pair pair(name, 24, capacity);
        uint64_t pushed = 0, popped = 0;
        for (uint64_t lap = 0; lap < 20000; ++lap) {
            // Vary how far ahead the producer runs: 1 .. capacity elements, then drain it all or
            // part of it, so slots are reused at every offset.
            const uint64_t room = capacity - (pushed - popped);
            const uint64_t burst = lap % capacity + 1 < room ? lap % capacity + 1 : room;
            for (uint64_t k = 0; k < burst; ++k) {
                std::vector<unsigned char> in = pattern(pushed, 24);
                REQUIRE(join_shm_try_push(pair.producer, in.data()) == 0);
                ++pushed;
            }
            if (pushed - popped == capacity) {
                uint64_t extra = 0;
                REQUIRE(join_shm_try_push(pair.producer, &extra) == -EAGAIN);
            }
            REQUIRE(join_shm_pending(pair.consumer) == pushed - popped);
            REQUIRE(join_shm_available(pair.producer) == capacity - (pushed - popped));
            REQUIRE(join_shm_full(pair.producer) == (pushed - popped == capacity ? 1 : 0));
            const uint64_t drain = lap % 2 ? pushed - popped : (pushed - popped + 1) / 2;
            for (uint64_t k = 0; k < drain; ++k) {
                std::vector<unsigned char> out(24);
                REQUIRE(join_shm_try_pop(pair.consumer, out.data()) == 0);
                REQUIRE(out == pattern(popped, 24));
                ++popped;
            }
            REQUIRE(join_shm_pending(pair.producer) == pushed - popped);
            REQUIRE(join_shm_empty(pair.consumer) == (pushed == popped ? 1 : 0));
        }
        CHECK(pushed > 20000 * capacity / 2);
        while (popped < pushed) {
            std::vector<unsigned char> out(24);
            REQUIRE(join_shm_try_pop(pair.consumer, out.data()) == 0);
            REQUIRE(out == pattern(popped, 24));
            ++popped;
        }
        uint64_t out = 0;
        CHECK(join_shm_try_pop(pair.consumer, &out) == -EAGAIN);
    }
}

TEST_CASE("batches move as many elements as fit, in order", "[spsc]") {
    test::ShmName name;
    const uint64_t capacity = 7;
    test::Pair pair(name, 8, capacity);
    std::vector<uint64_t> in(20), out(20, 0);
    for (uint64_t i = 0; i < in.size(); ++i)
        in[i] = 1000 + i;

    CHECK(join_shm_try_push_n(pair.producer, in.data(), 5) == 5);
    checkCounts(pair, 5, capacity);
    CHECK(join_shm_try_push_n(pair.producer, in.data() + 5, 5) == 2);  // only two slots left
    checkCounts(pair, 7, capacity);
    CHECK(join_shm_try_push_n(pair.producer, in.data() + 7, 5) == -EAGAIN);
    CHECK(join_shm_try_push_n(pair.producer, in.data() + 7, 0) == -EINVAL);
    checkCounts(pair, 7, capacity);

    CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 3) == 3);
    CHECK(out[0] == 1000);
    CHECK(out[1] == 1001);
    CHECK(out[2] == 1002);
    CHECK(out[3] == 0);  // nothing written past the count moved
    checkCounts(pair, 4, capacity);
    CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 0) == -EINVAL);
    checkCounts(pair, 4, capacity);

    // Across the end of the ring: 3 free slots, the next batch wraps.
    CHECK(join_shm_try_push_n(pair.producer, in.data() + 7, 10) == 3);
    checkCounts(pair, 7, capacity);
    CHECK(join_shm_try_pop_n(pair.consumer, out.data() + 3, 100) == 7);
    for (uint64_t i = 0; i < 10; ++i) {
        INFO("element " << i);
        CHECK(out[i] == 1000 + i);
    }
    CHECK(out[10] == 0);
    checkCounts(pair, 0, capacity);
    CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 4) == -EAGAIN);

    // A batch larger than the ring on an empty ring fills it exactly.
    CHECK(join_shm_try_push_n(pair.producer, in.data(), 20) == static_cast<int64_t>(capacity));
    checkCounts(pair, capacity, capacity);

    // Batches and single calls interleave in one order.
    std::vector<uint64_t> got;
    uint64_t one = 0;
    REQUIRE(join_shm_try_pop(pair.consumer, &one) == 0);
    got.push_back(one);
    REQUIRE(join_shm_try_push(pair.producer, &in[7]) == 0);
    std::vector<uint64_t> rest(capacity, 0);
    REQUIRE(join_shm_try_pop_n(pair.consumer, rest.data(), capacity) == static_cast<int64_t>(capacity));
    got.insert(got.end(), rest.begin(), rest.end());
    CHECK(got == std::vector<uint64_t>(in.begin(), in.begin() + 8));
}

TEST_CASE("batches wrap around a ring of capacity 1 and 3", "[spsc]") {
    for (uint64_t capacity : {1, 3}) {
        INFO("capacity " << capacity);
        test::ShmName name;
        test::Pair pair(name, 16, capacity);
        uint64_t pushed = 0, popped = 0;
        for (int round = 0; round < 3000; ++round) {
            std::vector<uint64_t> in(2 * 4);
            for (uint64_t k = 0; k < 4; ++k) {
                in[2 * k] = pushed + k;
                in[2 * k + 1] = ~(pushed + k);
            }
            const uint64_t free = capacity - (pushed - popped);
            REQUIRE(free > 0);  // the pops below always leave room
            const int64_t moved = join_shm_try_push_n(pair.producer, in.data(), 4);
            REQUIRE(moved == static_cast<int64_t>(free < 4 ? free : 4));
            pushed += static_cast<uint64_t>(moved);
            std::vector<uint64_t> out(2 * 2, 0);
            const int64_t got = join_shm_try_pop_n(pair.consumer, out.data(), 2);
            REQUIRE(got == static_cast<int64_t>(pushed - popped < 2 ? pushed - popped : 2));
            for (int64_t k = 0; k < got; ++k) {
                REQUIRE(out[2 * static_cast<size_t>(k)] == popped);
                REQUIRE(out[2 * static_cast<size_t>(k) + 1] == ~popped);
                ++popped;
            }
        }
        CHECK(popped >= 3000);  // at least one element each round
    }
}

TEST_CASE("an SPSC ring admits one producer and one consumer at a time", "[spsc]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    join_shm_queue *q = nullptr;
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == -EBUSY);
    CHECK(q == nullptr);
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4) == -EBUSY);
    CHECK(q == nullptr);
    const std::string slashed = "/" + name.name;
    CHECK(join_shm_queue_open(&q, slashed.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == -EBUSY);

    join_shm_queue_close(pair.producer);
    pair.producer = nullptr;
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4) == -EBUSY);  // still held
    REQUIRE(join_shm_queue_open(&pair.producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);

    join_shm_queue_close(pair.consumer);
    pair.consumer = nullptr;
    CHECK(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == -EBUSY);  // still held
    REQUIRE(join_shm_queue_open(&pair.consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4) == 0);

    // The reopened pair works.
    uint64_t in = 8, out = 0;
    REQUIRE(join_shm_try_push(pair.producer, &in) == 0);
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 8);
}

TEST_CASE("a reopened consumer or producer continues where the previous one stopped", "[spsc]") {
    for (uint64_t capacity : {1, 3, 8}) {
        INFO("capacity " << capacity);
        test::ShmName name;
        test::Pair pair(name, 8, capacity);
        uint64_t pushed = 0, popped = 0;
        for (int round = 0; round < 50; ++round) {
            while (pushed - popped < capacity) {
                REQUIRE(join_shm_try_push(pair.producer, &pushed) == 0);
                ++pushed;
            }
            const uint64_t take = (static_cast<uint64_t>(round) % capacity) + (round % 2 ? 0 : 1);
            for (uint64_t k = 0; k < take && popped < pushed; ++k) {
                uint64_t out = 0;
                REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
                REQUIRE(out == popped);
                ++popped;
            }
            // Replace the consumer, then the producer, then both.
            if (round % 3 != 1) {
                join_shm_queue_close(pair.consumer);
                pair.consumer = nullptr;
                REQUIRE(join_shm_queue_open(&pair.consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, capacity) == 0);
            }
            if (round % 3 != 0) {
                join_shm_queue_close(pair.producer);
                pair.producer = nullptr;
                REQUIRE(join_shm_queue_open(&pair.producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, capacity) == 0);
            }
            REQUIRE(join_shm_pending(pair.consumer) == pushed - popped);
            REQUIRE(join_shm_available(pair.producer) == capacity - (pushed - popped));
        }
        while (popped < pushed) {
            uint64_t out = 0;
            REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
            REQUIRE(out == popped);
            ++popped;
        }
        uint64_t out = 0;
        CHECK(join_shm_try_pop(pair.consumer, &out) == -EAGAIN);
    }
}

TEST_CASE("elements stay in a ring that nobody has open", "[spsc]") {
    test::ShmName name;
    {
        test::Pair pair(name, 8, 4);
        for (uint64_t i = 0; i < 3; ++i)
            REQUIRE(join_shm_try_push(pair.producer, &i) == 0);
    }
    test::Pair pair(name, 8, 4);
    checkCounts(pair, 3, 4);
    for (uint64_t i = 0; i < 3; ++i) {
        uint64_t out = 99;
        REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
        CHECK(out == i);
    }
}

TEST_CASE("zero-copy slots publish and hand back elements in place", "[spsc]") {
    for (uint64_t capacity : {1, 3}) {
        INFO("capacity " << capacity);
        test::ShmName name;
        const uint64_t size = 40;
        test::Pair pair(name, size, capacity);
        uint64_t pushed = 0, popped = 0;
        for (int round = 0; round < 1000; ++round) {
            // Alternate zero-copy and copying calls on both sides.
            while (pushed - popped < capacity) {
                std::vector<unsigned char> in = pattern(pushed, size);
                if ((pushed + static_cast<uint64_t>(round)) % 2) {
                    void *slot = nullptr;
                    REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
                    REQUIRE(slot != nullptr);
                    std::memcpy(slot, in.data(), size);
                    // Not visible before commit.
                    REQUIRE(join_shm_pending(pair.consumer) == pushed - popped);
                    const void *peeked = nullptr;
                    if (pushed == popped) REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);
                    REQUIRE(join_shm_commit(pair.producer) == 0);
                } else {
                    REQUIRE(join_shm_try_push(pair.producer, in.data()) == 0);
                }
                ++pushed;
            }
            void *slot = nullptr;
            REQUIRE(join_shm_try_reserve(pair.producer, &slot) == -EAGAIN);  // full
            while (popped < pushed) {
                if ((popped + static_cast<uint64_t>(round)) % 3) {
                    const void *peeked = nullptr;
                    REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
                    REQUIRE(peeked != nullptr);
                    const auto *bytes = static_cast<const unsigned char *>(peeked);
                    REQUIRE(std::vector<unsigned char>(bytes, bytes + size) == pattern(popped, size));
                    // Still in the ring until released.
                    REQUIRE(join_shm_pending(pair.producer) == pushed - popped);
                    REQUIRE(join_shm_release(pair.consumer) == 0);
                } else {
                    std::vector<unsigned char> out(size);
                    REQUIRE(join_shm_try_pop(pair.consumer, out.data()) == 0);
                    REQUIRE(out == pattern(popped, size));
                }
                ++popped;
                REQUIRE(join_shm_available(pair.producer) == capacity - (pushed - popped));
            }
            const void *peeked = nullptr;
            REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);  // empty
        }
    }
}

TEST_CASE("zero-copy calls in the wrong order are refused", "[spsc]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    uint64_t value = 1;
    void *slot = nullptr;
    const void *peeked = nullptr;
    CHECK(join_shm_commit(pair.producer) == -EINVAL);
    CHECK(join_shm_release(pair.consumer) == -EINVAL);
    CHECK(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);
    CHECK(join_shm_try_reserve(pair.consumer, &slot) == -EINVAL);
    CHECK(join_shm_try_peek(pair.producer, &peeked) == -EINVAL);

    REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
    std::memcpy(slot, &value, sizeof value);
    CHECK(join_shm_try_reserve(pair.producer, &slot) == -EINVAL);
    CHECK(join_shm_try_push(pair.producer, &value) == -EINVAL);
    CHECK(join_shm_push(pair.producer, &value) == -EINVAL);
    CHECK(join_shm_timed_push(pair.producer, &value, 0) == -EINVAL);
    CHECK(join_shm_try_push_n(pair.producer, &value, 1) == -EINVAL);
    CHECK(join_shm_release(pair.producer) == -EINVAL);
    CHECK(join_shm_pending(pair.consumer) == 0);
    REQUIRE(join_shm_commit(pair.producer) == 0);
    CHECK(join_shm_commit(pair.producer) == -EINVAL);
    CHECK(join_shm_pending(pair.consumer) == 1);

    uint64_t second = 2;
    REQUIRE(join_shm_try_push(pair.producer, &second) == 0);
    REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
    uint64_t out = 0;
    CHECK(join_shm_try_peek(pair.consumer, &peeked) == -EINVAL);
    CHECK(join_shm_try_pop(pair.consumer, &out) == -EINVAL);
    CHECK(join_shm_pop(pair.consumer, &out) == -EINVAL);
    CHECK(join_shm_timed_pop(pair.consumer, &out, 0) == -EINVAL);
    CHECK(join_shm_try_pop_n(pair.consumer, &out, 1) == -EINVAL);
    CHECK(join_shm_commit(pair.consumer) == -EINVAL);
    CHECK(out == 0);
    CHECK(join_shm_pending(pair.producer) == 2);
    REQUIRE(join_shm_release(pair.consumer) == 0);
    CHECK(join_shm_release(pair.consumer) == -EINVAL);
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 2);
}

TEST_CASE("timed push and pop wait the whole timeout before giving up", "[spsc]") {
    test::ShmName name;
    test::Pair pair(name, 8, 2);
    const int64_t timeout = 10'000'000;  // 10 ms
    uint64_t value = 0;

    auto start = Clock::now();
    CHECK(join_shm_timed_pop(pair.consumer, &value, timeout) == -ETIMEDOUT);
    auto elapsed = Clock::now() - start;
    CHECK(elapsed >= std::chrono::milliseconds(10));
    CHECK(elapsed < std::chrono::seconds(1));

    for (uint64_t i = 0; i < 2; ++i)
        REQUIRE(join_shm_try_push(pair.producer, &i) == 0);
    start = Clock::now();
    CHECK(join_shm_timed_push(pair.producer, &value, timeout) == -ETIMEDOUT);
    elapsed = Clock::now() - start;
    CHECK(elapsed >= std::chrono::milliseconds(10));
    CHECK(elapsed < std::chrono::seconds(1));
    CHECK(join_shm_pending(pair.consumer) == 2);

    // With something to do they return at once, long timeout or not.
    start = Clock::now();
    REQUIRE(join_shm_timed_pop(pair.consumer, &value, 10'000'000'000) == 0);
    CHECK(value == 0);
    REQUIRE(join_shm_timed_push(pair.producer, &value, 10'000'000'000) == 0);
    CHECK(Clock::now() - start < std::chrono::seconds(1));

    // Timeouts with sleeping right away (no spin) are as exact.
    join_shm_options options{};
    options.size = sizeof options;
    options.spin_ns = -1;
    test::ShmName other;
    join_shm_queue *consumer = nullptr;
    REQUIRE(join_shm_queue_open_ex(&consumer, other, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 2, &options) == 0);
    start = Clock::now();
    CHECK(join_shm_timed_pop(consumer, &value, timeout) == -ETIMEDOUT);
    elapsed = Clock::now() - start;
    CHECK(elapsed >= std::chrono::milliseconds(10));
    CHECK(elapsed < std::chrono::seconds(1));
    join_shm_queue_close(consumer);
}
