// join-shm-bench: libjoin-shm against the IPC a user would otherwise pick, in one run, on one
// machine. Round trip (ping-pong between two pinned processes) and one-way throughput (1 and N
// producer processes, the receiver checks every byte of every message) per message size; each
// measurement repeated, reported as the median with its spread. Ratios are to libjoin-shm SPSC
// (spin) and to the floors: two processes handing cache lines back and forth (round trip), the same
// two waking each other with a futex (round trips that sleep on every message), and a minimal
// hand-written SPSC ring (throughput). A last table per size shows what batches
// (try_push_n/try_pop_n) and zero-copy (reserve/commit, peek/release) gain over one copy per call.
//
//   join-shm-bench [--quick] [--sizes 8,64,512,1472,4096] [--capacity 1024] [--repeats 5]
//                  [--transports spsc,mpsc,mpmc,pipe,unix,mq,boost,floor] [--producers 2]
//                  [--batch 64] [--time-ms 20] [--no-rtt] [--no-throughput] [--json FILE]
//                  [--check [--floors FILE]]
#include "common.hpp"
#include "transports.hpp"

#include <join/shm.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace bench;

// ---------------------------------------------------------------------------------------------
// Options

const char *const kFamilies[] = {"spsc", "mpsc", "mpmc", "pipe", "unix", "mq", "boost", "floor"};

struct Options {
    bool quick = false;
    std::vector<size_t> sizes = {8, 64, 512, 1472, 4096};
    // Sizes measured for the gains table only: one-producer throughput of the libjoin-shm rings
    // (spin, batch, zero-copy) and of the floor ring. --quick shows the 8 B gains this way within its
    // time.
    std::vector<size_t> gainSizes;
    uint64_t capacity = 1024;
    int repeats = 5;
    std::set<std::string> families{std::begin(kFamilies), std::end(kFamilies)};
    int producers = 2;
    size_t batch = 64;
    int64_t targetNs = 20'000'000;  // per repetition
    bool rtt = true, throughput = true;
    std::string json;
    bool check = false;
    std::string floors = JOIN_SHM_BENCH_FLOORS;

    bool wants(const std::string &family) const { return families.count(family) != 0; }
    // Watchdog per repetition: generous, since a loaded machine can stretch a run many times over.
    unsigned timeoutSeconds() const { return (quick ? 10u : 30u) + static_cast<unsigned>(targetNs / 250'000'000); }
};

[[noreturn]] void usage(int code) {
    fmt::print(code ? stderr : stdout,
               "usage: join-shm-bench [options]\n"
               "  --quick               sizes 64,1472 (and 8 B for the gains table only, one producer),\n"
               "                        3 repeats of 10 ms: under 10 s in all\n"
               "  --sizes LIST          message sizes in bytes, >= 8 (default 8,64,512,1472,4096)\n"
               "  --capacity N          ring capacity in messages (default 1024)\n"
               "  --repeats N           repetitions of each measurement (default 5)\n"
               "  --transports LIST     among spsc,mpsc,mpmc,pipe,unix,mq,boost,floor (default all)\n"
               "  --producers N         producers for the N-producer throughput, 1 to {} (default 2; 1: skip)\n"
               "  --batch N             messages per try_push_n/try_pop_n call (default 64)\n"
               "  --time-ms N           length of one repetition (default 20)\n"
               "  --no-rtt, --no-throughput   skip a part\n"
               "  --json FILE           also write every figure, per repetition, as JSON\n"
               "  --check               exit 1 when a ratio falls below its floor (CI: --quick --check)\n"
               "  --floors FILE         the floors for --check (default {})\n",
               kMaxProducers, JOIN_SHM_BENCH_FLOORS);
    std::exit(code);
}

std::vector<std::string> splitList(const std::string &s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty()) out.push_back(item);
    return out;
}

uint64_t parseNumber(const std::string &option, const std::string &text, uint64_t min, uint64_t max) {
    char *end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (errno || end == text.c_str() || *end || v < min || v > max) {
        fmt::print(stderr, "join-shm-bench: {} wants a number from {} to {}, not \"{}\"\n", option, min, max, text);
        usage(2);
    }
    return v;
}

Options parseOptions(int argc, char **argv) {
    Options o;
    bool sizesGiven = false, repeatsGiven = false, timeGiven = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                fmt::print(stderr, "join-shm-bench: {} needs a value\n", a);
                usage(2);
            }
            return argv[++i];
        };
        if (a == "--quick") {
            o.quick = true;
        } else if (a == "--sizes") {
            o.sizes.clear();
            for (const auto &s : splitList(value()))
                o.sizes.push_back(parseNumber(a, s, 8, 1u << 20));
            sizesGiven = true;
        } else if (a == "--capacity") {
            o.capacity = parseNumber(a, value(), 1, 1u << 24);
        } else if (a == "--repeats") {
            o.repeats = static_cast<int>(parseNumber(a, value(), 1, 1000));
            repeatsGiven = true;
        } else if (a == "--transports") {
            o.families.clear();
            for (const auto &f : splitList(value())) {
                if (std::find(std::begin(kFamilies), std::end(kFamilies), f) == std::end(kFamilies)) {
                    fmt::print(stderr, "join-shm-bench: unknown transport \"{}\"\n", f);
                    usage(2);
                }
                o.families.insert(f);
            }
        } else if (a == "--producers") {
            o.producers = static_cast<int>(parseNumber(a, value(), 1, kMaxProducers));
        } else if (a == "--batch") {
            o.batch = parseNumber(a, value(), 1, 4096);
        } else if (a == "--time-ms") {
            o.targetNs = static_cast<int64_t>(parseNumber(a, value(), 1, 60'000)) * 1'000'000;
            timeGiven = true;
        } else if (a == "--no-rtt") {
            o.rtt = false;
        } else if (a == "--no-throughput") {
            o.throughput = false;
        } else if (a == "--json") {
            o.json = value();
        } else if (a == "--check") {
            o.check = true;
        } else if (a == "--floors") {
            o.floors = value();
        } else if (a == "--help" || a == "-h") {
            usage(0);
        } else {
            fmt::print(stderr, "join-shm-bench: unknown option \"{}\"\n", a);
            usage(2);
        }
    }
    if (o.quick) {
        if (!sizesGiven) {
            o.sizes = {64, 1472};
            o.gainSizes = {8};
        }
        if (!repeatsGiven) o.repeats = 3;
        if (!timeGiven) o.targetNs = 10'000'000;
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// Results

struct RoundTripRow {
    std::string transport;
    size_t size;
    std::vector<Percentiles> reps;
    uint64_t samples = 0;

    Spread stat(double Percentiles::*field) const {
        std::vector<double> xs;
        for (const auto &p : reps)
            xs.push_back(p.*field);
        return spread(xs);
    }
};

struct ThroughputRow {
    std::string transport;
    size_t size;
    int producers;
    std::vector<double> reps;  // messages per second
    uint64_t messages = 0;     // verified, all repetitions

    Spread rate() const { return spread(reps); }
};

struct Results {
    std::vector<RoundTripRow> rtt;
    std::vector<ThroughputRow> throughput;
    std::vector<std::string> skipped;
    std::vector<RoundTripRow> floor;  // size-independent, measured once

    const RoundTripRow *findRtt(const std::string &transport, size_t size) const {
        for (const auto &r : rtt)
            if (r.transport == transport && r.size == size) return &r;
        return nullptr;
    }
    const RoundTripRow *findFloor(const std::string &transport) const {
        for (const auto &f : floor)
            if (f.transport == transport) return &f;
        return nullptr;
    }
    const ThroughputRow *findThroughput(const std::string &transport, size_t size, int producers) const {
        for (const auto &r : throughput)
            if (r.transport == transport && r.size == size && r.producers == producers) return &r;
        return nullptr;
    }
};

// ---------------------------------------------------------------------------------------------
// Measuring

// Why a libjoin-shm measurement first runs two laps of its ring: on this VM the first write to each
// page of a freshly mapped segment costs about 10 us, in every process that maps it, and neither
// JOIN_SHM_PREFAULT (MAP_POPULATE) nor MADV_POPULATE_WRITE avoids it. Measured: a 4 MB ring
// (4096 B x 1024) runs its first lap about 100 times slower than the following ones.
const char *kWarmupNote =
    "warm-up: libjoin-shm and the floor ring run two laps of their ring (per producer) first, so that first-touch "
    "costs are not measured";

// Rounds or messages to run before measuring (besides a tenth of the time): two laps of the ring.
template <class T>
uint64_t lapWarmup(const T &, uint64_t) {
    return 0;
}
uint64_t lapWarmup(const JoinShm &, uint64_t capacity) { return 2 * capacity; }
uint64_t lapWarmup(const RingFloor &, uint64_t capacity) { return 2 * capacity; }  // a mapping too

using RowKey = std::pair<std::string, size_t>;  // label, message size

struct Bench {
    Options o;
    int64_t clockCost = 0;
    Results res;
    std::set<RowKey> only;  // when not empty, measure only these rows (--check measuring again)

    bool skip(const std::string &label, size_t size) const { return !only.empty() && !only.count({label, size}); }

    // The row of a label and size, created empty on first use: run() adds one repetition at a time.
    static bool sameRow(const RoundTripRow &a, const RoundTripRow &b) {
        return a.transport == b.transport && a.size == b.size;
    }
    static bool sameRow(const ThroughputRow &a, const ThroughputRow &b) {
        return a.transport == b.transport && a.size == b.size && a.producers == b.producers;
    }
    template <class Row>
    static Row &rowOf(std::vector<Row> &rows, Row fresh) {
        for (auto &r : rows)
            if (sameRow(r, fresh)) return r;
        return rows.emplace_back(std::move(fresh));
    }

    template <class T>
    bool setUp(T &t, const Shape &shape, int rep) {
        const std::string why = t.setup(shape);
        if (why.empty()) return true;
        if (rep == 0) res.skipped.push_back(fmt::format("{} at {} B: {}", t.label(), shape.size, why));
        return false;
    }

    // One repetition of a round trip, added to its row.
    template <class T>
    void measureRoundTrip(T &t, size_t size, std::vector<RoundTripRow> &into, int rep) {
        const bool sleeps = t.label().find("sleep") != std::string::npos ||
                            t.label().find("epoll") != std::string::npos ||
                            t.label().find("wait_any") != std::string::npos;  // ~0.1 ms a round
        if (skip(t.label(), size)) return;
        RoundTripPlan plan;
        plan.shape = {size, o.capacity, 1};
        plan.targetNs = o.targetNs;
        plan.minRounds = sleeps ? 50 : 200;
        plan.warmup = sleeps ? 0 : lapWarmup(t, o.capacity);
        plan.clockCostNs = clockCost;
        if (!setUp(t, plan.shape, rep)) return;
        beginPhase(
            fmt::format("round trip, {}, {} B, capacity {}, repetition {}", t.label(), size, o.capacity, rep + 1),
            o.timeoutSeconds(), 2);
        std::vector<int64_t> samples = roundTrip(t, plan);
        endPhase();
        t.teardown();
        RoundTripRow &row = rowOf(into, RoundTripRow{t.label(), size, {}, 0});
        row.samples += samples.size();
        row.reps.push_back(percentiles(samples));
    }

    // One repetition of a stream, added to its row.
    template <class T>
    void measureStream(T &t, size_t size, int producers, size_t batch, int rep) {
        if (skip(t.label(), size)) return;
        StreamPlan plan;
        plan.shape = {size, o.capacity, producers};
        plan.batch = batch;
        plan.targetNs = o.targetNs;
        plan.warmup = lapWarmup(t, o.capacity) * static_cast<uint64_t>(producers);
        if (!setUp(t, plan.shape, rep)) return;
        beginPhase(fmt::format("stream, {}, {} B, capacity {}, {} producer(s), repetition {}", t.label(), size,
                               o.capacity, producers, rep + 1),
                   o.timeoutSeconds(), producers + 1);
        const StreamResult r = stream(t, plan);
        endPhase();
        t.teardown();
        ThroughputRow &row = rowOf(res.throughput, ThroughputRow{t.label(), size, producers, {}, 0});
        row.messages += r.verified;
        row.reps.push_back(r.rate());
    }

    // Calls fn(transport) for every selected transport that moves messages one way or both.
    // Batch, zero-copy and the floor ring exist for throughput only; sleep mode for the round trip
    // only.
    template <class Fn>
    void forEachTransport(bool forThroughput, bool multiProducer, Fn &&fn) {
        if (forThroughput && !multiProducer && wantsFamily("floor")) {
            RingFloor t;
            fn(t);
        }
        const std::pair<const char *, join_shm_policy> policies[] = {
            {"spsc", JOIN_SHM_SPSC}, {"mpsc", JOIN_SHM_MPSC}, {"mpmc", JOIN_SHM_MPMC}};
        for (const auto &[family, policy] : policies) {
            if (!wantsFamily(family) || (multiProducer && policy == JOIN_SHM_SPSC)) continue;
            for (Wait wait : {Wait::Spin, Wait::Block}) {
                JoinShm t(policy, wait);
                fn(t);
            }
            if (forThroughput) {
                for (Api api : {Api::Batch, Api::ZeroCopy}) {
                    JoinShm t(policy, Wait::Spin, api);
                    fn(t);
                }
            } else if (policy == JOIN_SHM_SPSC) {
                JoinShm t(policy, Wait::Sleep);
                fn(t);
            }
            if (policy == JOIN_SHM_SPSC) {  // since 1.2: waiting from an event loop
                for (Wait wait : {Wait::Epoll, Wait::Any8}) {
                    JoinShm t(policy, wait);
                    fn(t);
                }
            }
        }
        if (wantsFamily("pipe")) {
            Pipe t;
            fn(t);
        }
        if (wantsFamily("unix")) {
            UnixSeqpacket t;
            fn(t);
        }
        if (wantsFamily("mq")) {
            PosixMq t;
            fn(t);
        }
#if JOIN_SHM_BENCH_BOOST
        if (wantsFamily("boost")) {
            BoostMq t;
            fn(t);
        }
#endif
    }

    bool wantsFamily(const char *f) const { return o.wants(f); }

    // The rows a gains-only size measures (see Options::gainSizes).
    static bool gainRow(const std::string &label) {
        for (const char *part : {" spin", " batch", " zero-copy"})
            if (label.rfind("join-shm ", 0) == 0 && label.find(part) != std::string::npos) return true;
        return label == "hw floor stream";
    }

    bool gainsOnly(size_t size) const {
        return std::find(o.gainSizes.begin(), o.gainSizes.end(), size) != o.gainSizes.end() &&
               std::find(o.sizes.begin(), o.sizes.end(), size) == o.sizes.end();
    }

    // Every size measured, in order.
    std::vector<size_t> allSizes() const {
        std::set<size_t> all(o.sizes.begin(), o.sizes.end());
        if (o.throughput) all.insert(o.gainSizes.begin(), o.gainSizes.end());
        return {all.begin(), all.end()};
    }

    // Repetitions are interleaved: every row's first, then every row's second, and so on. This VM
    // changes speed for seconds at a time (how the host places its two vCPUs), and with each row's
    // repetitions back to back one such spell could cover every repetition of a row and none of
    // the row it is compared with. Interleaved, a spell touches a few repetitions of every row, and
    // the medians compared come from the same stretch of time.
    void run() {
        for (int rep = 0; rep < o.repeats; ++rep)
            runRepetition(rep);
    }

    void runRepetition(int rep) {
        if (o.rtt && o.wants("floor")) {
            for (bool two : {false, true}) {
                CacheLineFloor t(two);
                measureRoundTrip(t, 8, res.floor, rep);
            }
            FutexFloor sleeping;
            measureRoundTrip(sleeping, 8, res.floor, rep);
        }
        for (size_t size : allSizes()) {
            const bool gainsOnlySize = gainsOnly(size);
            if (o.rtt && !gainsOnlySize)
                forEachTransport(false, false, [&](auto &t) { measureRoundTrip(t, size, res.rtt, rep); });
            if (o.throughput) {
                forEachTransport(true, false, [&](auto &t) {
                    if (gainsOnlySize && !gainRow(t.label())) return;
                    const bool batch = t.label().find("batch") != std::string::npos;
                    measureStream(t, size, 1, batch ? o.batch : 1, rep);
                });
                if (o.producers > 1 && !gainsOnlySize)
                    forEachTransport(true, true, [&](auto &t) {
                        const bool batch = t.label().find("batch") != std::string::npos;
                        measureStream(t, size, o.producers, batch ? o.batch : 1, rep);
                    });
            }
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Reporting

std::string firstLineOf(const char *path, const char *key) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        if (key && line.rfind(key, 0) != 0) continue;
        const auto colon = line.find(':');
        return key && colon != std::string::npos ? line.substr(line.find_first_not_of(" \t", colon + 1)) : line;
    }
    return "unknown";
}

struct Machine {
    std::string cpu, kernel, clocksource;
    size_t cpus;
};

Machine describeMachine() {
    utsname u;
    uname(&u);
    return {firstLineOf("/proc/cpuinfo", "model name"), fmt::format("{} {}", u.sysname, u.release),
            firstLineOf("/sys/devices/system/clocksource/clocksource0/current_clocksource", nullptr),
            usableCpus().size()};
}

// Ratios are to these rows.
const char *kBaseline = "join-shm SPSC spin";
const char *kFloor = "hw floor, 2 lines";
const char *kFloorStream = "hw floor stream";
const char *kFloorSleeping = "futex floor, sleeping";

bool wakesPerMessage(const std::string &label) {
    return label.find(" sleep") != std::string::npos || label.find(" epoll") != std::string::npos;
}

// The median of a's repetitions divided by b's, repetition by repetition (value picks the figure
// of a repetition). Repetitions are interleaved (Bench::run), so the two rows of one repetition ran
// within a second of each other; paired this way, a slow spell of the VM lowers both sides of a
// ratio instead of one median.
template <class Row, class Value>
double pairedRatio(const Row &a, const Row &b, Value value) {
    std::vector<double> ratios;
    for (size_t i = 0; i < a.reps.size() && i < b.reps.size(); ++i)
        if (value(b.reps[i]) > 0) ratios.push_back(value(a.reps[i]) / value(b.reps[i]));
    return spread(ratios).median;
}

// Rows that pay a wake-up per message, against the futex floor: what each adds to the kernel's
// own cost of waking a sleeping process.
void printWakeRatios(const Bench &b, size_t size) {
    const RoundTripRow *floor = b.res.findFloor(kFloorSleeping);
    if (!floor) return;
    std::vector<std::string> parts;
    for (const auto &r : b.res.rtt)
        if (r.size == size && (wakesPerMessage(r.transport) || r.transport == "pipe"))
            parts.push_back(fmt::format(
                "{} {}", r.transport, formatRatio(pairedRatio(r, *floor, [](const Percentiles &p) { return p.p50; }))));
    if (parts.empty()) return;
    fmt::print("A wake-up per message, p50 against the futex floor (median of per-repetition ratios): {}\n",
               fmt::join(parts, ", "));
}

void printRoundTrips(const Bench &b, size_t size) {
    if (b.gainsOnly(size)) return;
    const RoundTripRow *base = b.res.findRtt(kBaseline, size);
    const RoundTripRow *floor = b.res.findFloor(kFloor);
    std::vector<const RoundTripRow *> rows;
    for (const auto &f : b.res.floor)
        rows.push_back(&f);
    for (const auto &r : b.res.rtt)
        if (r.size == size) rows.push_back(&r);
    if (rows.empty()) return;
    fmt::print("\nRound trip, {} B messages (medians of {} repetitions; the floor moves 8 B)\n", size, b.o.repeats);
    Table t({"transport", "p50", "p90", "p99", "p99.9", "max", "p50 min–max", "×SPSC", "×floor"});
    for (const RoundTripRow *r : rows) {
        const double p50 = r->stat(&Percentiles::p50).median;
        const Spread s = r->stat(&Percentiles::p50);
        t.row({r->transport, formatNs(p50), formatNs(r->stat(&Percentiles::p90).median),
               formatNs(r->stat(&Percentiles::p99).median), formatNs(r->stat(&Percentiles::p999).median),
               formatNs(r->stat(&Percentiles::max).median), formatNs(s.min) + " – " + formatNs(s.max),
               base ? formatRatio(p50 / base->stat(&Percentiles::p50).median) : "-",
               floor ? formatRatio(p50 / floor->stat(&Percentiles::p50).median) : "-"});
    }
    t.print();
    printWakeRatios(b, size);
}

void printThroughput(const Bench &b, size_t size) {
    const ThroughputRow *base = b.res.findThroughput(kBaseline, size, 1);
    const ThroughputRow *floor = b.res.findThroughput(kFloorStream, size, 1);
    bool any = false;
    for (const auto &r : b.res.throughput)
        any |= r.size == size;
    if (!any) return;
    fmt::print("\nOne-way throughput, {} B messages (medians of {} repetitions; msgs/s{})\n", size, b.o.repeats,
               b.gainsOnly(size) ? "; only the one-producer rows the gains need" : "");
    Table t({"transport", "producers", "msgs/s", "min–max", "GB/s", "×SPSC", "×floor", "×1 producer"});
    for (const auto &r : b.res.throughput) {
        if (r.size != size) continue;
        const Spread s = r.rate();
        const ThroughputRow *single = r.producers > 1 ? b.res.findThroughput(r.transport, size, 1) : nullptr;
        t.row({r.transport, std::to_string(r.producers), formatRate(s.median),
               formatRate(s.min) + " – " + formatRate(s.max),
               fmt::format("{:.2f}", s.median * static_cast<double>(size) / 1e9),
               base ? formatRatio(s.median / base->rate().median) : "-",
               floor ? formatRatio(s.median / floor->rate().median) : "-",
               single ? formatRatio(s.median / single->rate().median) : "-"});
    }
    t.print();
}

// What batches and zero-copy gain over one copy per call, and what blocking calls cost against
// polling: each against the single-call spin row of the same ring, message size and number of
// producers (pairedRatio).
void printGains(const Bench &b, size_t size) {
    Table t({"ring", "producers", "1 copy/call msgs/s", "batch msgs/s", "batch ×single", "zero-copy msgs/s",
             "zero-copy ×copy", "blocking ×spin"});
    bool any = false;
    std::vector<int> producerCounts{1};
    if (b.o.producers > 1) producerCounts.push_back(b.o.producers);
    for (join_shm_policy policy : {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC})
        for (int producers : producerCounts) {
            const std::string ring = fmt::format("join-shm {}", policyName(policy));
            const ThroughputRow *single = b.res.findThroughput(ring + " spin", size, producers);
            const ThroughputRow *batch = b.res.findThroughput(ring + " batch", size, producers);
            const ThroughputRow *zero = b.res.findThroughput(ring + " zero-copy", size, producers);
            const ThroughputRow *blocking = b.res.findThroughput(ring + " blocking", size, producers);
            if (!single || (!batch && !zero)) continue;
            const double base = single->rate().median;
            auto rate = [](const ThroughputRow *r) { return r ? formatRate(r->rate().median) : std::string("-"); };
            auto gain = [&](const ThroughputRow *r) {
                return r ? formatRatio(pairedRatio(*r, *single, [](double msgsPerSecond) { return msgsPerSecond; }))
                         : "-";
            };
            t.row({policyName(policy), std::to_string(producers), formatRate(base), rate(batch), gain(batch),
                   rate(zero), gain(zero), gain(blocking)});
            any = true;
        }
    if (!any) return;
    fmt::print(
        "\nGains over one copy per call, {} B messages (batch: up to {} per call; medians; ratios: median of "
        "the ratios within each repetition; blocking: push/pop)\n",
        size, b.o.batch);
    t.print();
}

std::string jsonString(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", c);
            continue;
        }
        out += c;
    }
    return out + "\"";
}

void writeJson(const Bench &b, const Machine &m, const std::vector<std::string> &notes) {
    std::FILE *f = std::fopen(b.o.json.c_str(), "w");
    if (!f) fatal(fmt::format("cannot write {}: {}", b.o.json, std::strerror(errno)));
    const uint32_t v = join_shm_version();
    fmt::print(f, "{{\n  \"library_version\": \"{}.{}.{}\",\n", v >> 16, (v >> 8) & 0xff, v & 0xff);
    fmt::print(f, "  \"machine\": {{\"cpu\": {}, \"cpus\": {}, \"kernel\": {}, \"clocksource\": {}}},\n",
               jsonString(m.cpu), m.cpus, jsonString(m.kernel), jsonString(m.clocksource));
    fmt::print(f,
               "  \"config\": {{\"quick\": {}, \"sizes\": [{}], \"gains_only_sizes\": [{}], \"capacity\": {}, "
               "\"repeats\": {}, \"producers\": {}, \"batch\": {}, \"time_per_repetition_ns\": {}, "
               "\"clock_cost_ns\": {}}},\n",
               b.o.quick, fmt::join(b.o.sizes, ", "), fmt::join(b.o.gainSizes, ", "), b.o.capacity, b.o.repeats,
               b.o.producers, b.o.batch, b.o.targetNs, b.clockCost);
    auto list = [&](const std::vector<std::string> &xs) {
        std::string out;
        for (size_t i = 0; i < xs.size(); ++i)
            out += (i ? ", " : "") + jsonString(xs[i]);
        return "[" + out + "]";
    };
    fmt::print(f, "  \"notes\": {},\n  \"skipped\": {},\n", list(notes), list(b.res.skipped));
    auto rttRows = [&](const std::vector<RoundTripRow> &rows, bool last) {
        for (size_t i = 0; i < rows.size(); ++i) {
            const auto &r = rows[i];
            std::string reps;
            for (size_t k = 0; k < r.reps.size(); ++k)
                reps += fmt::format("{}{{\"p50\": {}, \"p90\": {}, \"p99\": {}, \"p99_9\": {}, \"max\": {}}}",
                                    k ? ", " : "", r.reps[k].p50, r.reps[k].p90, r.reps[k].p99, r.reps[k].p999,
                                    r.reps[k].max);
            const Spread s = r.stat(&Percentiles::p50);
            fmt::print(f,
                       "    {{\"transport\": {}, \"size\": {}, \"samples\": {}, \"p50_ns\": {}, \"p50_min_ns\": {}, "
                       "\"p50_max_ns\": {}, \"p90_ns\": {}, \"p99_ns\": {}, \"p99_9_ns\": {}, \"max_ns\": {}, "
                       "\"repetitions\": [{}]}}{}\n",
                       jsonString(r.transport), r.size, r.samples, s.median, s.min, s.max,
                       r.stat(&Percentiles::p90).median, r.stat(&Percentiles::p99).median,
                       r.stat(&Percentiles::p999).median, r.stat(&Percentiles::max).median, reps,
                       last && i + 1 == rows.size() ? "" : ",");
        }
    };
    fmt::print(f, "  \"round_trip\": [\n");
    rttRows(b.res.floor, b.res.rtt.empty());
    rttRows(b.res.rtt, true);
    fmt::print(f, "  ],\n  \"throughput\": [\n");
    for (size_t i = 0; i < b.res.throughput.size(); ++i) {
        const auto &r = b.res.throughput[i];
        const Spread s = r.rate();
        std::string reps;
        for (size_t k = 0; k < r.reps.size(); ++k)
            reps += fmt::format("{}{:.0f}", k ? ", " : "", r.reps[k]);
        fmt::print(f,
                   "    {{\"transport\": {}, \"size\": {}, \"producers\": {}, \"verified_messages\": {}, "
                   "\"msgs_per_s\": {:.0f}, \"msgs_per_s_min\": {:.0f}, \"msgs_per_s_max\": {:.0f}, \"gb_per_s\": "
                   "{:.3f}, \"repetitions\": [{}]}}{}\n",
                   jsonString(r.transport), r.size, r.producers, r.messages, s.median, s.min, s.max,
                   s.median * static_cast<double>(r.size) / 1e9, reps, i + 1 == b.res.throughput.size() ? "" : ",");
    }
    fmt::print(f, "  ]\n}}\n");
    std::fclose(f);
}

// ---------------------------------------------------------------------------------------------
// --check: a guard for CI. It tests ratios within one run (to the floor ring, the 2-line floor,
// the pipe, Boost.Interprocess), never absolute figures, so a slower machine does not fail it. Each
// figure is the best repetition (highest rate, lowest p50): load only slows a run down, so the best
// one is the least disturbed. The rows of a floor not met are measured again (those rows only, so it
// is quick), up to kCheckRuns runs in all, and the floor fails the check only if it fails in every
// run: a disturbed run on a shared machine does not.

constexpr int kCheckRuns = 5;

struct Floor {
    // stream: msgs/s over the floor ring's >= bound; rtt: p50 over the 2-line floor's <= bound;
    // wake: p50 over the pipe's <= bound (rows that sleep on every message, as a pipe's reader does).
    std::string kind;
    size_t size = 0;
    int producers = 1;
    double bound = 0;
    std::string transport;
};

std::vector<Floor> readFloors(const std::string &path) {
    std::ifstream in(path);
    if (!in) fatal(fmt::format("cannot read the floors for --check, {}: {}", path, std::strerror(errno)));
    std::vector<Floor> out;
    int n = 0;
    for (std::string line; std::getline(in, line);) {
        ++n;
        line = line.substr(0, line.find('#'));
        std::istringstream words(line);
        Floor f;
        if (!(words >> f.kind)) continue;  // blank or a comment
        words >> f.size >> f.producers >> f.bound >> std::ws;
        std::getline(words, f.transport);
        if (words.fail() || f.transport.empty() || (f.kind != "stream" && f.kind != "rtt" && f.kind != "wake"))
            fatal(fmt::format("{}:{}: want \"stream|rtt|wake SIZE PRODUCERS BOUND TRANSPORT\"", path, n));
        out.push_back(f);
    }
    return out;
}

struct Verdict {
    std::string what, measured, bound;
    bool ok;
    std::vector<RowKey> rows;  // what to measure again if it fails
};

double bestRate(const ThroughputRow &r) { return r.rate().max; }
double bestP50(const RoundTripRow &r) { return r.stat(&Percentiles::p50).min; }

std::vector<Verdict> evaluate(const Bench &b, const std::vector<Floor> &floors) {
    std::vector<Verdict> out;
    const RoundTripRow *floor2 = b.res.findFloor(kFloor);
    for (const Floor &f : floors) {
        if (f.kind == "stream") {
            const std::string what =
                fmt::format("{}, {} B, {} producer(s): ×floor ring", f.transport, f.size, f.producers);
            const ThroughputRow *row = b.res.findThroughput(f.transport, f.size, f.producers);
            const ThroughputRow *ref = b.res.findThroughput(kFloorStream, f.size, 1);
            const std::vector<RowKey> keys{{f.transport, f.size}, {kFloorStream, f.size}};
            if (!row || !ref) {
                out.push_back({what, "not measured", fmt::format(">= {:.2f}", f.bound), false, keys});
                continue;
            }
            const double ratio = bestRate(*row) / bestRate(*ref);
            out.push_back(
                {what, fmt::format("{:.2f}", ratio), fmt::format(">= {:.2f}", f.bound), ratio >= f.bound, keys});
        } else {
            const bool wake = f.kind == "wake";
            const std::string what =
                fmt::format("{}, {} B: round trip ×{}", f.transport, f.size, wake ? "pipe" : "2-line floor");
            const RoundTripRow *row = b.res.findRtt(f.transport, f.size);
            const RoundTripRow *ref = wake ? b.res.findRtt("pipe", f.size) : floor2;
            const std::vector<RowKey> keys{{f.transport, f.size}, wake ? RowKey{"pipe", f.size} : RowKey{kFloor, 8}};
            if (!row || !ref) {
                out.push_back({what, "not measured", fmt::format("<= {:.2f}", f.bound), false, keys});
                continue;
            }
            const double ratio = bestP50(*row) / bestP50(*ref);
            out.push_back(
                {what, fmt::format("{:.2f}", ratio), fmt::format("<= {:.2f}", f.bound), ratio <= f.bound, keys});
        }
    }
    // Every libjoin-shm row at least as fast as Boost.Interprocess's message_queue, the nearest
    // thing a user could take instead. Rows that sleep on every message answer to the pipe instead
    // (wake lines above): their cost is the kernel's wake-up, which both pay. Streams with more
    // processes than CPUs are left out: there a spinning consumer measures the scheduler.
    const size_t cpus = usableCpus().size();
    for (const auto &r : b.res.throughput) {
        const ThroughputRow *boost = b.res.findThroughput("boost mq", r.size, r.producers);
        if (r.transport.rfind("join-shm ", 0) != 0 || !boost || static_cast<size_t>(r.producers) + 1 > cpus) continue;
        const double ratio = bestRate(r) / bestRate(*boost);
        out.push_back({fmt::format("{}, {} B, {} producer(s): ×boost mq msgs/s", r.transport, r.size, r.producers),
                       fmt::format("{:.2f}", ratio),
                       ">= 1.00",
                       ratio >= 1,
                       {{r.transport, r.size}, {"boost mq", r.size}}});
    }
    for (const auto &r : b.res.rtt) {
        const RoundTripRow *boost = b.res.findRtt("boost mq", r.size);
        if (r.transport.rfind("join-shm ", 0) != 0 || wakesPerMessage(r.transport) || !boost) continue;
        const double ratio = bestP50(r) / bestP50(*boost);
        out.push_back({fmt::format("{}, {} B: round trip ×boost mq", r.transport, r.size),
                       fmt::format("{:.3f}", ratio),
                       "<= 1.00",
                       ratio <= 1,
                       {{r.transport, r.size}, {"boost mq", r.size}}});
    }
    return out;
}

void printVerdicts(const std::vector<Verdict> &verdicts, const std::set<std::string> *only) {
    Table t({"check", "best run", "floor", "result"});
    for (const Verdict &v : verdicts)
        if (!only || only->count(v.what)) t.row({v.what, v.measured, v.bound, v.ok ? "ok" : "NOT MET"});
    t.print();
}

// Returns whether every floor held in at least one of up to kCheckRuns runs.
bool check(const Bench &first) {
    const std::vector<Floor> floors = readFloors(first.o.floors);
    const std::vector<Verdict> verdicts = evaluate(first, floors);
    fmt::print("\nCheck against the floors in {} (best repetition of each row):\n", first.o.floors);
    printVerdicts(verdicts, nullptr);
    std::set<std::string> unmet;
    for (const Verdict &v : verdicts)
        if (!v.ok) unmet.insert(v.what);
    for (int run = 2; run <= kCheckRuns && !unmet.empty(); ++run) {
        Bench again;
        again.o = first.o;
        again.clockCost = first.clockCost;
        for (const Verdict &v : verdicts)
            if (unmet.count(v.what)) again.only.insert(v.rows.begin(), v.rows.end());
        fmt::print("\n{} floor(s) not met: measuring their {} rows again (run {} of {})\n", unmet.size(),
                   again.only.size(), run, kCheckRuns);
        again.run();
        const std::vector<Verdict> now = evaluate(again, floors);
        printVerdicts(now, &unmet);
        for (const Verdict &v : now)
            if (v.ok) unmet.erase(v.what);
    }
    if (unmet.empty()) {
        fmt::print("\nCheck passed: {} floor(s) met.\n", verdicts.size());
        return true;
    }
    fmt::print("\nCheck FAILED: {} of {} floor(s) not met in any of {} runs:\n", unmet.size(), verdicts.size(),
               kCheckRuns);
    for (const auto &w : unmet)
        fmt::print("  {}\n", w);
    return false;
}

}  // namespace

int main(int argc, char **argv) {
    init("join-shm-bench");
    Bench b;
    b.o = parseOptions(argc, argv);
    const int64_t start = nowNs();
    b.clockCost = measureClockCost();
    pinTo(cpuFor(0));

    const Machine m = describeMachine();
    const uint32_t v = join_shm_version();
    fmt::print("join-shm-bench, libjoin-shm {}.{}.{}{}\n", v >> 16, (v >> 8) & 0xff, v & 0xff,
               b.o.quick ? " (--quick)" : "");
    fmt::print("machine: {}, {} CPU(s), {}, clock {} (one reading costs {} ns, subtracted from round trips)\n", m.cpu,
               m.cpus, m.kernel, m.clocksource, b.clockCost);
    std::vector<std::string> notes;
    notes.push_back(m.cpus >= 2 ? fmt::format("processes pinned: parent (pinger, consumer) on CPU {}, peers round "
                                              "robin from CPU {}",
                                              cpuFor(0), cpuFor(1))
                                : "one CPU: processes not pinned; spinning processes yield every 4096 polls");
    notes.push_back(kWarmupNote);
    notes.push_back(fmt::format("ring capacity {}; each repetition runs about {} ms after a tenth as warm-up",
                                b.o.capacity, b.o.targetNs / 1'000'000));
    notes.push_back(
        "join-shm spin: try_push/try_pop polled; blocking: push/pop (spin briefly, then futex sleep); "
        "sleep: push/pop with spin_ns < 0 (every message a futex wake-up); batch: try_push_n/try_pop_n of up to " +
        std::to_string(b.o.batch) +
        "; zero-copy: try_reserve, write in place, commit / try_peek, check in place, release (spinning)");
    notes.push_back(
        "streams: producers write every byte of each message and the consumer checks every byte (zero-copy: in the "
        "slot itself)");
    notes.push_back("pipe: two pipes, unix seqpacket: one socketpair, both with kernel default buffers");
    notes.push_back(
        fmt::format("posix mq: mq_maxmsg = min(capacity, /proc/sys/fs/mqueue/msg_max = {}) = {}, "
                    "mq_msgsize = message size (msgsize_max = {})",
                    mqMsgMax(), std::min<long>(static_cast<long>(b.o.capacity), mqMsgMax()), mqMsgSizeMax()));
#if JOIN_SHM_BENCH_BOOST
    notes.push_back(fmt::format("boost mq: Boost.Interprocess message_queue (Boost {}.{}), capacity {}",
                                BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, b.o.capacity));
#else
    notes.push_back("boost mq: not built (Boost.Interprocess headers not found at configure time)");
#endif
    notes.push_back(
        "hw floor: two processes pass a counter through a MAP_SHARED mapping, both words in one "
        "cache line or one line each; ×floor is relative to the 2-line figure");
    notes.push_back(
        "futex floor, sleeping: the same with FUTEX_WAIT/FUTEX_WAKE around it, the receiver never spinning: "
        "one wake-up of a sleeping process per message, nothing else");
    notes.push_back(
        "hw floor stream: a minimal SPSC ring (rigtorp style: cursors on their own lines, each side caching the "
        "other's, acquire/release) in a MAP_SHARED mapping, same size and capacity, copying in and out; "
        "throughput ×floor is relative to it");
    for (const auto &n : notes)
        fmt::print("  {}\n", n);

    if (b.o.check) readFloors(b.o.floors);  // a bad floors file fails now, not after the run
    b.run();

    for (size_t size : b.allSizes()) {
        printRoundTrips(b, size);
        printThroughput(b, size);
        printGains(b, size);
    }
    if (!b.res.skipped.empty()) {
        fmt::print("\nSkipped:\n");
        for (const auto &s : b.res.skipped)
            fmt::print("  {}\n", s);
    }
    uint64_t verified = 0;
    for (const auto &r : b.res.throughput)
        verified += r.messages;
    fmt::print("\nEvery message checked on arrival ({} streamed); total time {:.1f} s.\n", formatCount(verified),
               static_cast<double>(nowNs() - start) / 1e9);
    if (!b.o.json.empty()) {
        writeJson(b, m, notes);
        fmt::print("JSON written to {}\n", b.o.json);
    }
    return b.o.check && !check(b) ? 1 : 0;
}
