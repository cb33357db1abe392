#!/usr/bin/env python3
"""The binding's event-loop side (since 1.2): fileno() with selectors, asyncio (pop_async,
push_async, async for, receive_async) and zero-copy peek(). Uses only the join_shm module.
Exits 0 when everything held; an assertion names what did not."""

import asyncio
import os
import selectors
import sys
import threading

import join_shm

SIZE = 16


def msg(i):
    return i.to_bytes(8, "little") * 2


def name(tag):
    return "jshm-py-aio-%s-%d" % (tag, os.getpid())


def test_fileno_with_selectors():
    n = name("sel")
    with join_shm.Producer(n, join_shm.MPSC, SIZE, 4) as p, join_shm.Consumer(n, join_shm.MPSC, SIZE, 4) as c:
        fd = c.fileno()
        assert fd >= 0 and c.fileno() == fd
        with selectors.DefaultSelector() as sel:
            sel.register(c, selectors.EVENT_READ)  # selectors take any object with fileno()
            assert sel.select(0) == []
            p.push(msg(1))
            assert len(sel.select(5)) == 1
            assert c.try_pop() == msg(1)
            assert c.try_pop() is None  # the rule: try until it would block
            assert sel.select(0.02) == []
    join_shm.unlink(n)
    try:
        c.fileno()
    except ValueError:
        pass
    else:
        raise AssertionError("fileno() of a closed queue")


async def exercise_asyncio():
    n, e = name("q"), name("ep")
    with join_shm.Producer(n, join_shm.SPSC, SIZE, 2) as p, join_shm.Consumer(n, join_shm.SPSC, SIZE, 2) as c, \
            join_shm.Endpoint(e, join_shm.SPSC, join_shm.SIDE_A, SIZE, 4) as a, \
            join_shm.Endpoint(e, join_shm.SPSC, join_shm.SIDE_B, SIZE, 4) as b:
        try:
            await c.pop_async(timeout=0.05)
        except join_shm.JoinShmTimeoutError:
            pass
        else:
            raise AssertionError("pop_async on an empty ring did not time out")
        count = 2000

        async def produce():
            for i in range(count):
                await p.push_async(msg(i))  # the ring holds 2: this waits on the producer's fd

        async def consume():
            i = 0
            async for m in c:
                assert m == msg(i), (m, i)
                i += 1
                if i == count:
                    return i

        got = await asyncio.wait_for(asyncio.gather(produce(), consume()), 60)
        assert got[1] == count

        # A thread sends on side A; side B receives in the loop.
        def send():
            for i in range(count):
                a.send(msg(i), timeout=10)

        t = threading.Thread(target=send)
        t.start()
        i = 0
        async for m in b:
            assert m == msg(i)
            i += 1
            if i == count:
                break
        t.join()
        await a.send_async(msg(7))
        assert await b.receive_async(timeout=5) == msg(7)
    join_shm.unlink(n)
    join_shm.endpoint_unlink(e)


def test_peek():
    n = name("peek")
    with join_shm.Producer(n, join_shm.MPMC, SIZE, 4) as p, join_shm.Consumer(n, join_shm.MPMC, SIZE, 4) as c:
        try:
            with c.peek(timeout=0):
                raise AssertionError("peek on an empty ring gave a view")
        except join_shm.JoinShmTimeoutError:
            pass
        p.push(msg(5))
        p.push(msg(6))
        with c.peek() as view:
            assert isinstance(view, memoryview) and view.readonly and bytes(view) == msg(5)
        try:
            with c.peek() as view:
                assert bytes(view) == msg(6)
                raise KeyError("given back")
        except KeyError:
            pass
        assert c.pending >= 0
        with c.peek(timeout=1) as view:  # given back above: still the next one
            assert bytes(view) == msg(6)
        assert c.try_pop() is None
    join_shm.unlink(n)


def main():
    if join_shm.version() < (1, 2, 0) and not hasattr(join_shm._lib, "join_shm_queue_fd"):
        print("skip: libjoin-shm without pollable fds")
        return 0
    test_fileno_with_selectors()
    asyncio.run(exercise_asyncio())
    test_peek()
    print("ok: fileno, asyncio and peek")
    return 0


if __name__ == "__main__":
    sys.exit(main())
