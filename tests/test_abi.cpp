// The shared object as a program that loads it at run time sees it: dlopen("libjoin-shm.so.1")
// with RTLD_LOCAL, every call found by dlsym under version JOIN_SHM_1.0, a ring driven through
// the function pointers alone. This program does not link the library.
//
// Usage: test_abi PATH-OF-THE-BUILT-LIBRARY [Catch2 options]; the library is loaded by its SONAME
// file, libjoin-shm.so.1, next to that path.
#define CATCH_CONFIG_RUNNER
#include <join/shm.h>  // declarations only: every call below goes through dlsym
#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::string libraryPath;  // the SONAME file, set by main

std::string sonamePath(const std::string &built) {
    const size_t slash = built.rfind('/');
    return (slash == std::string::npos ? std::string(".") : built.substr(0, slash)) + "/libjoin-shm.so.1";
}

// The library, loaded once for all test cases.
class Library {
public:
    Library() {
        handle_ = dlopen(libraryPath.c_str(), RTLD_LOCAL | RTLD_NOW);
        if (!handle_) error_ = dlerror();
    }
    ~Library() {
        if (handle_) dlclose(handle_);
    }
    Library(const Library &) = delete;
    Library &operator=(const Library &) = delete;

    void *handle() const { return handle_; }
    const std::string &error() const { return error_; }

    // The function NAME as type F, or nullptr.
    template <class F>
    F get(const char *name) const {
        return handle_ ? reinterpret_cast<F>(dlsym(handle_, name)) : nullptr;
    }

private:
    void *handle_ = nullptr;
    std::string error_;
};

const Library &library() {
    static Library lib;
    return lib;
}

#define SYM(fn) library().get<decltype(&fn)>(#fn)

// Every call <join/shm.h> declares.
const char *const kCalls[] = {
    "join_shm_version",
    "join_shm_strerror",
    "join_shm_last_error_detail",
    "join_shm_queue_open",
    "join_shm_queue_open_ex",
    "join_shm_queue_close",
    "join_shm_unlink",
    "join_shm_try_push",
    "join_shm_push",
    "join_shm_timed_push",
    "join_shm_try_pop",
    "join_shm_pop",
    "join_shm_timed_pop",
    "join_shm_try_push_n",
    "join_shm_try_pop_n",
    "join_shm_try_reserve",
    "join_shm_commit",
    "join_shm_try_peek",
    "join_shm_release",
    "join_shm_pending",
    "join_shm_available",
    "join_shm_full",
    "join_shm_empty",
    "join_shm_element_size",
    "join_shm_capacity",
    "join_shm_endpoint_open",
    "join_shm_endpoint_close",
    "join_shm_endpoint_unlink",
    "join_shm_try_send",
    "join_shm_send",
    "join_shm_timed_send",
    "join_shm_try_receive",
    "join_shm_receive",
    "join_shm_timed_receive",
    "join_shm_endpoint_available",
    "join_shm_endpoint_pending",
};

}  // namespace

TEST_CASE("the library loads by its SONAME with RTLD_LOCAL and keeps its symbols local", "[abi]") {
    struct stat st;
    INFO("library: " << libraryPath);
    REQUIRE(stat(libraryPath.c_str(), &st) == 0);
    // This program does not link the library: nothing of it is visible before loading.
    CHECK(dlsym(RTLD_DEFAULT, "join_shm_version") == nullptr);
    INFO("dlerror: " << library().error());
    REQUIRE(library().handle() != nullptr);
    // RTLD_LOCAL: loading did not make its symbols global either.
    CHECK(dlsym(RTLD_DEFAULT, "join_shm_version") == nullptr);
    // Loading the same file again gives the same object.
    void *again = dlopen(libraryPath.c_str(), RTLD_LOCAL | RTLD_NOW | RTLD_NOLOAD);
    CHECK(again == library().handle());
    if (again) dlclose(again);
}

TEST_CASE("every call of the header is found, versioned JOIN_SHM_1.0", "[abi]") {
    REQUIRE(library().handle() != nullptr);
    for (const char *name : kCalls) {
        INFO(name);
        void *plain = dlsym(library().handle(), name);
        void *versioned = dlvsym(library().handle(), name, "JOIN_SHM_1.0");
        CHECK(plain != nullptr);
        CHECK(versioned != nullptr);
        CHECK(plain == versioned);
    }
}

TEST_CASE("calls added in 1.1 are versioned JOIN_SHM_1.1", "[abi]") {
    REQUIRE(library().handle() != nullptr);
    void *plain = dlsym(library().handle(), "join_shm_queue_stats");
    CHECK(plain != nullptr);
    CHECK(plain == dlvsym(library().handle(), "join_shm_queue_stats", "JOIN_SHM_1.1"));
    CHECK(dlvsym(library().handle(), "join_shm_queue_stats", "JOIN_SHM_1.0") == nullptr);
}

// JOIN_SHM_PROJECT_VERSION: meson.build's version, as join_shm_version() encodes it.
TEST_CASE("the loaded library reports the project's version, 1.2.0", "[abi]") {
    auto version = SYM(join_shm_version);
    REQUIRE(version != nullptr);
    CHECK(version() == 0x010200u);
    CHECK(version() == JOIN_SHM_PROJECT_VERSION);
    CHECK(version() == ((JOIN_SHM_VERSION_MAJOR << 16) | (JOIN_SHM_VERSION_MINOR << 8) | JOIN_SHM_VERSION_PATCH));
}

TEST_CASE("a ring works through dlsym'ed functions alone", "[abi]") {
    auto open = SYM(join_shm_queue_open);
    auto openEx = SYM(join_shm_queue_open_ex);
    auto close = SYM(join_shm_queue_close);
    auto unlink = SYM(join_shm_unlink);
    auto tryPush = SYM(join_shm_try_push);
    auto tryPop = SYM(join_shm_try_pop);
    auto timedPop = SYM(join_shm_timed_pop);
    auto pushN = SYM(join_shm_try_push_n);
    auto popN = SYM(join_shm_try_pop_n);
    auto pending = SYM(join_shm_pending);
    auto available = SYM(join_shm_available);
    auto full = SYM(join_shm_full);
    auto capacity = SYM(join_shm_capacity);
    auto elementSize = SYM(join_shm_element_size);
    auto detail = SYM(join_shm_last_error_detail);
    auto strerror = SYM(join_shm_strerror);
    REQUIRE(open);
    REQUIRE(openEx);
    REQUIRE(close);
    REQUIRE(unlink);
    REQUIRE(tryPush);
    REQUIRE(tryPop);
    REQUIRE(timedPop);
    REQUIRE(pushN);
    REQUIRE(popN);
    REQUIRE(pending);
    REQUIRE(available);
    REQUIRE(full);
    REQUIRE(capacity);
    REQUIRE(elementSize);
    REQUIRE(detail);
    REQUIRE(strerror);

    const std::string name = "jshm-test-abi-" + std::to_string(getpid());
    unlink(name.c_str());
    join_shm_queue *producer = nullptr, *consumer = nullptr;
    join_shm_options options{};
    options.size = sizeof options;
    options.mode = 0600;
    REQUIRE(openEx(&producer, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 32, 3, &options) == 0);
    REQUIRE(open(&consumer, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 32, 3) == 0);
    CHECK(capacity(producer) == 3);
    CHECK(elementSize(consumer) == 32);

    char element[32];
    for (int i = 0; i < 3; ++i) {
        std::snprintf(element, sizeof element, "element %d", i);
        CHECK(tryPush(producer, element) == 0);
    }
    CHECK(tryPush(producer, element) == -EAGAIN);
    CHECK(full(producer) == 1);
    CHECK(pending(consumer) == 3);
    for (int i = 0; i < 3; ++i) {
        char out[32] = {};
        CHECK(timedPop(consumer, out, 1'000'000'000) == 0);
        CHECK(std::string(out) == "element " + std::to_string(i));
    }
    CHECK(available(producer) == 3);
    char batch[2][32] = {"first", "second"};
    CHECK(pushN(producer, batch, 2) == 2);
    char got[3][32] = {};
    CHECK(popN(consumer, got, 3) == 2);
    CHECK(std::string(got[0]) == "first");
    CHECK(std::string(got[1]) == "second");
    CHECK(tryPop(consumer, got[0]) == -EAGAIN);

    // Errors and their details come through the loaded object too.
    join_shm_queue *other = nullptr;
    CHECK(open(&other, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 16, 3) == -EINVAL);
    CHECK(std::string(detail()).find("element size") != std::string::npos);
    CHECK(open(&other, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, 32, 3) == -EBUSY);
    CHECK(std::strlen(strerror(-EBUSY)) > 0);

    close(producer);
    close(consumer);
    CHECK(unlink(name.c_str()) == 0);
    struct stat st;
    CHECK(stat(("/dev/shm/" + name).c_str(), &st) != 0);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        std::fprintf(stderr, "usage: %s PATH-OF-libjoin-shm.so [Catch2 options]\n", argv[0]);
        return 2;
    }
    libraryPath = sonamePath(argv[1]);
    std::vector<char *> args{argv[0]};
    args.insert(args.end(), argv + 2, argv + argc);
    return Catch::Session().run(static_cast<int>(args.size()), args.data());
}
