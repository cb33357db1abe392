// The peers libjoin-shm is compared with, each behind the transport interface described at the top
// of common.hpp: pipe, AF_UNIX SOCK_SEQPACKET socketpair, POSIX message queue,
// Boost.Interprocess message_queue (when built with JOIN_SHM_BENCH_BOOST), and the hardware floors:
// two processes handing a cache line back and forth (round trip), two processes waking each other
// with a futex (round trip, sleeping), and a minimal SPSC ring (stream).
#pragma once

#include "common.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#if JOIN_SHM_BENCH_BOOST
#include <boost/interprocess/ipc/message_queue.hpp>
#endif

namespace bench {

// For transports that move one message per call.
template <class Derived>
struct OneAtATime {
    static constexpr bool kStreams = true;
    size_t sendSome(const char *msgs, size_t) {
        static_cast<Derived *>(this)->send(msgs);
        return 1;
    }
    size_t recvSome(char *msgs, size_t) {
        static_cast<Derived *>(this)->recv(msgs);
        return 1;
    }
};

[[noreturn]] inline void osFailure(const std::string &label, const char *call) {
    fatal(fmt::format("{}: {}: {}", label, call, std::strerror(errno)));
}

inline void closeFd(int &fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// ---------------------------------------------------------------------------------------------
// Two pipes (one per direction); kernel default pipe buffers. Messages are at most PIPE_BUF
// (4096) bytes, so concurrent producers' writes never interleave.

class Pipe : public OneAtATime<Pipe> {
public:
    std::string label() const { return "pipe"; }

    std::string setup(const Shape &shape) {
        if (shape.size > PIPE_BUF) return fmt::format("messages over PIPE_BUF ({} B) would interleave", PIPE_BUF);
        size_ = shape.size;
        if (pipe2(ab_, O_CLOEXEC) != 0 || pipe2(ba_, O_CLOEXEC) != 0) osFailure(label(), "pipe2");
        return {};
    }
    void open(Side side, bool duplex, int) {
        read_ = side == Side::A ? ba_[0] : duplex ? ab_[0] : -1;
        write_ = side == Side::A ? (duplex ? ab_[1] : -1) : ba_[1];
    }
    void send(const char *msg) {
        for (size_t done = 0; done < size_;) {
            const ssize_t w = write(write_, msg + done, size_ - done);
            if (w < 0 && errno != EINTR) osFailure(label(), "write");
            if (w > 0) done += static_cast<size_t>(w);
        }
    }
    void recv(char *msg) {
        for (size_t done = 0; done < size_;) {
            const ssize_t r = read(read_, msg + done, size_ - done);
            if (r == 0) fatal(fmt::format("{}: read: end of file", label()));
            if (r < 0 && errno != EINTR) osFailure(label(), "read");
            if (r > 0) done += static_cast<size_t>(r);
        }
    }
    void close() {}  // the descriptors belong to the parent; a peer's copies go with it
    void teardown() {
        for (int *fd : {&ab_[0], &ab_[1], &ba_[0], &ba_[1]})
            closeFd(*fd);
    }

private:
    size_t size_ = 0;
    int ab_[2] = {-1, -1}, ba_[2] = {-1, -1};
    int read_ = -1, write_ = -1;
};

// ---------------------------------------------------------------------------------------------
// One AF_UNIX SOCK_SEQPACKET socketpair: duplex, message boundaries kept; default socket buffers.

class UnixSeqpacket : public OneAtATime<UnixSeqpacket> {
public:
    std::string label() const { return "unix seqpacket"; }

    std::string setup(const Shape &shape) {
        size_ = shape.size;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds_) != 0) osFailure(label(), "socketpair");
        return {};
    }
    void open(Side side, bool, int) { fd_ = fds_[side == Side::A ? 0 : 1]; }
    void send(const char *msg) {
        ssize_t w;
        while ((w = ::send(fd_, msg, size_, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
        }
        if (w != static_cast<ssize_t>(size_)) osFailure(label(), "send");
    }
    void recv(char *msg) {
        ssize_t r;
        while ((r = ::recv(fd_, msg, size_, 0)) < 0 && errno == EINTR) {
        }
        if (r != static_cast<ssize_t>(size_)) {
            if (r >= 0) fatal(fmt::format("{}: recv returned {} bytes, expected {}", label(), r, size_));
            osFailure(label(), "recv");
        }
    }
    void close() {}
    void teardown() {
        closeFd(fds_[0]);
        closeFd(fds_[1]);
    }

private:
    size_t size_ = 0;
    int fds_[2] = {-1, -1};
    int fd_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Two POSIX message queues. Their attributes must stay within /proc/sys/fs/mqueue/msg_max
// (messages per queue, usually 10) and msgsize_max (usually 8192) for an unprivileged user.

inline long procLimit(const char *path, long fallback) {
    std::ifstream in(path);
    long v = 0;
    return in >> v ? v : fallback;
}

inline long mqMsgMax() { return procLimit("/proc/sys/fs/mqueue/msg_max", 10); }
inline long mqMsgSizeMax() { return procLimit("/proc/sys/fs/mqueue/msgsize_max", 8192); }

class PosixMq : public OneAtATime<PosixMq> {
public:
    std::string label() const { return "posix mq"; }

    std::string setup(const Shape &shape) {
        static unsigned counter = 0;
        size_ = shape.size;
        if (static_cast<long>(size_) > mqMsgSizeMax())
            return fmt::format("message size over /proc/sys/fs/mqueue/msgsize_max ({})", mqMsgSizeMax());
        mq_attr attr;
        std::memset(&attr, 0, sizeof attr);
        attr.mq_maxmsg = std::min<long>(static_cast<long>(shape.capacity), mqMsgMax());
        attr.mq_msgsize = static_cast<long>(size_);
        const std::string base = fmt::format("/jsb-mq-{}-{}", g.mainPid, counter++);
        for (int i = 0; i < 2; ++i) {
            names_[i] = base + (i == 0 ? "-ab" : "-ba");
            q_[i] = mq_open(names_[i].c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
            if (q_[i] == static_cast<mqd_t>(-1)) {
                const int err = errno;
                teardown();
                return fmt::format("mq_open(maxmsg {}, msgsize {}): {}", attr.mq_maxmsg, attr.mq_msgsize,
                                   std::strerror(err));
            }
            registerName(NameKind::PosixMq, names_[i]);
        }
        return {};
    }
    void open(Side side, bool, int) {
        in_ = q_[side == Side::A ? 1 : 0];
        out_ = q_[side == Side::A ? 0 : 1];
    }
    void send(const char *msg) {
        int r;
        while ((r = mq_send(out_, msg, size_, 0)) != 0 && errno == EINTR) {
        }
        if (r != 0) osFailure(label(), "mq_send");
    }
    void recv(char *msg) {
        ssize_t r;
        while ((r = mq_receive(in_, msg, size_, nullptr)) < 0 && errno == EINTR) {
        }
        if (r != static_cast<ssize_t>(size_)) osFailure(label(), "mq_receive");
    }
    void close() {}
    void teardown() {
        for (int i = 0; i < 2; ++i)
            if (q_[i] != static_cast<mqd_t>(-1)) {
                mq_close(q_[i]);
                q_[i] = static_cast<mqd_t>(-1);
            }
        unlinkAll();
    }

private:
    size_t size_ = 0;
    std::string names_[2];
    mqd_t q_[2] = {static_cast<mqd_t>(-1), static_cast<mqd_t>(-1)};
    mqd_t in_ = static_cast<mqd_t>(-1), out_ = static_cast<mqd_t>(-1);
};

// ---------------------------------------------------------------------------------------------
// Boost.Interprocess message_queue (a mutex and two condition variables in shared memory).
// Created by the parent; each process opens its own view after fork.

#if JOIN_SHM_BENCH_BOOST
class BoostMq : public OneAtATime<BoostMq> {
public:
    using Queue = boost::interprocess::message_queue;

    std::string label() const { return "boost mq"; }

    std::string setup(const Shape &shape) {
        static unsigned counter = 0;
        size_ = shape.size;
        const std::string base = fmt::format("jsb-boost-{}-{}", g.mainPid, counter++);
        try {
            for (int i = 0; i < 2; ++i) {
                names_[i] = base + (i == 0 ? "-ab" : "-ba");
                Queue(boost::interprocess::create_only, names_[i].c_str(), shape.capacity, size_);
                registerName(NameKind::PosixShm, "/" + names_[i]);
            }
        } catch (const std::exception &e) {
            teardown();
            return fmt::format("cannot create: {}", e.what());
        }
        return {};
    }
    void open(Side side, bool duplex, int) {
        try {
            const int in = side == Side::A ? 1 : 0, out = 1 - in;
            if (side == Side::A || duplex)
                in_ = std::make_unique<Queue>(boost::interprocess::open_only, names_[in].c_str());
            if (side == Side::B || duplex)
                out_ = std::make_unique<Queue>(boost::interprocess::open_only, names_[out].c_str());
        } catch (const std::exception &e) {
            fatal(fmt::format("{}: open: {}", label(), e.what()));
        }
    }
    void send(const char *msg) {
        try {
            out_->send(msg, size_, 0);
        } catch (const std::exception &e) {
            fatal(fmt::format("{}: send: {}", label(), e.what()));
        }
    }
    void recv(char *msg) {
        try {
            Queue::size_type got = 0;
            unsigned priority = 0;
            in_->receive(msg, size_, got, priority);
            if (got != size_) fatal(fmt::format("{}: received {} bytes, expected {}", label(), got, size_));
        } catch (const std::exception &e) {
            fatal(fmt::format("{}: receive: {}", label(), e.what()));
        }
    }
    void close() {
        in_.reset();
        out_.reset();
    }
    void teardown() {
        close();
        unlinkAll();  // Queue::remove(name) is shm_unlink("/" + name)
    }

private:
    size_t size_ = 0;
    std::string names_[2];
    std::unique_ptr<Queue> in_, out_;
};
#endif

// ---------------------------------------------------------------------------------------------
// The round-trip floors below pass their words through one zeroed MAP_SHARED page, mapped in
// setup (before the fork) and unmapped in teardown, and move one message per call.
template <class Derived>
class SharedPageFloor : public OneAtATime<Derived> {
public:
    static constexpr bool kStreams = false;

    std::string setup(const Shape &) {
        void *m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) osFailure(static_cast<Derived *>(this)->label(), "mmap");
        std::memset(m, 0, 4096);  // fault the page in now
        page_ = m;
        return {};
    }
    void close() {}
    void teardown() {
        if (page_) munmap(page_, 4096);
        page_ = nullptr;
    }

protected:
    void *page_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// The hardware floor: two processes pass a counter through a MAP_SHARED anonymous mapping, each
// spinning until the other's word changes. One line: both words in the same cache line, which
// travels once per direction. Two lines: each side writes its own line and reads the other's, as a
// ring with separate cursors or per-slot sequences does. Nothing over shared memory can be faster.
// Moves 8 bytes whatever the message size; round trip only.

class CacheLineFloor : public SharedPageFloor<CacheLineFloor> {
public:
    explicit CacheLineFloor(bool twoLines) : twoLines_{twoLines} {}

    std::string label() const { return twoLines_ ? "hw floor, 2 lines" : "hw floor, 1 line"; }

    void open(Side side, bool, int) {
        auto *words = static_cast<std::atomic<uint64_t> *>(page_);
        std::atomic<uint64_t> *a = &words[0], *b = twoLines_ ? &words[8] : &words[1];  // words[8]: next line
        mine_ = side == Side::A ? a : b;
        theirs_ = side == Side::A ? b : a;
        seen_ = 0;
    }
    // Stores word 0 of the message plus one, so that a value is never 0 (the initial state).
    void send(const char *msg) {
        uint64_t w;
        std::memcpy(&w, msg, 8);
        mine_->store(w + 1, std::memory_order_release);
    }
    void recv(char *msg) {
        uint64_t v;
        Spinner spin;
        while ((v = theirs_->load(std::memory_order_acquire)) == seen_)
            spin();
        seen_ = v;
        --v;
        std::memcpy(msg, &v, 8);
    }

private:
    bool twoLines_;
    std::atomic<uint64_t> *mine_ = nullptr, *theirs_ = nullptr;
    uint64_t seen_ = 0;
};

// The sleeping floor: two processes that wake each other with nothing else around it. Each message
// bumps the sender's turn word (its 8 bytes beside it) and always issues a FUTEX_WAKE; the receiver
// never spins: while the other's turn word has not moved it sleeps in FUTEX_WAIT. So every message
// is one wake-up of a sleeping process, as in sleep mode (spin_ns < 0) or a pipe's blocking read:
// what such a round trip costs on this machine before any library adds anything. Unless each answer
// arrives while its receiver is still in its own FUTEX_WAKE: then nobody sleeps, and once in that
// regime a repetition can stay in it (a p50 of a few hundred ns, seen once in 5 repetitions here);
// the median of the repetitions is the figure.
class FutexFloor : public SharedPageFloor<FutexFloor> {
public:
    std::string label() const { return "futex floor, sleeping"; }

    void open(Side side, bool, int) {
        auto *cells = static_cast<Cell *>(page_);
        mine_ = &cells[side == Side::A ? 0 : 1];
        theirs_ = &cells[side == Side::A ? 1 : 0];
        seen_ = 0;
    }
    void send(const char *msg) {
        // The payload is written before the release store of the turn; the receiver reads it after
        // its acquire load saw that turn, and answers before this side writes the payload again.
        std::memcpy(mine_->payload, msg, 8);
        mine_->turn.store(mine_->turn.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        syscall(SYS_futex, &mine_->turn, FUTEX_WAKE, 1, nullptr, nullptr, 0);
    }
    void recv(char *msg) {
        uint32_t now;
        // FUTEX_WAIT returns at once if the word no longer holds seen_, so a wake that came before
        // the wait is not lost.
        while ((now = theirs_->turn.load(std::memory_order_acquire)) == seen_)
            syscall(SYS_futex, &theirs_->turn, FUTEX_WAIT, seen_, nullptr, nullptr, 0);
        seen_ = now;
        std::memcpy(msg, theirs_->payload, 8);
    }

private:
    struct alignas(64) Cell {  // one line per side, as the 2-line hardware floor
        std::atomic<uint32_t> turn;
        char payload[8];
    };
    Cell *mine_ = nullptr, *theirs_ = nullptr;
    uint32_t seen_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The throughput floor: the smallest SPSC ring that works between two processes, after
// rigtorp/SPSCQueue, in a MAP_SHARED anonymous mapping made before fork. An array of slots and two
// cursors, each written by one side only; each side keeps the other's cursor as last read and reads
// the shared one again only when that copy says full (or empty); acquire/release, nothing stronger.
// No roles, no crash recovery, no wake-ups, no distrust of shared memory: what any ring costs on
// this machine before a library adds anything. Copies in and out, as try_push/try_pop do.

class RingFloor {
public:
    static constexpr bool kStreams = true;

    std::string label() const { return "hw floor stream"; }

    std::string setup(const Shape &shape) {
        if (shape.producers != 1) return "one producer only";
        size_ = shape.size;
        capacity_ = shape.capacity;
        stride_ = (size_ + 7) / 8 * 8;  // slots 8-byte aligned, as the message words are
        bytes_ = sizeof(Cursors) + capacity_ * stride_;
        void *m = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) osFailure(label(), "mmap");
        std::memset(m, 0, bytes_);  // fault the pages in now
        cursors_ = new (m) Cursors;
        slots_ = static_cast<char *>(m) + sizeof(Cursors);
        return {};
    }
    void open(Side, bool duplex, int) {
        if (duplex) fatal(fmt::format("{}: one way only", label()));
        pos_ = seen_ = 0;
        slot_ = 0;
    }
    size_t sendSome(const char *msg, size_t) {
        if (pos_ - seen_ == capacity_) {  // full as last seen: has the consumer moved on?
            Spinner spin;
            // acquire: the consumer's reads of the slot happen before we overwrite it
            while (pos_ - (seen_ = cursors_->tail.load(std::memory_order_acquire)) == capacity_)
                spin();
        }
        std::memcpy(slots_ + slot_ * stride_, msg, size_);
        cursors_->head.store(++pos_, std::memory_order_release);  // publishes the slot's bytes
        if (++slot_ == capacity_) slot_ = 0;
        return 1;
    }
    size_t recvSome(char *msg, size_t) {
        if (pos_ == seen_) {  // empty as last seen: has the producer published more?
            Spinner spin;
            // acquire: pairs with the producer's release, so the slot's bytes are visible
            while (pos_ == (seen_ = cursors_->head.load(std::memory_order_acquire)))
                spin();
        }
        std::memcpy(msg, slots_ + slot_ * stride_, size_);
        cursors_->tail.store(++pos_, std::memory_order_release);  // hands the slot back
        if (++slot_ == capacity_) slot_ = 0;
        return 1;
    }
    // The transport interface; only ever streamed, one way (open refuses duplex).
    void send(const char *msg) { sendSome(msg, 1); }
    void recv(char *msg) { recvSome(msg, 1); }
    void close() {}
    void teardown() {
        if (cursors_) munmap(cursors_, bytes_);
        cursors_ = nullptr;
    }

private:
    // 128 bytes apart, not 64: the adjacent-line prefetcher fetches 128-byte pairs, which would
    // make the two cursors (and the first slot) share traffic.
    struct Cursors {
        alignas(128) std::atomic<uint64_t> head{0};  // messages published; written by the producer
        alignas(128) std::atomic<uint64_t> tail{0};  // messages consumed; written by the consumer
    };

    size_t size_ = 0, stride_ = 0, bytes_ = 0;
    uint64_t capacity_ = 0;
    Cursors *cursors_ = nullptr;
    char *slots_ = nullptr;
    // Process-local, as in the original: this side's position, the other side's cursor as last
    // read, and the slot index (pos_ % capacity_ kept without a division).
    uint64_t pos_ = 0, seen_ = 0, slot_ = 0;
};

}  // namespace bench
