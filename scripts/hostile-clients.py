#!/usr/bin/env python3
"""hostile-clients.py HOST PORT SECONDS [SLOW_CONNS] - hostile clients
against `enclaveml serve` for a bounded time (make bench section 10,
scripts/bench-serve.sh; docs/BENCHMARKS.md, section 14):

  slowloris   SLOW_CONNS (default 200) TLS connections, each sending its
              request's header one byte a second; when the server drops
              one (408 after --header-timeout-ms), another takes its place;
  headers     requests whose header block is 9000 bytes (431), about ten
              a second, one after another;
  bodies      predicts that announce a 1 GB body (413), the same;
  garbage     TCP connections that send random bytes instead of a TLS
              ClientHello (the handshake fails), the same.

It stops by itself after SECONDS and prints one line of counts: the
answers it got by status, the connections the server closed, and its own
CPU seconds (it shares the machine with the server and wrk).
"""
import asyncio
import os
import resource
import ssl
import sys
import time
from collections import Counter

HOST, PORT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
SLOW = int(sys.argv[4]) if len(sys.argv) > 4 else 200
counts = Counter()


def tls():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a hostile client checks nothing
    return ctx


async def status_of(reader):
    try:
        line = await asyncio.wait_for(reader.readline(), 15)
    except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
        return "none"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


async def slowloris(deadline):
    head = b"GET /healthz HTTP/1.1\r\nHost: e\r\n" + b"X-Slow: " + b"a" * 60
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection(HOST, PORT, ssl=tls())
        except (OSError, ssl.SSLError):
            counts["slow_connect_failed"] += 1
            await asyncio.sleep(1)
            continue
        counts["slow_connections"] += 1
        try:
            for b in head:
                if time.monotonic() >= deadline:
                    break
                w.write(bytes([b]))
                await w.drain()
                try:  # the server may answer (408) and close meanwhile
                    line = await asyncio.wait_for(r.readline(), 1.0)
                except asyncio.TimeoutError:
                    continue
                parts = line.split()
                counts["slow_" + (parts[1].decode() if len(parts) > 1
                                  else "closed")] += 1
                break
        except (ConnectionError, ssl.SSLError):
            counts["slow_closed"] += 1
        w.close()


async def oversized(deadline, kind):
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection(HOST, PORT, ssl=tls())
            if kind == "headers":
                w.write(b"GET /healthz HTTP/1.1\r\nHost: e\r\nX-Big: " +
                        b"b" * 9000 + b"\r\n\r\n")
            else:
                w.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: e\r\n"
                        b"Content-Type: application/json\r\n"
                        b"Content-Length: 1000000000\r\n\r\n{")
            await w.drain()
            counts[kind + "_" + await status_of(r)] += 1
            w.close()
        except (OSError, ssl.SSLError):
            counts[kind + "_closed"] += 1
        await asyncio.sleep(0.1)


async def garbage(deadline):
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
            w.write(os.urandom(512))
            await w.drain()
            got = await asyncio.wait_for(r.read(1024), 15)
            counts["garbage_" + ("alert" if got else "closed")] += 1
            w.close()
        except (OSError, asyncio.TimeoutError):
            counts["garbage_closed"] += 1
        await asyncio.sleep(0.1)


async def main():
    deadline = time.monotonic() + SECONDS
    tasks = [slowloris(deadline) for _ in range(SLOW)]
    tasks += [oversized(deadline, "headers"), oversized(deadline, "bodies"),
              garbage(deadline)]
    await asyncio.wait_for(asyncio.gather(*tasks), SECONDS + 30)


asyncio.run(main())
ru = resource.getrusage(resource.RUSAGE_SELF)
counts["own_cpu_seconds"] = round(ru.ru_utime + ru.ru_stime, 1)
print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
