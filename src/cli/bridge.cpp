// join-shm bridge: one ring's elements as NATS messages, for rings on different hosts.
//
//   join-shm bridge out NAME --nats URL --subject SUBJECT [--jetstream STREAM] RING-OPTIONS
//   join-shm bridge in  NAME --nats URL --subject SUBJECT [--jetstream STREAM --durable CONSUMER] RING-OPTIONS
//   RING-OPTIONS: --policy spsc|mpsc|mpmc --size BYTES --capacity N [--count N] [--stats SECONDS]
//
// Core NATS (no --jetstream) is at most once: `out` pops and publishes, `in` pushes what it
// receives; messages published while no `in` listens, or beyond its pending limit, are gone.
// JetStream is at least once, and `out` never sends one element twice: it moves each element
// from the ring into an outbox file that outlives it, publishes it with a message id naming its
// ring position, and keeps it there until the stream acked it (a window of them in flight); a
// re-send after a kill carries the same id, which the stream's duplicate window drops.
// `in` pulls at most as many messages as the ring has room for and acks each after its push.
#include "bridge.hpp"

#include <join/shm.h>
#include <nats/nats.h>

#include <fmt/core.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace join::shm::cli {
namespace {

constexpr int kOk = 0, kError = 1, kUsage = 2;

constexpr const char *kUsageText = R"(Usage:
  join-shm bridge out NAME --nats URL --subject SUBJECT [--jetstream STREAM] RING-OPTIONS
  join-shm bridge in  NAME --nats URL --subject SUBJECT [--jetstream STREAM --durable CONSUMER] RING-OPTIONS
  RING-OPTIONS: --policy spsc|mpsc|mpmc --size BYTES --capacity N [--count N] [--stats SECONDS]

out: consumes ring NAME and publishes each element as one message to SUBJECT.
in:  pushes each message of SUBJECT into ring NAME (created if needed) as a producer.
Without --jetstream: core NATS, at most once. With it: the stream STREAM (created to capture
SUBJECT if missing), nothing lost across kills and server restarts; out never sends an element
twice (SPSC and MPSC rings only; it keeps what the stream has not acked yet in
/dev/shm/NAME.STREAM.outbox); in may repeat the messages it pushed but whose ack the server
had not stored. Messages whose size is not the element size are dropped and counted.
--count N exits after N messages; SIGINT/SIGTERM finish the message in hand; --stats SECONDS
prints moved, dropped and reconnect counts to stderr every SECONDS and at exit.
)";

// Core NATS: elements popped, or messages pushed, at once at most: 256, or 1 MiB of them.
uint64_t coreBatch(uint64_t size) { return std::clamp<uint64_t>((1 << 20) / size, 1, 256); }
// Fetched JetStream messages in hand at most (the ring's free space bounds it first).
constexpr int kMaxBatch = 128;
// Core NATS: messages the client library queues for `in` while the ring is full; past either
// limit it drops them (and counts them: slow consumer). This is what bounds `in`'s memory.
constexpr int kPendingMessages = 16384;
constexpr int kPendingBytes = 4 << 20;
// How long the server waits for `in`'s ack before redelivering; `in` reports progress on a message
// it cannot push yet every second, so only a dead bridge lets it expire.
constexpr int64_t kAckWaitNs = 5'000'000'000;
// The stream's duplicate window: an `out` restarted within it never re-sends an element.
constexpr int64_t kDuplicateWindowNs = 120'000'000'000;
constexpr int kSliceMs = 100;  // every wait is cut into slices so that signals are seen

volatile sig_atomic_t gStop = 0;
void onSignal(int) { gStop = 1; }

// Relaxed: a statistic written by the client library's thread, read for printing; orders nothing.
std::atomic<uint64_t> gReconnects{0};
void onReconnected(natsConnection *, void *) { gReconnects.fetch_add(1, std::memory_order_relaxed); }
// Slow-consumer and asynchronous errors: counted through the subscription, not printed per message.
void onAsyncError(natsConnection *, natsSubscription *, natsStatus, void *) {}

struct Options {
    bool out = false;
    std::string name, url, subject, stream, durable;
    join_shm_policy policy = JOIN_SHM_SPSC;
    bool havePolicy = false;
    uint64_t size = 0, capacity = 0, count = 0;
    double statsSeconds = 0;
};

int usage(const std::string &message) {
    fmt::print(stderr, "join-shm bridge: {}\nTry 'join-shm bridge --help'.\n", message);
    return kUsage;
}

bool number(const char *text, uint64_t &value) {
    if (!text || *text < '0' || *text > '9') return false;
    char *end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0) return false;
    value = v;
    return true;
}

int parse(int argc, char **argv, Options &o, bool &done) {
    done = false;
    std::vector<std::string> words;
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            fmt::print("{}", kUsageText);
            done = true;
            return kOk;
        }
        if (arg.rfind("--", 0) != 0) {
            words.push_back(arg);
            continue;
        }
        if (i + 1 >= argc) return usage(arg + " needs a value");
        const char *value = argv[++i];
        if (arg == "--nats") {
            o.url = value;
        } else if (arg == "--subject") {
            o.subject = value;
        } else if (arg == "--jetstream") {
            o.stream = value;
        } else if (arg == "--durable") {
            o.durable = value;
        } else if (arg == "--policy") {
            const std::string p = value;
            o.havePolicy = p == "spsc" || p == "mpsc" || p == "mpmc";
            if (!o.havePolicy) return usage("--policy is spsc, mpsc or mpmc");
            o.policy = p == "spsc" ? JOIN_SHM_SPSC : p == "mpsc" ? JOIN_SHM_MPSC : JOIN_SHM_MPMC;
        } else if (arg == "--size" || arg == "--capacity" || arg == "--count") {
            uint64_t &field = arg == "--size" ? o.size : arg == "--capacity" ? o.capacity : o.count;
            if (!number(value, field)) return usage(arg + " needs a positive whole number");
        } else if (arg == "--stats") {
            char *end = nullptr;
            o.statsSeconds = std::strtod(value, &end);
            if (end == value || *end != '\0' || !(o.statsSeconds > 0 && o.statsSeconds < 1e6))
                return usage("--stats needs a number of seconds above 0");
        } else {
            return usage("unknown option " + arg);
        }
    }
    if (words.size() != 2 || (words[0] != "out" && words[0] != "in")) return usage("expected 'out NAME' or 'in NAME'");
    o.out = words[0] == "out";
    o.name = words[1];
    if (o.url.empty() || o.subject.empty()) return usage("--nats and --subject are required");
    if (!o.havePolicy || o.size == 0 || o.capacity == 0) return usage("--policy, --size and --capacity are required");
    if (o.size > INT_MAX) return usage("--size is larger than a NATS message can be");
    if (o.out && !o.durable.empty()) return usage("--durable is for in");
    if (!o.out && o.stream.empty() != o.durable.empty()) return usage("in takes --jetstream and --durable together");
    // An MPMC consumer's peeked element has no position of its own (other consumers move the
    // shared cursor), and one killed holding it loses it: nothing here could keep the promise.
    if (o.out && !o.stream.empty() && o.policy == JOIN_SHM_MPMC)
        return usage("out --jetstream needs an spsc or mpsc ring (a lone consumer keeps its position across kills)");
    return kOk;
}

int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void sleepMs(int ms) {
    timespec ts{0, static_cast<long>(ms) * 1'000'000};
    nanosleep(&ts, nullptr);  // a signal cutting it short is what we want
}

// Counts, and the periodic --stats line.
struct Counters {
    const Options &o;
    uint64_t moved = 0, dropped = 0, resent = 0, repeatsSkipped = 0;
    int64_t nextPrintNs = 0;

    explicit Counters(const Options &options) : o(options) { schedule(); }
    void schedule() { nextPrintNs = nowNs() + static_cast<int64_t>(o.statsSeconds * 1e9); }
    void print(uint64_t extraDropped = 0) const {
        std::string line =
            fmt::format("join-shm bridge {} {}: moved {}, dropped {}, reconnects {}", o.out ? "out" : "in", o.name,
                        moved, dropped + extraDropped, gReconnects.load(std::memory_order_relaxed));
        if (o.out && !o.stream.empty()) line += fmt::format(", resent {}", resent);
        if (!o.out && !o.stream.empty()) line += fmt::format(", redelivered {}", repeatsSkipped);
        fmt::print(stderr, "{}\n", line);
    }
    void tick(uint64_t extraDropped = 0) {
        if (o.statsSeconds > 0 && nowNs() >= nextPrintNs) {
            print(extraDropped);
            schedule();
        }
    }
    bool countReached() const { return o.count != 0 && moved >= o.count; }
    uint64_t remaining() const { return o.count == 0 ? UINT64_MAX : o.count - moved; }
};

std::string natsError(natsStatus s) {
    const char *text = nats_GetLastError(nullptr);
    return text && *text ? text : natsStatus_GetText(s);
}

// The NATS side: connection, JetStream context, subscription.
struct Nats {
    natsOptions *options = nullptr;
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    natsSubscription *sub = nullptr;
    ~Nats() {
        natsSubscription_Destroy(sub);
        jsCtx_Destroy(js);
        if (nc) natsConnection_Close(nc);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(options);
    }
};

// Connects (in the background if the server is not up yet) and reconnects forever.
bool connect(const Options &o, Nats &n) {
    natsStatus s = natsOptions_Create(&n.options);
    if (s == NATS_OK) s = natsOptions_SetURL(n.options, o.url.c_str());
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(n.options, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(n.options, 100);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(n.options, true, nullptr, nullptr);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(n.options, onReconnected, nullptr);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(n.options, onAsyncError, nullptr);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&n.nc, n.options);
        if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK;
    }
    if (s == NATS_OK && !o.stream.empty()) s = natsConnection_JetStream(&n.js, n.nc, nullptr);
    if (s != NATS_OK) fmt::print(stderr, "join-shm bridge: cannot connect to {}: {}\n", o.url, natsError(s));
    return s == NATS_OK;
}

// Retries `attempt` while the server cannot answer (down, restarting, JetStream not ready yet);
// gives up on an error the server itself returned (jerr set) or, after one attempt, on a signal.
template <class Attempt>
bool retrying(const char *what, Attempt attempt) {
    for (bool warned = false;; warned = true) {
        jsErrCode jerr = static_cast<jsErrCode>(0);
        const natsStatus s = attempt(jerr);
        if (s == NATS_OK) return true;
        if (jerr != 0) {
            fmt::print(stderr, "join-shm bridge: {}: {} (JetStream error {})\n", what, natsError(s), int{jerr});
            return false;
        }
        if (gStop) return false;
        if (!warned) fmt::print(stderr, "join-shm bridge: {}: {}; retrying\n", what, natsError(s));
        sleepMs(kSliceMs);
    }
}

// The stream, created to capture SUBJECT if it does not exist.
bool ensureStream(const Options &o, Nats &n) {
    return retrying("stream", [&](jsErrCode &jerr) {
        jsStreamInfo *si = nullptr;
        natsStatus s = js_GetStreamInfo(&si, n.js, o.stream.c_str(), nullptr, &jerr);
        jsStreamInfo_Destroy(si);
        si = nullptr;
        if (s != NATS_NOT_FOUND) return s;
        jerr = static_cast<jsErrCode>(0);
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const char *subjects[] = {o.subject.c_str()};
        cfg.Name = o.stream.c_str();
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Duplicates = kDuplicateWindowNs;
        s = js_AddStream(&si, n.js, &cfg, nullptr, &jerr);
        jsStreamInfo_Destroy(si);
        if (jerr == JSStreamNameExistErr) return NATS_OK;  // another bridge made it meanwhile
        return s;
    });
}

// --- out ------------------------------------------------------------------------------------------

// Core NATS: pop in batches, publish; a publish refused (reconnect buffer full) is retried.
int runOutCore(const Options &o, join_shm_queue *q, Nats &n, Counters &c) {
    const uint64_t kBatch = coreBatch(o.size);
    std::vector<unsigned char> buffer(o.size * kBatch);
    while (!gStop && !c.countReached()) {
        c.tick();
        int64_t got = join_shm_try_pop_n(q, buffer.data(), std::min(kBatch, c.remaining()));
        if (got == -EAGAIN) {
            const int r = join_shm_timed_pop(q, buffer.data(), int64_t{kSliceMs} * 1'000'000);
            if (r == -ETIMEDOUT) continue;
            got = r == 0 ? 1 : r;
        }
        if (got < 0) {
            fmt::print(stderr, "join-shm bridge: pop: {} ({})\n", join_shm_strerror(static_cast<int>(got)),
                       join_shm_last_error_detail());
            return kError;
        }
        for (int64_t i = 0; i < got; ++i) {
            const unsigned char *element = buffer.data() + static_cast<uint64_t>(i) * o.size;
            // In hand: finished even after a signal, unless the server stays away meanwhile.
            for (int tries = 0;; ++tries) {
                if (natsConnection_Publish(n.nc, o.subject.c_str(), element, static_cast<int>(o.size)) == NATS_OK) {
                    ++c.moved;
                    break;
                }
                if (gStop && tries > 10) {
                    c.dropped += static_cast<uint64_t>(got - i);
                    return kOk;
                }
                sleepMs(10);
            }
        }
    }
    return kOk;
}

// The message id prefix for this ring's elements (the id is PREFIX:POSITION): host, ring name,
// the segment's inode (a ring deleted and created again under the name starts at position 0 again).
std::string idPrefix(const Options &o) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    const std::string bare = o.name[0] == '/' ? o.name.substr(1) : o.name;
    struct stat st {};
    stat(("/dev/shm/" + bare).c_str(), &st);
    return fmt::format("{}:{}:{}", host, bare, static_cast<uint64_t>(st.st_ino));
}

// What `out` has taken from the ring and the stream has not yet acked, in a file in /dev/shm
// (RING.STREAM.outbox) so that it outlives the bridge as the ring does. An element enters the
// outbox before it leaves the ring and leaves the outbox only once the stream acked it and every
// element before it: a kill at any point loses nothing, and what a restarted `out` sends again
// carries the id it was first sent with, which the stream's duplicate window drops.
//
// The file is untrusted input like any segment: its geometry is checked against its length, its
// counters against its window, before anything is indexed with them.
class Outbox {
public:
    struct Header {
        uint64_t magic;
        uint64_t size;    // element size
        uint64_t window;  // entries
        // Outbox indices: [acked, head) are waiting for the stream's ack. Written only by the one
        // `out` of this ring, read only by the next one after it died: a SIGKILL keeps every store
        // the process made, so only the compiler could break the order the stores below rely on,
        // and atomics with release order forbid that.
        std::atomic<uint64_t> acked;
        std::atomic<uint64_t> head;
        // The ring position after the last element entered: an element at a position below it
        // (entered, then a kill before its release) is released without entering twice.
        std::atomic<uint64_t> next;
        char prefix[256];   // message id prefix (host:ring:inode) of the entries
        char subject[256];  // where they are published
    };
    static_assert(std::atomic<uint64_t>::is_always_lock_free, "the outbox counters live in a shared file");

    Outbox() = default;
    Outbox(const Outbox &) = delete;
    Outbox &operator=(const Outbox &) = delete;
    ~Outbox() {
        unmap();
        if (fd_ >= 0) close(fd_);
    }

    // Maps the file as it is. False (printed) if it cannot be opened; valid() says whether it
    // holds a usable outbox.
    bool open(const std::string &path) {
        path_ = path;
        fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        struct stat st {};
        if (fd_ < 0 || fstat(fd_, &st) != 0) {
            fmt::print(stderr, "join-shm bridge: cannot keep {}: {}\n", path, std::strerror(errno));
            return false;
        }
        valid_ = false;
        if (static_cast<uint64_t>(st.st_size) < sizeof(Header)) return true;
        Header h;
        if (pread(fd_, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return true;
        const uint64_t acked = h.acked.load(std::memory_order_relaxed), head = h.head.load(std::memory_order_relaxed);
        if (h.magic != kMagic || h.size == 0 || h.size > INT_MAX || h.window == 0 || h.window > kMaxWindow ||
            head - acked > h.window || head < acked || static_cast<uint64_t>(st.st_size) != bytes(h.size, h.window) ||
            std::memchr(h.prefix, 0, sizeof h.prefix) == nullptr ||
            std::memchr(h.subject, 0, sizeof h.subject) == nullptr)
            return true;
        valid_ = map(h.size, h.window);
        return valid_ || mapFailed();
    }
    bool valid() const { return valid_; }
    // Empties the outbox and gives it this geometry; the next element entered is at `next`.
    bool reset(uint64_t size, uint64_t window, const std::string &prefix, const std::string &subject, uint64_t next) {
        unmap();
        if (ftruncate(fd_, 0) != 0 || ftruncate(fd_, static_cast<off_t>(bytes(size, window))) != 0 ||
            !map(size, window))
            return mapFailed();
        Header &h = *header_;
        h.magic = kMagic;
        h.size = size;
        h.window = window;
        std::snprintf(h.prefix, sizeof h.prefix, "%s", prefix.c_str());
        std::snprintf(h.subject, sizeof h.subject, "%s", subject.c_str());
        h.next.store(next, std::memory_order_relaxed);  // relaxed: only this process uses the file now
        valid_ = true;
        return true;
    }
    Header &header() const { return *header_; }
    // Entry `index`: the element's ring position (the message id's last part), then its bytes.
    uint64_t &position(uint64_t index) const { return *reinterpret_cast<uint64_t *>(entry(index)); }
    unsigned char *data(uint64_t index) const { return entry(index) + sizeof(uint64_t); }
    uint64_t size() const { return size_.size; }
    uint64_t window() const { return size_.window; }
    // Entries at most for elements of `size` bytes: 1024, fewer if that would exceed 16 MiB.
    static uint64_t windowFor(uint64_t size) { return std::clamp<uint64_t>((16 << 20) / stride(size), 1, kMaxWindow); }

private:
    static constexpr uint64_t kMagic = 0x6a73686d6f757462;  // "jshmoutb"
    static constexpr uint64_t kMaxWindow = 1024;
    struct Geometry {
        uint64_t size = 0, window = 1;
    };
    static uint64_t stride(uint64_t size) { return (sizeof(uint64_t) + size + 7) / 8 * 8; }
    unsigned char *entry(uint64_t index) const {
        return reinterpret_cast<unsigned char *>(header_) + sizeof(Header) +
               (index % size_.window) * stride(size_.size);
    }
    static uint64_t bytes(uint64_t size, uint64_t window) { return sizeof(Header) + window * stride(size); }
    bool map(uint64_t size, uint64_t window) {
        void *p = mmap(nullptr, bytes(size, window), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
        if (p == MAP_FAILED) return false;
        header_ = static_cast<Header *>(p);
        size_ = {size, window};
        return true;
    }
    void unmap() {
        if (header_) munmap(header_, bytes(size_.size, size_.window));
        header_ = nullptr;
        valid_ = false;
    }
    bool mapFailed() {
        fmt::print(stderr, "join-shm bridge: cannot keep {}: {}\n", path_, std::strerror(errno));
        return false;
    }
    std::string path_;
    int fd_ = -1;
    Header *header_ = nullptr;
    Geometry size_;
    bool valid_ = false;
};

// Publishes outbox entries without waiting for each ack: a window of them is in flight at once.
// Each carries the message id PREFIX:POSITION and the reply subject INBOX.GENERATION.INDEX on which
// the stream acks it. A missing ack (for 2 s) or an error sends again, in order, every entry from
// the oldest one not acked (a new generation, so that the old sends' errors are ignored); the ones
// the stream had stored already come back as duplicates and are counted as resent.
class Sender {
public:
    Sender(const Options &o, Nats &n, Outbox &box, Counters &c) : o_(o), n_(n), box_(box), c_(c) {}
    ~Sender() {
        natsSubscription_Destroy(acks_);
        natsInbox_Destroy(inbox_);
    }
    bool start() {
        natsStatus s = natsInbox_Create(&inbox_);
        if (s == NATS_OK) s = natsConnection_SubscribeSync(&acks_, n_.nc, fmt::format("{}.*.*", inbox_).c_str());
        if (s != NATS_OK) fmt::print(stderr, "join-shm bridge: ack subscription: {}\n", natsError(s));
        return s == NATS_OK;
    }
    // The outbox's geometry changed (reset): forget what was tracked for the old one.
    void track() {
        sentNs_.assign(box_.window(), 0);
        acked_.assign(box_.window(), 0);
    }
    void publish(uint64_t index) {
        const Outbox::Header &h = box_.header();
        const std::string id = fmt::format("{}:{}", h.prefix, box_.position(index)),
                          reply = fmt::format("{}.{}.{}", inbox_, generation_, index);
        natsMsg *m = nullptr;
        natsStatus s = natsMsg_Create(&m, h.subject, reply.c_str(), reinterpret_cast<const char *>(box_.data(index)),
                                      static_cast<int>(box_.size()));
        if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
        if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Expected-Stream", o_.stream.c_str());
        if (s == NATS_OK) s = natsConnection_PublishMsg(n_.nc, m);
        natsMsg_Destroy(m);
        sentNs_[index % box_.window()] = nowNs();
        if (s != NATS_OK) failed(natsError(s));  // the client's reconnect buffer is full, say
    }
    // Takes the acks that arrived, waiting up to waitMs for the first; then moves `acked` over
    // the entries acked in order, and sends again what needs it.
    void poll(int64_t waitMs) {
        natsMsg *m = nullptr;
        for (natsStatus s = natsSubscription_NextMsg(&m, acks_, waitMs); s != NATS_TIMEOUT;
             s = natsSubscription_NextMsg(&m, acks_, 0)) {
            if (s == NATS_OK) {
                take(m);
                natsMsg_Destroy(m);
                m = nullptr;
            } else if (s == NATS_NO_RESPONDERS) {
                failed("no stream answers (the server is starting, or has no stream for the subject)");
            } else {
                break;  // the connection is away: the missing acks time out
            }
        }
        Outbox::Header &h = box_.header();
        uint64_t acked = h.acked.load(std::memory_order_relaxed);  // relaxed: this process alone writes it
        const uint64_t head = h.head.load(std::memory_order_relaxed);
        for (; acked < head && acked_[acked % box_.window()]; ++acked, ++c_.moved)
            acked_[acked % box_.window()] = 0;
        // Relaxed: nothing after it depends on it; a kill before it only sends those entries again.
        h.acked.store(acked, std::memory_order_relaxed);
        const int64_t now = nowNs();
        if (acked < head &&
            ((retryAtNs_ != 0 && now >= retryAtNs_) || now - sentNs_[acked % box_.window()] > kAckTimeoutNs)) {
            ++generation_;
            retryAtNs_ = 0;
            for (uint64_t i = acked; i < head; ++i)
                if (!acked_[i % box_.window()]) publish(i);
        }
    }
    uint64_t pending() const {
        // Relaxed: this process alone writes them.
        return box_.header().head.load(std::memory_order_relaxed) - box_.header().acked.load(std::memory_order_relaxed);
    }

private:
    static constexpr int64_t kAckTimeoutNs = 2'000'000'000;

    void take(natsMsg *m) {
        // INBOX.GENERATION.INDEX; anything else on the inbox is not ours to act on.
        const char *subject = natsMsg_GetSubject(m) + std::strlen(inbox_);
        unsigned long long generation = 0, index = 0;
        if (std::sscanf(subject, ".%llu.%llu", &generation, &index) != 2) return;
        const std::string_view reply(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
        const Outbox::Header &h = box_.header();
        // Relaxed: this process alone writes them.
        const uint64_t acked = h.acked.load(std::memory_order_relaxed), head = h.head.load(std::memory_order_relaxed);
        if (reply.find("\"error\"") != std::string_view::npos || reply.find("\"seq\"") == std::string_view::npos) {
            if (generation == generation_) failed(std::string(reply));
            return;
        }
        if (index < acked || index >= head || acked_[index % box_.window()]) return;
        acked_[index % box_.window()] = 1;
        if (reply.find("\"duplicate\":true") != std::string_view::npos) ++c_.resent;
    }
    // Sends again from the oldest entry not acked a little later (a server that is starting
    // refuses a whole window at once: not again at once); says why once a second.
    void failed(const std::string &why) {
        if (retryAtNs_ == 0) retryAtNs_ = nowNs() + int64_t{kSliceMs} * 1'000'000;
        if (nowNs() >= quietUntilNs_) {
            fmt::print(stderr, "join-shm bridge: publish: {}; sending again\n", why);
            quietUntilNs_ = nowNs() + 1'000'000'000;
        }
    }

    const Options &o_;
    Nats &n_;
    Outbox &box_;
    Counters &c_;
    natsInbox *inbox_ = nullptr;
    natsSubscription *acks_ = nullptr;
    uint64_t generation_ = 0;
    std::vector<int64_t> sentNs_;
    std::vector<unsigned char> acked_;
    int64_t retryAtNs_ = 0;  // when to send again after an error; 0: no error since the last time
    int64_t quietUntilNs_ = 0;
};

// JetStream: each element enters the outbox, leaves the ring, and is published with the id of
// its ring position; a window of them waits for the stream's acks at once. The ring position is
// the tail cursor: a lone consumer (SPSC, MPSC) does not move it until release.
int runOutJetStream(const Options &o, join_shm_queue *q, Nats &n, Counters &c) {
    if (!ensureStream(o, n)) return gStop ? kOk : kError;
    const std::string bare = o.name[0] == '/' ? o.name.substr(1) : o.name;
    Outbox box;
    if (!box.open(fmt::format("/dev/shm/{}.{}.outbox", bare, o.stream))) return kError;
    Sender sender(o, n, box, c);
    if (!sender.start()) return kError;
    // A previous run's entries first, with the ids and subject they were first sent with.
    if (box.valid() && sender.pending() > 0) {
        sender.track();
        // Relaxed: this process alone uses the file.
        for (uint64_t i = box.header().acked.load(std::memory_order_relaxed);
             i < box.header().head.load(std::memory_order_relaxed); ++i)
            sender.publish(i);
        while (sender.pending() > 0 && !gStop) {
            c.tick();
            sender.poll(kSliceMs);
        }
        if (gStop) return kOk;
    }
    join_shm_stats stats{};
    stats.size = sizeof stats;
    if (int r = join_shm_queue_stats(q, &stats); r < 0) {
        fmt::print(stderr, "join-shm bridge: stats: {} ({})\n", join_shm_strerror(r), join_shm_last_error_detail());
        return kError;
    }
    const std::string prefix = idPrefix(o);
    const uint64_t window = Outbox::windowFor(o.size);
    // Relaxed: this process alone uses the file.
    if (!box.valid() || box.size() != o.size || box.window() != window || prefix != box.header().prefix ||
        o.subject != box.header().subject || stats.popped + 1 < box.header().next.load(std::memory_order_relaxed)) {
        if (!box.reset(o.size, window, prefix, o.subject, stats.popped)) return kError;
    }
    sender.track();

    Outbox::Header &h = box.header();
    uint64_t taken = 0;
    int64_t giveUpNs = 0;  // after a signal: how long to wait for the acks still missing
    for (;;) {
        const bool taking = !gStop && (o.count == 0 || taken < o.count);
        if (!taking && (sender.pending() == 0 || (giveUpNs != 0 && nowNs() > giveUpNs))) break;
        if (!taking && giveUpNs == 0) giveUpNs = nowNs() + 5'000'000'000;
        c.tick();
        bool tookOne = false;
        while (taking && sender.pending() < window && (o.count == 0 || taken < o.count)) {
            const void *slot = nullptr;
            // Nothing in flight: wait here for the ring; else the acks are waited for below.
            int r = sender.pending() == 0 ? join_shm_timed_peek(q, &slot, int64_t{kSliceMs} * 1'000'000)
                                          : join_shm_try_peek(q, &slot);
            if (r == -ETIMEDOUT || r == -EAGAIN) break;
            if (r == 0) r = join_shm_queue_stats(q, &stats);
            if (r < 0) {
                fmt::print(stderr, "join-shm bridge: peek: {} ({})\n", join_shm_strerror(r),
                           join_shm_last_error_detail());
                return kError;
            }
            // Relaxed loads: this process alone writes the file.
            if (stats.popped >= h.next.load(std::memory_order_relaxed)) {
                const uint64_t index = h.head.load(std::memory_order_relaxed);
                box.position(index) = stats.popped;
                std::memcpy(box.data(index), slot, o.size);
                // Release, both: a SIGKILL keeps exactly the stores made before it, so what must
                // precede what is program order, which release keeps the compiler to. The entry
                // before head; head before next (a kill between the two enters the element again
                // under the same id, and the stream drops the copy; next first would release it
                // unsent); both before the release from the ring.
                h.head.store(index + 1, std::memory_order_release);
                h.next.store(stats.popped + 1, std::memory_order_release);
                join_shm_release(q);
                sender.publish(index);
                ++taken;
            } else {
                join_shm_release(q);  // in the outbox already: a kill came before its release
            }
            tookOne = true;
        }
        sender.poll(tookOne || sender.pending() == 0 ? 0 : 1);
    }
    return kOk;
}

// --- in -------------------------------------------------------------------------------------------

// Pushes one element, waiting while the ring is full; `waiting` is called about once a second
// meanwhile. False on a signal (the element is not pushed) or a ring error (printed; *failed set).
template <class Waiting>
bool pushWaiting(join_shm_queue *q, const void *data, bool &failed, Waiting waiting) {
    int64_t nextNoticeNs = nowNs() + 1'000'000'000;
    for (;;) {
        int r = join_shm_try_push(q, data);
        if (r == -EAGAIN) r = join_shm_timed_push(q, data, int64_t{kSliceMs} * 1'000'000);
        if (r == 0) return true;
        if (r != -ETIMEDOUT) {
            fmt::print(stderr, "join-shm bridge: push: {} ({})\n", join_shm_strerror(r), join_shm_last_error_detail());
            failed = true;
            return false;
        }
        if (gStop) return false;
        if (nowNs() >= nextNoticeNs) {
            waiting();
            nextNoticeNs = nowNs() + 1'000'000'000;
        }
    }
}

int runInCore(const Options &o, join_shm_queue *q, Nats &n, Counters &c) {
    natsStatus s = natsConnection_SubscribeSync(&n.sub, n.nc, o.subject.c_str());
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(n.sub, kPendingMessages, kPendingBytes);
    if (s != NATS_OK) {
        fmt::print(stderr, "join-shm bridge: subscribe: {}\n", natsError(s));
        return kError;
    }
    const auto slowDrops = [&] {
        int64_t dropped = 0;
        natsSubscription_GetDropped(n.sub, &dropped);
        return static_cast<uint64_t>(dropped);
    };
    // The messages the client library holds already are taken in one go and pushed with one
    // push_n: the ring's cursor moves (and a sleeping consumer is woken) once per batch.
    const uint64_t batchSize = coreBatch(o.size);
    std::vector<unsigned char> batch(o.size * batchSize);
    bool failed = false;
    while (!gStop && !c.countReached() && !failed) {
        natsMsg *m = nullptr;
        s = natsSubscription_NextMsg(&m, n.sub, kSliceMs);
        if (s != NATS_OK) {
            c.tick(slowDrops());
            if (s != NATS_TIMEOUT) sleepMs(kSliceMs);  // connection closed under us: wait for the reconnect
            continue;
        }
        const uint64_t limit = std::min(batchSize, c.remaining());
        uint64_t count = 0;
        do {
            if (static_cast<uint64_t>(natsMsg_GetDataLength(m)) == o.size)
                std::memcpy(batch.data() + count++ * o.size, natsMsg_GetData(m), o.size);
            else
                ++c.dropped;
            natsMsg_Destroy(m);
            m = nullptr;
        } while (count < limit && natsSubscription_NextMsg(&m, n.sub, 0) == NATS_OK);
        for (uint64_t done = 0; done < count && !failed;) {
            const unsigned char *first = batch.data() + done * o.size;
            const int64_t pushed = join_shm_try_push_n(q, first, count - done);
            if (pushed > 0) {
                done += static_cast<uint64_t>(pushed);
                c.moved += static_cast<uint64_t>(pushed);
            } else if (pushWaiting(q, first, failed, [] {})) {  // full: wait for room for one
                ++done;
                ++c.moved;
            } else if (!failed) {
                c.dropped += count - done;  // a signal while the ring stayed full: at most once allows it
                break;
            }
        }
        c.tick(slowDrops());
    }
    c.dropped += slowDrops();
    return failed ? kError : kOk;
}

// The stream sequences `in` pushed into the ring, over the last kWindow of them, kept in a small
// file in /dev/shm (RING.STREAM.DURABLE.bridge) so that they outlive the bridge: a message the
// server delivers again (a restarted server forgets the acks it had not written yet; a killed
// bridge's last acks may never have left) is acked and not pushed twice. The file belongs to one
// stream incarnation (its creation time, which a server restart keeps; a consumer's does not):
// a stream made anew numbers from 1 again and starts with an empty record.
class Pushed {
public:
    ~Pushed() {
        if (state_) munmap(state_, sizeof(State));
    }
    // False (printed) if the file cannot be made.
    bool open(const std::string &path, int64_t streamCreated) {
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        struct stat st {};
        if (fd >= 0 && fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) != sizeof(State) &&
            ftruncate(fd, sizeof(State)) != 0)
            st.st_size = -1;
        void *p = fd >= 0 && st.st_size >= 0 ? mmap(nullptr, sizeof(State), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                                             : MAP_FAILED;
        const int err = errno;
        if (fd >= 0) close(fd);
        if (p == MAP_FAILED) {
            fmt::print(stderr, "join-shm bridge: cannot keep {}: {}\n", path, std::strerror(err));
            return false;
        }
        state_ = static_cast<State *>(p);
        if (state_->magic != kMagic || state_->streamCreated != streamCreated) {
            std::memset(static_cast<void *>(state_), 0, sizeof(State));
            state_->streamCreated = streamCreated;
            state_->magic = kMagic;
        }
        return true;
    }
    bool has(uint64_t seq) const {
        const uint64_t highest = state_->highest;
        return seq <= highest && highest - seq < kWindow && ((byte(seq) >> (seq % 8)) & 1u);
    }
    // Called after the push, before the ack: a kill in between repeats that one message.
    void add(uint64_t seq) {
        const uint64_t highest = state_->highest;
        if (seq > highest) {
            // The bits between the old and the new highest belong to sequences a window ago.
            for (uint64_t s = highest + 1; s < seq && s - highest <= kWindow; ++s)
                byte(s) &= static_cast<unsigned char>(~(1u << (s % 8)));
        } else if (highest - seq >= kWindow) {
            return;
        }
        byte(seq) |= static_cast<unsigned char>(1u << (seq % 8));
        if (seq > highest) state_->highest = seq;  // after the bit: a kill between leaves it unset
    }

private:
    static constexpr uint64_t kWindow = uint64_t{1} << 20;
    static constexpr uint64_t kMagic = 0x6a73686d62726467;  // "jshmbrdg"
    struct State {
        uint64_t magic;
        int64_t streamCreated;
        uint64_t highest;
        unsigned char bits[kWindow / 8];
    };
    unsigned char &byte(uint64_t seq) const { return state_->bits[(seq % kWindow) / 8]; }
    State *state_ = nullptr;
};

uint64_t streamSequence(natsMsg *m) {
    jsMsgMetaData *meta = nullptr;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    return seq;
}

int runInJetStream(const Options &o, join_shm_queue *q, Nats &n, Counters &c) {
    if (!ensureStream(o, n)) return gStop ? kOk : kError;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = o.stream.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = kAckWaitNs;
    so.Config.DeliverPolicy = js_DeliverAll;
    if (!retrying("pull subscription", [&](jsErrCode &jerr) {
            return js_PullSubscribe(&n.sub, n.js, o.subject.c_str(), o.durable.c_str(), nullptr, &so, &jerr);
        }))
        return gStop ? kOk : kError;
    int64_t created = 0;
    if (!retrying("stream info", [&](jsErrCode &jerr) {
            jsStreamInfo *si = nullptr;
            const natsStatus s = js_GetStreamInfo(&si, n.js, o.stream.c_str(), nullptr, &jerr);
            if (si) created = si->Created;
            jsStreamInfo_Destroy(si);
            return s;
        }))
        return gStop ? kOk : kError;
    Pushed pushed;
    const std::string bare = o.name[0] == '/' ? o.name.substr(1) : o.name;
    if (!pushed.open(fmt::format("/dev/shm/{}.{}.{}.bridge", bare, o.stream, o.durable), created)) return kError;
    bool failed = false;
    while (!gStop && !c.countReached() && !failed) {
        c.tick();
        // Never more in hand than the ring can take now (at least one, to wait on with a push).
        const uint64_t room = std::max<uint64_t>(join_shm_available(q), 1);
        const int batch = static_cast<int>(std::min<uint64_t>({room, c.remaining(), kMaxBatch}));
        natsMsgList list{};
        const natsStatus s = natsSubscription_Fetch(&list, n.sub, batch, kSliceMs * 5, nullptr);
        if (s != NATS_OK && s != NATS_TIMEOUT) sleepMs(kSliceMs);  // server away: reconnecting
        for (int i = 0; i < list.Count; ++i) {
            natsMsg *m = list.Msgs[i];
            if (gStop || failed) {
                natsMsg_Nak(m, nullptr);  // not taken: redelivered at once to whoever pulls next
                continue;
            }
            if (static_cast<uint64_t>(natsMsg_GetDataLength(m)) != o.size) {
                natsMsg_Term(m, nullptr);  // never redelivered
                ++c.dropped;
                continue;
            }
            const uint64_t seq = streamSequence(m);
            if (seq != 0 && pushed.has(seq)) {
                natsMsg_Ack(m, nullptr);  // pushed already: the server forgot our ack
                ++c.repeatsSkipped;
            } else if (pushWaiting(q, natsMsg_GetData(m), failed, [&] { natsMsg_InProgress(m, nullptr); })) {
                if (seq != 0) pushed.add(seq);
                natsMsg_Ack(m, nullptr);
                ++c.moved;
            } else {
                natsMsg_Nak(m, nullptr);
            }
        }
        natsMsgList_Destroy(&list);
    }
    return failed ? kError : kOk;
}

int runBridge(const Options &o) {
    join_shm_queue *q = nullptr;
    int r = join_shm_queue_open(&q, o.name.c_str(), o.policy, o.out ? JOIN_SHM_CONSUMER : JOIN_SHM_PRODUCER, o.size,
                                o.capacity);
    if (r < 0) {
        fmt::print(stderr, "join-shm bridge: cannot open ring {}: {} ({})\n", o.name, join_shm_strerror(r),
                   join_shm_last_error_detail());
        return kError;
    }
    Counters c(o);
    int status = kError;
    {
        Nats n;
        if (connect(o, n)) {
            if (o.out)
                status = o.stream.empty() ? runOutCore(o, q, n, c) : runOutJetStream(o, q, n, c);
            else
                status = o.stream.empty() ? runInCore(o, q, n, c) : runInJetStream(o, q, n, c);
            // What was published (or acked) is in the client's buffer: hand it to the server.
            natsConnection_FlushTimeout(n.nc, 5000);
        }
    }
    join_shm_queue_close(q);
    if (o.statsSeconds > 0) c.print();
    return status;
}

}  // namespace

int bridgeMain(int argc, char **argv) {
    Options o;
    bool done = false;
    if (int r = parse(argc, argv, o, done); r != kOk || done) return r;
    struct sigaction sa {};
    sa.sa_handler = onSignal;  // no SA_RESTART: waits return and see gStop
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    const int status = runBridge(o);
    nats_CloseAndWait(2000);  // the client library's threads and caches, so leak checkers see none
    return status;
}

}  // namespace join::shm::cli
