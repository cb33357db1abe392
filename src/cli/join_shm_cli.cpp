// join-shm: lists, describes and removes libjoin-shm rings (files in /dev/shm).
//
//   join-shm [--dir DIR] ls [--all] [--json]
//   join-shm [--dir DIR] stat [--json] NAME
//   join-shm [--dir DIR] rm [--force] NAME...
//   join-shm bridge out|in NAME ...   (bridge.cpp; built only with libnats)
//
// Inspection only reads (pread into a private copy, see inspect.hpp): it never maps, writes or
// locks a segment, so running it next to live processes, or on hostile files, changes nothing.
#include "inspect.hpp"
#ifdef JOIN_SHM_CLI_NATS
#include "bridge.hpp"
#endif

#include <fmt/core.h>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#ifndef JOIN_SHM_CLI_VERSION
#define JOIN_SHM_CLI_VERSION "unknown"
#endif

namespace {

using namespace join::shm;
using namespace join::shm::cli;

constexpr int kOk = 0, kError = 1, kUsage = 2;

constexpr const char *kUsageText = R"(Usage: join-shm [--dir DIR] COMMAND [OPTIONS]

Inspects and removes libjoin-shm rings (POSIX shared memory segments).

Commands:
  ls [--all] [--json]    list the rings in DIR: policy, element size, capacity, pending elements,
                         producers and consumers (pids, alive or dead), sleepers, skipped positions,
                         state
  stat [--json] NAME     everything about one ring, every participant included (both rings if NAME
                         is an endpoint)
  rm [--force] NAME...   remove rings (NAME_AB and NAME_BA if NAME is an endpoint); files without
                         the join-shm magic are left alone unless --force
  bridge out|in NAME ... carry a ring over NATS to another host (join-shm bridge --help)

Options:
  --dir DIR      where the segments are (default /dev/shm)
  --all          ls: also list other programs' files, unreadable files and non-regular files
  --json         ls, stat: JSON on standard output
  --force        rm: remove the names even if they are not join-shm segments
  -h, --help     show this text
  --version      show the tool's version and the segment layout version it reads

Segments are read, never mapped or written: listing corrupt or hostile files is safe. Pending
counts, pids and sleepers are a snapshot of a moving ring. Exit status: 0 ok, 1 error, 2 usage.
)";

struct Options {
    std::string dir = "/dev/shm";
    std::string command;
    std::vector<std::string> names;
    bool all = false, json = false, force = false;
};

// --- text and JSON escaping -------------------------------------------------------------------
// Names come from the file system and header bytes from anyone: neither may inject terminal
// escapes into a table or break a JSON document.

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlongs, no surrogates, at most
// U+10FFFF) with its code point in cp; 0 if ill-formed.
size_t utf8Sequence(std::string_view s, size_t i, uint32_t &cp) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char lead = byte(i);
    size_t length = 0;
    uint32_t min = 0;
    if (lead < 0x80) {
        cp = lead;
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2, min = 0x80, cp = lead & 0x1fu;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3, min = 0x800, cp = lead & 0x0fu;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4, min = 0x10000, cp = lead & 0x07u;
    } else {
        return 0;
    }
    if (i + length > s.size()) return 0;
    for (size_t k = 1; k < length; ++k) {
        if ((byte(i + k) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (byte(i + k) & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return length;
}

// For tables: control characters (C0, DEL, C1), backslashes and ill-formed bytes as \xNN.
std::string printable(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        const size_t n = utf8Sequence(s, i, cp);
        if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || cp == '\\') {
            const size_t bytes = n == 0 ? 1 : n;
            for (size_t k = 0; k < bytes; ++k)
                out += fmt::format("\\x{:02x}", static_cast<unsigned char>(s[i + k]));
            i += bytes;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

// Columns measured in code points, as the terminal will mostly show them.
size_t displayWidth(std::string_view s) {
    return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xc0) != 0x80; }));
}

// A JSON string. Ill-formed UTF-8 (a file name may be any bytes) becomes U+FFFD: the document stays
// valid, at the price of such a name not round-tripping.
std::string quote(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        const size_t n = utf8Sequence(s, i, cp);
        if (n == 0) {
            out += "\\ufffd";
            i += 1;
            continue;
        }
        if (cp == '"') {
            out += "\\\"";
        } else if (cp == '\\') {
            out += "\\\\";
        } else if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\t') {
            out += "\\t";
        } else if (cp < 0x20 || cp == 0x7f) {
            out += fmt::format("\\u{:04x}", cp);
        } else {
            out.append(s.substr(i, n));
        }
        i += n;
    }
    return out + "\"";
}

// Builds one JSON object; values are already JSON text.
class JsonObject {
public:
    JsonObject &add(std::string_view key, const std::string &json) {
        text_ += text_.size() > 1 ? "," : "";
        text_ += quote(key) + ":" + json;
        return *this;
    }
    JsonObject &add(std::string_view key, uint64_t n) { return add(key, std::to_string(n)); }
    JsonObject &add(std::string_view key, bool b) { return add(key, std::string(b ? "true" : "false")); }
    std::string str() const { return text_ + "}"; }

private:
    std::string text_ = "{";
};

const std::string kNull = "null";

// --- what a segment looks like ------------------------------------------------------------------

bool isRing(const Segment &s) { return s.kind == Kind::Ring; }
bool isReady(const Segment &s) { return isRing(s) && s.state == RingState::Ready; }

// "ready", "corrupt: <why>", "not a regular file (fifo)", "unreadable: <error>", ...
std::string statusText(const Segment &s) {
    switch (s.kind) {
        case Kind::Ring:
            return s.state == RingState::Corrupt ? "corrupt: " + s.corruptWhy : stateName(s.state);
        case Kind::NotRegular:
            return fmt::format("not a regular file ({})", s.problem);
        case Kind::Unreadable:
            return "unreadable: " + s.problem;
        case Kind::Missing:
            return "missing: " + s.problem;
        case Kind::Foreign:
            break;
    }
    return kindName(s.kind);
}

std::string pidText(uint32_t pid, bool alive) { return fmt::format("{} ({})", pid, alive ? "alive" : "dead"); }

// How many holders of a shared role a table cell names before it only counts the rest.
constexpr size_t kHoldersShown = 2;

// "-" for nobody; "4123 (alive), 4130 (dead)"; past kHoldersShown, "..., +5 more (4 alive)"; "gone"
// for a single-holder role whose word names no record in use (its holder died, its record was reused).
std::string roleText(const Role &r) {
    if (r.holders.empty()) return !r.many && r.word != 0 ? "gone" : "-";
    std::string text;
    size_t aliveRest = 0;
    for (size_t i = 0; i < r.holders.size(); ++i) {
        const cli::Participant &p = r.holders[i];
        if (i < kHoldersShown)
            text += (i ? ", " : "") + pidText(p.pid, p.alive);
        else
            aliveRest += p.alive ? 1 : 0;
    }
    if (r.holders.size() > kHoldersShown)
        text += fmt::format(", +{} more ({} alive)", r.holders.size() - kHoldersShown, aliveRest);
    return text;
}

// A broadcast ring's CONSUMER cell: "4123 (alive) lag 0, 4130 (dead) lag 1024", counting past
// kHoldersShown as roleText does.
std::string subscribersText(const Segment &s) {
    if (s.subscribers.empty()) return "-";
    std::string text;
    size_t aliveRest = 0;
    for (size_t i = 0; i < s.subscribers.size(); ++i) {
        const cli::Subscriber &sub = s.subscribers[i];
        if (i < kHoldersShown)
            text += (i ? ", " : "") + pidText(sub.pid, sub.alive) + " lag " + std::to_string(sub.lag);
        else
            aliveRest += sub.alive ? 1 : 0;
    }
    if (s.subscribers.size() > kHoldersShown)
        text += fmt::format(", +{} more ({} alive)", s.subscribers.size() - kHoldersShown, aliveRest);
    return text;
}

const char *participantRole(uint32_t role) { return role == 1 ? "producer" : role == 2 ? "consumer" : "unknown"; }

// An intent is 2 * position + side (layout.hpp): the cursor its holder was about to move.
std::string intentText(uint64_t intent) {
    if (intent == kNoIntent) return "no intent";
    return fmt::format("intent pending: {} from position {}", (intent & 1) ? "tail" : "head", intent >> 1);
}

// "0x305 (record 5, generation 3)"; the record may be out of the table's range: it is only shown.
std::string holdingText(uint32_t word) {
    if (word == 0) return "0 (nobody)";
    return fmt::format("{:#x} (record {}, generation {})", word, holdingIndex(word), holdingGeneration(word));
}

std::string sleepersText(const Segment &s) {
    if (s.consumersSleep && s.producersSleep) return "both";
    if (s.consumersSleep) return "consumer";
    if (s.producersSleep) return "producer";
    return "-";
}

std::string participantJson(const cli::Participant &p) {
    JsonObject o;
    o.add("index", uint64_t{p.index})
        .add("role", quote(participantRole(p.role)))
        .add("role_code", uint64_t{p.role})
        .add("pid", uint64_t{p.pid})
        .add("start_time", p.startTicks)
        .add("alive", p.alive)
        .add("generation", uint64_t{p.generation})
        .add("intent_pending", p.intentPending());
    if (p.intentPending())
        o.add("intent",
              JsonObject().add("cursor", quote((p.intent & 1) ? "tail" : "head")).add("position", p.intent >> 1).str());
    else
        o.add("intent", kNull);
    return o.str();
}

// pid and alive name the holder of a single-holder role (null when nobody holds it; pid null and
// alive false when its word names a holder gone); holders lists every process in the role.
std::string roleJson(const Role &r) {
    JsonObject o;
    o.add("many", r.many);
    if (r.many || r.holders.empty())
        o.add("pid", kNull).add("alive", r.many || r.word == 0 ? kNull : std::string("false"));
    else
        o.add("pid", uint64_t{r.holders[0].pid}).add("alive", r.holders[0].alive);
    std::string holders;
    for (const cli::Participant &p : r.holders)
        holders += (holders.empty() ? "" : ",") +
                   JsonObject().add("index", uint64_t{p.index}).add("pid", uint64_t{p.pid}).add("alive", p.alive).str();
    o.add("holders", "[" + holders + "]");
    return o.str();
}

// A broadcast ring's subscriber records in use, for ls and stat.
std::string subscribersJson(const Segment &s) {
    std::string subscribers;
    for (const cli::Subscriber &sub : s.subscribers)
        subscribers += (subscribers.empty() ? "" : ",") + JsonObject()
                                                              .add("index", uint64_t{sub.index})
                                                              .add("pid", uint64_t{sub.pid})
                                                              .add("alive", sub.alive)
                                                              .add("lag", sub.lag)
                                                              .str();
    return "[" + subscribers + "]";
}

// Status words for JSON: one of ready, initialising, corrupt, not join-shm, not a regular file,
// unreadable, missing; the details go to "reason".
std::string statusWord(const Segment &s) { return isRing(s) ? stateName(s.state) : kindName(s.kind); }
std::string reasonJson(const Segment &s) {
    if (isRing(s)) return s.state == RingState::Corrupt ? quote(s.corruptWhy) : kNull;
    return s.problem.empty() ? kNull : quote(s.problem);
}

// The fields ls shows; stat's JSON starts from these too.
JsonObject summaryJson(const Segment &s, const std::string &endpoint) {
    JsonObject o;
    o.add("name", quote(s.name));
    o.add("endpoint", endpoint.empty() ? kNull : quote(endpoint));
    o.add("status", quote(statusWord(s)));
    o.add("reason", reasonJson(s));
    const bool policyKnown = isRing(s) && s.state != RingState::Corrupt;
    o.add("policy", policyKnown ? quote(policyName(s.f.policy)) : kNull);
    const bool ready = isReady(s);
    o.add("element_size", ready ? std::to_string(s.f.elementSize) : kNull);
    o.add("capacity", ready ? std::to_string(s.f.capacity) : kNull);
    o.add("pending", ready ? std::to_string(s.pending) : kNull);
    o.add("producer", ready ? roleJson(s.producer) : kNull);
    o.add("consumer", ready ? roleJson(s.consumer) : kNull);
    o.add("sleepers",
          ready ? JsonObject().add("consumers", s.consumersSleep).add("producers", s.producersSleep).str() : kNull);
    o.add("skipped", ready ? std::to_string(s.f.skipped) : kNull);
    return o;
}

// --- directory access ---------------------------------------------------------------------------

struct Dir {
    DIR *dir = nullptr;
    ~Dir() {
        if (dir) closedir(dir);
    }
    int fd() const { return dirfd(dir); }
};

bool openDir(const Options &o, Dir &d) {
    d.dir = opendir(o.dir.c_str());
    if (!d.dir) fmt::print(stderr, "join-shm: cannot open directory {}: {}\n", printable(o.dir), std::strerror(errno));
    return d.dir != nullptr;
}

// "orders" and "/orders" are the same segment, as for the library. Returns false (with a message)
// for names that are not a single file name.
bool normalise(const std::string &command, std::string &name) {
    if (!name.empty() && name[0] == '/') name.erase(0, 1);
    const char *why = nullptr;
    if (name.empty())
        why = "is empty";
    else if (name.find('/') != std::string::npos)
        why = "has a '/' after its first character";
    else if (name == "." || name == "..")
        why = "is reserved by the file system";
    else if (name.size() > NAME_MAX)
        why = "is too long";
    if (why) fmt::print(stderr, "join-shm: {}: the name \"{}\" {}\n", command, printable(name), why);
    return why == nullptr;
}

bool exists(int dirFd, const std::string &name) {
    struct stat st;
    return fstatat(dirFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

// The names under which NAME is found: itself, else the rings of endpoint NAME that exist.
std::vector<std::string> resolve(int dirFd, const std::string &name) {
    if (exists(dirFd, name)) return {name};
    std::vector<std::string> found;
    for (const char *suffix : {"_AB", "_BA"})
        if (exists(dirFd, name + suffix)) found.push_back(name + suffix);
    return found;
}

// --- ls -------------------------------------------------------------------------------------------

int commandLs(const Options &o) {
    Dir d;
    if (!openDir(o, d)) return kError;
    std::vector<std::string> names;
    errno = 0;
    while (dirent *e = readdir(d.dir)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
        errno = 0;
    }
    if (errno != 0) {
        fmt::print(stderr, "join-shm: ls: cannot read directory {}: {}\n", printable(o.dir), std::strerror(errno));
        return kError;
    }
    std::sort(names.begin(), names.end());

    std::vector<Segment> shown;
    std::set<std::string> rings;
    for (const std::string &name : names) {
        Segment s = inspect(d.fd(), name, false);
        if (s.kind == Kind::Missing) continue;  // removed while we listed
        if (!isRing(s) && !o.all) continue;
        if (isRing(s)) rings.insert(name);
        shown.push_back(std::move(s));
    }
    // X_AB and X_BA both present: the two rings of endpoint X.
    const auto endpointOf = [&](const std::string &name) {
        const std::string base = endpointBase(name);
        if (base.empty() || !rings.count(name)) return std::string{};
        const bool ab = name.compare(name.size() - 3, 3, "_AB") == 0;
        return rings.count(base + (ab ? "_BA" : "_AB")) ? base : std::string{};
    };

    if (o.json) {
        std::string out = "{" + quote("dir") + ":" + quote(o.dir) + "," + quote("segments") + ":[";
        for (size_t i = 0; i < shown.size(); ++i) {
            JsonObject ring = summaryJson(shown[i], endpointOf(shown[i].name));
            if (isReady(shown[i]) && shown[i].f.policy == 4) ring.add("subscribers", subscribersJson(shown[i]));
            out += (i ? ",\n" : "\n") + ring.str();
        }
        out += shown.empty() ? "]}\n" : "\n]}\n";
        fmt::print("{}", out);
        return kOk;
    }

    using Row = std::vector<std::string>;
    const Row heading = {"NAME",     "POLICY",   "ELEM",     "CAPACITY", "PENDING",
                         "PRODUCER", "CONSUMER", "SLEEPERS", "SKIPPED",  "STATE"};
    const std::vector<bool> right = {false, false, true, true, true, false, false, false, true, false};
    std::vector<Row> rows = {heading};
    for (const Segment &s : shown) {
        Row r(heading.size(), "-");
        r[0] = printable(s.name);
        if (isRing(s) && s.state != RingState::Corrupt) r[1] = policyName(s.f.policy);
        if (isReady(s)) {
            r[2] = std::to_string(s.f.elementSize);
            r[3] = std::to_string(s.f.capacity);
            r[4] = std::to_string(s.pending);
            r[5] = roleText(s.producer);
            r[6] = s.f.policy == 4 ? subscribersText(s) : roleText(s.consumer);  // broadcast: with lags
            r[7] = sleepersText(s);
            r[8] = std::to_string(s.f.skipped);
        }
        const std::string endpoint = endpointOf(s.name);
        r[9] = printable(statusText(s)) + (endpoint.empty() ? "" : ", endpoint " + printable(endpoint));
        rows.push_back(std::move(r));
    }
    std::vector<size_t> width(heading.size(), 0);
    for (const Row &r : rows)
        for (size_t c = 0; c < r.size(); ++c)
            width[c] = std::max(width[c], displayWidth(r[c]));
    for (const Row &r : rows) {
        std::string line;
        for (size_t c = 0; c < r.size(); ++c) {
            const std::string fill(width[c] - displayWidth(r[c]), ' ');
            if (c + 1 == r.size())
                line += r[c];  // no trailing blanks after the last column
            else
                line += (right[c] ? fill + r[c] : r[c] + fill) + "  ";
        }
        fmt::print("{}\n", line);
    }
    return kOk;
}

// --- stat -----------------------------------------------------------------------------------------

std::string userName(uid_t uid) {
    passwd pw, *found = nullptr;
    char buffer[1024];
    return getpwuid_r(uid, &pw, buffer, sizeof buffer, &found) == 0 && found ? found->pw_name : std::to_string(uid);
}
std::string groupName(gid_t gid) {
    group gr, *found = nullptr;
    char buffer[1024];
    return getgrgid_r(gid, &gr, buffer, sizeof buffer, &found) == 0 && found ? found->gr_name : std::to_string(gid);
}

std::string waitWordText(uint32_t word, const char *who) {
    return fmt::format("{:#010x} (epoch {}, {})", word, word >> 1,
                       (word & 1) ? fmt::format("{} asleep", who) : "none asleep");
}

void printStat(const Options &o, const Segment &s) {
    const auto line = [](std::string_view label, const std::string &value) { fmt::print("{:<15} {}\n", label, value); };
    line("name", printable(s.name));
    line("path", printable(o.dir + "/" + s.name));
    if (s.haveStat)
        line("file", fmt::format("{} bytes, mode {:04o}, owner {}:{} (uid {}, gid {})", s.st.st_size,
                                 s.st.st_mode & 07777, printable(userName(s.st.st_uid)),
                                 printable(groupName(s.st.st_gid)), s.st.st_uid, s.st.st_gid));
    line("status", printable(statusText(s)));
    if (!isRing(s)) return;
    const Fields &f = s.f;
    if (isReady(s)) {
        line("policy", fmt::format("{} ({})", policyName(f.policy), f.policy));
        line("element size", std::to_string(f.elementSize));
        line("capacity", std::to_string(f.capacity));
        line("pending", fmt::format("{} (a snapshot: head {}, tail {})", s.pending, f.head, f.tail));
        line("producer", roleText(s.producer));
        line("consumer", roleText(s.consumer));
        line("participants", fmt::format("{} of {} records in use{}", s.participants.size(), kMaxParticipants,
                                         s.participantsShort ? " (the file shrank while the table was read)" : ""));
        for (const cli::Participant &p : s.participants)
            fmt::print("  #{:<4} {:<9} pid {:<17} generation {:<8} {}\n", p.index, participantRole(p.role),
                       pidText(p.pid, p.alive), p.generation, intentText(p.intent));
        if (f.policy == 4) {  // broadcast (the tool does not include <join/shm.h>)
            line("subscribers", fmt::format("{} of {} ({} mode)", s.subscribers.size(), f.maxSubscribers,
                                            f.overflow == 2 ? "overwrite" : "block"));
            for (const cli::Subscriber &sub : s.subscribers)
                fmt::print("  #{:<4} pid {:<17} lag {}\n", sub.index, pidText(sub.pid, sub.alive), sub.lag);
        }
        line("sleepers", sleepersText(s));
        line("skipped", std::to_string(f.skipped));
        if (s.slots.done)
            line("slots", fmt::format("{} free, {} full, {} abandoned, {} inconsistent", s.slots.free, s.slots.full,
                                      s.slots.abandoned, s.slots.inconsistent));
        else
            line("slots", s.slots.whyNot);
    }
    if (s.haveHeader) {
        fmt::print("header (as read, unverified where the status says corrupt):\n");
        line("  magic", fmt::format("{:#018x}", f.magic));
        line("  version", std::to_string(f.version));
        line("  policy", fmt::format("{} ({})", f.policy, policyName(f.policy)));
        line("  element_size", std::to_string(f.elementSize));
        line("  capacity", std::to_string(f.capacity));
        line("  slot_stride", std::to_string(f.slotStride));
        line("  slots_offset", std::to_string(f.slotsOffset));
        line("  total_size", std::to_string(f.totalSize));
        line("  state", fmt::format("{} ({})", f.state, f.state == 1 ? "ready" : f.state == 0 ? "initialising" : "?"));
        line("  creator_pid", pidText(f.creatorPid, s.creatorAlive));
        line("  creator_identity", fmt::format("{:#x} (pid {}, start time {})", f.creatorIdentity,
                                               identityPid(f.creatorIdentity), f.creatorIdentity >> kIdentityPidBits));
        line("  producer_holder", holdingText(f.producerHolding));
        line("  consumer_holder", holdingText(f.consumerHolding));
        line("  skipped", std::to_string(f.skipped));
        line("  head", std::to_string(f.head));
        line("  tail", std::to_string(f.tail));
        line("  not_empty", waitWordText(f.notEmpty, "consumers"));
        line("  not_full", waitWordText(f.notFull, "producers"));
    }
    if (isReady(s)) {
        const Geometry &g = s.geometry;
        fmt::print("geometry (computed from element size and capacity):\n");
        line("  slot", fmt::format("{} bytes: element at +0, slot header at +{}", g.slot_stride, g.header_offset));
        line("  slots", fmt::format("at offset {}", g.slots_offset));
        line("  total", fmt::format("{} bytes", g.total_size));
    }
}

std::string statJson(const Options &o, const Segment &s, const std::string &endpoint) {
    JsonObject j = summaryJson(s, endpoint);
    j.add("path", quote(o.dir + "/" + s.name));
    if (s.haveStat)
        j.add("file", JsonObject()
                          .add("size", static_cast<uint64_t>(s.st.st_size))
                          .add("mode", quote(fmt::format("{:04o}", s.st.st_mode & 07777)))
                          .add("uid", uint64_t{s.st.st_uid})
                          .add("gid", uint64_t{s.st.st_gid})
                          .add("user", quote(userName(s.st.st_uid)))
                          .add("group", quote(groupName(s.st.st_gid)))
                          .str());
    else
        j.add("file", kNull);
    if (s.haveHeader) {
        const Fields &f = s.f;
        JsonObject creator;
        creator.add("many", false);
        if (f.creatorPid == 0)
            creator.add("pid", kNull).add("alive", kNull);
        else
            creator.add("pid", uint64_t{f.creatorPid}).add("alive", s.creatorAlive);
        j.add("creator", creator.str());
        j.add("header", JsonObject()
                            .add("magic", quote(fmt::format("{:#018x}", f.magic)))
                            .add("version", uint64_t{f.version})
                            .add("policy", uint64_t{f.policy})
                            .add("element_size", f.elementSize)
                            .add("capacity", f.capacity)
                            .add("slot_stride", f.slotStride)
                            .add("slots_offset", f.slotsOffset)
                            .add("total_size", f.totalSize)
                            .add("state", uint64_t{f.state})
                            .add("creator_pid", uint64_t{f.creatorPid})
                            .add("creator_identity", f.creatorIdentity)
                            .add("producer_holder", uint64_t{f.producerHolding})
                            .add("consumer_holder", uint64_t{f.consumerHolding})
                            .add("skipped", f.skipped)
                            .add("head", f.head)
                            .add("tail", f.tail)
                            .add("not_empty", uint64_t{f.notEmpty})
                            .add("not_full", uint64_t{f.notFull})
                            .str());
    } else {
        j.add("creator", kNull).add("header", kNull);
    }
    if (isReady(s)) {
        const Geometry &g = s.geometry;
        j.add("geometry", JsonObject()
                              .add("slot_header_offset", g.header_offset)
                              .add("slot_stride", g.slot_stride)
                              .add("slots_offset", g.slots_offset)
                              .add("total_size", g.total_size)
                              .str());
        j.add("slots", s.slots.done ? JsonObject()
                                          .add("free", s.slots.free)
                                          .add("full", s.slots.full)
                                          .add("abandoned", s.slots.abandoned)
                                          .add("inconsistent", s.slots.inconsistent)
                                          .str()
                                    : kNull);
        j.add("slots_note", s.slots.done ? kNull : quote(s.slots.whyNot));
        std::string participants;
        for (const cli::Participant &p : s.participants)
            participants += (participants.empty() ? "" : ",") + participantJson(p);
        j.add("participants", "[" + participants + "]");
        j.add("subscribers", subscribersJson(s));
        j.add("participants_note", s.participantsShort ? quote("the file shrank while the table was read") : kNull);
    } else {
        j.add("geometry", kNull).add("slots", kNull).add("slots_note", kNull);
        j.add("participants", kNull).add("participants_note", kNull);
    }
    return j.str();
}

int commandStat(const Options &o) {
    if (o.names.size() != 1) {
        fmt::print(stderr, "join-shm: stat takes one NAME (see --help)\n");
        return kUsage;
    }
    std::string name = o.names[0];
    if (!normalise("stat", name)) return kError;
    Dir d;
    if (!openDir(o, d)) return kError;
    const std::vector<std::string> found = resolve(d.fd(), name);
    if (found.empty()) {
        fmt::print(stderr, "join-shm: stat: no segment \"{}\" in {}\n", printable(name), printable(o.dir));
        return kError;
    }
    std::vector<Segment> segments;
    for (const std::string &n : found) {
        segments.push_back(inspect(d.fd(), n, true));
        const Segment &s = segments.back();
        if (!isRing(s)) {
            fmt::print(stderr, "join-shm: stat: \"{}\" is not a join-shm segment ({})\n", printable(n),
                       printable(statusText(s)));
            return kError;
        }
    }
    const bool endpoint = found[0] != name;
    if (o.json) {
        if (!endpoint) {
            // As ls: X_AB is part of endpoint X when X_BA is a join-shm segment too.
            std::string base = endpointBase(name);
            const bool ab = !base.empty() && name.compare(name.size() - 3, 3, "_AB") == 0;
            if (!base.empty() && !carriesMagic(d.fd(), base + (ab ? "_BA" : "_AB"))) base.clear();
            fmt::print("{}\n", statJson(o, segments[0], base));
        } else {
            std::string rings;
            for (const Segment &s : segments)
                rings += (rings.empty() ? "" : ",") + statJson(o, s, name);
            fmt::print("{}\n", JsonObject().add("endpoint", quote(name)).add("rings", "[" + rings + "]").str());
        }
        return kOk;
    }
    if (endpoint) fmt::print("endpoint {}: {} ring(s)\n\n", printable(name), segments.size());
    for (size_t i = 0; i < segments.size(); ++i) {
        if (i) fmt::print("\n");
        printStat(o, segments[i]);
    }
    return kOk;
}

// --- rm -------------------------------------------------------------------------------------------

int commandRm(const Options &o) {
    if (o.names.empty()) {
        fmt::print(stderr, "join-shm: rm needs at least one NAME (see --help)\n");
        return kUsage;
    }
    Dir d;
    if (!openDir(o, d)) return kError;
    int status = kOk;
    for (std::string name : o.names) {
        if (!normalise("rm", name)) {
            status = kError;
            continue;
        }
        const std::vector<std::string> found = resolve(d.fd(), name);
        if (found.empty()) {
            fmt::print(stderr, "join-shm: rm: no segment \"{}\" in {}\n", printable(name), printable(o.dir));
            status = kError;
        }
        for (const std::string &n : found) {
            // Checked just before unlinking: another program's file renamed into place in between
            // would still go, as with any rm; --force says the user accepts that for every name.
            if (!o.force && !carriesMagic(d.fd(), n)) {
                fmt::print(stderr, "join-shm: rm: \"{}\" is not a join-shm segment; left alone (--force removes it)\n",
                           printable(n));
                status = kError;
            } else if (unlinkat(d.fd(), n.c_str(), 0) != 0) {
                fmt::print(stderr, "join-shm: rm: cannot remove \"{}\": {}\n", printable(n), std::strerror(errno));
                status = kError;
            }
        }
    }
    return status;
}

// --- command line ---------------------------------------------------------------------------------

int usageError(const std::string &message) {
    fmt::print(stderr, "join-shm: {}\nTry 'join-shm --help'.\n", message);
    return kUsage;
}

// Options may come before or after the command; "--" ends them.
int parse(int argc, char **argv, Options &o, bool &done) {
    done = false;
    bool optionsEnded = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (optionsEnded || arg.empty() || arg[0] != '-' || arg == "-") {
            if (o.command.empty())
                o.command = arg;
            else
                o.names.push_back(arg);
        } else if (arg == "--") {
            optionsEnded = true;
        } else if (arg == "-h" || arg == "--help") {
            fmt::print("{}", kUsageText);
            done = true;
            return kOk;
        } else if (arg == "--version") {
            fmt::print("join-shm {} (segment layout version {})\n", JOIN_SHM_CLI_VERSION, kLayoutVersion);
            done = true;
            return kOk;
        } else if (arg == "--dir") {
            if (i + 1 >= argc) return usageError("--dir needs a directory");
            o.dir = argv[++i];
        } else if (arg.rfind("--dir=", 0) == 0) {
            o.dir = arg.substr(6);
        } else if (arg == "--all") {
            o.all = true;
        } else if (arg == "--json") {
            o.json = true;
        } else if (arg == "--force") {
            o.force = true;
        } else {
            return usageError("unknown option " + printable(arg));
        }
    }
    if (o.dir.empty()) return usageError("--dir needs a directory");
    if (o.command.empty()) return usageError("no command given (ls, stat or rm)");
    if (o.command != "ls" && o.command != "stat" && o.command != "rm")
        return usageError("unknown command " + printable(o.command) + " (ls, stat or rm)");
    if (o.all && o.command != "ls") return usageError("--all is for ls");
    if (o.json && o.command == "rm") return usageError("--json is for ls and stat");
    if (o.force && o.command != "rm") return usageError("--force is for rm");
    if (o.command == "ls" && !o.names.empty()) return usageError("ls takes no NAME");
    return kOk;
}

int run(int argc, char **argv) {
    // The bridge has a command line of its own (see bridge.cpp).
    if (argc >= 2 && std::strcmp(argv[1], "bridge") == 0) {
#ifdef JOIN_SHM_CLI_NATS
        return bridgeMain(argc - 2, argv + 2);
#else
        fmt::print(stderr, "join-shm: bridge: this join-shm was built without NATS support (libnats)\n");
        return kUsage;
#endif
    }
    Options o;
    bool done = false;
    if (int r = parse(argc, argv, o, done); r != kOk || done) return r;
    if (o.command == "ls") return commandLs(o);
    if (o.command == "stat") return commandStat(o);
    return commandRm(o);
}

}  // namespace

int main(int argc, char **argv) {
    int status = kUsage;
    try {
        status = run(argc, argv);
    } catch (const std::exception &e) {  // out of memory, or fmt refusing a write
        std::fprintf(stderr, "join-shm: %s\n", e.what());
        return kError;
    }
    // A full disk or closed pipe on stdout is an error, not a silent success.
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        std::fprintf(stderr, "join-shm: cannot write the output: %s\n", std::strerror(errno));
        return kError;
    }
    return status;
}
