/*
 * <join/shared.hpp> -- the C++ face of libjoin-shm.
 *
 * A header-only, move-only RAII layer over <join/shm.h>: each object holds one C handle, every
 * operation is noexcept, returns 0 (or a count) on success and -1 on failure, and then records the
 * reason in the thread-local join::lastError. Would-block is an ordinary result, not an exception.
 * Nothing here adds behaviour of its own: types, durations and errors are mapped onto the C API.
 *
 *     using namespace join;
 *     Spsc::Producer producer("orders", sizeof(Order), 1024);
 *     if (producer.open() == -1) std::cerr << lastError.message() << ": " << lastErrorDetail();
 *
 * C++17; includes only <join/shm.h> and the standard library.
 */
#ifndef JOIN_SHARED_HPP
#define JOIN_SHARED_HPP

#include <join/shm.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace join {

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What a failing operation reports in lastError, for the failures the library itself defines.
/// Errors the OS reports (EACCES, ENOENT, ENOMEM, ...) come as std::generic_category() codes.
enum class Errc {
    InvalidParam = 1,  ///< NULL pointer, bad name, closed object, parameters that do not match the segment
    TemporaryError,    ///< ring full (push/send) or empty (pop/receive): try again
    TimedOut,          ///< the timeout expired first
    InUse,             ///< the role is taken by a live process, or this object is already open
    ProtocolError,     ///< the name is not a join-shm ring, has another layout version, or is corrupt
};

/// The category of join::Errc, named "join". Each code is also equivalent to its std::errc
/// counterpart, so `lastError == std::errc::timed_out` holds as well as `== Errc::TimedOut`.
class ErrorCategory final : public std::error_category {
public:
    const char *name() const noexcept override { return "join"; }

    std::string message(int code) const override {
        switch (static_cast<Errc>(code)) {
            case Errc::InvalidParam:
                return "invalid parameter";
            case Errc::TemporaryError:
                return "temporary error (ring full or empty), try again";
            case Errc::TimedOut:
                return "timed out";
            case Errc::InUse:
                return "already in use";
            case Errc::ProtocolError:
                return "not a join-shm segment, or a corrupt one";
        }
        return "unknown join error " + std::to_string(code);
    }

    std::error_condition default_error_condition(int code) const noexcept override {
        switch (static_cast<Errc>(code)) {
            case Errc::InvalidParam:
                return std::errc::invalid_argument;
            case Errc::TemporaryError:
                return std::errc::resource_unavailable_try_again;
            case Errc::TimedOut:
                return std::errc::timed_out;
            case Errc::InUse:
                return std::errc::device_or_resource_busy;
            case Errc::ProtocolError:
                return std::errc::protocol_error;
        }
        return std::error_condition(code, *this);
    }
};

/// The one instance of the "join" category.
inline const std::error_category &errorCategory() noexcept {
    static const ErrorCategory category;
    return category;
}

inline std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), errorCategory()}; }

}  // namespace join

namespace std {
template <>
struct is_error_code_enum<join::Errc> : true_type {};
}  // namespace std

namespace join {

class WaitSet;

/// The reason for the calling thread's last failing operation. Like errno, success leaves it alone.
inline thread_local std::error_code lastError;

namespace detail {

// The sentence for a failure the facade found itself (closed object, double open); nullptr when
// lastError came from the C API, whose own sentence then applies.
inline thread_local const char *facadeDetail = nullptr;

// The one mapping from the C API's negative errno values to lastError.
inline std::error_code toErrorCode(int err) noexcept {
    const int e = err < 0 ? -err : err;
    switch (e) {
        case EINVAL:
            return Errc::InvalidParam;
        case EAGAIN:
            return Errc::TemporaryError;
        case ETIMEDOUT:
            return Errc::TimedOut;
        case EBUSY:
            return Errc::InUse;
        case EPROTO:
            return Errc::ProtocolError;
        default:
            return std::error_code(e, std::generic_category());
    }
}

// A C API result: 0 (or a count) passes through, a negative errno becomes -1 and lastError.
template <typename Int>
inline Int result(Int rc) noexcept {
    if (rc >= 0) return rc;
    lastError = toErrorCode(static_cast<int>(rc));
    facadeDetail = nullptr;
    return -1;
}

// A failure found by the facade before reaching the C API.
inline int fail(Errc e, const char *sentence) noexcept {
    lastError = e;
    facadeDetail = sentence;
    return -1;
}

inline int notOpen() noexcept { return fail(Errc::InvalidParam, "the object is not open (call open() first)"); }

// A relative timeout in the C API's terms. A duration that is zero, negative or NaN makes one
// attempt (the C API's "negative waits forever" is not a chrono meaning; the blocking call is the
// way to wait forever); a positive one rounds up to whole nanoseconds, so it never becomes a
// single attempt; one beyond the int64 range (about 292 years) is clamped to it.
template <typename Rep, typename Period>
inline int64_t toTimeoutNs(const std::chrono::duration<Rep, Period> &timeout) noexcept {
    const long double ns = std::chrono::duration<long double, std::nano>(timeout).count();
    if (!(ns > 0.0L)) return 0;
    if (ns >= static_cast<long double>(std::numeric_limits<int64_t>::max())) return std::numeric_limits<int64_t>::max();
    if constexpr (std::is_floating_point_v<Rep>) {
        const auto whole = static_cast<int64_t>(ns);
        return static_cast<long double>(whole) < ns ? whole + 1 : whole;
    } else {
        return static_cast<int64_t>(std::chrono::ceil<std::chrono::nanoseconds>(timeout).count());
    }
}

}  // namespace detail

/// One sentence about the failure recorded in lastError (e.g. which parameter did not match the
/// segment). Never NULL; valid until this thread's next failing operation.
inline const char *lastErrorDetail() noexcept {
    return detail::facadeDetail ? detail::facadeDetail : join_shm_last_error_detail();
}

// ---------------------------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------------------------

struct SharedMemory {
    /// Remove the segment NAME ("orders" and "/orders" are the same). Handles already open keep
    /// working; a missing segment is success. An endpoint's rings are NAME_AB and NAME_BA.
    static int unlink(const std::string &name) noexcept { return detail::result(join_shm_unlink(name.c_str())); }
};

// ---------------------------------------------------------------------------------------------
// Zero-copy slots
// ---------------------------------------------------------------------------------------------

namespace detail {

// A slot handed out by reserve or peek: the element in place in shared memory. Finished exactly
// once: explicitly, by cancel(), or else by the destructor. Move-only.
template <typename Pointer>
class Slot {
public:
    Slot() noexcept = default;
    Slot(const Slot &) = delete;
    Slot &operator=(const Slot &) = delete;
    Slot(Slot &&other) noexcept
        : handle_(std::exchange(other.handle_, nullptr)),
          data_(std::exchange(other.data_, nullptr)),
          size_(other.size_) {}

    /// Whether the slot is held (false after a failed reserve/peek, or once finished).
    explicit operator bool() const noexcept { return handle_ != nullptr; }
    /// The element's bytes, valid while the slot is held.
    Pointer data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

    /// Give the slot back unfinished (join_shm_cancel): a producer's reservation publishes
    /// nothing, a consumer's element stays to be read again. 0, or -1 if no slot is held.
    int cancel() noexcept { return finish(join_shm_cancel); }

protected:
    Slot(join_shm_queue *handle, Pointer data, std::size_t size) noexcept : handle_(handle), data_(data), size_(size) {}

    ~Slot() = default;

    Slot &operator=(Slot &&other) noexcept {
        handle_ = std::exchange(other.handle_, nullptr);
        data_ = std::exchange(other.data_, nullptr);
        size_ = other.size_;
        return *this;
    }

    template <typename Finish>
    int finish(Finish call) noexcept {
        if (!handle_) return fail(Errc::InvalidParam, "the slot is not held");
        data_ = nullptr;
        return result(call(std::exchange(handle_, nullptr)));
    }

    join_shm_queue *handle_ = nullptr;
    Pointer data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace detail

/// A producer's reserved slot: write the element into data(), then it is published by commit()
/// or when the slot goes out of scope, unless cancel() gave it back first.
class WriteSlot : public detail::Slot<void *> {
public:
    WriteSlot() noexcept = default;
    WriteSlot(WriteSlot &&) noexcept = default;
    WriteSlot &operator=(WriteSlot &&other) noexcept {
        if (this != &other) {
            if (handle_) commit();
            Slot::operator=(std::move(other));
        }
        return *this;
    }
    ~WriteSlot() {
        if (handle_) commit();
    }

    /// Publish the element now. 0, or -1 if no slot is held.
    int commit() noexcept { return finish(join_shm_commit); }

private:
    template <join_shm_policy>
    friend class BasicProducer;
    using Slot::Slot;
};

/// A consumer's peeked element: read it in place through data(); the slot is handed back to the
/// producers by release() or when it goes out of scope, unless cancel() kept the element.
class ReadSlot : public detail::Slot<const void *> {
public:
    ReadSlot() noexcept = default;
    ReadSlot(ReadSlot &&) noexcept = default;
    ReadSlot &operator=(ReadSlot &&other) noexcept {
        if (this != &other) {
            if (handle_) release();
            Slot::operator=(std::move(other));
        }
        return *this;
    }
    ~ReadSlot() {
        if (handle_) release();
    }

    /// Hand the slot back now. 0, or -1 if no slot is held.
    int release() noexcept { return finish(join_shm_release); }

private:
    template <join_shm_policy>
    friend class BasicConsumer;
    using Slot::Slot;
};

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

namespace detail {

// What producers and consumers share: one C queue handle in a fixed role, and the parameters to
// open it with. Move-only; the destructor closes.
template <join_shm_policy Policy, join_shm_role Role>
class Queue {
public:
    Queue(const Queue &) = delete;
    Queue &operator=(const Queue &) = delete;

    /// Open (creating if needed) the ring. -1 with InUse if this object is already open or the
    /// role is held elsewhere; InvalidParam if the parameters do not match the segment.
    int open() noexcept {
        if (handle_) return fail(Errc::InUse, "the object is already open");
        join_shm_queue *q = nullptr;
        const int rc = result(join_shm_queue_open(&q, name_.c_str(), Policy, Role, elementSize_, capacity_));
        if (rc == 0) handle_ = q;
        return rc;
    }

    /// Release the role and the mapping; never unlinks. Closing a closed object does nothing.
    void close() noexcept { join_shm_queue_close(std::exchange(handle_, nullptr)); }

    bool opened() const noexcept { return handle_ != nullptr; }

    /// Free slots and waiting elements: exact when nobody is acting, 0 when closed.
    uint64_t available() const noexcept { return join_shm_available(handle_); }
    uint64_t pending() const noexcept { return join_shm_pending(handle_); }
    /// A closed object is empty and not full (it holds nothing; whether it could send is for
    /// open() to say), whatever the C API answers for a NULL handle.
    bool full() const noexcept { return handle_ && join_shm_full(handle_) != 0; }
    bool empty() const noexcept { return !handle_ || join_shm_empty(handle_) != 0; }

    /// The parameters given at construction.
    const std::string &name() const noexcept { return name_; }
    uint64_t elementSize() const noexcept { return elementSize_; }
    uint64_t capacity() const noexcept { return capacity_; }
    /// The bytes of element storage, elementSize() * capacity(), open or not (wraps if the product
    /// does not fit, in which case open() fails).
    uint64_t size() const noexcept { return elementSize_ * capacity_; }

    /// Since 1.2: a file descriptor for poll/epoll/select that is readable while this object has
    /// work (consumer: an element; producer: room). Owned by the object; after it polls readable,
    /// call the try operations until they fail with TemporaryError. -1 when closed.
    int fd() noexcept { return handle_ ? result(join_shm_queue_fd(handle_)) : notOpen(); }

protected:
    friend class join::WaitSet;

    Queue(const std::string &name, uint64_t elementSize, uint64_t capacity)
        : name_(name), elementSize_(elementSize), capacity_(capacity) {}

    Queue(Queue &&other) noexcept
        : name_(std::move(other.name_)),
          elementSize_(other.elementSize_),
          capacity_(other.capacity_),
          handle_(std::exchange(other.handle_, nullptr)) {}

    Queue &operator=(Queue &&other) noexcept {
        if (this != &other) {
            close();
            name_ = std::move(other.name_);
            elementSize_ = other.elementSize_;
            capacity_ = other.capacity_;
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    ~Queue() { close(); }

    std::string name_;
    uint64_t elementSize_;
    uint64_t capacity_;
    join_shm_queue *handle_ = nullptr;
};

}  // namespace detail

/// The producing side of a ring: copies elementSize() bytes in per element.
template <join_shm_policy Policy>
class BasicProducer : public detail::Queue<Policy, JOIN_SHM_PRODUCER> {
    using Base = detail::Queue<Policy, JOIN_SHM_PRODUCER>;

public:
    explicit BasicProducer(const std::string &name, uint64_t elementSize = 1472, uint64_t capacity = 144)
        : Base(name, elementSize, capacity) {}

    /// Non-blocking: -1 with TemporaryError when the ring is full.
    int tryPush(const void *element) noexcept {
        return this->handle_ ? detail::result(join_shm_try_push(this->handle_, element)) : detail::notOpen();
    }

    /// Blocking: spins briefly, then sleeps until there is room.
    int push(const void *element) noexcept {
        return this->handle_ ? detail::result(join_shm_push(this->handle_, element)) : detail::notOpen();
    }

    /// Blocking for at most timeout, then -1 with TimedOut. A timeout <= 0 makes one attempt.
    template <typename Rep, typename Period>
    int timedPush(const void *element, const std::chrono::duration<Rep, Period> &timeout) noexcept {
        if (!this->handle_) return detail::notOpen();
        return detail::result(join_shm_timed_push(this->handle_, element, detail::toTimeoutNs(timeout)));
    }

    /// Push up to count contiguous elements; how many went in (>= 1), or -1 (TemporaryError when
    /// none fit, InvalidParam for count 0).
    int64_t tryPush(const void *elements, std::size_t count) noexcept {
        if (!this->handle_) return detail::notOpen();
        return detail::result(join_shm_try_push_n(this->handle_, elements, count));
    }

    /// Zero-copy: a slot to write the next element into, published when the slot is committed or
    /// destroyed. An empty slot (false) on failure, with lastError set: TemporaryError when full.
    /// One slot at a time per producer; meanwhile other pushes fail with InvalidParam.
    WriteSlot tryReserve() noexcept {
        return reserveWith([](join_shm_queue *q, void **slot) { return join_shm_try_reserve(q, slot); });
    }
    /// Blocking: waits for room like push().
    WriteSlot reserve() noexcept {
        return reserveWith([](join_shm_queue *q, void **slot) { return join_shm_timed_reserve(q, slot, -1); });
    }
    /// Waits at most timeout (TimedOut); a timeout <= 0 makes one attempt.
    template <typename Rep, typename Period>
    WriteSlot timedReserve(const std::chrono::duration<Rep, Period> &timeout) noexcept {
        const int64_t ns = detail::toTimeoutNs(timeout);
        return reserveWith([ns](join_shm_queue *q, void **slot) { return join_shm_timed_reserve(q, slot, ns); });
    }

private:
    template <typename Call>
    WriteSlot reserveWith(Call call) noexcept {
        if (!this->handle_) return (detail::notOpen(), WriteSlot());
        void *slot = nullptr;
        if (detail::result(call(this->handle_, &slot)) != 0) return WriteSlot();
        return WriteSlot(this->handle_, slot, static_cast<std::size_t>(this->elementSize_));
    }
};

/// The consuming side of a ring: copies elementSize() bytes out per element.
template <join_shm_policy Policy>
class BasicConsumer : public detail::Queue<Policy, JOIN_SHM_CONSUMER> {
    using Base = detail::Queue<Policy, JOIN_SHM_CONSUMER>;

public:
    explicit BasicConsumer(const std::string &name, uint64_t elementSize = 1472, uint64_t capacity = 144)
        : Base(name, elementSize, capacity) {}

    /// Non-blocking: -1 with TemporaryError when the ring is empty.
    int tryPop(void *element) noexcept {
        return this->handle_ ? detail::result(join_shm_try_pop(this->handle_, element)) : detail::notOpen();
    }

    /// Blocking: spins briefly, then sleeps until an element arrives.
    int pop(void *element) noexcept {
        return this->handle_ ? detail::result(join_shm_pop(this->handle_, element)) : detail::notOpen();
    }

    /// Blocking for at most timeout, then -1 with TimedOut. A timeout <= 0 makes one attempt.
    template <typename Rep, typename Period>
    int timedPop(void *element, const std::chrono::duration<Rep, Period> &timeout) noexcept {
        if (!this->handle_) return detail::notOpen();
        return detail::result(join_shm_timed_pop(this->handle_, element, detail::toTimeoutNs(timeout)));
    }

    /// Pop up to count elements into contiguous storage; how many came out (>= 1), or -1
    /// (TemporaryError when the ring is empty, InvalidParam for count 0).
    int64_t tryPop(void *elements, std::size_t count) noexcept {
        if (!this->handle_) return detail::notOpen();
        return detail::result(join_shm_try_pop_n(this->handle_, elements, count));
    }

    /// Zero-copy: the oldest element in place, handed back when the slot is released or
    /// destroyed. An empty slot (false) on failure, with lastError set: TemporaryError when empty.
    /// One slot at a time per consumer; meanwhile other pops fail with InvalidParam.
    ReadSlot tryPeek() noexcept {
        return peekWith([](join_shm_queue *q, const void **slot) { return join_shm_try_peek(q, slot); });
    }
    /// Blocking: waits for an element like pop().
    ReadSlot peek() noexcept {
        return peekWith([](join_shm_queue *q, const void **slot) { return join_shm_timed_peek(q, slot, -1); });
    }
    /// Waits at most timeout (TimedOut); a timeout <= 0 makes one attempt.
    template <typename Rep, typename Period>
    ReadSlot timedPeek(const std::chrono::duration<Rep, Period> &timeout) noexcept {
        const int64_t ns = detail::toTimeoutNs(timeout);
        return peekWith([ns](join_shm_queue *q, const void **slot) { return join_shm_timed_peek(q, slot, ns); });
    }

private:
    template <typename Call>
    ReadSlot peekWith(Call call) noexcept {
        if (!this->handle_) return (detail::notOpen(), ReadSlot());
        const void *slot = nullptr;
        if (detail::result(call(this->handle_, &slot)) != 0) return ReadSlot();
        return ReadSlot(this->handle_, slot, static_cast<std::size_t>(this->elementSize_));
    }
};

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

/// Which end of a duplex channel: A sends on NAME_AB and receives on NAME_BA, B the reverse.
enum class EndpointSide { A = JOIN_SHM_SIDE_A, B = JOIN_SHM_SIDE_B };

/// A duplex channel made of two rings; each side produces on one and consumes from the other.
template <join_shm_policy Policy>
class BasicEndpoint {
public:
    using Side = EndpointSide;
    /// The sides are also reachable as Endpoint::A and Endpoint::B, as in the original API, where
    /// the enum is unscoped inside the class.
    static constexpr Side A = Side::A;
    static constexpr Side B = Side::B;

    BasicEndpoint(Side side, const std::string &name, uint64_t elementSize = 1472, uint64_t capacity = 144)
        : name_(name), side_(side), elementSize_(elementSize), capacity_(capacity) {}

    BasicEndpoint(const BasicEndpoint &) = delete;
    BasicEndpoint &operator=(const BasicEndpoint &) = delete;

    BasicEndpoint(BasicEndpoint &&other) noexcept
        : name_(std::move(other.name_)),
          side_(other.side_),
          elementSize_(other.elementSize_),
          capacity_(other.capacity_),
          handle_(std::exchange(other.handle_, nullptr)) {}

    BasicEndpoint &operator=(BasicEndpoint &&other) noexcept {
        if (this != &other) {
            close();
            name_ = std::move(other.name_);
            side_ = other.side_;
            elementSize_ = other.elementSize_;
            capacity_ = other.capacity_;
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    ~BasicEndpoint() { close(); }

    /// Open (creating if needed) both rings. -1 with InUse if this object is already open or this
    /// side is held elsewhere.
    int open() noexcept {
        if (handle_) return detail::fail(Errc::InUse, "the object is already open");
        join_shm_endpoint *e = nullptr;
        const int rc = detail::result(join_shm_endpoint_open(
            &e, name_.c_str(), Policy, static_cast<join_shm_side>(side_), elementSize_, capacity_));
        if (rc == 0) handle_ = e;
        return rc;
    }

    /// Release both rings; never unlinks. Closing a closed object does nothing.
    void close() noexcept { join_shm_endpoint_close(std::exchange(handle_, nullptr)); }

    bool opened() const noexcept { return handle_ != nullptr; }

    int trySend(const void *element) noexcept {
        return handle_ ? detail::result(join_shm_try_send(handle_, element)) : detail::notOpen();
    }
    int send(const void *element) noexcept {
        return handle_ ? detail::result(join_shm_send(handle_, element)) : detail::notOpen();
    }
    template <typename Rep, typename Period>
    int timedSend(const void *element, const std::chrono::duration<Rep, Period> &timeout) noexcept {
        if (!handle_) return detail::notOpen();
        return detail::result(join_shm_timed_send(handle_, element, detail::toTimeoutNs(timeout)));
    }

    int tryReceive(void *element) noexcept {
        return handle_ ? detail::result(join_shm_try_receive(handle_, element)) : detail::notOpen();
    }
    int receive(void *element) noexcept {
        return handle_ ? detail::result(join_shm_receive(handle_, element)) : detail::notOpen();
    }
    template <typename Rep, typename Period>
    int timedReceive(void *element, const std::chrono::duration<Rep, Period> &timeout) noexcept {
        if (!handle_) return detail::notOpen();
        return detail::result(join_shm_timed_receive(handle_, element, detail::toTimeoutNs(timeout)));
    }

    /// Free slots outbound and messages waiting inbound; 0 when closed.
    uint64_t available() const noexcept { return join_shm_endpoint_available(handle_); }
    uint64_t pending() const noexcept { return join_shm_endpoint_pending(handle_); }
    /// Outbound ring full and inbound ring empty, as on queues (a closed object is empty and not
    /// full): no free slot outbound, no message waiting inbound.
    bool full() const noexcept { return handle_ && join_shm_endpoint_available(handle_) == 0; }
    bool empty() const noexcept { return !handle_ || join_shm_endpoint_pending(handle_) == 0; }

    /// The parameters given at construction.
    const std::string &name() const noexcept { return name_; }
    Side side() const noexcept { return side_; }
    uint64_t elementSize() const noexcept { return elementSize_; }
    uint64_t capacity() const noexcept { return capacity_; }
    /// The bytes of element storage in one direction, elementSize() * capacity(), open or not.
    uint64_t size() const noexcept { return elementSize_ * capacity_; }

    /// Since 1.2: a file descriptor readable while a message waits inbound (see Queue::fd()).
    int fd() noexcept { return handle_ ? detail::result(join_shm_endpoint_fd(handle_)) : detail::notOpen(); }

private:
    friend class WaitSet;

    std::string name_;
    Side side_;
    uint64_t elementSize_;
    uint64_t capacity_;
    join_shm_endpoint *handle_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Waiting on many (since 1.2)
// ---------------------------------------------------------------------------------------------

/// Waits on up to JOIN_SHM_WAIT_MAX producers, consumers and endpoints (inbound) at once
/// (join_shm_wait_any). Members are open objects that outlive their membership; one that is closed
/// or reopened must be removed and added again. For one thread at a time.
class WaitSet {
public:
    /// -1 with InvalidParam if the object is not open, already a member, or the set is full.
    template <join_shm_policy Policy, join_shm_role Role>
    int add(const detail::Queue<Policy, Role> &object) noexcept {
        return insert(&object, object.handle_, nullptr);
    }
    template <join_shm_policy Policy>
    int add(const BasicEndpoint<Policy> &object) noexcept {
        return insert(&object, nullptr, object.handle_);
    }

    /// -1 with InvalidParam if the object is not a member.
    int remove(const void *object) noexcept {
        for (uint32_t i = 0; i < size_; ++i)
            if (members_[i] == object) {
                members_[i] = members_[size_ - 1];
                items_[i] = items_[--size_];
                return 0;
            }
        return detail::fail(Errc::InvalidParam, "the object is not in the wait set");
    }

    /// Waits until at least one member has work; returns how many have (see ready()), or -1 with
    /// TimedOut. A zero timeout checks once; wait() without one waits as long as it takes.
    template <typename Rep, typename Period>
    int wait(const std::chrono::duration<Rep, Period> &timeout) noexcept {
        return waitNs(detail::toTimeoutNs(timeout));
    }
    int wait() noexcept { return waitNs(-1); }

    /// Whether the last wait() found this member ready.
    bool ready(const void *object) const noexcept {
        for (uint32_t i = 0; i < size_; ++i)
            if (members_[i] == object) return items_[i].ready != 0;
        return false;
    }

    std::size_t size() const noexcept { return size_; }

private:
    int insert(const void *object, join_shm_queue *queue, join_shm_endpoint *endpoint) noexcept {
        if (!queue && !endpoint) return detail::notOpen();
        if (size_ == JOIN_SHM_WAIT_MAX) return detail::fail(Errc::InvalidParam, "the wait set is full");
        for (uint32_t i = 0; i < size_; ++i)
            if (members_[i] == object) return detail::fail(Errc::InvalidParam, "the object is already in the wait set");
        members_[size_] = object;
        items_[size_++] = {queue, endpoint, 0};
        return 0;
    }
    int waitNs(int64_t timeoutNs) noexcept {
        if (size_ == 0) return detail::fail(Errc::InvalidParam, "the wait set is empty");
        return detail::result(join_shm_wait_any(items_, size_, timeoutNs));
    }

    join_shm_wait_item items_[JOIN_SHM_WAIT_MAX] = {};
    const void *members_[JOIN_SHM_WAIT_MAX] = {};
    uint32_t size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// One producer and one consumer at a time.
struct Spsc {
    static constexpr join_shm_policy policy = JOIN_SHM_SPSC;
    using Producer = BasicProducer<JOIN_SHM_SPSC>;
    using Consumer = BasicConsumer<JOIN_SHM_SPSC>;
    using Endpoint = BasicEndpoint<JOIN_SHM_SPSC>;
};

/// Any number of producers, one consumer at a time.
struct Mpsc {
    static constexpr join_shm_policy policy = JOIN_SHM_MPSC;
    using Producer = BasicProducer<JOIN_SHM_MPSC>;
    using Consumer = BasicConsumer<JOIN_SHM_MPSC>;
    using Endpoint = BasicEndpoint<JOIN_SHM_MPSC>;
};

/// Any number of producers and consumers.
struct Mpmc {
    static constexpr join_shm_policy policy = JOIN_SHM_MPMC;
    using Producer = BasicProducer<JOIN_SHM_MPMC>;
    using Consumer = BasicConsumer<JOIN_SHM_MPMC>;
    using Endpoint = BasicEndpoint<JOIN_SHM_MPMC>;
};

/// Since 1.2: one publisher, many subscribers, each of which receives every message published
/// after it joined. Shaped like the other policies' Producer/Consumer; open() passes the broadcast
/// options. A subscriber's pops fail with std::errc::value_too_large (EOVERFLOW) once after it was
/// overrun in Overwrite mode; lost() says how many messages it lost in all.
struct Broadcast {
    static constexpr join_shm_policy policy = JOIN_SHM_BROADCAST;
    /// Fixed when the ring is created; Default takes the ring's (Block when creating).
    enum class Overflow : uint32_t {
        Default = 0,
        Block = JOIN_SHM_OVERFLOW_BLOCK,
        Overwrite = JOIN_SHM_OVERFLOW_OVERWRITE
    };
    enum class JoinAt : uint32_t { Next = JOIN_SHM_JOIN_NEXT, Oldest = JOIN_SHM_JOIN_OLDEST };

    class Publisher : public BasicProducer<JOIN_SHM_BROADCAST> {
    public:
        /// maxSubscribers 0: the ring's (64 when creating).
        explicit Publisher(const std::string &name, uint64_t elementSize = 1472, uint64_t capacity = 144,
                           Overflow overflow = Overflow::Default, uint32_t maxSubscribers = 0)
            : BasicProducer(name, elementSize, capacity), overflow_(overflow), maxSubscribers_(maxSubscribers) {}
        int open() noexcept {
            return openBroadcast(handle_, name_, elementSize_, capacity_, JOIN_SHM_PRODUCER, overflow_, maxSubscribers_,
                                 JoinAt::Next);
        }

    private:
        Overflow overflow_;
        uint32_t maxSubscribers_;
    };

    class Subscriber : public BasicConsumer<JOIN_SHM_BROADCAST> {
    public:
        explicit Subscriber(const std::string &name, uint64_t elementSize = 1472, uint64_t capacity = 144,
                            JoinAt joinAt = JoinAt::Next, Overflow overflow = Overflow::Default,
                            uint32_t maxSubscribers = 0)
            : BasicConsumer(name, elementSize, capacity),
              joinAt_(joinAt),
              overflow_(overflow),
              maxSubscribers_(maxSubscribers) {}
        int open() noexcept {
            return openBroadcast(handle_, name_, elementSize_, capacity_, JOIN_SHM_CONSUMER, overflow_, maxSubscribers_,
                                 joinAt_);
        }
        /// Messages this subscriber lost to overruns since it joined (Overwrite mode); 0 when closed.
        uint64_t lost() const noexcept { return join_shm_lost(handle_); }

    private:
        JoinAt joinAt_;
        Overflow overflow_;
        uint32_t maxSubscribers_;
    };

private:
    static int openBroadcast(join_shm_queue *&handle, const std::string &name, uint64_t elementSize, uint64_t capacity,
                             join_shm_role role, Overflow overflow, uint32_t maxSubscribers, JoinAt joinAt) noexcept {
        if (handle) return detail::fail(Errc::InUse, "the object is already open");
        join_shm_options o{};
        o.size = sizeof o;
        o.overflow = static_cast<uint32_t>(overflow);
        o.max_subscribers = maxSubscribers;
        o.join_at = static_cast<uint32_t>(joinAt);
        join_shm_queue *q = nullptr;
        const int rc = detail::result(
            join_shm_queue_open_ex(&q, name.c_str(), JOIN_SHM_BROADCAST, role, elementSize, capacity, &o));
        if (rc == 0) handle = q;
        return rc;
    }
};

}  // namespace join

#endif  // JOIN_SHARED_HPP
