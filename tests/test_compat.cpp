// Source compatibility with programs written for the original Shared Memory API (issue 17): the
// behaviours its own suite checks on its queues and endpoints, ported onto <join/shared.hpp> for
// each policy, written as its users write them (Endpoint::A, size(), full()/empty() on endpoints).
// The README's "Coming from the original API" lists what is the same and what differs on purpose.
#include "common.hpp"
#include "stress.hpp"

#include <catch2/catch.hpp>
#include <join/shared.hpp>

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

using namespace join;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// The side names, both ways, for every policy; the short form is the same constant.
template <typename Policy>
constexpr bool sidesBothWays =
    std::is_same_v<std::remove_cv_t<decltype(Policy::Endpoint::A)>, typename Policy::Endpoint::Side>
        &&Policy::Endpoint::A == Policy::Endpoint::Side::A &&Policy::Endpoint::B == Policy::Endpoint::Side::B;
static_assert(sidesBothWays<Spsc> && sidesBothWays<Mpsc> && sidesBothWays<Mpmc>);

// The original's element and ring for the unit behaviours: 64-byte elements, capacity 8.
constexpr uint64_t kSize = 64;
constexpr uint64_t kCapacity = 8;
using Element = unsigned char[kSize];

bool segmentExists(const std::string &name) {
    struct stat st;
    return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

void fill(Element &e, unsigned value) { std::memset(e, static_cast<int>(value & 0xff), sizeof e); }

}  // namespace

TEMPLATE_TEST_CASE("size() is elementSize() * capacity(), before and after open", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    typename TestType::Endpoint endpoint(TestType::Endpoint::A, name.name, kSize, kCapacity);
    CHECK(producer.size() == 64 * 8);
    CHECK(consumer.size() == 64 * 8);
    CHECK(endpoint.size() == 64 * 8);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    REQUIRE(endpoint.open() == 0);
    CHECK(producer.size() == 64 * 8);
    CHECK(consumer.size() == 64 * 8);
    CHECK(endpoint.size() == 64 * 8);
    // The facade's defaults, too.
    CHECK(typename TestType::Producer(name.name).size() == 1472 * 144);
}

TEMPLATE_TEST_CASE("opening an object twice returns -1 and leaves it open", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    typename TestType::Endpoint a(TestType::Endpoint::A, name.name, kSize, kCapacity);
    typename TestType::Endpoint b(TestType::Endpoint::B, name.name, kSize, kCapacity);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    REQUIRE(a.open() == 0);
    REQUIRE(b.open() == 0);

    lastError.clear();
    CHECK(producer.open() == -1);
    CHECK(lastError == Errc::InUse);
    lastError.clear();
    CHECK(consumer.open() == -1);
    CHECK(lastError == Errc::InUse);
    lastError.clear();
    CHECK(a.open() == -1);
    CHECK(lastError == Errc::InUse);

    // Still open, and still working.
    CHECK(producer.opened());
    CHECK(consumer.opened());
    CHECK(a.opened());
    Element in, out;
    fill(in, 7);
    CHECK(producer.tryPush(in) == 0);
    CHECK(consumer.tryPop(out) == 0);
    CHECK(std::memcmp(in, out, sizeof in) == 0);
    CHECK(a.trySend(in) == 0);
    CHECK(b.tryReceive(out) == 0);
}

TEMPLATE_TEST_CASE("open() returns -1 for an empty name, other sizes, or sizes too large", "[compat]", Spsc, Mpsc,
                   Mpmc) {
    test::ShmName name("compat");
    using Producer = typename TestType::Producer;
    using Consumer = typename TestType::Consumer;
    using Endpoint = typename TestType::Endpoint;

    SECTION("an empty name") {
        Producer producer("", kSize, kCapacity);
        Consumer consumer("", kSize, kCapacity);
        Endpoint endpoint(Endpoint::A, "", kSize, kCapacity);
        lastError.clear();
        CHECK(producer.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        lastError.clear();
        CHECK(consumer.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        lastError.clear();
        CHECK(endpoint.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK_FALSE((producer.opened() || consumer.opened() || endpoint.opened()));
    }

    SECTION("an element size or capacity other than the segment's") {
        Producer producer(name.name, kSize, kCapacity);
        Endpoint a(Endpoint::A, name.name, kSize, kCapacity);
        REQUIRE(producer.open() == 0);
        REQUIRE(a.open() == 0);
        for (auto [size, capacity] : {std::pair{kSize / 2, kCapacity}, std::pair{kSize, kCapacity * 2}}) {
            INFO("element size " << size << ", capacity " << capacity);
            Consumer consumer(name.name, size, capacity);
            Endpoint b(Endpoint::B, name.name, size, capacity);
            lastError.clear();
            CHECK(consumer.open() == -1);
            CHECK(lastError == Errc::InvalidParam);
            lastError.clear();
            CHECK(b.open() == -1);
            CHECK(lastError == Errc::InvalidParam);
            CHECK_FALSE((consumer.opened() || b.opened()));
        }
    }

    SECTION("an element size times capacity too large for memory") {
        // What /dev/shm can hold at most; tmpfs refuses a larger reservation at once.
        struct statvfs fs {};
        REQUIRE(::statvfs("/dev/shm", &fs) == 0);
        const uint64_t shmBytes = uint64_t{fs.f_blocks} * fs.f_frsize;
        std::vector<std::pair<uint64_t, uint64_t>> tooLarge = {
            {uint64_t{1} << 40, uint64_t{1} << 40},  // the product does not even fit in 64 bits
            {uint64_t{1} << 32, uint64_t{1} << 20},  // 2^52 bytes: more than any machine maps
        };
        if (shmBytes != 0)  // 0: an unlimited tmpfs, which would try to hand out the whole of RAM
            tooLarge.push_back({uint64_t{1} << 20, shmBytes / (uint64_t{1} << 20) + 1});
        for (auto [size, capacity] : tooLarge) {
            INFO("element size " << size << ", capacity " << capacity << ", /dev/shm holds " << shmBytes);
            Producer producer(name.name, size, capacity);
            Consumer consumer(name.name, size, capacity);
            Endpoint endpoint(Endpoint::A, name.name, size, capacity);
            lastError.clear();
            CHECK(producer.open() == -1);
            CHECK(lastError);
            lastError.clear();
            CHECK(consumer.open() == -1);
            CHECK(lastError);
            lastError.clear();
            CHECK(endpoint.open() == -1);
            CHECK(lastError);
            CHECK_FALSE((producer.opened() || consumer.opened() || endpoint.opened()));
            CHECK_FALSE(segmentExists(name.name));
            CHECK_FALSE(segmentExists(name.name + "_AB"));
        }
    }
}

TEMPLATE_TEST_CASE("every operation on an unopened object returns -1", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    typename TestType::Endpoint endpoint(TestType::Endpoint::A, name.name, kSize, kCapacity);
    Element element[2] = {};

    // Never opened, then opened and closed again: the same answers.
    for (int round = 0; round < 2; ++round) {
        INFO((round == 0 ? "never opened" : "closed"));
        lastError.clear();
        CHECK(producer.tryPush(element[0]) == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK(producer.push(element[0]) == -1);
        CHECK(producer.timedPush(element[0], 5ms) == -1);
        CHECK(producer.tryPush(element, 2) == -1);
        CHECK_FALSE(producer.tryReserve());
        lastError.clear();
        CHECK(consumer.tryPop(element[0]) == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK(consumer.pop(element[0]) == -1);
        CHECK(consumer.timedPop(element[0], 5ms) == -1);
        CHECK(consumer.tryPop(element, 2) == -1);
        CHECK_FALSE(consumer.tryPeek());
        lastError.clear();
        CHECK(endpoint.trySend(element[0]) == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK(endpoint.send(element[0]) == -1);
        CHECK(endpoint.timedSend(element[0], 5ms) == -1);
        CHECK(endpoint.tryReceive(element[0]) == -1);
        CHECK(endpoint.receive(element[0]) == -1);
        CHECK(endpoint.timedReceive(element[0], 5ms) == -1);

        // Nothing to count: empty, not full, no room and nothing waiting.
        CHECK(producer.available() == 0);
        CHECK(consumer.pending() == 0);
        CHECK(endpoint.available() == 0);
        CHECK(endpoint.pending() == 0);
        CHECK((producer.empty() && consumer.empty() && endpoint.empty()));
        CHECK_FALSE((producer.full() || consumer.full() || endpoint.full()));

        REQUIRE(producer.open() == 0);
        REQUIRE(consumer.open() == 0);
        REQUIRE(endpoint.open() == 0);
        producer.close();
        consumer.close();
        endpoint.close();
    }
}

TEMPLATE_TEST_CASE("nullptr elements return -1 and move nothing", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    typename TestType::Endpoint a(TestType::Endpoint::A, name.name, kSize, kCapacity);
    typename TestType::Endpoint b(TestType::Endpoint::B, name.name, kSize, kCapacity);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    REQUIRE(a.open() == 0);
    REQUIRE(b.open() == 0);

    lastError.clear();
    CHECK(producer.tryPush(nullptr) == -1);
    CHECK(lastError == Errc::InvalidParam);
    CHECK(producer.push(nullptr) == -1);
    CHECK(producer.timedPush(nullptr, 5ms) == -1);
    CHECK(producer.tryPush(nullptr, 2) == -1);
    CHECK(a.trySend(nullptr) == -1);
    CHECK(a.send(nullptr) == -1);
    CHECK(a.timedSend(nullptr, 5ms) == -1);
    CHECK(consumer.pending() == 0);
    CHECK(b.pending() == 0);

    // With something waiting, so that only the pointer can be the reason.
    Element element;
    fill(element, 1);
    REQUIRE(producer.tryPush(element) == 0);
    REQUIRE(a.trySend(element) == 0);
    lastError.clear();
    CHECK(consumer.tryPop(nullptr) == -1);
    CHECK(lastError == Errc::InvalidParam);
    CHECK(consumer.pop(nullptr) == -1);
    CHECK(consumer.timedPop(nullptr, 5ms) == -1);
    CHECK(consumer.tryPop(nullptr, 2) == -1);
    CHECK(b.tryReceive(nullptr) == -1);
    CHECK(b.receive(nullptr) == -1);
    CHECK(b.timedReceive(nullptr, 5ms) == -1);
    CHECK(consumer.pending() == 1);
    CHECK(b.pending() == 1);
}

TEMPLATE_TEST_CASE("a ring of capacity 8 is full exactly at the 8th push and empty at the 8th pop", "[compat]", Spsc,
                   Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    const int style = GENERATE(0, 1, 2);  // tryPush/tryPop, push/pop, timedPush/timedPop
    INFO("call style " << style);

    CHECK_FALSE(producer.full());
    CHECK(producer.available() == kCapacity);
    CHECK(consumer.empty());
    for (unsigned i = 0; i < kCapacity; ++i) {
        Element element;
        fill(element, i);
        const int rc = style == 0   ? producer.tryPush(element)
                       : style == 1 ? producer.push(element)
                                    : producer.timedPush(element, 1s);
        REQUIRE(rc == 0);
        CHECK(producer.full() == (i == kCapacity - 1));
        CHECK(producer.available() == kCapacity - 1 - i);
        CHECK(consumer.pending() == i + 1);
        CHECK_FALSE(consumer.empty());
    }
    Element element;
    fill(element, 99);
    lastError.clear();
    CHECK(producer.tryPush(element) == -1);
    CHECK(lastError == Errc::TemporaryError);
    CHECK(producer.full());
    CHECK(producer.available() == 0);

    for (unsigned i = 0; i < kCapacity; ++i) {
        const int rc = style == 0   ? consumer.tryPop(element)
                       : style == 1 ? consumer.pop(element)
                                    : consumer.timedPop(element, 1s);
        REQUIRE(rc == 0);
        Element expected;
        fill(expected, i);
        CHECK(std::memcmp(element, expected, sizeof element) == 0);
        CHECK(consumer.empty() == (i == kCapacity - 1));
        CHECK(consumer.pending() == kCapacity - 1 - i);
        CHECK(producer.available() == i + 1);
        CHECK_FALSE(producer.full());
    }
    lastError.clear();
    CHECK(consumer.tryPop(element) == -1);
    CHECK(lastError == Errc::TemporaryError);
}

TEMPLATE_TEST_CASE("timed calls of 5 ms on a full or empty ring return -1 after 5 ms", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Producer producer(name.name, kSize, kCapacity);
    typename TestType::Consumer consumer(name.name, kSize, kCapacity);
    typename TestType::Endpoint a(TestType::Endpoint::A, name.name, kSize, kCapacity);
    typename TestType::Endpoint b(TestType::Endpoint::B, name.name, kSize, kCapacity);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    REQUIRE(a.open() == 0);
    REQUIRE(b.open() == 0);
    Element element;
    fill(element, 3);

    auto timesOut = [](auto call) {
        lastError.clear();
        const auto start = Clock::now();
        const int rc = call();
        const auto waited = Clock::now() - start;
        CHECK(rc == -1);
        CHECK(lastError == Errc::TimedOut);
        CHECK(waited >= 5ms);
    };
    timesOut([&] { return consumer.timedPop(element, 5ms); });
    timesOut([&] { return b.timedReceive(element, 5ms); });
    for (uint64_t i = 0; i < kCapacity; ++i) {
        REQUIRE(producer.tryPush(element) == 0);
        REQUIRE(a.trySend(element) == 0);
    }
    timesOut([&] { return producer.timedPush(element, 5ms); });
    timesOut([&] { return a.timedSend(element, 5ms); });
}

TEMPLATE_TEST_CASE("endpoint sides see each other's available, pending, full and empty", "[compat]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("compat");
    typename TestType::Endpoint a(TestType::Endpoint::A, name.name, kSize, kCapacity);
    typename TestType::Endpoint b(TestType::Endpoint::B, name.name, kSize, kCapacity);
    REQUIRE(a.open() == 0);
    REQUIRE(b.open() == 0);
    for (auto *side : {&a, &b}) {
        CHECK(side->available() == kCapacity);
        CHECK(side->pending() == 0);
        CHECK_FALSE(side->full());
        CHECK(side->empty());
    }

    // A fills its outbound ring: A turns full exactly at the 8th send, B sees every message
    // waiting; B's own outbound ring and A's inbound one are untouched.
    Element element;
    for (unsigned i = 0; i < kCapacity; ++i) {
        fill(element, i);
        REQUIRE(a.send(element) == 0);
        CHECK(a.full() == (i == kCapacity - 1));
        CHECK(a.available() == kCapacity - 1 - i);
        CHECK(b.pending() == i + 1);
        CHECK_FALSE(b.empty());
        CHECK(a.empty());
        CHECK(a.pending() == 0);
        CHECK_FALSE(b.full());
        CHECK(b.available() == kCapacity);
    }
    lastError.clear();
    CHECK(a.trySend(element) == -1);
    CHECK(lastError == Errc::TemporaryError);

    // B answers once: A sees it waiting.
    fill(element, 100);
    REQUIRE(b.send(element) == 0);
    CHECK(a.pending() == 1);
    CHECK_FALSE(a.empty());
    CHECK(b.available() == kCapacity - 1);

    // B drains: A has room again, in order, and B is empty exactly at the 8th receive.
    for (unsigned i = 0; i < kCapacity; ++i) {
        REQUIRE(b.receive(element) == 0);
        Element expected;
        fill(expected, i);
        CHECK(std::memcmp(element, expected, sizeof element) == 0);
        CHECK(b.empty() == (i == kCapacity - 1));
        CHECK(b.pending() == kCapacity - 1 - i);
        CHECK(a.available() == i + 1);
        CHECK_FALSE(a.full());
    }
    REQUIRE(a.receive(element) == 0);
    Element expected;
    fill(expected, 100);
    CHECK(std::memcmp(element, expected, sizeof element) == 0);
    CHECK(a.empty());
    CHECK(b.available() == kCapacity);
}

// ---------------------------------------------------------------------------------------------
// The original's load test: 1,000,000 messages of 1472 bytes through a ring of capacity 144,
// producer threads in one process and consumer threads in another. Four producers and four
// consumers where the policy allows as many (one of each for SPSC, one consumer for MPSC).

namespace {

// The original's 1472-byte message: the stress suite's checked header (who, which, checksum),
// then a tail derived from it, so that a copy torn anywhere in the 1472 bytes shows.
struct Big {
    stress::Message head;
    uint64_t tail[(1472 - sizeof(stress::Message)) / sizeof(uint64_t)];
};
static_assert(sizeof(Big) == 1472);

void fillBig(Big &m, uint32_t producer, uint64_t seq) {
    m.head = stress::makeMessage(producer, seq);
    for (size_t i = 0; i < std::size(m.tail); ++i)
        m.tail[i] = m.head.checksum + i;
}

bool tailIntact(const Big &m) {
    for (size_t i = 0; i < std::size(m.tail); ++i)
        if (m.tail[i] != m.head.checksum + i) return false;
    return true;
}

struct RunState {
    std::atomic<int> stuck{0};  // a participant gave up: the others may wait forever
};

// Each participant alternates between the blocking and the timed calls every kAlternate messages
// (starting with one or the other by its index), so one run covers both.
constexpr uint64_t kAlternate = 1024;

bool timedTurn(uint64_t i, unsigned index) { return ((i / kAlternate + index) & 1) != 0; }

template <typename Policy>
void loadTest() {
    constexpr uint64_t kCapacity144 = 144;
    const unsigned producers = Policy::policy == JOIN_SHM_SPSC ? 1 : 4;
    const unsigned consumers = Policy::policy == JOIN_SHM_MPMC ? 4 : 1;
    // A whole number per producer and per consumer: each consumer takes exactly its share, so
    // nobody needs a stop message and no pop is left waiting.
    const uint64_t total = stress::scaled(1'000'000, 4) / 4 * 4;
    const uint64_t perProducer = total / producers, perConsumer = total / consumers;
    const auto stall = std::chrono::nanoseconds(stress::kStallNs);
    INFO(stress::policyName(Policy::policy)
         << ": " << producers << " producer(s) x " << perProducer << " -> " << consumers << " consumer(s)");

    test::ShmName name("compat-load");
    stress::Ledger ledger(producers, consumers, perProducer);
    stress::SharedArray<stress::Report> producerReports(producers);
    stress::SharedArray<RunState> state(1);
    auto status = [&] {
        std::string s;
        for (unsigned p = 0; p < producers; ++p)
            s += "producer " + std::to_string(p) + " pushed " + std::to_string(producerReports[p].progress.load()) +
                 " (" + producerReports[p].text() + "); ";
        for (unsigned c = 0; c < consumers; ++c)
            s += "consumer " + std::to_string(c) + " popped " + std::to_string(ledger.report(c).progress.load()) +
                 " (" + ledger.report(c).text() + "); ";
        return s;
    };

    // One process per side; inside it, one thread and one facade object per participant.
    auto threads = [](unsigned n, auto body) {
        std::vector<std::thread> all;
        for (unsigned i = 0; i < n; ++i)
            all.emplace_back(body, i);
        for (std::thread &t : all)
            t.join();
    };
    auto consumerBody = [&](unsigned c) {
        stress::Report &report = ledger.report(c);
        typename Policy::Consumer consumer(name.name, sizeof(Big), kCapacity144);
        if (consumer.open() != 0) {
            report.fail("consumer %u: open: %s", c, lastErrorDetail());
            state[0].stuck = 1;
            return;
        }
        stress::Ledger::View view(ledger, c, consumers == 1);
        Big m;
        for (uint64_t i = 0; i < perConsumer; ++i) {
            const bool timed = timedTurn(i, c);
            if ((timed ? consumer.timedPop(&m, stall) : consumer.pop(&m)) != 0) {
                report.fail("consumer %u: %s #%llu: %s", c, timed ? "timedPop" : "pop", (unsigned long long)i,
                            lastErrorDetail());
                state[0].stuck = 1;
                return;
            }
            if (!tailIntact(m))
                report.fail("consumer %u: message #%llu has a damaged tail (torn copy)", c, (unsigned long long)i);
            view.receive(m.head);
        }
        view.finish();
    };
    auto producerBody = [&](unsigned p) {
        stress::Report &report = producerReports[p];
        typename Policy::Producer producer(name.name, sizeof(Big), kCapacity144);
        if (producer.open() != 0) {
            report.fail("producer %u: open: %s", p, lastErrorDetail());
            state[0].stuck = 1;
            return;
        }
        Big m;
        for (uint64_t seq = 0; seq < perProducer; ++seq) {
            fillBig(m, p, seq);
            const bool timed = timedTurn(seq, p);
            if ((timed ? producer.timedPush(&m, stall) : producer.push(&m)) != 0) {
                report.fail("producer %u: %s of seq %llu: %s", p, timed ? "timedPush" : "push", (unsigned long long)seq,
                            lastErrorDetail());
                state[0].stuck = 1;
                return;
            }
            if ((seq & 1023) == 0) report.progress.store(seq, std::memory_order_relaxed);
        }
        report.progress.store(perProducer, std::memory_order_relaxed);
    };

    const int64_t start = stress::nowNs();
    std::string problems;
    {
        stress::Group group(stress::Mode::Processes, status, [&] { return state[0].stuck.load() != 0; });
        group.spawn("consumers", [&] { threads(consumers, consumerBody); });
        group.spawn("producers", [&] { threads(producers, producerBody); });
        problems = group.wait();
    }
    const double seconds = static_cast<double>(stress::nowNs() - start) / 1e9;
    std::printf("compat load: %s %u x %u: %llu messages of 1472 bytes in %.2f s\n", stress::policyName(Policy::policy),
                producers, consumers, (unsigned long long)total, seconds);
    CHECK(problems == "");
    for (unsigned p = 0; p < producers; ++p) {
        INFO("producer " << p);
        CHECK(producerReports[p].text() == "ok");
    }
    for (unsigned c = 0; c < consumers; ++c) {
        INFO("consumer " << c);
        CHECK(ledger.report(c).text() == "ok");
    }
    CHECK(ledger.exactlyOnce() == "");

    // Quiet now: every message went through, and the ring is empty again.
    typename Policy::Consumer consumer(name.name, sizeof(Big), kCapacity144);
    REQUIRE(consumer.open() == 0);
    CHECK(consumer.empty());
    CHECK(consumer.available() == kCapacity144);
}

}  // namespace

TEMPLATE_TEST_CASE("a million 1472-byte messages pushed and popped (blocking and timed) by threads in two processes",
                   "[compat][load]", Spsc, Mpsc, Mpmc) {
    loadTest<TestType>();
}
