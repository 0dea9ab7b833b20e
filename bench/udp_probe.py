#!/usr/bin/env python3
"""UDP ping-pong for the benchmark: `echo PORT` answers every datagram with itself; `ping PORT N`
sends N small datagrams one at a time, each after the answer to the previous one, and prints
the round-trip p50, p99 and max in ms and the datagrams that got no answer (1 s each), as JSON.
"""
import json
import socket
import sys
import time


def echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


def ping(port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.settimeout(1.0)
    rtts, lost = [], 0
    # A few unmeasured rounds first: the tunnel opens its session for this peer on the first one.
    for i in range(-20, n):
        msg = i.to_bytes(8, "big", signed=True) + b"x" * 24
        t = time.perf_counter()
        s.send(msg)
        try:
            while s.recv(2048) != msg:
                pass  # a late answer to an earlier datagram
        except socket.timeout:
            lost += i >= 0
            continue
        if i >= 0:
            rtts.append((time.perf_counter() - t) * 1000)
    rtts.sort()
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] if rtts else float("nan")
    print(json.dumps({"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": pick(1.0), "lost": lost}))


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        ping(int(sys.argv[2]), int(sys.argv[3]))
