#!/usr/bin/env python3
"""The Python binding (join_shm, found on PYTHONPATH) against libjoin-shm and a C++ peer.

    test_join_shm.py PEER [COUNT]

PEER is tests/python/peer (built from peer.cpp). The script uses nothing but the join_shm module:
it checks the module on its own (data checks, errors, batches, stats, timeouts, signals), then
exchanges 4 * COUNT messages (default COUNT 30000) with the peer, each content-checked on the side
that receives it. Exits 0 when everything held, 1 with the reason otherwise.
"""

import array
import ctypes
import errno
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import join_shm

ELEMENT = 64  # keep in step with peer.cpp
BODY = ELEMENT - 16
ENDPOINT_CAPACITY = 64
QUEUE_CAPACITY = 256
WAIT = 10.0  # seconds any single wait on the peer may take before the test fails

SALT_TO_PEER = 0x11
SALT_FROM_PEER = 0x5A
SALT_BATCH = 0x23
SALT_STREAM = 0xC4

_TABLE = bytes(range(256)) * 2
_MESSAGE = struct.Struct("=Q%dsQ" % BODY)
_MASK = (1 << 64) - 1


def make(seq, salt):
    """The message peer.cpp's make() builds: seq, a pattern that depends on seq and salt, ~seq ^ salt."""
    start = (seq * 7 + salt) & 0xFF
    return _MESSAGE.pack(seq, _TABLE[start:start + BODY], (~seq ^ salt) & _MASK)


class Failure(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


def raises(kind, fn, *args, **kwargs):
    """fn(*args, **kwargs) must raise kind; returns the exception."""
    try:
        fn(*args, **kwargs)
    except kind as e:
        return e
    except Exception as e:  # noqa: BLE001 -- a wrong exception is a failure, reported with its type
        raise Failure("%s raised %s: %s, expected %s" % (fn.__name__, type(e).__name__, e, kind.__name__)) from e
    raise Failure("%s did not raise %s" % (fn.__name__, kind.__name__))


def check_layout(peer):
    """The ctypes mirrors of join_shm_options / join_shm_stats match the C header, as compiled."""
    out = subprocess.run([peer, "layout"], check=True, capture_output=True, text=True, timeout=WAIT).stdout
    mirrors = {"join_shm_options": join_shm._Options, "join_shm_stats": join_shm._Stats}
    seen = 0
    for line in out.splitlines():
        key, *numbers = line.split()
        if "." not in key:
            expect(int(numbers[0]) == ctypes.sizeof(mirrors[key]), "sizeof(%s) differs from C" % key)
            continue
        struct_name, field = key.split(".")
        desc = getattr(mirrors[struct_name], field)
        expect((desc.offset, desc.size) == (int(numbers[0]), int(numbers[1])),
               "%s: ctypes says offset %d size %d, C says %s" % (key, desc.offset, desc.size, numbers))
        seen += 1
    expect(seen == len(join_shm._Options._fields_) + len(join_shm._Stats._fields_),
           "the peer described %d fields, the module declares %d" %
           (seen, len(join_shm._Options._fields_) + len(join_shm._Stats._fields_)))


def check_queue(base):
    """One process, both roles of an SPSC ring: data forms, would-block, timeouts, batches, stats, errors."""
    name = base + "_local"
    pid = os.getpid()
    try:
        with join_shm.Producer(name, join_shm.SPSC, ELEMENT, 8) as prod, \
                join_shm.Consumer(name, join_shm.SPSC, ELEMENT, 8) as cons:
            expect((prod.capacity, prod.element_size, cons.pending, prod.available) == (8, ELEMENT, 0, 8),
                   "fresh ring: capacity %d element_size %d pending %d available %d" %
                   (prod.capacity, prod.element_size, cons.pending, prod.available))

            # Empty: would-block is an ordinary result; timed waits end in TimeoutError after the timeout.
            expect(cons.try_pop() is None, "try_pop on an empty ring did not give None")
            expect(cons.try_pop_into(bytearray(ELEMENT)) is False, "try_pop_into on an empty ring did not give False")
            e = raises(TimeoutError, cons.pop, timeout=0)
            expect(isinstance(e, join_shm.JoinShmError) and e.errno == errno.ETIMEDOUT and e.detail,
                   "pop(timeout=0): %r" % e)
            begin = time.monotonic()
            e = raises(join_shm.JoinShmTimeoutError, cons.pop, timeout=0.25)
            elapsed = time.monotonic() - begin
            expect(0.25 <= elapsed < 1.5, "pop(timeout=0.25) gave up after %.3f s" % elapsed)
            expect(isinstance(e, TimeoutError) and isinstance(e, OSError) and not isinstance(e, ValueError),
                   "the timeout exception is not a TimeoutError/OSError: %r" % e)
            expect(e.errno == errno.ETIMEDOUT and e.detail and e.filename == name, "timeout fields: %r" % e)
            raises(ValueError, cons.pop, timeout=-1)

            # Every kind of buffer goes in and comes out as it was.
            forms = [
                make(0, 1),
                bytearray(make(1, 1)),
                memoryview(bytearray(make(2, 1))),
                memoryview(make(3, 1)),  # read-only
                array.array("Q", make(4, 1)),  # a buffer of 8-byte items
                memoryview(bytearray(make(5, 1))).cast("B", (8, 8)),  # two-dimensional, C-contiguous
            ]
            for data in forms:
                expect(prod.try_push(data) is True, "try_push(%s) into a ring with room failed" % type(data).__name__)
            for i in range(len(forms)):
                got = cons.try_pop()
                expect(got == make(i, 1), "element %d (%s) came back as %r" % (i, type(forms[i]).__name__, got))

            # Anything but exactly ELEMENT contiguous bytes is refused before the library sees it.
            for bad in (make(0, 1)[:-1], make(0, 1) + b"x", "x" * ELEMENT, 42, None,
                        memoryview(bytearray(2 * ELEMENT))[::2]):
                e = raises(ValueError, prod.try_push, bad)
                expect(not isinstance(e, join_shm.JoinShmError), "bad data reached the library: %r" % e)
            expect(cons.pending == 0, "refused data was pushed")

            # Full: exact capacity, would-block as False, timed push ends in TimeoutError.
            for i in range(8):
                expect(prod.try_push(make(i, 2)), "try_push %d of 8 failed" % i)
            expect(prod.try_push(make(8, 2)) is False, "the 9th try_push into a ring of 8 did not give False")
            expect((cons.pending, prod.available) == (8, 0), "full ring: pending %d available %d" %
                   (cons.pending, prod.available))
            raises(TimeoutError, prod.push, make(8, 2), timeout=0.05)

            # Batches out, in order; pop_into fills caller buffers.
            expect(cons.pop_many(3) == [make(i, 2) for i in range(3)], "pop_many(3) gave other elements")
            buf = bytearray(ELEMENT)
            cons.pop_into(buf, timeout=1)
            expect(bytes(buf) == make(3, 2), "pop_into(bytearray) gave %r" % buf)
            view = memoryview(bytearray(2 * ELEMENT))
            expect(cons.try_pop_into(view[ELEMENT:]) is True and view[ELEMENT:] == make(4, 2),
                   "try_pop_into(memoryview slice) did not fill it")
            raises(ValueError, cons.pop_into, bytes(ELEMENT))
            raises(ValueError, cons.pop_into, bytearray(ELEMENT - 1))
            expect(cons.pop_many(100) == [make(i, 2) for i in range(5, 8)], "pop_many(100) gave other elements")
            expect(cons.pop_many(1) == [], "pop_many on an empty ring did not give []")
            raises(ValueError, cons.pop_many, 0)

            # Batches in: a list of elements, then one buffer of several, only as many as fit.
            expect(prod.push_many([make(i, 3) for i in range(5)]) == 5, "push_many(list of 5) into 8 free slots")
            expect(prod.push_many(b"".join(make(i, 3) for i in range(5, 15))) == 3,
                   "push_many(10 elements) with 3 free slots did not push 3")
            expect(prod.push_many([make(99, 3)]) == 0, "push_many into a full ring did not give 0")
            expect(prod.push_many([]) == 0 and prod.push_many(b"") == 0, "an empty batch did not give 0")
            raises(ValueError, prod.push_many, make(0, 3) + b"x")
            raises(ValueError, prod.push_many, [make(0, 3), b"short"])
            expect(cons.pop_many(8) == [make(i, 3) for i in range(8)], "batch-pushed elements came back otherwise")

            # stats(): 6 + 8 + 8 elements went through, all were popped.
            s = cons.stats()
            want = {"policy": join_shm.SPSC, "element_size": ELEMENT, "capacity": 8, "pending": 0, "pushed": 22,
                    "popped": 22, "skipped": 0, "producer_pid": pid, "consumer_pid": pid}
            expect(s == want, "stats() gave %r, expected %r" % (s, want))
            expect(prod.push_many([make(0, 4), make(1, 4)]) == 2 and prod.stats()["pending"] == 2,
                   "stats() pending after 2 pushes: %r" % prod.stats())

            # Library errors: mismatched parameters are ValueErrors naming the mismatch; a taken role is
            # EBUSY with OSError semantics only.
            e = raises(join_shm.JoinShmInvalidError, join_shm.Consumer, name, join_shm.SPSC, ELEMENT // 2, 8)
            expect(isinstance(e, ValueError) and isinstance(e, OSError) and e.errno == errno.EINVAL,
                   "element size mismatch: %r" % e)
            expect("element size" in str(e) and e.detail and e.filename == name,
                   "the element size mismatch does not say so: %r" % e)
            e = raises(ValueError, join_shm.Producer, name, join_shm.SPSC, ELEMENT, 16)
            expect(isinstance(e, join_shm.JoinShmError) and e.detail, "capacity mismatch: %r" % e)
            e = raises(ValueError, join_shm.Queue, name, join_shm.MPMC, join_shm.CONSUMER, ELEMENT, 8)
            expect(isinstance(e, join_shm.JoinShmError) and e.detail, "policy mismatch: %r" % e)
            e = raises(join_shm.JoinShmError, join_shm.Consumer, name, join_shm.SPSC, ELEMENT, 8)
            expect(e.errno == errno.EBUSY and e.detail and not isinstance(e, (ValueError, TimeoutError)),
                   "a second SPSC consumer: %r" % e)
            e = raises(ValueError, join_shm.Consumer, "bad/name", join_shm.SPSC, ELEMENT, 8)
            expect(isinstance(e, join_shm.JoinShmError) and e.detail, "a bad name: %r" % e)

        # Closed handles refuse work; closing twice is harmless.
        prod.close()
        raises(ValueError, prod.try_push, make(0, 5))
        raises(ValueError, lambda: cons.pending)

        # Options reach the library; the elements left in the ring are still there for a new consumer.
        with join_shm.Consumer(name, join_shm.SPSC, ELEMENT, 8, mode=0o600, open_timeout=0.5, spin_ns=0,
                               flags=join_shm.PREFAULT) as cons:
            expect(cons.pop_many(8) == [make(0, 4), make(1, 4)], "a reopened consumer did not find the 2 elements")
        join_shm.unlink(name)
        join_shm.unlink(name)  # a missing segment is not an error
    finally:
        join_shm.unlink(name)


class Interrupted(Exception):
    pass


def check_signals(base):
    """A blocking pop without a timeout still lets a Python signal handler run (and raise)."""
    name = base + "_signal"

    def on_alarm(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    rescue = None
    try:
        with join_shm.Consumer(name, join_shm.SPSC, ELEMENT, 4) as cons, \
                join_shm.Producer(name, join_shm.SPSC, ELEMENT, 4) as prod:
            # If the handler cannot run while pop() waits, this wakes pop() instead, and the check fails
            # rather than hang.
            rescue = threading.Timer(3.0, prod.push, args=(make(0, 8),), kwargs={"timeout": 1})
            rescue.start()
            begin = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            raises(Interrupted, cons.pop)
            elapsed = time.monotonic() - begin
            expect(elapsed < 2.0, "the signal handler ran only after %.3f s" % elapsed)
            rescue.cancel()
            rescue.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if rescue is not None:
            rescue.cancel()
            rescue.join()
        join_shm.unlink(name)


def check_endpoint(base):
    """Both sides of an endpoint in one process: would-block, full, a message each way."""
    name = base + "_ep"
    try:
        with join_shm.Endpoint(name, join_shm.SPSC, join_shm.SIDE_A, ELEMENT, 2) as a, \
                join_shm.Endpoint(name, join_shm.SPSC, join_shm.SIDE_B, ELEMENT, 2) as b:
            expect(b.try_receive() is None and a.try_receive() is None, "try_receive on nothing did not give None")
            raises(TimeoutError, a.receive, timeout=0.01)
            expect(a.try_send(make(0, 6)) and a.try_send(make(1, 6)), "two try_send into 2 slots failed")
            expect(a.try_send(make(2, 6)) is False and a.available == 0 and b.pending == 2,
                   "a full endpoint: available %d pending %d" % (a.available, b.pending))
            raises(TimeoutError, a.send, make(2, 6), timeout=0.01)
            expect(b.receive(timeout=1) == make(0, 6), "B received another message")
            buf = bytearray(ELEMENT)
            b.receive_into(buf, timeout=1)
            expect(bytes(buf) == make(1, 6), "B received_into another message")
            b.send(make(7, 6), timeout=1)
            expect(a.receive(timeout=1) == make(7, 6), "A received another message")
            raises(ValueError, b.send, b"short")
        e = raises(ValueError, join_shm.Endpoint, name, join_shm.SPSC, join_shm.SIDE_A, ELEMENT * 2, 2)
        expect(isinstance(e, join_shm.JoinShmError) and "element size" in str(e), "endpoint mismatch: %r" % e)
    finally:
        join_shm.endpoint_unlink(name)


def check_peer(peer_path, base, count):
    """4 * count messages with the C++ peer; returns how many were exchanged."""
    name = base + "_x"
    ep = prod = cons = peer = None
    try:
        # Open our sides first so the peer finds the rings (either side may create them).
        ep = join_shm.Endpoint(name, join_shm.SPSC, join_shm.SIDE_A, ELEMENT, ENDPOINT_CAPACITY)
        prod = join_shm.Producer(name + "_p", join_shm.SPSC, ELEMENT, QUEUE_CAPACITY)
        cons = join_shm.Consumer(name + "_s", join_shm.SPSC, ELEMENT, QUEUE_CAPACITY)
        peer = subprocess.Popen([peer_path, name, str(count)])

        def waited(what, fn, *args):
            # fn(*args, timeout=...) in half-second steps, so that a peer that gave up (and said why)
            # fails the test at once rather than after WAIT. A timed-out push or pop did nothing, so
            # calling it again is safe.
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    return fn(*args, timeout=0.5)
                except TimeoutError:
                    if peer.poll() is not None:
                        raise Failure("%s: the peer exited with %d" % (what, peer.returncode)) from None
                    if time.monotonic() > deadline:
                        raise Failure("%s timed out after %.0f s; the peer is still running" % (what, WAIT)) from None

        # 1. Endpoint: every message answered with seq + 1; up to 32 in flight (less than either
        #    ring holds, so neither side can block on a full ring while the other waits for it).
        sent = received = 0
        into = bytearray(ELEMENT)
        while received < count:
            while sent < count and sent - received < 32:
                msg = make(sent, SALT_TO_PEER)
                if sent % 2 or not ep.try_send(msg):
                    waited("send %d" % sent, ep.send, msg)
                sent += 1
            if received % 1000 == 0:
                waited("receive %d" % received, ep.receive_into, into)
                got = bytes(into)
            else:
                got = waited("receive %d" % received, ep.receive)
            expect(got == make(received + 1, SALT_FROM_PEER), "answer %d is wrong: %r" % (received, got))
            received += 1

        # 2. Batches to the peer, as lists and as single buffers of 1..61 elements; when the ring is
        #    full, one blocking push waits for the peer to make room.
        seq = 0
        while seq < count:
            n = min(1 + seq % 61, count - seq)
            elements = [make(s, SALT_BATCH) for s in range(seq, seq + n)]
            moved = prod.push_many(elements if seq % 2 else b"".join(elements))
            if moved == 0:
                waited("push %d" % seq, prod.push, elements[0])
                moved = 1
            seq += moved

        # 3. The peer's stream, in batches when there are some, else one blocking pop at a time.
        seq = 0
        while seq < count:
            got = cons.pop_many(128) or [waited("pop %d" % seq, cons.pop)]
            for msg in got:
                expect(msg == make(seq, SALT_STREAM), "stream message %d is wrong: %r" % (seq, msg))
                seq += 1
        expect(cons.try_pop() is None, "the stream had more than %d messages" % count)

        try:
            status = peer.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise Failure("the peer did not exit")
        expect(status == 0, "the peer exited with %d (it says why above)" % status)

        # Both rings saw exactly count elements, none skipped, and the peer's roles are free again.
        for q in (prod, cons):
            s = q.stats()
            expect((s["pushed"], s["popped"], s["pending"], s["skipped"]) == (count, count, 0, 0),
                   "%s stats after the exchange: %r" % (q.name, s))
        expect(prod.stats()["consumer_pid"] == 0 and cons.stats()["producer_pid"] == 0,
               "the peer's roles are still held after it exited: %r %r" % (prod.stats(), cons.stats()))
        return 4 * count
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait()
        for handle in (ep, prod, cons):
            if handle is not None:
                handle.close()
        join_shm.endpoint_unlink(name)
        join_shm.unlink(name + "_p")
        join_shm.unlink(name + "_s")


def check_broadcast(base):
    """a broadcast ring: every subscriber gets every message; an overrun one gets EOVERFLOW and lost"""
    name = base + "_bc"
    join_shm.unlink(name)
    try:
        pub = join_shm.Producer(name, join_shm.BROADCAST, 8, 4, overflow=join_shm.OVERFLOW_OVERWRITE)
        subs = [join_shm.Consumer(name, join_shm.BROADCAST, 8, 4) for _ in range(2)]
        pub.push(struct.pack("<Q", 1))
        for sub in subs:
            expect(struct.unpack("<Q", sub.pop(1.0))[0] == 1, "a subscriber missed message 1")
        for i in range(10):
            pub.try_push(struct.pack("<Q", 100 + i))
        try:
            subs[0].try_pop()
            raise Failure("an overrun subscriber did not get EOVERFLOW")
        except join_shm.JoinShmError as e:
            expect(e.errno == errno.EOVERFLOW, "overrun gave errno %d" % e.errno)
        expect(subs[0].lost == 7, "lost is %d, expected 7" % subs[0].lost)
        expect(struct.unpack("<Q", subs[0].try_pop())[0] == 107, "not resumed at the oldest")
        for x in [pub] + subs:
            x.close()
    finally:
        join_shm.unlink(name)


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: test_join_shm.py PEER [COUNT]", file=sys.stderr)
        return 2
    peer, count = argv[1], int(argv[2]) if len(argv) == 3 else 30000
    base = "pyjoin%d" % os.getpid()  # unique per run; every check unlinks its names
    print("join_shm from %s, library %d.%d.%d" % (join_shm.__file__, *join_shm.version()))
    print("library: %s" % join_shm.library_path)
    try:
        major, minor, _ = join_shm.version()
        expect((major, minor) >= (1, 1), "library version %d.%d, the module needs 1.1" % (major, minor))
        for check in (check_layout, check_queue, check_signals, check_endpoint, check_broadcast):
            begin = time.monotonic()
            check(peer if check is check_layout else base)
            print("ok   %s (%.2f s)" % (check.__doc__.split("\n")[0], time.monotonic() - begin))
        begin = time.monotonic()
        moved = check_peer(peer, base, count)
        print("ok   %d messages exchanged with the C++ peer, each checked (%.2f s)" % (moved, time.monotonic() - begin))
    except Failure as e:
        print("FAIL %s" % e, file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
