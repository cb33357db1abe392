// The C++ side of the Python binding's cross-language test (test_join_shm.py), using only <join/shm.h>.
//
//   peer layout        prints the offsets and sizes of join_shm_options / join_shm_stats, one "name value" a
//                      line, so that the script can compare them with its ctypes mirrors.
//   peer NAME COUNT    1. endpoint NAME (SPSC, side B): receives COUNT messages, checks each, answers each with
//                         the next sequence number in the answer pattern;
//                      2. queue NAME_p (SPSC consumer): pops COUNT messages the script pushed in batches, checks
//                         each;
//                      3. queue NAME_s (SPSC producer): pushes COUNT messages for the script to check.
//                      Exits 0 only if every message was the one expected; says what was wrong otherwise.
//
// A message is ELEMENT bytes: the sequence number (native uint64), BODY bytes (start + i) & 0xFF with start
// = (seq * 7 + salt) & 0xFF, then ~seq ^ salt (native uint64). Each direction has its own salt; the two ends
// make a torn or misplaced element visible. Keep in step with make() in test_join_shm.py.
#include <join/shm.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr std::size_t element = 64;
constexpr std::size_t body = element - 16;
constexpr std::uint64_t endpointCapacity = 64;
constexpr std::uint64_t queueCapacity = 256;
// Bounds every wait, so that a vanished script fails the peer instead of hanging it.
constexpr std::int64_t waitNs = 10'000'000'000;

constexpr std::uint64_t saltToPeer = 0x11;    // script -> peer on the endpoint
constexpr std::uint64_t saltFromPeer = 0x5a;  // peer -> script on the endpoint (answers)
constexpr std::uint64_t saltBatch = 0x23;     // script -> peer on NAME_p
constexpr std::uint64_t saltStream = 0xc4;    // peer -> script on NAME_s

void make(unsigned char *out, std::uint64_t seq, std::uint64_t salt) {
    std::memcpy(out, &seq, sizeof seq);
    const auto start = static_cast<unsigned>((seq * 7 + salt) & 0xFF);
    for (std::size_t i = 0; i < body; ++i) {
        out[8 + i] = static_cast<unsigned char>((start + i) & 0xFF);
    }
    const std::uint64_t tail = ~seq ^ salt;
    std::memcpy(out + 8 + body, &tail, sizeof tail);
}

bool check(const unsigned char *got, std::uint64_t seq, std::uint64_t salt, const char *what) {
    unsigned char want[element];
    make(want, seq, salt);
    if (std::memcmp(got, want, element) == 0) {
        return true;
    }
    std::uint64_t gotSeq = 0;
    std::memcpy(&gotSeq, got, sizeof gotSeq);
    std::fprintf(stderr, "peer: %s message %llu is wrong (its sequence field says %llu)\n", what,
                 static_cast<unsigned long long>(seq), static_cast<unsigned long long>(gotSeq));
    return false;
}

int fail(const char *call, int rc) {
    std::fprintf(stderr, "peer: %s failed: %s (%s)\n", call, join_shm_strerror(rc), join_shm_last_error_detail());
    return 1;
}

int layout() {
#define FIELD(type, field) std::printf(#type "." #field " %zu %zu\n", offsetof(type, field), sizeof(type::field))
    std::printf("join_shm_options %zu\n", sizeof(join_shm_options));
    FIELD(join_shm_options, size);
    FIELD(join_shm_options, mode);
    FIELD(join_shm_options, open_timeout_ns);
    FIELD(join_shm_options, flags);
    FIELD(join_shm_options, spin_ns);
    FIELD(join_shm_options, max_subscribers);
    FIELD(join_shm_options, overflow);
    FIELD(join_shm_options, join_at);
    FIELD(join_shm_options, reserved);
    std::printf("join_shm_stats %zu\n", sizeof(join_shm_stats));
    FIELD(join_shm_stats, size);
    FIELD(join_shm_stats, policy);
    FIELD(join_shm_stats, element_size);
    FIELD(join_shm_stats, capacity);
    FIELD(join_shm_stats, pending);
    FIELD(join_shm_stats, pushed);
    FIELD(join_shm_stats, popped);
    FIELD(join_shm_stats, skipped);
    FIELD(join_shm_stats, producer_pid);
    FIELD(join_shm_stats, consumer_pid);
#undef FIELD
    return 0;
}

int echo(const std::string &name, std::uint64_t count) {
    join_shm_endpoint *e = nullptr;
    int rc = join_shm_endpoint_open(&e, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, element, endpointCapacity);
    if (rc < 0) {
        return fail("join_shm_endpoint_open", rc);
    }
    unsigned char in[element];
    unsigned char out[element];
    int status = 0;
    for (std::uint64_t seq = 0; seq < count && status == 0; ++seq) {
        if ((rc = join_shm_timed_receive(e, in, waitNs)) < 0) {
            status = fail("join_shm_timed_receive", rc);
        } else if (!check(in, seq, saltToPeer, "endpoint")) {
            status = 1;
        } else {
            make(out, seq + 1, saltFromPeer);
            if ((rc = join_shm_timed_send(e, out, waitNs)) < 0) {
                status = fail("join_shm_timed_send", rc);
            }
        }
    }
    join_shm_endpoint_close(e);
    return status;
}

int consume(const std::string &name, std::uint64_t count) {
    join_shm_queue *q = nullptr;
    int rc = join_shm_queue_open(&q, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, element, queueCapacity);
    if (rc < 0) {
        return fail("join_shm_queue_open (consumer)", rc);
    }
    unsigned char in[element];
    int status = 0;
    for (std::uint64_t seq = 0; seq < count && status == 0; ++seq) {
        if ((rc = join_shm_timed_pop(q, in, waitNs)) < 0) {
            status = fail("join_shm_timed_pop", rc);
        } else if (!check(in, seq, saltBatch, "batch")) {
            status = 1;
        }
    }
    join_shm_queue_close(q);
    return status;
}

int produce(const std::string &name, std::uint64_t count) {
    join_shm_queue *q = nullptr;
    int rc = join_shm_queue_open(&q, name.c_str(), JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, element, queueCapacity);
    if (rc < 0) {
        return fail("join_shm_queue_open (producer)", rc);
    }
    unsigned char out[element];
    int status = 0;
    for (std::uint64_t seq = 0; seq < count && status == 0; ++seq) {
        make(out, seq, saltStream);
        if ((rc = join_shm_timed_push(q, out, waitNs)) < 0) {
            status = fail("join_shm_timed_push", rc);
        }
    }
    // Closing the producer leaves what it pushed in the ring for the script to pop.
    join_shm_queue_close(q);
    return status;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 2 && std::strcmp(argv[1], "layout") == 0) {
        return layout();
    }
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s layout | %s NAME COUNT\n", argv[0], argv[0]);
        return 2;
    }
    const std::string name = argv[1];
    char *end = nullptr;
    const std::uint64_t count = std::strtoull(argv[2], &end, 10);
    if (*argv[2] == '\0' || *end != '\0') {
        std::fprintf(stderr, "peer: COUNT must be a number, not \"%s\"\n", argv[2]);
        return 2;
    }
    if (echo(name, count) != 0 || consume(name + "_p", count) != 0 || produce(name + "_s", count) != 0) {
        return 1;
    }
    return 0;
}
