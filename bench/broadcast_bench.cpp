// Fan-out throughput: one publisher, N subscriber processes, every message to every subscriber,
// through one broadcast ring (block and overwrite modes) beside the same fan-out done by hand with
// N SPSC rings fed by one producer. Rate = messages published per second until every subscriber
// has received the last one (overwrite mode: the publisher never waits, subscribers may lose some;
// the table says how many). 4 subscribers plus a publisher exceed a 2-CPU machine.
// Usage: join-shm-broadcast-bench [messages]
#include <join/shm.h>

#include <fmt/core.h>

#include <sys/wait.h>
#include <unistd.h>
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

}  // namespace

int main(int argc, char **argv) {
    const uint64_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
    fmt::print("fan-out of {} messages, capacity {}, {} CPUs online (N subscribers + 1 publisher processes)\n", count,
               kCapacity, sysconf(_SC_NPROCESSORS_ONLN));
    fmt::print("{:>5} {:>6} | {:>16} {:>16} {:>16} | {:>8}\n", "size", "subs", "broadcast block", "broadcast overwr.",
               "N x SPSC", "block/N");
    for (uint64_t size : {uint64_t{64}, uint64_t{1472}}) {
        for (unsigned subs : {1u, 2u, 4u}) {
            const Result block = run(JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_BLOCK, subs, size, count);
            const Result over = run(JOIN_SHM_BROADCAST, JOIN_SHM_OVERFLOW_OVERWRITE, subs, size, count);
            const Result spsc = run(JOIN_SHM_SPSC, 0, subs, size, count);
            fmt::print("{:>5} {:>6} | {:>12.2f} M/s {:>9.2f} M/s{} {:>12.2f} M/s | {:>7.2f}x\n", size, subs,
                       block.rate / 1e6, over.rate / 1e6, over.lossy ? "*" : " ", spsc.rate / 1e6,
                       block.rate / spsc.rate);
        }
    }
    fmt::print("* some subscribers lost messages (overwrite mode: the publisher never waits)\n");
    return 0;
}
