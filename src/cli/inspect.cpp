#include "inspect.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>

namespace join::shm::cli {

namespace {

// Closes on every path out of inspect().
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

template <class T>
T read(const unsigned char *raw, size_t offset) {
    T v;
    std::memcpy(&v, raw + offset, sizeof v);
    return v;
}

const char *typeName(mode_t mode) {
    if (S_ISDIR(mode)) return "directory";
    if (S_ISLNK(mode)) return "symlink";
    if (S_ISFIFO(mode)) return "fifo";
    if (S_ISSOCK(mode)) return "socket";
    if (S_ISCHR(mode)) return "character device";
    if (S_ISBLK(mode)) return "block device";
    return "unknown file type";
}

// O_NONBLOCK so that a FIFO swapped in after fstatat cannot block us; O_NOFOLLOW for symlinks
// swapped in likewise. O_NOATIME keeps even the access time as it was, where we may ask for it.
int openReadOnly(int dirFd, const char *name) {
    const int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = openat(dirFd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = openat(dirFd, name, flags);
    return fd;
}

// Reads up to size bytes at offset; returns how many, or -1 with errno.
ssize_t preadFully(int fd, void *buffer, size_t size, off_t offset) {
    size_t done = 0;
    while (done < size) {
        ssize_t n = pread(fd, static_cast<char *>(buffer) + done, size - done, offset + static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

Fields parse(const unsigned char *raw) {
    Fields f;
    f.magic = read<uint64_t>(raw, offsetof(Header, magic));
    f.version = read<uint32_t>(raw, offsetof(Header, version));
    f.policy = read<uint32_t>(raw, offsetof(Header, policy));
    f.elementSize = read<uint64_t>(raw, offsetof(Header, element_size));
    f.capacity = read<uint64_t>(raw, offsetof(Header, capacity));
    f.slotStride = read<uint64_t>(raw, offsetof(Header, slot_stride));
    f.slotsOffset = read<uint64_t>(raw, offsetof(Header, slots_offset));
    f.totalSize = read<uint64_t>(raw, offsetof(Header, total_size));
    f.state = read<uint32_t>(raw, offsetof(Header, state));
    f.creatorPid = read<uint32_t>(raw, offsetof(Header, creator_pid));
    f.creatorIdentity = read<uint64_t>(raw, offsetof(Header, creator_identity));
    f.producerHolding = read<uint32_t>(raw, offsetof(Header, producer_holder));
    f.consumerHolding = read<uint32_t>(raw, offsetof(Header, consumer_holder));
    f.skipped = read<uint64_t>(raw, offsetof(Header, skipped));
    f.head = read<uint64_t>(raw, offsetof(Header, head));
    f.tail = read<uint64_t>(raw, offsetof(Header, tail));
    f.notEmpty = read<uint32_t>(raw, offsetof(Header, not_empty) + offsetof(WaitWord, word));
    f.notFull = read<uint32_t>(raw, offsetof(Header, not_full) + offsetof(WaitWord, word));
    f.maxSubscribers = read<uint32_t>(raw, offsetof(Header, max_subscribers));
    f.overflow = read<uint32_t>(raw, offsetof(Header, overflow));
    return f;
}

std::string format(const char *fmt, unsigned long long a, unsigned long long b = 0, unsigned long long c = 0) {
    char text[160];
    std::snprintf(text, sizeof text, fmt, a, b, c);
    return text;
}

// Empty when the header is consistent with itself and with the file; otherwise why not.
std::string validate(const Fields &f, uint64_t fileSize, Geometry &g) {
    if (f.elementSize == 0) return "element size is 0";
    if (f.capacity == 0) return "capacity is 0";
    const bool broadcast = f.policy == 4;  // JOIN_SHM_BROADCAST
    if (broadcast && (f.maxSubscribers == 0 || f.maxSubscribers > kMaxSubscribers))
        return format("max_subscribers is %llu, at most %llu are allowed", f.maxSubscribers, kMaxSubscribers);
    if (!computeGeometry(f.elementSize, f.capacity, g, broadcast ? f.maxSubscribers : 0))
        return format("element size %llu times capacity %llu is too large for a segment", f.elementSize, f.capacity);
    if (f.slotStride != g.slot_stride)
        return format("slot stride is %llu, its element size %llu needs %llu", f.slotStride, f.elementSize,
                      g.slot_stride);
    if (f.slotsOffset != g.slots_offset)
        return format("slots offset is %llu, layout version %llu puts slots at %llu", f.slotsOffset, kLayoutVersion,
                      g.slots_offset);
    if (f.totalSize != g.total_size)
        return format("total size is %llu, its parameters need %llu", f.totalSize, g.total_size);
    if (fileSize != g.total_size) return format("file is %llu bytes, its header says %llu", fileSize, g.total_size);
    return {};
}

// The records in use, read in one pread (the table lies inside a validated geometry). shortRead
// says the file shrank meanwhile: the records read whole are still reported.
std::vector<Participant> readParticipants(int fd, bool &shortRead) {
    using Record = join::shm::Participant;
    std::vector<unsigned char> raw(kMaxParticipants * sizeof(Record));
    const ssize_t got = preadFully(fd, raw.data(), raw.size(), static_cast<off_t>(kParticipantsOffset));
    const size_t records = got < 0 ? 0 : static_cast<size_t>(got) / sizeof(Record);
    shortRead = records < kMaxParticipants;
    std::vector<Participant> out;
    for (size_t i = 0; i < records; ++i) {
        const unsigned char *record = raw.data() + i * sizeof(Record);
        const auto identity = read<uint64_t>(record, offsetof(Record, identity));
        if (identity == 0) continue;  // free
        Participant p;
        p.index = static_cast<uint32_t>(i);
        p.role = read<uint32_t>(record, offsetof(Record, role));
        p.generation = read<uint32_t>(record, offsetof(Record, generation)) & kGenerationMask;
        p.pid = identityPid(identity);
        p.startTicks = identity >> kIdentityPidBits;
        p.alive = identityAlive(identity);  // bounded: identityPid() has 22 bits, never 0 or -1 to kill()
        p.intent = read<uint64_t>(record, offsetof(Record, intent));
        out.push_back(p);
    }
    return out;
}

// A single-holder role's word names a holding: a record index and its generation, as the library
// judges it (participants.cpp): the record must be in use and still in that generation.
Role roleOf(uint32_t word, bool many, uint32_t role, const std::vector<Participant> &participants) {
    Role r;
    r.many = many;
    r.word = many ? 0 : word;
    for (const Participant &p : participants) {
        const bool holds = many ? p.role == role
                                : word != 0 && holdingGeneration(word) != 0 && p.index == holdingIndex(word) &&
                                      p.generation == holdingGeneration(word);
        if (holds) r.holders.push_back(p);
    }
    return r;
}

// Counts slot states from each slot's SlotHeader, read one by one: bounded by kSlotSummaryLimit
// preads, whatever the element size. Called only with a validated geometry, so no offset overflows.
SlotSummary summarise(int fd, const Fields &f, const Geometry &g) {
    SlotSummary s;
    if (f.capacity > kSlotSummaryLimit) {
        s.whyNot = format("not counted: more than %llu slots", kSlotSummaryLimit);
        return s;
    }
    for (uint64_t i = 0; i < f.capacity; ++i) {
        unsigned char raw[kSlotHeaderSize];
        const uint64_t offset = g.slots_offset + i * g.slot_stride + g.header_offset;
        if (preadFully(fd, raw, sizeof raw, static_cast<off_t>(offset)) != static_cast<ssize_t>(sizeof raw)) {
            s.whyNot = "not counted: the file shrank while being read";
            return s;
        }
        const uint64_t seq = read<uint64_t>(raw, offsetof(SlotHeader, seq));
        const uint64_t code = seq & 3, position = seq >> 2;
        if (position % f.capacity != i || code > kAbandoned)
            ++s.inconsistent;
        else if (code == kFree)
            ++s.free;
        else if (code == kFull && position >= f.tail)
            ++s.full;
        else if (code == kFull)
            ++s.free;  // consumed: an SPSC consumer frees slots by moving tail alone
        else
            ++s.abandoned;
    }
    s.done = true;
    return s;
}

}  // namespace

// A broadcast ring's subscriber records in use (max_subscribers was validated with the geometry).
std::vector<Subscriber> readSubscribers(int fd, const Segment &s) {
    using Record = join::shm::Subscriber;
    std::vector<unsigned char> raw(s.f.maxSubscribers * sizeof(Record));
    const ssize_t got = preadFully(fd, raw.data(), raw.size(), static_cast<off_t>(join::shm::kSubscribersOffset));
    const size_t records = got < 0 ? 0 : static_cast<size_t>(got) / sizeof(Record);
    std::vector<Subscriber> out;
    for (size_t i = 0; i < records; ++i) {
        const unsigned char *record = raw.data() + i * sizeof(Record);
        const auto holding = read<uint32_t>(record, offsetof(Record, holding));
        if (holding == 0) continue;
        Subscriber sub;
        sub.index = static_cast<uint32_t>(i);
        for (const Participant &p : s.participants)
            if (p.index == holdingIndex(holding) && p.generation == holdingGeneration(holding)) {
                sub.pid = p.pid;
                sub.alive = p.alive;
            }
        const uint64_t lag = s.f.head - read<uint64_t>(record, offsetof(Record, position));
        sub.lag = lag > s.f.capacity ? s.f.capacity : lag;
        out.push_back(sub);
    }
    return out;
}

Segment inspect(int dirFd, const std::string &name, bool summariseSlots) {
    Segment s;
    s.name = name;
    struct stat st;
    if (fstatat(dirFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        s.kind = errno == ENOENT ? Kind::Missing : Kind::Unreadable;
        s.problem = std::strerror(errno);
        return s;
    }
    s.st = st;
    s.haveStat = true;
    if (!S_ISREG(st.st_mode)) {
        s.kind = Kind::NotRegular;
        s.problem = typeName(st.st_mode);
        return s;
    }
    Fd fd;
    fd.fd = openReadOnly(dirFd, name.c_str());
    if (fd.fd < 0) {
        // Replaced by a symlink or removed since fstatat.
        s.kind = errno == ELOOP ? Kind::NotRegular : errno == ENOENT ? Kind::Missing : Kind::Unreadable;
        s.problem = errno == ELOOP ? "symlink" : std::strerror(errno);
        return s;
    }
    if (fstat(fd.fd, &st) != 0) {
        s.kind = Kind::Unreadable;
        s.problem = std::strerror(errno);
        return s;
    }
    s.st = st;
    if (!S_ISREG(st.st_mode)) {
        s.kind = Kind::NotRegular;
        s.problem = typeName(st.st_mode);
        return s;
    }
    alignas(Header) unsigned char raw[sizeof(Header)] = {};
    const ssize_t got = preadFully(fd.fd, raw, sizeof raw, 0);
    if (got < 0) {
        s.kind = Kind::Unreadable;
        s.problem = std::strerror(errno);
        return s;
    }
    if (got < static_cast<ssize_t>(sizeof(uint64_t)) || read<uint64_t>(raw, 0) != kMagic) {
        s.kind = Kind::Foreign;
        return s;
    }
    s.kind = Kind::Ring;
    s.state = RingState::Corrupt;
    if (got < static_cast<ssize_t>(sizeof raw)) {
        s.corruptWhy = format("file is %llu bytes, too short for the %llu-byte header",
                              static_cast<unsigned long long>(got), sizeof raw);
        return s;
    }
    s.haveHeader = true;
    s.f = parse(raw);
    const Fields &f = s.f;
    s.creatorAlive = creatorAlive(f.creatorPid, f.creatorIdentity);
    if (f.version != kLayoutVersion)
        s.corruptWhy = format("layout version %llu, this tool reads version %llu", f.version, kLayoutVersion);
    else if (f.policy < 1 || f.policy > 4)
        s.corruptWhy = format("policy %llu is none of SPSC (1), MPSC (2), MPMC (3), BROADCAST (4)", f.policy);
    else if (f.state != static_cast<uint32_t>(State::Ready) && f.state != static_cast<uint32_t>(State::Initialising))
        s.corruptWhy = format("state %llu is neither initialising (0) nor ready (1)", f.state);
    else if (f.state == static_cast<uint32_t>(State::Initialising))
        s.state = RingState::Initialising;  // the creator may not have written the rest yet: judge nothing
    else
        s.corruptWhy = validate(f, static_cast<uint64_t>(st.st_size), s.geometry);
    if (s.state == RingState::Initialising || !s.corruptWhy.empty()) return s;

    s.state = RingState::Ready;
    // As the library's pendingCount: the cursors may be mid-update or lying.
    const auto diff = static_cast<int64_t>(f.head - f.tail);
    s.pending = diff <= 0 ? 0 : static_cast<uint64_t>(diff) > f.capacity ? f.capacity : static_cast<uint64_t>(diff);
    s.participants = readParticipants(fd.fd, s.participantsShort);
    if (s.f.policy == 4) s.subscribers = readSubscribers(fd.fd, s);
    // SPSC and broadcast rings have one producer (the publisher), named by producer_holder; MPMC
    // and broadcast rings have many consumers (subscribers), found in the participant table.
    s.producer = roleOf(f.producerHolding, f.policy == 2 || f.policy == 3, 1, s.participants);
    s.consumer = roleOf(f.consumerHolding, f.policy == 3 || f.policy == 4, 2, s.participants);
    s.consumersSleep = (f.notEmpty & 1) != 0;
    s.producersSleep = (f.notFull & 1) != 0;
    if (summariseSlots) s.slots = summarise(fd.fd, f, s.geometry);
    return s;
}

bool carriesMagic(int dirFd, const std::string &name) {
    struct stat st;
    if (fstatat(dirFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return false;
    Fd fd;
    fd.fd = openReadOnly(dirFd, name.c_str());
    uint64_t magic = 0;
    return fd.fd >= 0 && fstat(fd.fd, &st) == 0 && S_ISREG(st.st_mode) &&
           preadFully(fd.fd, &magic, sizeof magic, 0) == static_cast<ssize_t>(sizeof magic) && magic == kMagic;
}

const char *policyName(uint32_t policy) {
    switch (policy) {
        case 1:
            return "SPSC";
        case 2:
            return "MPSC";
        case 3:
            return "MPMC";
        case 4:
            return "BROADCAST";
        default:
            return "?";
    }
}

const char *kindName(Kind kind) {
    switch (kind) {
        case Kind::Missing:
            return "missing";
        case Kind::NotRegular:
            return "not a regular file";
        case Kind::Unreadable:
            return "unreadable";
        case Kind::Foreign:
            return "not join-shm";
        case Kind::Ring:
            break;
    }
    return "ring";
}

const char *stateName(RingState state) {
    switch (state) {
        case RingState::Ready:
            return "ready";
        case RingState::Initialising:
            return "initialising";
        case RingState::Corrupt:
            break;
    }
    return "corrupt";
}

std::string endpointBase(const std::string &name) {
    if (name.size() <= 3) return {};
    const std::string suffix = name.substr(name.size() - 3);
    return suffix == "_AB" || suffix == "_BA" ? name.substr(0, name.size() - 3) : std::string{};
}

}  // namespace join::shm::cli
