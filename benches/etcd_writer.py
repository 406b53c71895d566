#!/usr/bin/env python3
"""Puts one key to etcd every --every seconds until killed, over one kept-alive connection to etcd's JSON
gateway, so the writer costs a small fraction of a core (a process per put cannot keep a 10 ms pace).

    benches/etcd_writer.py --etcd http://127.0.0.1:19105 --key /vulcand/frontends/all/frontend \
        --value '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)","Priority":%d}' [--every 0.01]

`%d` in the value is replaced by 0 and 1 in turn, so every put changes the value. Prints the number of puts
on exit (SIGTERM or SIGINT).
"""
import argparse
import base64
import http.client
import json
import signal
import sys
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--etcd", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--value", required=True)
    p.add_argument("--every", type=float, default=0.01)
    a = p.parse_args()
    url = urllib.parse.urlparse(a.etcd)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    key = base64.b64encode(a.key.encode()).decode()
    puts = 0

    def stop(*_):
        print(f"puts={puts}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_at = time.monotonic()
    while True:
        value = base64.b64encode((a.value.replace("%d", str(puts % 2))).encode()).decode()
        conn.request("POST", "/v3/kv/put", body=json.dumps({"key": key, "value": value}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"put failed: {resp.status} {body[:200]!r}")
        puts += 1
        # A fixed pace, not a fixed sleep: a slow put does not stretch the interval after it.
        next_at += a.every
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


if __name__ == "__main__":
    main()
