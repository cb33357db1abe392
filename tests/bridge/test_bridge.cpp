// `join-shm bridge` against a real nats-server (started here on 127.0.0.1, stopped at the end):
// ring -> bridge out -> NATS -> bridge in -> ring, content-checked, with core NATS and with
// JetStream while bridges and the server are SIGKILLed; backpressure with a full ring; wrong-size
// messages. Each test case is its own meson test; without nats-server they exit 77 (skipped).
#include "../stress.hpp"
#include "harness.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

using harness::nowNs;
using harness::Process;
using harness::Server;
using harness::sleepMs;
using stress::Message;

namespace {

constexpr uint64_t kSize = sizeof(Message);  // 128 bytes: seq, payload and checksum
constexpr uint32_t kDataSender = 0, kProbeSender = 1;

void requireServer() {
    if (harness::natsServerPath().empty()) {
        std::printf("SKIP: nats-server not found (apt-get install nats-server, or set NATS_SERVER)\n");
        std::exit(77);  // meson's "skipped"
    }
    REQUIRE(!harness::cliPath().empty());
}

// A unique name for a ring, unlinked on scope exit; and a log file next to the server's store.
struct Names {
    std::string tag;
    std::vector<std::string> streams;
    explicit Names(const char *what) : tag(std::string("jshm-bridge-") + what + "-" + std::to_string(getpid())) {}
    std::string ring(const char *which) const { return tag + "-" + which; }
    ~Names() {
        for (const char *which : {"src", "dst", "core", "js", "wrong"}) {
            join_shm_unlink(ring(which).c_str());
            // What a JetStream `in` keeps of the sequences it pushed (RING.STREAM.DURABLE.bridge).
            // ... and what a JetStream `out` took from the ring and the stream had not acked yet.
            for (const std::string &stream : streams) {
                unlink(("/dev/shm/" + ring(which) + "." + stream + ".D.bridge").c_str());
                unlink(("/dev/shm/" + ring(which) + "." + stream + ".outbox").c_str());
            }
        }
    }
};

struct Ring {
    join_shm_queue *q = nullptr;
    Ring(const std::string &name, join_shm_role role, uint64_t capacity, join_shm_policy policy = JOIN_SHM_SPSC) {
        REQUIRE(join_shm_queue_open(&q, name.c_str(), policy, role, kSize, capacity) == 0);
    }
    ~Ring() { join_shm_queue_close(q); }
};

std::vector<std::string> bridgeArgs(const char *direction, const std::string &ring, const Server &server,
                                    const std::string &subject, uint64_t capacity, std::vector<std::string> extra = {},
                                    const char *policy = "spsc") {
    std::vector<std::string> a = {harness::cliPath(), "bridge",
                                  direction,          ring,
                                  "--nats",           server.url(),
                                  "--subject",        subject,
                                  "--policy",         policy,
                                  "--size",           std::to_string(kSize),
                                  "--capacity",       std::to_string(capacity),
                                  "--stats",          "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

// Publishes probe messages straight to the subject until one comes out of `ring`: from then on
// the bridge `in` is subscribed. Returns how many probes the ring received meanwhile.
uint64_t waitSubscribed(const harness::Client &client, const std::string &subject, join_shm_queue *ring) {
    Message m;
    for (uint64_t seq = 0; seq < 2000; ++seq) {
        const Message probe = stress::makeMessage(kProbeSender, seq);
        client.publish(subject, &probe, sizeof probe);
        client.flush();
        if (join_shm_timed_pop(ring, &m, 10'000'000) == 0) {
            REQUIRE(m.producer == kProbeSender);
            return 1;
        }
    }
    FAIL("the bridge never subscribed");
    return 0;
}

}  // namespace

TEST_CASE("bridge: usage errors are refused before anything opens") {
    REQUIRE(!harness::cliPath().empty());
    const std::string cli = harness::cliPath();
    const std::vector<std::vector<std::string>> bad = {
        {cli, "bridge"},
        {cli, "bridge", "sideways", "r", "--nats", "nats://127.0.0.1:1", "--subject", "s", "--policy", "spsc", "--size",
         "8", "--capacity", "4"},
        {cli, "bridge", "out", "r", "--subject", "s", "--policy", "spsc", "--size", "8", "--capacity", "4"},
        {cli, "bridge", "out", "r", "--nats", "nats://127.0.0.1:1", "--subject", "s", "--policy", "ring", "--size", "8",
         "--capacity", "4"},
        {cli, "bridge", "out", "r", "--nats", "nats://127.0.0.1:1", "--subject", "s", "--policy", "spsc", "--size", "0",
         "--capacity", "4"},
        // MPMC: a peeked element has no position of its own, so no exactly-once id.
        {cli, "bridge", "out", "r", "--nats", "nats://127.0.0.1:1", "--subject", "s", "--jetstream", "S", "--policy",
         "mpmc", "--size", "8", "--capacity", "4"},
        {cli, "bridge", "in", "r", "--nats", "nats://127.0.0.1:1", "--subject", "s", "--jetstream", "S", "--policy",
         "spsc", "--size", "8", "--capacity", "4"},
    };
    for (const auto &argv : bad) {
        Process p(argv, "");
        INFO(argv.size());
        CHECK(p.wait(10'000) == 2);
    }
}

TEST_CASE("bridge: core NATS carries every message content-checked") {
    requireServer();
    Server server(false);
    Names names("core");
    const std::string subject = names.tag + ".core";
    const uint64_t n = stress::scaled(1'000'000, 2000);
    constexpr uint64_t kCapacity = 4096;
    Ring src(names.ring("src"), JOIN_SHM_PRODUCER, kCapacity);
    Ring dst(names.ring("dst"), JOIN_SHM_CONSUMER, kCapacity);
    harness::Client client(server.url());
    const std::string inLog = server.dir() + "/in.log", outLog = server.dir() + "/out.log";
    Process in(bridgeArgs("in", names.ring("dst"), server, subject, kCapacity), inLog);
    waitSubscribed(client, subject, dst.q);
    Process out(bridgeArgs("out", names.ring("src"), server, subject, kCapacity), outLog);

    // Core NATS has no flow control: at most `window` messages are between the two rings, below
    // what the receiving bridge may queue, so that nothing is dropped and every message must come.
    const uint64_t window = 8192;
    uint64_t sent = 0, received = 0, probes = 0;
    std::vector<Message> batch(256);
    const int64_t start = nowNs(), deadline = start + 240'000'000'000;
    while (received < n) {
        REQUIRE(nowNs() < deadline);
        bool idle = true;
        while (sent < n && sent - received < window) {
            const Message m = stress::makeMessage(kDataSender, sent);
            if (join_shm_try_push(src.q, &m) != 0) break;
            ++sent;
            idle = false;
        }
        int64_t got = join_shm_try_pop_n(dst.q, batch.data(), batch.size());
        if (got == -EAGAIN) {
            if (!idle) continue;
            got = join_shm_timed_pop(dst.q, batch.data(), 1'000'000) == 0 ? 1 : 0;
            if (got == 0) continue;
        }
        REQUIRE(got > 0);
        for (int64_t i = 0; i < got; ++i) {
            const Message &m = batch[static_cast<size_t>(i)];
            REQUIRE(stress::damage(m) == nullptr);
            if (m.producer == kProbeSender) {
                ++probes;
                continue;
            }
            REQUIRE(m.seq == received);  // in order, none lost, none twice
            ++received;
        }
    }
    const double seconds = static_cast<double>(nowNs() - start) / 1e9;
    std::printf("core NATS: %llu messages in %.2f s (%.0f msgs/s), %llu late probes\n",
                static_cast<unsigned long long>(n), seconds, static_cast<double>(n) / seconds,
                static_cast<unsigned long long>(probes));
    CHECK(out.kill(SIGTERM) == 0);
    CHECK(in.kill(SIGTERM) == 0);
    uint64_t moved = 0, dropped = 0;
    REQUIRE(harness::lastCounts(outLog, moved, dropped));
    CHECK(moved == n);
    CHECK(dropped == 0);
    REQUIRE(harness::lastCounts(inLog, moved, dropped));
    CHECK(moved >= n);
    CHECK(dropped == 0);
}

TEST_CASE("bridge: JetStream loses nothing and never re-sends while bridges and server are killed") {
    requireServer();
    Server server(true);
    Names names("js");
    const std::string subject = names.tag + ".js", stream = "S" + std::to_string(getpid());
    names.streams.push_back(stream);
    const uint64_t n = stress::scaled(1'000'000, 2000);
    constexpr uint64_t kCapacity = 1024;
    Ring src(names.ring("src"), JOIN_SHM_PRODUCER, kCapacity);
    Ring dst(names.ring("dst"), JOIN_SHM_CONSUMER, kCapacity);
    const std::string inLog = server.dir() + "/in.log", outLog = server.dir() + "/out.log";
    const auto outArgs = bridgeArgs("out", names.ring("src"), server, subject, kCapacity, {"--jetstream", stream});
    const auto inArgs =
        bridgeArgs("in", names.ring("dst"), server, subject, kCapacity, {"--jetstream", stream, "--durable", "D"});
    Process out(outArgs, outLog), in(inArgs, inLog);

    // Kills spread over the run: each bridge a few times, the server twice, at random moments.
    const unsigned seed = static_cast<unsigned>(nowNs());
    std::printf("seed %u\n", seed);
    std::mt19937 random(seed);
    enum Victim { kOut, kIn, kServer };
    std::vector<Victim> plan = {kOut, kOut, kOut, kIn, kIn, kIn, kServer, kServer};
    std::shuffle(plan.begin(), plan.end(), random);
    std::vector<uint64_t> killAt;  // after this many messages arrived
    for (size_t i = 0; i < plan.size(); ++i)
        killAt.push_back(n * (i + 1) / (plan.size() + 2) + random() % (n / (plan.size() + 2) / 2 + 1));
    size_t nextKill = 0;
    uint64_t inKills = 0, serverKills = 0;

    std::vector<unsigned char> seen(n, 0);
    uint64_t sent = 0, distinct = 0, repeats = 0;
    std::vector<Message> batch(256);
    const int64_t start = nowNs(), deadline = start + 240'000'000'000;
    while (distinct < n) {
        if (nowNs() > deadline) FAIL("only " << distinct << " of " << n << " arrived");
        while (sent < n) {
            const Message m = stress::makeMessage(kDataSender, sent);
            if (join_shm_try_push(src.q, &m) != 0) break;
            ++sent;
        }
        const int64_t got = join_shm_try_pop_n(dst.q, batch.data(), batch.size());
        if (got == -EAGAIN) {
            sleepMs(1);
            continue;
        }
        REQUIRE(got > 0);
        for (int64_t i = 0; i < got; ++i) {
            const Message &m = batch[static_cast<size_t>(i)];
            REQUIRE(stress::damage(m) == nullptr);
            REQUIRE(m.seq < n);
            if (seen[m.seq]++) {
                ++repeats;
            } else {
                ++distinct;
            }
        }
        if (nextKill < plan.size() && distinct >= killAt[nextKill]) {
            switch (plan[nextKill++]) {
                case kOut:
                    out.kill(SIGKILL);
                    out.start(outArgs, outLog);
                    break;
                case kIn:
                    in.kill(SIGKILL);
                    in.start(inArgs, inLog);
                    ++inKills;
                    break;
                case kServer:
                    server.restart(SIGKILL);
                    ++serverKills;
                    break;
            }
        }
    }
    const double seconds = static_cast<double>(nowNs() - start) / 1e9;
    CHECK(out.kill(SIGTERM) == 0);
    CHECK(in.kill(SIGTERM) == 0);
    harness::Client client(server.url());
    const int64_t stored = client.streamMessages(stream);
    std::printf(
        "JetStream: %llu messages in %.2f s (%.0f msgs/s), %zu kills (%llu of in, %llu of the server), "
        "%llu repeated by in, %lld stored\n",
        static_cast<unsigned long long>(n), seconds, static_cast<double>(n) / seconds, plan.size(),
        static_cast<unsigned long long>(inKills), static_cast<unsigned long long>(serverKills),
        static_cast<unsigned long long>(repeats), static_cast<long long>(stored));
    CHECK(nextKill == plan.size());
    // The sending side never duplicates: the stream holds each element once.
    CHECK(stored == static_cast<int64_t>(n));
    // The receiving side repeats at most the one message a kill of `in` caught between its push
    // and its record of it; redeliveries after a server restart are recognised and not pushed.
    CHECK(repeats <= inKills);
}

TEST_CASE("bridge: a full destination ring keeps the receiving bridge's memory bounded") {
    requireServer();
    Server server(true);
    Names names("full");
    const std::string coreSubject = names.tag + ".core", jsSubject = names.tag + ".js",
                      stream = "F" + std::to_string(getpid());
    names.streams.push_back(stream);
    constexpr uint64_t kCapacity = 16;
    Ring core(names.ring("core"), JOIN_SHM_CONSUMER, kCapacity);
    Ring js(names.ring("js"), JOIN_SHM_CONSUMER, kCapacity);
    harness::Client client(server.url());
    client.addStream(stream, jsSubject);
    const Message m = stress::makeMessage(kDataSender, 0);
    const uint64_t stored = 20'000;
    for (uint64_t i = 0; i < stored; ++i)
        client.publish(jsSubject, &m, sizeof m);
    client.flush();
    REQUIRE(client.streamMessages(stream) == static_cast<int64_t>(stored));

    // Sanitizers keep freed memory aside for a while (ASan's quarantine): keep that small here.
    const std::vector<std::string> env = {"ASAN_OPTIONS=quarantine_size_mb=4:detect_leaks=1"};
    const std::string coreLog = server.dir() + "/core.log", jsLog = server.dir() + "/js.log";
    Process coreIn(bridgeArgs("in", names.ring("core"), server, coreSubject, kCapacity), coreLog, env);
    Process jsIn(
        bridgeArgs("in", names.ring("js"), server, jsSubject, kCapacity, {"--jetstream", stream, "--durable", "D"}),
        jsLog, env);
    waitSubscribed(client, coreSubject, core.q);

    // 10 s of a full ring while messages keep coming: core NATS at full speed, JetStream from the
    // stream's backlog.
    uint64_t coreMax = 0, jsMax = 0, coreFirst = 0, jsFirst = 0, published = 0;
    const int64_t start = nowNs();
    int64_t nextSample = start + 500'000'000;
    while (nowNs() - start < 10'000'000'000) {
        for (int i = 0; i < 1000; ++i, ++published)
            client.publish(coreSubject, &m, sizeof m);
        if (nowNs() >= nextSample) {
            const uint64_t c = harness::rssKiB(coreIn.pid()), j = harness::rssKiB(jsIn.pid());
            if (coreFirst == 0) coreFirst = c, jsFirst = j;
            coreMax = std::max(coreMax, c);
            jsMax = std::max(jsMax, j);
            nextSample += 250'000'000;
        }
    }
    client.flush();
    std::printf(
        "full ring, 10 s: %llu core messages published; RSS core in %llu -> max %llu KiB, "
        "JetStream in %llu -> max %llu KiB\n",
        static_cast<unsigned long long>(published), static_cast<unsigned long long>(coreFirst),
        static_cast<unsigned long long>(coreMax), static_cast<unsigned long long>(jsFirst),
        static_cast<unsigned long long>(jsMax));
    CHECK(join_shm_full(core.q) == 1);
    CHECK(join_shm_full(js.q) == 1);
    // The bound the README states: 32 MiB resident (the client library's pending limit of 4 MiB
    // of messages, 16384 at most, plus the program). Sanitizer runtimes add their own memory,
    // so under them only growth is bounded.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    CHECK(coreMax - coreFirst < 48 * 1024);
    CHECK(jsMax - jsFirst < 16 * 1024);
#else
    CHECK(coreMax < 32 * 1024);
    CHECK(jsMax < 32 * 1024);
#endif
    // Both still answer a signal promptly with the ring full, and count what core NATS dropped.
    CHECK(coreIn.kill(SIGTERM, 5000) == 0);
    CHECK(jsIn.kill(SIGTERM, 5000) == 0);
    uint64_t moved = 0, dropped = 0;
    REQUIRE(harness::lastCounts(coreLog, moved, dropped));
    CHECK(moved == kCapacity + 1);  // and the probe that showed it subscribed
    CHECK(dropped > 0);
    REQUIRE(harness::lastCounts(jsLog, moved, dropped));
    CHECK(moved == kCapacity);
    CHECK(dropped == 0);
}

TEST_CASE("bridge: messages of the wrong size are counted and dropped") {
    requireServer();
    Server server(true);
    Names names("wrong");
    const std::string subject = names.tag + ".w", stream = "W" + std::to_string(getpid());
    names.streams.push_back(stream);
    constexpr uint64_t kCapacity = 64;
    const std::vector<size_t> sizes = {0, 1, kSize - 1, kSize + 1, 2 * kSize, 4096};
    std::vector<unsigned char> junk(4096, 0xa5);
    const Message end = stress::makeMessage(kDataSender, 7);
    harness::Client client(server.url());

    SECTION("core NATS") {
        Ring dst(names.ring("wrong"), JOIN_SHM_CONSUMER, kCapacity);
        const std::string log = server.dir() + "/core.log";
        Process in(bridgeArgs("in", names.ring("wrong"), server, subject, kCapacity), log);
        waitSubscribed(client, subject, dst.q);
        for (size_t s : sizes)
            client.publish(subject, junk.data(), s);
        client.publish(subject, &end, sizeof end);
        client.flush();
        Message m;
        do {  // late probes, then the end marker: nothing of another size in between
            REQUIRE(join_shm_timed_pop(dst.q, &m, 10'000'000'000) == 0);
            REQUIRE(stress::damage(m) == nullptr);
        } while (m.producer == kProbeSender);
        CHECK(m.seq == end.seq);
        CHECK(in.kill(SIGTERM) == 0);
        uint64_t moved = 0, dropped = 0;
        REQUIRE(harness::lastCounts(log, moved, dropped));
        CHECK(dropped == sizes.size());
        CHECK(join_shm_empty(dst.q) == 1);
    }
    SECTION("JetStream") {
        client.addStream(stream, subject);
        for (size_t s : sizes)
            client.publish(subject, junk.data(), s);
        client.publish(subject, &end, sizeof end);
        client.flush();
        Ring dst(names.ring("wrong"), JOIN_SHM_CONSUMER, kCapacity);
        const std::string log = server.dir() + "/js.log";
        Process in(bridgeArgs("in", names.ring("wrong"), server, subject, kCapacity,
                              {"--jetstream", stream, "--durable", "D", "--count", "1"}),
                   log);
        CHECK(in.wait(30'000) == 0);  // --count 1: the one message of the right size
        Message m;
        REQUIRE(join_shm_try_pop(dst.q, &m) == 0);
        CHECK(m.seq == end.seq);
        CHECK(join_shm_empty(dst.q) == 1);
        uint64_t moved = 0, dropped = 0;
        REQUIRE(harness::lastCounts(log, moved, dropped));
        CHECK(moved == 1);
        CHECK(dropped == sizes.size());
    }
}

TEST_CASE("bridge: JetStream out replaces an outbox file it cannot trust") {
    requireServer();
    Server server(true);
    Names names("box");
    const std::string subject = names.tag + ".box", stream = "O" + std::to_string(getpid());
    names.streams.push_back(stream);
    constexpr uint64_t kCapacity = 64, kCount = 50;
    Ring src(names.ring("src"), JOIN_SHM_PRODUCER, kCapacity);
    harness::Client client(server.url());
    client.addStream(stream, subject);
    // Junk where the outbox would be: it holds nothing that could be sent, and nothing in it may
    // be used to size or index the outbox.
    const std::string box = "/dev/shm/" + names.ring("src") + "." + stream + ".outbox";
    for (size_t bytes : {size_t{7}, size_t{4096}, size_t{1} << 20}) {
        INFO(bytes);
        {
            std::ofstream junk(box, std::ios::binary | std::ios::trunc);
            const std::vector<char> data(bytes, static_cast<char>(0xff));
            junk.write(data.data(), static_cast<std::streamsize>(data.size()));
        }
        const int64_t before = client.streamMessages(stream);
        for (uint64_t i = 0; i < kCount; ++i) {
            const Message m = stress::makeMessage(kDataSender, i);
            REQUIRE(join_shm_try_push(src.q, &m) == 0);
        }
        const std::string log = server.dir() + "/box.log";
        Process out(bridgeArgs("out", names.ring("src"), server, subject, kCapacity,
                               {"--jetstream", stream, "--count", std::to_string(kCount)}),
                    log);
        CHECK(out.wait(30'000) == 0);
        CHECK(join_shm_empty(src.q) == 1);
        CHECK(client.streamMessages(stream) - before == static_cast<int64_t>(kCount));
    }
}
