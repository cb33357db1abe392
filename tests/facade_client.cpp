// A C++ program that uses libjoin-shm the way an outside client does: only <join/shared.hpp>, built
// by the tiny CMake and meson projects (tests/cmake, tests/subproject) against the installed or
// subproject library. The CMake project asks for C++11 itself: the C++17 that the facade needs
// must come from the join-shm::join-shm target. Exits 0 when every check passed.
#include <join/shared.hpp>

#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <string>

static_assert(__cplusplus >= 201703L, "the join-shm::join-shm target must carry C++17");

int main() {
    using namespace join;
    const std::string name = "jshm-facade-client-" + std::to_string(getpid());
    int failures = 0;
    const auto expect = [&failures](bool ok, const char *what) {
        if (!ok) std::fprintf(stderr, "failed: %s (%s)\n", what, lastError.message().c_str());
        failures += ok ? 0 : 1;
    };

    {
        Spsc::Producer producer(name, 16, 4);
        Spsc::Consumer consumer(name, 16, 4);
        expect(producer.open() == 0, "producer.open()");
        expect(consumer.open() == 0, "consumer.open()");
        char in[16] = "hello", out[16] = {};
        expect(producer.tryPush(in) == 0, "tryPush");
        expect(consumer.tryPop(out) == 0, "tryPop");
        expect(std::memcmp(in, out, sizeof in) == 0, "the message came through");
        expect(consumer.tryPop(out) == -1 && lastError == Errc::TemporaryError, "an empty ring says so");
    }
    expect(SharedMemory::unlink(name) == 0, "unlink");
    expect(join_shm_version() >> 16 == JOIN_SHM_VERSION_MAJOR, "the library's major version is the header's");
    if (failures == 0)
        std::printf("facade client: ok (libjoin-shm %u.%u)\n", join_shm_version() >> 16,
                    (join_shm_version() >> 8) & 0xffu);
    return failures == 0 ? 0 : 1;
}
