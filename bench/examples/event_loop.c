/* event_loop: one epoll loop serving 8 rings, a timerfd and a TCP listening socket.
 *
 *     event_loop [MESSAGES]        (default 10000 per ring)
 *
 * The parent is a service with a single thread and a single epoll_wait: it consumes 8 SPSC rings
 * through their pollable fds (join_shm_queue_fd, since 1.2), counts ticks of a 10 ms timerfd, and
 * accepts connections on a TCP socket bound to 127.0.0.1 (answering "ok\n"). A forked child
 * feeds the rings and connects once. The fds are edge-triggered: after one polls readable, the
 * loop calls join_shm_try_pop until -EAGAIN, the rule that makes edge triggering safe. Every
 * message is checked. Exits 0 when every message came in order, the connection was served and
 * the timer ticked; the loop never spins (see the count of wake-ups it prints).
 *
 * C11, POSIX and <join/shm.h> only.
 */
#define _GNU_SOURCE

#include <join/shm.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define RINGS 8

typedef struct message {
    uint64_t ring;
    uint64_t seq;
    uint64_t check; /* a function of the two above */
    uint64_t pad[5];
} message;

static uint64_t checkOf(uint64_t ring, uint64_t seq) {
    return (ring * 0x9e3779b97f4a7c15u) ^ (seq * 0xbf58476d1ce4e5b9u);
}

static void ringName(char *out, size_t size, int i) { snprintf(out, size, "ex-loop-%ld-%d", (long)getppid(), i); }

static int fail(const char *what, int rc) {
    fprintf(stderr, "event_loop: %s: %s (%s)\n", what, join_shm_strerror(rc), join_shm_last_error_detail());
    return 1;
}

/* The child: fills each ring with its messages (blocking pushes), then connects to the service. */
static int feed(uint64_t messages, uint16_t port) {
    join_shm_queue *rings[RINGS];
    for (int i = 0; i < RINGS; ++i) {
        char name[64];
        ringName(name, sizeof name, i);
        int rc = join_shm_queue_open(&rings[i], name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(message), 64);
        if (rc != 0) return fail("open (child)", rc);
    }
    for (uint64_t seq = 0; seq < messages; ++seq)
        for (int i = 0; i < RINGS; ++i) {
            message m = {(uint64_t)i, seq, checkOf((uint64_t)i, seq), {0}};
            int rc = join_shm_timed_push(rings[i], &m, 10 * 1000000000LL);
            if (rc != 0) return fail("push", rc);
        }
    for (int i = 0; i < RINGS; ++i)
        join_shm_queue_close(rings[i]);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char reply[4] = {0};
    if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof to) != 0 || read(s, reply, 3) != 3 ||
        strcmp(reply, "ok\n") != 0) {
        perror("event_loop: connect");
        return 1;
    }
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    const uint64_t messages = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000;

    /* The TCP socket first, so that the child knows the port. */
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 8) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("event_loop: listen");
        return 1;
    }

    /* The rings (the child runs getppid() for the names: our pid). */
    join_shm_queue *rings[RINGS];
    char names[RINGS][64];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < RINGS; ++i) {
        snprintf(names[i], sizeof names[i], "ex-loop-%ld-%d", (long)getpid(), i);
        join_shm_unlink(names[i]);
        int rc = join_shm_queue_open(&rings[i], names[i], JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, sizeof(message), 64);
        if (rc != 0) return fail("open", rc);
        int fd = join_shm_queue_fd(rings[i]); /* owned by the handle: never close it yourself */
        if (fd < 0) return fail("join_shm_queue_fd", fd);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct itimerspec every10ms = {{0, 10000000}, {0, 10000000}};
    timerfd_settime(timer, 0, &every10ms, NULL);
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = 100}, lev = {.events = EPOLLIN, .data.u64 = 101};
    epoll_ctl(ep, EPOLL_CTL_ADD, timer, &tev);
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);

    fflush(NULL);
    pid_t child = fork();
    if (child == 0) _exit(feed(messages, ntohs(addr.sin_port)));

    uint64_t next[RINGS] = {0}, received = 0, ticks = 0, wakeups = 0;
    int served = 0, bad = 0;
    while (!bad && (received < RINGS * messages || !served || ticks == 0)) {
        struct epoll_event events[16];
        int n = epoll_wait(ep, events, 16, 10000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "event_loop: nothing happened for 10 s\n");
            bad = 1;
            break;
        }
        ++wakeups;
        for (int k = 0; k < n; ++k) {
            uint64_t what = events[k].data.u64;
            if (what < RINGS) {
                message m;
                int rc;
                while ((rc = join_shm_try_pop(rings[what], &m)) == 0) { /* until -EAGAIN */
                    if (m.ring != what || m.seq != next[what] || m.check != checkOf(m.ring, m.seq)) {
                        fprintf(stderr, "event_loop: ring %" PRIu64 ": bad message %" PRIu64 "\n", what, m.seq);
                        bad = 1;
                    }
                    ++next[what];
                    ++received;
                }
                if (rc != -EAGAIN) return fail("try_pop", rc);
            } else if (what == 100) {
                uint64_t expirations;
                if (read(timer, &expirations, sizeof expirations) == sizeof expirations) ticks += expirations;
            } else {
                int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
                if (c >= 0) {
                    served += write(c, "ok\n", 3) == 3;
                    close(c);
                }
            }
        }
    }
    int status = 0;
    waitpid(child, &status, 0);
    for (int i = 0; i < RINGS; ++i) {
        join_shm_queue_close(rings[i]); /* closes its fd too */
        join_shm_unlink(names[i]);
    }
    close(timer);
    close(listener);
    close(ep);
    printf("event_loop: %" PRIu64 " messages from %d rings, %d connection(s), %" PRIu64 " timer ticks, %" PRIu64
           " wake-ups\n",
           received, RINGS, served, ticks, wakeups);
    return bad || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || received != RINGS * messages;
}
