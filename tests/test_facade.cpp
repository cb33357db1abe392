// The C++ facade <join/shared.hpp>: move-only RAII over the C handles, errors mapped onto
// join::lastError, chrono timeouts, and each role of each policy doing the basic thing. The rings'
// own behaviour under load is tested through the C API in the other files.
#include "common.hpp"

#include <catch2/catch.hpp>
#include <join/shared.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

using namespace join;
using Clock = std::chrono::steady_clock;

namespace {

bool segmentExists(const std::string &name) {
    struct stat st;
    return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

bool detailMentions(const char *words) { return std::string(lastErrorDetail()).find(words) != std::string::npos; }

// The type properties every facade class promises.
template <typename T>
constexpr bool isMoveOnlyHandle =
    !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> && std::is_nothrow_move_constructible_v<T> &&
    std::is_nothrow_move_assignable_v<T> && std::is_nothrow_destructible_v<T>;

static_assert(isMoveOnlyHandle<Spsc::Producer> && isMoveOnlyHandle<Spsc::Consumer> && isMoveOnlyHandle<Spsc::Endpoint>);
static_assert(isMoveOnlyHandle<Mpsc::Producer> && isMoveOnlyHandle<Mpsc::Consumer> && isMoveOnlyHandle<Mpsc::Endpoint>);
static_assert(isMoveOnlyHandle<Mpmc::Producer> && isMoveOnlyHandle<Mpmc::Consumer> && isMoveOnlyHandle<Mpmc::Endpoint>);

// Constructors take a name and optional sizes, and do not convert implicitly from a string.
static_assert(std::is_constructible_v<Spsc::Producer, const char *>);
static_assert(std::is_constructible_v<Spsc::Consumer, std::string, uint64_t, uint64_t>);
static_assert(std::is_constructible_v<Mpmc::Endpoint, Mpmc::Endpoint::Side, const char *>);
static_assert(!std::is_convertible_v<const char *, Spsc::Producer>);
static_assert(!std::is_default_constructible_v<Spsc::Producer>);

// Every operation is noexcept; the results are 0/-1 ints, counts for batches.
constexpr std::chrono::seconds kSecond{1};
static_assert(noexcept(std::declval<Spsc::Producer &>().open()));
static_assert(noexcept(std::declval<Spsc::Producer &>().tryPush(nullptr)));
static_assert(noexcept(std::declval<Spsc::Producer &>().push(nullptr)));
static_assert(noexcept(std::declval<Spsc::Producer &>().timedPush(nullptr, kSecond)));
static_assert(noexcept(std::declval<Spsc::Producer &>().tryPush(nullptr, 1)));
static_assert(noexcept(std::declval<Spsc::Consumer &>().tryPop(nullptr)));
static_assert(noexcept(std::declval<Spsc::Consumer &>().pop(nullptr)));
static_assert(noexcept(std::declval<Spsc::Consumer &>().timedPop(nullptr, kSecond)));
static_assert(noexcept(std::declval<Spsc::Consumer &>().tryPop(nullptr, 1)));
static_assert(noexcept(std::declval<Spsc::Endpoint &>().send(nullptr)));
static_assert(noexcept(std::declval<Spsc::Endpoint &>().timedReceive(nullptr, kSecond)));
static_assert(noexcept(SharedMemory::unlink(std::declval<const std::string &>())));
static_assert(std::is_same_v<decltype(std::declval<Spsc::Producer &>().tryPush(nullptr)), int>);
static_assert(std::is_same_v<decltype(std::declval<Spsc::Consumer &>().tryPop(nullptr, 1)), int64_t>);

// Zero-copy slots are move-only RAII objects too, handed out by value.
static_assert(isMoveOnlyHandle<WriteSlot> && isMoveOnlyHandle<ReadSlot>);
static_assert(std::is_same_v<decltype(std::declval<Spsc::Producer &>().tryReserve()), WriteSlot>);
static_assert(std::is_same_v<decltype(std::declval<Mpmc::Consumer &>().timedPeek(kSecond)), ReadSlot>);
static_assert(noexcept(std::declval<Spsc::Producer &>().reserve()) &&noexcept(std::declval<Spsc::Consumer &>().peek()));
static_assert(std::is_same_v<decltype(std::declval<WriteSlot &>().data()), void *>);
static_assert(std::is_same_v<decltype(std::declval<ReadSlot &>().data()), const void *>);

// Errors are std::error_codes comparable with join::Errc.
static_assert(std::is_error_code_enum_v<Errc>);
static_assert(std::is_same_v<decltype(lastError), std::error_code>);

// The three policies are distinct types; the endpoint side is one enum reachable from each.
static_assert(!std::is_same_v<Spsc::Producer, Mpsc::Producer> && !std::is_same_v<Mpsc::Consumer, Mpmc::Consumer>);
static_assert(std::is_same_v<Spsc::Endpoint::Side, Mpmc::Endpoint::Side>);

}  // namespace

TEST_CASE("constructing a facade object does not open it", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name);
    Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, name.name, 16, 4);
    CHECK_FALSE(producer.opened());
    CHECK_FALSE(endpoint.opened());
    CHECK_FALSE(segmentExists(name.name));
    CHECK_FALSE(segmentExists(name.name + "_AB"));

    REQUIRE(producer.open() == 0);
    CHECK(producer.opened());
    CHECK(segmentExists(name.name));
    REQUIRE(endpoint.open() == 0);
    CHECK(endpoint.opened());
    CHECK(segmentExists(name.name + "_AB"));
    CHECK(segmentExists(name.name + "_BA"));
}

TEST_CASE("the sizes default to 1472 bytes and 144 elements and are kept as given", "[facade]") {
    test::ShmName name("facade");
    Mpsc::Consumer defaults(name.name);
    CHECK(defaults.elementSize() == 1472);
    CHECK(defaults.capacity() == 144);
    CHECK(defaults.name() == name.name);

    Mpmc::Endpoint endpoint(Mpmc::Endpoint::Side::B, name.name, 24, 5);
    CHECK(endpoint.elementSize() == 24);
    CHECK(endpoint.capacity() == 5);
    CHECK(endpoint.side() == Mpmc::Endpoint::Side::B);

    REQUIRE(defaults.open() == 0);
    CHECK(defaults.available() == 144);
}

TEST_CASE("moving a facade object moves the open handle and leaves the source closed", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 4);
    Spsc::Consumer consumer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);

    Spsc::Producer moved(std::move(producer));
    CHECK_FALSE(producer.opened());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
    CHECK(moved.opened());
    CHECK(moved.elementSize() == 8);
    CHECK(moved.capacity() == 4);

    uint64_t in = 7, out = 0;
    lastError.clear();
    CHECK(producer.tryPush(&in) == -1);  // NOLINT(bugprone-use-after-move)
    CHECK(lastError == Errc::InvalidParam);
    REQUIRE(moved.tryPush(&in) == 0);

    Spsc::Consumer assigned(name.name, 8, 4);
    assigned = std::move(consumer);
    CHECK_FALSE(consumer.opened());  // NOLINT(bugprone-use-after-move)
    CHECK(assigned.opened());
    REQUIRE(assigned.tryPop(&out) == 0);
    CHECK(out == 7);

    // The moved-from objects own nothing: destroying them (here, by closing) frees no role.
    producer.close();  // NOLINT(bugprone-use-after-move)
    Spsc::Producer intruder(name.name, 8, 4);
    lastError.clear();
    CHECK(intruder.open() == -1);
    CHECK(lastError == Errc::InUse);
}

TEST_CASE("move-assigning onto an open object closes what it held", "[facade]") {
    test::ShmName first("facade"), second("facade");
    Spsc::Consumer holder(first.name, 8, 4);
    Spsc::Consumer other(second.name, 8, 4);
    REQUIRE(holder.open() == 0);
    REQUIRE(other.open() == 0);

    holder = std::move(other);
    CHECK(holder.opened());
    CHECK(holder.name() == second.name);

    // The consumer role of the first ring is free again, that of the second is still held.
    Spsc::Consumer onFirst(first.name, 8, 4);
    CHECK(onFirst.open() == 0);
    Spsc::Consumer onSecond(second.name, 8, 4);
    lastError.clear();
    CHECK(onSecond.open() == -1);
    CHECK(lastError == Errc::InUse);

    // Self-move leaves the object usable.
    Spsc::Consumer &alias = holder;
    holder = std::move(alias);
    CHECK(holder.opened());
}

TEST_CASE("destroying or closing a facade object frees its role", "[facade]") {
    test::ShmName name("facade");
    {
        Spsc::Consumer first(name.name, 8, 4);
        REQUIRE(first.open() == 0);
        Spsc::Consumer second(name.name, 8, 4);
        lastError.clear();
        REQUIRE(second.open() == -1);
        CHECK(lastError == Errc::InUse);
        CHECK_FALSE(second.opened());
    }
    Spsc::Consumer third(name.name, 8, 4);
    REQUIRE(third.open() == 0);
    third.close();
    CHECK_FALSE(third.opened());
    third.close();  // closing twice does nothing

    Spsc::Consumer fourth(name.name, 8, 4);
    CHECK(fourth.open() == 0);

    {
        Spsc::Endpoint a(Spsc::Endpoint::Side::A, name.name, 8, 4);
        REQUIRE(a.open() == 0);
    }
    Spsc::Endpoint again(Spsc::Endpoint::Side::A, name.name, 8, 4);
    CHECK(again.open() == 0);
}

TEST_CASE("opening an object that is already open fails with InUse and keeps it open", "[facade]") {
    test::ShmName name("facade");
    Mpmc::Producer producer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    lastError.clear();
    CHECK(producer.open() == -1);
    CHECK(lastError == Errc::InUse);
    CHECK(detailMentions("already open"));
    CHECK(producer.opened());
    uint64_t v = 1;
    CHECK(producer.tryPush(&v) == 0);

    Mpmc::Endpoint endpoint(Mpmc::Endpoint::Side::B, name.name, 8, 4);
    REQUIRE(endpoint.open() == 0);
    lastError.clear();
    CHECK(endpoint.open() == -1);
    CHECK(lastError == Errc::InUse);
    CHECK(endpoint.opened());
}

TEST_CASE("every operation on a closed object fails with InvalidParam", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 4);
    Spsc::Consumer consumer(name.name, 8, 4);
    Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, name.name, 8, 4);
    uint64_t v[2] = {1, 2};

    auto failsWithInvalidParam = [](auto rc) {
        const bool minusOne = rc == -1;
        const bool invalid = lastError == Errc::InvalidParam;
        lastError.clear();
        return minusOne && invalid && std::string(lastErrorDetail()).find("not open") != std::string::npos;
    };
    lastError.clear();
    CHECK(failsWithInvalidParam(producer.tryPush(v)));
    CHECK(failsWithInvalidParam(producer.push(v)));
    CHECK(failsWithInvalidParam(producer.timedPush(v, std::chrono::milliseconds(1))));
    CHECK(failsWithInvalidParam(producer.tryPush(v, 2)));
    CHECK(failsWithInvalidParam(consumer.tryPop(v)));
    CHECK(failsWithInvalidParam(consumer.pop(v)));
    CHECK(failsWithInvalidParam(consumer.timedPop(v, std::chrono::milliseconds(1))));
    CHECK(failsWithInvalidParam(consumer.tryPop(v, 2)));
    CHECK(failsWithInvalidParam(endpoint.trySend(v)));
    CHECK(failsWithInvalidParam(endpoint.send(v)));
    CHECK(failsWithInvalidParam(endpoint.timedSend(v, std::chrono::milliseconds(1))));
    CHECK(failsWithInvalidParam(endpoint.tryReceive(v)));
    CHECK(failsWithInvalidParam(endpoint.receive(v)));
    CHECK(failsWithInvalidParam(endpoint.timedReceive(v, std::chrono::milliseconds(1))));
    CHECK_FALSE(segmentExists(name.name));  // nothing reached the library

    // After close, the same again.
    REQUIRE(producer.open() == 0);
    producer.close();
    CHECK(failsWithInvalidParam(producer.tryPush(v)));
}

TEST_CASE("a closed object has nothing to send or receive", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 4);
    Spsc::Consumer consumer(name.name, 8, 4);
    Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, name.name, 8, 4);
    CHECK(producer.available() == 0);
    CHECK(producer.pending() == 0);
    CHECK_FALSE(producer.full());
    CHECK(producer.empty());
    CHECK(consumer.pending() == 0);
    CHECK(consumer.empty());
    CHECK(endpoint.available() == 0);
    CHECK(endpoint.pending() == 0);

    // Not a property of a fresh object only: the same after open and close, with data in the ring.
    REQUIRE(producer.open() == 0);
    uint64_t v = 3;
    REQUIRE(producer.tryPush(&v) == 0);
    CHECK(producer.available() == 3);
    producer.close();
    CHECK(producer.available() == 0);
    CHECK(producer.pending() == 0);
}

TEST_CASE("errors from the C API become join::Errc values in lastError", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 16, 2);
    Spsc::Consumer consumer(name.name, 16, 2);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    char element[16] = "x";

    SECTION("popping from an empty ring is a TemporaryError") {
        lastError.clear();
        CHECK(consumer.tryPop(element) == -1);
        CHECK(lastError == Errc::TemporaryError);
        CHECK(lastError == std::errc::resource_unavailable_try_again);
    }
    SECTION("pushing to a full ring is a TemporaryError") {
        REQUIRE(producer.tryPush(element) == 0);
        REQUIRE(producer.tryPush(element) == 0);
        lastError.clear();
        CHECK(producer.tryPush(element) == -1);
        CHECK(lastError == Errc::TemporaryError);
    }
    SECTION("a timed pop on an empty ring is TimedOut after the timeout") {
        lastError.clear();
        const auto start = Clock::now();
        CHECK(consumer.timedPop(element, std::chrono::milliseconds(10)) == -1);
        const auto waited = Clock::now() - start;
        CHECK(lastError == Errc::TimedOut);
        CHECK(lastError == std::errc::timed_out);
        CHECK(waited >= std::chrono::milliseconds(10));
        CHECK(waited < std::chrono::seconds(5));
    }
    SECTION("a timed push on a full ring is TimedOut after the timeout") {
        REQUIRE(producer.tryPush(element) == 0);
        REQUIRE(producer.tryPush(element) == 0);
        lastError.clear();
        const auto start = Clock::now();
        CHECK(producer.timedPush(element, std::chrono::milliseconds(10)) == -1);
        CHECK(Clock::now() - start >= std::chrono::milliseconds(10));
        CHECK(lastError == Errc::TimedOut);
    }
    SECTION("a mismatched element size is InvalidParam, with a detail that says so") {
        Spsc::Producer wrong(name.name, 32, 2);
        lastError.clear();
        CHECK(wrong.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK(detailMentions("element size"));
        CHECK_FALSE(wrong.opened());
    }
    SECTION("a mismatched capacity or policy is InvalidParam") {
        Mpmc::Producer otherPolicy(name.name, 16, 2);
        lastError.clear();
        CHECK(otherPolicy.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK(detailMentions("policy"));
        Mpmc::Consumer otherCapacity(name.name, 16, 3);
        lastError.clear();
        CHECK(otherCapacity.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
    }
    SECTION("a NULL element is InvalidParam") {
        lastError.clear();
        CHECK(producer.tryPush(nullptr) == -1);
        CHECK(lastError == Errc::InvalidParam);
        CHECK_FALSE(detailMentions("not open"));  // the library's sentence, not the facade's
    }
    SECTION("a taken role is InUse") {
        Spsc::Producer second(name.name, 16, 2);
        lastError.clear();
        CHECK(second.open() == -1);
        CHECK(lastError == Errc::InUse);
        CHECK(lastError == std::errc::device_or_resource_busy);
    }
    SECTION("a bad name is InvalidParam") {
        Spsc::Producer slashed("a/b", 16, 2);
        lastError.clear();
        CHECK(slashed.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
        Spsc::Producer empty("", 16, 2);
        lastError.clear();
        CHECK(empty.open() == -1);
        CHECK(lastError == Errc::InvalidParam);
    }
    SECTION("a batch of zero elements is InvalidParam") {
        lastError.clear();
        CHECK(producer.tryPush(element, 0) == -1);
        CHECK(lastError == Errc::InvalidParam);
        lastError.clear();
        CHECK(consumer.tryPop(element, 0) == -1);
        CHECK(lastError == Errc::InvalidParam);
    }
}

TEST_CASE("a name that is not a join-shm segment is a ProtocolError", "[facade]") {
    test::ShmName name("facade");
    const int fd = ::shm_open(("/" + name.name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd >= 0);
    char garbage[4096];
    std::memset(garbage, 'x', sizeof garbage);
    const bool written = ::write(fd, garbage, sizeof garbage) == static_cast<ssize_t>(sizeof garbage);
    ::close(fd);
    REQUIRE(written);

    Spsc::Consumer consumer(name.name, 16, 2);
    lastError.clear();
    CHECK(consumer.open() == -1);
    CHECK(lastError == Errc::ProtocolError);
    CHECK(lastError == std::errc::protocol_error);
    CHECK(detailMentions("not a join-shm segment"));
}

TEST_CASE("negative errno values map onto Errc, the others onto the generic category", "[facade]") {
    CHECK(detail::toErrorCode(-EINVAL) == Errc::InvalidParam);
    CHECK(detail::toErrorCode(-EAGAIN) == Errc::TemporaryError);
    CHECK(detail::toErrorCode(-ETIMEDOUT) == Errc::TimedOut);
    CHECK(detail::toErrorCode(-EBUSY) == Errc::InUse);
    CHECK(detail::toErrorCode(-EPROTO) == Errc::ProtocolError);
    CHECK(detail::toErrorCode(-ENOENT) == std::error_code(ENOENT, std::generic_category()));
    CHECK(detail::toErrorCode(-EACCES) == std::error_code(EACCES, std::generic_category()));
    CHECK(detail::toErrorCode(-ENOMEM) == std::errc::not_enough_memory);
    CHECK(detail::toErrorCode(-EACCES).category() != errorCategory());
}

TEST_CASE("the join error category names itself and describes each code", "[facade]") {
    const std::error_code codes[] = {Errc::InvalidParam, Errc::TemporaryError, Errc::TimedOut, Errc::InUse,
                                     Errc::ProtocolError};
    for (const auto &code : codes) {
        CHECK(std::string(code.category().name()) == "join");
        CHECK_FALSE(code.message().empty());
        CHECK(code.message().find("unknown") == std::string::npos);
        CHECK(static_cast<bool>(code));
    }
    for (std::size_t i = 0; i < std::size(codes); ++i)
        for (std::size_t j = i + 1; j < std::size(codes); ++j)
            CHECK(codes[i].message() != codes[j].message());
    CHECK(make_error_code(Errc::TimedOut).message().find("timed out") != std::string::npos);
    CHECK(make_error_code(Errc::InvalidParam).message().find("invalid") != std::string::npos);
    CHECK(static_cast<int>(Errc::InvalidParam) == 1);
    CHECK(make_error_code(Errc::InUse) != make_error_code(Errc::TimedOut));
    CHECK(std::error_code(Errc::InUse) != std::error_code(EBUSY, std::generic_category()));  // distinct codes...
    CHECK(std::error_code(Errc::InUse) == std::errc::device_or_resource_busy);               // ...same condition
}

TEST_CASE("timeouts accept any std::chrono duration", "[facade]") {
    test::ShmName name("facade");
    Spsc::Consumer consumer(name.name, 8, 4);
    REQUIRE(consumer.open() == 0);
    uint64_t v = 0;

    auto timesOutAfter = [&](auto timeout, std::chrono::nanoseconds atLeast) {
        lastError.clear();
        const auto start = Clock::now();
        const int rc = consumer.timedPop(&v, timeout);
        const auto waited = Clock::now() - start;
        return rc == -1 && lastError == Errc::TimedOut && waited >= atLeast && waited < std::chrono::seconds(5);
    };
    CHECK(timesOutAfter(std::chrono::milliseconds(5), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::microseconds(5000), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::nanoseconds(5'000'000), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::duration<double>(0.005), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::duration<float, std::milli>(5.0f), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::duration<unsigned, std::micro>(5000u), std::chrono::milliseconds(5)));
    CHECK(timesOutAfter(std::chrono::seconds(0), std::chrono::nanoseconds(0)));
    // A negative duration makes one attempt; it does not mean "forever" as -1 ns does in C.
    CHECK(timesOutAfter(std::chrono::milliseconds(-1), std::chrono::nanoseconds(0)));
    CHECK(timesOutAfter(std::chrono::duration<double>(-1e30), std::chrono::nanoseconds(0)));

    // With an element waiting, huge timeouts return at once instead of overflowing.
    Spsc::Producer producer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    for (uint64_t i = 1; i <= 3; ++i)
        REQUIRE(producer.timedPush(&i, std::chrono::hours::max()) == 0);
    CHECK(consumer.timedPop(&v, std::chrono::hours::max()) == 0);
    CHECK(v == 1);
    CHECK(consumer.timedPop(&v, std::chrono::duration<double>(1e300)) == 0);
    CHECK(v == 2);
    CHECK(consumer.timedPop(&v, std::chrono::nanoseconds::max()) == 0);
    CHECK(v == 3);
}

TEST_CASE("durations convert to whole nanoseconds, rounded up and clamped", "[facade]") {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    CHECK(detail::toTimeoutNs(std::chrono::milliseconds(10)) == 10'000'000);
    CHECK(detail::toTimeoutNs(std::chrono::nanoseconds(1)) == 1);
    CHECK(detail::toTimeoutNs(std::chrono::seconds(3)) == 3'000'000'000);
    CHECK(detail::toTimeoutNs(std::chrono::duration<double>(1.5)) == 1'500'000'000);
    CHECK(detail::toTimeoutNs(std::chrono::duration<double, std::nano>(0.25)) == 1);  // not a single attempt
    CHECK(detail::toTimeoutNs(std::chrono::duration<int64_t, std::pico>(1500)) == 2);
    CHECK(detail::toTimeoutNs(std::chrono::nanoseconds(0)) == 0);
    CHECK(detail::toTimeoutNs(std::chrono::nanoseconds(-1)) == 0);
    CHECK(detail::toTimeoutNs(std::chrono::hours::min()) == 0);
    CHECK(detail::toTimeoutNs(std::chrono::duration<double>(std::nan(""))) == 0);
    CHECK(detail::toTimeoutNs(std::chrono::nanoseconds::max()) == kMax);
    CHECK(detail::toTimeoutNs(std::chrono::hours::max()) == kMax);
    CHECK(detail::toTimeoutNs(std::chrono::duration<uint64_t>(std::numeric_limits<uint64_t>::max())) == kMax);
    CHECK(detail::toTimeoutNs(std::chrono::duration<double>(std::numeric_limits<double>::infinity())) == kMax);
}

TEST_CASE("a ring holds exactly its capacity", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 3);
    Spsc::Consumer consumer(name.name, 8, 3);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    CHECK(producer.available() == 3);
    CHECK(consumer.empty());
    CHECK_FALSE(producer.full());

    for (uint64_t i = 0; i < 3; ++i) {
        REQUIRE(producer.tryPush(&i) == 0);
        CHECK(producer.available() == 2 - i);
        CHECK(consumer.pending() == i + 1);
        CHECK_FALSE(consumer.empty());
    }
    uint64_t extra = 99;
    lastError.clear();
    CHECK(producer.tryPush(&extra) == -1);
    CHECK(lastError == Errc::TemporaryError);
    CHECK(producer.available() == 0);
    CHECK(producer.full());
    CHECK(consumer.pending() == 3);

    for (uint64_t i = 0; i < 3; ++i) {
        uint64_t out = 99;
        REQUIRE(consumer.tryPop(&out) == 0);
        CHECK(out == i);
    }
    CHECK(consumer.empty());
    CHECK(consumer.pending() == 0);
    CHECK(producer.available() == 3);
    uint64_t out = 99;
    lastError.clear();
    CHECK(consumer.tryPop(&out) == -1);
    CHECK(lastError == Errc::TemporaryError);
    CHECK(out == 99);
}

TEST_CASE("blocking push and pop return once they can complete", "[facade]") {
    test::ShmName name("facade");
    Mpsc::Producer producer(name.name, 8, 2);
    Mpsc::Consumer consumer(name.name, 8, 2);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);

    uint64_t in = 5, out = 0;
    REQUIRE(producer.push(&in) == 0);  // room: returns at once
    REQUIRE(consumer.pop(&out) == 0);  // an element: returns at once
    CHECK(out == 5);

    // A consumer waiting before or after the push receives it either way. (A generous timed pop,
    // so that a failed push fails the test instead of hanging it.)
    uint64_t received = 0;
    int rc = -2;
    std::thread waiter([&] { rc = consumer.timedPop(&received, std::chrono::seconds(30)); });
    in = 6;
    const int pushed = producer.push(&in);
    waiter.join();
    CHECK(pushed == 0);
    CHECK(rc == 0);
    CHECK(received == 6);
}

TEST_CASE("batch calls move as many elements as there are room or data for", "[facade]") {
    test::ShmName name("facade");
    Mpmc::Producer producer(name.name, 8, 4);
    Mpmc::Consumer consumer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);

    const uint64_t in[6] = {10, 11, 12, 13, 14, 15};
    CHECK(producer.tryPush(in, 6) == 4);
    CHECK(producer.full());
    lastError.clear();
    CHECK(producer.tryPush(in, 1) == -1);
    CHECK(lastError == Errc::TemporaryError);

    uint64_t out[6] = {};
    CHECK(consumer.tryPop(out, 3) == 3);
    CHECK(out[0] == 10);
    CHECK(out[1] == 11);
    CHECK(out[2] == 12);
    CHECK(out[3] == 0);
    CHECK(consumer.tryPop(out, 6) == 1);
    CHECK(out[0] == 13);
    CHECK(out[1] == 11);  // only one element was written
    lastError.clear();
    CHECK(consumer.tryPop(out, 2) == -1);
    CHECK(lastError == Errc::TemporaryError);
}

TEMPLATE_TEST_CASE("producers and consumers of each policy exchange elements", "[facade]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("facade");
    typename TestType::Producer first(name.name, 8, 8);
    typename TestType::Producer second(name.name, 8, 8);
    typename TestType::Consumer consumer(name.name, 8, 8);
    typename TestType::Consumer otherConsumer(name.name, 8, 8);
    REQUIRE(first.open() == 0);
    REQUIRE(consumer.open() == 0);

    const bool multiProducer = TestType::policy != JOIN_SHM_SPSC;
    const bool multiConsumer = TestType::policy == JOIN_SHM_MPMC;
    lastError.clear();
    CHECK((second.open() == 0) == multiProducer);
    if (!multiProducer) CHECK(lastError == Errc::InUse);
    lastError.clear();
    CHECK((otherConsumer.open() == 0) == multiConsumer);
    if (!multiConsumer) CHECK(lastError == Errc::InUse);

    uint64_t a = 1, b = 2, c = 3;
    REQUIRE(first.tryPush(&a) == 0);
    REQUIRE(first.push(&b) == 0);
    if (multiProducer) REQUIRE(second.timedPush(&c, std::chrono::milliseconds(100)) == 0);
    CHECK(consumer.pending() == (multiProducer ? 3u : 2u));

    uint64_t out = 0;
    REQUIRE(consumer.tryPop(&out) == 0);
    CHECK(out == 1);
    if (multiConsumer) {
        REQUIRE(otherConsumer.pop(&out) == 0);
    } else {
        REQUIRE(consumer.pop(&out) == 0);
    }
    CHECK(out == 2);
    if (multiProducer) {
        REQUIRE(consumer.timedPop(&out, std::chrono::milliseconds(100)) == 0);
        CHECK(out == 3);
    }
    CHECK(consumer.empty());
}

TEMPLATE_TEST_CASE("an endpoint carries messages both ways in one process", "[facade]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("facade");
    using Endpoint = typename TestType::Endpoint;
    Endpoint a(Endpoint::Side::A, name.name, 16, 4);
    Endpoint b(Endpoint::Side::B, name.name, 16, 4);
    REQUIRE(a.open() == 0);
    REQUIRE(b.open() == 0);
    CHECK(a.available() == 4);
    CHECK(a.pending() == 0);

    char buffer[16] = "ping";
    REQUIRE(a.trySend(buffer) == 0);
    CHECK(a.available() == 3);
    CHECK(b.pending() == 1);
    CHECK(a.pending() == 0);  // A's own message is not inbound to A
    std::memset(buffer, 0, sizeof buffer);
    REQUIRE(b.tryReceive(buffer) == 0);
    CHECK(std::string(buffer) == "ping");

    std::strcpy(buffer, "pong");
    REQUIRE(b.send(buffer) == 0);
    std::memset(buffer, 0, sizeof buffer);
    REQUIRE(a.receive(buffer) == 0);
    CHECK(std::string(buffer) == "pong");

    std::strcpy(buffer, "timed");
    REQUIRE(a.timedSend(buffer, std::chrono::milliseconds(100)) == 0);
    std::memset(buffer, 0, sizeof buffer);
    REQUIRE(b.timedReceive(buffer, std::chrono::milliseconds(100)) == 0);
    CHECK(std::string(buffer) == "timed");

    lastError.clear();
    CHECK(a.tryReceive(buffer) == -1);
    CHECK(lastError == Errc::TemporaryError);
    lastError.clear();
    CHECK(b.timedReceive(buffer, std::chrono::milliseconds(5)) == -1);
    CHECK(lastError == Errc::TimedOut);

    for (int i = 0; i < 4; ++i)
        REQUIRE(a.trySend(buffer) == 0);
    CHECK(a.available() == 0);
    lastError.clear();
    CHECK(a.trySend(buffer) == -1);
    CHECK(lastError == Errc::TemporaryError);
    lastError.clear();
    CHECK(a.timedSend(buffer, std::chrono::milliseconds(5)) == -1);
    CHECK(lastError == Errc::TimedOut);
}

TEST_CASE("a second endpoint on a taken side is InUse", "[facade]") {
    test::ShmName name("facade");
    Spsc::Endpoint a(Spsc::Endpoint::Side::A, name.name, 16, 4);
    Spsc::Endpoint again(Spsc::Endpoint::Side::A, name.name, 16, 4);
    Spsc::Endpoint mismatched(Spsc::Endpoint::Side::B, name.name, 32, 4);
    REQUIRE(a.open() == 0);
    lastError.clear();
    CHECK(again.open() == -1);
    CHECK(lastError == Errc::InUse);
    lastError.clear();
    CHECK(mismatched.open() == -1);
    CHECK(lastError == Errc::InvalidParam);
    CHECK(detailMentions("element size"));
}

TEST_CASE("SharedMemory::unlink removes a name and accepts a missing one", "[facade]") {
    test::ShmName name("facade");
    {
        Spsc::Producer producer(name.name, 8, 4);
        REQUIRE(producer.open() == 0);
    }
    REQUIRE(segmentExists(name.name));
    CHECK(SharedMemory::unlink(name.name) == 0);
    CHECK_FALSE(segmentExists(name.name));
    CHECK(SharedMemory::unlink(name.name) == 0);
    lastError.clear();
    CHECK(SharedMemory::unlink("a/b") == -1);
    CHECK(lastError == Errc::InvalidParam);
}

TEST_CASE("lastError and its detail belong to the calling thread", "[facade]") {
    test::ShmName name("facade");
    Spsc::Consumer consumer(name.name, 8, 4);
    REQUIRE(consumer.open() == 0);
    uint64_t v = 0;
    REQUIRE(consumer.tryPop(&v) == -1);
    REQUIRE(lastError == Errc::TemporaryError);
    const std::string mainDetail = lastErrorDetail();

    std::error_code seenByOther, setByOther;
    std::string otherDetail;
    std::thread other([&] {
        seenByOther = lastError;
        Spsc::Producer closed(name.name, 8, 4);
        closed.tryPush(&v);
        setByOther = lastError;
        otherDetail = lastErrorDetail();
    });
    other.join();

    CHECK_FALSE(seenByOther);  // a new thread starts without an error
    CHECK(setByOther == Errc::InvalidParam);
    CHECK(otherDetail != mainDetail);
    CHECK(lastError == Errc::TemporaryError);  // unchanged here
    CHECK(std::string(lastErrorDetail()) == mainDetail);
}

TEST_CASE("success leaves lastError as it was", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    lastError = Errc::TimedOut;
    uint64_t v = 1;
    REQUIRE(producer.tryPush(&v) == 0);
    CHECK(lastError == Errc::TimedOut);
}

TEMPLATE_TEST_CASE("zero-copy slots commit and release when they go out of scope", "[facade]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("facade");
    typename TestType::Producer producer(name.name, 8, 4);
    typename TestType::Consumer consumer(name.name, 8, 4);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    for (uint64_t value = 1; value <= 6; ++value) {
        {
            WriteSlot slot = value % 2 ? producer.tryReserve() : producer.timedReserve(std::chrono::milliseconds(10));
            REQUIRE(slot);
            REQUIRE(slot.size() == 8);
            std::memcpy(slot.data(), &value, 8);
            uint64_t other = 0;
            CHECK(consumer.tryPop(&other) == -1);  // not visible before the commit
            CHECK(lastError == Errc::TemporaryError);
            CHECK(producer.tryPush(&other) == -1);  // one slot at a time
            CHECK(lastError == Errc::InvalidParam);
        }
        {
            ReadSlot slot = value % 2 ? consumer.peek() : consumer.tryPeek();
            REQUIRE(slot);
            uint64_t seen = 0;
            std::memcpy(&seen, slot.data(), 8);
            CHECK(seen == value);
        }
        CHECK(consumer.empty());
    }
}

TEMPLATE_TEST_CASE("explicit commit, release and cancel finish a slot exactly once", "[facade]", Spsc, Mpsc, Mpmc) {
    test::ShmName name("facade");
    typename TestType::Producer producer(name.name, 8, 2);
    typename TestType::Consumer consumer(name.name, 8, 2);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);

    // A cancelled reservation publishes nothing (MPSC/MPMC skip its position, SPSC reuses it).
    WriteSlot cancelled = producer.tryReserve();
    REQUIRE(cancelled);
    REQUIRE(cancelled.cancel() == 0);
    CHECK(!cancelled);
    CHECK(cancelled.cancel() == -1);  // nothing left to give back
    uint64_t out = 0;
    CHECK(consumer.tryPop(&out) == -1);
    CHECK(lastError == Errc::TemporaryError);

    WriteSlot slot = producer.reserve();
    REQUIRE(slot);
    const uint64_t value = 42;
    std::memcpy(slot.data(), &value, 8);
    REQUIRE(slot.commit() == 0);
    CHECK(!slot);
    CHECK(slot.commit() == -1);
    CHECK(lastError == Errc::InvalidParam);

    // A cancelled peek keeps the element for this consumer's next read.
    ReadSlot peeked = consumer.tryPeek();
    REQUIRE(peeked);
    REQUIRE(peeked.cancel() == 0);
    ReadSlot again = consumer.tryPeek();
    REQUIRE(again);
    uint64_t seen = 0;
    std::memcpy(&seen, again.data(), 8);
    CHECK(seen == 42);

    // Move-assignment finishes what the target held before taking over.
    again = consumer.tryPeek();  // one slot at a time: this fails and finishes nothing yet
    CHECK(!again);
    CHECK(lastError == Errc::InvalidParam);
    CHECK(consumer.empty());
}

TEST_CASE("zero-copy calls fail cleanly on a closed object and time out on a full or empty ring", "[facade]") {
    test::ShmName name("facade");
    Spsc::Producer producer(name.name, 8, 1);
    Spsc::Consumer consumer(name.name, 8, 1);
    CHECK(!producer.tryReserve());
    CHECK(lastError == Errc::InvalidParam);
    CHECK(!consumer.peek());
    CHECK(lastError == Errc::InvalidParam);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    CHECK(!consumer.timedPeek(std::chrono::milliseconds(20)));
    CHECK(lastError == Errc::TimedOut);
    uint64_t value = 7;
    REQUIRE(producer.push(&value) == 0);
    const auto start = Clock::now();
    CHECK(!producer.timedReserve(std::chrono::milliseconds(20)));
    CHECK(lastError == Errc::TimedOut);
    CHECK(Clock::now() - start >= std::chrono::milliseconds(20));
}
