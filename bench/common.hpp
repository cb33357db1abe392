// What the demo and the benchmark share, so that nothing is written twice: the clock and its
// cost, statistics, CPU pinning, child processes under a watchdog, message stamps, the libjoin-shm
// transport (C API only), the two runners that drive any transport (round trip and one-way
// stream), and a small aligned table printer.
//
// A transport is any type with these members (see JoinShm below and transports.hpp):
//   std::string label() const;                 shown in tables
//   std::string setup(const Shape &);          in the parent before fork; "" or why it cannot run
//   void open(Side, bool duplex, int index);   in each process after fork; fatal() on failure
//   void send(const char *msg);                one message of Shape::size bytes, waits as needed
//   void recv(char *msg);
//   size_t sendSome(const char *msgs, size_t n);  moves 1..n messages, waits until at least one
//   size_t recvSome(char *msgs, size_t n);
//   void close();                              in each process
//   void teardown();                           in the parent after every peer exited
//   static constexpr bool kStreams;            false for the round-trip floors (round trip only)
// and optionally, for zero-copy (see HasInPlace):
//   bool inPlace() const;  void sendInPlace(write);  void recvInPlace(take);
#pragma once

#include <fmt/format.h>
#include <join/shm.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace bench {

// ---------------------------------------------------------------------------------------------
// Clock

inline int64_t nowNs() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// What one timestamp adds to an interval: the median of back-to-back readings. Subtracted from
// every round-trip sample.
inline int64_t measureClockCost() {
    std::vector<int64_t> d(20001);
    for (auto &x : d) {
        const int64_t a = nowNs();
        x = nowNs() - a;
    }
    std::nth_element(d.begin(), d.begin() + 10000, d.end());
    return d[10000];
}

inline void cpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Busy-wait step for the spin loops. Yields now and then so that a spinning process sharing a
// CPU with its peer (1 CPU, or more processes than CPUs) cannot starve it for a whole time slice.
struct Spinner {
    unsigned n = 0;
    void operator()() noexcept {
        cpuRelax();
        if (++n == 4096) {
            n = 0;
            sched_yield();
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Statistics

struct Percentiles {
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

// Nearest-rank percentiles; reorders v.
inline Percentiles percentiles(std::vector<int64_t> &v) {
    Percentiles p;
    if (v.empty()) return p;
    auto at = [&](double q) {
        auto k = static_cast<size_t>(q * static_cast<double>(v.size()));
        if (k >= v.size()) k = v.size() - 1;
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
        return static_cast<double>(v[k]);
    };
    p.p50 = at(0.50);
    p.p90 = at(0.90);
    p.p99 = at(0.99);
    p.p999 = at(0.999);
    p.max = static_cast<double>(*std::max_element(v.begin(), v.end()));
    return p;
}

struct Spread {
    double median = 0, min = 0, max = 0;
};

inline Spread spread(std::vector<double> xs) {
    Spread s;
    if (xs.empty()) return s;
    std::sort(xs.begin(), xs.end());
    const size_t n = xs.size();
    s.median = n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
    s.min = xs.front();
    s.max = xs.back();
    return s;
}

// ---------------------------------------------------------------------------------------------
// Formatting

inline std::string formatNs(double ns) {
    if (ns < 1e3) return fmt::format("{:.0f} ns", ns);
    if (ns < 1e4) return fmt::format("{:.2f} µs", ns / 1e3);
    if (ns < 1e6) return fmt::format("{:.1f} µs", ns / 1e3);
    return fmt::format("{:.2f} ms", ns / 1e6);
}

inline std::string formatRate(double perSecond) {
    if (perSecond >= 1e6) return fmt::format("{:.2f} M", perSecond / 1e6);
    if (perSecond >= 1e3) return fmt::format("{:.1f} k", perSecond / 1e3);
    return fmt::format("{:.0f}", perSecond);
}

inline std::string formatRatio(double r) {
    if (r <= 0) return "-";
    return r < 10 ? fmt::format("{:.2f}×", r) : fmt::format("{:.0f}×", r);
}

inline std::string formatCount(uint64_t n) {
    std::string digits = std::to_string(n), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

// Columns padded to their widest cell; the first column left-aligned, the others right-aligned.
class Table {
public:
    explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
    void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
    void print(std::FILE *out = stdout) const {
        std::vector<size_t> width;
        for (const auto &r : rows_)
            for (size_t c = 0; c < r.size(); ++c) {
                if (width.size() <= c) width.push_back(0);
                width[c] = std::max(width[c], displayWidth(r[c]));
            }
        for (size_t i = 0; i < rows_.size(); ++i) {
            std::string line;
            for (size_t c = 0; c < rows_[i].size(); ++c) {
                const std::string pad(width[c] - displayWidth(rows_[i][c]), ' ');
                line += c == 0 ? rows_[i][c] + pad : "  " + pad + rows_[i][c];
            }
            while (!line.empty() && line.back() == ' ')
                line.pop_back();
            fmt::print(out, "{}\n", line);
            if (i == 0) {
                size_t total = 0;
                for (size_t w : width)
                    total += w + 2;
                fmt::print(out, "{}\n", std::string(total - 2, '-'));
            }
        }
    }

private:
    // Code points, not bytes: "µ" and "×" take one column.
    static size_t displayWidth(const std::string &s) {
        size_t n = 0;
        for (char ch : s)
            n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
        return n;
    }
    std::vector<std::vector<std::string>> rows_;
};

// ---------------------------------------------------------------------------------------------
// Process-wide state, reachable from signal handlers: the peers to kill and the names to unlink
// when something goes wrong, and a description of what is running, for the message.

constexpr int kMaxProducers = 8;
constexpr int kMaxProcesses = kMaxProducers + 1;

// Lives in a MAP_SHARED mapping made before the first fork, so every process sees it.
struct Control {
    struct alignas(64) Word {
        std::atomic<uint64_t> value;
    };
    Word stop;                     // set by a timed stream's consumer: producers finish up
    Word progress[kMaxProcesses];  // messages handled so far by process i (0 = the parent)
};

enum class NameKind { JoinShm, PosixMq, PosixShm };

struct State {
    const char *program = "bench";
    pid_t mainPid = 0;
    Control *control = nullptr;
    char phase[240] = {};
    int processes = 0;  // in the current run, for the progress report
    volatile sig_atomic_t kidCount = 0;
    pid_t kids[kMaxProcesses] = {};
    struct Name {
        NameKind kind;
        char text[128];
    };
    volatile sig_atomic_t nameCount = 0;
    Name names[16] = {};
};
inline State g;

namespace detail {

inline void put(const char *s) noexcept {
    size_t n = std::strlen(s);
    while (n > 0) {
        const ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= static_cast<size_t>(w);
    }
}

inline void putNumber(uint64_t v) noexcept {
    char buf[24];
    char *p = buf + sizeof buf;
    *--p = '\0';
    do {
        *--p = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    put(p);
}

inline void unlinkName(const State::Name &n) noexcept {
    switch (n.kind) {
        case NameKind::JoinShm:
            join_shm_unlink(n.text);
            break;
        case NameKind::PosixMq:
            mq_unlink(n.text);
            break;
        case NameKind::PosixShm:
            shm_unlink(n.text);
            break;
    }
}

// Async-signal-safe (as far as unlinking can be): report, kill the peers, unlink, exit.
[[noreturn]] inline void abandonRun(int code) noexcept {
    if (g.phase[0]) {
        put(g.program);
        put(": while running: ");
        put(g.phase);
        put("\n");
    }
    if (g.control && g.processes > 0) {
        put(g.program);
        put(": messages handled per process (0 = parent):");
        for (int i = 0; i < g.processes && i < kMaxProcesses; ++i) {
            put(" ");
            putNumber(g.control->progress[i].value.load(std::memory_order_relaxed));
        }
        put(" (updated every 1024)\n");
    }
    for (int i = 0; i < g.kidCount; ++i)
        kill(g.kids[i], SIGKILL);
    for (int i = 0; i < g.kidCount; ++i)
        waitpid(g.kids[i], nullptr, 0);
    for (int i = 0; i < g.nameCount; ++i)
        unlinkName(g.names[i]);
    _exit(code);
}

extern "C" inline void onAlarm(int) {
    put(g.program);
    put(": TIMEOUT: the run did not finish in time (a hang?)\n");
    abandonRun(3);
}

extern "C" inline void onInterrupt(int sig) {
    if (getpid() != g.mainPid) _exit(128 + sig);
    put(g.program);
    put(": interrupted\n");
    abandonRun(128 + sig);
}

// A peer that ends badly (non-zero exit, signal) ends the run at once: the parent may be blocked
// waiting for a message that will never come. Peers that exit cleanly are left for reapPeers().
extern "C" inline void onChild(int) {
    const int savedErrno = errno;
    for (int i = 0; i < g.kidCount; ++i) {
        siginfo_t si;
        std::memset(&si, 0, sizeof si);
        if (waitid(P_PID, static_cast<id_t>(g.kids[i]), &si, WEXITED | WNOHANG | WNOWAIT) != 0) continue;
        if (si.si_pid != g.kids[i]) continue;
        if (si.si_code == CLD_EXITED && si.si_status == 0) continue;
        put(g.program);
        put(": FAILED: peer process ");
        putNumber(static_cast<uint64_t>(si.si_pid));
        put(si.si_code == CLD_EXITED ? " exited with status " : " was killed by signal ");
        putNumber(static_cast<uint64_t>(si.si_status));
        put("\n");
        abandonRun(1);
    }
    errno = savedErrno;
}

}  // namespace detail

// Call once at the start of main, before any fork.
inline void init(const char *program) {
    g.program = program;
    g.mainPid = getpid();
    void *m = mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        fmt::print(stderr, "{}: mmap: {}\n", program, std::strerror(errno));
        std::exit(1);
    }
    g.control = new (m) Control{};
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = detail::onChild;
    sigaction(SIGCHLD, &sa, nullptr);
    sa.sa_handler = detail::onAlarm;
    sigaction(SIGALRM, &sa, nullptr);
    sa.sa_handler = detail::onInterrupt;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGHUP, &sa, nullptr);
    sigaction(SIGPIPE, &sa, nullptr);  // output piped into `head`: still clean up the segments
}

// Ends the program with a message. In a peer: prints and exits 1 (the parent then reports the
// run and cleans up). In the parent: prints, kills the peers, unlinks everything, exits 1.
[[noreturn]] inline void fatal(const std::string &message) {
    if (getpid() != g.mainPid) {
        detail::put(fmt::format("{}: FAILED in peer process {}: {}\n", g.program, getpid(), message).c_str());
        _exit(1);
    }
    detail::put(fmt::format("{}: FAILED: {}\n", g.program, message).c_str());
    detail::abandonRun(1);
}

inline void registerName(NameKind kind, const std::string &name) {
    if (g.nameCount >= static_cast<int>(sizeof g.names / sizeof g.names[0]) || name.size() >= 128)
        fatal("too many names to clean up (a bug in the benchmark)");
    State::Name &n = g.names[g.nameCount];
    n.kind = kind;
    std::snprintf(n.text, sizeof n.text, "%s", name.c_str());
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the entry is complete before it counts
    g.nameCount = g.nameCount + 1;
}

// Unlinks every registered name and forgets them (end of a run).
inline void unlinkAll() {
    const int n = g.nameCount;
    g.nameCount = 0;
    for (int i = 0; i < n; ++i)
        detail::unlinkName(g.names[i]);
}

// What is running, for failure messages, with a watchdog that ends a run that hangs.
inline void beginPhase(const std::string &what, unsigned timeoutSeconds, int processes) {
    std::snprintf(g.phase, sizeof g.phase, "%s", what.c_str());
    g.processes = processes;
    for (auto &p : g.control->progress)
        p.value.store(0, std::memory_order_relaxed);
    g.control->stop.value.store(0, std::memory_order_relaxed);
    alarm(timeoutSeconds);
}

inline void endPhase() {
    alarm(0);
    g.phase[0] = '\0';
    g.processes = 0;
}

inline void reportProgress(int process, uint64_t count) noexcept {
    if ((count & 1023) == 0) g.control->progress[process].value.store(count, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// CPUs and peers

// The CPUs this process may run on, read once before anything is pinned.
inline const std::vector<int> &usableCpus() {
    static const std::vector<int> cpus = [] {
        std::vector<int> v;
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) == 0)
            for (int c = 0; c < CPU_SETSIZE; ++c)
                if (CPU_ISSET(c, &set)) v.push_back(c);
        return v;
    }();
    return cpus;
}

// The CPU for process i of a run (0 = the parent): distinct while there are enough, then round
// robin. -1 (no pinning) on a single CPU.
inline int cpuFor(int process) {
    const auto &cpus = usableCpus();
    if (cpus.size() < 2) return -1;
    return cpus[static_cast<size_t>(process) % cpus.size()];
}

inline void pinTo(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        fatal(fmt::format("sched_setaffinity({}): {}", cpu, std::strerror(errno)));
}

// Forks a peer pinned to cpu that runs body() and exits 0 (body calls fatal() on failure).
template <class Body>
pid_t spawn(int cpu, Body &&body) {
    std::fflush(stdout);
    std::fflush(stderr);
    // SIGCHLD stays blocked until the pid is registered, so a peer that dies at once is noticed.
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    const pid_t pid = fork();
    if (pid < 0) fatal(fmt::format("fork: {}", std::strerror(errno)));
    if (pid == 0) {
        g.kidCount = 0;
        g.nameCount = 0;  // the parent cleans up
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, nullptr);
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the parent, even a killed one
        if (getppid() != g.mainPid) _exit(1);
        pinTo(cpu);
        body();
        _exit(0);
    }
    g.kids[g.kidCount] = pid;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    g.kidCount = g.kidCount + 1;
    sigprocmask(SIG_SETMASK, &old, nullptr);
    return pid;
}

// Waits for every peer of the run; any that failed ends the program (see onChild).
inline void reapPeers() {
    while (g.kidCount > 0) {
        const pid_t pid = g.kids[g.kidCount - 1];
        int status = 0;
        pid_t r;
        while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        }
        g.kidCount = g.kidCount - 1;
        if (r == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            fatal(fmt::format("peer process {} ended with status {:#x}", pid, status));
    }
}

// ---------------------------------------------------------------------------------------------
// Messages. Word 0: bit 63 = end of stream, bits 48..62 = producer index, bits 0..47 = sequence.
// Messages of 16 bytes or more also carry a check word in their last 8 bytes, so that a message
// delivered torn (start and end from different writes) is caught.

constexpr uint64_t kEndBit = uint64_t{1} << 63;
constexpr uint64_t kSeqMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kCheck = 0x5a5aa5a5c3c33c3cULL;

struct Stamp {
    bool valid, end;
    int producer;
    uint64_t seq;
};

inline void stamp(char *msg, size_t size, int producer, uint64_t seq, bool end = false) noexcept {
    const uint64_t w = (end ? kEndBit : 0) | (static_cast<uint64_t>(producer) << 48) | (seq & kSeqMask);
    std::memcpy(msg, &w, 8);
    if (size >= 16) {
        const uint64_t c = w ^ kCheck;
        std::memcpy(msg + size - 8, &c, 8);
    }
}

inline Stamp readStamp(const char *msg, size_t size) noexcept {
    uint64_t w, c = 0;
    std::memcpy(&w, msg, 8);
    bool valid = true;
    if (size >= 16) {
        std::memcpy(&c, msg + size - 8, 8);
        valid = (w ^ kCheck) == c;
    }
    return {valid, (w & kEndBit) != 0, static_cast<int>((w >> 48) & 0x7fff), w & kSeqMask};
}

// Streams write every byte of a message and check every byte on arrival: the stamp above, and a
// body of words derived from word 0 (word i = (word 0 ^ kBodySeed) + i * kBodyStep; a short last word
// holds the first bytes of its value). So a transport must deliver all of a message, a word copied
// to the wrong place or from another message is caught, and a zero-copy producer or consumer does
// in the slot exactly the work a copying one does in its local buffer: the gain shown is the
// copies saved, not bytes left untouched.
constexpr uint64_t kBodySeed = 0x243f6a8885a308d3ULL;
constexpr uint64_t kBodyStep = 0x9e3779b97f4a7c15ULL;

inline void writeMessage(char *msg, size_t size, int producer, uint64_t seq, bool end = false) noexcept {
    stamp(msg, size, producer, seq, end);
    uint64_t w;
    std::memcpy(&w, msg, 8);
    const size_t bodyEnd = size >= 16 ? size - 8 : size;  // the check word follows the body
    uint64_t v = w ^ kBodySeed;
    size_t at = 8;
    for (; at + 8 <= bodyEnd; at += 8) {
        v += kBodyStep;
        std::memcpy(msg + at, &v, 8);
    }
    if (at < bodyEnd) {
        v += kBodyStep;
        std::memcpy(msg + at, &v, bodyEnd - at);
    }
}

// The stamp of a message written by writeMessage; valid only if every byte is as written.
inline Stamp checkMessage(const char *msg, size_t size) noexcept {
    Stamp s = readStamp(msg, size);
    uint64_t w;
    std::memcpy(&w, msg, 8);
    const size_t bodyEnd = size >= 16 ? size - 8 : size;
    uint64_t v = w ^ kBodySeed, diff = 0;  // OR of differences: no branch in the loop
    size_t at = 8;
    for (; at + 8 <= bodyEnd; at += 8) {
        v += kBodyStep;
        uint64_t x;
        std::memcpy(&x, msg + at, 8);
        diff |= x ^ v;
    }
    if (at < bodyEnd) {
        v += kBodyStep;
        diff |= static_cast<uint64_t>(std::memcmp(msg + at, &v, bodyEnd - at) != 0);
    }
    s.valid = s.valid && diff == 0;
    return s;
}

// A message buffer aligned for any element type.
struct Buffer {
    std::vector<uint64_t> words;
    explicit Buffer(size_t bytes) : words((bytes + 7) / 8 + 1, 0) {}
    char *data() { return reinterpret_cast<char *>(words.data()); }
};

// ---------------------------------------------------------------------------------------------
// Runners

enum class Side { A, B };  // A: the parent (pinger, or a stream's consumer); B: its peer(s)

struct Shape {
    size_t size = 64;
    uint64_t capacity = 1024;
    int producers = 1;
};

struct RoundTripPlan {
    Shape shape;
    uint64_t rounds = 0;   // a fixed count when > 0 ...
    int64_t targetNs = 0;  // ... else run this long, after a tenth of it as warm-up
    uint64_t warmup = 0;   // rounds not recorded first (in timed runs: at least this many)
    uint64_t minRounds = 200;
    int64_t clockCostNs = 0;
};

// One repetition: the parent pings, a peer echoes. Returns the samples in ns (clock cost
// subtracted). Both sides check every sequence number.
template <class T>
std::vector<int64_t> roundTrip(T &t, const RoundTripPlan &plan) {
    const size_t size = plan.shape.size;
    spawn(cpuFor(1), [&] {
        t.open(Side::B, true, 0);
        Buffer buf(size);
        for (uint64_t i = 0;; ++i) {
            t.recv(buf.data());
            const Stamp s = readStamp(buf.data(), size);
            if (!s.valid || (!s.end && s.seq != (i & kSeqMask)))
                fatal(fmt::format("{}: echo side expected ping {} and got {} ({})", t.label(), i, s.seq,
                                  s.valid ? "wrong sequence" : "torn message"));
            if (s.end) break;
            t.send(buf.data());
            reportProgress(1, i);
        }
        t.close();
    });
    t.open(Side::A, true, 0);
    Buffer buf(size);
    std::vector<int64_t> samples;
    const bool fixed = plan.rounds > 0;
    samples.reserve(fixed ? plan.rounds : static_cast<size_t>(std::min<int64_t>(plan.targetNs / 50, 4'000'000)));
    const int64_t start = nowNs();
    int64_t measureFrom = 0;
    for (uint64_t i = 0;; ++i) {
        stamp(buf.data(), size, 0, i);
        const int64_t t0 = nowNs();
        t.send(buf.data());
        t.recv(buf.data());
        const int64_t t1 = nowNs();
        const Stamp s = readStamp(buf.data(), size);
        if (!s.valid || s.end || s.seq != (i & kSeqMask))
            fatal(fmt::format("{}: ping {} came back as {} ({})", t.label(), i, s.seq,
                              s.valid ? "wrong sequence" : "torn message"));
        reportProgress(0, i);
        if (fixed) {
            if (i >= plan.warmup) samples.push_back(std::max<int64_t>(0, t1 - t0 - plan.clockCostNs));
            if (samples.size() == plan.rounds) break;
        } else if (measureFrom == 0) {
            if (t1 - start >= plan.targetNs / 10 && i >= std::max<uint64_t>(plan.warmup, 50)) measureFrom = t1;
        } else {
            samples.push_back(std::max<int64_t>(0, t1 - t0 - plan.clockCostNs));
            if (t1 - measureFrom >= plan.targetNs && samples.size() >= plan.minRounds) break;
        }
    }
    stamp(buf.data(), size, 0, 0, true);
    t.send(buf.data());
    t.close();
    reapPeers();
    return samples;
}

struct StreamPlan {
    Shape shape;
    size_t batch = 1;          // messages per sendSome/recvSome call
    uint64_t perProducer = 0;  // a fixed count when > 0 ...
    int64_t targetNs = 0;      // ... else run this long, after a tenth of it as warm-up
    uint64_t warmup = 0;       // messages not measured first (in timed runs: at least this many)
};

struct StreamResult {
    uint64_t messages = 0;  // in the measured interval
    int64_t ns = 0;
    uint64_t verified = 0;  // every message received, warm-up and drain included
    double rate() const { return ns > 0 ? static_cast<double>(messages) * 1e9 / static_cast<double>(ns) : 0; }
};

// A transport that can lend its slots (libjoin-shm zero-copy) has inPlace(), and when that is true
// the stream runner calls sendInPlace(write) / recvInPlace(take), which pass the slot itself to
// write(char *) / take(const char *) between reserve and commit (peek and release).
template <class T, class = void>
struct HasInPlace : std::false_type {};
template <class T>
struct HasInPlace<T, std::void_t<decltype(std::declval<const T &>().inPlace())>> : std::true_type {};

// Sends n messages, write(msg, k) filling message k: in place in the ring's slots, or in a local
// buffer that sendSome copies in.
template <class T, class Write>
void sendMessages(T &t, Buffer &buf, size_t size, size_t n, Write &&write) {
    if constexpr (HasInPlace<T>::value) {
        if (t.inPlace()) {
            for (size_t k = 0; k < n; ++k)
                t.sendInPlace([&](char *slot) { write(slot, k); });
            return;
        }
    }
    for (size_t k = 0; k < n; ++k)
        write(buf.data() + k * size, k);
    for (size_t done = 0; done < n;)
        done += t.sendSome(buf.data() + done * size, n - done);
}

// Receives 1..batch messages and passes each to take(msg), in its slot or in a local copy.
// Returns how many.
template <class T, class Take>
size_t receiveMessages(T &t, Buffer &buf, size_t size, size_t batch, Take &&take) {
    if constexpr (HasInPlace<T>::value) {
        if (t.inPlace()) {
            t.recvInPlace(take);
            return 1;
        }
    }
    const size_t n = t.recvSome(buf.data(), batch);
    for (size_t k = 0; k < n; ++k)
        take(buf.data() + k * size);
    return n;
}

// One repetition: plan.shape.producers peers stream numbered messages to the parent, which checks
// every byte of every message (see writeMessage), that each producer's sequence arrives complete
// and in order, then an end-of-stream marker.
template <class T>
StreamResult stream(T &t, const StreamPlan &plan) {
    const size_t size = plan.shape.size, batch = std::max<size_t>(1, plan.batch);
    const int producers = plan.shape.producers;
    const bool fixed = plan.perProducer > 0;
    for (int p = 0; p < producers; ++p) {
        spawn(cpuFor(p + 1), [&, p] {
            t.open(Side::B, false, p);
            Buffer buf(batch * size);
            uint64_t seq = 0;
            for (;;) {
                size_t n = batch;
                if (fixed) {
                    if (seq >= plan.perProducer) break;
                    n = static_cast<size_t>(std::min<uint64_t>(n, plan.perProducer - seq));
                } else if (g.control->stop.value.load(std::memory_order_relaxed)) {
                    break;
                }
                sendMessages(t, buf, size, n, [&](char *msg, size_t k) { writeMessage(msg, size, p, seq + k); });
                const uint64_t before = seq;
                seq += n;
                if ((before >> 10) != (seq >> 10)) reportProgress(p + 1, seq & ~uint64_t{1023});
            }
            sendMessages(t, buf, size, 1, [&](char *msg, size_t) { writeMessage(msg, size, p, seq, true); });
            t.close();
        });
    }
    t.open(Side::A, false, 0);
    Buffer buf(batch * size);
    std::vector<uint64_t> expected(static_cast<size_t>(producers), 0);
    const uint64_t total = plan.perProducer * static_cast<uint64_t>(producers);
    StreamResult result;
    int ends = 0;
    uint64_t received = 0, mark = 0, calls = 0;
    int64_t first = 0, tStart = 0;
    bool measuring = false, measured = false;
    // Checks one message where it lies: a local copy, or the ring's slot (zero-copy).
    auto take = [&](const char *msg) {
        const Stamp s = checkMessage(msg, size);
        if (!s.valid || s.producer >= producers)
            fatal(fmt::format("{}: message {} is {}", t.label(), received,
                              s.valid ? "from an unknown producer" : "torn or corrupt"));
        uint64_t &e = expected[static_cast<size_t>(s.producer)];
        if (s.end) {
            if (s.seq != e || (fixed && s.seq != plan.perProducer))
                fatal(fmt::format("{}: producer {} sent {} messages, {} arrived", t.label(), s.producer, s.seq, e));
            ++ends;
            return;
        }
        if (s.seq != (e & kSeqMask))
            fatal(fmt::format("{}: from producer {} expected message {}, got {}", t.label(), s.producer, e, s.seq));
        ++e;
        ++received;
    };
    while (ends < producers) {
        const size_t n = receiveMessages(t, buf, size, batch, take);
        if ((received >> 10) != ((received - n) >> 10)) reportProgress(0, received & ~uint64_t{1023});
        if (measured) continue;
        if (fixed) {
            if (!measuring && received >= plan.warmup) {
                tStart = nowNs();
                mark = received;
                measuring = true;
            }
            if (measuring && received == total) {
                result = {received - mark, nowNs() - tStart, 0};
                measured = true;
            }
        } else if (batch > 1 || (++calls & 63) == 0) {
            const int64_t now = nowNs();
            if (!measuring) {
                if (first == 0) {
                    first = now;
                } else if (now - first >= plan.targetNs / 10 && received >= plan.warmup) {
                    tStart = now;
                    mark = received;
                    measuring = true;
                }
            } else if (now - tStart >= plan.targetNs) {
                result = {received - mark, now - tStart, 0};
                measured = true;
                g.control->stop.value.store(1, std::memory_order_relaxed);
            }
        }
    }
    if (!measured) result = {received - mark, nowNs() - tStart, 0};  // fixed runs shorter than warm-up
    result.verified = received;
    t.close();
    reapPeers();
    return result;
}

// ---------------------------------------------------------------------------------------------
// libjoin-shm, through the C API only: two rings, NAME_ab (parent to peer) and NAME_ba.

enum class Wait {
    Spin,   // try_push / try_pop in a busy loop
    Block,  // push / pop: the library spins briefly, then sleeps on a futex
    Sleep,  // push / pop with spin_ns < 0: sleeps at once (shows the wake-up cost)
    Epoll,  // receiving side sleeps in epoll_wait on the ring's fd (join_shm_queue_fd), no spin
    Any8,   // receiving side sleeps in join_shm_wait_any over its ring and 7 idle ones
};

inline const char *policyName(join_shm_policy p) {
    return p == JOIN_SHM_SPSC ? "SPSC" : p == JOIN_SHM_MPSC ? "MPSC" : "MPMC";
}

inline const char *waitName(Wait w) {
    return w == Wait::Spin    ? "spin"
           : w == Wait::Block ? "blocking"
           : w == Wait::Sleep ? "sleep"
           : w == Wait::Epoll ? "epoll fd"
                              : "wait_any/8";
}

// How messages cross the API (streams; the round trip always copies one at a time).
enum class Api {
    Copy,      // try_push / try_pop (or push / pop): one element copied per call
    Batch,     // try_push_n / try_pop_n: up to the batch size per call, spinning
    ZeroCopy,  // try_reserve + write in place + commit; try_peek + read in place + release; spinning
};

class JoinShm {
public:
    static constexpr bool kStreams = true;

    JoinShm(join_shm_policy policy, Wait wait, Api api = Api::Copy) : policy_{policy}, wait_{wait}, api_{api} {}

    std::string label() const {
        return fmt::format("join-shm {} {}", policyName(policy_),
                           api_ == Api::Batch      ? "batch"
                           : api_ == Api::ZeroCopy ? "zero-copy"
                                                   : waitName(wait_));
    }

    bool inPlace() const { return api_ == Api::ZeroCopy; }

    // write(char *slot) fills the reserved slot; commit publishes it.
    template <class Write>
    void sendInPlace(Write &&write) {
        void *slot = nullptr;
        Spinner spin;
        int r;
        while ((r = join_shm_try_reserve(out_, &slot)) == -EAGAIN)
            spin();
        if (r != 0) failed("join_shm_try_reserve", out_, r);
        write(static_cast<char *>(slot));
        if ((r = join_shm_commit(out_)) != 0) failed("join_shm_commit", out_, r);
    }

    // take(const char *slot) reads the oldest element where it lies; release hands the slot back.
    template <class Take>
    void recvInPlace(Take &&take) {
        const void *slot = nullptr;
        Spinner spin;
        int r;
        while ((r = join_shm_try_peek(in_, &slot)) == -EAGAIN)
            spin();
        if (r != 0) failed("join_shm_try_peek", in_, r);
        take(static_cast<const char *>(slot));
        if ((r = join_shm_release(in_)) != 0) failed("join_shm_release", in_, r);
    }

    std::string setup(const Shape &shape) {
        static unsigned counter = 0;
        shape_ = shape;
        base_ = fmt::format("jsb-{}-{}", g.mainPid, counter++);
        registerName(NameKind::JoinShm, base_ + "-ab");
        registerName(NameKind::JoinShm, base_ + "-ba");
        for (int i = 0; wait_ == Wait::Any8 && i < 14; ++i)
            registerName(NameKind::JoinShm, fmt::format("{}-idle{}", base_, i));
        return {};
    }

    void open(Side side, bool duplex, int) {
        if (side == Side::A) {
            in_ = openRing("-ba", JOIN_SHM_CONSUMER);
            if (duplex) out_ = openRing("-ab", JOIN_SHM_PRODUCER);
        } else {
            out_ = openRing("-ba", JOIN_SHM_PRODUCER);
            if (duplex) in_ = openRing("-ab", JOIN_SHM_CONSUMER);
        }
        if (in_ && wait_ == Wait::Epoll) {
            epoll_ = epoll_create1(EPOLL_CLOEXEC);
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLET;
            const int fd = join_shm_queue_fd(in_);
            if (fd < 0 || epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) failed("join_shm_queue_fd", in_, fd);
        }
        if (in_ && wait_ == Wait::Any8) {
            items_[0] = {in_, nullptr, 0};
            for (int i = 1; i < 8; ++i) {
                const std::string suffix = fmt::format("-idle{}", (side == Side::A ? 0 : 7) + i - 1);
                items_[i] = {openRing(suffix.c_str(), JOIN_SHM_CONSUMER), nullptr, 0};
            }
        }
    }

    void send(const char *msg) {
        int r;
        if (wait_ == Wait::Spin) {
            Spinner spin;
            while ((r = join_shm_try_push(out_, msg)) == -EAGAIN)
                spin();
            if (r != 0) failed("join_shm_try_push", out_, r);
        } else if ((r = join_shm_push(out_, msg)) != 0) {
            failed("join_shm_push", out_, r);
        }
    }

    void recv(char *msg) {
        int r;
        if (wait_ == Wait::Epoll || wait_ == Wait::Any8) {
            // The rule of the fd: try until -EAGAIN, then wait; no spinning, to show the wake-up.
            while ((r = join_shm_try_pop(in_, msg)) == -EAGAIN) {
                epoll_event ev;
                if (wait_ == Wait::Epoll ? epoll_wait(epoll_, &ev, 1, -1) < 0 && errno != EINTR
                                         : join_shm_wait_any(items_, 8, -1) < 0)
                    failed("waiting", in_, -errno);
            }
            if (r != 0) failed("join_shm_try_pop", in_, r);
        } else if (wait_ == Wait::Spin) {
            Spinner spin;
            while ((r = join_shm_try_pop(in_, msg)) == -EAGAIN)
                spin();
            if (r != 0) failed("join_shm_try_pop", in_, r);
        } else if ((r = join_shm_pop(in_, msg)) != 0) {
            failed("join_shm_pop", in_, r);
        }
    }

    size_t sendSome(const char *msgs, size_t n) {
        if (api_ != Api::Batch || n == 1) {
            send(msgs);
            return 1;
        }
        Spinner spin;
        int64_t r;
        while ((r = join_shm_try_push_n(out_, msgs, n)) == -EAGAIN)
            spin();
        if (r < 1 || static_cast<uint64_t>(r) > n) failed("join_shm_try_push_n", out_, static_cast<int>(r));
        return static_cast<size_t>(r);
    }

    size_t recvSome(char *msgs, size_t n) {
        if (api_ != Api::Batch || n == 1) {
            recv(msgs);
            return 1;
        }
        Spinner spin;
        int64_t r;
        while ((r = join_shm_try_pop_n(in_, msgs, n)) == -EAGAIN)
            spin();
        if (r < 1 || static_cast<uint64_t>(r) > n) failed("join_shm_try_pop_n", in_, static_cast<int>(r));
        return static_cast<size_t>(r);
    }

    void close() {
        join_shm_queue_close(in_);
        join_shm_queue_close(out_);
        in_ = out_ = nullptr;
        for (int i = 1; i < 8; ++i)
            join_shm_queue_close(std::exchange(items_[i].queue, nullptr));
        if (epoll_ >= 0) ::close(std::exchange(epoll_, -1));
    }

    void teardown() { unlinkAll(); }

private:
    join_shm_queue *openRing(const char *suffix, join_shm_role role) {
        join_shm_options o;
        std::memset(&o, 0, sizeof o);
        o.size = sizeof o;
        o.flags = JOIN_SHM_PREFAULT;  // page faults belong to setup, not to the first messages
        o.spin_ns = wait_ == Wait::Sleep ? -1 : 0;
        // Both sides open-or-create at once, and the loser of that race has prefaulted a segment of
        // its own first: on a loaded machine a large ring can take longer than the 1 s default.
        o.open_timeout_ns = 10'000'000'000;
        join_shm_queue *q = nullptr;
        const std::string name = base_ + suffix;
        const int r = join_shm_queue_open_ex(&q, name.c_str(), policy_, role, shape_.size, shape_.capacity, &o);
        if (r != 0)
            fatal(fmt::format("join_shm_queue_open_ex(\"{}\", {}, {}, element {} B, capacity {}) = {} ({}): {}", name,
                              policyName(policy_), role == JOIN_SHM_PRODUCER ? "producer" : "consumer", shape_.size,
                              shape_.capacity, r, join_shm_strerror(r), join_shm_last_error_detail()));
        return q;
    }

    [[noreturn]] void failed(const char *call, join_shm_queue *q, int r) const {
        fatal(fmt::format("{} on {} ring (element {} B, capacity {}, {}) = {} ({}): {}", call, policyName(policy_),
                          shape_.size, shape_.capacity, q == in_ ? "consumer" : "producer", r, join_shm_strerror(r),
                          join_shm_last_error_detail()));
    }

    join_shm_policy policy_;
    Wait wait_;
    Api api_;
    Shape shape_;
    std::string base_;
    join_shm_queue *in_ = nullptr, *out_ = nullptr;
    int epoll_ = -1;
    join_shm_wait_item items_[8] = {};
};

}  // namespace bench
