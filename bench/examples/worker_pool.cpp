// worker_pool: a parent hands out jobs to worker processes through shared-memory rings.
//
//     worker_pool [WORKERS] [JOBS]        (default 4 workers, 10000 jobs)
//
// Jobs go out on an MPMC ring (one producer, the parent; many consumers, the workers), results
// come back on an MPSC ring (many producers, the workers; one consumer, the parent). A job is a
// number; its result is the number squared, signed by the worker that computed it. Each worker
// stops when it takes a stop job; the parent sends one per worker after the real ones. The parent
// checks that every job got exactly one right result; the exit status is 0 only then.
//
// C++17 and <join/shared.hpp> only: every call returns 0 or -1, and join::lastError says why.
#include <join/shared.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

using namespace join;
using namespace std::chrono_literals;

namespace {

struct Job {
    uint64_t id;  // kStop: no more work, exit
    uint64_t number;
};

struct Result {
    uint64_t id;
    uint64_t square;
    uint64_t worker;
};

constexpr uint64_t kStop = UINT64_MAX;
constexpr uint64_t kCapacity = 64;  // far fewer than the jobs: the parent must keep up with results
constexpr auto kPatience = 10s;     // a peer silent this long has died or hung: give up

// Says which call failed and why; false, for `ok = failed(...)`.
bool failed(const std::string &who, const char *what) {
    std::cerr << "worker_pool " << who << ": " << what << ": " << lastError.message() << " (" << lastErrorDetail()
              << ")\n";
    return false;
}

// A worker: take jobs until the stop job, answer each on the results ring. The objects close their
// rings when they go out of scope; the parent unlinks them.
int work(uint64_t worker, const std::string &jobsName, const std::string &resultsName) {
    const std::string who = "worker " + std::to_string(worker);
    Mpmc::Consumer jobs(jobsName, sizeof(Job), kCapacity);
    Mpsc::Producer results(resultsName, sizeof(Result), kCapacity);
    if (jobs.open() == -1 || results.open() == -1) {
        failed(who, jobs.opened() ? "open results" : "open jobs");
        return 1;
    }
    for (;;) {
        Job job;
        if (jobs.timedPop(&job, kPatience) == -1) {
            failed(who, "pop a job");
            return 1;
        }
        if (job.id == kStop) return 0;
        const Result result{job.id, job.number * job.number, worker};
        if (results.timedPush(&result, kPatience) == -1) {
            failed(who, "push a result");
            return 1;
        }
    }
}

// Removes the rings when the parent leaves, whatever happened.
struct Unlink {
    std::vector<std::string> names;
    ~Unlink() {
        for (const auto &name : names)
            SharedMemory::unlink(name);
    }
};

}  // namespace

int main(int argc, char **argv) {
    const uint64_t workers = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 4;
    const uint64_t count = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 10000;
    if (argc > 3 || workers < 1 || workers > 64 || count < 1 || count > 1'000'000'000) {
        std::cerr << "usage: worker_pool [WORKERS 1-64] [JOBS 1-1000000000]   (default 4, 10000)\n";
        return 2;
    }

    // Names of our own, so that two runs at once do not meet.
    const std::string tag = std::to_string(getpid());
    const Unlink cleanup{{"worker_pool_jobs_" + tag, "worker_pool_results_" + tag}};
    const std::string &jobsName = cleanup.names[0], &resultsName = cleanup.names[1];

    // Workers first: each opens its own handles after fork (a handle never crosses a fork).
    std::vector<pid_t> pids;
    for (uint64_t w = 0; w < workers; ++w) {
        std::cout.flush();
        const pid_t pid = fork();
        if (pid < 0) {
            std::perror("worker_pool: fork");
            break;  // ok is false below: the workers already started are stopped
        }
        if (pid == 0) _exit(work(w, jobsName, resultsName));  // _exit: the parent's objects are not ours
        pids.push_back(pid);
    }

    Mpmc::Producer jobs(jobsName, sizeof(Job), kCapacity);
    Mpsc::Consumer results(resultsName, sizeof(Result), kCapacity);
    bool ok = pids.size() == workers;
    if (jobs.open() == -1) ok = failed("parent", "open jobs");
    if (ok && results.open() == -1) ok = failed("parent", "open results");

    // Send the jobs, then one stop job per worker, while taking results as they come: with both
    // rings small, waiting only to send (or only to receive) could leave both sides waiting on the
    // other.
    const uint64_t toSend = ok ? count + pids.size() : 0;
    std::vector<bool> answered(count, false);
    std::vector<uint64_t> perWorker(workers, 0);
    uint64_t sent = 0, received = 0;
    auto lastProgress = std::chrono::steady_clock::now();
    while (ok && received < count) {
        bool progress = false;
        if (sent < toSend) {
            const Job job = sent < count ? Job{sent, sent + 1} : Job{kStop, 0};
            if (jobs.tryPush(&job) == 0) {
                ++sent;
                progress = true;
            } else if (lastError != Errc::TemporaryError) {  // full is normal; anything else is not
                ok = failed("parent", "push a job");
            }
        }
        Result r;
        // Nothing to send (or the job ring full): wait a little for a result instead of spinning.
        const int got = sent < toSend && progress ? results.tryPop(&r) : results.timedPop(&r, 1ms);
        if (got == 0) {
            progress = true;
            if (r.id >= count || answered[r.id] || r.worker >= workers || r.square != (r.id + 1) * (r.id + 1)) {
                std::cerr << "worker_pool: wrong or repeated result: job " << r.id << ", square " << r.square
                          << ", worker " << r.worker << "\n";
                ok = false;
            } else {
                answered[r.id] = true;
                ++perWorker[r.worker];
                ++received;
            }
        } else if (lastError != Errc::TemporaryError && lastError != Errc::TimedOut) {
            ok = failed("parent", "pop a result");
        }
        const auto now = std::chrono::steady_clock::now();
        if (progress) {
            lastProgress = now;
        } else if (now - lastProgress > kPatience) {
            std::cerr << "worker_pool: no progress for 10 s: " << sent << " sent, " << received << " results\n";
            ok = false;
        }
    }
    // The stop jobs not sent yet (results can all be in before the last stop job went out).
    while (ok && sent < toSend) {
        const Job stop{kStop, 0};
        if (jobs.timedPush(&stop, kPatience) == -1) ok = failed("parent", "push a stop job");
        ++sent;
    }

    for (pid_t pid : pids) {
        if (!ok) kill(pid, SIGTERM);  // a worker may be waiting for a job that will not come
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (ok) std::cerr << "worker_pool: worker process " << pid << " did not exit cleanly\n";
            ok = false;
        }
    }
    if (!ok) {
        std::cerr << "worker_pool: FAILED\n";
        return 1;
    }
    std::cout << count << " jobs, " << workers
              << " worker processes, every result right and received once; per worker:";
    for (uint64_t n : perWorker)
        std::cout << ' ' << n;
    std::cout << '\n';
    return 0;
}
