// The `join-shm` tool, run as users run it (the JOIN_SHM_CLI environment variable names the binary):
// ls shows a ring other processes hold open, with every producer's and consumer's pid and whether
// it is alive, stat every participant record; rm removes rings and endpoints; crafted, corrupt and
// hostile files (header and participant table) in a private directory are reported, never trusted,
// never changed; JSON output is checked by a strict parser; usage errors exit with 2.
#include "../../src/layout.hpp"
#include "../../src/process.hpp"
#include "../common.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace join::shm;

// --- a strict JSON parser (RFC 8259), so that "valid JSON" is checked, not assumed -----------------

struct Json {
    enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
    bool boolean = false;
    std::string text;  // String: the value (UTF-8); Number: the literal
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json *find(const std::string &key) const {
        for (const auto &m : members)
            if (m.first == key) return &m.second;
        return nullptr;
    }
    const Json &operator[](const std::string &key) const {
        INFO("key \"" << key << "\"");
        REQUIRE(type == Type::Object);
        const Json *j = find(key);
        REQUIRE(j != nullptr);
        return *j;
    }
    bool isNull() const { return type == Type::Null; }
    uint64_t u64() const {
        REQUIRE(type == Type::Number);
        REQUIRE(text.find_first_not_of("0123456789") == std::string::npos);
        errno = 0;
        const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
        REQUIRE(errno == 0);
        return v;
    }
    const std::string &str() const {
        REQUIRE(type == Type::String);
        return text;
    }
    bool flag() const {
        REQUIRE(type == Type::Bool);
        return boolean;
    }
};

class JsonParser {
public:
    explicit JsonParser(std::string_view s) : s_(s) {}
    bool parse(Json &out) {
        ws();
        if (!value(out, 0)) return false;
        ws();
        return i_ == s_.size();
    }
    size_t where() const { return i_; }

private:
    std::string_view s_;
    size_t i_ = 0;

    bool more() const { return i_ < s_.size(); }
    char peek() const { return more() ? s_[i_] : '\0'; }
    void ws() {
        while (more() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
            ++i_;
    }
    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }
    bool value(Json &out, int depth) {
        if (depth > 64) return false;
        switch (peek()) {
            case 'n':
                out.type = Json::Type::Null;
                return literal("null");
            case 't':
                out.type = Json::Type::Bool, out.boolean = true;
                return literal("true");
            case 'f':
                out.type = Json::Type::Bool, out.boolean = false;
                return literal("false");
            case '"':
                out.type = Json::Type::String;
                return string(out.text);
            case '[':
                out.type = Json::Type::Array;
                return array(out, depth);
            case '{':
                out.type = Json::Type::Object;
                return object(out, depth);
            default:
                out.type = Json::Type::Number;
                return number(out.text);
        }
    }
    bool array(Json &out, int depth) {
        ++i_;
        ws();
        if (peek() == ']') return ++i_, true;
        for (;;) {
            out.items.emplace_back();
            ws();
            if (!value(out.items.back(), depth + 1)) return false;
            ws();
            if (peek() == ']') return ++i_, true;
            if (peek() != ',') return false;
            ++i_;
        }
    }
    bool object(Json &out, int depth) {
        ++i_;
        ws();
        if (peek() == '}') return ++i_, true;
        for (;;) {
            std::string key;
            ws();
            if (peek() != '"' || !string(key)) return false;
            ws();
            if (peek() != ':') return false;
            ++i_;
            ws();
            Json v;
            if (!value(v, depth + 1)) return false;
            out.members.emplace_back(std::move(key), std::move(v));
            ws();
            if (peek() == '}') return ++i_, true;
            if (peek() != ',') return false;
            ++i_;
        }
    }
    bool digits() {
        const size_t start = i_;
        while (more() && peek() >= '0' && peek() <= '9')
            ++i_;
        return i_ > start;
    }
    bool number(std::string &out) {
        const size_t start = i_;
        if (peek() == '-') ++i_;
        if (peek() == '0')
            ++i_;
        else if (!digits())
            return false;
        if (peek() == '.' && (++i_, !digits())) return false;
        if (peek() == 'e' || peek() == 'E') {
            ++i_;
            if (peek() == '+' || peek() == '-') ++i_;
            if (!digits()) return false;
        }
        out = std::string(s_.substr(start, i_ - start));
        return true;
    }
    bool hex4(uint32_t &v) {
        v = 0;
        for (int k = 0; k < 4; ++k, ++i_) {
            const char c = peek();
            const int d = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
            if (d < 0) return false;
            v = v << 4 | static_cast<uint32_t>(d);
        }
        return true;
    }
    static void utf8(uint32_t cp, std::string &out) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | cp >> 6);
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | cp >> 12);
            out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | cp >> 18);
            out += static_cast<char>(0x80 | (cp >> 12 & 0x3f));
            out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }
    // A raw (unescaped) UTF-8 sequence must be well formed.
    bool rawUtf8(std::string &out) {
        const auto b = static_cast<unsigned char>(peek());
        size_t n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
        if (n == 0 || i_ + n > s_.size()) return false;
        uint32_t cp = b & (n == 2 ? 0x1fu : n == 3 ? 0x0fu : 0x07u);
        for (size_t k = 1; k < n; ++k) {
            const auto c = static_cast<unsigned char>(s_[i_ + k]);
            if ((c & 0xc0) != 0x80) return false;
            cp = cp << 6 | (c & 0x3fu);
        }
        const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        out.append(s_.substr(i_, n));
        i_ += n;
        return true;
    }
    bool string(std::string &out) {
        ++i_;
        for (;;) {
            if (!more()) return false;
            const auto c = static_cast<unsigned char>(peek());
            if (c == '"') return ++i_, true;
            if (c < 0x20) return false;
            if (c >= 0x80) {
                if (!rawUtf8(out)) return false;
                continue;
            }
            ++i_;
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            const char e = peek();
            ++i_;
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    out += e;
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'u': {
                    uint32_t cp = 0, low = 0;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xdc00 && cp <= 0xdfff) return false;
                    if (cp >= 0xd800 && cp <= 0xdbff) {
                        if (!literal("\\u") || !hex4(low) || low < 0xdc00 || low > 0xdfff) return false;
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    }
                    utf8(cp, out);
                    break;
                }
                default:
                    return false;
            }
        }
    }
};

Json parseJson(const std::string &text) {
    Json j;
    JsonParser p(text);
    INFO("JSON: " << text);
    const bool ok = p.parse(j);
    INFO("stops at byte " << p.where());
    REQUIRE(ok);
    return j;
}

// --- running the tool ------------------------------------------------------------------------------

struct Run {
    int status = -1;
    std::string out, err;
};

int64_t nowMs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// Runs join-shm with args, collecting stdout and stderr. A run that does not finish within 30 s is
// killed and fails the test: the tool must never hang, whatever it is pointed at.
Run cli(const std::vector<std::string> &args) {
    const char *path = std::getenv("JOIN_SHM_CLI");
    INFO("JOIN_SHM_CLI must name the join-shm binary (meson test sets it)");
    REQUIRE(path != nullptr);
    std::vector<std::string> all = {path};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char *> argv;
    for (std::string &a : all)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    int out[2], err[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(pipe2(err, O_CLOEXEC) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(path, argv.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    Run r;
    std::string *sinks[2] = {&r.out, &r.err};
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    const int64_t deadline = nowMs() + 30'000;
    int open = 2;
    bool timedOut = false;
    while (open > 0) {
        const int64_t left = deadline - nowMs();
        if (left <= 0) {
            timedOut = true;
            break;
        }
        if (poll(fds, 2, static_cast<int>(left)) < 0 && errno != EINTR) break;
        for (int k = 0; k < 2; ++k) {
            if (fds[k].fd < 0 || fds[k].revents == 0) continue;
            char buffer[4096];
            const ssize_t n = read(fds[k].fd, buffer, sizeof buffer);
            if (n > 0) {
                sinks[k]->append(buffer, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                close(fds[k].fd);
                fds[k].fd = -1;
                --open;
            }
        }
    }
    for (pollfd &f : fds)
        if (f.fd >= 0) close(f.fd);
    if (timedOut) kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    std::string command = "join-shm";
    for (const std::string &a : args)
        command += " " + a;
    INFO(command << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
    REQUIRE_FALSE(timedOut);
    REQUIRE(WIFEXITED(status));
    r.status = WEXITSTATUS(status);
    return r;
}

std::vector<std::string> lines(const std::string &text) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
        out.push_back(text.substr(start, nl - start));
    if (start < text.size()) out.push_back(text.substr(start));
    return out;
}

std::vector<std::string> words(const std::string &line) {
    std::vector<std::string> out;
    size_t i = 0;
    while ((i = line.find_first_not_of(' ', i)) != std::string::npos) {
        const size_t end = line.find(' ', i);
        out.push_back(line.substr(i, end == std::string::npos ? std::string::npos : end - i));
        i = end;
    }
    return out;
}

// The row of ls whose first column is name; empty if none.
std::string row(const std::string &lsOutput, const std::string &name) {
    for (const std::string &l : lines(lsOutput))
        if (l.rfind(name + " ", 0) == 0) return l;
    return {};
}

// The segment called name in the JSON of ls; nullptr if it is not listed.
const Json *listed(const Json &ls, const std::string &name) {
    for (const Json &s : ls["segments"].items)
        if (s["name"].str() == name) return &s;
    return nullptr;
}

// As listed(), for a segment that must be there.
const Json &segment(const Json &ls, const std::string &name) {
    const Json *s = listed(ls, name);
    INFO("segment \"" << name << "\" is not listed");
    REQUIRE(s != nullptr);
    return *s;
}

std::string slurp(const std::string &path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::string bytes;
    char buffer[65536];
    for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;)
        bytes.append(buffer, static_cast<size_t>(n));
    close(fd);
    return bytes;
}

bool missing(const std::string &path) {
    struct stat st;
    return lstat(path.c_str(), &st) != 0 && errno == ENOENT;
}

// --- crafted segments ------------------------------------------------------------------------------

template <class T>
void put(std::string &bytes, size_t offset, T value) {
    REQUIRE(offset + sizeof value <= bytes.size());
    std::memcpy(&bytes[offset], &value, sizeof value);
}

// A well-formed, ready, idle SPSC ring as the library would lay it out.
std::string craftRing(uint64_t elementSize = 64, uint64_t capacity = 16) {
    Geometry g;
    REQUIRE(computeGeometry(elementSize, capacity, g));
    std::string b(g.total_size, '\0');
    put(b, offsetof(Header, magic), kMagic);
    put(b, offsetof(Header, version), kLayoutVersion);
    put(b, offsetof(Header, policy), uint32_t{JOIN_SHM_SPSC});
    put(b, offsetof(Header, element_size), elementSize);
    put(b, offsetof(Header, capacity), capacity);
    put(b, offsetof(Header, slot_stride), g.slot_stride);
    put(b, offsetof(Header, slots_offset), g.slots_offset);
    put(b, offsetof(Header, total_size), g.total_size);
    put(b, offsetof(Header, state), static_cast<uint32_t>(State::Ready));
    for (uint64_t i = 0; i < capacity; ++i)
        put(b, g.slots_offset + i * g.slot_stride + g.header_offset, 4 * i + kFree);
    return b;
}

// A private directory, removed with everything in it whatever path the test takes.
struct TempDir {
    std::string path;
    TempDir() {
        char templ[] = "/tmp/join-shm-cli-XXXXXX";
        REQUIRE(mkdtemp(templ) != nullptr);
        path = templ;
    }
    ~TempDir() {
        if (DIR *d = opendir(path.c_str())) {
            while (dirent *e = readdir(d)) {
                const std::string n = e->d_name;
                if (n == "." || n == "..") continue;
                const std::string p = path + "/" + n;
                if (unlink(p.c_str()) != 0) rmdir(p.c_str());
            }
            closedir(d);
        }
        rmdir(path.c_str());
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    void write(const std::string &name, const std::string &bytes) const {
        const int fd = open((path + "/" + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
        close(fd);
    }
};

// A forked process holding a role, kept until the test lets it go or kills it; killed and reaped
// on every path out of the test.
struct Holder {
    pid_t pid = -1;
    int go = -1;  // closing it lets the child close its handle and exit
    ~Holder() {
        if (go >= 0) close(go);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    void killNow() {
        REQUIRE(kill(pid, SIGKILL) == 0);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        REQUIRE(WIFSIGNALED(status));
        pid = -1;
    }
};

// The child opens NAME in ROLE (64-byte elements, capacity 16), pushes `count` elements if it is a
// producer, reports 'r' (or 'e' on failure) and waits until the parent closes the go pipe.
void startHolder(Holder &h, const char *name, join_shm_policy policy, join_shm_role role, int count) {
    int ready[2], go[2];
    REQUIRE(pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(pipe2(go, O_CLOEXEC) == 0);
    h.pid = fork();
    REQUIRE(h.pid >= 0);
    if (h.pid == 0) {
        close(ready[0]);
        close(go[1]);
        join_shm_queue *q = nullptr;
        char result = 'r';
        unsigned char element[64] = {};
        if (join_shm_queue_open(&q, name, policy, role, 64, 16) != 0) result = 'e';
        for (int i = 0; i < count && result == 'r'; ++i) {
            element[0] = static_cast<unsigned char>(i);
            if (join_shm_try_push(q, element) != 0) result = 'e';
        }
        if (::write(ready[1], &result, 1) != 1) _exit(2);
        char c;
        while (read(go[0], &c, 1) < 0 && errno == EINTR) {
        }
        join_shm_queue_close(q);
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    h.go = go[1];
    char c = 0;
    const ssize_t n = read(ready[0], &c, 1);
    close(ready[0]);
    REQUIRE(n == 1);
    REQUIRE(c == 'r');
}

void startProducer(Holder &h, const char *name, int count) {
    startHolder(h, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, count);
}

// A single-holder role held by pid (its only holder).
void checkRole(const Json &role, uint64_t pid, bool alive) {
    CHECK_FALSE(role["many"].flag());
    CHECK(role["pid"].u64() == pid);
    CHECK(role["alive"].flag() == alive);
    REQUIRE(role["holders"].items.size() == 1);
    CHECK(role["holders"].items[0]["pid"].u64() == pid);
    CHECK(role["holders"].items[0]["alive"].flag() == alive);
}

// A single-holder role whose word names no record in use: its holder is gone.
void checkGone(const Json &role) {
    CHECK_FALSE(role["many"].flag());
    CHECK(role["pid"].isNull());
    CHECK_FALSE(role["alive"].flag());
    CHECK(role["holders"].items.empty());
}

// A shared role: its holders, by record index, as {index, pid, alive}.
struct Held {
    uint64_t index, pid;
    bool alive;
};
void checkShared(const Json &role, const std::vector<Held> &holders) {
    CHECK(role["many"].flag());
    CHECK(role["pid"].isNull());
    CHECK(role["alive"].isNull());
    const std::vector<Json> &items = role["holders"].items;
    REQUIRE(items.size() == holders.size());
    for (size_t i = 0; i < items.size(); ++i) {
        INFO("holder " << i);
        CHECK(items[i]["index"].u64() == holders[i].index);
        CHECK(items[i]["pid"].u64() == holders[i].pid);
        CHECK(items[i]["alive"].flag() == holders[i].alive);
    }
}

// One entry of stat's "participants".
void checkParticipant(const Json &p, uint64_t index, const std::string &role, uint64_t pid, bool alive,
                      uint64_t generation = 1) {
    INFO("participant " << index);
    CHECK(p["index"].u64() == index);
    CHECK(p["role"].str() == role);
    CHECK(p["pid"].u64() == pid);
    CHECK(p["alive"].flag() == alive);
    CHECK(p["generation"].u64() == generation);
}

// The line of text that starts with prefix; empty if none.
std::string lineStarting(const std::string &text, const std::string &prefix) {
    for (const std::string &l : lines(text))
        if (l.rfind(prefix, 0) == 0) return l;
    return {};
}

}  // namespace

TEST_CASE("ls shows a ring that another process holds open, with the right pids, and rm removes it", "[cli]") {
    test::ShmName name("cli");
    const std::string path = std::string("/dev/shm/") + name.name;
    Holder producer;
    startProducer(producer, name, 3);
    join_shm_queue *consumer = nullptr;
    REQUIRE(join_shm_queue_open(&consumer, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 64, 16) == 0);
    struct Close {
        join_shm_queue *&q;
        ~Close() { join_shm_queue_close(q); }
    } closeConsumer{consumer};
    const auto self = static_cast<uint64_t>(getpid()), child = static_cast<uint64_t>(producer.pid);
    const std::string before = slurp(path);

    // JSON, with the default directory.
    Run r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    Json ls = parseJson(r.out);
    CHECK(ls["dir"].str() == "/dev/shm");
    const Json *ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    const Json &s = *ring;
    CHECK(s["status"].str() == "ready");
    CHECK(s["reason"].isNull());
    CHECK(s["endpoint"].isNull());
    CHECK(s["policy"].str() == "SPSC");
    CHECK(s["element_size"].u64() == 64);
    CHECK(s["capacity"].u64() == 16);
    CHECK(s["pending"].u64() == 3);
    CHECK(s["skipped"].u64() == 0);
    checkRole(s["producer"], child, true);
    checkRole(s["consumer"], self, true);
    CHECK_FALSE(s["sleepers"]["consumers"].flag());
    CHECK_FALSE(s["sleepers"]["producers"].flag());

    // The table: the same facts, in aligned columns.
    r = cli({"ls"});
    REQUIRE(r.status == 0);
    const std::vector<std::string> table = lines(r.out);
    REQUIRE(!table.empty());
    const std::string &heading = table[0];
    CHECK(words(heading) == std::vector<std::string>{"NAME", "POLICY", "ELEM", "CAPACITY", "PENDING", "PRODUCER",
                                                     "CONSUMER", "SLEEPERS", "SKIPPED", "STATE"});
    const std::string line = row(r.out, name.name);
    INFO("ls:\n" << r.out);
    REQUIRE(!line.empty());
    CHECK(words(line) == std::vector<std::string>{name.name, "SPSC", "64", "16", "3", std::to_string(child), "(alive)",
                                                  std::to_string(self), "(alive)", "-", "0", "ready"});
    CHECK(line.find("SPSC") == heading.find("POLICY"));            // left-aligned
    CHECK(line.find(" 16 ") + 3 == heading.find("CAPACITY") + 8);  // right-aligned
    CHECK(line.find(std::to_string(child) + " (alive)") == heading.find("PRODUCER"));
    CHECK(line.find("ready") == heading.find("STATE"));

    // stat, with and without the leading '/'.
    r = cli({"stat", name.name});
    REQUIRE(r.status == 0);
    CHECK(r.out.find("status          ready\n") != std::string::npos);
    CHECK(r.out.find("producer        " + std::to_string(child) + " (alive)\n") != std::string::npos);
    CHECK(r.out.find("consumer        " + std::to_string(self) + " (alive)\n") != std::string::npos);
    CHECK(r.out.find("pending         3 (a snapshot: head 3, tail 0)\n") != std::string::npos);
    CHECK(r.out.find("slots           13 free, 3 full, 0 abandoned, 0 inconsistent\n") != std::string::npos);
    CHECK(r.out.find("mode 0600") != std::string::npos);
    // Every handle has a record: the producer's first (it created the ring), then ours.
    CHECK(r.out.find("participants    2 of 128 records in use\n") != std::string::npos);
    CHECK(words(lineStarting(r.out, "  #0 ")) == std::vector<std::string>{"#0", "producer", "pid",
                                                                          std::to_string(child), "(alive)",
                                                                          "generation", "1", "no", "intent"});
    CHECK(words(lineStarting(r.out, "  #1 ")) == std::vector<std::string>{"#1", "consumer", "pid", std::to_string(self),
                                                                          "(alive)", "generation", "1", "no",
                                                                          "intent"});
    CHECK(r.out.find("  producer_holder 0x100 (record 0, generation 1)\n") != std::string::npos);
    CHECK(r.out.find("  consumer_holder 0x101 (record 1, generation 1)\n") != std::string::npos);
    r = cli({"stat", "--json", "/" + name.name});
    REQUIRE(r.status == 0);
    const Json st = parseJson(r.out);
    CHECK(st["name"].str() == name.name);
    CHECK(st["path"].str() == path);
    CHECK(st["pending"].u64() == 3);
    checkRole(st["producer"], child, true);
    checkRole(st["consumer"], self, true);
    CHECK_FALSE(st["creator"]["many"].flag());
    CHECK(st["creator"]["pid"].u64() == child);
    CHECK(st["creator"]["alive"].flag());
    CHECK(st["file"]["mode"].str() == "0600");
    CHECK(st["file"]["uid"].u64() == getuid());
    Geometry g;
    REQUIRE(computeGeometry(64, 16, g));
    CHECK(st["file"]["size"].u64() == g.total_size);
    CHECK(st["header"]["magic"].str() == "0x314d48534e494f4a");
    CHECK(st["header"]["version"].u64() == kLayoutVersion);
    CHECK(st["header"]["head"].u64() == 3);
    CHECK(st["header"]["tail"].u64() == 0);
    CHECK(st["geometry"]["slot_stride"].u64() == g.slot_stride);
    CHECK(st["geometry"]["total_size"].u64() == g.total_size);
    CHECK(st["slots"]["full"].u64() == 3);
    CHECK(st["slots"]["free"].u64() == 13);
    CHECK(st["slots"]["inconsistent"].u64() == 0);
    CHECK(st["header"]["producer_holder"].u64() == 0x100);
    CHECK(st["header"]["consumer_holder"].u64() == 0x101);
    CHECK((st["header"]["creator_identity"].u64() & kIdentityPidMask) == child);
    REQUIRE(st["participants"].items.size() == 2);
    checkParticipant(st["participants"].items[0], 0, "producer", child, true);
    checkParticipant(st["participants"].items[1], 1, "consumer", self, true);
    for (const Json &p : st["participants"].items) {
        CHECK_FALSE(p["intent_pending"].flag());
        CHECK(p["intent"].isNull());
        CHECK(p["start_time"].u64() > 0);  // /proc is there
    }

    // Looking changed nothing.
    CHECK(slurp(path) == before);

    // The producer dies holding its role: ls says so.
    producer.killNow();
    r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    ls = parseJson(r.out);
    ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    checkRole((*ring)["producer"], child, false);
    checkRole((*ring)["consumer"], self, true);
    r = cli({"ls"});
    REQUIRE(r.status == 0);
    CHECK(row(r.out, name.name).find(std::to_string(child) + " (dead)") != std::string::npos);
    r = cli({"stat", "--json", name.name});
    REQUIRE(r.status == 0);
    const Json dead = parseJson(r.out);
    REQUIRE(dead["participants"].items.size() == 2);
    checkParticipant(dead["participants"].items[0], 0, "producer", child, false);
    checkParticipant(dead["participants"].items[1], 1, "consumer", self, true);

    // rm removes it, quietly; a second rm says it is missing, in one line.
    join_shm_queue_close(consumer);
    consumer = nullptr;
    r = cli({"rm", name.name});
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.err.empty());
    CHECK(missing(path));
    r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    CHECK(listed(parseJson(r.out), name.name) == nullptr);
    r = cli({"rm", name.name});
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err == "join-shm: rm: no segment \"" + name.name + "\" in /dev/shm\n");
}

TEST_CASE("ls lists every producer and consumer of a shared ring with its pid, alive, then dead once killed", "[cli]") {
    test::ShmName name("clim");
    // Three producers and two consumers, each its own process; each opens after the one before has
    // reported, so record k is the k-th holder's.
    Holder producers[3], consumers[2];
    for (Holder &h : producers)
        startHolder(h, name, JOIN_SHM_MPMC, JOIN_SHM_PRODUCER, 1);
    for (Holder &h : consumers)
        startHolder(h, name, JOIN_SHM_MPMC, JOIN_SHM_CONSUMER, 0);
    const auto pid = [](const Holder &h) { return static_cast<uint64_t>(h.pid); };
    const uint64_t p0 = pid(producers[0]), p1 = pid(producers[1]), p2 = pid(producers[2]);
    const uint64_t c0 = pid(consumers[0]), c1 = pid(consumers[1]);
    const auto alive = [](uint64_t p) { return std::to_string(p) + " (alive)"; };
    const auto dead = [](uint64_t p) { return std::to_string(p) + " (dead)"; };

    Run r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    Json ls = parseJson(r.out);
    const Json *ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    CHECK((*ring)["pending"].u64() == 3);
    checkShared((*ring)["producer"], {{0, p0, true}, {1, p1, true}, {2, p2, true}});
    checkShared((*ring)["consumer"], {{3, c0, true}, {4, c1, true}});

    // The table names the first two holders of a role and counts the rest.
    r = cli({"ls"});
    REQUIRE(r.status == 0);
    std::string line = row(r.out, name.name);
    INFO("ls:\n" << r.out);
    // Other rings in /dev/shm may widen the columns: each cell is looked for alone.
    CHECK(line.find(" " + alive(p0) + ", " + alive(p1) + ", +1 more (1 alive) ") != std::string::npos);
    CHECK(line.find(" " + alive(c0) + ", " + alive(c1) + " ") != std::string::npos);
    CHECK(line.find(alive(p0)) == lines(r.out)[0].find("PRODUCER"));

    r = cli({"stat", "--json", name.name});
    REQUIRE(r.status == 0);
    Json st = parseJson(r.out);
    const std::vector<Json> &parts = st["participants"].items;
    REQUIRE(parts.size() == 5);
    checkParticipant(parts[0], 0, "producer", p0, true);
    checkParticipant(parts[1], 1, "producer", p1, true);
    checkParticipant(parts[2], 2, "producer", p2, true);
    checkParticipant(parts[3], 3, "consumer", c0, true);
    checkParticipant(parts[4], 4, "consumer", c1, true);
    for (const Json &p : parts)
        CHECK_FALSE(p["intent_pending"].flag());

    // Killed holders stay listed, dead, until their records are reused; the others stay alive.
    producers[0].killNow();
    consumers[1].killNow();
    producers[2].killNow();  // past the first two: only counted
    r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    ls = parseJson(r.out);
    ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    checkShared((*ring)["producer"], {{0, p0, false}, {1, p1, true}, {2, p2, false}});
    checkShared((*ring)["consumer"], {{3, c0, true}, {4, c1, false}});
    r = cli({"ls"});
    REQUIRE(r.status == 0);
    line = row(r.out, name.name);
    CHECK(line.find(" " + dead(p0) + ", " + alive(p1) + ", +1 more (0 alive) ") != std::string::npos);
    CHECK(line.find(" " + alive(c0) + ", " + dead(c1) + " ") != std::string::npos);
    r = cli({"stat", name.name});
    REQUIRE(r.status == 0);
    CHECK(r.out.find("producer        " + dead(p0) + ", " + alive(p1) + ", +1 more (0 alive)\n") != std::string::npos);
    CHECK(r.out.find("participants    5 of 128 records in use\n") != std::string::npos);
    CHECK(words(lineStarting(r.out, "  #2 ")) == std::vector<std::string>{"#2", "producer", "pid", std::to_string(p2),
                                                                          "(dead)", "generation", "1", "no", "intent"});
    CHECK(words(lineStarting(r.out, "  #3 ")) == std::vector<std::string>{"#3", "consumer", "pid", std::to_string(c0),
                                                                          "(alive)", "generation", "1", "no",
                                                                          "intent"});
    r = cli({"stat", "--json", name.name});
    REQUIRE(r.status == 0);
    st = parseJson(r.out);
    REQUIRE(st["participants"].items.size() == 5);
    checkParticipant(st["participants"].items[0], 0, "producer", p0, false);
    checkParticipant(st["participants"].items[4], 4, "consumer", c1, false);

    // A new handle takes a free record, not a dead holder's: the dead stay visible.
    join_shm_queue *q = nullptr;
    REQUIRE(join_shm_queue_open(&q, name, JOIN_SHM_MPMC, JOIN_SHM_CONSUMER, 64, 16) == 0);
    r = cli({"ls", "--json"});
    join_shm_queue_close(q);
    REQUIRE(r.status == 0);
    ls = parseJson(r.out);
    ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    checkShared((*ring)["consumer"], {{3, c0, true}, {4, c1, false}, {5, static_cast<uint64_t>(getpid()), true}});
}

TEST_CASE("ls and stat list a broadcast ring's publisher and each subscriber with its pid and lag", "[cli]") {
    test::ShmName name("clib");
    join_shm_options o{};
    o.size = sizeof o;
    o.max_subscribers = 4;
    join_shm_queue *pub = nullptr, *first = nullptr, *second = nullptr;
    REQUIRE(join_shm_queue_open_ex(&pub, name, JOIN_SHM_BROADCAST, JOIN_SHM_PRODUCER, 64, 16, &o) == 0);
    REQUIRE(join_shm_queue_open_ex(&first, name, JOIN_SHM_BROADCAST, JOIN_SHM_CONSUMER, 64, 16, &o) == 0);
    REQUIRE(join_shm_queue_open_ex(&second, name, JOIN_SHM_BROADCAST, JOIN_SHM_CONSUMER, 64, 16, &o) == 0);
    char message[64] = {};
    for (int i = 0; i < 3; ++i)
        REQUIRE(join_shm_try_push(pub, message) == 0);
    REQUIRE(join_shm_try_pop(first, message) == 0);  // first lags 2, second 3
    const uint64_t self = static_cast<uint64_t>(getpid());
    const std::string alive = std::to_string(self) + " (alive)";

    Run r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    Json ls = parseJson(r.out);
    const Json *ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    CHECK((*ring)["policy"].text == "BROADCAST");
    CHECK_FALSE((*ring)["producer"]["many"].flag());  // one publisher
    CHECK((*ring)["producer"]["pid"].u64() == self);
    CHECK((*ring)["consumer"]["many"].flag());
    const std::vector<Json> &subs = (*ring)["subscribers"].items;
    REQUIRE(subs.size() == 2);
    for (const Json &sub : subs) {
        CHECK(sub["pid"].u64() == self);
        CHECK(sub["alive"].flag());
    }
    CHECK(subs[0]["lag"].u64() == 2);
    CHECK(subs[1]["lag"].u64() == 3);

    r = cli({"ls"});
    REQUIRE(r.status == 0);
    INFO("ls:\n" << r.out);
    CHECK(row(r.out, name.name).find(" " + alive + " lag 2, " + alive + " lag 3 ") != std::string::npos);

    r = cli({"stat", "--json", name.name});
    REQUIRE(r.status == 0);
    Json st = parseJson(r.out);
    REQUIRE(st["subscribers"].items.size() == 2);
    CHECK(st["subscribers"].items[1]["lag"].u64() == 3);

    join_shm_queue_close(second);
    r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    ls = parseJson(r.out);
    ring = listed(ls, name.name);
    REQUIRE(ring != nullptr);
    REQUIRE((*ring)["subscribers"].items.size() == 1);  // a closed subscriber frees its record
    CHECK((*ring)["subscribers"].items[0]["lag"].u64() == 2);
    join_shm_queue_close(first);
    join_shm_queue_close(pub);
}

TEST_CASE("An endpoint's two rings are listed as one endpoint, and rm of the endpoint name removes both", "[cli]") {
    test::ShmName name("clie");
    join_shm_endpoint *a = nullptr, *b = nullptr;
    REQUIRE(join_shm_endpoint_open(&a, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 32, 8) == 0);
    struct Close {
        join_shm_endpoint *&e;
        ~Close() { join_shm_endpoint_close(e); }
    } closeA{a}, closeB{b};
    REQUIRE(join_shm_endpoint_open(&b, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 32, 8) == 0);
    const uint64_t payload[4] = {1, 2, 3, 4};
    REQUIRE(join_shm_try_send(a, payload) == 0);
    const std::string ab = name.name + "_AB", ba = name.name + "_BA";

    Run r = cli({"ls", "--json"});
    REQUIRE(r.status == 0);
    const Json ls = parseJson(r.out);
    for (const std::string &ring : {ab, ba}) {
        const Json *s = listed(ls, ring);
        INFO(ring);
        REQUIRE(s != nullptr);
        CHECK((*s)["endpoint"].str() == name.name);
        CHECK((*s)["element_size"].u64() == 32);
        CHECK((*s)["pending"].u64() == (ring == ab ? 1 : 0));
        checkRole((*s)["producer"], static_cast<uint64_t>(getpid()), true);
    }
    r = cli({"ls"});
    REQUIRE(r.status == 0);
    CHECK(row(r.out, ab).find("ready, endpoint " + name.name) != std::string::npos);
    CHECK(row(r.out, ba).find("ready, endpoint " + name.name) != std::string::npos);

    r = cli({"stat", "--json", name.name});
    REQUIRE(r.status == 0);
    const Json st = parseJson(r.out);
    CHECK(st["endpoint"].str() == name.name);
    REQUIRE(st["rings"].items.size() == 2);
    CHECK(st["rings"].items[0]["name"].str() == ab);
    CHECK(st["rings"].items[1]["name"].str() == ba);
    r = cli({"stat", name.name});
    REQUIRE(r.status == 0);
    CHECK(r.out.rfind("endpoint " + name.name + ": 2 ring(s)\n", 0) == 0);
    r = cli({"stat", "--json", ba});
    REQUIRE(r.status == 0);
    CHECK(parseJson(r.out)["endpoint"].str() == name.name);

    r = cli({"rm", name.name});
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(missing("/dev/shm/" + ab));
    CHECK(missing("/dev/shm/" + ba));
    // Handles already open keep working.
    uint64_t got[4] = {};
    CHECK(join_shm_try_receive(b, got) == 0);
    CHECK(got[3] == 4);
}

TEST_CASE("Crafted, corrupt and hostile files are reported as such, never trusted and never changed", "[cli]") {
    TempDir dir;
    Geometry g;
    REQUIRE(computeGeometry(64, 16, g));
    const std::string magic(reinterpret_cast<const char *>(&kMagic), sizeof kMagic);
    const std::string ring = craftRing();

    // name -> (status, a piece of the reason) for every file that carries the magic.
    std::map<std::string, std::pair<std::string, std::string>> rings;
    const auto add = [&](const std::string &name, const std::string &bytes, const std::string &status,
                         const std::string &reason) {
        dir.write(name, bytes);
        rings[name] = {status, reason};
    };
    std::string b;
    add("short", magic + std::string(92, 'x'), "corrupt", "file is 100 bytes, too short for the 512-byte header");
    b = magic;
    uint64_t lcg = 12345;
    while (b.size() < 4096) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        b += static_cast<char>(lcg >> 56);
    }
    add("garbage", b, "corrupt", "");
    b = ring, put(b, offsetof(Header, version), uint32_t{99});
    add("version", b, "corrupt", "layout version 99, this tool reads version " + std::to_string(kLayoutVersion));
    b = ring, put(b, offsetof(Header, policy), uint32_t{7});
    add("policy", b, "corrupt", "policy 7 is none of SPSC (1), MPSC (2), MPMC (3)");
    b = ring, put(b, offsetof(Header, state), uint32_t{5});
    add("state", b, "corrupt", "state 5 is neither initialising (0) nor ready (1)");
    b = ring, put(b, offsetof(Header, element_size), uint64_t{0});
    add("zero", b, "corrupt", "element size is 0");
    b = ring, put(b, offsetof(Header, element_size), uint64_t{1} << 62),
    put(b, offsetof(Header, capacity), ~uint64_t{0});
    add("huge", b, "corrupt", "is too large for a segment");
    b = ring, put(b, offsetof(Header, capacity), uint64_t{1} << 40);
    add("toolarge", b, "corrupt", "is too large for a segment");
    b = ring, put(b, offsetof(Header, slot_stride), uint64_t{8});
    add("stride", b, "corrupt", "slot stride is 8, its element size 64 needs " + std::to_string(g.slot_stride));
    b = ring, put(b, offsetof(Header, total_size), uint64_t{1} << 60);
    add("totalsize", b, "corrupt", "total size is 1152921504606846976");
    add("truncated", ring.substr(0, 1024), "corrupt",
        "file is 1024 bytes, its header says " + std::to_string(g.total_size));
    b = ring, put(b, offsetof(Header, state), uint32_t{0});
    add("init", b, "initialising", "");
    // Holder words that name no record in use (index 255 is past the table; record 0 is free) and a
    // creator identity that names pid 0x3fffff: the roles are reported gone, never used as indices.
    b = ring;
    put(b, offsetof(Header, producer_holder), ~uint32_t{0});
    put(b, offsetof(Header, consumer_holder), uint32_t{1} << 31);
    put(b, offsetof(Header, creator_identity), ~uint64_t{0});
    put(b, offsetof(Header, head), uint64_t{5});
    put(b, offsetof(Header, tail), uint64_t{2});
    put(b, offsetof(Header, skipped), uint64_t{7});
    put(b, offsetof(Header, not_empty) + offsetof(WaitWord, word), uint32_t{3});  // a consumer sleeps
    put(b, offsetof(Header, not_full) + offsetof(WaitWord, word), uint32_t{4});   // an epoch, no sleeper
    add("valid", b, "ready", "");
    b = ring, put(b, offsetof(Header, head), uint64_t{2}), put(b, offsetof(Header, tail), uint64_t{5});
    add("behind", b, "ready", "");
    b = ring, put(b, offsetof(Header, head), uint64_t{1000});
    add("ahead", b, "ready", "");
    // The participant table. Ours is a live identity; ours with another start time is a process that
    // died and whose pid was reused (by us): dead.
    const uint64_t self = processIdentity(static_cast<uint32_t>(getpid()));
    REQUIRE(self != 0);
    const uint64_t reused = self + (uint64_t{1} << kIdentityPidBits);
    const auto record = [&](std::string &bytes, uint32_t index, uint64_t identity, uint32_t generation, uint32_t role,
                            uint64_t intent) {
        const size_t at = kParticipantsOffset + index * sizeof(join::shm::Participant);
        put(bytes, at + offsetof(join::shm::Participant, identity), identity);
        put(bytes, at + offsetof(join::shm::Participant, generation), generation);
        put(bytes, at + offsetof(join::shm::Participant, role), role);
        put(bytes, at + offsetof(join::shm::Participant, intent), intent);
    };
    b = ring, put(b, offsetof(Header, policy), uint32_t{JOIN_SHM_MPSC});
    record(b, 0, reused, 2, JOIN_SHM_PRODUCER, intentFor(5, false));  // died about to claim from position 5
    record(b, 3, self, 7, JOIN_SHM_CONSUMER, kNoIntent);
    record(b, 9, self, 1, JOIN_SHM_PRODUCER, kNoIntent);
    put(b, offsetof(Header, consumer_holder), holdingOf(3, 7));
    add("mpsc", b, "ready", "");
    // A hostile table: identities naming pid 0x3fffff with every start bit set, and pid 0; a role of
    // 7; a generation with bits past its 24; an intent far away; the holder words naming the last
    // record (live) and a record in another generation.
    b = ring;
    record(b, 0, ~uint64_t{0}, ~uint32_t{0}, 7, ~uint64_t{0} - 2);
    record(b, 1, uint64_t{1} << kIdentityPidBits, 4, JOIN_SHM_CONSUMER, kNoIntent);
    record(b, kMaxParticipants - 1, self, 5, JOIN_SHM_PRODUCER, kNoIntent);
    put(b, offsetof(Header, producer_holder), holdingOf(kMaxParticipants - 1, 5));
    put(b, offsetof(Header, consumer_holder), holdingOf(1, 3));
    add("table", b, "ready", "");
    // Every record held: the table cell counts what it does not name.
    b = ring, put(b, offsetof(Header, policy), uint32_t{JOIN_SHM_MPMC});
    for (uint32_t i = 0; i < kMaxParticipants; ++i)
        record(b, i, i % 2 ? self : reused, 1, JOIN_SHM_PRODUCER, kNoIntent);
    add("full", b, "ready", "");
    b = ring, put(b, offsetof(Header, policy), uint32_t{JOIN_SHM_MPMC});
    add("mpmc", b, "ready", "");
    const std::string odd = "we\"ird\\na\nme\x01";
    add(odd, ring, "ready", "");
    const std::string illFormed = "bad\xff\xfe";
    add(illFormed, ring, "ready", "");
    add("solo_AB", ring, "ready", "");  // no solo_BA: a ring with an endpoint-like name, not an endpoint

    // Files that are not join-shm segments.
    dir.write("empty", "");
    dir.write("hundred", std::string(100, 'x'));
    dir.write("seven", magic.substr(0, 7));
    REQUIRE(mkfifo((dir.path + "/fifo").c_str(), 0600) == 0);
    REQUIRE(symlink("valid", (dir.path + "/link").c_str()) == 0);
    REQUIRE(mkdir((dir.path + "/subdir").c_str(), 0700) == 0);
    const std::map<std::string, std::pair<std::string, std::string>> others = {
        {"empty", {"not join-shm", ""}},
        {"hundred", {"not join-shm", ""}},
        {"seven", {"not join-shm", ""}},
        {"fifo", {"not a regular file", "fifo"}},
        {"link", {"not a regular file", "symlink"}},
        {"subdir", {"not a regular file", "directory"}},
    };

    std::map<std::string, std::string> bytesBefore;
    for (const auto &f : rings)
        bytesBefore[f.first] = slurp(dir.path + "/" + f.first);

    // ls lists the magic-carrying files only, each with its status and reason.
    Run r = cli({"--dir", dir.path, "ls", "--json"});
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    Json ls = parseJson(r.out);
    CHECK(ls["dir"].str() == dir.path);
    std::set<std::string> names;
    for (const Json &s : ls["segments"].items) {
        const std::string name = s["name"].str();
        names.insert(name);
        if (name == "bad\xef\xbf\xbd\xef\xbf\xbd") continue;  // ill-formed UTF-8 comes out as U+FFFD
        INFO(name);
        REQUIRE(rings.count(name) == 1);
        CHECK(s["status"].str() == rings[name].first);
        if (rings[name].first == "corrupt") {
            CHECK(s["reason"].str().find(rings[name].second) != std::string::npos);
            CHECK(s["policy"].isNull());
            CHECK(s["pending"].isNull());
        } else {
            CHECK(s["reason"].isNull());
            CHECK(s["policy"].type == Json::Type::String);
        }
    }
    CHECK(names.size() == rings.size());
    CHECK(names.count(odd) == 1);
    const Json &valid = segment(ls, "valid");
    CHECK(valid["pending"].u64() == 3);
    CHECK(valid["skipped"].u64() == 7);
    checkGone(valid["producer"]);
    checkGone(valid["consumer"]);
    CHECK(valid["sleepers"]["consumers"].flag());
    CHECK_FALSE(valid["sleepers"]["producers"].flag());
    CHECK(segment(ls, "behind")["pending"].u64() == 0);
    CHECK(segment(ls, "ahead")["pending"].u64() == 16);
    CHECK(segment(ls, "init")["policy"].str() == "SPSC");
    CHECK(segment(ls, "init")["capacity"].isNull());
    const Json &mpsc = segment(ls, "mpsc");
    const auto pid = static_cast<uint64_t>(getpid());
    checkShared(mpsc["producer"], {{0, pid, false}, {9, pid, true}});
    checkRole(mpsc["consumer"], pid, true);
    CHECK(mpsc["consumer"]["holders"].items[0]["index"].u64() == 3);
    checkRole(segment(ls, "table")["producer"], pid, true);
    checkGone(segment(ls, "table")["consumer"]);
    CHECK(segment(ls, "full")["producer"]["holders"].items.size() == kMaxParticipants);
    CHECK(segment(ls, "solo_AB")["endpoint"].isNull());
    CHECK(segment(ls, "mpmc")["producer"]["many"].flag());
    CHECK(segment(ls, "mpmc")["consumer"]["many"].flag());

    // --all adds the other files, with what they are.
    r = cli({"ls", "--all", "--json", "--dir=" + dir.path});
    REQUIRE(r.status == 0);
    ls = parseJson(r.out);
    CHECK(ls["segments"].items.size() == rings.size() + others.size());
    for (const auto &o : others) {
        INFO(o.first);
        const Json *s = listed(ls, o.first);
        REQUIRE(s != nullptr);
        CHECK((*s)["status"].str() == o.second.first);
        if (o.second.second.empty())
            CHECK((*s)["reason"].isNull());
        else
            CHECK((*s)["reason"].str() == o.second.second);
    }

    // The table: one line per file (a newline in a name does not make two), control characters
    // and backslashes escaped, reasons in the STATE column.
    r = cli({"--dir", dir.path, "ls"});
    REQUIRE(r.status == 0);
    CHECK(lines(r.out).size() == 1 + rings.size());
    CHECK(r.out.find("we\"ird\\x5cna\\x0ame\\x01 ") != std::string::npos);
    CHECK(r.out.find("bad\\xff\\xfe ") != std::string::npos);
    CHECK(row(r.out, "version").find("corrupt: layout version 99") != std::string::npos);
    CHECK(words(row(r.out, "valid")) ==
          std::vector<std::string>{"valid", "SPSC", "64", "16", "3", "gone", "gone", "consumer", "7", "ready"});
    const std::string us = std::to_string(getpid());
    CHECK(row(r.out, "mpsc").find(" " + us + " (dead), " + us + " (alive) ") != std::string::npos);
    CHECK(words(row(r.out, "table")) ==
          std::vector<std::string>{"table", "SPSC", "64", "16", "0", us, "(alive)", "gone", "-", "0", "ready"});
    CHECK(row(r.out, "full").find(" " + us + " (dead), " + us + " (alive), +126 more (63 alive) ") !=
          std::string::npos);
    r = cli({"--dir", dir.path, "ls", "--all"});
    REQUIRE(r.status == 0);
    CHECK(lines(r.out).size() == 1 + rings.size() + others.size());
    CHECK(row(r.out, "fifo").find("not a regular file (fifo)") != std::string::npos);
    CHECK(row(r.out, "hundred").find("not join-shm") != std::string::npos);

    // stat describes every magic-carrying file, even corrupt ones, and refuses the others.
    for (const auto &f : rings) {
        INFO(f.first);
        r = cli({"--dir", dir.path, "stat", f.first});
        CHECK(r.status == 0);
        CHECK(r.out.find("status          " + f.second.first) != std::string::npos);
        r = cli({"--dir", dir.path, "stat", "--json", f.first});
        CHECK(r.status == 0);
        CHECK(parseJson(r.out)["status"].str() == f.second.first);
    }
    r = cli({"--dir", dir.path, "stat", "valid"});
    CHECK(r.out.find("  not_empty     0x00000003 (epoch 1, consumers asleep)\n") != std::string::npos);
    CHECK(r.out.find("slots           16 free, 0 full, 0 abandoned, 0 inconsistent\n") != std::string::npos);
    CHECK(r.out.find("producer        gone\n") != std::string::npos);
    CHECK(r.out.find("participants    0 of 128 records in use\n") != std::string::npos);
    CHECK(r.out.find("  producer_holder 0xffffffff (record 255, generation 16777215)\n") != std::string::npos);
    CHECK(r.out.find("  creator_pid   0 (dead)\n") != std::string::npos);
    r = cli({"--dir", dir.path, "stat", "--json", "mpsc"});
    Json st = parseJson(r.out);
    REQUIRE(st["participants"].items.size() == 3);
    checkParticipant(st["participants"].items[0], 0, "producer", pid, false, 2);
    checkParticipant(st["participants"].items[1], 3, "consumer", pid, true, 7);
    checkParticipant(st["participants"].items[2], 9, "producer", pid, true, 1);
    CHECK(st["participants"].items[0]["intent_pending"].flag());
    CHECK(st["participants"].items[0]["intent"]["cursor"].str() == "head");
    CHECK(st["participants"].items[0]["intent"]["position"].u64() == 5);
    CHECK(st["participants"].items[1]["intent"].isNull());
    r = cli({"--dir", dir.path, "stat", "mpsc"});
    CHECK(words(lineStarting(r.out, "  #0 ")) == std::vector<std::string>{"#0", "producer", "pid", us, "(dead)",
                                                                          "generation", "2", "intent",
                                                                          "pending:", "head", "from", "position", "5"});
    r = cli({"--dir", dir.path, "stat", "--json", "table"});
    st = parseJson(r.out);
    REQUIRE(st["participants"].items.size() == 3);
    const Json &hostile = st["participants"].items[0];
    checkParticipant(hostile, 0, "unknown", kIdentityPidMask, false, 0xffffff);
    CHECK(hostile["role_code"].u64() == 7);
    CHECK(hostile["intent"]["cursor"].str() == "tail");
    CHECK(hostile["intent"]["position"].u64() == (~uint64_t{0} - 2) >> 1);
    checkParticipant(st["participants"].items[1], 1, "consumer", 0, false, 4);
    checkParticipant(st["participants"].items[2], kMaxParticipants - 1, "producer", pid, true, 5);
    r = cli({"--dir", dir.path, "stat", "--json", "full"});
    CHECK(parseJson(r.out)["participants"].items.size() == kMaxParticipants);
    for (const auto &o : others) {
        INFO(o.first);
        r = cli({"--dir", dir.path, "stat", o.first});
        CHECK(r.status == 1);
        CHECK(r.out.empty());
        CHECK(lines(r.err).size() == 1);
        CHECK(r.err.find("\"" + o.first + "\" is not a join-shm segment (" + o.second.first) != std::string::npos);
    }

    // Nothing was changed by looking.
    for (const auto &f : bytesBefore) {
        INFO(f.first);
        CHECK(slurp(dir.path + "/" + f.first) == f.second);
    }

    // rm: join-shm files only, unless forced; bad names refused; every failure is one line.
    r = cli({"--dir", dir.path, "rm", "hundred"});
    CHECK(r.status == 1);
    CHECK(r.err == "join-shm: rm: \"hundred\" is not a join-shm segment; left alone (--force removes it)\n");
    CHECK_FALSE(missing(dir.path + "/hundred"));
    r = cli({"--dir", dir.path, "rm", "fifo", "link"});
    CHECK(r.status == 1);
    CHECK(lines(r.err).size() == 2);
    CHECK_FALSE(missing(dir.path + "/fifo"));
    CHECK_FALSE(missing(dir.path + "/link"));
    r = cli({"--dir", dir.path, "rm", "--force", "hundred", "link"});
    CHECK(r.status == 0);
    CHECK(missing(dir.path + "/hundred"));
    CHECK(missing(dir.path + "/link"));
    CHECK_FALSE(missing(dir.path + "/valid"));  // the link went, not what it pointed to
    r = cli({"--dir", dir.path, "stat", "--json", "solo_AB"});
    CHECK(parseJson(r.out)["endpoint"].isNull());
    r = cli({"--dir", dir.path, "rm", "garbage", "/truncated", odd, "solo"});
    CHECK(r.status == 0);
    CHECK(missing(dir.path + "/solo_AB"));
    CHECK(missing(dir.path + "/garbage"));
    CHECK(missing(dir.path + "/truncated"));
    CHECK(missing(dir.path + "/" + odd));
    for (const std::string bad : {"", "/", "a/b", ".", ".."}) {
        INFO("name \"" << bad << "\"");
        r = cli({"--dir", dir.path, "rm", bad});
        CHECK(r.status == 1);
        CHECK(lines(r.err).size() == 1);
        CHECK(r.err.find("join-shm: rm: the name") == 0);
    }
    r = cli({"--dir", dir.path, "rm", "nothing-here", "valid"});
    CHECK(r.status == 1);
    CHECK(r.err == "join-shm: rm: no segment \"nothing-here\" in " + dir.path + "\n");
    CHECK(missing(dir.path + "/valid"));  // the other names are still removed
}

TEST_CASE("Usage errors exit with 2, other failures with 1, --help and --version with 0", "[cli]") {
    Run r = cli({});
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err == "join-shm: no command given (ls, stat or rm)\nTry 'join-shm --help'.\n");
    r = cli({"frob"});
    CHECK(r.status == 2);
    CHECK(r.err.find("join-shm: unknown command frob") == 0);
    r = cli({"ls", "--bogus"});
    CHECK(r.status == 2);
    CHECK(r.err.find("join-shm: unknown option --bogus") == 0);
    r = cli({"stat"});
    CHECK(r.status == 2);
    CHECK(r.err == "join-shm: stat takes one NAME (see --help)\n");
    r = cli({"rm"});
    CHECK(r.status == 2);
    r = cli({"rm", "--json", "x"});
    CHECK(r.status == 2);
    r = cli({"ls", "--dir"});
    CHECK(r.status == 2);

    r = cli({"--help"});
    CHECK(r.status == 0);
    CHECK(r.out.rfind("Usage: join-shm [--dir DIR] COMMAND [OPTIONS]\n", 0) == 0);
    CHECK(r.err.empty());
    r = cli({"--version"});
    CHECK(r.status == 0);
    CHECK(r.out == "join-shm " + std::to_string(JOIN_SHM_VERSION_MAJOR) + "." + std::to_string(JOIN_SHM_VERSION_MINOR) +
                       "." + std::to_string(JOIN_SHM_VERSION_PATCH) + " (segment layout version " +
                       std::to_string(kLayoutVersion) + ")\n");

    TempDir dir;
    const std::string gone = dir.path + "/nowhere";
    r = cli({"--dir", gone, "ls"});
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    CHECK(r.err == "join-shm: cannot open directory " + gone + ": No such file or directory\n");
    r = cli({"--dir", dir.path, "stat", "absent"});
    CHECK(r.status == 1);
    CHECK(r.err == "join-shm: stat: no segment \"absent\" in " + dir.path + "\n");
    r = cli({"--dir", dir.path, "ls"});
    CHECK(r.status == 0);
    CHECK(lines(r.out).size() == 1);  // the heading alone
    r = cli({"--dir", dir.path, "ls", "--json"});
    CHECK(r.status == 0);
    CHECK(parseJson(r.out)["segments"].items.empty());
}
