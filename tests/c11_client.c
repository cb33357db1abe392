/* A C11 program that uses libjoin-shm the way an outside client does: only <join/shm.h>, built with
 * -std=c11 -pedantic -Werror, one ring shared with a forked child that opens its own handle.
 * Exits 0 when every check passed; prints each failed check to stderr. */
#define _POSIX_C_SOURCE 200809L

#include <join/shm.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0;

#define EXPECT(cond)                                                                                             \
    do {                                                                                                         \
        if (!(cond)) {                                                                                           \
            fprintf(stderr, "%s:%d: [pid %d] failed: %s (last detail: %s)\n", __FILE__, __LINE__, (int)getpid(), \
                    #cond, join_shm_last_error_detail());                                                        \
            ++failures;                                                                                          \
        }                                                                                                        \
    } while (0)

enum { kCount = 20000, kCapacity = 8 };

struct message {
    uint64_t seq;
    uint32_t square;
    char text[20];
};

static struct message make_message(uint64_t seq) {
    struct message m;
    memset(&m, 0, sizeof m);
    m.seq = seq;
    m.square = (uint32_t)(seq * seq);
    snprintf(m.text, sizeof m.text, "message %llu", (unsigned long long)seq);
    return m;
}

static int same_message(const struct message *a, const struct message *b) {
    return a->seq == b->seq && a->square == b->square && strcmp(a->text, b->text) == 0;
}

/* The child: its own consumer handle, every pop flavour, then an answer back on a second ring. */
static int child_main(const char *name, const char *reply_name) {
    join_shm_queue *in = NULL, *out = NULL;
    struct message got, batch[5];
    uint64_t next = 0, sum = 0;
    int r;

    alarm(120); /* alarms are not inherited across fork */
    EXPECT(join_shm_queue_open(&in, name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, sizeof(struct message), kCapacity) == 0);
    EXPECT(join_shm_queue_open(&out, reply_name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(uint64_t), 1) == 0);
    if (!in || !out) return 1;
    EXPECT(join_shm_element_size(in) == sizeof(struct message));
    EXPECT(join_shm_capacity(in) == kCapacity);
    while (next < kCount) {
        switch (next % 4) {
            case 0:
                r = join_shm_pop(in, &got);
                EXPECT(r == 0);
                break;
            case 1:
                r = join_shm_timed_pop(in, &got, 10 * 1000000000LL);
                EXPECT(r == 0);
                break;
            case 2: {
                const void *slot = NULL;
                while ((r = join_shm_try_peek(in, &slot)) == -EAGAIN) {
                }
                EXPECT(r == 0);
                if (r == 0) {
                    memcpy(&got, slot, sizeof got);
                    EXPECT(join_shm_release(in) == 0);
                }
                break;
            }
            default: {
                int64_t n;
                while ((n = join_shm_try_pop_n(in, batch, 1)) == -EAGAIN) {
                }
                EXPECT(n == 1);
                got = batch[0];
                r = n == 1 ? 0 : -1;
                break;
            }
        }
        if (r != 0) return 1;
        {
            struct message want = make_message(next);
            EXPECT(same_message(&got, &want));
            if (!same_message(&got, &want)) return 1;
        }
        sum += got.seq;
        ++next;
    }
    EXPECT(join_shm_try_pop(in, &got) == -EAGAIN);
    EXPECT(join_shm_timed_pop(in, &got, 0) == -ETIMEDOUT);
    EXPECT(join_shm_empty(in) == 1);
    EXPECT(join_shm_push(out, &sum) == 0);
    join_shm_queue_close(in);
    join_shm_queue_close(out);
    return failures ? 1 : 0;
}

int main(void) {
    char name[64], reply_name[64], path[96];
    join_shm_queue *q = NULL, *reply = NULL, *bad = (join_shm_queue *)&failures;
    join_shm_options options;
    struct message m;
    struct stat st;
    uint64_t seq, sum = 0, child_sum = 0;
    pid_t child;
    int status = 0, r;

    alarm(120); /* a hang ends the test instead of blocking the suite */
    snprintf(name, sizeof name, "/jshm-c11-%d", (int)getpid());
    snprintf(reply_name, sizeof reply_name, "jshm-c11-%d-reply", (int)getpid());
    snprintf(path, sizeof path, "/dev/shm%s", name);
    join_shm_unlink(name);
    join_shm_unlink(reply_name);

    EXPECT(join_shm_version() ==
           (uint32_t)((JOIN_SHM_VERSION_MAJOR << 16) | (JOIN_SHM_VERSION_MINOR << 8) | JOIN_SHM_VERSION_PATCH));
    EXPECT(join_shm_strerror(-EAGAIN) != NULL);
    EXPECT(join_shm_strerror(123456) != NULL);
    EXPECT(join_shm_last_error_detail() != NULL);

    /* Errors, as a C caller sees them. */
    EXPECT(join_shm_queue_open(&bad, NULL, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 8, 8) == -EINVAL);
    EXPECT(bad == NULL);
    EXPECT(strlen(join_shm_last_error_detail()) > 0);
    EXPECT(join_shm_queue_open(&q, name, (join_shm_policy)9, JOIN_SHM_PRODUCER, 8, 8) == -EINVAL);
    EXPECT(join_shm_queue_open(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, 0, 8) == -EINVAL);
    EXPECT(join_shm_unlink(name) == 0);
    join_shm_queue_close(NULL);

    memset(&options, 0, sizeof options);
    options.size = sizeof options;
    options.mode = 0640;
    r = join_shm_queue_open_ex(&q, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(struct message), kCapacity, &options);
    EXPECT(r == 0);
    if (r != 0) return 1;
    EXPECT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);
    EXPECT(join_shm_queue_open(&reply, reply_name, JOIN_SHM_SPSC, JOIN_SHM_CONSUMER, sizeof(uint64_t), 1) == 0);
    EXPECT(join_shm_queue_open(&bad, name, JOIN_SHM_SPSC, JOIN_SHM_PRODUCER, sizeof(struct message), kCapacity) ==
           -EBUSY);
    EXPECT(join_shm_try_pop(q, &m) == -EINVAL); /* a producer does not pop */

    fflush(NULL);
    child = fork();
    if (child < 0) return 1;
    if (child == 0) _exit(child_main(name, reply_name));

    /* The parent: every push flavour. */
    for (seq = 0; seq < kCount; ++seq) {
        m = make_message(seq);
        switch (seq % 4) {
            case 0:
                r = join_shm_push(q, &m);
                break;
            case 1:
                r = join_shm_timed_push(q, &m, 10 * 1000000000LL);
                break;
            case 2: {
                void *slot = NULL;
                while ((r = join_shm_try_reserve(q, &slot)) == -EAGAIN) {
                }
                if (r == 0) {
                    memcpy(slot, &m, sizeof m);
                    r = join_shm_commit(q);
                }
                break;
            }
            default: {
                int64_t n;
                while ((n = join_shm_try_push_n(q, &m, 1)) == -EAGAIN) {
                }
                r = n == 1 ? 0 : -1;
                break;
            }
        }
        EXPECT(r == 0);
        if (r != 0) break;
        sum += seq;
    }
    EXPECT(join_shm_timed_pop(reply, &child_sum, 60 * 1000000000LL) == 0);
    EXPECT(child_sum == sum);
    EXPECT(waitpid(child, &status, 0) == child);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Inspection after the stream. */
    EXPECT(join_shm_pending(q) == 0);
    EXPECT(join_shm_available(q) == kCapacity);
    EXPECT(join_shm_empty(q) == 1);
    EXPECT(join_shm_full(q) == 0);
    for (seq = 0; seq < kCapacity; ++seq) {
        m = make_message(seq);
        EXPECT(join_shm_try_push(q, &m) == 0);
    }
    EXPECT(join_shm_try_push(q, &m) == -EAGAIN);
    EXPECT(join_shm_full(q) == 1);
    EXPECT(join_shm_pending(q) == kCapacity);

    /* An endpoint, both sides in this process. */
    {
        join_shm_endpoint *a = NULL, *b = NULL;
        uint64_t ping = 7, pong = 0;
        EXPECT(join_shm_endpoint_open(&a, reply_name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_A, 8, 2) == 0);
        EXPECT(join_shm_endpoint_open(&b, reply_name, JOIN_SHM_SPSC, JOIN_SHM_SIDE_B, 8, 2) == 0);
        EXPECT(join_shm_try_send(a, &ping) == 0);
        EXPECT(join_shm_endpoint_pending(b) == 1);
        EXPECT(join_shm_endpoint_available(a) == 1);
        EXPECT(join_shm_timed_receive(b, &pong, 1000000000LL) == 0 && pong == 7);
        EXPECT(join_shm_send(b, &ping) == 0);
        EXPECT(join_shm_receive(a, &pong) == 0);
        EXPECT(join_shm_try_receive(a, &pong) == -EAGAIN);
        EXPECT(join_shm_timed_send(a, &ping, 0) == 0);
        join_shm_endpoint_close(a);
        join_shm_endpoint_close(b);
        EXPECT(join_shm_endpoint_unlink(reply_name) == 0);
    }

    join_shm_queue_close(q);
    join_shm_queue_close(reply);
    EXPECT(join_shm_unlink(name) == 0);
    EXPECT(join_shm_unlink(reply_name) == 0);
    EXPECT(stat(path, &st) != 0);
    EXPECT(join_shm_unlink(name) == 0); /* missing: still success */

    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
