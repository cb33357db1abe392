// Zero-copy calls (reserve/commit, peek/release, cancel, the timed variants) and batch calls
// (push_n/pop_n), for every policy: streams between forked processes that check each element's
// content, its producer's order and that it arrives exactly once; then the calls' rules one by one
// (wrong order, exact capacity, cancel, timeouts, where a slot lies and how long it stays put).
//
// Forked participants never touch Catch2: they write what went wrong into a stress::Report in
// shared memory, and leave with _exit (stress::Group, whose watchdog bounds every run).
// JOIN_SHM_STRESS_SCALE scales the stream lengths (CI: 0.1 under ASan, 0.05 under TSan).
#include "common.hpp"
#include "stress.hpp"

#include <join/shm.h>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace {

using stress::Report;

const join_shm_policy kPolicies[] = {JOIN_SHM_SPSC, JOIN_SHM_MPSC, JOIN_SHM_MPMC};

// ---------------------------------------------------------------------------------------------
// Elements of any size from 8 bytes up. The first 8 bytes hold the producer, the sequence number
// and 16 check bits over both; every later byte is derived from those 8 bytes. A torn element
// (parts of two), a stale one or garbage fails one test or the other.

constexpr uint32_t kStopProducer = 0xff;    // a STOP: the consumer that takes it is done
constexpr uint32_t kPoisonProducer = 0xfe;  // written into slots that are then cancelled: never delivered
constexpr uint64_t kSeqMask = (uint64_t{1} << 40) - 1;

uint64_t headWord(uint32_t producer, uint64_t seq) {
    const uint64_t key = (uint64_t{producer & 0xff} << 40) | (seq & kSeqMask);
    return (key << 16) | (stress::mix(key) & 0xffff);
}

uint64_t fillWord(uint64_t head, uint64_t j) { return stress::mix(head + (j + 1) * 0xd1b54a32d192ed03ull); }

void encode(void *to, uint64_t size, uint32_t producer, uint64_t seq) {
    auto *out = static_cast<unsigned char *>(to);
    const uint64_t head = headWord(producer, seq);
    std::memcpy(out, &head, sizeof head);
    for (uint64_t at = 8, j = 0; at < size; at += 8, ++j) {
        const uint64_t w = fillWord(head, j);
        std::memcpy(out + at, &w, std::min<uint64_t>(8, size - at));
    }
}

// nullptr if the element is whole (producer and seq are then set), else what is wrong with it.
const char *decode(const void *from, uint64_t size, uint32_t &producer, uint64_t &seq) {
    const auto *in = static_cast<const unsigned char *>(from);
    uint64_t head;
    std::memcpy(&head, in, sizeof head);
    const uint64_t key = head >> 16;
    if ((stress::mix(key) & 0xffff) != (head & 0xffff)) return "its check bits do not match (garbage or torn)";
    for (uint64_t at = 8, j = 0; at < size; at += 8, ++j) {
        const uint64_t w = fillWord(head, j);
        if (std::memcmp(in + at, &w, std::min<uint64_t>(8, size - at)) != 0)
            return "its payload does not match its header (torn, stale or overwritten)";
    }
    producer = static_cast<uint32_t>(key >> 40);
    seq = key & kSeqMask;
    return nullptr;
}

// "producer P seq S", or what is wrong with the element: for Catch2 messages.
std::string describe(const void *element, uint64_t size) {
    uint32_t producer = 0;
    uint64_t seq = 0;
    if (const char *why = decode(element, size, producer, seq)) return std::string("damaged: ") + why;
    return "producer " + std::to_string(producer) + " seq " + std::to_string(seq);
}

std::string expected(uint32_t producer, uint64_t seq) {
    return "producer " + std::to_string(producer) + " seq " + std::to_string(seq);
}

// ---------------------------------------------------------------------------------------------
// Single-process helpers (Catch2 allowed).

struct Element {
    std::vector<unsigned char> bytes;
    Element(uint64_t size, uint32_t producer, uint64_t seq) : bytes(size) { encode(bytes.data(), size, producer, seq); }
    const void *data() const { return bytes.data(); }
};

void push(join_shm_queue *q, uint64_t size, uint32_t producer, uint64_t seq) {
    Element e(size, producer, seq);
    INFO("pushing " << expected(producer, seq) << ": " << join_shm_last_error_detail());
    REQUIRE(join_shm_try_push(q, e.data()) == 0);
}

void expectPop(join_shm_queue *q, uint64_t size, uint32_t producer, uint64_t seq) {
    std::vector<unsigned char> buffer(size);
    const int r = join_shm_try_pop(q, buffer.data());
    INFO("popping " << expected(producer, seq) << ": " << join_shm_last_error_detail());
    REQUIRE(r == 0);
    CHECK(describe(buffer.data(), size) == expected(producer, seq));
}

void expectEmpty(join_shm_queue *q, uint64_t size) {
    std::vector<unsigned char> buffer(size);
    CHECK(join_shm_try_pop(q, buffer.data()) == -EAGAIN);
    CHECK(join_shm_pending(q) == 0);
}

join_shm_stats statsOf(const join_shm_queue *q) {
    join_shm_stats stats{};
    stats.size = sizeof stats;
    REQUIRE(join_shm_queue_stats(q, &stats) == 0);
    return stats;
}

// Where [p, p + size) lies in the segment file /dev/shm/NAME, judged from this process's mappings:
// its offset in the file, or -1 when it is not inside one mapping of that file. Two handles map
// the segment at different addresses; the same offset means the same bytes.
int64_t segmentOffset(const char *name, const void *p, uint64_t size) {
    struct stat st;
    if (stat(("/dev/shm/" + std::string(name)).c_str(), &st) != 0) return -1;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    const auto at = reinterpret_cast<uintptr_t>(p);
    while (std::getline(maps, line)) {
        unsigned long start = 0, end = 0, offset = 0, inode = 0;
        unsigned devMajor = 0, devMinor = 0;
        char perms[8] = {};
        if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &devMajor, &devMinor,
                        &inode) != 7)
            continue;
        if (inode != st.st_ino || devMajor != major(st.st_dev) || devMinor != minor(st.st_dev)) continue;
        if (at >= start && at + size <= end) return static_cast<int64_t>(offset + (at - start));
    }
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Streams between processes.

enum class Calls { ZeroCopy, Batches };

struct Stream {
    join_shm_policy policy;
    Calls calls;
    uint64_t elementSize;
    uint64_t capacity;
    unsigned producers;      // using the calls under test
    unsigned consumers;      // using the calls under test
    unsigned copyProducers;  // timed_push on handles of their own, on the same ring
    unsigned copyConsumers;  // timed_pop on handles of their own
    uint64_t perProducer;

    unsigned allProducers() const { return producers + copyProducers; }
    unsigned allConsumers() const { return consumers + copyConsumers; }
    bool sharedProducers() const { return policy != JOIN_SHM_SPSC; }
    uint64_t largestBatch() const { return std::max<uint64_t>(64, capacity + 5); }
};

std::string describe(const Stream &s) {
    char text[256];
    std::snprintf(text, sizeof text,
                  "%s %s, element size %llu, capacity %llu, %u+%u producer(s) x %llu -> %u+%u consumer(s) "
                  "(the second number: ordinary push/pop handles)",
                  stress::policyName(s.policy), s.calls == Calls::ZeroCopy ? "zero-copy" : "batches",
                  (unsigned long long)s.elementSize, (unsigned long long)s.capacity, s.producers, s.copyProducers,
                  (unsigned long long)s.perProducer, s.consumers, s.copyConsumers);
    return text;
}

constexpr int64_t kStallNs = stress::kStallNs;  // a timed call that waits this long has stalled
constexpr uint64_t kStyleRun = 29;              // elements per call style; odd, so styles drift over slots
constexpr uint64_t kBatchSizes = 4;             // 1, 7, 64 and more than the ring holds

uint64_t batchSize(const Stream &s, uint64_t k) {
    const uint64_t sizes[kBatchSizes] = {1, 7, 64, s.capacity + 5};
    return sizes[k % kBatchSizes];
}

// Shared by the participants of one run, in anonymous shared memory.
struct Tally {
    std::atomic<unsigned> producersDone{0};
    std::atomic<int> stuck{0};             // someone gave up and leaves the others waiting
    std::atomic<uint64_t> received{0};     // data elements taken, as the calls counted them
    std::atomic<uint64_t> stopsPushed{0};  // STOPs pushed, including ones handed back
    std::atomic<uint64_t> abandoned{0};    // positions given back by MPSC/MPMC producers' cancel
    std::atomic<uint64_t> producerCancels{0};
    std::atomic<uint64_t> consumerCancels{0};
    std::atomic<uint64_t> partialPushes{0};  // push_n calls that moved fewer than asked (>= 1)
    std::atomic<uint64_t> partialPops{0};
};

// What every participant has: the run, its handle, its report and a scratch buffer.
class Participant {
public:
    Participant(const Stream &s, const char *ring, Tally &tally, Report &report, const char *role, unsigned index)
        : s_(s), ring_(ring), tally_(tally), report_(report), size_(s.elementSize) {
        std::snprintf(who_, sizeof who_, "%s %u", role, index);
        buffer_.resize((s.largestBatch() + 1) * size_);
    }
    ~Participant() {
        join_shm_queue_close(q_);
        join_shm_queue_close(returns_);
    }
    Participant(const Participant &) = delete;
    Participant &operator=(const Participant &) = delete;

    bool open(join_shm_role role) {
        const int r = join_shm_queue_open(&q_, ring_, s_.policy, role, size_, s_.capacity);
        if (r != 0) fail("open", r);
        return r == 0;
    }

protected:
    void fail(const char *call, int64_t r) {
        report_.fail("%s: %s returned %lld (%s)", who_, call, (long long)r, join_shm_last_error_detail());
        tally_.stuck = 1;
    }
    unsigned char *at(uint64_t i) { return buffer_.data() + i * size_; }

    // The last producer to finish sends one STOP per consumer: every data element is then in the
    // ring ahead of every STOP.
    void finishProducing() {
        if (tally_.producersDone.fetch_add(1) + 1 != s_.allProducers()) return;
        for (unsigned i = 0; i < s_.allConsumers(); ++i)
            pushStop(q_, i);
    }
    void pushStop(join_shm_queue *q, uint64_t i) {
        encode(at(0), size_, kStopProducer, i);
        const int r = join_shm_timed_push(q, at(0), kStallNs);
        if (r != 0) return fail("timed_push of a STOP", r);
        tally_.stopsPushed.fetch_add(1);
    }

    const Stream &s_;
    const char *ring_;
    Tally &tally_;
    Report &report_;
    const uint64_t size_;
    char who_[48];
    join_shm_queue *q_ = nullptr;
    join_shm_queue *returns_ = nullptr;  // a consumer's producer handle, to hand back extra STOPs
    std::vector<unsigned char> buffer_;
};

class Producer : public Participant {
public:
    Producer(const Stream &s, const char *ring, Tally &tally, Report &report, unsigned index)
        : Participant(s, ring, tally, report, "producer", index), index_(index) {}

    void run(bool copies) {
        if (!open(JOIN_SHM_PRODUCER)) return;
        uint64_t seq = 0;
        while (seq < s_.perProducer && report_.ok()) {
            if (copies)
                seq += copyOne(seq);
            else if (s_.calls == Calls::ZeroCopy)
                seq += inPlace(seq);
            else
                seq += batch(seq);
            report_.progress.store(seq, std::memory_order_relaxed);
        }
        if (report_.ok())
            finishProducing();
        else
            tally_.stuck = 1;  // the others would wait for us: end the run now
    }

private:
    uint64_t copyOne(uint64_t seq) {
        encode(at(0), size_, index_, seq);
        const int r = join_shm_timed_push(q_, at(0), kStallNs);
        if (r != 0) fail("timed_push", r);
        return r == 0;
    }

    // A writable slot with the call of this style, or nullptr (failure reported).
    void *reserve(unsigned style) {
        void *slot = nullptr;
        int r;
        if (style == 0) {
            r = join_shm_try_reserve(q_, &slot);
            if (r == -EAGAIN) r = join_shm_timed_reserve(q_, &slot, kStallNs);
        } else if (style == 1) {
            r = join_shm_timed_reserve(q_, &slot, kStallNs);
        } else {
            r = join_shm_timed_reserve(q_, &slot, 0);  // one attempt
            if (r != 0 && r != -ETIMEDOUT) {
                fail("timed_reserve with timeout 0", r);
                return nullptr;
            }
            if (r == -ETIMEDOUT) r = join_shm_timed_reserve(q_, &slot, kStallNs);
        }
        if (r != 0) fail(style == 0 ? "try_reserve / timed_reserve" : "timed_reserve", r);
        if (r == 0 && !slot) fail("reserve gave a NULL slot", 0);
        return r == 0 ? slot : nullptr;
    }

    // One element, written in place; 1 when it was sent.
    uint64_t inPlace(uint64_t seq) {
        const auto style = static_cast<unsigned>((seq / kStyleRun + index_) % 5);
        if (style == 4) return copyOne(seq);  // an ordinary push on the same handle, between slots
        void *slot = reserve(style == 3 ? 0 : style);
        if (!slot) return 0;
        if (style == 3) {
            // Write something that must never arrive, then give the slot back.
            encode(slot, size_, kPoisonProducer, seq);
            int r = join_shm_cancel(q_);
            if (r != 0) {
                fail("cancel of a reserved slot", r);
                return 0;
            }
            tally_.producerCancels.fetch_add(1);
            if (s_.sharedProducers()) {
                tally_.abandoned.fetch_add(1);
                slot = reserve(0);
                if (!slot) return 0;
            } else {
                // The lone producer's position is still free, and the next reserve takes it again.
                void *again = nullptr;
                r = join_shm_try_reserve(q_, &again);
                if (r != 0) {
                    fail("try_reserve right after cancel (SPSC: the position is still ours)", r);
                    return 0;
                }
                if (again != slot) {
                    report_.fail("%s: SPSC reserve after cancel gave another slot (%p, cancelled %p)", who_, again,
                                 slot);
                    return 0;
                }
                slot = again;
            }
        }
        encode(slot, size_, index_, seq);
        uint32_t producer = 0;
        uint64_t got = 0;
        if (const char *why = decode(slot, size_, producer, got)) {
            report_.fail("%s: a reserved slot changed under its producer before commit: %s", who_, why);
            return 0;
        }
        const int r = join_shm_commit(q_);
        if (r != 0) fail("commit", r);
        return r == 0;
    }

    // One batch of 1, 7, 64 or more than the ring holds; how many went.
    uint64_t batch(uint64_t seq) {
        const uint64_t want = std::min(batchSize(s_, calls_++ + index_), s_.perProducer - seq);
        for (uint64_t i = 0; i < want; ++i)
            encode(at(i), size_, index_, seq + i);
        const int64_t r = join_shm_try_push_n(q_, at(0), want);
        if (r > 0) {
            // A batch is one claim of consecutive slots (one cursor publication): never more than
            // the ring holds, whatever the consumers free meanwhile.
            if (static_cast<uint64_t>(r) > std::min(want, s_.capacity)) {
                report_.fail("%s: try_push_n(%llu) returned %lld (capacity %llu)", who_, (unsigned long long)want,
                             (long long)r, (unsigned long long)s_.capacity);
                return 0;
            }
            if (static_cast<uint64_t>(r) < want) tally_.partialPushes.fetch_add(1);
            return static_cast<uint64_t>(r);
        }
        if (r != -EAGAIN) {
            fail("try_push_n", r);
            return 0;
        }
        return copyOne(seq);  // full: wait for room with the first element of the batch
    }

    unsigned index_;
    uint64_t calls_ = 0;
};

class Consumer : public Participant {
public:
    Consumer(const Stream &s, const char *ring, Tally &tally, Report &report, unsigned index,
             const stress::Ledger &ledger)
        : Participant(s, ring, tally, report, "consumer", index),
          index_(index),
          view_(ledger, index, s.allConsumers() == 1) {}

    void run(bool copies) {
        if (!open(JOIN_SHM_CONSUMER)) return;
        while (stops_ == 0 && report_.ok()) {
            if (copies)
                copyOne();
            else if (s_.calls == Calls::ZeroCopy)
                inPlace();
            else
                batch();
            ++calls_;
        }
        if (!report_.ok()) {
            tally_.stuck = 1;  // the others would wait for us: end the run now
            return;
        }
        // A batch may have taken another consumer's STOP too: hand it back.
        for (uint64_t i = 1; i < stops_ && report_.ok(); ++i) {
            if (!returns_) {
                const int r = join_shm_queue_open(&returns_, ring_, s_.policy, JOIN_SHM_PRODUCER, size_, s_.capacity);
                if (r != 0) return fail("open of a producer handle to hand back a STOP", r);
            }
            pushStop(returns_, 1000 + i);
        }
        view_.finish();
    }

private:
    // Checks one element taken; counts STOPs.
    void take(const unsigned char *element) {
        uint32_t producer = 0;
        uint64_t seq = 0;
        if (const char *why = decode(element, size_, producer, seq)) {
            report_.fail("%s: element #%llu taken is damaged: %s", who_, (unsigned long long)view_.count() + 1, why);
            return;
        }
        if (producer == kStopProducer) {
            ++stops_;
            return;
        }
        if (producer == kPoisonProducer) {
            report_.fail("%s: a slot its producer had cancelled was delivered (seq %llu)", who_,
                         (unsigned long long)seq);
            return;
        }
        if (stops_ != 0)
            report_.fail("%s: producer %u seq %llu came after a STOP", who_, producer, (unsigned long long)seq);
        // The ledger checks range, duplicates and per-producer order; content was checked above.
        view_.receive(stress::makeMessage(producer, seq));
        tally_.received.fetch_add(1, std::memory_order_relaxed);
    }

    void copyOne() {
        const int r = join_shm_timed_pop(q_, at(0), kStallNs);
        if (r != 0) return fail("timed_pop", r);
        take(at(0));
    }

    // The oldest element in place with the call of this style, or nullptr (failure reported).
    const void *peek(unsigned style) {
        const void *slot = nullptr;
        int r;
        if (style == 0) {
            r = join_shm_try_peek(q_, &slot);
            if (r == -EAGAIN) r = join_shm_timed_peek(q_, &slot, kStallNs);
        } else if (style == 1) {
            r = join_shm_timed_peek(q_, &slot, kStallNs);
        } else {
            r = join_shm_timed_peek(q_, &slot, 0);  // one attempt
            if (r != 0 && r != -ETIMEDOUT) {
                fail("timed_peek with timeout 0", r);
                return nullptr;
            }
            if (r == -ETIMEDOUT) r = join_shm_timed_peek(q_, &slot, kStallNs);
        }
        if (r != 0) fail(style == 0 ? "try_peek / timed_peek" : "timed_peek", r);
        if (r == 0 && !slot) fail("peek gave a NULL slot", 0);
        return r == 0 ? slot : nullptr;
    }

    // Reads a peeked element in place, checks that it did not change meanwhile, releases it.
    void consumeInPlace(const void *slot) {
        std::memcpy(at(0), slot, size_);
        take(at(0));
        if (std::memcmp(at(0), slot, size_) != 0)
            report_.fail("%s: a peeked slot changed before release (%s)", who_, describe(at(0), size_).c_str());
        const int r = join_shm_release(q_);
        if (r != 0) fail("release", r);
    }

    void inPlace() {
        const auto style = static_cast<unsigned>((calls_ / kStyleRun + index_) % 5);
        if (style == 4) return copyOne();  // an ordinary pop on the same handle, between slots
        const void *slot = peek(style == 3 ? 0 : style);
        if (!slot) return;
        if (style != 3) return consumeInPlace(slot);

        // Give the element back, then take it again: SPSC/MPSC left it the oldest, MPMC holds it
        // for this handle; either way the next call here must return it, at once.
        std::memcpy(at(0), slot, size_);
        int r = join_shm_cancel(q_);
        if (r != 0) return fail("cancel of a peeked slot", r);
        tally_.consumerCancels.fetch_add(1);
        const uint64_t how = cancels_++ % 3;
        if (how == 0) {
            const void *again = nullptr;
            r = join_shm_try_peek(q_, &again);
            if (r != 0) return fail("try_peek right after cancel", r);
            if (again != slot || std::memcmp(again, at(0), size_) != 0)
                return report_.fail("%s: peek after cancel gave another element (%s, cancelled %s)", who_,
                                    describe(again, size_).c_str(), describe(at(0), size_).c_str());
            return consumeInPlace(again);
        }
        const uint64_t want = how == 1 ? 1 : 3;
        unsigned char *into = at(1);
        int64_t got;
        if (how == 1) {
            r = join_shm_try_pop(q_, into);
            got = r == 0 ? 1 : r;
        } else {
            got = join_shm_try_pop_n(q_, into, want);
        }
        if (got < 1 || static_cast<uint64_t>(got) > want)
            return fail(how == 1 ? "try_pop right after cancel" : "try_pop_n(3) right after cancel", got);
        if (std::memcmp(into, at(0), size_) != 0)
            return report_.fail("%s: pop after cancel gave another element first (%s, cancelled %s)", who_,
                                describe(into, size_).c_str(), describe(at(0), size_).c_str());
        for (int64_t i = 0; i < got; ++i)
            take(into + static_cast<uint64_t>(i) * size_);
    }

    void batch() {
        const uint64_t want = batchSize(s_, calls_ + index_);
        // Nothing may be written past the count asked for.
        std::memset(at(want), 0xa5, size_);
        const int64_t r = join_shm_try_pop_n(q_, at(0), want);
        if (r == -EAGAIN) return copyOne();  // empty: wait for an element
        if (r < 1 || static_cast<uint64_t>(r) > std::min(want, s_.capacity)) return fail("try_pop_n", r);
        for (uint64_t i = 0; i < size_; ++i)
            if (at(want)[i] != 0xa5)
                return report_.fail("%s: try_pop_n(%llu) wrote past the elements asked for", who_,
                                    (unsigned long long)want);
        if (static_cast<uint64_t>(r) < want) tally_.partialPops.fetch_add(1);
        for (int64_t i = 0; i < r; ++i)
            take(at(static_cast<uint64_t>(i)));
    }

    unsigned index_;
    stress::Ledger::View view_;
    uint64_t calls_ = 0;
    uint64_t cancels_ = 0;
    uint64_t stops_ = 0;
};

// Runs the stream in forked processes and asserts on everything they reported.
void runStream(const Stream &s) {
    INFO(describe(s));
    test::ShmName name("zc");
    const unsigned producers = s.allProducers(), consumers = s.allConsumers();
    stress::Ledger ledger(producers, consumers, s.perProducer);
    stress::SharedArray<Report> producerReports(producers);
    stress::SharedArray<Tally> tallies(1);
    Tally &tally = tallies[0];

    auto status = [&]() {
        std::string text;
        for (unsigned p = 0; p < producers; ++p)
            text += "producer " + std::to_string(p) + " sent " + std::to_string(producerReports[p].progress.load()) +
                    " (" + producerReports[p].text() + "); ";
        for (unsigned c = 0; c < consumers; ++c)
            text += "consumer " + std::to_string(c) + " took " + std::to_string(ledger.report(c).progress.load()) +
                    " (" + ledger.report(c).text() + "); ";
        return text;
    };
    std::string problems;
    {
        stress::Group group(stress::Mode::Processes, status, [&] { return tally.stuck.load() != 0; });
        const char *ring = name.c_str();
        for (unsigned c = 0; c < consumers; ++c)
            group.spawn("consumer " + std::to_string(c),
                        [&, c] { Consumer(s, ring, tally, ledger.report(c), c, ledger).run(c >= s.consumers); });
        for (unsigned p = 0; p < producers; ++p)
            group.spawn("producer " + std::to_string(p),
                        [&, p] { Producer(s, ring, tally, producerReports[p], p).run(p >= s.producers); });
        problems = group.wait();
    }
    CHECK(problems == "");
    for (unsigned p = 0; p < producers; ++p) {
        INFO("producer " << p);
        CHECK(producerReports[p].text() == "ok");
    }
    for (unsigned c = 0; c < consumers; ++c) {
        INFO("consumer " << c);
        CHECK(ledger.report(c).text() == "ok");
    }
    const uint64_t total = uint64_t{producers} * s.perProducer;
    CHECK(ledger.exactlyOnce() == "");
    CHECK(tally.received.load() == total);
    INFO(tally.partialPushes.load() << " partial push_n, " << tally.partialPops.load() << " partial pop_n");
    if (s.calls == Calls::Batches) {
        // Batches of 64 and of capacity + 5 ask for more than a small ring holds: each one that
        // moved anything moved part of it.
        if (s.capacity < 64) CHECK(tally.partialPushes.load() + tally.partialPops.load() > 0);
    } else {
        CHECK(tally.producerCancels.load() > 0);
        CHECK(tally.consumerCancels.load() > 0);
    }

    // Quiet now: the cursors account for every position exactly. Cancelled MPSC/MPMC positions
    // were claimed (pushed) and stepped over (skipped); a cancelled SPSC position was reused.
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open(&q, name, s.policy, JOIN_SHM_PRODUCER, s.elementSize, s.capacity) == 0);
    const join_shm_stats stats = statsOf(q);
    CHECK(stats.pending == 0);
    CHECK(stats.skipped == tally.abandoned.load());
    CHECK(stats.pushed == total + tally.stopsPushed.load() + tally.abandoned.load());
    CHECK(stats.popped == stats.pushed);
    CHECK(join_shm_available(q) == s.capacity);
    CHECK(join_shm_empty(q) == 1);
    join_shm_queue_close(q);
}

// Messages per run: about 24,000 in all at scale 1.
uint64_t perProducer(unsigned producers) { return stress::scaled(24'000 / producers, 60); }

struct Geometry {
    uint64_t elementSize;
    uint64_t capacity;
};

// Each element size meets each capacity once over the two kinds of stream.
const Geometry kZeroCopyGeometries[] = {{8, 1}, {13, 3}, {64, 64}, {1472, 1000}};
const Geometry kBatchGeometries[] = {{8, 1000}, {13, 1}, {64, 3}, {1472, 64}};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Streams

TEST_CASE("zero-copy streams between processes deliver every element once, in each producer's order", "[zerocopy]") {
    for (join_shm_policy policy : kPolicies) {
        for (const Geometry &g : kZeroCopyGeometries) {
            DYNAMIC_SECTION(stress::policyName(policy)
                            << ", element size " << g.elementSize << ", capacity " << g.capacity) {
                Stream s{policy, Calls::ZeroCopy, g.elementSize, g.capacity, 1, 1, 0, 0, 0};
                if (policy == JOIN_SHM_MPSC) {
                    s.producers = 3;
                    s.copyProducers = 1;
                } else if (policy == JOIN_SHM_MPMC) {
                    s.producers = s.consumers = 3;
                    s.copyProducers = s.copyConsumers = 1;
                }
                s.perProducer = perProducer(s.allProducers());
                runStream(s);
            }
        }
    }
}

TEST_CASE("batch streams between processes account for every element exactly, in each producer's order", "[zerocopy]") {
    for (join_shm_policy policy : kPolicies) {
        for (const Geometry &g : kBatchGeometries) {
            DYNAMIC_SECTION(stress::policyName(policy)
                            << ", element size " << g.elementSize << ", capacity " << g.capacity) {
                const unsigned n = policy == JOIN_SHM_SPSC ? 1 : 3;
                Stream s{policy, Calls::Batches, g.elementSize, g.capacity, n, policy == JOIN_SHM_MPMC ? 3u : 1u, 0, 0,
                         0};
                s.perProducer = perProducer(s.allProducers());
                runStream(s);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rules, one process

TEST_CASE("zero-copy and batch calls out of order are refused and leave the ring as it was", "[zerocopy]") {
    constexpr uint64_t size = 100, capacity = 4;
    for (join_shm_policy policy : kPolicies) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("order");
            test::Pair pair(name, size, capacity, policy);
            join_shm_queue *producer = pair.producer, *consumer = pair.consumer;
            push(producer, size, 0, 0);
            push(producer, size, 0, 1);
            Element spare(size, 9, 9);
            std::vector<unsigned char> buffer(2 * size);
            void *slot = nullptr;
            const void *peeked = nullptr;

            // Nothing outstanding: completing or giving back a slot, the other side's calls, a
            // batch of none.
            CHECK(join_shm_commit(producer) == -EINVAL);
            CHECK(join_shm_release(consumer) == -EINVAL);
            CHECK(join_shm_cancel(producer) == -EINVAL);
            CHECK(join_shm_cancel(consumer) == -EINVAL);
            CHECK(join_shm_commit(consumer) == -EINVAL);
            CHECK(join_shm_release(producer) == -EINVAL);
            CHECK(join_shm_try_peek(producer, &peeked) == -EINVAL);
            CHECK(join_shm_timed_peek(producer, &peeked, 0) == -EINVAL);
            CHECK(join_shm_try_reserve(consumer, &slot) == -EINVAL);
            CHECK(join_shm_timed_reserve(consumer, &slot, 0) == -EINVAL);
            CHECK(join_shm_try_reserve(producer, nullptr) == -EINVAL);
            CHECK(join_shm_timed_reserve(producer, nullptr, 0) == -EINVAL);
            CHECK(join_shm_try_peek(consumer, nullptr) == -EINVAL);
            CHECK(join_shm_timed_peek(consumer, nullptr, 0) == -EINVAL);
            CHECK(join_shm_try_push_n(producer, spare.data(), 0) == -EINVAL);
            CHECK(join_shm_try_pop_n(consumer, buffer.data(), 0) == -EINVAL);
            CHECK(join_shm_try_push_n(consumer, spare.data(), 1) == -EINVAL);
            CHECK(join_shm_try_pop_n(producer, buffer.data(), 1) == -EINVAL);
            CHECK(join_shm_pending(consumer) == 2);

            // A reserved slot: no other push of any kind, and no second slot, on that handle.
            REQUIRE(join_shm_try_reserve(producer, &slot) == 0);
            encode(slot, size, 0, 2);
            const uint64_t pending = join_shm_pending(consumer);
            CHECK(join_shm_try_push(producer, spare.data()) == -EINVAL);
            CHECK(join_shm_push(producer, spare.data()) == -EINVAL);  // there is room: it would not block
            CHECK(join_shm_timed_push(producer, spare.data(), 0) == -EINVAL);
            CHECK(join_shm_try_push_n(producer, spare.data(), 1) == -EINVAL);
            CHECK(join_shm_try_push_n(producer, spare.data(), 0) == -EINVAL);
            void *second = nullptr;
            CHECK(join_shm_try_reserve(producer, &second) == -EINVAL);
            CHECK(join_shm_timed_reserve(producer, &second, 0) == -EINVAL);
            CHECK(join_shm_timed_reserve(producer, &second, 1'000'000) == -EINVAL);
            CHECK(join_shm_release(producer) == -EINVAL);
            CHECK(join_shm_pending(consumer) == pending);
            CHECK(describe(slot, size) == expected(0, 2));  // the slot is still ours, untouched
            REQUIRE(join_shm_commit(producer) == 0);
            CHECK(join_shm_commit(producer) == -EINVAL);
            CHECK(join_shm_cancel(producer) == -EINVAL);
            CHECK(join_shm_pending(consumer) == 3);

            // A peeked slot: no other pop of any kind, and no second slot, on that handle.
            REQUIRE(join_shm_try_peek(consumer, &peeked) == 0);
            CHECK(describe(peeked, size) == expected(0, 0));
            const uint64_t pendingPeeked = join_shm_pending(consumer);  // MPMC counts it taken already
            CHECK(join_shm_try_pop(consumer, buffer.data()) == -EINVAL);
            CHECK(join_shm_pop(consumer, buffer.data()) == -EINVAL);  // not empty: it would not block
            CHECK(join_shm_timed_pop(consumer, buffer.data(), 0) == -EINVAL);
            CHECK(join_shm_try_pop_n(consumer, buffer.data(), 2) == -EINVAL);
            CHECK(join_shm_try_pop_n(consumer, buffer.data(), 0) == -EINVAL);
            const void *again = nullptr;
            CHECK(join_shm_try_peek(consumer, &again) == -EINVAL);
            CHECK(join_shm_timed_peek(consumer, &again, 0) == -EINVAL);
            CHECK(join_shm_timed_peek(consumer, &again, 1'000'000) == -EINVAL);
            CHECK(join_shm_commit(consumer) == -EINVAL);
            CHECK(join_shm_pending(consumer) == pendingPeeked);
            CHECK(describe(peeked, size) == expected(0, 0));
            REQUIRE(join_shm_release(consumer) == 0);
            CHECK(join_shm_release(consumer) == -EINVAL);
            CHECK(join_shm_cancel(consumer) == -EINVAL);

            // Nothing was lost or added on the way.
            CHECK(join_shm_pending(consumer) == 2);
            expectPop(consumer, size, 0, 1);
            expectPop(consumer, size, 0, 2);
            expectEmpty(consumer, size);
            CHECK(statsOf(consumer).skipped == 0);
        }
    }
}

TEST_CASE("a batch moves exactly what fits: capacity from an empty ring, the rest of a partial one", "[zerocopy]") {
    for (join_shm_policy policy : kPolicies) {
        for (uint64_t capacity : {1, 3, 64, 144, 1000}) {
            for (uint64_t size : {8, 13, 64, 1472}) {
                if (capacity == 1000 && size == 1472 && policy != JOIN_SHM_MPMC) continue;  // enough of big rings
                DYNAMIC_SECTION(stress::policyName(policy) << ", capacity " << capacity << ", element size " << size) {
                    test::ShmName name("exact");
                    test::Pair pair(name, size, capacity, policy);
                    const uint64_t ask = capacity + 5;
                    std::vector<unsigned char> elements((ask + 1) * size);
                    auto element = [&](uint64_t i) { return elements.data() + i * size; };
                    for (uint64_t i = 0; i < ask; ++i)
                        encode(element(i), size, 1, i);

                    CHECK(join_shm_try_push_n(pair.producer, element(0), ask) == static_cast<int64_t>(capacity));
                    CHECK(join_shm_try_push_n(pair.producer, element(capacity), ask) == -EAGAIN);
                    CHECK(join_shm_try_push_n(pair.producer, element(capacity), 1) == -EAGAIN);
                    CHECK(join_shm_try_push(pair.producer, element(capacity)) == -EAGAIN);
                    void *slot = nullptr;
                    CHECK(join_shm_try_reserve(pair.producer, &slot) == -EAGAIN);
                    CHECK(join_shm_full(pair.producer) == 1);
                    CHECK(join_shm_available(pair.producer) == 0);
                    CHECK(join_shm_pending(pair.consumer) == capacity);

                    // Out again in one batch: each element whole and in order, nothing written past
                    // the count asked for.
                    std::vector<unsigned char> out((ask + 1) * size, 0xa5);
                    CHECK(join_shm_try_pop_n(pair.consumer, out.data(), ask) == static_cast<int64_t>(capacity));
                    for (uint64_t i = 0; i < capacity; ++i) {
                        INFO("element " << i);
                        REQUIRE(describe(out.data() + i * size, size) == expected(1, i));
                    }
                    CHECK(std::all_of(out.begin() + static_cast<std::ptrdiff_t>(ask * size), out.end(),
                                      [](unsigned char b) { return b == 0xa5; }));
                    CHECK(join_shm_try_pop_n(pair.consumer, out.data(), ask) == -EAGAIN);
                    CHECK(join_shm_empty(pair.consumer) == 1);

                    // A partly full ring takes the rest, wrapping around its end; a partly empty one
                    // gives what it has.
                    if (capacity >= 3) {
                        const uint64_t first = capacity - 2;
                        REQUIRE(join_shm_try_push_n(pair.producer, element(0), first) == static_cast<int64_t>(first));
                        CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 1) == 1);
                        CHECK(describe(out.data(), size) == expected(1, 0));
                        CHECK(join_shm_try_push_n(pair.producer, element(first), 7) == 3);
                        CHECK(join_shm_full(pair.producer) == 1);
                        CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 2) == 2);
                        CHECK(join_shm_try_push_n(pair.producer, element(first + 3), ask) == 2);
                        CHECK(join_shm_try_pop_n(pair.consumer, out.data(), ask) == static_cast<int64_t>(capacity));
                        for (uint64_t i = 0; i < capacity; ++i) {
                            INFO("element " << i << " after the wrap");
                            REQUIRE(describe(out.data() + i * size, size) == expected(1, i + 3));
                        }
                        CHECK(join_shm_try_pop_n(pair.consumer, out.data(), 1) == -EAGAIN);
                    }
                }
            }
        }
    }
}

TEST_CASE("batches, reservations and peeks interleave over several laps of the ring in order", "[zerocopy]") {
    // A deterministic walk: each step is a batch, a reservation or a peek of some size, on both
    // sides, checked against a model of what the ring holds.
    for (join_shm_policy policy : kPolicies) {
        for (uint64_t capacity : {1, 3, 64}) {
            DYNAMIC_SECTION(stress::policyName(policy) << ", capacity " << capacity) {
                constexpr uint64_t size = 13;
                test::ShmName name("walk");
                test::Pair pair(name, size, capacity, policy);
                std::vector<unsigned char> buffer((capacity + 8) * size);
                uint64_t sent = 0, taken = 0;
                uint64_t rng = 12345;
                for (int step = 0; step < 400; ++step) {
                    rng = stress::mix(rng);
                    const uint64_t held = sent - taken;
                    const uint64_t want = 1 + (rng >> 8) % (capacity + 6);
                    INFO("step " << step << ", " << held << " held, want " << want);
                    switch (rng % 4) {
                        case 0: {
                            for (uint64_t i = 0; i < want; ++i)
                                encode(buffer.data() + i * size, size, 2, sent + i);
                            const int64_t r = join_shm_try_push_n(pair.producer, buffer.data(), want);
                            const uint64_t fits = std::min(want, capacity - held);
                            CHECK(r == (fits ? static_cast<int64_t>(fits) : -EAGAIN));
                            if (r > 0) sent += static_cast<uint64_t>(r);
                            break;
                        }
                        case 1: {
                            const int64_t r = join_shm_try_pop_n(pair.consumer, buffer.data(), want);
                            const uint64_t has = std::min(want, held);
                            REQUIRE(r == (has ? static_cast<int64_t>(has) : -EAGAIN));
                            for (int64_t i = 0; i < r; ++i)
                                REQUIRE(describe(buffer.data() + static_cast<uint64_t>(i) * size, size) ==
                                        expected(2, taken++));
                            break;
                        }
                        case 2: {
                            void *slot = nullptr;
                            const int r = join_shm_try_reserve(pair.producer, &slot);
                            CHECK(r == (held < capacity ? 0 : -EAGAIN));
                            if (r == 0) {
                                encode(slot, size, 2, sent++);
                                REQUIRE(join_shm_commit(pair.producer) == 0);
                            }
                            break;
                        }
                        default: {
                            const void *slot = nullptr;
                            const int r = join_shm_try_peek(pair.consumer, &slot);
                            REQUIRE(r == (held > 0 ? 0 : -EAGAIN));
                            if (r == 0) {
                                CHECK(describe(slot, size) == expected(2, taken++));
                                REQUIRE(join_shm_release(pair.consumer) == 0);
                            }
                        }
                    }
                    CHECK(join_shm_pending(pair.consumer) == sent - taken);
                }
                CHECK(sent > 3 * capacity);  // the walk went round the ring a few times
            }
        }
    }
}

TEST_CASE("a reserved or peeked slot is element-size bytes inside the mapping and stays put until completed",
          "[zerocopy]") {
    for (join_shm_policy policy : kPolicies) {
        for (uint64_t size : {8, 13, 1472}) {
            DYNAMIC_SECTION(stress::policyName(policy) << ", element size " << size) {
                constexpr uint64_t capacity = 3;
                test::ShmName name("slot");
                test::Pair pair(name, size, capacity, policy);

                // A lap of reservations: distinct, non-overlapping slots of the segment, and the
                // consumer peeks each element at the very bytes its producer wrote (in place).
                std::set<int64_t> offsets;
                for (uint64_t i = 0; i < capacity; ++i) {
                    void *slot = nullptr;
                    REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
                    const int64_t offset = segmentOffset(name, slot, size);
                    INFO("reservation " << i);
                    REQUIRE(offset >= 0);
                    for (int64_t other : offsets)
                        CHECK(static_cast<uint64_t>(std::abs(other - offset)) >= size);
                    offsets.insert(offset);
                    encode(slot, size, 3, i);  // every byte of it
                    REQUIRE(join_shm_commit(pair.producer) == 0);
                    const void *peeked = nullptr;
                    REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
                    CHECK(segmentOffset(name, peeked, size) == offset);
                    CHECK(describe(peeked, size) == expected(3, i));
                    REQUIRE(join_shm_release(pair.consumer) == 0);
                }
                CHECK(offsets.size() == capacity);

                // A reserved slot at the front holds back what is committed behind it, and nobody
                // writes into it meanwhile.
                join_shm_queue *other = pair.producer;
                if (policy != JOIN_SHM_SPSC)
                    REQUIRE(join_shm_queue_open(&other, name, policy, JOIN_SHM_PRODUCER, size, capacity) == 0);
                void *slot = nullptr;
                REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
                encode(slot, size, 3, 100);
                if (other != pair.producer) {
                    push(other, size, 4, 0);
                    push(other, size, 4, 1);
                    std::vector<unsigned char> buffer(size);
                    CHECK(join_shm_try_pop(pair.consumer, buffer.data()) == -EAGAIN);  // the oldest is unfinished
                    CHECK(join_shm_try_push(other, buffer.data()) == -EAGAIN);         // and the ring is full
                }
                CHECK(describe(slot, size) == expected(3, 100));
                REQUIRE(join_shm_commit(pair.producer) == 0);
                expectPop(pair.consumer, size, 3, 100);
                if (other != pair.producer) {
                    expectPop(pair.consumer, size, 4, 0);
                    expectPop(pair.consumer, size, 4, 1);
                    join_shm_queue_close(other);
                }

                // A peeked slot is not written over, however the ring fills up, until released. (The
                // ring is a FIFO: the producers' next position is the peeked slot's, a lap later.)
                for (uint64_t i = 0; i < capacity; ++i)
                    push(pair.producer, size, 5, i);
                const void *peeked = nullptr;
                REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
                const int64_t peekedAt = segmentOffset(name, peeked, size);
                CHECK(peekedAt >= 0);
                join_shm_queue *second = nullptr;
                if (policy == JOIN_SHM_MPMC) {
                    // Another consumer takes all the rest meanwhile.
                    REQUIRE(join_shm_queue_open(&second, name, policy, JOIN_SHM_CONSUMER, size, capacity) == 0);
                    for (uint64_t i = 1; i < capacity; ++i)
                        expectPop(second, size, 5, i);
                }
                Element extra(size, 5, 99);
                CHECK(join_shm_try_push(pair.producer, extra.data()) == -EAGAIN);
                CHECK(join_shm_try_push_n(pair.producer, extra.data(), 1) == -EAGAIN);
                void *refused = nullptr;
                CHECK(join_shm_try_reserve(pair.producer, &refused) == -EAGAIN);
                CHECK(describe(peeked, size) == expected(5, 0));
                CHECK(segmentOffset(name, peeked, size) == peekedAt);
                REQUIRE(join_shm_release(pair.consumer) == 0);
                REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);  // now there is room
                encode(slot, size, 5, capacity);
                REQUIRE(join_shm_commit(pair.producer) == 0);
                join_shm_queue *rest = second ? second : pair.consumer;
                for (uint64_t i = policy == JOIN_SHM_MPMC ? capacity : 1; i <= capacity; ++i)
                    expectPop(rest, size, 5, i);
                expectEmpty(rest, size);
                join_shm_queue_close(second);
            }
        }
    }
}

TEST_CASE(
    "a producer process that closes with a reserved slot: MPSC and MPMC skip and count it, SPSC's next "
    "producer takes the position",
    "[zerocopy]") {
    constexpr uint64_t size = 64, capacity = 3;
    for (join_shm_policy policy : kPolicies) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("closed");
            join_shm_queue *consumer = nullptr;
            REQUIRE(join_shm_queue_open(&consumer, name, policy, JOIN_SHM_CONSUMER, size, capacity) == 0);
            stress::SharedArray<int64_t> reservedAt(1);
            {
                stress::Group group(stress::Mode::Processes);
                group.spawn("producer", [&] {
                    join_shm_queue *q = nullptr;
                    if (join_shm_queue_open(&q, name, policy, JOIN_SHM_PRODUCER, size, capacity) != 0) _exit(1);
                    Element first(size, 6, 0);
                    if (join_shm_try_push(q, first.data()) != 0) _exit(2);
                    void *slot = nullptr;
                    if (join_shm_try_reserve(q, &slot) != 0) _exit(3);
                    encode(slot, size, kPoisonProducer, 1);
                    reservedAt[0] = segmentOffset(name, slot, size);
                    join_shm_queue_close(q);
                    _exit(0);
                });
                CHECK(group.wait() == "");
            }
            REQUIRE(reservedAt[0] >= 0);
            join_shm_queue *producer = nullptr;
            REQUIRE(join_shm_queue_open(&producer, name, policy, JOIN_SHM_PRODUCER, size, capacity) == 0);
            if (policy == JOIN_SHM_SPSC) {
                CHECK(statsOf(consumer).pushed == 1);
                CHECK(join_shm_pending(consumer) == 1);
                void *slot = nullptr;
                REQUIRE(join_shm_try_reserve(producer, &slot) == 0);
                CHECK(segmentOffset(name, slot, size) == reservedAt[0]);
                encode(slot, size, 6, 1);
                REQUIRE(join_shm_commit(producer) == 0);
                expectPop(consumer, size, 6, 0);
                expectPop(consumer, size, 6, 1);
                CHECK(statsOf(consumer).skipped == 0);
            } else {
                CHECK(statsOf(consumer).pushed == 2);
                expectPop(consumer, size, 6, 0);
                expectEmpty(consumer, size);  // the abandoned position is stepped over, not delivered
                const join_shm_stats stats = statsOf(consumer);
                CHECK(stats.skipped == 1);
                CHECK(stats.popped == 2);
                push(producer, size, 6, 1);
                expectPop(consumer, size, 6, 1);
            }
            // The ring still holds exactly its capacity.
            for (uint64_t i = 0; i < capacity; ++i)
                push(producer, size, 7, i);
            Element extra(size, 7, 99);
            CHECK(join_shm_try_push(producer, extra.data()) == -EAGAIN);
            for (uint64_t i = 0; i < capacity; ++i)
                expectPop(consumer, size, 7, i);
            join_shm_queue_close(producer);
            join_shm_queue_close(consumer);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Since 1.1: cancel, timed_reserve, timed_peek

TEST_CASE("cancel on the SPSC producer publishes nothing and the next reserve or push uses the position",
          "[zerocopy]") {
    constexpr uint64_t size = 64, capacity = 3;
    test::ShmName name("cancel-spsc");
    test::Pair pair(name, size, capacity, JOIN_SHM_SPSC);
    uint64_t oldest = 0;  // the ring holds just this element at the start of each round
    push(pair.producer, size, 0, oldest);
    for (int next : {0, 1, 2}) {
        INFO((next == 0 ? "reserve" : next == 1 ? "push" : "push_n") << " after cancel");
        void *slot = nullptr;
        REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
        const int64_t offset = segmentOffset(name, slot, size);
        CHECK(offset >= 0);
        encode(slot, size, kPoisonProducer, 0);
        const join_shm_stats before = statsOf(pair.consumer);
        REQUIRE(join_shm_cancel(pair.producer) == 0);
        CHECK(join_shm_cancel(pair.producer) == -EINVAL);
        CHECK(join_shm_commit(pair.producer) == -EINVAL);
        const join_shm_stats after = statsOf(pair.consumer);
        CHECK(after.pushed == before.pushed);
        CHECK(after.pending == 1);
        CHECK(join_shm_available(pair.producer) == capacity - 1);
        std::vector<unsigned char> buffer(size);
        CHECK(join_shm_try_pop_n(pair.consumer, buffer.data(), 5) == 1);  // nothing was published
        CHECK(describe(buffer.data(), size) == expected(0, oldest));

        // The next element takes the cancelled position: the consumer finds it at the same bytes.
        const uint64_t seq = oldest + 1;
        if (next == 0) {
            void *again = nullptr;
            REQUIRE(join_shm_try_reserve(pair.producer, &again) == 0);
            CHECK(again == slot);
            encode(again, size, 0, seq);
            REQUIRE(join_shm_commit(pair.producer) == 0);
        } else {
            Element e(size, 0, seq);
            if (next == 1)
                REQUIRE(join_shm_try_push(pair.producer, e.data()) == 0);
            else
                REQUIRE(join_shm_try_push_n(pair.producer, e.data(), 1) == 1);
        }
        const void *peeked = nullptr;
        REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
        CHECK(segmentOffset(name, peeked, size) == offset);
        CHECK(describe(peeked, size) == expected(0, seq));
        REQUIRE(join_shm_cancel(pair.consumer) == 0);  // it stays the oldest for the next round
        CHECK(join_shm_pending(pair.consumer) == 1);
        oldest = seq;
    }
    expectPop(pair.consumer, size, 0, oldest);
    expectEmpty(pair.consumer, size);
    const join_shm_stats stats = statsOf(pair.consumer);
    CHECK(stats.skipped == 0);
    CHECK(stats.pushed == oldest + 1);
}

TEST_CASE("cancel on an MPSC or MPMC producer abandons the position, which consumers skip and count", "[zerocopy]") {
    constexpr uint64_t size = 13, capacity = 4;
    for (join_shm_policy policy : {JOIN_SHM_MPSC, JOIN_SHM_MPMC}) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("cancel-mp");
            test::Pair pair(name, size, capacity, policy);
            join_shm_queue *other = nullptr;
            REQUIRE(join_shm_queue_open(&other, name, policy, JOIN_SHM_PRODUCER, size, capacity) == 0);
            uint64_t cancels = 0;

            // Alone: the position is claimed, then stepped over.
            push(pair.producer, size, 0, 0);
            void *slot = nullptr;
            REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
            encode(slot, size, kPoisonProducer, 0);
            REQUIRE(join_shm_cancel(pair.producer) == 0);
            ++cancels;
            CHECK(join_shm_cancel(pair.producer) == -EINVAL);
            CHECK(join_shm_commit(pair.producer) == -EINVAL);
            CHECK(statsOf(pair.consumer).pushed == 2);
            push(pair.producer, size, 0, 1);
            expectPop(pair.consumer, size, 0, 0);
            expectPop(pair.consumer, size, 0, 1);
            expectEmpty(pair.consumer, size);
            CHECK(statsOf(pair.consumer).skipped == cancels);

            // In front of elements committed after it by another producer: they are not held up.
            REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
            encode(slot, size, kPoisonProducer, 1);
            push(other, size, 1, 0);
            push(other, size, 1, 1);
            REQUIRE(join_shm_cancel(pair.producer) == 0);
            ++cancels;
            std::vector<unsigned char> buffer(8 * size);
            CHECK(join_shm_try_pop_n(pair.consumer, buffer.data(), 8) == 2);
            CHECK(describe(buffer.data(), size) == expected(1, 0));
            CHECK(describe(buffer.data() + size, size) == expected(1, 1));
            CHECK(statsOf(pair.consumer).skipped == cancels);

            // Between two elements: a batch may stop at it, but every element comes, in order.
            push(other, size, 1, 2);
            REQUIRE(join_shm_try_reserve(pair.producer, &slot) == 0);
            encode(slot, size, kPoisonProducer, 2);
            push(other, size, 1, 3);
            REQUIRE(join_shm_cancel(pair.producer) == 0);
            ++cancels;
            uint64_t next = 2;
            for (int64_t r; (r = join_shm_try_pop_n(pair.consumer, buffer.data(), 8)) > 0;)
                for (int64_t i = 0; i < r; ++i)
                    CHECK(describe(buffer.data() + static_cast<uint64_t>(i) * size, size) == expected(1, next++));
            CHECK(next == 4);
            CHECK(statsOf(pair.consumer).skipped == cancels);

            // Peeked in place just the same, and with a timed peek.
            REQUIRE(join_shm_timed_reserve(pair.producer, &slot, 0) == 0);
            encode(slot, size, kPoisonProducer, 3);
            REQUIRE(join_shm_cancel(pair.producer) == 0);
            ++cancels;
            push(other, size, 1, 4);
            const void *peeked = nullptr;
            REQUIRE(join_shm_timed_peek(pair.consumer, &peeked, 0) == 0);
            CHECK(describe(peeked, size) == expected(1, 4));
            REQUIRE(join_shm_release(pair.consumer) == 0);

            // Abandoned positions cost no capacity once stepped over.
            expectEmpty(pair.consumer, size);
            for (uint64_t i = 0; i < capacity; ++i)
                push(other, size, 2, i);
            Element extra(size, 2, 99);
            CHECK(join_shm_try_push(pair.producer, extra.data()) == -EAGAIN);
            for (uint64_t i = 0; i < capacity; ++i)
                expectPop(pair.consumer, size, 2, i);
            const join_shm_stats stats = statsOf(pair.consumer);
            CHECK(stats.skipped == cancels);
            CHECK(stats.pushed == stats.popped);
            CHECK(stats.pushed == 2 + 2 + 2 + 1 + capacity + cancels);
            join_shm_queue_close(other);
        }
    }
}

TEST_CASE("cancel on an SPSC or MPSC consumer leaves the element the oldest, for the next peek or pop", "[zerocopy]") {
    constexpr uint64_t size = 1472, capacity = 3;
    for (join_shm_policy policy : {JOIN_SHM_SPSC, JOIN_SHM_MPSC}) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("cancel-lone");
            test::Pair pair(name, size, capacity, policy);
            for (uint64_t i = 0; i < 3; ++i)
                push(pair.producer, size, 0, i);
            const void *peeked = nullptr, *again = nullptr;
            REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
            REQUIRE(join_shm_cancel(pair.consumer) == 0);
            CHECK(join_shm_cancel(pair.consumer) == -EINVAL);
            CHECK(join_shm_release(pair.consumer) == -EINVAL);
            CHECK(join_shm_pending(pair.consumer) == 3);
            CHECK(join_shm_full(pair.producer) == 1);  // its slot is not free
            REQUIRE(join_shm_try_peek(pair.consumer, &again) == 0);
            CHECK(again == peeked);
            CHECK(describe(again, size) == expected(0, 0));
            REQUIRE(join_shm_cancel(pair.consumer) == 0);
            expectPop(pair.consumer, size, 0, 0);  // a pop after cancel, too

            REQUIRE(join_shm_timed_peek(pair.consumer, &peeked, 0) == 0);
            CHECK(describe(peeked, size) == expected(0, 1));
            REQUIRE(join_shm_cancel(pair.consumer) == 0);
            push(pair.producer, size, 0, 3);  // something behind it changes nothing
            std::vector<unsigned char> buffer(5 * size);
            CHECK(join_shm_try_pop_n(pair.consumer, buffer.data(), 5) == 3);
            for (uint64_t i = 0; i < 3; ++i)
                CHECK(describe(buffer.data() + i * size, size) == expected(0, i + 1));

            push(pair.producer, size, 0, 4);
            REQUIRE(join_shm_try_peek(pair.consumer, &peeked) == 0);
            REQUIRE(join_shm_cancel(pair.consumer) == 0);
            REQUIRE(join_shm_timed_peek(pair.consumer, &again, 1'000'000'000) == 0);
            CHECK(again == peeked);
            CHECK(describe(again, size) == expected(0, 4));
            REQUIRE(join_shm_release(pair.consumer) == 0);
            expectEmpty(pair.consumer, size);
            const join_shm_stats stats = statsOf(pair.consumer);
            CHECK(stats.skipped == 0);
            CHECK(stats.popped == 5);
        }
    }
}

TEST_CASE("cancel on an MPMC consumer keeps the element for that consumer, ahead of everything else", "[zerocopy]") {
    constexpr uint64_t size = 64, capacity = 4;
    test::ShmName name("cancel-mpmc");
    test::Pair pair(name, size, capacity, JOIN_SHM_MPMC);
    join_shm_queue *mine = pair.consumer, *theirs = nullptr;
    REQUIRE(join_shm_queue_open(&theirs, name, JOIN_SHM_MPMC, JOIN_SHM_CONSUMER, size, capacity) == 0);
    std::vector<unsigned char> buffer(4 * size);
    const void *peeked = nullptr, *again = nullptr;

    // Another consumer has moved past the held element: it never sees it.
    for (uint64_t i = 0; i < 3; ++i)
        push(pair.producer, size, 0, i);
    REQUIRE(join_shm_try_peek(mine, &peeked) == 0);
    CHECK(describe(peeked, size) == expected(0, 0));
    REQUIRE(join_shm_cancel(mine) == 0);
    CHECK(join_shm_cancel(mine) == -EINVAL);
    CHECK(join_shm_release(mine) == -EINVAL);
    expectPop(theirs, size, 0, 1);
    REQUIRE(join_shm_try_peek(theirs, &again) == 0);
    CHECK(describe(again, size) == expected(0, 2));
    REQUIRE(join_shm_release(theirs) == 0);
    CHECK(join_shm_try_pop(theirs, buffer.data()) == -EAGAIN);
    CHECK(join_shm_try_pop_n(theirs, buffer.data(), 4) == -EAGAIN);
    REQUIRE(join_shm_try_peek(mine, &again) == 0);  // held: comes first, in place
    CHECK(again == peeked);
    CHECK(describe(again, size) == expected(0, 0));
    REQUIRE(join_shm_cancel(mine) == 0);
    expectPop(mine, size, 0, 0);
    expectEmpty(mine, size);

    // Ahead of what was pushed after it, for a pop, a batch and a timed peek alike.
    for (uint64_t i = 3; i < 6; ++i)
        push(pair.producer, size, 0, i);
    REQUIRE(join_shm_try_peek(mine, &peeked) == 0);
    REQUIRE(join_shm_cancel(mine) == 0);
    uint64_t next = 3;
    for (int64_t r; (r = join_shm_try_pop_n(mine, buffer.data(), 4)) > 0;)
        for (int64_t i = 0; i < r; ++i)
            CHECK(describe(buffer.data() + static_cast<uint64_t>(i) * size, size) == expected(0, next++));
    CHECK(next == 6);
    push(pair.producer, size, 0, 6);
    REQUIRE(join_shm_try_peek(mine, &peeked) == 0);
    REQUIRE(join_shm_cancel(mine) == 0);
    push(pair.producer, size, 0, 7);
    REQUIRE(join_shm_timed_peek(mine, &again, 0) == 0);
    CHECK(again == peeked);
    CHECK(describe(again, size) == expected(0, 6));
    REQUIRE(join_shm_release(mine) == 0);
    expectPop(theirs, size, 0, 7);

    // The held element keeps its slot: the ring fills up to it and then waits for it (a FIFO: the
    // producers' position comes round to that slot), and nothing is written over it.
    push(pair.producer, size, 0, 8);
    REQUIRE(join_shm_try_peek(mine, &peeked) == 0);
    REQUIRE(join_shm_cancel(mine) == 0);
    for (uint64_t i = 9; i < 9 + capacity - 1; ++i)
        push(pair.producer, size, 0, i);
    Element extra(size, 0, 99);
    CHECK(join_shm_try_push(pair.producer, extra.data()) == -EAGAIN);
    for (uint64_t i = 9; i < 9 + capacity - 1; ++i)
        expectPop(theirs, size, 0, i);
    CHECK(join_shm_try_push(pair.producer, extra.data()) == -EAGAIN);
    CHECK(describe(peeked, size) == expected(0, 8));
    expectPop(mine, size, 0, 8);
    for (uint64_t i = 0; i < capacity; ++i)
        push(pair.producer, size, 1, i);
    for (uint64_t i = 0; i < capacity; ++i)
        expectPop(theirs, size, 1, i);
    expectEmpty(theirs, size);
    CHECK(statsOf(mine).skipped == 0);

    // A consumer closed while holding an element does not stall the ring.
    push(pair.producer, size, 2, 0);
    REQUIRE(join_shm_try_peek(mine, &peeked) == 0);
    REQUIRE(join_shm_cancel(mine) == 0);
    join_shm_queue_close(mine);
    pair.consumer = nullptr;
    for (uint64_t lap = 0; lap < 2; ++lap) {
        for (uint64_t i = 0; i < capacity; ++i)
            push(pair.producer, size, 3, lap * capacity + i);
        for (uint64_t i = 0; i < capacity; ++i)
            expectPop(theirs, size, 3, lap * capacity + i);
    }
    join_shm_queue_close(theirs);
}

namespace {

int64_t elapsedSince(int64_t start) { return stress::nowNs() - start; }

// A 2 ms interval timer with a handler that does nothing, while it lives: the waits below must not
// be cut short by EINTR.
class Interruptions {
public:
    Interruptions() {
        struct sigaction action {};
        action.sa_handler = [](int) {};
        sigemptyset(&action.sa_mask);
        action.sa_flags = 0;  // no SA_RESTART: interrupted system calls do fail with EINTR
        REQUIRE(sigaction(SIGALRM, &action, &old_) == 0);
        itimerval timer{{0, 2000}, {0, 2000}};
        REQUIRE(setitimer(ITIMER_REAL, &timer, nullptr) == 0);
    }
    ~Interruptions() {
        itimerval off{};
        setitimer(ITIMER_REAL, &off, nullptr);
        sigaction(SIGALRM, &old_, nullptr);
    }
    Interruptions(const Interruptions &) = delete;
    Interruptions &operator=(const Interruptions &) = delete;

private:
    struct sigaction old_ {};
};

constexpr int64_t kWaitNs = 50'000'000;
constexpr int64_t kSlackNs = 2'000'000'000;  // only a sanity bound: timings belong in benchmarks

// Polls /proc until process pid sleeps in the kernel (or a second passed): the peer below acts
// only once the test's process is likely waiting, so that the waiting path is the one tested.
// The outcome checked does not depend on it.
void awaitSleeping(pid_t pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    stress::waitUntil(
        [&] {
            std::ifstream stat(path);
            std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
            const size_t paren = text.rfind(')');
            return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'S';
        },
        1'000'000'000);
}

}  // namespace

TEST_CASE("timed reserve and timed peek time out on a full or empty ring, not early, and leave no slot", "[zerocopy]") {
    constexpr uint64_t size = 64, capacity = 2;
    for (join_shm_policy policy : kPolicies) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("timeout");
            test::Pair pair(name, size, capacity, policy);
            void *slot = nullptr;
            const void *peeked = nullptr;

            // With room (or an element) each succeeds at once, whatever the timeout.
            for (int64_t timeout : {int64_t{0}, kWaitNs, int64_t{-1}}) {
                INFO("timeout " << timeout);
                REQUIRE(join_shm_timed_reserve(pair.producer, &slot, timeout) == 0);
                encode(slot, size, 0, 0);
                REQUIRE(join_shm_commit(pair.producer) == 0);
                REQUIRE(join_shm_timed_peek(pair.consumer, &peeked, timeout) == 0);
                CHECK(describe(peeked, size) == expected(0, 0));
                REQUIRE(join_shm_release(pair.consumer) == 0);
            }

            // Empty.
            int64_t start = stress::nowNs();
            CHECK(join_shm_timed_peek(pair.consumer, &peeked, 0) == -ETIMEDOUT);
            CHECK(elapsedSince(start) < kSlackNs);
            {
                Interruptions signals;
                start = stress::nowNs();
                CHECK(join_shm_timed_peek(pair.consumer, &peeked, kWaitNs) == -ETIMEDOUT);
                const int64_t waited = elapsedSince(start);
                CHECK(waited >= kWaitNs);
                CHECK(waited < kWaitNs + kSlackNs);
            }
            CHECK(join_shm_release(pair.consumer) == -EINVAL);
            CHECK(join_shm_cancel(pair.consumer) == -EINVAL);

            // Full.
            push(pair.producer, size, 1, 0);
            push(pair.producer, size, 1, 1);
            start = stress::nowNs();
            CHECK(join_shm_timed_reserve(pair.producer, &slot, 0) == -ETIMEDOUT);
            CHECK(elapsedSince(start) < kSlackNs);
            {
                Interruptions signals;
                start = stress::nowNs();
                CHECK(join_shm_timed_reserve(pair.producer, &slot, kWaitNs) == -ETIMEDOUT);
                const int64_t waited = elapsedSince(start);
                CHECK(waited >= kWaitNs);
                CHECK(waited < kWaitNs + kSlackNs);
            }
            CHECK(join_shm_commit(pair.producer) == -EINVAL);
            CHECK(join_shm_cancel(pair.producer) == -EINVAL);

            // Nothing changed: the same two elements, and room for exactly two more.
            CHECK(join_shm_pending(pair.consumer) == 2);
            expectPop(pair.consumer, size, 1, 0);
            expectPop(pair.consumer, size, 1, 1);
            push(pair.producer, size, 1, 2);
            push(pair.producer, size, 1, 3);
            CHECK(join_shm_full(pair.producer) == 1);
            CHECK(statsOf(pair.consumer).skipped == 0);
        }
    }
}

TEST_CASE("timed reserve and timed peek succeed when a forked peer makes room or sends meanwhile", "[zerocopy]") {
    constexpr uint64_t size = 1472, capacity = 2;
    constexpr int64_t kLongNs = 20'000'000'000;
    for (join_shm_policy policy : kPolicies) {
        DYNAMIC_SECTION(stress::policyName(policy)) {
            test::ShmName name("peer");
            const pid_t parent = getpid();
            SECTION("a full ring: the peer pops") {
                join_shm_queue *producer = nullptr;
                REQUIRE(join_shm_queue_open(&producer, name, policy, JOIN_SHM_PRODUCER, size, capacity) == 0);
                push(producer, size, 0, 0);
                push(producer, size, 0, 1);
                stress::Group group(stress::Mode::Processes);
                group.spawn("consumer", [&] {
                    join_shm_queue *q = nullptr;
                    if (join_shm_queue_open(&q, name, policy, JOIN_SHM_CONSUMER, size, capacity) != 0) _exit(1);
                    awaitSleeping(parent);
                    std::vector<unsigned char> buffer(size);
                    if (join_shm_timed_pop(q, buffer.data(), kLongNs) != 0) _exit(2);
                    if (describe(buffer.data(), size) != expected(0, 0)) _exit(3);
                    join_shm_queue_close(q);
                    _exit(0);
                });
                void *slot = nullptr;
                const int r = join_shm_timed_reserve(producer, &slot, kLongNs);
                INFO(join_shm_last_error_detail());
                REQUIRE(r == 0);
                encode(slot, size, 0, 2);
                REQUIRE(join_shm_commit(producer) == 0);
                CHECK(group.wait() == "");
                join_shm_queue *consumer = nullptr;
                REQUIRE(join_shm_queue_open(&consumer, name, policy, JOIN_SHM_CONSUMER, size, capacity) == 0);
                expectPop(consumer, size, 0, 1);
                expectPop(consumer, size, 0, 2);
                expectEmpty(consumer, size);
                join_shm_queue_close(consumer);
                join_shm_queue_close(producer);
            }
            SECTION("an empty ring: the peer sends") {
                join_shm_queue *consumer = nullptr;
                REQUIRE(join_shm_queue_open(&consumer, name, policy, JOIN_SHM_CONSUMER, size, capacity) == 0);
                stress::Group group(stress::Mode::Processes);
                group.spawn("producer", [&] {
                    join_shm_queue *q = nullptr;
                    if (join_shm_queue_open(&q, name, policy, JOIN_SHM_PRODUCER, size, capacity) != 0) _exit(1);
                    awaitSleeping(parent);
                    void *slot = nullptr;
                    if (join_shm_try_reserve(q, &slot) != 0) _exit(2);
                    encode(slot, size, 0, 0);
                    if (join_shm_commit(q) != 0) _exit(3);
                    join_shm_queue_close(q);
                    _exit(0);
                });
                const void *peeked = nullptr;
                const int r = join_shm_timed_peek(consumer, &peeked, kLongNs);
                INFO(join_shm_last_error_detail());
                REQUIRE(r == 0);
                CHECK(describe(peeked, size) == expected(0, 0));
                REQUIRE(join_shm_release(consumer) == 0);
                CHECK(group.wait() == "");
                expectEmpty(consumer, size);
                join_shm_queue_close(consumer);
            }
        }
    }
}
