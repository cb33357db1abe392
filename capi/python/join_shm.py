"""join_shm -- libjoin-shm from Python: a pure ctypes binding over <join/shm.h>.

Usage::

    import join_shm
    with join_shm.Queue("orders", join_shm.SPSC, join_shm.PRODUCER, 64, 1024) as q:
        q.push(b"hello".ljust(64, b"\\0"))           # exactly element_size bytes
    with join_shm.Queue("orders", join_shm.SPSC, join_shm.CONSUMER, 64, 1024) as q:
        msg = q.pop(timeout=1.0)                     # bytes; TimeoutError if nothing came
        more = q.pop_many(32)                        # up to 32 waiting messages, maybe []
    with join_shm.Endpoint("chat", join_shm.SPSC, join_shm.SIDE_A, 64, 16) as e:
        e.send(msg)
        reply = e.receive(timeout=5.0)
    join_shm.unlink("orders"); join_shm.endpoint_unlink("chat")

The library is found through $JOIN_SHM_LIBRARY (a path; nothing else is tried when it is set),
then ctypes.util.find_library("join-shm"), then "libjoin-shm.so.1".

Data is bytes, bytearray or any C-contiguous buffer (memoryview, array, ...) of exactly
element_size bytes; anything else raises ValueError before the library is called (nothing is
padded: pad yourself, e.g. data.ljust(size, b"\\0")). Timeouts are seconds (float); None waits
forever, in 100 ms slices so that Ctrl-C and other signal handlers still run. Library failures
raise JoinShmError (an OSError with .errno and the library's .detail sentence): -ETIMEDOUT as
JoinShmTimeoutError, also a TimeoutError; -EINVAL as JoinShmInvalidError, also a ValueError.
Would-block from try_* calls is an ordinary result (False / None / 0 / []). A handle, like the C one, is for one
thread at a time; it closes on close(), at the end of a with-block, or when collected.
"""

import ctypes
import ctypes.util
import enum
import errno as _errno
import os
import time

__all__ = [
    "SPSC", "MPSC", "MPMC", "PRODUCER", "CONSUMER", "SIDE_A", "SIDE_B", "PREFAULT", "MLOCK",
    "ALLOW_OTHER_OWNER", "Policy", "Role", "Side", "JoinShmError", "JoinShmTimeoutError",
    "JoinShmInvalidError", "Queue", "Producer", "Consumer", "Endpoint", "version", "unlink",
    "endpoint_unlink", "library_path", "BROADCAST", "OVERFLOW_BLOCK", "OVERFLOW_OVERWRITE", "JOIN_NEXT",
    "JOIN_OLDEST",
]


class Policy(enum.IntEnum):
    SPSC = 1
    MPSC = 2
    MPMC = 3
    BROADCAST = 4  # since 1.2: one publisher (PRODUCER), many subscribers (CONSUMER)


class Role(enum.IntEnum):
    PRODUCER = 1
    CONSUMER = 2


class Side(enum.IntEnum):
    SIDE_A = 0
    SIDE_B = 1


SPSC, MPSC, MPMC, BROADCAST = Policy.SPSC, Policy.MPSC, Policy.MPMC, Policy.BROADCAST

# Broadcast rings (since 1.2): join_shm_options.overflow and join_at.
OVERFLOW_BLOCK, OVERFLOW_OVERWRITE = 1, 2
JOIN_NEXT, JOIN_OLDEST = 1, 2
PRODUCER, CONSUMER = Role.PRODUCER, Role.CONSUMER
SIDE_A, SIDE_B = Side.SIDE_A, Side.SIDE_B

# Option flags (JOIN_SHM_PREFAULT, JOIN_SHM_MLOCK, JOIN_SHM_ALLOW_OTHER_OWNER).
PREFAULT = 0x1
MLOCK = 0x2
ALLOW_OTHER_OWNER = 0x4

# Blocking calls without a deadline wait in slices of this many seconds, so that Python gets
# back control between them to run signal handlers (KeyboardInterrupt).
_SLICE = 0.1

# The package's version: the library's (meson checks it at setup; pyproject.toml reads it).
__version__ = "1.2.0"


# --- the C API, declared exactly as in <join/shm.h> ---

def _load():
    path = os.environ.get("JOIN_SHM_LIBRARY")
    if path:
        # An explicit choice: do not silently fall back to another copy of the library.
        return ctypes.CDLL(path), path
    tried = []
    for candidate in (ctypes.util.find_library("join-shm"), "libjoin-shm.so.1"):
        if not candidate or candidate in tried:
            continue
        tried.append(candidate)
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError:
            pass
    raise OSError("join_shm: cannot load libjoin-shm (tried %s); set JOIN_SHM_LIBRARY to its path"
                  % ", ".join(tried))


_lib, library_path = _load()

_c_int, _c_int64, _c_uint32, _c_uint64 = ctypes.c_int, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint64
_vp, _cp = ctypes.c_void_p, ctypes.c_char_p
_handle_out = ctypes.POINTER(ctypes.c_void_p)


class _Options(ctypes.Structure):
    """join_shm_options."""
    _fields_ = [
        ("size", _c_uint32),
        ("mode", _c_uint32),
        ("open_timeout_ns", _c_int64),
        ("flags", _c_uint64),
        ("spin_ns", _c_int64),
        ("max_subscribers", _c_uint32),  # since 1.2, broadcast rings only
        ("overflow", _c_uint32),
        ("join_at", _c_uint32),
        ("reserved", _c_uint32),
    ]


class _Stats(ctypes.Structure):
    """join_shm_stats (since 1.1)."""
    _fields_ = [
        ("size", _c_uint32),
        ("policy", _c_uint32),
        ("element_size", _c_uint64),
        ("capacity", _c_uint64),
        ("pending", _c_uint64),
        ("pushed", _c_uint64),
        ("popped", _c_uint64),
        ("skipped", _c_uint64),
        ("producer_pid", _c_uint32),
        ("consumer_pid", _c_uint32),
    ]


def _declare(name, restype, *argtypes, optional=False):
    try:
        fn = getattr(_lib, name)
    except AttributeError:
        if optional:
            return None
        raise
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_version = _declare("join_shm_version", _c_uint32)
_strerror = _declare("join_shm_strerror", _cp, _c_int)
_last_error_detail = _declare("join_shm_last_error_detail", _cp)
_queue_open_ex = _declare("join_shm_queue_open_ex", _c_int, _handle_out, _cp, _c_int, _c_int, _c_uint64, _c_uint64,
                          ctypes.POINTER(_Options))
_queue_close = _declare("join_shm_queue_close", None, _vp)
_unlink = _declare("join_shm_unlink", _c_int, _cp)
_try_push = _declare("join_shm_try_push", _c_int, _vp, _vp)
_timed_push = _declare("join_shm_timed_push", _c_int, _vp, _vp, _c_int64)
_try_pop = _declare("join_shm_try_pop", _c_int, _vp, _vp)
_timed_pop = _declare("join_shm_timed_pop", _c_int, _vp, _vp, _c_int64)
_try_push_n = _declare("join_shm_try_push_n", _c_int64, _vp, _vp, _c_uint64)
_try_pop_n = _declare("join_shm_try_pop_n", _c_int64, _vp, _vp, _c_uint64)
_pending = _declare("join_shm_pending", _c_uint64, _vp)
_available = _declare("join_shm_available", _c_uint64, _vp)
_element_size = _declare("join_shm_element_size", _c_uint64, _vp)
_capacity = _declare("join_shm_capacity", _c_uint64, _vp)
_queue_stats = _declare("join_shm_queue_stats", _c_int, _vp, ctypes.POINTER(_Stats), optional=True)
_endpoint_open = _declare("join_shm_endpoint_open", _c_int, _handle_out, _cp, _c_int, _c_int, _c_uint64, _c_uint64)
_endpoint_close = _declare("join_shm_endpoint_close", None, _vp)
_endpoint_unlink = _declare("join_shm_endpoint_unlink", _c_int, _cp)
_try_send = _declare("join_shm_try_send", _c_int, _vp, _vp)
_timed_send = _declare("join_shm_timed_send", _c_int, _vp, _vp, _c_int64)
_try_receive = _declare("join_shm_try_receive", _c_int, _vp, _vp)
_timed_receive = _declare("join_shm_timed_receive", _c_int, _vp, _vp, _c_int64)
_endpoint_available = _declare("join_shm_endpoint_available", _c_uint64, _vp)
_endpoint_pending = _declare("join_shm_endpoint_pending", _c_uint64, _vp)
_try_peek = _declare("join_shm_try_peek", _c_int, _vp, ctypes.POINTER(_vp))
_release = _declare("join_shm_release", _c_int, _vp)
_timed_peek = _declare("join_shm_timed_peek", _c_int, _vp, ctypes.POINTER(_vp), _c_int64, optional=True)
_cancel = _declare("join_shm_cancel", _c_int, _vp, optional=True)
# Since 1.2: waiting from an event loop.
_queue_fd = _declare("join_shm_queue_fd", _c_int, _vp, optional=True)
_lost = _declare("join_shm_lost", _c_uint64, _vp, optional=True)
_endpoint_fd = _declare("join_shm_endpoint_fd", _c_int, _vp, optional=True)


# --- errors ---

class JoinShmError(OSError):
    """A libjoin-shm call failed: .errno (positive), .detail (the library's sentence), .call."""

    def __init__(self, err, detail, call, name=None):
        self.detail = detail
        self.call = call
        super().__init__(err, "%s: %s" % (call, detail), name)


class JoinShmTimeoutError(JoinShmError, TimeoutError):
    """-ETIMEDOUT: the wait ended before the ring had room or data."""


class JoinShmInvalidError(JoinShmError, ValueError):
    """-EINVAL: a bad argument, or parameters that do not match the existing segment."""


def _raise(rc, call, name=None):
    # Read the detail first: it is the calling thread's, valid until its next failing call.
    detail = _last_error_detail()
    detail = detail.decode(errors="replace") if detail else ""
    err = -rc
    if not detail:
        detail = _strerror(rc).decode(errors="replace")
    cls = {_errno.ETIMEDOUT: JoinShmTimeoutError, _errno.EINVAL: JoinShmInvalidError}.get(err, JoinShmError)
    raise cls(err, detail, call, name)


# --- helpers ---

def _name(name):
    return os.fsencode(name)


def _ns(seconds):
    return int(seconds * 1e9)


def _check_timeout(timeout):
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be None or >= 0 seconds")


def _view(data, size, what):
    """data checked to be a C-contiguous buffer of exactly size bytes: bytes, or a byte memoryview."""
    if isinstance(data, bytes):
        if len(data) != size:
            raise ValueError("%s is %d bytes, element size is %d" % (what, len(data), size))
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise ValueError("%s must be bytes, bytearray or a buffer, not %s" % (what, type(data).__name__)) from None
    if not view.c_contiguous:
        raise ValueError("%s must be a C-contiguous buffer" % what)
    if view.nbytes != size:
        raise ValueError("%s is %d bytes, element size is %d" % (what, view.nbytes, size))
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _src(data, size, what="data"):
    """A pointer argument for exactly size bytes of data (alive as long as the returned object)."""
    view = _view(data, size, what)
    if isinstance(view, bytes):
        return view
    if view.readonly:
        return view.tobytes()
    return (ctypes.c_char * size).from_buffer(view)


def _dst(buffer, size):
    """A writable ctypes view of buffer, which must be exactly size bytes."""
    view = _view(buffer, size, "buffer")
    if isinstance(view, bytes) or view.readonly:
        raise ValueError("buffer must be writable")
    return (ctypes.c_char * size).from_buffer(view)


def _attempt(rc, call_name, name):
    """A try_* call's result: True if it went through, False if it would block; raises otherwise."""
    if rc == 0:
        return True
    if rc == -_errno.EAGAIN:
        return False
    _raise(rc, call_name, name)


def _wait(fn, handle, arg, timeout, call_name, name):
    """Run a timed_* call: once if timeout is 0, else in slices until done or the deadline."""
    if timeout is None:
        while True:
            rc = fn(handle, arg, _ns(_SLICE))
            if rc != -_errno.ETIMEDOUT:
                break
    else:
        _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        remaining = timeout
        while True:
            rc = fn(handle, arg, _ns(min(remaining, _SLICE)))
            if rc != -_errno.ETIMEDOUT:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
    if rc < 0:
        _raise(rc, call_name, name)


# --- module functions ---

def version():
    """(major, minor, patch) of the library actually loaded."""
    v = _version()
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def unlink(name):
    """Remove the ring NAME; open handles keep working; a missing one is not an error."""
    rc = _unlink(_name(name))
    if rc < 0:
        _raise(rc, "join_shm_unlink", name)


def endpoint_unlink(name):
    """Remove both rings of the endpoint NAME (NAME_AB, NAME_BA); missing ones are not an error."""
    rc = _endpoint_unlink(_name(name))
    if rc < 0:
        _raise(rc, "join_shm_endpoint_unlink", name)


# --- queues ---

class _Handle:
    """What Queue and Endpoint share: one C handle, closed once (also by garbage collection), and
    usable as a context manager. Subclasses name the C call that closes them in _close_call."""

    _h = None
    _close_call = None

    def close(self):
        """Release the role(s) and the mapping(s) (never unlinks). Idempotent."""
        h, self._h = self._h, None
        if h is not None and self._close_call is not None:
            self._close_call(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _handle(self):
        if self._h is None:
            raise ValueError("operation on a closed join_shm handle")
        return self._h

    # --- since 1.2: event loops ---
    # The fd polls readable while the handle has work (consumer: an element; producer: room;
    # endpoint: an inbound message). The rule: after it polls readable, call try_* until it would
    # block; it is then readable again when work arrives. The *_async methods follow that rule.

    _fd_call = None

    def fileno(self):
        """The handle's pollable file descriptor (for selectors, asyncio, select, poll). Owned by
        the handle: close() closes it."""
        if self._fd_call is None:
            raise NotImplementedError("the loaded libjoin-shm %d.%d.%d has no pollable fds (1.2)" % version())
        rc = self._fd_call(self._handle())
        if rc < 0:
            _raise(rc, self._fd_call.__name__, self.name)
        return rc

    async def _until(self, attempt, timeout):
        """attempt() (a try_* call: None or False when it would block) retried whenever the fd
        polls readable in the running asyncio loop, until it gets through or timeout seconds pass
        (None: no limit; then JoinShmTimeoutError)."""
        import asyncio
        _check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            result = attempt()
            if result is not None and result is not False:
                return result
            fd = self.fileno()  # re-arms it, too
            woke = loop.create_future()
            loop.add_reader(fd, lambda: woke.done() or woke.set_result(None))
            try:
                if deadline is None:
                    await woke
                else:
                    await asyncio.wait_for(woke, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise JoinShmTimeoutError(_errno.ETIMEDOUT, "timed out after %g s" % timeout, "async wait",
                                          self.name) from None
            finally:
                loop.remove_reader(fd)

    def __aiter__(self):
        return self


class Queue(_Handle):
    """One side (PRODUCER or CONSUMER) of the ring NAME, created if it does not exist.

    mode: permission bits for a segment this call creates (None: 0600). open_timeout: seconds to
    wait for a peer still initialising the segment (None: the library's 1 s). spin_ns: how long
    blocking calls spin before sleeping (None: library default; 0 or less: sleep at once).
    flags: PREFAULT | MLOCK | ALLOW_OTHER_OWNER. Broadcast rings (policy BROADCAST): max_subscribers,
    overflow (OVERFLOW_BLOCK or OVERFLOW_OVERWRITE) and join_at (JOIN_NEXT or JOIN_OLDEST); None
    takes the ring's (or the default when creating). An overrun subscriber's pop raises
    JoinShmError with errno EOVERFLOW once; lost says how many messages it lost.
    """

    _close_call = staticmethod(_queue_close)
    _fd_call = staticmethod(_queue_fd) if _queue_fd is not None else None

    def __init__(self, name, policy, role, element_size, capacity, *, mode=None, open_timeout=None, spin_ns=None,
                 flags=0, max_subscribers=None, overflow=None, join_at=None):
        self._h = None
        self.name = name
        if element_size < 0 or capacity < 0:
            raise ValueError("element_size and capacity must not be negative")
        opts = None
        broadcast = (max_subscribers, overflow, join_at)
        if mode is not None or open_timeout is not None or spin_ns is not None or flags or broadcast != (None,) * 3:
            opts = _Options(size=ctypes.sizeof(_Options), flags=flags, max_subscribers=max_subscribers or 0,
                            overflow=overflow or 0, join_at=join_at or 0)
            if mode is not None:
                opts.mode = mode
            if open_timeout is not None:
                if open_timeout < 0:
                    raise ValueError("open_timeout must be None or >= 0 seconds")
                opts.open_timeout_ns = max(1, _ns(open_timeout))  # 0 would mean the default
            if spin_ns is not None:
                opts.spin_ns = spin_ns if spin_ns > 0 else -1  # 0 would mean the default
        out = ctypes.c_void_p()
        rc = _queue_open_ex(ctypes.byref(out), _name(name), int(policy), int(role), element_size, capacity,
                            ctypes.byref(opts) if opts is not None else None)
        if rc < 0:
            _raise(rc, "join_shm_queue_open", name)
        self._h = out
        self._size = _element_size(out)
        self._buf = ctypes.create_string_buffer(self._size)
        self._many = None


    def __repr__(self):
        state = "closed" if self._h is None else "element_size=%d, capacity=%d" % (self._size, self.capacity)
        return "<join_shm.Queue %r %s>" % (self.name, state)

    def try_push(self, data):
        """Push one element; False if the ring is full."""
        return _attempt(_try_push(self._handle(), _src(data, self._size)), "join_shm_try_push", self.name)

    def push(self, data, timeout=None):
        """Push one element, waiting for room up to timeout seconds (None: forever)."""
        _wait(_timed_push, self._handle(), _src(data, self._size), timeout, "join_shm_timed_push", self.name)

    def try_pop(self):
        """The oldest element as bytes, or None if the ring is empty."""
        return self._buf.raw if _attempt(_try_pop(self._handle(), self._buf), "join_shm_try_pop", self.name) else None

    def pop(self, timeout=None):
        """The oldest element as bytes, waiting up to timeout seconds (None: forever)."""
        _wait(_timed_pop, self._handle(), self._buf, timeout, "join_shm_timed_pop", self.name)
        return self._buf.raw

    async def pop_async(self, timeout=None):
        """The oldest element as bytes, awaiting the fd in the running asyncio loop."""
        return await self._until(self.try_pop, timeout)

    async def push_async(self, data, timeout=None):
        """Push one element, awaiting room through the fd in the running asyncio loop."""
        src = _src(data, self._size)
        await self._until(lambda: _attempt(_try_push(self._handle(), src), "join_shm_try_push", self.name), timeout)

    async def __anext__(self):
        """async for message in consumer: every element, as it comes."""
        return await self.pop_async()

    def peek(self, timeout=None):
        """with consumer.peek() as view: the oldest element in place, as a read-only memoryview
        (zero-copy: numpy.frombuffer(view, ...) reads shared memory). Waits up to timeout seconds
        (None: forever). At the end of the block the element is consumed; if the block raises, it
        is given back (join_shm_cancel) and stays the next one. Do not keep the view."""
        return _Peek(self, timeout)

    def try_pop_into(self, buffer):
        """Pop into a writable buffer of exactly element_size bytes; False if the ring is empty."""
        return _attempt(_try_pop(self._handle(), _dst(buffer, self._size)), "join_shm_try_pop", self.name)

    def pop_into(self, buffer, timeout=None):
        """Pop into a writable buffer of exactly element_size bytes, waiting as pop() does."""
        _wait(_timed_pop, self._handle(), _dst(buffer, self._size), timeout, "join_shm_timed_pop", self.name)

    def push_many(self, items):
        """Push as many as fit of: a buffer holding whole elements back to back, or an iterable of
        elements. Returns how many were pushed (0 if full or if there was nothing to push)."""
        size = self._size
        try:
            nbytes = memoryview(items).nbytes
        except TypeError:
            nbytes = None
        if nbytes is not None:
            if nbytes % size:
                raise ValueError("a batch of %d bytes does not hold whole elements of %d bytes" % (nbytes, size))
            count = nbytes // size
            data = _src(items, nbytes, "batch") if count else None
        else:
            parts = [_view(x, size, "element") for x in items]
            count = len(parts)
            data = b"".join(parts)
        if count == 0:
            return 0
        rc = _try_push_n(self._handle(), data, count)
        if rc >= 0:
            return rc
        if rc == -_errno.EAGAIN:
            return 0
        _raise(rc, "join_shm_try_push_n", self.name)

    def pop_many(self, max_count):
        """Up to max_count waiting elements as a list of bytes (empty if none)."""
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        size = self._size
        if self._many is None or len(self._many) < max_count * size:
            self._many = ctypes.create_string_buffer(max_count * size)
        rc = _try_pop_n(self._handle(), self._many, max_count)
        if rc == -_errno.EAGAIN:
            return []
        if rc < 0:
            _raise(rc, "join_shm_try_pop_n", self.name)
        raw = ctypes.string_at(self._many, rc * size)
        return [raw[i:i + size] for i in range(0, rc * size, size)]

    @property
    def pending(self):
        """Elements waiting to be popped."""
        return _pending(self._handle())

    @property
    def available(self):
        """Free slots."""
        return _available(self._handle())

    @property
    def capacity(self):
        return _capacity(self._handle())

    @property
    def lost(self):
        """Broadcast subscriber: messages lost to overruns since it joined (since 1.2)."""
        if _lost is None:
            raise JoinShmError(_errno.ENOSYS, "this libjoin-shm predates broadcast rings", "join_shm_lost", self.name)
        return _lost(self._handle())

    @property
    def element_size(self):
        return self._size

    def stats(self):
        """A monitoring snapshot (join_shm_queue_stats) as a dict."""
        if _queue_stats is None:
            raise NotImplementedError("the loaded libjoin-shm %d.%d.%d has no join_shm_queue_stats (1.1)" % version())
        s = _Stats(size=ctypes.sizeof(_Stats))
        rc = _queue_stats(self._handle(), ctypes.byref(s))
        if rc < 0:
            _raise(rc, "join_shm_queue_stats", self.name)
        out = {f: getattr(s, f) for f, _ in _Stats._fields_ if f != "size"}
        try:
            out["policy"] = Policy(out["policy"])
        except ValueError:
            pass  # from shared memory: keep an unknown value as it is
        return out


class _Peek:
    """The context manager of Queue.peek()."""

    def __init__(self, queue, timeout):
        self._queue = queue
        self._timeout = timeout
        self._view = None

    def __enter__(self):
        q = self._queue
        slot = _vp()
        if self._timeout is None or _timed_peek is None:
            rc = _try_peek(q._handle(), ctypes.byref(slot))
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            while rc == -_errno.EAGAIN and (deadline is None or time.monotonic() < deadline):
                if _timed_peek is not None:
                    rc = _timed_peek(q._handle(), ctypes.byref(slot), _ns(_SLICE))
                    rc = -_errno.EAGAIN if rc == -_errno.ETIMEDOUT else rc
                else:
                    time.sleep(0.001)
                    rc = _try_peek(q._handle(), ctypes.byref(slot))
            if rc == -_errno.EAGAIN:
                rc = -_errno.ETIMEDOUT
        else:
            _wait(_timed_peek, q._handle(), ctypes.byref(slot), self._timeout, "join_shm_timed_peek", q.name)
            rc = 0
        if rc < 0:
            _raise(rc, "join_shm_peek", q.name)
        self._view = memoryview((ctypes.c_char * q._size).from_address(slot.value)).cast("B").toreadonly()
        return self._view

    def __exit__(self, exc_type, exc, tb):
        view, self._view = self._view, None
        try:
            view.release()
        except BufferError:
            pass  # something still holds the view (e.g. a numpy array): the slot is handed back anyway
        h = self._queue._handle()
        rc = _cancel(h) if exc_type is not None and _cancel is not None else _release(h)
        if rc < 0:
            _raise(rc, "join_shm_release", self._queue.name)


def Producer(name, policy, element_size, capacity, **options):
    """Queue(name, policy, PRODUCER, element_size, capacity, **options)."""
    return Queue(name, policy, PRODUCER, element_size, capacity, **options)


def Consumer(name, policy, element_size, capacity, **options):
    """Queue(name, policy, CONSUMER, element_size, capacity, **options)."""
    return Queue(name, policy, CONSUMER, element_size, capacity, **options)


# --- endpoints ---

class Endpoint(_Handle):
    """One side (SIDE_A or SIDE_B) of the duplex channel NAME: rings NAME_AB and NAME_BA."""

    _close_call = staticmethod(_endpoint_close)
    _fd_call = staticmethod(_endpoint_fd) if _endpoint_fd is not None else None

    def __init__(self, name, policy, side, element_size, capacity):
        self._h = None
        self.name = name
        if element_size < 0 or capacity < 0:
            raise ValueError("element_size and capacity must not be negative")
        out = ctypes.c_void_p()
        rc = _endpoint_open(ctypes.byref(out), _name(name), int(policy), int(side), element_size, capacity)
        if rc < 0:
            _raise(rc, "join_shm_endpoint_open", name)
        self._h = out
        self._size = element_size
        self._buf = ctypes.create_string_buffer(element_size)


    def __repr__(self):
        return "<join_shm.Endpoint %r%s>" % (self.name, " closed" if self._h is None else "")

    def try_send(self, data):
        """Send one message; False if the outbound ring is full."""
        return _attempt(_try_send(self._handle(), _src(data, self._size)), "join_shm_try_send", self.name)

    def send(self, data, timeout=None):
        """Send one message, waiting for room up to timeout seconds (None: forever)."""
        _wait(_timed_send, self._handle(), _src(data, self._size), timeout, "join_shm_timed_send", self.name)

    def try_receive(self):
        """The oldest inbound message as bytes, or None if there is none."""
        rc = _try_receive(self._handle(), self._buf)
        return self._buf.raw if _attempt(rc, "join_shm_try_receive", self.name) else None

    def receive(self, timeout=None):
        """The oldest inbound message as bytes, waiting up to timeout seconds (None: forever)."""
        _wait(_timed_receive, self._handle(), self._buf, timeout, "join_shm_timed_receive", self.name)
        return self._buf.raw

    async def receive_async(self, timeout=None):
        """The oldest inbound message as bytes, awaiting the fd in the running asyncio loop."""
        return await self._until(self.try_receive, timeout)

    async def send_async(self, data, timeout=None):
        """Send one message; while the outbound ring is full, retries every millisecond (the
        endpoint's fd tells of inbound messages only)."""
        import asyncio
        src = _src(data, self._size)
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _attempt(_try_send(self._handle(), src), "join_shm_try_send", self.name):
            if deadline is not None and time.monotonic() >= deadline:
                raise JoinShmTimeoutError(_errno.ETIMEDOUT, "timed out after %g s" % timeout, "send_async", self.name)
            await asyncio.sleep(0.001)

    async def __anext__(self):
        """async for message in endpoint: every inbound message, as it comes."""
        return await self.receive_async()

    def receive_into(self, buffer, timeout=None):
        """Receive into a writable buffer of exactly element_size bytes, waiting as receive() does."""
        _wait(_timed_receive, self._handle(), _dst(buffer, self._size), timeout, "join_shm_timed_receive",
              self.name)

    @property
    def pending(self):
        """Messages waiting inbound."""
        return _endpoint_pending(self._handle())

    @property
    def available(self):
        """Free slots outbound."""
        return _endpoint_available(self._handle())

    @property
    def element_size(self):
        return self._size
