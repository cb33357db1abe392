// libFuzzer target: the shared segment is untrusted memory (CONTRACT.md §3).
//
// Each input opens a fresh ring and runs a small program on it: calls of the C API on up to two
// producer and two consumer handles, interleaved with writes of arbitrary or "nasty" values into
// the segment file (header and slots), resizing or replacing the file between opens, and opens
// with mismatching parameters. Whatever the segment holds, every call must return within a bounded
// time with a code from its allowed set, counts must stay within [0, capacity], and zero-copy
// pointers must be slots of the ring. The participant table (layout 3) is part of the segment:
// its identities, generations and intents are corrupted too, and the role words name holdings
// of it, so what an open may return follows from the table as the fuzzer reads it.
//
// Until the first write into the segment, the program also runs a model of the ring and requires
// exact results (codes, counts, element contents): corruption aside, single-threaded calls are
// deterministic, so any difference is a bug of the ring itself.
//
// Input: [policy] [element size] [capacity] [flags] then operations, one opcode byte each (low 5
// bits the operation, bit 5 the handle, bits 6-7 a variant) followed by its arguments. Missing
// bytes read as zero.
#include <join/shm.h>

#include "../../src/layout.hpp"   // offsets of the fields worth corrupting; the fuzzer's own knowledge
#include "../../src/process.hpp"  // processIdentity(): the identity the library records for us

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace layout = join::shm;

constexpr uint64_t kHeaderSize = sizeof(layout::Header);
constexpr uint64_t kRecordSize = sizeof(layout::Participant);
constexpr uint64_t kTableOffset = layout::kParticipantsOffset;
constexpr uint64_t kTableSize = layout::kMaxParticipants * kRecordSize;
// Our handles take the lowest free records: raw writes aim at these.
constexpr uint64_t kLowRecords = 8;

// ---------------------------------------------------------------------------------------------
// Watchdog: a call that does not return within kCallLimitNs aborts the run, so that libFuzzer
// records the input as a crash (with the call's name) instead of waiting for its own -timeout.
// A thread rather than alarm(): libFuzzer uses SIGALRM for -timeout itself.

constexpr int64_t kCallLimitNs = 2'000'000'000;

int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::atomic<int64_t> callStart{0};  // 0: no call in progress
std::atomic<const char *> callName{""};
char segmentPath[96];  // the current input's segment, removed when a run is aborted

[[noreturn]] void abortRun() {
    unlink(segmentPath);
    rmdir(segmentPath);  // kReplace may have put a directory there
    std::abort();
}

void startWatchdog() {
    static const bool started = [] {
        std::thread([] {
            for (;;) {
                timespec pause{0, 20'000'000};
                nanosleep(&pause, nullptr);
                const int64_t start = callStart.load();
                if (start != 0 && nowNs() - start > kCallLimitNs) {
                    std::fprintf(stderr, "fuzz_segment: %s did not return within %lld ms\n", callName.load(),
                                 (long long)(kCallLimitNs / 1'000'000));
                    abortRun();
                }
            }
        }).detach();
        return true;
    }();
    (void)started;
}

struct Timed {
    explicit Timed(const char *name) {
        callName.store(name);
        callStart.store(nowNs());
    }
    ~Timed() { callStart.store(0); }
    Timed(const Timed &) = delete;
    Timed &operator=(const Timed &) = delete;
};

#define CALL(name, expr)   \
    [&] {                  \
        Timed timed(name); \
        return (expr);     \
    }()

// ---------------------------------------------------------------------------------------------
// The input, read as a stream; past its end every read is 0.

struct Input {
    const uint8_t *data;
    size_t size;
    size_t at = 0;
    bool done() const { return at >= size; }
    uint8_t u8() { return at < size ? data[at++] : 0; }
    // Little-endian; one read per statement, as the order of operands' evaluation is unspecified.
    uint16_t u16() {
        const unsigned low = u8();
        return static_cast<uint16_t>(low | unsigned{u8()} << 8);
    }
    uint32_t u32() {
        const uint32_t low = u16();
        return low | uint32_t{u16()} << 16;
    }
    uint64_t u64() {
        const uint64_t low = u32();
        return low | uint64_t{u32()} << 32;
    }
};

// ---------------------------------------------------------------------------------------------

enum Op : uint8_t {
    kWriteRaw,   // offset u32, length 1..16, bytes: straight into the file
    kWriteWord,  // a "nasty" value into a chosen field of the header or a slot
    kPush,
    kPop,
    kPushN,  // variant + 1 elements
    kPopN,
    kReserve,  // and fill the slot
    kCommit,
    kPeek,  // and read the slot
    kRelease,
    kTimedPush,  // variant bit 0: 1 ms instead of 0
    kTimedPop,
    kInspect,  // pending, available, full, empty, stats on every open handle
    kClose,
    kOpen,
    kReopenAll,
    kResize,       // with every handle closed: another file size, an open, the size restored
    kReplace,      // with every handle closed: something else under the name, an open, a fresh ring
    kMismatch,     // an open with other parameters
    kCorruptOpen,  // header words, then an open (the "corrupt before the second open" case)
    kCancel,
    kTimedReserve,  // variant bit 0: 1 ms instead of 0
    kTimedPeek,
    kFillTable,  // the table's free records held by us (or the dead), an open, the table restored
    kOpCount
};

enum class State { Full, Reserved, Abandoned };

struct Entry {
    uint64_t id;
    State state;
    uint64_t position;
};

struct Handle {
    join_shm_queue *q = nullptr;
    bool outstanding = false;
    uint64_t id = 0;        // producer: the id written into the reserved slot; consumer: the peeked one
    uint64_t position = 0;  // consumer: the peeked element's position
    // MPMC consumer: an element peeked and cancelled; this handle's next pop or peek returns it.
    bool held = false;
    uint64_t heldId = 0, heldPosition = 0;
};

class Fuzz {
public:
    Fuzz(const uint8_t *data, size_t size) : in_{data, size} {}
    ~Fuzz() { finish(); }
    Fuzz(const Fuzz &) = delete;
    Fuzz &operator=(const Fuzz &) = delete;

    void run();

private:
    // -- setup and teardown
    void geometry();
    void reopenFile();
    void finish();

    // -- checks
    [[noreturn]] void violation(const char *format, ...) const __attribute__((format(printf, 2, 3)));
    void expectCode(const char *call, int64_t got, std::initializer_list<int64_t> allowed) const;
    void checkSlotPointer(const char *call, const void *p);
    void checkCounts(const char *when);
    bool lonePosition(int role) const {
        return policy_ == JOIN_SHM_SPSC || (policy_ == JOIN_SHM_MPSC && role == JOIN_SHM_CONSUMER);
    }

    // -- the model (meaningful while trusted_)
    uint64_t room() const;
    bool takeModel(const Handle &h, uint64_t &id, uint64_t &position);  // what h's next pop delivers
    void fill(unsigned char *to, uint64_t id) const;
    void expectElement(const char *call, const unsigned char *got, uint64_t id) const;

    // -- segment access of the fuzzer itself
    uint64_t readWord(uint64_t offset, unsigned width) const;
    void writeWord(uint64_t offset, unsigned width, uint64_t value);
    void nastyWrite(bool headerOnly);
    uint64_t nastyValue(uint8_t what, uint64_t current, uint64_t head, uint64_t tail);
    uint64_t recordField(uint64_t index, size_t field) const {
        return kTableOffset + index % layout::kMaxParticipants * kRecordSize + field;
    }
    uint64_t identityAt(uint64_t index) const {
        return readWord(recordField(index, offsetof(layout::Participant, identity)), 8);
    }
    uint32_t generationAt(uint64_t index) const {
        return static_cast<uint32_t>(readWord(recordField(index, offsetof(layout::Participant, generation)), 4));
    }
    // Our pid with another start time: a process that died, whose pid we now have.
    uint64_t deadIdentity() const { return ourIdentity_ + (uint64_t{1} << layout::kIdentityPidBits); }

    // -- handle operations
    Handle &handle(int role, int index) { return role == JOIN_SHM_PRODUCER ? producers_[index] : consumers_[index]; }
    int openHandle(int role, int index);
    void closeHandle(int role, int index);
    void closeAll(bool reopenable[2][2]);
    void reopen(const bool reopenable[2][2]);
    std::vector<int> predictOpen(int role) const;
    enum class Life { Dead, Ours, Maybe };
    Life life(uint64_t identity) const;
    void fillTable(int role, int variant);

    void push(int index, int variant);
    void pop(int index, int variant);
    void pushN(int index, uint64_t n);
    void popN(int index, uint64_t n);
    void reserve(int index, int variant);
    void commit(int index);
    void peek(int index, int variant);
    void release(int index);
    void cancel(int role, int index);
    // -ECANCELED where a side claims through a shared cursor: a peer took a claimed slot over.
    int cancelled(int role) const {
        return (role == JOIN_SHM_PRODUCER ? policy_ != JOIN_SHM_SPSC : policy_ == JOIN_SHM_MPMC) ? -ECANCELED : 0;
    }
    void resize(uint8_t how);
    void replace(uint8_t how);
    void mismatch(uint8_t how);
    void freshRing(const bool reopenable[2][2]);

    Input in_;
    join_shm_policy policy_ = JOIN_SHM_SPSC;
    uint64_t elementSize_ = 1, capacity_ = 1;
    uint64_t stride_ = 0, headerOffset_ = 0, slotsOffset_ = 0, total_ = 0;
    // As the library records us: pid and start time, or the pid alone where /proc cannot tell.
    const uint64_t ourIdentity_ = [] {
        const auto pid = static_cast<uint32_t>(getpid());
        const uint64_t identity = layout::processIdentity(pid);
        return identity ? identity : pid;
    }();
    join_shm_options options_{};
    char name_[64] = {};
    char path_[96] = {};
    int fd_ = -1;
    std::vector<ino_t> inodes_;                              // every file the name has stood for in this input
    std::vector<std::pair<uintptr_t, uintptr_t>> mappings_;  // of the segment, 0 offset, this process
    bool mappingsValid_ = false;
    int longWaits_ = 0;  // 1 ms timeouts used; a cap keeps each input fast

    Handle producers_[2], consumers_[2];

    const bool trace_ = std::getenv("JOIN_SHM_FUZZ_TRACE") != nullptr;  // each step on stderr, for a replay
    bool trusted_ = true;     // nothing but the library has written to the segment
    std::deque<Entry> ring_;  // claimed positions not yet taken by a consumer, oldest first
    uint64_t head_ = 0, tail_ = 0, skipped_ = 0, nextId_ = 1;
};

// ---------------------------------------------------------------------------------------------

void Fuzz::violation(const char *format, ...) const {
    char text[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
    std::fprintf(stderr,
                 "fuzz_segment: VIOLATION: %s\n  ring %s policy %d, element size %" PRIu64 ", capacity %" PRIu64
                 ", %s; last error detail: %s\n",
                 text, name_, policy_, elementSize_, capacity_, trusted_ ? "untouched (model exact)" : "corrupted",
                 join_shm_last_error_detail());
    abortRun();
}

void Fuzz::expectCode(const char *call, int64_t got, std::initializer_list<int64_t> allowed) const {
    for (int64_t a : allowed)
        if (got == a) return;
    std::string list;
    for (int64_t a : allowed)
        list += " " + std::to_string(a);
    violation("%s returned %" PRId64 " (%s), allowed:%s", call, got, join_shm_strerror(static_cast<int>(got)),
              list.c_str());
}

void Fuzz::geometry() {
    layout::Geometry g;
    if (!layout::computeGeometry(elementSize_, capacity_, g)) std::abort();  // 256 x 16 always fits
    stride_ = g.slot_stride;
    headerOffset_ = g.header_offset;
    slotsOffset_ = g.slots_offset;
    total_ = g.total_size;
}

void Fuzz::reopenFile() {
    if (fd_ >= 0) close(fd_);
    fd_ = open(path_, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd_ < 0 || fstat(fd_, &st) != 0) violation("cannot open %s after the library created it", path_);
    if (std::find(inodes_.begin(), inodes_.end(), st.st_ino) == inodes_.end()) inodes_.push_back(st.st_ino);
    mappingsValid_ = false;
}

void Fuzz::finish() {
    for (int role : {JOIN_SHM_PRODUCER, JOIN_SHM_CONSUMER})
        for (int i = 0; i < 2; ++i)
            if (handle(role, i).q) closeHandle(role, i);
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (name_[0]) {
        if (join_shm_unlink(name_) != 0) rmdir(path_);  // kReplace may have left a directory
        unlink(path_);
    }
}

// Every segment mapping of this process, from /proc/self/maps, found by inode: a creator maps its
// file before it has a name. Refreshed after opens and closes.
void Fuzz::checkSlotPointer(const char *call, const void *p) {
    if (!mappingsValid_) {
        mappings_.clear();
        if (FILE *f = std::fopen("/proc/self/maps", "re")) {
            char line[512];
            while (std::fgets(line, sizeof line, f)) {
                unsigned long start = 0, end = 0, offset = 0, inode = 0;
                unsigned major = 0, minor = 0;
                char perms[8];
                if (std::sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major, &minor,
                                &inode) == 7 &&
                    std::find(inodes_.begin(), inodes_.end(), inode) != inodes_.end() && offset == 0)
                    mappings_.emplace_back(start, end);
            }
            std::fclose(f);
        }
        mappingsValid_ = true;
    }
    const auto at = reinterpret_cast<uintptr_t>(p);
    for (const auto &m : mappings_) {
        if (at < m.first + slotsOffset_ || m.second - m.first < total_) continue;
        const uint64_t from = at - m.first - slotsOffset_;
        if (from % stride_ == 0 && from / stride_ < capacity_) return;
    }
    violation("%s gave %p, which is not the element of a slot of any mapping of the ring", call, p);
}

// Counts on every open handle: within [0, capacity] always; exact while the model holds.
void Fuzz::checkCounts(const char *when) {
    for (int role : {JOIN_SHM_PRODUCER, JOIN_SHM_CONSUMER})
        for (int i = 0; i < 2; ++i) {
            join_shm_queue *q = handle(role, i).q;
            if (!q) continue;
            const uint64_t pending = CALL("pending", join_shm_pending(q));
            const uint64_t available = CALL("available", join_shm_available(q));
            const int full = CALL("full", join_shm_full(q)), empty = CALL("empty", join_shm_empty(q));
            join_shm_stats s{};
            s.size = sizeof s;
            const int r = CALL("queue_stats", join_shm_queue_stats(q, &s));
            if (pending > capacity_ || available > capacity_)
                violation("%s: pending %" PRIu64 ", available %" PRIu64 " with capacity %" PRIu64, when, pending,
                          available, capacity_);
            if ((full != 0 && full != 1) || (empty != 0 && empty != 1))
                violation("%s: full() %d, empty() %d", when, full, empty);
            if (r != 0) violation("%s: queue_stats returned %d", when, r);
            if (s.pending > capacity_ || s.capacity != capacity_ || s.element_size != elementSize_ ||
                s.policy != static_cast<uint32_t>(policy_))
                violation("%s: stats say pending %" PRIu64 ", capacity %" PRIu64 ", element size %" PRIu64
                          ", policy %u",
                          when, s.pending, s.capacity, s.element_size, s.policy);
            if (!trusted_) continue;
            // Nobody acts between these calls, so the counts are exact.
            const uint64_t expected = head_ - tail_;
            if (pending != expected || available != capacity_ - expected || full != (expected == capacity_) ||
                empty != (expected == 0) || s.pending != expected)
                violation("%s: pending %" PRIu64 ", available %" PRIu64 ", full %d, empty %d, stats.pending %" PRIu64
                          "; the model has %" PRIu64 " pending",
                          when, pending, available, full, empty, s.pending, expected);
            if (s.pushed != head_ || s.popped != tail_ || s.skipped != skipped_)
                violation("%s: stats say pushed %" PRIu64 ", popped %" PRIu64 ", skipped %" PRIu64
                          "; the model has %" PRIu64 ", %" PRIu64 ", %" PRIu64,
                          when, s.pushed, s.popped, s.skipped, head_, tail_, skipped_);
        }
}

// ---------------------------------------------------------------------------------------------
// The model. ring_ holds every position claimed by a producer and not yet taken by a consumer.
// A slot is reused one lap later, so a producer's next position must be within a lap of the
// oldest position still held: not yet taken, or peeked and not yet released (an MPMC consumer's
// outstanding peek holds its slot while the others move on).

uint64_t Fuzz::room() const {
    uint64_t next = head_;  // the next position a producer claims
    if (policy_ == JOIN_SHM_SPSC)
        for (const Entry &e : ring_)
            if (e.state == State::Reserved) next = e.position + 1;  // not in head_ before its commit
    uint64_t oldest = ring_.empty() ? next : ring_.front().position;
    for (const Handle &c : consumers_) {
        if (c.q && c.outstanding && c.position < oldest) oldest = c.position;
        if (c.q && c.held && c.heldPosition < oldest) oldest = c.heldPosition;
    }
    return capacity_ - (next - oldest);
}

bool Fuzz::takeModel(const Handle &h, uint64_t &id, uint64_t &position) {
    if (h.held) {
        id = h.heldId;
        position = h.heldPosition;
        return true;
    }
    while (!ring_.empty() && ring_.front().state == State::Abandoned) {
        ring_.pop_front();
        ++tail_;
        ++skipped_;
    }
    if (ring_.empty() || ring_.front().state != State::Full) return false;
    id = ring_.front().id;
    position = ring_.front().position;
    ring_.pop_front();
    return true;
}

void Fuzz::fill(unsigned char *to, uint64_t id) const {
    for (uint64_t i = 0; i < elementSize_; ++i)
        to[i] = static_cast<unsigned char>((id * 0x9e3779b97f4a7c15ull) >> (8 * (i % 8)) ^ (i * 29));
}

void Fuzz::expectElement(const char *call, const unsigned char *got, uint64_t id) const {
    unsigned char want[256];
    fill(want, id);
    if (std::memcmp(got, want, elementSize_) != 0)
        violation("%s delivered an element that is not element #%" PRIu64 ", the oldest one", call, id);
}

// ---------------------------------------------------------------------------------------------
// The fuzzer's own writes, through pwrite (no mapping of its own: kResize shrinks the file).

uint64_t Fuzz::readWord(uint64_t offset, unsigned width) const {
    uint64_t v = 0;
    if (pread(fd_, &v, width, static_cast<off_t>(offset)) != static_cast<ssize_t>(width)) return 0;
    return v;
}

void Fuzz::writeWord(uint64_t offset, unsigned width, uint64_t value) {
    if (offset + width > total_) return;
    if (pwrite(fd_, &value, width, static_cast<off_t>(offset)) != static_cast<ssize_t>(width))
        violation("pwrite into the segment failed: %s", std::strerror(errno));
    trusted_ = false;
}

void Fuzz::nastyWrite(bool headerOnly) {
    using layout::Header;
    using layout::Participant;
    using layout::SlotHeader;
    static const uint64_t headerFields[] = {
        offsetof(Header, magic),
        offsetof(Header, version),
        offsetof(Header, policy),
        offsetof(Header, element_size),
        offsetof(Header, capacity),
        offsetof(Header, slot_stride),
        offsetof(Header, slots_offset),
        offsetof(Header, total_size),
        offsetof(Header, state),
        offsetof(Header, creator_pid),
        offsetof(Header, producer_holder),
        offsetof(Header, consumer_holder),
        offsetof(Header, skipped),
        offsetof(Header, head),
        offsetof(Header, tail),
        offsetof(Header, not_empty),
        offsetof(Header, not_full),
        offsetof(Header, creator_identity),
    };
    static const uint64_t recordFields[] = {
        offsetof(Participant, identity),
        offsetof(Participant, generation),
        offsetof(Participant, role),
        offsetof(Participant, intent),
    };
    constexpr size_t kHeaderFields = sizeof headerFields / sizeof headerFields[0];
    const uint8_t where = in_.u8(), what = in_.u8();
    uint64_t offset;
    unsigned width = (where & 0x80) ? 4 : 8;
    const uint64_t pick = where & 0x7f;
    // Header fields, then (past them) a record's fields, or a slot's unless headerOnly: the metadata
    // an open reads.
    const uint64_t kind = headerOnly ? pick % (kHeaderFields + 4) : pick;
    if (kind < kHeaderFields) {
        offset = headerFields[kind];
    } else if (headerOnly || (pick - kHeaderFields) % 7 >= 3) {
        // A record: mostly one of the few our handles hold, sometimes any.
        const uint8_t index = in_.u8();
        offset = recordField(index & 0x80 ? index : index % kLowRecords, recordFields[(pick - kHeaderFields) % 4]);
    } else {
        // A slot: its seq, its claim word, or its element.
        const uint64_t slot = in_.u8() % capacity_, field = (pick - kHeaderFields) % 7;
        offset = slotsOffset_ + slot * stride_ +
                 (field == 2 ? 0 : headerOffset_ + (field == 0 ? offsetof(SlotHeader, seq) : sizeof(uint64_t)));
    }
    if (offset % 8 != 0) width = 4;  // a 32-bit field in the second half of a word
    const uint64_t current = readWord(offset, width);
    const uint64_t head = readWord(offsetof(Header, head), 8), tail = readWord(offsetof(Header, tail), 8);
    writeWord(offset, width, nastyValue(what, current, head, tail));
}

uint64_t Fuzz::nastyValue(uint8_t what, uint64_t current, uint64_t head, uint64_t tail) {
    switch (what % 26) {
        case 0:
            return 0;
        case 1:
            return ~uint64_t{0};
        case 2:
            return current + 1;
        case 3:
            return current - 1;
        // One lap later or earlier, in sequence units and in cursor units.
        case 4:
            return current + 4 * capacity_;
        case 5:
            return current - 4 * capacity_;
        case 6:
            return current + capacity_;
        case 7:
            return current - capacity_;
        // About to wrap, as 64-bit unsigned and as signed differences.
        case 8:
            return ~uint64_t{0} - in_.u8();
        case 9:
            return uint64_t{INT64_MAX} - in_.u8();
        case 10:
            return uint64_t{1} << 63;
        case 11:
            return current ^ (uint64_t{1} << (in_.u8() % 64));
        // Plausible slot states for the positions the cursors name.
        case 12:
            return 4 * head + layout::kFull;
        case 13:
            return 4 * tail + layout::kFull;
        case 14:
            return 4 * tail + layout::kAbandoned;
        case 15:
            return 4 * (tail + capacity_) + layout::kFree;
        case 16:
            return 4 * head + layout::kFree + 4 * capacity_ * in_.u8();
        // Live pids, for the creator word: ours, and init's.
        case 17:
            return static_cast<uint64_t>(getpid());
        case 18:
            return 1;
        // Identities: ours (live), ours with another start time (a process that died and whose pid
        // we now have).
        case 19:
            return ourIdentity_;
        case 20:
            return deadIdentity();
        // Holdings, for the role words: the first record in use's (ours, while the model holds),
        // and the one the next open will take (a free record's next generation).
        case 21:
        case 22:
            for (uint64_t i = 0; i < layout::kMaxParticipants; ++i) {
                const bool inUse = identityAt(i) != 0;
                if (inUse == (what % 26 == 21)) {
                    const uint32_t generation = (generationAt(i) + (inUse ? 0 : 1)) & layout::kGenerationMask;
                    return layout::holdingOf(static_cast<uint32_t>(i), generation ? generation : 1);
                }
            }
            return 0;
        // Intents covering the positions the cursors name, on either side.
        case 23:
            return layout::intentFor(head - in_.u8() % 2, false);
        case 24:
            return layout::intentFor(tail, true);
        default:
            return in_.u64();
    }
}

// ---------------------------------------------------------------------------------------------
// Opening. What an open may return follows from the file as it is now: its size, the header
// fields attach validates, the participant table (every handle takes a record) and whether the
// role is held.

// Whether an identity (pid | start time << 22) names a live process, as far as the fuzzer tells
// without reading /proc: this process (its start time ours, or unknown), dead (pid 0, no such pid,
// or our pid with another start time: the pid was reused), or maybe (another process: alive, a
// zombie, or a pid reused by a process with another start time, all of which the library tells
// apart and the fuzzer does not).
Fuzz::Life Fuzz::life(uint64_t identity) const {
    const uint64_t pid = identity & layout::kIdentityPidMask, start = identity >> layout::kIdentityPidBits;
    const uint64_t ourStart = ourIdentity_ >> layout::kIdentityPidBits;
    if (pid == 0) return Life::Dead;
    if (pid == static_cast<uint64_t>(getpid()))
        return start == 0 || ourStart == 0 || start == ourStart ? Life::Ours : Life::Dead;
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return Life::Dead;
    return Life::Maybe;
}

std::vector<int> Fuzz::predictOpen(int role) const {
    using layout::Header;
    struct stat st;
    if (stat(path_, &st) != 0 && errno == ENOENT) return {0};  // creating the ring (anew, after a stale one)
    if (fstat(fd_, &st) != 0) return {0};
    if (static_cast<uint64_t>(st.st_size) < sizeof(Header) || readWord(offsetof(Header, magic), 8) != layout::kMagic ||
        readWord(offsetof(Header, version), 4) != layout::kLayoutVersion)
        return {-EPROTO};
    std::vector<int> allowed;
    bool valid = true;
    const auto state = static_cast<uint32_t>(readWord(offsetof(Header, state), 4));
    if (state != static_cast<uint32_t>(layout::State::Ready) &&
        state != static_cast<uint32_t>(layout::State::Initialising))
        return {-EPROTO};
    if (state == static_cast<uint32_t>(layout::State::Initialising)) {
        // Still initialising: the open waits for it and gives up, unless its creator is dead; then
        // nobody can hold it, and the open replaces it with a fresh ring. The creator is its
        // identity when that names creator_pid, else creator_pid alone.
        const uint64_t identity = readWord(offsetof(Header, creator_identity), 8);
        const uint64_t pid = readWord(offsetof(Header, creator_pid), 4);
        const Life creator = (identity & layout::kIdentityPidMask) == pid ? life(identity)
                             : pid > layout::kIdentityPidMask             ? Life::Dead
                                                                          : life(pid);
        if (creator == Life::Dead) return {0, -ETIMEDOUT};  // -ETIMEDOUT: the 2 ms ran out around the replacement
        if (creator == Life::Ours) return {-ETIMEDOUT};
        return {-ETIMEDOUT, 0};
    }
    if (readWord(offsetof(Header, policy), 4) != static_cast<uint32_t>(policy_) ||
        readWord(offsetof(Header, element_size), 8) != elementSize_ ||
        readWord(offsetof(Header, capacity), 8) != capacity_) {
        allowed.push_back(-EINVAL);
        valid = false;
    }
    if (readWord(offsetof(Header, slot_stride), 8) != stride_ ||
        readWord(offsetof(Header, slots_offset), 8) != slotsOffset_ ||
        readWord(offsetof(Header, total_size), 8) != total_ || static_cast<uint64_t>(st.st_size) != total_) {
        allowed.push_back(-EPROTO);
        valid = false;
    }
    if (!valid) return allowed;

    // The table: the open takes the lowest free record and starts its next generation; with none
    // free, a record whose holder is dead (once its intent is settled, which depends on the slots:
    // the fuzzer does not say which), else -EBUSY.
    uint64_t joined = layout::kMaxParticipants;  // none known
    bool maybeFull = true, full = true;
    for (uint64_t i = 0; i < layout::kMaxParticipants && joined == layout::kMaxParticipants; ++i) {
        const uint64_t identity = identityAt(i);
        if (identity == 0) {
            joined = i;
            maybeFull = full = false;
        } else if (life(identity) != Life::Ours) {
            full = false;
        }
    }
    if (full) return {-EBUSY};
    std::vector<int> result = {0};
    if (maybeFull) result.push_back(-EBUSY);

    // The role: -EBUSY while its word names a holding whose record is in that generation and held
    // by a live process (this one included: our own other handle, or the record just joined).
    const bool single = role == JOIN_SHM_PRODUCER ? policy_ == JOIN_SHM_SPSC : policy_ != JOIN_SHM_MPMC;
    if (!single) return result;
    const auto holding = static_cast<uint32_t>(
        readWord(role == JOIN_SHM_PRODUCER ? offsetof(Header, producer_holder) : offsetof(Header, consumer_holder), 4));
    const uint32_t index = layout::holdingIndex(holding), generation = layout::holdingGeneration(holding);
    if (holding == 0 || generation == 0 || index >= layout::kMaxParticipants) return result;
    uint64_t identity = identityAt(index);
    uint32_t current = generationAt(index) & layout::kGenerationMask;
    if (index == joined) {
        identity = ourIdentity_;
        current = (current + 1) & layout::kGenerationMask;
        if (current == 0) current = 1;
    }
    if (current != generation || identity == 0) return result;
    switch (life(identity)) {
        case Life::Dead:
            return result;
        case Life::Ours:
            return {-EBUSY};
        case Life::Maybe:
            break;
    }
    if (!maybeFull) result.push_back(-EBUSY);
    return result;
}

int Fuzz::openHandle(int role, int index) {
    Handle &h = handle(role, index);
    if (h.q) return 0;
    struct stat named, ours;
    if (fd_ >= 0 && stat(path_, &named) == 0 && fstat(fd_, &ours) == 0 && named.st_ino != ours.st_ino) reopenFile();
    const std::vector<int> allowed = predictOpen(role);
    join_shm_queue *q = nullptr;
    const int r = CALL("queue_open", join_shm_queue_open_ex(&q, name_, policy_, static_cast<join_shm_role>(role),
                                                            elementSize_, capacity_, &options_));
    if (std::find(allowed.begin(), allowed.end(), r) == allowed.end()) {
        std::string list;
        for (int a : allowed)
            list += " " + std::to_string(a);
        violation("open as %s returned %d (%s), the segment as it is allows:%s",
                  role == JOIN_SHM_PRODUCER ? "producer" : "consumer", r, join_shm_strerror(r), list.c_str());
    }
    if ((r == 0) != (q != nullptr)) violation("open returned %d with handle %p", r, static_cast<void *>(q));
    // The open may have replaced a dead creator's segment, or created one where an earlier open
    // removed such a segment and then ran out of time: go on with the file the name stands for.
    if (r == 0 && stat(path_, &named) == 0 && (fstat(fd_, &ours) != 0 || named.st_ino != ours.st_ino)) reopenFile();
    mappingsValid_ = false;
    h = Handle{};
    h.q = q;
    return r;
}

void Fuzz::closeHandle(int role, int index) {
    Handle &h = handle(role, index);
    if (!h.q) return;
    if (h.outstanding && trusted_) {
        if (role == JOIN_SHM_PRODUCER) {
            // The lone SPSC producer claimed nothing in the segment: the position stays for the
            // next element. Shared producers claimed it: consumers skip it.
            for (auto it = ring_.rbegin(); it != ring_.rend(); ++it)
                if (it->id == h.id && it->state == State::Reserved) {
                    if (policy_ == JOIN_SHM_SPSC)
                        ring_.erase(std::next(it).base());
                    else
                        it->state = State::Abandoned;
                    break;
                }
        } else if (lonePosition(role)) {
            ring_.push_front({h.id, State::Full, h.position});  // not taken: still the oldest
        }
        // An MPMC consumer's peeked element counts as consumed (as one it held after a cancel).
    }
    CALL("queue_close", (join_shm_queue_close(h.q), 0));
    h = Handle{};
    mappingsValid_ = false;
}

void Fuzz::closeAll(bool reopenable[2][2]) {
    for (int r = 0; r < 2; ++r)
        for (int i = 0; i < 2; ++i) {
            const int role = r == 0 ? JOIN_SHM_PRODUCER : JOIN_SHM_CONSUMER;
            reopenable[r][i] = handle(role, i).q != nullptr;
            closeHandle(role, i);
        }
}

void Fuzz::reopen(const bool reopenable[2][2]) {
    for (int r = 0; r < 2; ++r)
        for (int i = 0; i < 2; ++i)
            if (reopenable[r][i]) openHandle(r == 0 ? JOIN_SHM_PRODUCER : JOIN_SHM_CONSUMER, i);
}

// ---------------------------------------------------------------------------------------------
// Calls. Codes: -EINVAL exactly while the handle has a zero-copy slot outstanding; otherwise the
// call's own results, and -EPROTO, which a corrupt segment may earn.

void Fuzz::push(int index, int variant) {
    Handle &h = producers_[index];
    if (!h.q) return;
    unsigned char element[256];
    const uint64_t id = nextId_;
    fill(element, id);
    const bool timed = variant >= 0;
    const int64_t timeout = variant > 0 && longWaits_++ < 8 ? 1'000'000 : 0;
    const int r = timed ? CALL("timed_push", join_shm_timed_push(h.q, element, timeout))
                        : CALL("try_push", join_shm_try_push(h.q, element));
    const int busy = timed ? -ETIMEDOUT : -EAGAIN;
    const char *call = timed ? "timed_push" : "try_push";
    if (h.outstanding) return expectCode(call, r, {-EINVAL});
    if (!trusted_) return expectCode(call, r, {0, busy, -EPROTO, cancelled(JOIN_SHM_PRODUCER)});
    if (room() > 0) {
        expectCode(call, r, {0});
        ring_.push_back({id, State::Full, head_});
        ++head_;
        ++nextId_;
    } else {
        expectCode(call, r, {busy});
    }
}

void Fuzz::pop(int index, int variant) {
    Handle &h = consumers_[index];
    if (!h.q) return;
    unsigned char element[256];
    const bool timed = variant >= 0;
    const int64_t timeout = variant > 0 && longWaits_++ < 8 ? 1'000'000 : 0;
    const int r = timed ? CALL("timed_pop", join_shm_timed_pop(h.q, element, timeout))
                        : CALL("try_pop", join_shm_try_pop(h.q, element));
    const int busy = timed ? -ETIMEDOUT : -EAGAIN;
    const char *call = timed ? "timed_pop" : "try_pop";
    if (h.outstanding) return expectCode(call, r, {-EINVAL});
    if (!trusted_) return expectCode(call, r, {0, busy, -EPROTO, cancelled(JOIN_SHM_CONSUMER)});
    uint64_t id = 0, position = 0;
    if (takeModel(h, id, position)) {
        expectCode(call, r, {0});
        expectElement(call, element, id);
        if (h.held)
            h.held = false;  // its tail step was taken by the peek
        else
            ++tail_;
    } else {
        expectCode(call, r, {busy});
    }
}

void Fuzz::pushN(int index, uint64_t n) {
    Handle &h = producers_[index];
    if (!h.q) return;
    unsigned char elements[4 * 256];
    for (uint64_t i = 0; i < n; ++i)
        fill(elements + i * elementSize_, nextId_ + i);
    const int64_t r = CALL("try_push_n", join_shm_try_push_n(h.q, elements, n));
    if (h.outstanding) return expectCode("try_push_n", r, {-EINVAL});
    if (!trusted_) {
        if (r >= 1 && static_cast<uint64_t>(r) <= n) return;
        return expectCode("try_push_n", r, {-EAGAIN, -EPROTO, cancelled(JOIN_SHM_PRODUCER)});
    }
    const uint64_t moved = std::min(n, room());
    if (moved == 0) return expectCode("try_push_n", r, {-EAGAIN});
    expectCode("try_push_n", r, {static_cast<int64_t>(moved)});
    for (uint64_t i = 0; i < moved; ++i)
        ring_.push_back({nextId_++, State::Full, head_++});
}

void Fuzz::popN(int index, uint64_t n) {
    Handle &h = consumers_[index];
    if (!h.q) return;
    unsigned char elements[4 * 256];
    const int64_t r = CALL("try_pop_n", join_shm_try_pop_n(h.q, elements, n));
    if (h.outstanding) return expectCode("try_pop_n", r, {-EINVAL});
    if (!trusted_) {
        if (r >= 1 && static_cast<uint64_t>(r) <= n) return;
        return expectCode("try_pop_n", r, {-EAGAIN, -EPROTO, cancelled(JOIN_SHM_CONSUMER)});
    }
    uint64_t ids[4], position = 0, moved = 0;
    if (h.held) {
        // A held element comes alone: the batch ends there.
        takeModel(h, ids[0], position);
        expectCode("try_pop_n", r, {1});
        expectElement("try_pop_n", elements, ids[0]);
        h.held = false;
        return;
    }
    // Abandoned positions are skipped before the first element, not between elements: a batch
    // ends at one (the run a consumer claims is contiguous).
    while (moved < n && (moved == 0 || (!ring_.empty() && ring_.front().state == State::Full)) &&
           takeModel(h, ids[moved], position))
        ++moved;
    if (moved == 0) return expectCode("try_pop_n", r, {-EAGAIN});
    expectCode("try_pop_n", r, {static_cast<int64_t>(moved)});
    for (uint64_t i = 0; i < moved; ++i)
        expectElement("try_pop_n", elements + i * elementSize_, ids[i]);
    tail_ += moved;
}

void Fuzz::reserve(int index, int variant) {
    Handle &h = producers_[index];
    if (!h.q) return;
    void *slot = nullptr;
    const bool timed = variant >= 0;
    const int64_t timeout = variant > 0 && longWaits_++ < 8 ? 1'000'000 : 0;
    const char *call = timed ? "timed_reserve" : "try_reserve";
    const int r = timed ? CALL("timed_reserve", join_shm_timed_reserve(h.q, &slot, timeout))
                        : CALL("try_reserve", join_shm_try_reserve(h.q, &slot));
    const int busy = timed ? -ETIMEDOUT : -EAGAIN;
    if (h.outstanding) return expectCode(call, r, {-EINVAL});
    if (trusted_)
        expectCode(call, r, {room() > 0 ? 0 : busy});
    else
        expectCode(call, r, {0, busy, -EPROTO});
    if (r != 0) return;
    checkSlotPointer(call, slot);
    h.outstanding = true;
    h.id = nextId_++;
    fill(static_cast<unsigned char *>(slot), h.id);  // the whole element must be writable
    if (trusted_) {
        ring_.push_back({h.id, State::Reserved, head_});
        if (policy_ != JOIN_SHM_SPSC) ++head_;  // claimed in the shared cursor at once
    }
}

void Fuzz::commit(int index) {
    Handle &h = producers_[index];
    if (!h.q) return;
    const int r = CALL("commit", join_shm_commit(h.q));
    if (h.outstanding && !trusted_)
        expectCode("commit", r, {0, cancelled(JOIN_SHM_PRODUCER)});
    else
        expectCode("commit", r, {h.outstanding ? 0 : -EINVAL});
    if (!h.outstanding) return;
    h.outstanding = false;
    if (!trusted_) return;
    for (Entry &e : ring_)
        if (e.id == h.id && e.state == State::Reserved) e.state = State::Full;
    if (policy_ == JOIN_SHM_SPSC) ++head_;  // the lone producer's cursor moves on publishing
}

void Fuzz::peek(int index, int variant) {
    Handle &h = consumers_[index];
    if (!h.q) return;
    const void *slot = nullptr;
    const bool timed = variant >= 0;
    const int64_t timeout = variant > 0 && longWaits_++ < 8 ? 1'000'000 : 0;
    const char *call = timed ? "timed_peek" : "try_peek";
    const int r = timed ? CALL("timed_peek", join_shm_timed_peek(h.q, &slot, timeout))
                        : CALL("try_peek", join_shm_try_peek(h.q, &slot));
    const int busy = timed ? -ETIMEDOUT : -EAGAIN;
    if (h.outstanding) return expectCode(call, r, {-EINVAL});
    uint64_t id = 0, position = 0;
    const bool wasHeld = h.held;
    const bool expected = trusted_ && takeModel(h, id, position);
    h.held = false;
    if (trusted_)
        expectCode(call, r, {expected ? 0 : busy});
    else
        expectCode(call, r, {0, busy, -EPROTO});
    if (r != 0) return;
    checkSlotPointer(call, slot);
    unsigned char copy[256];
    std::memcpy(copy, slot, elementSize_);  // the whole element must be readable
    h.outstanding = true;
    h.id = id;
    h.position = position;
    if (trusted_) {
        expectElement(call, copy, id);
        if (!lonePosition(JOIN_SHM_CONSUMER) && !wasHeld) ++tail_;  // claimed in the shared cursor at once
    }
}

void Fuzz::release(int index) {
    Handle &h = consumers_[index];
    if (!h.q) return;
    const int r = CALL("release", join_shm_release(h.q));
    if (h.outstanding && !trusted_)
        expectCode("release", r, {0, cancelled(JOIN_SHM_CONSUMER)});
    else
        expectCode("release", r, {h.outstanding ? 0 : -EINVAL});
    if (!h.outstanding) return;
    h.outstanding = false;
    if (trusted_ && lonePosition(JOIN_SHM_CONSUMER)) ++tail_;
}

// Gives the outstanding slot back: a shared producer's position is abandoned, the lone producer's
// kept for its next element; a lone consumer's element stays the oldest, an MPMC consumer's is held
// for this handle's next pop or peek.
void Fuzz::cancel(int role, int index) {
    Handle &h = handle(role, index);
    if (!h.q) return;
    const int r = CALL("cancel", join_shm_cancel(h.q));
    expectCode("cancel", r, {h.outstanding ? 0 : -EINVAL});
    if (!h.outstanding) return;
    h.outstanding = false;
    if (!trusted_) return;
    if (role == JOIN_SHM_PRODUCER) {
        for (auto it = ring_.rbegin(); it != ring_.rend(); ++it)
            if (it->id == h.id && it->state == State::Reserved) {
                if (policy_ == JOIN_SHM_SPSC)
                    ring_.erase(std::next(it).base());
                else
                    it->state = State::Abandoned;
                break;
            }
    } else if (lonePosition(role)) {
        ring_.push_front({h.id, State::Full, h.position});
    } else {
        h.held = true;
        h.heldId = h.id;
        h.heldPosition = h.position;
    }
}

// Another size under the name while nobody has it open: attach must refuse it (-EPROTO) without
// touching memory beyond the end. The size is then restored (with zeros past a shrink).
void Fuzz::resize(uint8_t how) {
    bool reopenable[2][2];
    closeAll(reopenable);
    uint64_t size;
    switch (how % 6) {
        case 0:
            size = 0;
            break;
        case 1:
            size = kHeaderSize - 1;
            break;
        case 2:
            size = total_ - 1;
            break;
        case 3:
            size = total_ + 1;
            break;
        case 4:
            size = total_ + 4096;
            break;
        default:
            size = in_.u16() % (2 * total_);
            break;
    }
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0) violation("ftruncate: %s", std::strerror(errno));
    trusted_ = false;
    openHandle(JOIN_SHM_CONSUMER, 0);
    closeHandle(JOIN_SHM_CONSUMER, 0);
    if (ftruncate(fd_, static_cast<off_t>(total_)) != 0) violation("ftruncate: %s", std::strerror(errno));
    reopen(reopenable);
}

// Something else under the name: a FIFO, a directory, a symbolic link, a short file, a header
// without slots. Opens must fail (any -errno) or, for a file that passes validation, work. Then a
// fresh ring is created under the name and the model starts over.
void Fuzz::replace(uint8_t how) {
    bool reopenable[2][2];
    closeAll(reopenable);
    unsigned char header[kHeaderSize] = {};
    if (pread(fd_, header, sizeof header, 0) < 0) violation("pread: %s", std::strerror(errno));
    unlink(path_);
    int made = 0;
    switch (how % 5) {
        case 0:
            made = mkfifo(path_, 0600);
            break;
        case 1:
            made = mkdir(path_, 0700);
            break;
        case 2:
            made = symlink("/dev/null", path_);
            break;
        default: {
            const int fd = open(path_, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            made = fd < 0 ? -1 : 0;
            if (fd >= 0) {
                // A copy of the header; 3: nothing else (too short), 4: as many zero bytes as
                // the slots need (valid geometry, all slots "free for position 0").
                made = pwrite(fd, header, sizeof header, 0) == static_cast<ssize_t>(sizeof header) ? 0 : -1;
                if (how % 5 == 4 && ftruncate(fd, static_cast<off_t>(total_)) != 0) made = -1;
                close(fd);
            }
        }
    }
    if (made != 0) violation("cannot put a replacement at %s: %s", path_, std::strerror(errno));
    join_shm_queue *q = nullptr;
    const int r = CALL("queue_open", join_shm_queue_open_ex(&q, name_, policy_, JOIN_SHM_CONSUMER, elementSize_,
                                                            capacity_, &options_));
    if (r > 0 || (r == 0) != (q != nullptr)) violation("open of a replaced segment returned %d", r);
    // A header that never became ready (and whose creator is gone) is replaced before its size
    // matters: then even the short file gives way to a fresh ring.
    uint32_t state = 0;
    std::memcpy(&state, header + offsetof(layout::Header, state), sizeof state);
    const bool stale = state == static_cast<uint32_t>(layout::State::Initialising);
    if (r == 0 && (how % 5 < 3 || (how % 5 == 3 && !stale)))
        violation("open accepted a %s", how % 5 == 3 ? "short file" : "non-regular file");
    if (q) {
        // Zeroed slots: whatever they say, calls return.
        unsigned char element[256];
        const void *slot = nullptr;
        expectCode("try_pop", CALL("try_pop", join_shm_try_pop(q, element)), {0, -EAGAIN, -EPROTO});
        if (CALL("try_peek", join_shm_try_peek(q, &slot)) == 0) {
            std::memcpy(element, slot, elementSize_);
            expectCode("release", CALL("release", join_shm_release(q)), {0});
        }
        CALL("queue_close", (join_shm_queue_close(q), 0));
    }
    if (how % 5 == 1 ? rmdir(path_) != 0 : unlink(path_) != 0)
        violation("cannot remove the replacement: %s", std::strerror(errno));
    freshRing(reopenable);
}

// With every handle closed and nothing under the name: a new ring, and the model starts over.
void Fuzz::freshRing(const bool reopenable[2][2]) {
    ring_.clear();
    head_ = tail_ = skipped_ = 0;
    trusted_ = true;
    join_shm_queue *creator = nullptr;
    const int c = CALL("queue_open", join_shm_queue_open_ex(&creator, name_, policy_, JOIN_SHM_PRODUCER, elementSize_,
                                                            capacity_, &options_));
    if (c != 0) violation("creating a fresh ring returned %d", c);
    reopenFile();
    CALL("queue_close", (join_shm_queue_close(creator), 0));
    reopen(reopenable);
}

// Other parameters: -EINVAL from an intact header. A corrupt one may happen to match them.
void Fuzz::mismatch(uint8_t how) {
    int policy = policy_;
    uint64_t elementSize = elementSize_, capacity = capacity_;
    switch (how % 4) {
        case 0:
            policy = policy_ % 3 + 1;
            break;
        case 1:
            elementSize = elementSize_ % 256 + 1;
            break;
        case 2:
            capacity = capacity_ % 16 + 1;
            break;
        default:
            // Same geometry, other element size: only the header's own field tells them apart.
            elementSize = (elementSize_ + 7) / 8 * 8 == elementSize_ ? elementSize_ - 1 : (elementSize_ + 7) / 8 * 8;
            if (elementSize == 0) elementSize = 8;
    }
    if (policy == policy_ && elementSize == elementSize_ && capacity == capacity_) return;  // capacity 16 + 1
    const int role = how & 0x10 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER;
    join_shm_queue *q = nullptr;
    const int r =
        CALL("queue_open", join_shm_queue_open_ex(&q, name_, static_cast<join_shm_policy>(policy),
                                                  static_cast<join_shm_role>(role), elementSize, capacity, &options_));
    if (trusted_)
        expectCode("mismatched open", r, {-EINVAL});
    else
        expectCode("mismatched open", r, {0, -EINVAL, -EPROTO, -ETIMEDOUT, -EBUSY});
    if (q) CALL("queue_close", (join_shm_queue_close(q), 0));
    mappingsValid_ = false;
    struct stat named, ours;
    if (stat(path_, &named) == 0 && fstat(fd_, &ours) == 0 && named.st_ino != ours.st_ino) {
        // The open replaced a dead creator's segment with one of its own parameters: put ours back.
        bool reopenable[2][2];
        closeAll(reopenable);
        unlink(path_);
        freshRing(reopenable);
    }
}

// The table's free records taken by live identities (ours) or, with variant bit 1, by the dead
// (our pid with another start time), all but up to two of them: an open then finds no record
// (-EBUSY, exactly, while the model holds), a free one, or one whose holder is dead. Then the
// forged records are freed again. Forging live ones changes nothing the library acts on, so the
// model stays exact; dead ones may have their intents settled by the open, which it does not model.
void Fuzz::fillTable(int role, int variant) {
    struct stat named, ours;
    if (stat(path_, &named) != 0 || fstat(fd_, &ours) != 0 || named.st_ino != ours.st_ino) return;
    const bool dead = variant & 2;
    uint64_t spare = in_.u8() % 3;
    std::vector<uint64_t> forged;
    for (uint64_t i = layout::kMaxParticipants; i-- > 0;) {
        if (identityAt(i) != 0) continue;
        if (spare > 0) {
            --spare;  // the highest free records stay free
            continue;
        }
        const uint64_t identity = dead ? deadIdentity() : ourIdentity_;
        if (pwrite(fd_, &identity, sizeof identity, static_cast<off_t>(recordField(i, 0))) != sizeof identity)
            violation("pwrite into the table failed: %s", std::strerror(errno));
        forged.push_back(i);
    }
    if (dead && !forged.empty()) trusted_ = false;
    const std::vector<int> allowed = predictOpen(role);
    join_shm_queue *q = nullptr;
    const int r = CALL("queue_open", join_shm_queue_open_ex(&q, name_, policy_, static_cast<join_shm_role>(role),
                                                            elementSize_, capacity_, &options_));
    if (std::find(allowed.begin(), allowed.end(), r) == allowed.end()) {
        std::string list;
        for (int a : allowed)
            list += " " + std::to_string(a);
        violation("open with %zu records forged (%s) returned %d (%s), the table allows:%s", forged.size(),
                  dead ? "dead" : "live", r, join_shm_strerror(r), list.c_str());
    }
    if (trace_)
        std::fprintf(stderr, "  %zu free records taken by %s identities: open as %s returned %d\n", forged.size(),
                     dead ? "dead" : "live", role == JOIN_SHM_PRODUCER ? "producer" : "consumer", r);
    if (q) CALL("queue_close", (join_shm_queue_close(q), 0));
    mappingsValid_ = false;
    if (stat(path_, &named) == 0 && named.st_ino != ours.st_ino) {
        // The open replaced the segment (a corrupt header said initialising): go on with that one.
        reopenFile();
        return;
    }
    const uint64_t freed = 0;
    for (uint64_t i : forged)
        if (pwrite(fd_, &freed, sizeof freed, static_cast<off_t>(recordField(i, 0))) != sizeof freed)
            violation("pwrite into the table failed: %s", std::strerror(errno));
}

// ---------------------------------------------------------------------------------------------

void Fuzz::run() {
    policy_ = static_cast<join_shm_policy>(1 + in_.u8() % 3);
    elementSize_ = 1 + uint64_t{in_.u8()};
    capacity_ = 1 + uint64_t{in_.u8()} % 16;
    const uint8_t flags = in_.u8();
    geometry();
    options_.size = sizeof options_;
    options_.open_timeout_ns = 2'000'000;  // a header stuck "initialising" costs 2 ms, not 1 s
    options_.spin_ns = (flags & 2) ? -1 : 0;

    static unsigned counter = 0;
    std::snprintf(name_, sizeof name_, "jshm-fuzz-%d-%u", static_cast<int>(getpid()), counter++);
    std::snprintf(path_, sizeof path_, "/dev/shm/%s", name_);
    std::memcpy(segmentPath, path_, sizeof segmentPath);
    join_shm_unlink(name_);

    if (openHandle(JOIN_SHM_PRODUCER, 0) != 0) violation("creating the ring failed");
    reopenFile();
    if (flags & 1) {
        // The header corrupted before anybody else attaches.
        for (int n = 1 + in_.u8() % 4; n > 0; --n)
            nastyWrite(true);
    }
    openHandle(JOIN_SHM_CONSUMER, 0);
    if (flags & 4) openHandle(JOIN_SHM_PRODUCER, 1);
    if (flags & 8) openHandle(JOIN_SHM_CONSUMER, 1);

    for (int steps = 0; !in_.done() && steps < 256; ++steps) {
        const uint8_t byte = in_.u8();
        const int index = (byte >> 5) & 1, variant = byte >> 6;
        if (trace_)
            std::fprintf(stderr,
                         "step %d: op %d, handle %d, variant %d; model: %s, head %" PRIu64 ", tail %" PRIu64
                         ", %zu in the ring, room %" PRIu64 "\n",
                         steps, (byte & 31) % kOpCount, index, variant, trusted_ ? "exact" : "off", head_, tail_,
                         ring_.size(), room());
        switch (static_cast<Op>((byte & 31) % kOpCount)) {
            case kWriteRaw: {
                // The header, the records our handles hold, or the slots: the rest of the table is
                // free records, which nastyWrite reaches.
                const uint64_t low = kLowRecords * kRecordSize, slots = total_ - slotsOffset_;
                uint64_t offset = in_.u32() % (kTableOffset + low + slots);
                if (offset >= kTableOffset + low) offset += kTableSize - low;
                const unsigned length = 1 + in_.u8() % 16;
                unsigned char bytes[16];
                for (unsigned i = 0; i < length; ++i)
                    bytes[i] = in_.u8();
                const size_t n = static_cast<size_t>(std::min<uint64_t>(length, total_ - offset));
                if (pwrite(fd_, bytes, n, static_cast<off_t>(offset)) != static_cast<ssize_t>(n))
                    violation("pwrite: %s", std::strerror(errno));
                trusted_ = false;
                break;
            }
            case kWriteWord:
                nastyWrite(false);
                break;
            case kPush:
                push(index, -1);
                break;
            case kPop:
                pop(index, -1);
                break;
            case kPushN:
                pushN(index, 1 + static_cast<uint64_t>(variant));
                break;
            case kPopN:
                popN(index, 1 + static_cast<uint64_t>(variant));
                break;
            case kReserve:
                reserve(index, -1);
                break;
            case kCommit:
                commit(index);
                break;
            case kPeek:
                peek(index, -1);
                break;
            case kCancel:
                cancel(variant & 1 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER, index);
                break;
            case kTimedReserve:
                reserve(index, variant & 1);
                break;
            case kTimedPeek:
                peek(index, variant & 1);
                break;
            case kRelease:
                release(index);
                break;
            case kTimedPush:
                push(index, variant & 1);
                break;
            case kTimedPop:
                pop(index, variant & 1);
                break;
            case kInspect:
                break;  // counts are checked after every step
            case kClose:
                closeHandle(variant & 1 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER, index);
                break;
            case kOpen:
                openHandle(variant & 1 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER, index);
                break;
            case kReopenAll: {
                bool reopenable[2][2];
                closeAll(reopenable);
                reopen(reopenable);
                break;
            }
            case kResize:
                resize(in_.u8());
                break;
            case kReplace:
                replace(in_.u8());
                break;
            case kMismatch:
                mismatch(in_.u8());
                break;
            case kFillTable:
                fillTable(variant & 1 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER, variant);
                break;
            case kCorruptOpen: {
                const int role = variant & 1 ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER;
                closeHandle(role, index);
                for (int n = 1 + (variant >> 1); n > 0; --n)
                    nastyWrite(true);
                openHandle(role, index);
                break;
            }
            default:
                break;
        }
        checkCounts("after a step");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    startWatchdog();
    Fuzz fuzz(data, size);
    fuzz.run();
    return 0;
}
