// join-shm-bridge-bench: what `join-shm bridge` costs on loopback, in one run, against a plain
// NATS publisher/subscriber pair (libnats, the same server) and a direct ring.
//
//   join-shm-bridge-bench [JOIN-SHM-TOOL] [MESSAGES] [RUNS]
//
// The plain pair and the core NATS bridge run RUNS times (default 5), alternately, so that both
// see the same weather on a shared machine; the table gives each one's median run and the median
// of the per-run cost ratios.
// Each path runs the same loop: send while fewer than kWindow messages are in flight, receive
// what arrived (core NATS has no flow control; the window keeps every path drop-free). Rate: N
// messages of 128 bytes. Round trip: one message in flight at a time, send to receive, p50/p99.
#include "../tests/bridge/harness.hpp"

#include <fmt/core.h>
#include <join/shm.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kSize = 128, kCapacity = 4096, kWindow = 8192;

struct Result {
    double rate = 0, p50 = 0, p99 = 0;
};

// send() false: no room now; receive() false: nothing arrived.
Result measure(uint64_t n, const std::function<bool(const char *)> &send, const std::function<bool(char *)> &receive) {
    Result r;
    char out[kSize] = {}, in[kSize];
    uint64_t sent = 0, received = 0;
    const int64_t start = harness::nowNs();
    while (received < n) {
        while (sent < n && sent - received < kWindow && send(out))
            ++sent;
        while (receive(in))
            ++received;
    }
    r.rate = static_cast<double>(n) * 1e9 / static_cast<double>(harness::nowNs() - start);
    std::vector<int64_t> samples;
    for (int i = 0; i < 2000; ++i) {
        const int64_t t = harness::nowNs();
        while (!send(out)) {
        }
        while (!receive(in)) {
        }
        samples.push_back(harness::nowNs() - t);
    }
    std::sort(samples.begin(), samples.end());
    r.p50 = static_cast<double>(samples[samples.size() / 2]) / 1e3;
    r.p99 = static_cast<double>(samples[samples.size() * 99 / 100]) / 1e3;
    return r;
}

struct Rings {
    std::string src, dst;
    join_shm_queue *producer = nullptr, *consumer = nullptr;
    explicit Rings(const std::string &tag) : src(tag + "-src"), dst(tag + "-dst") {
        join_shm_unlink(src.c_str());
        join_shm_unlink(dst.c_str());
        if (join_shm_queue_open(&producer, src.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, kSize, kCapacity) != 0 ||
            join_shm_queue_open(&consumer, dst.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, kSize, kCapacity) != 0)
            throw std::runtime_error("cannot open the rings");
    }
    ~Rings() {
        join_shm_queue_close(producer);
        join_shm_queue_close(consumer);
        join_shm_unlink(src.c_str());
        join_shm_unlink(dst.c_str());
    }
};

std::vector<std::string> bridge(const std::string &tool, const char *dir, const std::string &ring,
                                const harness::Server &server, const std::string &subject,
                                std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {tool,         "bridge",
                                  dir,          ring,
                                  "--nats",     server.url(),
                                  "--subject",  subject,
                                  "--policy",   "spsc",
                                  "--size",     std::to_string(kSize),
                                  "--capacity", std::to_string(kCapacity)};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

void row(const char *label, const Result &r, const Result &pair) {
    fmt::print("| {} | {:.3g} M | {:.2f}x | {:.0f} us | {:.0f} us |\n", label, r.rate / 1e6, pair.rate / r.rate, r.p50,
               r.p99);
}

}  // namespace

int main(int argc, char **argv) {
    const std::string tool = argc > 1 ? argv[1] : "./build/src/cli/join-shm";
    const uint64_t n = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1'000'000;
    const int runs = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
    if (harness::natsServerPath().empty()) {
        fmt::print(stderr, "nats-server not found\n");
        return 1;
    }
    harness::Server server(true);
    const std::string tag = "jshm-bridge-bench-" + std::to_string(getpid());

    // A direct ring: the floor.
    Result direct;
    {
        Rings r(tag + "-direct");
        join_shm_queue *self = nullptr;
        join_shm_queue_open(&self, r.src.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, kSize, kCapacity);
        direct = measure(
            n, [&](const char *m) { return join_shm_try_push(r.producer, m) == 0; },
            [&](char *m) { return join_shm_try_pop(self, m) == 0; });
        join_shm_queue_close(self);
    }
    // A plain NATS pair: a publisher connection and a subscriber connection.
    const auto plainPair = [&] {
        harness::Client pub(server.url()), sub(server.url());
        natsSubscription *s = nullptr;
        natsConnection_SubscribeSync(&s, sub.nc, "bench.pair");
        natsSubscription_SetPendingLimits(s, 65536, 64 << 20);
        natsConnection_Flush(sub.nc);
        const Result pair = measure(
            n, [&](const char *m) { return natsConnection_Publish(pub.nc, "bench.pair", m, kSize) == NATS_OK; },
            [&](char *m) {
                natsMsg *msg = nullptr;
                if (natsSubscription_NextMsg(&msg, s, 1) != NATS_OK) return false;
                std::memcpy(m, natsMsg_GetData(msg), kSize);
                natsMsg_Destroy(msg);
                return true;
            });
        natsSubscription_Destroy(s);
        return pair;
    };
    // ring -> bridge out -> NATS -> bridge in -> ring, core NATS and JetStream.
    const auto throughBridges = [&](const char *label, uint64_t count, std::vector<std::string> outExtra,
                                    std::vector<std::string> inExtra) {
        Rings r(tag + "-" + label);
        const std::string subject = std::string("bench.") + label;
        harness::Process in(bridge(tool, "in", r.dst, server, subject, inExtra), "");
        // Core NATS: publish probes until one arrives, so that `in` is subscribed before we start.
        harness::Client probe(server.url());
        char probeMessage[kSize] = {};
        while (join_shm_timed_pop(r.consumer, probeMessage, 10'000'000) != 0) {
            probe.publish(subject, probeMessage, kSize);
            probe.flush();
        }
        while (join_shm_timed_pop(r.consumer, probeMessage, 50'000'000) == 0) {
        }
        harness::Process out(bridge(tool, "out", r.src, server, subject, outExtra), "");
        Result result = measure(
            count, [&](const char *m) { return join_shm_try_push(r.producer, m) == 0; },
            // Waits as the plain pair's receive does (NextMsg, 1 ms): a receiver spinning on an
            // empty ring would take a core from the bridges and the server it waits for.
            [&](char *m) { return join_shm_timed_pop(r.consumer, m, 1'000'000) == 0; });
        out.kill(SIGTERM);
        in.kill(SIGTERM);
        unlink(("/dev/shm/" + r.dst + ".B.D.bridge").c_str());  // what JetStream `in` and `out` keep
        unlink(("/dev/shm/" + r.src + ".B.outbox").c_str());
        return result;
    };
    std::vector<Result> pairs, cores;
    std::vector<double> ratios;
    for (int i = 0; i < runs; ++i) {
        pairs.push_back(plainPair());
        cores.push_back(throughBridges(("core" + std::to_string(i)).c_str(), n, {}, {}));
        ratios.push_back(pairs.back().rate / cores.back().rate);
    }
    // The run of median rate (its round trips with it).
    const auto median = [](std::vector<Result> v) {
        std::sort(v.begin(), v.end(), [](const Result &a, const Result &b) { return a.rate < b.rate; });
        return v[v.size() / 2];
    };
    const Result pair = median(pairs), core = median(cores);
    const uint64_t jsCount = std::max<uint64_t>(n / 20, 1000);
    const Result js = throughBridges("js", jsCount, {"--jetstream", "B"}, {"--jetstream", "B", "--durable", "D"});

    fmt::print("{} messages of {} bytes ({} through JetStream), window {}, one nats-server on 127.0.0.1\n", n, kSize,
               jsCount, kWindow);
    std::string list;
    for (double r : ratios)
        list += fmt::format(" {:.2f}", r);
    std::sort(ratios.begin(), ratios.end());
    fmt::print("bridge cost vs plain pair, {} runs:{} (median {:.2f}x)\n\n", runs, list, ratios[ratios.size() / 2]);
    fmt::print("| path | msgs/s | cost vs NATS pair | round trip p50 | p99 |\n|---|---|---|---|---|\n");
    row("direct ring", direct, pair);
    row("plain NATS pair (libnats)", pair, pair);
    row("ring -> bridge -> NATS -> bridge -> ring", core, pair);
    row("same, JetStream", js, pair);
    return 0;
}
