// The extern "C" boundary: checks every argument and handle, maps onto the core, and never lets
// an exception out (the core does not throw; the catch-all is the last line of defence).
#include "../src/endpoint.hpp"
#include "../src/error.hpp"
#include "../src/poller.hpp"
#include "../src/ring.hpp"

#include <join/shm.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

using namespace join::shm;

namespace {

template <class F>
auto guarded(F &&body) noexcept -> decltype(body()) {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return fail(ENOMEM, "out of memory");
    } catch (...) {
        return fail(EPROTO, "internal error");
    }
}

const char *operationRole(uint32_t role) noexcept { return role == JOIN_SHM_PRODUCER ? "producer" : "consumer"; }

// The handle as a usable Queue in the given role, or nullptr with the error in *err.
// Inlined into every entry point: these checks run on each call.
[[gnu::always_inline]] inline Queue *usable(join_shm_queue *handle, uint32_t role, int *err) noexcept {
    auto *q = reinterpret_cast<Queue *>(handle);
    if (!isOpenQueue(q)) {
        *err = failStatic(EINVAL, "the queue handle is NULL, closed, or not a queue handle");
        return nullptr;
    }
    if (q->owner != processOfOpenHandle()) {
        *err = fail(EINVAL, "this handle of \"%s\" belongs to process %d: after fork, open a new one", q->name,
                    (int)q->owner);
        return nullptr;
    }
    if (role && q->role != role) {
        *err = fail(EINVAL, "\"%s\" was opened as %s; this call needs a %s", q->name, operationRole(q->role),
                    operationRole(role));
        return nullptr;
    }
    return q;
}

// The handle ready for a copying push/pop: no zero-copy slot may be outstanding.
[[gnu::always_inline]] inline Queue *copyable(join_shm_queue *handle, uint32_t role, const void *buffer,
                                              int *err) noexcept {
    Queue *q = usable(handle, role, err);
    if (!q) return nullptr;
    if (!buffer) {
        *err = failStatic(EINVAL, "the element pointer is NULL");
        return nullptr;
    }
    if (q->outstanding) {
        *err = failStatic(EINVAL, "a zero-copy slot is outstanding on this handle: commit or release it first");
        return nullptr;
    }
    return q;
}

int emptyOrFull(uint32_t role, int r) noexcept {
    if (r != -EAGAIN) return r;
    return failStatic(EAGAIN, role == JOIN_SHM_PRODUCER ? "the ring is full" : "the ring is empty");
}

// -EAGAIN from a try_ call: the handle ran dry, which is when its fd (if any) is armed again.
int wouldBlock(Queue &q, int r) noexcept {
    if (r == -EAGAIN) rearmAfterEmpty(q);
    return emptyOrFull(q.role, r);
}

int timedOut(const Queue &q, int r, int64_t timeoutNs) noexcept {
    if (r != -ETIMEDOUT) return r;
    return fail(ETIMEDOUT, "timed out after %lld us waiting for %s on \"%s\"", (long long)(timeoutNs / 1000),
                q.role == JOIN_SHM_PRODUCER ? "room" : "an element", q.name);
}

// Retries op until it succeeds or the timeout passes, sleeping on the ring's futex word meanwhile.
template <class Op>
[[gnu::noinline]] int waitOn(Queue &q, int64_t timeoutNs, Op &&op) noexcept {
    WaitWord &w = q.role == JOIN_SHM_PRODUCER ? q.header().not_full : q.header().not_empty;
    return timedOut(q, waitFor(w, q.spinNs, timeoutNs, op, [&q] { return stuckSlice(q); }), timeoutNs);
}

// A blocking call first tries as join_shm_try_push/try_pop do (the quick path inline), and only
// then, out of line, the full try and the wait: through waitOn's lambda alone, a call that need not
// wait cost 30 instructions more than a try_ call (callgrind, 8 B SPSC push + pop: 288 against 228
// a pair). Splitting waitFor itself into an inline first try and an out-of-line rest gave 272: GCC
// keeps the lambda, used at five places, out of line, and its copy loses the inlined small copy.
[[gnu::noinline]] int pushOrWait(Queue &q, const void *element, int64_t timeoutNs) noexcept {
    const int r = tryPush(q, element);
    return r != -EAGAIN ? r : waitOn(q, timeoutNs, [&q, element] { return tryPush(q, element); });
}

[[gnu::noinline]] int popOrWait(Queue &q, void *element, int64_t timeoutNs) noexcept {
    const int r = tryPop(q, element);
    return r != -EAGAIN ? r : waitOn(q, timeoutNs, [&q, element] { return tryPop(q, element); });
}

int timedPush(join_shm_queue *handle, const void *element, int64_t timeoutNs) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_PRODUCER, element, &err);
    if (!q) return err;
    return quickPush(*q, element) == 0 ? 0 : pushOrWait(*q, element, timeoutNs);
}

int timedPop(join_shm_queue *handle, void *element, int64_t timeoutNs) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_CONSUMER, element, &err);
    if (!q) return err;
    return quickPop(*q, element) == 0 ? 0 : popOrWait(*q, element, timeoutNs);
}

// Hands out one claimed slot for zero-copy use.
int takeSlot(Queue &q, const Claim &c, void **slot) noexcept {
    q.outstanding = true;
    q.outstandingPosition = c.position;
    q.outstandingSlot = c.slot;
    *slot = elementOf(q, c.slot);
    return 0;
}

// What the quick paths (ring.hpp) leave: the reply to a ring found full or empty, and the claim
// loops. Out of line, and reached by tail calls, so that the try_ calls save registers only on
// these paths and not on their common one.
[[gnu::noinline]] int ranDry(Queue &q) noexcept { return wouldBlock(q, -EAGAIN); }
[[gnu::noinline]] int pushRest(Queue &q, const void *element) noexcept { return wouldBlock(q, tryPush(q, element)); }
[[gnu::noinline]] int popRest(Queue &q, void *element) noexcept { return wouldBlock(q, tryPop(q, element)); }
[[gnu::noinline]] int reserveRest(Queue &q, void **slot) noexcept {
    Claim c;
    const int r = claimForWrite(q, c);
    return r ? wouldBlock(q, r) : takeSlot(q, c, slot);
}
[[gnu::noinline]] int peekRest(Queue &q, void **slot) noexcept {
    Claim c;
    const int r = claimForRead(q, c);
    return r ? wouldBlock(q, r) : takeSlot(q, c, slot);
}

bool validPolicy(int policy) noexcept { return policy >= JOIN_SHM_SPSC && policy <= JOIN_SHM_BROADCAST; }

int checkOpenArguments(void *out, int policy, uint64_t elementSize, uint64_t capacity) noexcept {
    if (!out) return failStatic(EINVAL, "the output handle pointer is NULL");
    if (!validPolicy(policy))
        return fail(EINVAL, "policy %d is not SPSC (1), MPSC (2), MPMC (3) or BROADCAST (4)", policy);
    if (elementSize == 0) return failStatic(EINVAL, "the element size is 0");
    if (capacity == 0) return failStatic(EINVAL, "the capacity is 0");
    return 0;
}

const Queue *inspectable(const join_shm_queue *handle) noexcept {
    auto *q = reinterpret_cast<const Queue *>(handle);
    return isOpenQueue(q) ? q : nullptr;
}

Endpoint *usableEndpoint(join_shm_endpoint *handle, int *err) noexcept {
    auto *e = reinterpret_cast<Endpoint *>(handle);
    if (isOpenEndpoint(e)) return e;
    *err = failStatic(EINVAL, "the endpoint handle is NULL, closed, or not an endpoint handle");
    return nullptr;
}

join_shm_queue *asHandle(Queue *q) noexcept { return reinterpret_cast<join_shm_queue *>(q); }

// The handles of join_shm_wait_any's items, checked: each names one open handle of ours, no two the
// same. 0, or -EINVAL with a detail.
int waitItems(const join_shm_wait_item *items, uint32_t n, Queue **queues) noexcept {
    uint64_t seen = 0;  // a bit per hash of the handles so far: only a hit needs the pairwise look
    for (uint32_t i = 0; i < n; ++i) {
        const join_shm_wait_item &item = items[i];
        if (!item.queue == !item.endpoint)
            return fail(EINVAL, "wait item %u names %s", i,
                        item.queue ? "both a queue and an endpoint" : "neither a queue nor an endpoint");
        int err = 0;
        Endpoint *e = item.endpoint ? usableEndpoint(item.endpoint, &err) : nullptr;
        queues[i] = item.queue ? usable(item.queue, 0, &err) : e ? usable(asHandle(e->inbound), 0, &err) : nullptr;
        if (!queues[i]) {
            char why[256];  // the detail may live in the buffer fail() writes to
            std::snprintf(why, sizeof why, "%s", lastDetail());
            return fail(EINVAL, "wait item %u: %s", i, why);
        }
        const auto at = reinterpret_cast<uintptr_t>(queues[i]);
        const uint64_t bit = uint64_t{1} << ((at >> 6 ^ at >> 12) & 63);
        if (seen & bit) {
            for (uint32_t j = 0; j < i; ++j)
                if (queues[j] == queues[i]) return fail(EINVAL, "wait items %u and %u name the same handle", j, i);
        }
        seen |= bit;
    }
    return 0;
}

// The integer a caller passed for an enum parameter. C callers may pass any int, and reading an
// out-of-range value through the enum type is undefined behaviour in C++.
template <class Enum>
int enumValue(const Enum &value) noexcept {
    static_assert(sizeof(Enum) == sizeof(int), "C enums are int-sized");
    int raw;
    std::memcpy(&raw, &value, sizeof raw);
    return raw;
}

int openChecked(join_shm_queue **out, const char *name, int policy, int role, uint64_t elementSize, uint64_t capacity,
                const join_shm_options *options) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        if (int r = checkOpenArguments(out, policy, elementSize, capacity)) return r;
        if (role != JOIN_SHM_PRODUCER && role != JOIN_SHM_CONSUMER)
            return fail(EINVAL, "role %d is not PRODUCER (1) or CONSUMER (2)", role);
        char normalised[kNameBufferSize];
        if (int r = normaliseName(name, "", normalised)) return r;
        Queue *q = nullptr;
        int r = openQueue(q, normalised, static_cast<uint32_t>(policy), static_cast<uint32_t>(role), elementSize,
                          capacity, options);
        *out = asHandle(q);
        return r;
    });
}

}  // namespace

extern "C" {

uint32_t join_shm_version(void) noexcept {
    return (JOIN_SHM_VERSION_MAJOR << 16) | (JOIN_SHM_VERSION_MINOR << 8) | JOIN_SHM_VERSION_PATCH;
}

const char *join_shm_strerror(int err) noexcept {
    if (err == 0) return "Success";
    if (err == INT32_MIN) return "Unknown error";
    const char *text = strerrordesc_np(err < 0 ? -err : err);
    return text ? text : "Unknown error";
}

const char *join_shm_last_error_detail(void) noexcept { return lastDetail(); }

int join_shm_queue_open(join_shm_queue **out, const char *name, join_shm_policy policy, join_shm_role role,
                        uint64_t element_size, uint64_t capacity) noexcept {
    return openChecked(out, name, enumValue(policy), enumValue(role), element_size, capacity, nullptr);
}

int join_shm_queue_open_ex(join_shm_queue **out, const char *name, join_shm_policy policy, join_shm_role role,
                           uint64_t element_size, uint64_t capacity, const join_shm_options *options) noexcept {
    return openChecked(out, name, enumValue(policy), enumValue(role), element_size, capacity, options);
}

void join_shm_queue_close(join_shm_queue *handle) noexcept {
    auto *q = reinterpret_cast<Queue *>(handle);
    if (isOpenQueue(q)) closeQueue(q);
}

int join_shm_unlink(const char *name) noexcept {
    return guarded([&]() -> int {
        char normalised[kNameBufferSize];
        if (int r = normaliseName(name, "", normalised)) return r;
        return unlinkSegment(normalised);
    });
}

int join_shm_try_push(join_shm_queue *handle, const void *element) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_PRODUCER, element, &err);
    if (!q) return err;
    const int r = quickPush(*q, element);
    return r == 0 ? 0 : r == -EAGAIN ? ranDry(*q) : pushRest(*q, element);
}

int join_shm_push(join_shm_queue *q, const void *element) noexcept { return timedPush(q, element, -1); }

int join_shm_timed_push(join_shm_queue *q, const void *element, int64_t timeout_ns) noexcept {
    return timedPush(q, element, timeout_ns);
}

int join_shm_try_pop(join_shm_queue *handle, void *element) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_CONSUMER, element, &err);
    if (!q) return err;
    const int r = quickPop(*q, element);
    return r == 0 ? 0 : r == -EAGAIN ? ranDry(*q) : popRest(*q, element);
}

int join_shm_pop(join_shm_queue *q, void *element) noexcept { return timedPop(q, element, -1); }

int join_shm_timed_pop(join_shm_queue *q, void *element, int64_t timeout_ns) noexcept {
    return timedPop(q, element, timeout_ns);
}

int64_t join_shm_try_push_n(join_shm_queue *handle, const void *elements, uint64_t count) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_PRODUCER, elements, &err);
    if (!q) return err;
    if (count == 0 || count > INT64_MAX)
        return fail(EINVAL, "batch count %llu is out of range", (unsigned long long)count);
    int64_t r = tryPushN(*q, static_cast<const unsigned char *>(elements), count);
    return r > 0 ? r : wouldBlock(*q, static_cast<int>(r));
}

int64_t join_shm_try_pop_n(join_shm_queue *handle, void *elements, uint64_t count) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_CONSUMER, elements, &err);
    if (!q) return err;
    if (count == 0 || count > INT64_MAX)
        return fail(EINVAL, "batch count %llu is out of range", (unsigned long long)count);
    int64_t r = tryPopN(*q, static_cast<unsigned char *>(elements), count);
    return r > 0 ? r : wouldBlock(*q, static_cast<int>(r));
}

int join_shm_try_reserve(join_shm_queue *handle, void **slot) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_PRODUCER, slot, &err);
    if (!q) return err;
    Claim c;
    const int r = quickClaimForWrite(*q, c);
    return r == 0 ? takeSlot(*q, c, slot) : r == -EAGAIN ? ranDry(*q) : reserveRest(*q, slot);
}

int join_shm_timed_reserve(join_shm_queue *handle, void **slot, int64_t timeout_ns) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_PRODUCER, slot, &err);
    if (!q) return err;
    Claim c;
    int r = waitOn(*q, timeout_ns, [&] { return claimForWrite(*q, c); });
    return r ? r : takeSlot(*q, c, slot);
}

int join_shm_commit(join_shm_queue *handle) noexcept {
    int err = 0;
    Queue *q = usable(handle, JOIN_SHM_PRODUCER, &err);
    if (!q) return err;
    if (!q->outstanding) return failStatic(EINVAL, "commit without a reserved slot");
    q->outstanding = false;
    publish(*q, {q->outstandingPosition, q->outstandingSlot}, kFull);
    return 0;
}

int join_shm_try_peek(join_shm_queue *handle, const void **slot) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_CONSUMER, slot, &err);
    if (!q) return err;
    Claim c;
    const int r = quickClaimForRead(*q, c);
    return r == 0         ? takeSlot(*q, c, const_cast<void **>(slot))
           : r == -EAGAIN ? ranDry(*q)
                          : peekRest(*q, const_cast<void **>(slot));
}

int join_shm_timed_peek(join_shm_queue *handle, const void **slot, int64_t timeout_ns) noexcept {
    int err = 0;
    Queue *q = copyable(handle, JOIN_SHM_CONSUMER, slot, &err);
    if (!q) return err;
    Claim c;
    int r = waitOn(*q, timeout_ns, [&] { return claimForRead(*q, c); });
    return r ? r : takeSlot(*q, c, const_cast<void **>(slot));
}

int join_shm_release(join_shm_queue *handle) noexcept {
    int err = 0;
    Queue *q = usable(handle, JOIN_SHM_CONSUMER, &err);
    if (!q) return err;
    if (!q->outstanding) return failStatic(EINVAL, "release without a peeked slot");
    q->outstanding = false;
    releaseRead(*q, {q->outstandingPosition, q->outstandingSlot});
    return 0;
}

int join_shm_cancel(join_shm_queue *handle) noexcept {
    int err = 0;
    Queue *q = usable(handle, 0, &err);
    if (!q) return err;
    if (!q->outstanding) return failStatic(EINVAL, "cancel without a reserved or peeked slot");
    cancelOutstanding(*q);
    return 0;
}

uint64_t join_shm_pending(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q ? pendingCount(*q) : 0;
}

uint64_t join_shm_available(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q ? q->capacity - pendingCount(*q) : 0;
}

int join_shm_full(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q && pendingCount(*q) == q->capacity;
}

int join_shm_empty(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q && pendingCount(*q) == 0;
}

int join_shm_queue_stats(const join_shm_queue *handle, join_shm_stats *stats) noexcept {
    const Queue *q = inspectable(handle);
    if (!q) return failStatic(EINVAL, "the queue handle is NULL, closed, or not a queue handle");
    uint32_t size = 0;
    if (!stats || (std::memcpy(&size, stats, sizeof size), size < sizeof size))
        return failStatic(EINVAL, "stats is NULL or its size field is not set to sizeof(join_shm_stats)");
    const Header &h = q->header();
    join_shm_stats s{};
    s.size = size < sizeof s ? size : static_cast<uint32_t>(sizeof s);
    s.policy = q->policy;
    s.element_size = q->elementSize;
    s.capacity = q->capacity;
    s.pending = pendingCount(*q);
    // Relaxed: a monitoring snapshot; nothing is ordered against these values.
    s.pushed = h.head.load(std::memory_order_relaxed);
    s.popped = h.tail.load(std::memory_order_relaxed);
    s.skipped = h.skipped.load(std::memory_order_relaxed);
    // Relaxed: a snapshot for inspection.
    if (q->policy == JOIN_SHM_SPSC) s.producer_pid = holdingPid(*q, h.producer_holder.load(std::memory_order_relaxed));
    if (q->policy != JOIN_SHM_MPMC) s.consumer_pid = holdingPid(*q, h.consumer_holder.load(std::memory_order_relaxed));
    std::memcpy(stats, &s, s.size);  // a caller compiled against an older header gets what fits
    return 0;
}

uint64_t join_shm_lost(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q ? q->lost : 0;
}

uint64_t join_shm_element_size(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q ? q->elementSize : 0;
}

uint64_t join_shm_capacity(const join_shm_queue *handle) noexcept {
    const Queue *q = inspectable(handle);
    return q ? q->capacity : 0;
}

int join_shm_endpoint_open(join_shm_endpoint **out, const char *name, join_shm_policy policy, join_shm_side side,
                           uint64_t element_size, uint64_t capacity) noexcept {
    const int policyValue = enumValue(policy), sideValue = enumValue(side);
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        if (int r = checkOpenArguments(out, policyValue, element_size, capacity)) return r;
        if (sideValue != JOIN_SHM_SIDE_A && sideValue != JOIN_SHM_SIDE_B)
            return fail(EINVAL, "side %d is not SIDE_A (0) or SIDE_B (1)", sideValue);
        if (policyValue == JOIN_SHM_BROADCAST)  // a duplex pair of one-to-many rings means nothing
            return failStatic(EINVAL, "endpoints take policy SPSC, MPSC or MPMC, not BROADCAST");
        char normalised[kNameBufferSize];
        if (int r = normaliseName(name, "_AB", normalised)) return r;
        normalised[std::strlen(normalised) - 3] = '\0';  // checked with the suffix, kept without
        Endpoint *e = nullptr;
        int r = openEndpoint(e, normalised, static_cast<uint32_t>(policyValue), static_cast<uint32_t>(sideValue),
                             element_size, capacity);
        *out = reinterpret_cast<join_shm_endpoint *>(e);
        return r;
    });
}

void join_shm_endpoint_close(join_shm_endpoint *handle) noexcept {
    auto *e = reinterpret_cast<Endpoint *>(handle);
    if (isOpenEndpoint(e)) closeEndpoint(e);
}

int join_shm_endpoint_unlink(const char *name) noexcept {
    return guarded([&]() -> int {
        char normalised[kNameBufferSize];
        if (int r = normaliseName(name, "_AB", normalised)) return r;
        normalised[std::strlen(normalised) - 3] = '\0';
        return unlinkEndpoint(normalised);
    });
}

int join_shm_try_send(join_shm_endpoint *handle, const void *element) noexcept {
    int err = 0;
    Endpoint *e = usableEndpoint(handle, &err);
    return e ? join_shm_try_push(asHandle(e->outbound), element) : err;
}

int join_shm_send(join_shm_endpoint *handle, const void *element) noexcept {
    return join_shm_timed_send(handle, element, -1);
}

int join_shm_timed_send(join_shm_endpoint *handle, const void *element, int64_t timeout_ns) noexcept {
    int err = 0;
    Endpoint *e = usableEndpoint(handle, &err);
    return e ? timedPush(asHandle(e->outbound), element, timeout_ns) : err;
}

int join_shm_try_receive(join_shm_endpoint *handle, void *element) noexcept {
    int err = 0;
    Endpoint *e = usableEndpoint(handle, &err);
    return e ? join_shm_try_pop(asHandle(e->inbound), element) : err;
}

int join_shm_receive(join_shm_endpoint *handle, void *element) noexcept {
    return join_shm_timed_receive(handle, element, -1);
}

int join_shm_timed_receive(join_shm_endpoint *handle, void *element, int64_t timeout_ns) noexcept {
    int err = 0;
    Endpoint *e = usableEndpoint(handle, &err);
    return e ? timedPop(asHandle(e->inbound), element, timeout_ns) : err;
}

uint64_t join_shm_endpoint_available(const join_shm_endpoint *handle) noexcept {
    auto *e = reinterpret_cast<const Endpoint *>(handle);
    return isOpenEndpoint(e) ? join_shm_available(asHandle(e->outbound)) : 0;
}

uint64_t join_shm_endpoint_pending(const join_shm_endpoint *handle) noexcept {
    auto *e = reinterpret_cast<const Endpoint *>(handle);
    return isOpenEndpoint(e) ? join_shm_pending(asHandle(e->inbound)) : 0;
}

int join_shm_queue_fd(join_shm_queue *handle) noexcept {
    int err = 0;
    Queue *q = usable(handle, 0, &err);
    return q ? pollerFd(*q) : err;
}

int join_shm_endpoint_fd(join_shm_endpoint *handle) noexcept {
    int err = 0;
    Endpoint *e = usableEndpoint(handle, &err);
    return e ? join_shm_queue_fd(asHandle(e->inbound)) : err;
}

int join_shm_wait_any(join_shm_wait_item *items, uint32_t n, int64_t timeout_ns) noexcept {
    if (!items) return failStatic(EINVAL, "the wait items pointer is NULL");
    if (n == 0 || n > JOIN_SHM_WAIT_MAX)
        return fail(EINVAL, "%u wait items: between 1 and %d are allowed", n, JOIN_SHM_WAIT_MAX);
    Queue *queues[JOIN_SHM_WAIT_MAX];
    // Not zeroed: waitAny writes the first n before it returns, and zeroing all 64 took a third of a call.
    int ready[JOIN_SHM_WAIT_MAX];
    int r = waitItems(items, n, queues);
    if (r == 0) r = waitAny(queues, ready, n, timeout_ns);
    for (uint32_t i = 0; i < n; ++i)  // written on every return, as the header promises
        items[i].ready = r > 0 ? ready[i] : 0;
    if (r == -ETIMEDOUT)
        return fail(ETIMEDOUT, "timed out after %lld us waiting for any of %u handles", (long long)(timeout_ns / 1000),
                    n);
    return r;
}

}  // extern "C"
