// join-shm-demo: the first thing to run. Forks a peer process and moves messages through
// libjoin-shm rings (C API only): round trips at 64 bytes, then a million-message one-way stream at
// 64 and 1472 bytes, for each policy; MPSC and MPMC also with two producer processes. Every
// message is checked on arrival; any error ends the demo with a non-zero status.
#include "common.hpp"

#include <join/shm.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace bench;

constexpr uint64_t kCapacity = 1024;
constexpr uint64_t kRounds = 100'000, kRoundWarmup = 10'000;
constexpr uint64_t kMessages = 1'000'000, kStreamWarmup = 10'000;
constexpr unsigned kTimeoutSeconds = 30;  // per run; a hang is reported, not waited out

Percentiles roundTrip64(join_shm_policy policy, Wait wait, int64_t clockCost) {
    JoinShm t(policy, wait);
    RoundTripPlan plan;
    plan.shape = {64, kCapacity, 1};
    plan.warmup = kRoundWarmup;
    plan.rounds = kRounds;
    plan.clockCostNs = clockCost;
    t.setup(plan.shape);
    beginPhase(fmt::format("round trip, {}, 64 B, capacity {}", t.label(), kCapacity), kTimeoutSeconds, 2);
    std::vector<int64_t> samples = roundTrip(t, plan);
    endPhase();
    t.teardown();
    return percentiles(samples);
}

StreamResult stream1M(join_shm_policy policy, size_t size, int producers) {
    JoinShm t(policy, Wait::Block);
    StreamPlan plan;
    plan.shape = {size, kCapacity, producers};
    plan.perProducer = kMessages / static_cast<uint64_t>(producers);
    plan.warmup = kStreamWarmup;
    t.setup(plan.shape);
    beginPhase(fmt::format("stream, {}, {} B, capacity {}, {} producer(s)", t.label(), size, kCapacity, producers),
               kTimeoutSeconds, producers + 1);
    StreamResult r = stream(t, plan);
    endPhase();
    t.teardown();
    return r;
}

}  // namespace

int main() {
    init("join-shm-demo");
    const int64_t start = nowNs();
    const int64_t clockCost = measureClockCost();
    pinTo(cpuFor(0));
    const uint32_t v = join_shm_version();
    const auto &cpus = usableCpus();
    fmt::print("libjoin-shm {}.{}.{} demo: {} CPU(s), {}; rings of capacity {}\n", v >> 16, (v >> 8) & 0xff, v & 0xff,
               cpus.size(),
               cpus.size() >= 2 ? fmt::format("parent on CPU {}, peer on CPU {}", cpuFor(0), cpuFor(1))
                                : std::string("not pinned"),
               kCapacity);

    const join_shm_policy policies[] = {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC};

    fmt::print("\nRound trip: 64-byte messages, {} samples after {} warm-up, clock cost {} ns subtracted\n",
               formatCount(kRounds), formatCount(kRoundWarmup), clockCost);
    fmt::print("  spin: both sides poll with join_shm_try_pop; blocking: both wait in join_shm_pop\n\n");
    Table rtt({"policy", "mode", "p50", "p99"});
    for (auto policy : policies)
        for (Wait wait : {Wait::Spin, Wait::Block}) {
            const Percentiles p = roundTrip64(policy, wait, clockCost);
            rtt.row({policyName(policy), waitName(wait), formatNs(p.p50), formatNs(p.p99)});
        }
    rtt.print();

    fmt::print("\nOne-way stream: {} messages per run (join_shm_push / join_shm_pop), every sequence number\n",
               formatCount(kMessages));
    fmt::print("  checked by the receiver; rate measured after the first {}\n\n", formatCount(kStreamWarmup));
    Table thr({"policy", "producers", "size", "msgs/s", "GB/s"});
    uint64_t verified = 0;
    for (auto policy : policies) {
        for (size_t size : {size_t{64}, size_t{1472}}) {
            const StreamResult r = stream1M(policy, size, 1);
            verified += r.verified;
            thr.row({policyName(policy), "1", fmt::format("{} B", size), formatRate(r.rate()),
                     fmt::format("{:.2f}", r.rate() * static_cast<double>(size) / 1e9)});
        }
        if (policy != JOIN_SHM_SPSC) {
            const StreamResult r = stream1M(policy, 64, 2);
            verified += r.verified;
            thr.row(
                {policyName(policy), "2", "64 B", formatRate(r.rate()), fmt::format("{:.2f}", r.rate() * 64 / 1e9)});
        }
    }
    thr.print();

    fmt::print("\nAll {} streamed messages and {} round trips arrived intact and in order ({:.1f} s).\n",
               formatCount(verified), formatCount((kRounds + kRoundWarmup) * 6),
               static_cast<double>(nowNs() - start) / 1e9);
    return 0;
}
