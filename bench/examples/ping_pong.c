/* ping_pong: two processes bounce a message over a libjoin-shm SPSC endpoint and time it.
 *
 *     ping_pong [ROUNDS]        (default 100000)
 *
 * The program forks: the parent is side A of the endpoint and pings, the child is side B and
 * answers. An endpoint is two rings, NAME_AB (A to B) and NAME_BA (B to A); whichever process
 * opens first creates them, so the two may start in any order. Every message is checked on both
 * sides. Prints the median round trip; exits 0 only if every round came back right.
 *
 * C11 and <join/shm.h> only: the C API returns 0 or a negative errno value, and
 * join_shm_last_error_detail() says in one sentence what went wrong.
 */
#define _POSIX_C_SOURCE 200809L

#include <join/shm.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One message: a round number and a word that each side replaces. 64 bytes, a cache line. */
typedef struct message {
    uint64_t round;
    char word[56];
} message;

enum { kCapacity = 16 }; /* a ping-pong has at most one message in flight per direction */

/* A peer that died would otherwise leave the other waiting forever: wait at most this long. */
static const int64_t kTimeoutNs = INT64_C(5000000000);

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reports a failed call: the errno meaning and the library's sentence about it. */
static int failed(const char *role, const char *call, int err) {
    fprintf(stderr, "ping_pong %s: %s: %s (%s)\n", role, call, join_shm_strerror(err), join_shm_last_error_detail());
    return 1;
}

static int compare_ns(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Side B: receive ping N, answer pong N, ROUNDS times. */
static int pong(const char *name, uint64_t rounds) {
    join_shm_endpoint *e = NULL;
    int err = join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, sizeof(message), kCapacity);
    if (err != 0) return failed("pong", "join_shm_endpoint_open", err);
    int status = 0;
    for (uint64_t i = 0; i < rounds && status == 0; ++i) {
        message m;
        if ((err = join_shm_timed_receive(e, &m, kTimeoutNs)) != 0) {
            status = failed("pong", "join_shm_timed_receive", err);
        } else if (m.round != i || strcmp(m.word, "ping") != 0) {
            fprintf(stderr, "ping_pong pong: expected ping %" PRIu64 ", got \"%.8s\" %" PRIu64 "\n", i, m.word,
                    m.round);
            status = 1;
        } else {
            strcpy(m.word, "pong");
            if ((err = join_shm_timed_send(e, &m, kTimeoutNs)) != 0)
                status = failed("pong", "join_shm_timed_send", err);
        }
    }
    join_shm_endpoint_close(e); /* closing never unlinks: the parent does that */
    return status;
}

/* Side A: send ping N, wait for pong N, time each round. */
static int ping(const char *name, uint64_t rounds, int64_t *samples) {
    join_shm_endpoint *e = NULL;
    int err = join_shm_endpoint_open(&e, name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, sizeof(message), kCapacity);
    if (err != 0) return failed("ping", "join_shm_endpoint_open", err);
    int status = 0;
    for (uint64_t i = 0; i < rounds && status == 0; ++i) {
        message m;
        memset(&m, 0, sizeof m);
        m.round = i;
        strcpy(m.word, "ping");
        const int64_t start = now_ns();
        if ((err = join_shm_timed_send(e, &m, kTimeoutNs)) != 0) {
            status = failed("ping", "join_shm_timed_send", err);
        } else if ((err = join_shm_timed_receive(e, &m, kTimeoutNs)) != 0) {
            status = failed("ping", "join_shm_timed_receive", err);
        } else if (m.round != i || strcmp(m.word, "pong") != 0) {
            fprintf(stderr, "ping_pong ping: expected pong %" PRIu64 ", got \"%.8s\" %" PRIu64 "\n", i, m.word,
                    m.round);
            status = 1;
        }
        samples[i] = now_ns() - start;
    }
    join_shm_endpoint_close(e);
    return status;
}

int main(int argc, char **argv) {
    uint64_t rounds = 100000;
    if (argc > 2 || (argc == 2 && sscanf(argv[1], "%" SCNu64, &rounds) != 1) || rounds == 0 ||
        rounds > SIZE_MAX / sizeof(int64_t)) {
        fprintf(stderr, "usage: ping_pong [ROUNDS]   (default 100000)\n");
        return 2;
    }
    int64_t *samples = malloc(rounds * sizeof *samples);
    if (!samples) {
        fprintf(stderr, "ping_pong: out of memory\n");
        return 1;
    }

    /* A name of our own, so that two runs at once do not meet. */
    char name[64];
    snprintf(name, sizeof name, "ping_pong_%ld", (long)getpid());

    fflush(stdout); /* or the child would print our buffered output again */
    const pid_t child = fork();
    if (child < 0) {
        perror("ping_pong: fork");
        free(samples);
        return 1;
    }
    if (child == 0) _exit(pong(name, rounds)); /* the child opens its own handles, after fork */

    int status = ping(name, rounds, samples);
    if (status != 0) kill(child, SIGTERM); /* do not leave it waiting for us */
    int child_status = 0;
    if (waitpid(child, &child_status, 0) != child || !WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0)
        status = 1;
    /* Remove both rings (NAME_AB and NAME_BA) whatever happened; missing ones are not an error. */
    const int err = join_shm_endpoint_unlink(name);
    if (err != 0) status = failed("ping", "join_shm_endpoint_unlink", err);

    if (status == 0) {
        qsort(samples, rounds, sizeof *samples, compare_ns);
        printf("%" PRIu64 " round trips of %zu bytes, every one checked: median %.2f us\n", rounds, sizeof(message),
               (double)samples[rounds / 2] / 1000.0);
    }
    free(samples);
    return status;
}
