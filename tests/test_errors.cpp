// Bad input, one case at a time, through the C API: each failure gives the documented negative
// errno, a detail sentence naming what was wrong, and leaves everything as it was.
#include "common.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string lowered(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string detail() { return join_shm_last_error_detail(); }

// The detail of the last failure is a non-empty sentence that mentions every word given
// (case-insensitive).
void checkDetailMentions(std::initializer_list<const char *> words) {
    const std::string text = detail();
    INFO("join_shm_last_error_detail() = \"" << text << "\"");
    CHECK(!text.empty());
    for (const char *word : words) {
        INFO("expected it to mention \"" << word << "\"");
        CHECK(lowered(text).find(lowered(word)) != std::string::npos);
    }
}

// CALL must return ERR, and the detail must mention each of the words that follow.
#define CHECK_FAILS(call, err, ...)         \
    do {                                    \
        INFO("call: " #call);               \
        CHECK((call) == (err));             \
        checkDetailMentions({__VA_ARGS__}); \
    } while (0)

std::string shmPath(const std::string &name) { return "/dev/shm/" + name; }

bool shmExists(const std::string &name) {
    struct stat st;
    return stat(shmPath(name).c_str(), &st) == 0;
}

// A non-null pointer that is not a handle, so that "*out is NULL after failure" can fail.
join_shm_queue *const kSentinelQueue = reinterpret_cast<join_shm_queue *>(uintptr_t{0x1000});
join_shm_endpoint *const kSentinelEndpoint = reinterpret_cast<join_shm_endpoint *>(uintptr_t{0x1000});

// Opens a queue with these arguments and expects ERR, *out reset to NULL, and no segment left
// behind under the name.
void checkOpenFails(const char *name, int policy, int role, uint64_t elementSize, uint64_t capacity, int err,
                    std::initializer_list<const char *> words) {
    join_shm_queue *q = kSentinelQueue;
    INFO("open(name=" << (name ? std::string("\"") + name + "\"" : std::string("NULL")) << ", policy=" << policy
                      << ", role=" << role << ", element_size=" << elementSize << ", capacity=" << capacity << ")");
    CHECK(join_shm_queue_open(&q, name, static_cast<join_shm_policy>(policy), static_cast<join_shm_role>(role),
                              elementSize, capacity) == err);
    checkDetailMentions(words);
    CHECK(q == nullptr);
    if (q != nullptr && q != kSentinelQueue) join_shm_queue_close(q);
}

void writeFile(const std::string &path, const std::string &bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
}

std::string readFile(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The scheduler state of one of this process's threads ('R', 'S', ...), from /proc.
char threadState(pid_t tid) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

// Waits (bounded) until thread TID sleeps in the kernel: how a peer knows a blocking call is
// really blocked before it acts. Returns whether it saw it.
bool waitUntilSleeping(pid_t tid) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (threadState(tid) == 'S') return true;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return false;
}

}  // namespace

TEST_CASE("a NULL output pointer is refused", "[errors]") {
    test::ShmName name;
    CHECK_FAILS(join_shm_queue_open(nullptr, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4), -EINVAL, "null");
    CHECK_FAILS(join_shm_queue_open_ex(nullptr, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, nullptr), -EINVAL,
                "null");
    CHECK_FAILS(join_shm_endpoint_open(nullptr, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4), -EINVAL, "null");
    CHECK_FALSE(shmExists(name.name));
}

TEST_CASE("NULL, empty, slashed and dot names are refused", "[errors]") {
    checkOpenFails(nullptr, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "null"});
    checkOpenFails("", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "empty"});
    checkOpenFails("/", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "empty"});
    checkOpenFails("a/b", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "/"});
    checkOpenFails("/a/b", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "/"});
    checkOpenFails("ab/", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "/"});
    checkOpenFails("//ab", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "/"});
    checkOpenFails(".", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "\".\""});
    checkOpenFails("..", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name", "\"..\""});
    checkOpenFails("/.", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name"});
    checkOpenFails("/..", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name"});
    join_shm_endpoint *e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, nullptr, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4), -EINVAL, "name");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, "", JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4), -EINVAL, "name");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, "x/y", JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4), -EINVAL, "name");
    CHECK(e == nullptr);
    // unlink checks names the same way
    CHECK_FAILS(join_shm_unlink(nullptr), -EINVAL, "name");
    CHECK_FAILS(join_shm_unlink(""), -EINVAL, "name");
    CHECK_FAILS(join_shm_unlink("a/b"), -EINVAL, "name");
    CHECK_FAILS(join_shm_unlink(".."), -EINVAL, "name");
    CHECK_FAILS(join_shm_endpoint_unlink(nullptr), -EINVAL, "name");
    CHECK_FAILS(join_shm_endpoint_unlink(""), -EINVAL, "name");
}

TEST_CASE("names may be 255 characters long, endpoint names 252, and no longer", "[errors]") {
    test::ShmName base("long");
    auto padded = [&](size_t length) {
        std::string s = base.name;
        s.resize(length, 'x');
        return s;
    };
    const std::string longest = padded(255), tooLong = padded(256);
    join_shm_unlink(longest.c_str());

    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open(&q, longest.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);
    CHECK(shmExists(longest));
    join_shm_queue_close(q);
    // with its optional leading slash the same name is 256 characters and still the same ring
    const std::string slashed = "/" + longest;
    q = nullptr;
    CHECK(join_shm_queue_open(&q, slashed.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4) == 0);
    join_shm_queue_close(q);
    CHECK(join_shm_unlink(slashed.c_str()) == 0);
    CHECK_FALSE(shmExists(longest));

    checkOpenFails(tooLong.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name"});
    checkOpenFails(("/" + tooLong).c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name"});
    checkOpenFails(padded(4096).c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"name"});
    CHECK_FAILS(join_shm_unlink(tooLong.c_str()), -EINVAL, "name");

    const std::string longestEndpoint = padded(252), tooLongEndpoint = padded(253);
    join_shm_endpoint *e = nullptr;
    REQUIRE(join_shm_endpoint_open(&e, longestEndpoint.c_str(), JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4) == 0);
    CHECK(shmExists(longestEndpoint + "_AB"));
    CHECK(shmExists(longestEndpoint + "_BA"));
    join_shm_endpoint_close(e);
    CHECK(join_shm_endpoint_unlink(longestEndpoint.c_str()) == 0);
    CHECK_FALSE(shmExists(longestEndpoint + "_AB"));

    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, tooLongEndpoint.c_str(), JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4), -EINVAL,
                "name");
    CHECK(e == nullptr);
    CHECK_FALSE(shmExists(tooLongEndpoint + "_AB"));
    CHECK_FAILS(join_shm_endpoint_unlink(tooLongEndpoint.c_str()), -EINVAL, "name");
}

TEST_CASE("zero sizes and sizes whose product overflows are refused", "[errors]") {
    test::ShmName name;
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 0, 4, -EINVAL, {"element size"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 0, -EINVAL, {"capacity"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 0, 0, -EINVAL, {});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, UINT64_MAX, 1, -EINVAL, {"size"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 1, UINT64_MAX, -EINVAL, {"capacity"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, uint64_t{1} << 32, uint64_t{1} << 32, -EINVAL, {"capacity"});
    checkOpenFails(name, JOIN_SHM_MPMC, JOIN_SHM_CONSUMER, UINT64_MAX / 2 + 1, 2, -EINVAL, {"size"});
    CHECK_FALSE(shmExists(name.name));

    join_shm_endpoint *e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 0, 4), -EINVAL, "element size");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 8, 0), -EINVAL, "capacity");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, uint64_t{1} << 33, uint64_t{1} << 33),
                -EINVAL, "capacity");
    CHECK(e == nullptr);
    CHECK_FALSE(shmExists(name.name + "_AB"));
    CHECK_FALSE(shmExists(name.name + "_BA"));
}

TEST_CASE("unknown policy, role and side values are refused", "[errors]") {
    test::ShmName name;
    for (int policy : {0, 5, -1, 0x7fffffff}) {
        checkOpenFails(name, policy, JOIN_SHM_PRODUCER, 8, 4, -EINVAL, {"policy"});
        join_shm_endpoint *e = kSentinelEndpoint;
        CHECK_FAILS(join_shm_endpoint_open(&e, name, static_cast<join_shm_policy>(policy), JOIN_SHM_SIDE_A, 8, 4),
                    -EINVAL, "policy");
        CHECK(e == nullptr);
    }
    for (int role : {0, 3, -1, 0x7fffffff})
        checkOpenFails(name, JOIN_SHM_SPSC, role, 8, 4, -EINVAL, {"role"});
    for (int side : {2, -1, 0x7fffffff}) {
        join_shm_endpoint *e = kSentinelEndpoint;
        CHECK_FAILS(join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, static_cast<join_shm_side>(side), 8, 4), -EINVAL,
                    "side");
        CHECK(e == nullptr);
    }
    CHECK_FALSE(shmExists(name.name));
    CHECK_FALSE(shmExists(name.name + "_AB"));
}

TEST_CASE("bad options are refused and good ones from a larger struct are accepted", "[errors]") {
    test::ShmName name;
    join_shm_queue *q = kSentinelQueue;
    join_shm_options options{};  // size left 0: the caller forgot to set it
    CHECK_FAILS(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &options), -EINVAL, "size");
    CHECK(q == nullptr);
    options.size = sizeof options;
    options.flags = uint64_t{1} << 40;
    q = kSentinelQueue;
    CHECK_FAILS(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &options), -EINVAL, "flags");
    CHECK(q == nullptr);
    options.flags = 0;
    options.mode = 0100644;  // a file type, not permission bits
    q = kSentinelQueue;
    CHECK_FAILS(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &options), -EINVAL, "mode");
    CHECK(q == nullptr);
    CHECK_FALSE(shmExists(name.name));

    // A caller compiled against a newer header passes a larger struct; fields it appended are 0.
    struct Newer {
        join_shm_options base;
        uint64_t appended[4];
    } newer{};
    newer.base.size = sizeof newer;
    q = nullptr;
    CHECK(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &newer.base) == 0);
    CHECK(q != nullptr);
    join_shm_queue_close(q);
}

TEST_CASE("NULL elements, slots and handles are refused by every call", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    uint64_t value = 1;
    CHECK_FAILS(join_shm_try_push(pair.producer, nullptr), -EINVAL, "element");
    CHECK_FAILS(join_shm_push(pair.producer, nullptr), -EINVAL, "element");
    CHECK_FAILS(join_shm_timed_push(pair.producer, nullptr, 0), -EINVAL, "element");
    CHECK_FAILS(join_shm_try_push_n(pair.producer, nullptr, 1), -EINVAL, "null");
    CHECK(join_shm_pending(pair.consumer) == 0);  // nothing was pushed by any of them
    REQUIRE(join_shm_try_push(pair.producer, &value) == 0);
    CHECK_FAILS(join_shm_try_pop(pair.consumer, nullptr), -EINVAL, "element");
    CHECK_FAILS(join_shm_pop(pair.consumer, nullptr), -EINVAL, "element");
    CHECK_FAILS(join_shm_timed_pop(pair.consumer, nullptr, 0), -EINVAL, "element");
    CHECK_FAILS(join_shm_try_pop_n(pair.consumer, nullptr, 1), -EINVAL, "null");
    CHECK_FAILS(join_shm_try_reserve(pair.producer, nullptr), -EINVAL, "null");
    CHECK_FAILS(join_shm_try_peek(pair.consumer, nullptr), -EINVAL, "null");
    CHECK(join_shm_pending(pair.consumer) == 1);  // nothing was popped by any of them
    uint64_t out = 0;
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 1);

    CHECK_FAILS(join_shm_try_push(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_push(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_timed_push(nullptr, &value, -1), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_pop(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_pop(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_timed_pop(nullptr, &value, -1), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_push_n(nullptr, &value, 1), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_pop_n(nullptr, &value, 1), -EINVAL, "handle");
    void *slot = nullptr;
    const void *peeked = nullptr;
    CHECK_FAILS(join_shm_try_reserve(nullptr, &slot), -EINVAL, "handle");
    CHECK_FAILS(join_shm_commit(nullptr), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_peek(nullptr, &peeked), -EINVAL, "handle");
    CHECK_FAILS(join_shm_release(nullptr), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_send(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_send(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_timed_send(nullptr, &value, -1), -EINVAL, "handle");
    CHECK_FAILS(join_shm_try_receive(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_receive(nullptr, &value), -EINVAL, "handle");
    CHECK_FAILS(join_shm_timed_receive(nullptr, &value, -1), -EINVAL, "handle");
}

TEST_CASE("inspecting a NULL or foreign handle gives 0", "[errors]") {
    CHECK(join_shm_pending(nullptr) == 0);
    CHECK(join_shm_available(nullptr) == 0);
    CHECK(join_shm_full(nullptr) == 0);
    CHECK(join_shm_empty(nullptr) == 0);
    CHECK(join_shm_element_size(nullptr) == 0);
    CHECK(join_shm_capacity(nullptr) == 0);
    CHECK(join_shm_endpoint_available(nullptr) == 0);
    CHECK(join_shm_endpoint_pending(nullptr) == 0);

    // Memory that never was a handle (here: zeroes, then ones) is recognised as such.
    for (int fill : {0x00, 0xff}) {
        alignas(64) unsigned char foreign[4096];
        std::memset(foreign, fill, sizeof foreign);
        auto *q = reinterpret_cast<join_shm_queue *>(foreign);
        CHECK(join_shm_pending(q) == 0);
        CHECK(join_shm_capacity(q) == 0);
        CHECK(join_shm_element_size(q) == 0);
        uint64_t value = 3;
        CHECK_FAILS(join_shm_try_push(q, &value), -EINVAL, "handle");
        CHECK_FAILS(join_shm_try_pop(q, &value), -EINVAL, "handle");
        join_shm_queue_close(q);  // harmless
        auto *e = reinterpret_cast<join_shm_endpoint *>(foreign);
        CHECK_FAILS(join_shm_try_send(e, &value), -EINVAL, "handle");
        join_shm_endpoint_close(e);
    }
}

TEST_CASE("an endpoint handle is not a queue handle, nor the other way round", "[errors]") {
    test::ShmName name;
    join_shm_endpoint *e = nullptr;
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 4) == 0);
    REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);
    uint64_t value = 5;
    CHECK_FAILS(join_shm_try_push(reinterpret_cast<join_shm_queue *>(e), &value), -EINVAL, "handle");
    CHECK(join_shm_capacity(reinterpret_cast<join_shm_queue *>(e)) == 0);
    CHECK_FAILS(join_shm_try_send(reinterpret_cast<join_shm_endpoint *>(q), &value), -EINVAL, "handle");
    CHECK(join_shm_endpoint_available(reinterpret_cast<join_shm_endpoint *>(q)) == 0);
    // Both still work as what they are.
    CHECK(join_shm_try_send(e, &value) == 0);
    CHECK(join_shm_try_push(q, &value) == 0);
    join_shm_endpoint_close(e);
    join_shm_queue_close(q);
}

TEST_CASE("a consumer cannot push and a producer cannot pop", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    uint64_t value = 11, out = 0;
    CHECK_FAILS(join_shm_try_push(pair.consumer, &value), -EINVAL, "producer");
    CHECK_FAILS(join_shm_push(pair.consumer, &value), -EINVAL, "producer");
    CHECK_FAILS(join_shm_timed_push(pair.consumer, &value, 0), -EINVAL, "producer");
    CHECK_FAILS(join_shm_try_push_n(pair.consumer, &value, 1), -EINVAL, "producer");
    void *slot = nullptr;
    CHECK_FAILS(join_shm_try_reserve(pair.consumer, &slot), -EINVAL, "producer");
    CHECK_FAILS(join_shm_commit(pair.consumer), -EINVAL, "producer");
    CHECK(join_shm_pending(pair.producer) == 0);

    REQUIRE(join_shm_try_push(pair.producer, &value) == 0);
    CHECK_FAILS(join_shm_try_pop(pair.producer, &out), -EINVAL, "consumer");
    CHECK_FAILS(join_shm_pop(pair.producer, &out), -EINVAL, "consumer");
    CHECK_FAILS(join_shm_timed_pop(pair.producer, &out, 0), -EINVAL, "consumer");
    CHECK_FAILS(join_shm_try_pop_n(pair.producer, &out, 1), -EINVAL, "consumer");
    const void *peeked = nullptr;
    CHECK_FAILS(join_shm_try_peek(pair.producer, &peeked), -EINVAL, "consumer");
    CHECK_FAILS(join_shm_release(pair.producer), -EINVAL, "consumer");
    CHECK(out == 0);
    CHECK(join_shm_pending(pair.consumer) == 1);
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 11);
}

TEST_CASE("batches of zero elements are refused", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    uint64_t values[2] = {1, 2};
    CHECK_FAILS(join_shm_try_push_n(pair.producer, values, 0), -EINVAL, "count");
    CHECK(join_shm_pending(pair.consumer) == 0);
    REQUIRE(join_shm_try_push_n(pair.producer, values, 2) == 2);
    CHECK_FAILS(join_shm_try_pop_n(pair.consumer, values, 0), -EINVAL, "count");
    CHECK(join_shm_pending(pair.consumer) == 2);
}

TEST_CASE("zero-copy calls out of order are refused and disturb nothing", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 2);
    CHECK_FAILS(join_shm_commit(pair.producer), -EINVAL, "commit");
    CHECK_FAILS(join_shm_release(pair.consumer), -EINVAL, "release");
    void *slot = nullptr;
    REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
    uint64_t value = 77;
    std::memcpy(slot, &value, sizeof value);
    void *second = nullptr;
    CHECK(join_shm_try_reserve(pair.producer, &second) == -EINVAL);
    CHECK(!detail().empty());
    CHECK(join_shm_try_push(pair.producer, &value) == -EINVAL);
    CHECK(!detail().empty());
    REQUIRE(join_shm_commit(pair.producer) == 0);
    CHECK_FAILS(join_shm_commit(pair.producer), -EINVAL, "commit");  // once only

    const void *peeked = nullptr;
    REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
    const void *again = nullptr;
    CHECK(join_shm_try_peek(pair.consumer, &again) == -EINVAL);
    CHECK(!detail().empty());
    uint64_t out = 0;
    CHECK(join_shm_try_pop(pair.consumer, &out) == -EINVAL);
    CHECK(!detail().empty());
    CHECK(out == 0);
    REQUIRE(join_shm_release(pair.consumer) == 0);
    CHECK_FAILS(join_shm_release(pair.consumer), -EINVAL, "release");  // once only
    CHECK(join_shm_empty(pair.consumer) == 1);
}

TEST_CASE("a second holder of a single role is refused while the first lives", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 4);
    uint64_t value = 21;
    REQUIRE(join_shm_try_push(pair.producer, &value) == 0);
    join_shm_queue *q = kSentinelQueue;
    CHECK_FAILS(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4), -EBUSY, "producer");
    CHECK(q == nullptr);
    q = kSentinelQueue;
    CHECK_FAILS(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4), -EBUSY, "consumer");
    CHECK(q == nullptr);
    // The holders are undisturbed.
    uint64_t out = 0;
    CHECK(join_shm_pending(pair.consumer) == 1);
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out == 21);
    CHECK(join_shm_try_push(pair.producer, &value) == 0);
}

TEST_CASE("a name that is not a join-shm segment is refused and left as it was", "[errors]") {
    test::ShmName name;
    const std::string path = shmPath(name.name);
    std::string garbage(100, '\0');
    for (size_t i = 0; i < garbage.size(); ++i)
        garbage[i] = static_cast<char>(i * 37 + 11);

    for (const std::string &contents : {garbage, std::string(), std::string(4096, '\0')}) {
        INFO("an existing file of " << contents.size() << " bytes");
        writeFile(path, contents);
        for (int role : {JOIN_SHM_PRODUCER, JOIN_SHM_CONSUMER}) {
            checkOpenFails(name, JOIN_SHM_SPSC, role, 8, 4, -EPROTO, {name.c_str()});
            checkOpenFails(name, JOIN_SHM_MPMC, role, 64, 1000, -EPROTO, {name.c_str()});
        }
        CHECK(readFile(path) == contents);
    }
    REQUIRE(join_shm_unlink(name) == 0);  // unlink removes it all the same
    CHECK_FALSE(shmExists(name.name));
}

TEST_CASE("a segment truncated or overwritten by someone else is refused", "[errors]") {
    test::ShmName name;
    const std::string path = shmPath(name.name);
    auto create = [&] {
        join_shm_unlink(name);
        join_shm_queue *q = nullptr;
        REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 64, 16) == 0);
        join_shm_queue_close(q);
    };
    struct stat st;

    SECTION("cut short by one byte") {
        create();
        REQUIRE(stat(path.c_str(), &st) == 0);
        REQUIRE(truncate(path.c_str(), st.st_size - 1) == 0);
    }
    SECTION("cut to a few bytes") {
        create();
        REQUIRE(truncate(path.c_str(), 16) == 0);
    }
    SECTION("its first bytes overwritten") {
        create();
        int fd = open(path.c_str(), O_WRONLY);
        REQUIRE(fd >= 0);
        const char zeroes[16] = {};
        CHECK(pwrite(fd, zeroes, sizeof zeroes, 0) == static_cast<ssize_t>(sizeof zeroes));
        close(fd);
    }
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 64, 16, -EPROTO, {name.c_str()});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 64, 16, -EPROTO, {name.c_str()});
}

TEST_CASE("opening with another element size, capacity or policy is refused and names the mismatch", "[errors]") {
    test::ShmName name;
    join_shm_queue *producer = nullptr;
    REQUIRE(join_shm_queue_open(&producer, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 1024, 144) == 0);
    std::vector<unsigned char> element(1024, 0x5a);
    REQUIRE(join_shm_try_push(producer, element.data()) == 0);
    // The consumer role is free (and MPSC/MPMC producers are never exclusive), so only the
    // parameters can be what is refused.
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 512, 144, -EINVAL, {"element size", "1024", "512"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 1024, 100, -EINVAL, {"capacity", "144", "100"});
    checkOpenFails(name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 1024, 145, -EINVAL, {"capacity", "144", "145"});
    checkOpenFails(name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, 1024, 144, -EINVAL, {"policy"});
    checkOpenFails(name, JOIN_SHM_MPSC, JOIN_SHM_CONSUMER, 1024, 144, -EINVAL, {"policy"});

    // The ring is undisturbed: its element is still there, intact, and the consumer role free.
    join_shm_queue *consumer = nullptr;
    REQUIRE(join_shm_queue_open(&consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 1024, 144) == 0);
    CHECK(join_shm_pending(consumer) == 1);
    std::vector<unsigned char> out(1024, 0);
    REQUIRE(join_shm_try_pop(consumer, out.data()) == 0);
    CHECK(out == element);
    join_shm_queue_close(consumer);
    join_shm_queue_close(producer);

    // Same for the rings of an endpoint.
    test::ShmName endpointName;
    join_shm_endpoint *a = nullptr;
    REQUIRE(join_shm_endpoint_open(&a, endpointName, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 32, 8) == 0);
    join_shm_endpoint *e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, endpointName, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 16, 8), -EINVAL,
                "element size");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, endpointName, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 32, 9), -EINVAL, "capacity");
    CHECK(e == nullptr);
    e = kSentinelEndpoint;
    CHECK_FAILS(join_shm_endpoint_open(&e, endpointName, JOIN_SHM_MPSC, JOIN_SHM_SIDE_B, 32, 8), -EINVAL, "policy");
    CHECK(e == nullptr);
    join_shm_endpoint *b = nullptr;
    CHECK(join_shm_endpoint_open(&b, endpointName, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 32, 8) == 0);
    join_shm_endpoint_close(a);
    join_shm_endpoint_close(b);
}

TEST_CASE("a push refused on a full ring loses nothing", "[errors]") {
    test::ShmName name;
    const uint64_t capacity = 5;
    test::Pair pair(name, 16, capacity);
    struct Element {
        uint64_t a, b;
    };
    for (uint64_t i = 0; i < capacity; ++i) {
        Element in{i, ~i};
        REQUIRE(join_shm_try_push(pair.producer, &in) == 0);
    }
    Element extra{100, 200};
    CHECK_FAILS(join_shm_try_push(pair.producer, &extra), -EAGAIN, "full");
    CHECK_FAILS(join_shm_timed_push(pair.producer, &extra, 0), -ETIMEDOUT, "time");
    CHECK(join_shm_try_push_n(pair.producer, &extra, 1) == -EAGAIN);
    void *slot = nullptr;
    CHECK(join_shm_try_reserve(pair.producer, &slot) == -EAGAIN);
    CHECK(!detail().empty());
    CHECK(join_shm_pending(pair.consumer) == capacity);
    CHECK(join_shm_pending(pair.producer) == capacity);
    CHECK(join_shm_full(pair.producer) == 1);
    for (uint64_t i = 0; i < capacity; ++i) {
        Element out{};
        REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
        CHECK(out.a == i);
        CHECK(out.b == ~i);
    }
    Element out{7, 7};
    CHECK_FAILS(join_shm_try_pop(pair.consumer, &out), -EAGAIN, "empty");
    CHECK_FAILS(join_shm_timed_pop(pair.consumer, &out, 0), -ETIMEDOUT, "time");
    CHECK(join_shm_try_pop_n(pair.consumer, &out, 1) == -EAGAIN);
    const void *peeked = nullptr;
    CHECK(join_shm_try_peek(pair.consumer, &peeked) == -EAGAIN);
    CHECK(out.a == 7);  // a refused pop leaves the buffer alone
    CHECK(out.b == 7);
    // The ring still works after all these refusals.
    REQUIRE(join_shm_try_push(pair.producer, &extra) == 0);
    REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
    CHECK(out.a == 100);
    CHECK(out.b == 200);
}

TEST_CASE("strerror never returns NULL, whatever the value", "[errors]") {
    for (int err : {0, -9999, 9999, INT_MIN, INT_MAX, INT_MIN + 1, -EINVAL, EPROTO, -ETIMEDOUT, 4096, -4096}) {
        INFO("join_shm_strerror(" << err << ")");
        const char *text = join_shm_strerror(err);
        REQUIRE(text != nullptr);
        CHECK(std::strlen(text) > 0);
    }
    CHECK(std::string(join_shm_strerror(-EINVAL)) != join_shm_strerror(-EBUSY));
}

TEST_CASE("closing NULL is a no-op and unlinking a missing name succeeds", "[errors]") {
    join_shm_queue_close(nullptr);
    join_shm_endpoint_close(nullptr);
    test::ShmName name;
    CHECK_FALSE(shmExists(name.name));
    CHECK(join_shm_unlink(name) == 0);
    CHECK(join_shm_unlink(("/" + name.name).c_str()) == 0);
    CHECK(join_shm_endpoint_unlink(name) == 0);
}

TEST_CASE("segments are created 0600 by default and with the mode asked for", "[errors]") {
    struct stat st;
    {
        test::ShmName name;
        join_shm_queue *q = nullptr;
        REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4) == 0);
        REQUIRE(stat(shmPath(name.name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
        join_shm_queue_close(q);
    }
    {
        test::ShmName name;
        join_shm_options options{};
        options.size = sizeof options;
        join_shm_queue *q = nullptr;
        REQUIRE(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &options) == 0);
        REQUIRE(stat(shmPath(name.name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);  // mode 0 means the default
        join_shm_queue_close(q);
    }
    {
        test::ShmName name;
        join_shm_queue *q = nullptr;
        REQUIRE(join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, nullptr) == 0);
        REQUIRE(stat(shmPath(name.name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
        join_shm_queue_close(q);
    }
    for (uint32_t mode : {0640u, 0660u, 0604u}) {
        test::ShmName name;
        join_shm_options options{};
        options.size = sizeof options;
        options.mode = mode;
        // The umask does not narrow the mode asked for.
        mode_t saved = umask(0077);
        join_shm_queue *q = nullptr;
        int r = join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 4, &options);
        umask(saved);
        REQUIRE(r == 0);
        REQUIRE(stat(shmPath(name.name).c_str(), &st) == 0);
        INFO("mode asked for: 0" << std::oct << mode << ", got 0" << (st.st_mode & 07777));
        CHECK((st.st_mode & 07777) == mode);
        // An attacher's mode does not change an existing segment.
        options.mode = 0666;
        join_shm_queue *consumer = nullptr;
        REQUIRE(join_shm_queue_open_ex(&consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 8, 4, &options) == 0);
        REQUIRE(stat(shmPath(name.name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == mode);
        join_shm_queue_close(q);
        join_shm_queue_close(consumer);
    }
}

TEST_CASE("a timeout of 0 tries once and reports a timeout", "[errors]") {
    test::ShmName name;
    test::Pair pair(name, 8, 1);
    uint64_t value = 0;
    CHECK_FAILS(join_shm_timed_pop(pair.consumer, &value, 0), -ETIMEDOUT, "time");
    uint64_t in = 31;
    CHECK(join_shm_timed_push(pair.producer, &in, 0) == 0);  // room: succeeds at once
    CHECK_FAILS(join_shm_timed_push(pair.producer, &in, 0), -ETIMEDOUT, "time");
    CHECK(join_shm_timed_pop(pair.consumer, &value, 0) == 0);  // an element: succeeds at once
    CHECK(value == 31);
    CHECK_FAILS(join_shm_timed_pop(pair.consumer, &value, 0), -ETIMEDOUT, "time");
}

TEST_CASE("a negative timeout waits until the peer acts", "[errors]") {
    for (int64_t timeout : {int64_t{-1}, INT64_MIN}) {
        INFO("timeout " << timeout);
        test::ShmName name;
        test::Pair pair(name, 8, 1);
        const pid_t waiter = gettid();
        std::atomic<bool> calling{false};
        bool sawPopSleeping = false, sawPushSleeping = false;
        uint64_t popped = 0;

        // Pop on an empty ring: the peer pushes only once it saw us asleep in the call.
        std::thread peer([&] {
            while (!calling.load())
                std::this_thread::yield();
            sawPopSleeping = waitUntilSleeping(waiter);
            uint64_t v = 0xfeed;
            join_shm_try_push(pair.producer, &v);
        });
        calling.store(true);
        int r = join_shm_timed_pop(pair.consumer, &popped, timeout);
        peer.join();
        CHECK(r == 0);
        CHECK(popped == 0xfeed);
        CHECK(sawPopSleeping);

        // Push on a full ring: the peer pops only once it saw us asleep in the call.
        uint64_t first = 1, second = 2, out = 0;
        REQUIRE(join_shm_try_push(pair.producer, &first) == 0);
        calling.store(false);
        std::thread popper([&] {
            while (!calling.load())
                std::this_thread::yield();
            sawPushSleeping = waitUntilSleeping(waiter);
            join_shm_try_pop(pair.consumer, &out);
        });
        calling.store(true);
        r = join_shm_timed_push(pair.producer, &second, timeout);
        popper.join();
        CHECK(r == 0);
        CHECK(out == 1);
        CHECK(sawPushSleeping);
        REQUIRE(join_shm_try_pop(pair.consumer, &out) == 0);
        CHECK(out == 2);
    }
}

TEST_CASE("the error detail belongs to the thread that failed", "[errors]") {
    test::ShmName name;
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 0, 4) == -EINVAL);
    const std::string mine = detail();
    REQUIRE(lowered(mine).find("element size") != std::string::npos);
    std::string fresh, theirs;
    std::thread other([&] {
        const char *initial = join_shm_last_error_detail();  // never NULL, even before any failure
        fresh = initial ? initial : "(null)";
        join_shm_queue *p = nullptr;
        (void)join_shm_queue_open(&p, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 0);
        theirs = detail();
    });
    other.join();
    CHECK(fresh != "(null)");
    CHECK(lowered(theirs).find("capacity") != std::string::npos);
    CHECK(detail() == mine);
}

TEST_CASE("a segment larger than the room left in /dev/shm fails cleanly instead of crashing", "[errors]") {
    // In a child with its own mount namespace (needs root; otherwise there is nothing to check),
    // /dev/shm is replaced by a 1 MiB tmpfs and a ring of about 10 MiB is created there.
    // Exit codes: 0 refused cleanly, 77 no namespace, 1 opened, 2 *out not NULL, 3 no detail,
    // 4 a file was left behind; death by a signal (SIGBUS) is the failure this test is about.
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        if (unshare(CLONE_NEWNS) != 0) _exit(77);
        // Private first: nothing mounted below may propagate back to the parent's namespace.
        if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(77);
        if (mount("jshm-test", "/dev/shm", "tmpfs", 0, "size=1m") != 0) _exit(77);
        join_shm_queue *q = kSentinelQueue;
        int r = join_shm_queue_open(&q, "jshm-test-too-big", JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 64, 100000);
        if (r == 0) _exit(1);
        if (q != nullptr) _exit(2);
        if (std::strlen(join_shm_last_error_detail()) == 0) _exit(3);
        struct stat st;
        if (stat("/dev/shm/jshm-test-too-big", &st) == 0) _exit(4);
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        WARN("not checked: no private mount namespace for a small /dev/shm (needs root)");
        return;
    }
    INFO("child: " << (WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                           : "exit code " + std::to_string(WEXITSTATUS(status))));
    CHECK_FALSE(WIFSIGNALED(status));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
