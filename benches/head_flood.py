#!/usr/bin/env python3
"""Memory held by unfinished request heads.

Opens N connections to a running proxy and sends each an unfinished request head (no final CRLF), then keeps
them all open and reports the proxy's RSS before and after, and how many connections the proxy closed.

Two shapes:
  --shape repro    one 390,000-byte header (the hardening issue's repro); a proxy with a head limit closes it
  --shape maximal  header lines of 7,500 bytes up to --bytes in all (default 30,000): the largest head that
                   fits both nginx's default buffers (4 x 8k) and Ficus' default limit (32 KiB), so both hold it
                   until their header timeout

    benches/head_flood.py --addr 127.0.0.1:19103 --pid <proxy pid> [--count 1000] [--shape maximal]

With several pids (--pid 1 --pid 2, e.g. nginx's master and worker) their RSS is summed.
"""
import argparse
import asyncio
import resource


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def head(shape, host, size):
    start = f"GET /m HTTP/1.1\r\nHost: {host}\r\n".encode()
    if shape == "repro":
        return start + b"X-Big: " + b"a" * 390_000
    out = start
    i = 0
    while len(out) + 7_500 < size:
        out += f"X-H{i}: ".encode() + b"a" * 7_480 + b"\r\n"
        i += 1
    return out + b"X-Last: " + b"a" * max(0, size - len(out) - 10)


async def one(host, port, data, conns, sem):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(data)
            await writer.drain()
        except OSError:
            conns.append(None)
            return
        conns.append((reader, writer))


async def closed(conns):
    n = 0
    for c in conns:
        if c is None:
            n += 1
            continue
        reader, _ = c
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=0.001)
            if data == b"" or data:
                n += 1
        except (asyncio.TimeoutError, OSError):
            pass
    return n


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--pid", type=int, action="append", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--shape", choices=["repro", "maximal"], default="maximal")
    p.add_argument("--bytes", type=int, default=30_000)
    p.add_argument("--hold", type=float, default=3.0)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.count + 1000)), hard))
    host, port = a.addr.rsplit(":", 1)
    data = head(a.shape, host, a.bytes)
    before = rss_kib(a.pid)
    conns = []
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(one(host, int(port), data, conns, sem) for _ in range(a.count)))
    await asyncio.sleep(a.hold)
    after = rss_kib(a.pid)
    gone = await closed(conns)
    print(f"shape={a.shape} head_bytes={len(data)} connections={a.count} closed_by_proxy={gone} "
          f"rss_before_mib={before / 1024:.1f} rss_after_mib={after / 1024:.1f} growth_mib={(after - before) / 1024:.1f}")
    for c in conns:
        if c is not None:
            c[1].close()


asyncio.run(main())
