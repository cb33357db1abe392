// Helpers shared by the test programs.
#pragma once

#include <join/shm.h>

#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <string>

namespace test {

// A segment name unique to this process and call, unlinked (with its endpoint twins) when the
// guard goes out of scope, whatever path the test took.
struct ShmName {
    std::string name;
    explicit ShmName(const char *tag = "t") {
        static std::atomic<unsigned> counter{0};
        name = std::string("jshm-test-") + tag + "-" + std::to_string(getpid()) + "-" +
               std::to_string(counter.fetch_add(1));
        cleanup();
    }
    ~ShmName() { cleanup(); }
    ShmName(const ShmName &) = delete;
    ShmName &operator=(const ShmName &) = delete;
    const char *c_str() const { return name.c_str(); }
    operator const char *() const { return name.c_str(); }
    void cleanup() const {
        join_shm_unlink(name.c_str());
        join_shm_endpoint_unlink(name.c_str());
    }
};

}  // namespace test
