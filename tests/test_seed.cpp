// The seed page (shared-memory.md), snippet by snippet. Each snippet is pasted unchanged between
// "--- snippet" and "--- end" markers, apart from `using namespace join;` for the page's
// `using join;`; around it are only the declarations it assumes (the `msg`, the `endpoint`, a
// policy for the bare `Producer`) and REQUIREs showing it behaves as the page says.
//
// The page uses fixed names ("channel", "my_channel", "ipc_channel"). So that this program cannot
// disturb, or be disturbed by, anything else on the machine, it first tries to give itself a
// private /dev/shm (a tmpfs in a mount namespace of its own, which needs CAP_SYS_ADMIN); either
// way every test unlinks those names before and after it runs, since tests reuse them with other
// policies and sizes.

// --- snippet "Creating a producer" (first lines; the rest is in its test case below)
#include <join/shared.hpp>

using namespace join;
// --- end

#include <catch2/catch.hpp>

#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

namespace {

// Runs before main (and so before any thread exists, which unshare requires).
struct PrivateDevShm {
    bool isolated = false;
    PrivateDevShm() {
        isolated = ::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
                   ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=64m") == 0;
    }
};
const PrivateDevShm privateDevShm;

const char *const kFixedNames[] = {"channel", "my_channel", "ipc_channel_AB", "ipc_channel_BA"};

// Unlinks the page's names when a test (or one run of it, for sections) starts and ends.
struct FixedNames {
    FixedNames() { clean(); }
    ~FixedNames() { clean(); }
    FixedNames(const FixedNames &) = delete;
    FixedNames &operator=(const FixedNames &) = delete;
    static void clean() {
        for (const char *name : kFixedNames)
            join_shm_unlink(name);
    }
};

bool segmentExists(const char *name) {
    struct stat st;
    return ::stat((std::string("/dev/shm/") + name).c_str(), &st) == 0;
}

off_t segmentSize(const char *name) {
    struct stat st;
    return ::stat((std::string("/dev/shm/") + name).c_str(), &st) == 0 ? st.st_size : -1;
}

// Sends std::cerr to a string for as long as it lives.
struct CaptureCerr {
    std::ostringstream text;
    std::streambuf *saved;
    CaptureCerr() : saved(std::cerr.rdbuf(text.rdbuf())) {}
    ~CaptureCerr() { std::cerr.rdbuf(saved); }
    CaptureCerr(const CaptureCerr &) = delete;
    CaptureCerr &operator=(const CaptureCerr &) = delete;
};

}  // namespace

// --- snippet "Sending data" (its type; the rest is in its test case below)
struct Message {
    uint64_t id;
    char data[1016];
};
// --- end

static_assert(sizeof(Message) == 1024, "the page's Message is one 1024-byte element");

TEST_CASE("the seed tests know whether they have a private /dev/shm", "[seed]") {
    if (!privateDevShm.isolated) WARN("no private /dev/shm (not permitted): the page's fixed names are shared");
    FixedNames guard;
    CHECK_FALSE(segmentExists("channel"));
    CHECK_FALSE(segmentExists("my_channel"));
}

// ---------------------------------------------------------------------------------------------
// Ring buffer policies
// ---------------------------------------------------------------------------------------------

TEST_CASE("the SPSC snippet gives one writer and one reader a ring", "[seed]") {
    FixedNames guard;
    const uint64_t elementSize = 64, capacity = 8;

    // --- snippet "SPSC — Single Producer Single Consumer"
    Spsc::Producer producer("channel", elementSize, capacity);
    Spsc::Consumer consumer("channel", elementSize, capacity);
    // --- end

    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    char in[64] = "one writer", out[64] = {};
    REQUIRE(producer.tryPush(in) == 0);
    REQUIRE(consumer.tryPop(out) == 0);
    CHECK(std::string(out) == "one writer");

    // One writer and one reader: a second of either is refused.
    Spsc::Producer secondWriter("channel", elementSize, capacity);
    Spsc::Consumer secondReader("channel", elementSize, capacity);
    lastError.clear();
    CHECK(secondWriter.open() == -1);
    CHECK(lastError == Errc::InUse);
    lastError.clear();
    CHECK(secondReader.open() == -1);
    CHECK(lastError == Errc::InUse);
}

TEST_CASE("the MPSC snippet gives several writers and one reader a ring", "[seed]") {
    FixedNames guard;
    const uint64_t elementSize = 64, capacity = 8;

    // --- snippet "MPSC — Multiple Producer Single Consumer"
    Mpsc::Producer producer("channel", elementSize, capacity);
    Mpsc::Consumer consumer("channel", elementSize, capacity);
    // --- end

    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    Mpsc::Producer secondWriter("channel", elementSize, capacity);
    REQUIRE(secondWriter.open() == 0);
    char first[64] = "first", second[64] = "second", out[64] = {};
    REQUIRE(producer.tryPush(first) == 0);
    REQUIRE(secondWriter.tryPush(second) == 0);
    REQUIRE(consumer.tryPop(out) == 0);
    CHECK(std::string(out) == "first");
    REQUIRE(consumer.tryPop(out) == 0);
    CHECK(std::string(out) == "second");

    Mpsc::Consumer secondReader("channel", elementSize, capacity);
    lastError.clear();
    CHECK(secondReader.open() == -1);
    CHECK(lastError == Errc::InUse);
}

TEST_CASE("the MPMC snippet gives several writers and readers a ring", "[seed]") {
    FixedNames guard;
    const uint64_t elementSize = 64, capacity = 8;

    // --- snippet "MPMC — Multiple Producer Multiple Consumer"
    Mpmc::Producer producer("channel", elementSize, capacity);
    Mpmc::Consumer consumer("channel", elementSize, capacity);
    // --- end

    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    Mpmc::Producer secondWriter("channel", elementSize, capacity);
    Mpmc::Consumer secondReader("channel", elementSize, capacity);
    REQUIRE(secondWriter.open() == 0);
    REQUIRE(secondReader.open() == 0);
    char first[64] = "first", second[64] = "second", out[64] = {};
    REQUIRE(producer.tryPush(first) == 0);
    REQUIRE(secondWriter.tryPush(second) == 0);
    REQUIRE(consumer.tryPop(out) == 0);
    CHECK(std::string(out) == "first");
    REQUIRE(secondReader.tryPop(out) == 0);
    CHECK(std::string(out) == "second");
    CHECK(consumer.empty());
}

// ---------------------------------------------------------------------------------------------
// Producer / Consumer
// ---------------------------------------------------------------------------------------------

TEST_CASE("the producer and consumer snippets deliver message 42 with its text", "[seed]") {
    FixedNames guard;

    // --- snippet "Creating a producer" (after its #include and using)
    Spsc::Producer producer("my_channel", 1024, 64);

    if (producer.open() == -1) {
        // Handle error
    }
    // --- end
    REQUIRE(producer.opened());
    REQUIRE(segmentExists("my_channel"));

    {
        // --- snippet "Sending data" (after its struct Message)
        Message msg = {42, "Hello"};

        // Non-blocking
        if (producer.tryPush(&msg) == -1) {
            // Buffer full
        }

        // Blocking
        producer.push(&msg);

        // Blocking with timeout
        producer.timedPush(&msg, std::chrono::milliseconds(100));
        // --- end
    }
    // All three went in: the ring had room, so none of them waited or failed.
    REQUIRE(producer.available() == 61);

    // --- snippet "Creating a consumer"
    Spsc::Consumer consumer("my_channel", 1024, 64);

    if (consumer.open() == -1) {
        // Handle error
    }
    // --- end
    REQUIRE(consumer.opened());
    REQUIRE(consumer.pending() == 3);

    {
        // --- snippet "Receiving data"
        Message msg;

        // Non-blocking
        if (consumer.tryPop(&msg) == -1) {
            // No data available
        }

        // Blocking
        consumer.pop(&msg);

        // Blocking with timeout
        consumer.timedPop(&msg, std::chrono::seconds(1));
        // --- end

        // All three came out (so every call popped one), and the last is the message sent.
        REQUIRE(consumer.empty());
        CHECK(msg.id == 42);
        CHECK(std::string(msg.data) == "Hello");
    }

    // And "Buffer full" / "No data available" are what -1 means for the non-blocking calls.
    Message probe = {7, "probe"};
    lastError.clear();
    CHECK(consumer.tryPop(&probe) == -1);
    CHECK(lastError == Errc::TemporaryError);
    CHECK(probe.id == 7);
    for (int i = 0; i < 64; ++i)
        REQUIRE(producer.tryPush(&probe) == 0);
    lastError.clear();
    CHECK(producer.tryPush(&probe) == -1);
    CHECK(lastError == Errc::TemporaryError);
}

// ---------------------------------------------------------------------------------------------
// Bidirectional endpoints
// ---------------------------------------------------------------------------------------------

TEST_CASE("the endpoint snippets carry ping from A to B and pong back", "[seed]") {
    FixedNames guard;

    // --- snippet "Creating endpoints"
    // Process A
    Spsc::Endpoint endpointA(Spsc::Endpoint::Side::A, "ipc_channel", 512, 128);
    endpointA.open();

    // Process B
    Spsc::Endpoint endpointB(Spsc::Endpoint::Side::B, "ipc_channel", 512, 128);
    endpointB.open();
    // --- end
    REQUIRE(endpointA.opened());
    REQUIRE(endpointB.opened());
    CHECK(segmentExists("ipc_channel_AB"));
    CHECK(segmentExists("ipc_channel_BA"));

    // The next snippet's lines are unchanged and in order; checks sit between its steps, and the
    // buffer is wiped after each send so that each receive has to write the message into it
    // (and so that a send that failed stops the test instead of leaving a receive blocked).
    // --- snippet "Sending and receiving"
    char buffer[512];

    // Send from A to B
    strcpy(buffer, "ping");
    endpointA.send(buffer);
    // (checks)
    REQUIRE(endpointB.pending() == 1);
    REQUIRE(endpointA.available() == 127);
    std::memset(buffer, 0, sizeof buffer);

    // Receive on B
    endpointB.receive(buffer);
    // (checks)
    CHECK(std::string(buffer) == "ping");
    CHECK(endpointB.pending() == 0);

    // Reply from B to A
    strcpy(buffer, "pong");
    endpointB.send(buffer);
    // (checks)
    REQUIRE(endpointA.pending() == 1);
    std::memset(buffer, 0, sizeof buffer);

    // Receive reply on A
    endpointA.receive(buffer);
    // --- end
    CHECK(std::string(buffer) == "pong");
    CHECK(endpointA.pending() == 0);
    CHECK(endpointA.available() == 128);
    CHECK(endpointB.available() == 128);
}

TEST_CASE("the non-blocking endpoint snippet sends and receives without waiting", "[seed]") {
    FixedNames guard;
    Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, "ipc_channel", 512, 128);
    Spsc::Endpoint peer(Spsc::Endpoint::Side::B, "ipc_channel", 512, 128);
    REQUIRE(endpoint.open() == 0);
    REQUIRE(peer.open() == 0);
    char buffer[512] = "ping";
    char atPeer[512] = {};

    SECTION("with a reply waiting, both calls succeed") {
        char reply[512] = "pong";
        REQUIRE(peer.send(reply) == 0);

        // --- snippet "Non-blocking operations"
        if (endpoint.trySend(buffer) == 0) {
            // Sent successfully
        }

        if (endpoint.tryReceive(buffer) == 0) {
            // Received data
        }
        // --- end

        CHECK(std::string(buffer) == "pong");  // received
        REQUIRE(peer.tryReceive(atPeer) == 0);
        CHECK(std::string(atPeer) == "ping");  // sent
        CHECK(endpoint.pending() == 0);
    }

    SECTION("with nothing waiting, the receive returns at once with TemporaryError") {
        lastError.clear();

        // --- snippet "Non-blocking operations"
        if (endpoint.trySend(buffer) == 0) {
            // Sent successfully
        }

        if (endpoint.tryReceive(buffer) == 0) {
            // Received data
        }
        // --- end

        CHECK(lastError == Errc::TemporaryError);
        CHECK(std::string(buffer) == "ping");  // untouched
        REQUIRE(peer.tryReceive(atPeer) == 0);
        CHECK(std::string(atPeer) == "ping");
    }

    SECTION("with the outbound ring full, the send returns at once with TemporaryError") {
        for (int i = 0; i < 128; ++i)
            REQUIRE(endpoint.trySend(buffer) == 0);
        char reply[512] = "pong";
        REQUIRE(peer.send(reply) == 0);
        lastError.clear();

        // --- snippet "Non-blocking operations"
        if (endpoint.trySend(buffer) == 0) {
            // Sent successfully
        }
        CHECK(lastError == Errc::TemporaryError);  // (check between the two calls)

        if (endpoint.tryReceive(buffer) == 0) {
            // Received data
        }
        // --- end

        CHECK(std::string(buffer) == "pong");
        CHECK(peer.pending() == 128);
    }
}

// ---------------------------------------------------------------------------------------------
// Queue state inspection
// ---------------------------------------------------------------------------------------------

TEST_CASE("the inspection snippets report free slots and pending messages", "[seed]") {
    FixedNames guard;
    Spsc::Producer producer("my_channel", 1024, 64);
    Spsc::Consumer consumer("my_channel", 1024, 64);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    const uint64_t pushed = GENERATE(0u, 1u, 63u, 64u);
    Message msg = {1, "x"};
    for (uint64_t i = 0; i < pushed; ++i)
        REQUIRE(producer.tryPush(&msg) == 0);
    CAPTURE(pushed);

    // --- snippet "Check available space"
    uint64_t slots = producer.available();
    if (producer.full()) {
        // Cannot send without blocking
    }
    // --- end
    CHECK(slots == 64 - pushed);
    CHECK(producer.full() == (pushed == 64));
    if (producer.full()) {
        CHECK(producer.timedPush(&msg, std::chrono::milliseconds(0)) == -1);  // indeed cannot send
        CHECK(lastError == Errc::TimedOut);
    } else {
        CHECK(producer.timedPush(&msg, std::chrono::milliseconds(0)) == 0);
        REQUIRE(consumer.tryPop(&msg) == 0);  // as it was
    }

    // --- snippet "Check pending messages"
    uint64_t messages = consumer.pending();
    if (consumer.empty()) {
        // No messages available
    }
    // --- end
    CHECK(messages == pushed);
    CHECK(consumer.empty() == (pushed == 0));
    if (consumer.empty()) {
        lastError.clear();
        CHECK(consumer.tryPop(&msg) == -1);  // indeed nothing to receive
        CHECK(lastError == Errc::TemporaryError);
    }
}

// The snippet declares two variables it does not use; that is the page's code, not a mistake here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-variable"
TEST_CASE("the endpoint state snippet reads an open endpoint and skips a closed one", "[seed]") {
    FixedNames guard;
    Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, "ipc_channel", 512, 128);
    Spsc::Endpoint peer(Spsc::Endpoint::Side::B, "ipc_channel", 512, 128);
    char buffer[512] = "m";
    bool inspected = false;

    SECTION("open, with traffic both ways") {
        REQUIRE(endpoint.open() == 0);
        REQUIRE(peer.open() == 0);
        REQUIRE(endpoint.trySend(buffer) == 0);
        REQUIRE(peer.trySend(buffer) == 0);
        REQUIRE(peer.trySend(buffer) == 0);

        // --- snippet "Endpoint state"
        if (endpoint.opened()) {
            uint64_t canSend = endpoint.available();
            uint64_t canRecv = endpoint.pending();
        }
        // --- end
        inspected = endpoint.opened();

        CHECK(inspected);
        CHECK(endpoint.available() == 127);
        CHECK(endpoint.pending() == 2);
    }

    SECTION("never opened") {
        // --- snippet "Endpoint state"
        if (endpoint.opened()) {
            uint64_t canSend = endpoint.available();
            uint64_t canRecv = endpoint.pending();
        }
        // --- end
        inspected = endpoint.opened();

        CHECK_FALSE(inspected);
        CHECK(endpoint.available() == 0);
        CHECK(endpoint.pending() == 0);
        CHECK_FALSE(segmentExists("ipc_channel_AB"));
    }
}
#pragma GCC diagnostic pop

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

TEST_CASE("the parameters snippet spells out the default element size and capacity", "[seed]") {
    FixedNames guard;
    using Producer = Spsc::Producer;

    // --- snippet "Element size and capacity"
    // 1472 bytes per element (default)
    // 144 elements capacity (default)
    Producer producer("channel", 1472, 144);
    // --- end

    // They are the defaults: an object made without them has the same, and attaches to the ring.
    Producer byDefault("channel");
    CHECK(byDefault.elementSize() == 1472);
    CHECK(byDefault.capacity() == 144);
    REQUIRE(producer.open() == 0);
    Spsc::Consumer consumer("channel");
    REQUIRE(consumer.open() == 0);

    // "Total shared memory size = (elementSize × capacity) + overhead"
    CHECK(segmentSize("channel") >= static_cast<off_t>(1472 * 144));

    // "capacity: maximum number of elements in the ring buffer"
    char element[1472] = {};
    for (int i = 0; i < 144; ++i)
        REQUIRE(producer.tryPush(element) == 0);
    CHECK(producer.tryPush(element) == -1);
    CHECK(consumer.pending() == 144);
}

// ---------------------------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------------------------

TEST_CASE("the cleanup snippet removes a ring and both rings of an endpoint", "[seed]") {
    FixedNames guard;
    {
        Spsc::Producer producer("my_channel", 1024, 64);
        Spsc::Endpoint endpoint(Spsc::Endpoint::Side::A, "ipc_channel", 512, 128);
        REQUIRE(producer.open() == 0);
        REQUIRE(endpoint.open() == 0);
    }
    REQUIRE(segmentExists("my_channel"));
    REQUIRE(segmentExists("ipc_channel_AB"));
    REQUIRE(segmentExists("ipc_channel_BA"));

    // --- snippet "Unlinking shared memory"
    // After all processes are done
    SharedMemory::unlink("my_channel");

    // For endpoints (two segments)
    SharedMemory::unlink("ipc_channel_AB");
    SharedMemory::unlink("ipc_channel_BA");
    // --- end

    CHECK_FALSE(segmentExists("my_channel"));
    CHECK_FALSE(segmentExists("ipc_channel_AB"));
    CHECK_FALSE(segmentExists("ipc_channel_BA"));

    // The names are free again: opening them now creates new rings, with other parameters.
    Spsc::Producer fresh("my_channel", 16, 4);
    CHECK(fresh.open() == 0);
    CHECK(fresh.available() == 4);
}

// ---------------------------------------------------------------------------------------------
// Error handling
// ---------------------------------------------------------------------------------------------

TEST_CASE("the error handling snippet prints lastError's message when an operation fails", "[seed]") {
    FixedNames guard;
    Spsc::Producer producer("my_channel", 1024, 64);
    Message msg = {42, "Hello"};

    SECTION("a push on a producer whose open failed on mismatched parameters") {
        Spsc::Consumer consumer("my_channel", 512, 64);
        REQUIRE(consumer.open() == 0);
        REQUIRE(producer.open() == -1);
        lastError.clear();
        CaptureCerr cerr;

        // --- snippet "Error handling"
        if (producer.push(&msg) == -1) {
            std::cerr << "Error: " << lastError.message() << "\n";
        }
        // --- end

        CHECK(lastError == Errc::InvalidParam);
        CHECK(cerr.text.str() == "Error: " + make_error_code(Errc::InvalidParam).message() + "\n");
        CHECK(cerr.text.str().find("invalid") != std::string::npos);
    }

    SECTION("a push that succeeds prints nothing") {
        REQUIRE(producer.open() == 0);
        CaptureCerr cerr;

        // --- snippet "Error handling"
        if (producer.push(&msg) == -1) {
            std::cerr << "Error: " << lastError.message() << "\n";
        }
        // --- end

        CHECK(cerr.text.str().empty());
        CHECK(producer.available() == 63);
    }
}

TEST_CASE("the common errors the page lists are what the operations report", "[seed]") {
    FixedNames guard;
    Spsc::Producer producer("channel", 8, 2);
    Spsc::Consumer consumer("channel", 8, 2);
    REQUIRE(producer.open() == 0);
    REQUIRE(consumer.open() == 0);
    uint64_t v = 1;

    // "InvalidParam — null pointer or mismatched parameters"
    lastError.clear();
    CHECK(producer.tryPush(nullptr) == -1);
    CHECK(lastError == Errc::InvalidParam);
    Spsc::Consumer mismatched("channel", 16, 2);
    lastError.clear();
    CHECK(mismatched.open() == -1);
    CHECK(lastError == Errc::InvalidParam);

    // "TemporaryError — buffer full/empty (try again)"
    lastError.clear();
    CHECK(consumer.tryPop(&v) == -1);
    CHECK(lastError == Errc::TemporaryError);
    REQUIRE(producer.tryPush(&v) == 0);
    REQUIRE(producer.tryPush(&v) == 0);
    lastError.clear();
    CHECK(producer.tryPush(&v) == -1);
    CHECK(lastError == Errc::TemporaryError);

    // "TimedOut — timeout expired"
    lastError.clear();
    CHECK(producer.timedPush(&v, std::chrono::milliseconds(1)) == -1);
    CHECK(lastError == Errc::TimedOut);

    // "InUse — already opened"
    lastError.clear();
    CHECK(producer.open() == -1);
    CHECK(lastError == Errc::InUse);
    Spsc::Producer another("channel", 8, 2);
    lastError.clear();
    CHECK(another.open() == -1);
    CHECK(lastError == Errc::InUse);
}
