// Fan-out, one publisher to N subscriber processes, every message to every subscriber, through one
// broadcast ring (block and overwrite modes) beside the same fan-out done by hand with N SPSC rings
// fed by one producer, at 1, 2 and 4 subscribers and 64 and 1472 B. Two tables:
// - Throughput: messages published per second until every subscriber has received the last one
//   (overwrite mode: the publisher never waits, subscribers may lose some; the table says when).
// - Round trip: the publisher sends one message (to the broadcast ring, or pushes it to each of the
//   N SPSC rings) and waits until every subscriber has answered it, each on its own SPSC reply
//   ring that the publisher side created (blocking push/pop everywhere); p50 and p99 over --trips
//   round trips after a warm-up of a tenth as many. One message is in flight at a time, so
//   overwrite mode never loses one here.
// 4 subscribers plus a publisher exceed a 2-CPU machine: there the 4-subscriber rows measure the
// scheduler's hand-overs as much as the rings. Single runs swing 2-5x on a shared VM; --repeats N
// runs every configuration N times, the three transports of a row in turn, and prints medians (of
// rates; of p50s and of p99s; block/N is the median of each repeat's own ratio).
// Usage: join-shm-broadcast-bench [messages (default 1000000)] [--trips N (default 20000)] [--repeats N]
#include <join/shm.h>

#include <fmt/core.h>

#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

constexpr uint64_t kCapacity = 1024;
constexpr uint64_t kReplyCapacity = 16;

std::string ringName(const char *kind, unsigned i) { return fmt::format("jshm-bcbench-{}-{}-{}", kind, getpid(), i); }

join_shm_options options(uint32_t overflow) {
    join_shm_options o{};
    o.size = sizeof o;
    o.overflow = overflow;
    return o;
}

// Children receive until the message numbered count - 1; they exit with the number they lost.
pid_t subscriber(const std::string &name, join_shm_policy policy, uint32_t overflow, uint64_t size, uint64_t count,
                 int ready) {
    const pid_t pid = fork();
    if (pid != 0) return pid;
    join_shm_queue *q = nullptr;
    const join_shm_options o = options(overflow);
    if (join_shm_queue_open_ex(&q, name.c_str(), policy, JOIN_SHM_CONSUMER, size, kCapacity,
                               policy == JOIN_SHM_BROADCAST ? &o : nullptr) != 0)
        _exit(255);
    if (write(ready, "r", 1) != 1) _exit(255);
    std::vector<unsigned char> buffer(size);
    for (;;) {
        const int r = join_shm_pop(q, buffer.data());
        if (r == -EOVERFLOW) continue;
        if (r != 0) _exit(255);
        uint64_t seq;
        std::memcpy(&seq, buffer.data(), sizeof seq);
        if (seq == count - 1) break;
    }
    const uint64_t lost = join_shm_lost(q);
    join_shm_queue_close(q);
    _exit(lost > 0 ? 1 : 0);
}

struct Result {
    double rate;
    unsigned lossy;  // subscribers that lost messages
};

Result run(join_shm_policy policy, uint32_t overflow, unsigned subscribers, uint64_t size, uint64_t count) {
    const char *kind = policy == JOIN_SHM_BROADCAST ? "bc" : "spsc";
    std::vector<std::string> names;
    for (unsigned i = 0; i < (policy == JOIN_SHM_BROADCAST ? 1u : subscribers); ++i)
        names.push_back(ringName(kind, i));
    int pipeFds[2];
    if (pipe(pipeFds) != 0) std::exit(1);
    std::vector<join_shm_queue *> out(names.size());
    const join_shm_options o = options(overflow);
    for (size_t i = 0; i < names.size(); ++i)
        if (join_shm_queue_open_ex(&out[i], names[i].c_str(), policy, JOIN_SHM_PRODUCER, size, kCapacity,
                                   policy == JOIN_SHM_BROADCAST ? &o : nullptr) != 0)
            std::exit(1);
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < subscribers; ++i)
        pids.push_back(
            subscriber(names[policy == JOIN_SHM_BROADCAST ? 0 : i], policy, overflow, size, count, pipeFds[1]));
    for (unsigned i = 0; i < subscribers; ++i) {
        char c;
        if (read(pipeFds[0], &c, 1) != 1) std::exit(1);
    }
    std::vector<unsigned char> message(size, 0x5a);
    const int64_t start = nowNs();
    for (uint64_t seq = 0; seq < count; ++seq) {
        std::memcpy(message.data(), &seq, sizeof seq);
        for (join_shm_queue *q : out)
            if (join_shm_push(q, message.data()) != 0) std::exit(1);
    }
    Result r{0, 0};
    for (pid_t pid : pids) {
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) std::exit(1);
        r.lossy += WEXITSTATUS(status);
    }
    r.rate = static_cast<double>(count) * 1e9 / static_cast<double>(nowNs() - start);
    for (size_t i = 0; i < out.size(); ++i) {
        join_shm_queue_close(out[i]);
        join_shm_unlink(names[i].c_str());
    }
    close(pipeFds[0]);
    close(pipeFds[1]);
    return r;
}

// Round trips. A subscriber answers each message with its seq on its own reply ring, until seq last.
pid_t answerer(const std::string &name, join_shm_policy policy, uint32_t overflow, uint64_t size,
               const std::string &replyName, uint64_t last, int ready) {
    const pid_t pid = fork();
    if (pid != 0) return pid;
    join_shm_queue *q = nullptr, *reply = nullptr;
    const join_shm_options o = options(overflow);
    if (join_shm_queue_open_ex(&q, name.c_str(), policy, JOIN_SHM_CONSUMER, size, kCapacity,
                               policy == JOIN_SHM_BROADCAST ? &o : nullptr) != 0 ||
        join_shm_queue_open(&reply, replyName.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(uint64_t),
                            kReplyCapacity) != 0)
        _exit(255);
    if (write(ready, "r", 1) != 1) _exit(255);
    std::vector<unsigned char> buffer(size);
    for (;;) {
        const int r = join_shm_pop(q, buffer.data());
        if (r != 0) _exit(255);  // -EOVERFLOW too: with one message in flight, nothing can be lost
        uint64_t seq;
        std::memcpy(&seq, buffer.data(), sizeof seq);
        if (join_shm_push(reply, &seq) != 0) _exit(255);
        if (seq == last) break;
    }
    join_shm_queue_close(reply);
    join_shm_queue_close(q);
    _exit(0);
}

struct Latency {
    double p50, p99;  // ns
};

Latency roundTrips(join_shm_policy policy, uint32_t overflow, unsigned subscribers, uint64_t size, uint64_t trips) {
    const char *kind = policy == JOIN_SHM_BROADCAST ? "rtbc" : "rtspsc";
    const uint64_t warmup = trips / 10, total = warmup + trips;
    std::vector<std::string> names, replyNames;
    for (unsigned i = 0; i < (policy == JOIN_SHM_BROADCAST ? 1u : subscribers); ++i)
        names.push_back(ringName(kind, i));
    for (unsigned i = 0; i < subscribers; ++i)
        replyNames.push_back(ringName("reply", i));
    int pipeFds[2];
    if (pipe(pipeFds) != 0) std::exit(1);
    std::vector<join_shm_queue *> out(names.size()), replies(subscribers);
    const join_shm_options o = options(overflow);
    for (size_t i = 0; i < names.size(); ++i)
        if (join_shm_queue_open_ex(&out[i], names[i].c_str(), policy, JOIN_SHM_PRODUCER, size, kCapacity,
                                   policy == JOIN_SHM_BROADCAST ? &o : nullptr) != 0)
            std::exit(1);
    // The publisher side creates the reply rings before any subscriber opens its end.
    for (unsigned i = 0; i < subscribers; ++i)
        if (join_shm_queue_open(&replies[i], replyNames[i].c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, sizeof(uint64_t),
                                kReplyCapacity) != 0)
            std::exit(1);
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < subscribers; ++i)
        pids.push_back(answerer(names[policy == JOIN_SHM_BROADCAST ? 0 : i], policy, overflow, size, replyNames[i],
                                total - 1, pipeFds[1]));
    for (unsigned i = 0; i < subscribers; ++i) {
        char c;
        if (read(pipeFds[0], &c, 1) != 1) std::exit(1);
    }
    std::vector<unsigned char> message(size, 0x5a);
    std::vector<double> samples;
    samples.reserve(trips);
    for (uint64_t seq = 0; seq < total; ++seq) {
        std::memcpy(message.data(), &seq, sizeof seq);
        const int64_t start = nowNs();
        for (join_shm_queue *q : out)
            if (join_shm_push(q, message.data()) != 0) std::exit(1);
        for (join_shm_queue *q : replies) {
            uint64_t answer = 0;
            if (join_shm_pop(q, &answer) != 0 || answer != seq) std::exit(1);
        }
        if (seq >= warmup) samples.push_back(static_cast<double>(nowNs() - start));
    }
    for (pid_t pid : pids) {
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::exit(1);
    }
    for (size_t i = 0; i < out.size(); ++i) {
        join_shm_queue_close(out[i]);
        join_shm_unlink(names[i].c_str());
    }
    for (unsigned i = 0; i < subscribers; ++i) {
        join_shm_queue_close(replies[i]);
        join_shm_unlink(replyNames[i].c_str());
    }
    close(pipeFds[0]);
    close(pipeFds[1]);
    std::sort(samples.begin(), samples.end());
    const auto at = [&](double q) { return samples[static_cast<size_t>(q * static_cast<double>(samples.size() - 1))]; };
    return {at(0.50), at(0.99)};
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One cell of a table: the repeats of its three transports interleaved (broadcast block, broadcast
// overwrite, N x SPSC, then again), so that a slow spell of this VM, which lasts seconds, falls on all
// three alike; the ratio is the median of each repeat's own ratio. A run that lost messages marks the
// cell lossy.
struct Cell {
    double block = 0, over = 0, spsc = 0, ratio = 0;
    unsigned overLossy = 0;
};

Cell rateCell(unsigned repeats, unsigned subs, uint64_t size, uint64_t count) {
    std::vector<double> block, over, spsc, ratio;
    Cell c;
    for (unsigned i = 0; i < repeats; ++i) {
        block.push_back(run(JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_BLOCK, subs, size, count).rate);
        const Result o = run(JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_OVERWRITE, subs, size, count);
        over.push_back(o.rate);
        c.overLossy += o.lossy;
        spsc.push_back(run(JOIN_SHM_SPSC, 0, subs, size, count).rate);
        ratio.push_back(block.back() / spsc.back());
    }
    c.block = median(block);
    c.over = median(over);
    c.spsc = median(spsc);
    c.ratio = median(ratio);
    return c;
}

// p50 and p99 of each transport, medians over interleaved repeats as in rateCell.
std::array<Latency, 3> tripCell(unsigned repeats, unsigned subs, uint64_t size, uint64_t trips) {
    std::vector<double> p50[3], p99[3];
    const std::pair<join_shm_policy, uint32_t> kinds[3] = {{JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_BLOCK},
                                                           {JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_OVERWRITE},
                                                           {JOIN_SHM_SPSC, 0}};
    for (unsigned i = 0; i < repeats; ++i)
        for (int k = 0; k < 3; ++k) {
            const Latency l = roundTrips(kinds[k].first, kinds[k].second, subs, size, trips);
            p50[k].push_back(l.p50);
            p99[k].push_back(l.p99);
        }
    std::array<Latency, 3> out;
    for (int k = 0; k < 3; ++k)
        out[static_cast<size_t>(k)] = {median(p50[k]), median(p99[k])};
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    uint64_t count = 1'000'000, trips = 20'000;
    unsigned repeats = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "--trips" || arg == "--repeats") && i + 1 < argc) {
            const uint64_t n = std::strtoull(argv[++i], nullptr, 10);
            if (n == 0) {
                fmt::print(stderr, "{} needs a positive number\n", arg);
                return 2;
            }
            if (arg == "--trips")
                trips = n;
            else
                repeats = static_cast<unsigned>(n);
        } else {
            count = std::strtoull(arg.c_str(), nullptr, 10);
            if (count == 0) {
                fmt::print(stderr, "usage: {} [messages] [--trips N] [--repeats N]\n", argv[0]);
                return 2;
            }
        }
    }
    fmt::print("fan-out of {} messages, capacity {}, {} CPUs online (N subscribers + 1 publisher processes){}\n", count,
               kCapacity, sysconf(_SC_NPROCESSORS_ONLN),
               repeats > 1 ? fmt::format(", median of {} runs", repeats) : std::string());
    fmt::print("{:>5} {:>6} | {:>16} {:>16} {:>16} | {:>8}\n", "size", "subs", "broadcast block", "broadcast overwr.",
               "N x SPSC", "block/N");
    for (uint64_t size : {uint64_t{64}, uint64_t{1472}}) {
        for (unsigned subs : {1u, 2u, 4u}) {
            const Cell c = rateCell(repeats, subs, size, count);
            fmt::print("{:>5} {:>6} | {:>12.2f} M/s {:>9.2f} M/s{} {:>12.2f} M/s | {:>7.2f}x\n", size, subs,
                       c.block / 1e6, c.over / 1e6, c.overLossy ? "*" : " ", c.spsc / 1e6, c.ratio);
        }
    }
    fmt::print("* some subscribers lost messages (overwrite mode: the publisher never waits)\n");

    fmt::print(
        "\nround trip: publish one message, wait for every subscriber's reply (SPSC reply rings), {} trips, "
        "p50 / p99 in us\n",
        trips);
    fmt::print("{:>5} {:>6} | {:>19} {:>19} {:>19}\n", "size", "subs", "broadcast block", "broadcast overwr.",
               "N x SPSC");
    for (uint64_t size : {uint64_t{64}, uint64_t{1472}}) {
        for (unsigned subs : {1u, 2u, 4u}) {
            const auto [block, over, spsc] = tripCell(repeats, subs, size, trips);
            fmt::print("{:>5} {:>6} | {:>9.1f} / {:>7.1f} {:>9.1f} / {:>7.1f} {:>9.1f} / {:>7.1f}\n", size, subs,
                       block.p50 / 1e3, block.p99 / 1e3, over.p50 / 1e3, over.p99 / 1e3, spsc.p50 / 1e3,
                       spsc.p99 / 1e3);
        }
    }
    return 0;
}
