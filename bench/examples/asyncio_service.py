#!/usr/bin/env python3
"""asyncio_service: an asyncio service that consumes two rings and answers on an endpoint.

    asyncio_service.py [REQUESTS]        (default 2000 per ring)

The service (this process) reads requests from two SPSC rings, "orders" and "quotes", with
`async for` (each ring's fd is watched by the event loop: no thread, no polling), and answers each
one on side A of an endpoint with `await endpoint.send_async(...)`. A forked client pushes the
requests with plain blocking calls and reads the answers from side B, checking every one. A third
task peeks at each answer in place (`with queue.peek() as view`) is not needed here; see
tests/python for that. Exits 0 when every request got its right answer.

Uses only the join_shm module (PYTHONPATH) and the library it finds (JOIN_SHM_LIBRARY).
"""

import asyncio
import os
import struct
import sys
import time

import join_shm

SIZE = 32
MESSAGE = struct.Struct("=4sQQ12x")  # ring tag, sequence number, payload


def names():
    tag = "ex-aio-%d" % os.getpid()  # unique per run, so that runs side by side do not meet
    return tag + "-orders", tag + "-quotes", tag + "-answers"


def client(count, orders_name, quotes_name, answers_name):
    with join_shm.Producer(orders_name, join_shm.SPSC, SIZE, 16) as orders, \
            join_shm.Producer(quotes_name, join_shm.SPSC, SIZE, 16) as quotes, \
            join_shm.Endpoint(answers_name, join_shm.SPSC, join_shm.SIDE_B, SIZE, 16) as answers:
        expected = {b"ordr": 0, b"quot": 0}

        def push(ring, request):
            # Never block on a full ring while answers wait: the service may be waiting for room
            # for its answers, and we would wait for each other.
            deadline = time.monotonic() + 10
            while not ring.try_push(request):
                reply = answers.try_receive()
                if reply is not None:
                    check(reply, expected)
                elif time.monotonic() > deadline:
                    raise TimeoutError("the service took no request for 10 s")
                else:
                    time.sleep(0.0001)

        for seq in range(count):
            push(orders, MESSAGE.pack(b"ordr", seq, seq * 3))
            push(quotes, MESSAGE.pack(b"quot", seq, seq * 5))
        while sum(expected.values()) < 2 * count:
            check(answers.receive(timeout=10), expected)


def check(reply, expected):
    tag, seq, value = MESSAGE.unpack(reply)
    factor = 3 if tag == b"ordr" else 5
    if seq != expected[tag] or value != seq * factor + 1:
        raise SystemExit("asyncio_service: bad answer %r %d %d" % (tag, seq, value))
    expected[tag] += 1


async def serve(count, orders_name, quotes_name, answers_name):
    with join_shm.Consumer(orders_name, join_shm.SPSC, SIZE, 16) as orders, \
            join_shm.Consumer(quotes_name, join_shm.SPSC, SIZE, 16) as quotes, \
            join_shm.Endpoint(answers_name, join_shm.SPSC, join_shm.SIDE_A, SIZE, 16) as answers:

        async def handle(ring):
            done = 0
            async for request in ring:  # awaits the ring's fd in this event loop
                tag, seq, value = MESSAGE.unpack(request)
                await answers.send_async(MESSAGE.pack(tag, seq, value + 1))
                done += 1
                if done == count:
                    return done

        served = await asyncio.wait_for(asyncio.gather(handle(orders), handle(quotes)), timeout=60)
        return sum(served)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    orders_name, quotes_name, answers_name = names()
    for name in (orders_name, quotes_name):
        join_shm.unlink(name)
    join_shm.endpoint_unlink(answers_name)
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                client(count, orders_name, quotes_name, answers_name)
            except BaseException as e:  # report, and leave without running the parent's cleanup
                print("asyncio_service: client:", e, file=sys.stderr)
                code = 1
            os._exit(code)
        served = asyncio.run(serve(count, orders_name, quotes_name, answers_name))
        _, status = os.waitpid(pid, 0)
        ok = served == 2 * count and os.waitstatus_to_exitcode(status) == 0
        print("asyncio_service: answered %d requests from 2 rings%s" % (served, "" if ok else " (FAILED)"))
        return 0 if ok else 1
    finally:
        for name in (orders_name, quotes_name):
            join_shm.unlink(name)
        join_shm.endpoint_unlink(answers_name)


if __name__ == "__main__":
    sys.exit(main())
