#!/usr/bin/env python3
"""Memory per idle keep-alive connection.

Opens N client connections to a running Ficus, sends one request on each (so each is a real, used HTTP/1.1
keep-alive connection), keeps them all open and idle, and reports the gateway's RSS before, just after the requests (connections
still holding hyper's buffers) and after --hold seconds (by then Ficus has parked them: an HTTP/1.1
connection quiet for 2 s gives its buffers back, see src/listen/conn.rs).

    benches/idle_conns.py --addr 127.0.0.1:19103 --pid <ficus pid> [--count 10000]
"""
import argparse
import asyncio
import resource


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one(host, port, conns, sem, send=True):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        if not send:
            conns.append((reader, writer))
            return
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:40])
        conns.append((reader, writer))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--hold", type=float, default=6.0)
    p.add_argument("--no-request", action="store_true", help="connect only (the cost of an accepted socket)")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.count + 1000)), hard))
    host, port = a.addr.rsplit(":", 1)
    before = rss_kib(a.pid)
    conns = []
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(host, int(port), conns, sem, not a.no_request) for _ in range(a.count)))
    await asyncio.sleep(0.5)
    fresh = rss_kib(a.pid)
    await asyncio.sleep(max(a.hold - 0.5, 0))
    after = rss_kib(a.pid)
    n = len(conns)
    print(f"connections={n} rss_before_kib={before} rss_fresh_kib={fresh} rss_after_kib={after} "
          f"per_connection_fresh_bytes={(fresh - before) * 1024 / n:.0f} "
          f"per_connection_after_hold_bytes={(after - before) * 1024 / n:.0f}")
    for _, w in conns:
        w.close()


asyncio.run(main())
