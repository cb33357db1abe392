// What the bridge tests and the bridge benchmark share: a nats-server of their own on 127.0.0.1
// (a free port, a temporary JetStream store), `join-shm bridge` processes, and a client connection.
// Every child is killed when its owner goes out of scope, so nothing outlives a failed test.
#pragma once

#include <nats/nats.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace harness {

inline int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline void sleepMs(int64_t ms) {
    timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1'000'000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// The nats-server program: $NATS_SERVER, else the usual places; empty if there is none.
inline std::string natsServerPath() {
    std::vector<std::string> candidates;
    if (const char *env = std::getenv("NATS_SERVER")) candidates.emplace_back(env);
    for (const char *dir : {"/usr/sbin", "/usr/bin", "/usr/local/bin"})
        candidates.push_back(std::string(dir) + "/nats-server");
    for (const std::string &c : candidates)
        if (!c.empty() && access(c.c_str(), X_OK) == 0) return c;
    return {};
}

// The join-shm tool under test ($JOIN_SHM_CLI, set by meson).
inline std::string cliPath() {
    const char *env = std::getenv("JOIN_SHM_CLI");
    return env ? env : "";
}

// A free TCP port on the loopback interface (the kernel picks it; we release it for the server).
inline int freePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0)
        throw std::runtime_error(std::string("no free port: ") + std::strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

inline bool portOpen(int port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

inline std::string readFile(const std::string &path);

// A child process: argv[0] is the program; stdout and stderr go to logPath (or /dev/null).
class Process {
public:
    Process() = default;
    Process(const std::vector<std::string> &argv, const std::string &logPath,
            const std::vector<std::string> &env = {}) {
        start(argv, logPath, env);
    }
    ~Process() { kill(SIGKILL); }
    Process(const Process &) = delete;
    Process &operator=(const Process &) = delete;

    void start(const std::vector<std::string> &argv, const std::string &logPath,
               const std::vector<std::string> &env = {}) {
        kill(SIGKILL);
        std::vector<char *> args;
        for (const std::string &a : argv)
            args.push_back(const_cast<char *>(a.c_str()));
        args.push_back(nullptr);
        // The environment is built before fork: the child of a threaded process may only call
        // async-signal-safe functions.
        std::vector<std::string> vars = env;
        for (char **e = environ; *e; ++e)
            vars.emplace_back(*e);
        std::vector<char *> envp;
        for (std::string &v : vars)
            envp.push_back(v.data());
        envp.push_back(nullptr);
        pid_ = fork();
        if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        if (pid_ == 0) {
            const int out = open(logPath.empty() ? "/dev/null" : logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (out >= 0) {
                dup2(out, 1);
                dup2(out, 2);
            }
            execve(args[0], args.data(), envp.data());
            _exit(127);
        }
    }
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    // False once the child has ended (it is then reaped).
    bool alive() {
        int status = 0;
        if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
        return pid_ > 0;
    }

    // Sends sig and reaps the child; its exit status (128 + signal if killed), or -1 if it did not
    // end within timeoutMs (it is then killed).
    int kill(int sig, int64_t timeoutMs = 10'000) {
        if (pid_ <= 0) return -1;
        ::kill(pid_, sig);
        return wait(timeoutMs);
    }
    // Waits for the child to end by itself; as kill().
    int wait(int64_t timeoutMs) {
        if (pid_ <= 0) return -1;
        const int64_t deadline = nowNs() + timeoutMs * 1'000'000;
        int status = 0;
        for (;;) {
            const pid_t r = waitpid(pid_, &status, WNOHANG);
            if (r == pid_) break;
            if (r < 0 || nowNs() > deadline) {
                ::kill(pid_, SIGKILL);
                waitpid(pid_, &status, 0);
                pid_ = -1;
                return -1;
            }
            sleepMs(5);
        }
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    pid_t pid_ = -1;
};

// nats-server -a 127.0.0.1 -p PORT [-js -sd STORE]: started by the constructor, killed by the
// destructor (the store is removed). restart() keeps port and store.
class Server {
public:
    explicit Server(bool jetstream) : jetstream_(jetstream), port_(freePort()) {
        char dir[] = "/tmp/join-shm-nats-XXXXXX";
        if (!mkdtemp(dir)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
        dir_ = dir;
        start();
    }
    ~Server() {
        process_.kill(SIGKILL);
        if (std::getenv("JOIN_SHM_KEEP_NATS_DIR")) return;  // for a post-mortem: logs and store
        const std::string command = "rm -rf '" + dir_ + "'";
        if (std::system(command.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir_.c_str());
    }
    std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
    const std::string &dir() const { return dir_; }

    void start() {
        std::vector<std::string> argv = {natsServerPath(), "-a", "127.0.0.1", "-p", std::to_string(port_)};
        if (jetstream_) argv.insert(argv.end(), {"-js", "-sd", dir_ + "/store"});
        process_.start(argv, dir_ + "/server.log");
        const int64_t deadline = nowNs() + 20'000'000'000;
        while (!portOpen(port_)) {
            if (nowNs() > deadline || !process_.alive()) {
                const std::string log = readFile(dir_ + "/server.log");
                throw std::runtime_error("nats-server did not start: " +
                                         log.substr(log.size() > 2000 ? log.size() - 2000 : 0));
            }
            sleepMs(20);
        }
    }
    void kill(int sig = SIGKILL) { process_.kill(sig); }
    void restart(int sig = SIGKILL) {
        kill(sig);
        start();
    }

private:
    bool jetstream_;
    int port_;
    std::string dir_;
    Process process_;
};

// A plain client connection, for publishing straight to a subject and for asking the server.
struct Client {
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    explicit Client(const std::string &url) {
        natsOptions *o = nullptr;
        natsStatus s = natsOptions_Create(&o);
        if (s == NATS_OK) s = natsOptions_SetURL(o, url.c_str());
        if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
        if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 50);
        if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
        if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, nullptr);
        natsOptions_Destroy(o);
        if (s != NATS_OK) throw std::runtime_error(std::string("client: ") + natsStatus_GetText(s));
    }
    ~Client() {
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
    }
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    void publish(const std::string &subject, const void *data, size_t size) const {
        natsStatus s = natsConnection_Publish(nc, subject.c_str(), data, static_cast<int>(size));
        if (s != NATS_OK) throw std::runtime_error(std::string("publish: ") + natsStatus_GetText(s));
    }
    void flush() const { natsConnection_FlushTimeout(nc, 10'000); }

    // Messages in the stream (retrying while the server restarts); -1 if it never answers.
    int64_t streamMessages(const std::string &stream) const {
        for (int attempt = 0; attempt < 100; ++attempt) {
            jsStreamInfo *si = nullptr;
            if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
                const auto n = static_cast<int64_t>(si->State.Msgs);
                jsStreamInfo_Destroy(si);
                return n;
            }
            sleepMs(100);
        }
        return -1;
    }
    void addStream(const std::string &stream, const std::string &subject) const {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const char *subjects[] = {subject.c_str()};
        cfg.Name = stream.c_str();
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        jsStreamInfo *si = nullptr;
        const natsStatus s = js_AddStream(&si, js, &cfg, nullptr, nullptr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK) throw std::runtime_error(std::string("add stream: ") + natsStatus_GetText(s));
    }
};

// The last "moved N, dropped N" line a bridge printed (--stats); false if there is none.
inline bool lastCounts(const std::string &logPath, uint64_t &moved, uint64_t &dropped) {
    std::ifstream in(logPath);
    std::string line, last;
    while (std::getline(in, line))
        if (line.find(": moved ") != std::string::npos) last = line;
    if (last.empty()) return false;
    unsigned long long m = 0, d = 0;
    if (std::sscanf(last.c_str() + last.find(": moved "), ": moved %llu, dropped %llu", &m, &d) != 2) return false;
    moved = m;
    dropped = d;
    return true;
}

inline std::string readFile(const std::string &path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// Resident memory of a process in KiB (VmRSS), 0 if unknown.
inline uint64_t rssKiB(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
    return 0;
}

}  // namespace harness
