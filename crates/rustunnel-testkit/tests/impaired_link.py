#!/usr/bin/env python3
"""A bad network link between two TUN devices, for the network-namespace tests.

Creates TUN devices NAME_A and NAME_B (the test then moves each into its namespace) and
forwards every IP packet from one to the other after a random delay: packets sent close
together overtake each other (reordering), some are dropped and some duplicated. The kernel
has no `sch_netem` here, so this stands in for `tc qdisc ... netem delay loss reorder`.

Usage: impaired_link.py NAME_A NAME_B DELAY_MS JITTER_MS LOSS DUP SEED STATS_FILE
Prints "ready" once both devices exist, then runs until killed, rewriting STATS_FILE with the
counts (forwarded, dropped, duplicated, reordered, cut) every half second. SIGUSR1 cuts the
link (every packet dropped, counted as "cut") or restores it.
"""
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    name_a, name_b = sys.argv[1], sys.argv[2]
    delay, jitter, loss, dup = (float(x) for x in sys.argv[3:7])
    rng = random.Random(int(sys.argv[7]))
    stats_file = sys.argv[8]
    a, b = open_tun(name_a), open_tun(name_b)
    other = {a: b, b: a}
    stats = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0, "cut": 0}
    cut = [False]

    def toggle(*_):
        cut[0] = not cut[0]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGUSR1, toggle)
    print("ready", flush=True)
    queue = []  # (due, seq, out fd, packet)
    seq = 0
    last_due = {a: 0.0, b: 0.0}
    next_write = 0.0

    def write_stats():
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(" ".join(f"{k}={v}" for k, v in stats.items()) + "\n")
        os.replace(tmp, stats_file)

    try:
        while True:
            timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
            readable, _, _ = select.select([a, b], [], [], timeout)
            now = time.monotonic()
            for fd in readable:
                for _ in range(256):
                    try:
                        pkt = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if cut[0]:
                        stats["cut"] += 1
                        continue
                    if rng.random() < loss:
                        stats["dropped"] += 1
                        continue
                    copies = 2 if rng.random() < dup else 1
                    stats["duplicated"] += copies - 1
                    for _ in range(copies):
                        due = now + (delay + rng.uniform(0.0, jitter)) / 1000.0
                        if due < last_due[fd]:
                            stats["reordered"] += 1
                        last_due[fd] = max(last_due[fd], due)
                        heapq.heappush(queue, (due, seq, other[fd], pkt))
                        seq += 1
            if now >= next_write:
                write_stats()
                next_write = now + 0.5
            while queue and queue[0][0] <= now:
                _, _, out, pkt = heapq.heappop(queue)
                try:
                    os.write(out, pkt)
                    stats["forwarded"] += 1
                except OSError:
                    pass
    finally:
        write_stats()


if __name__ == "__main__":
    main()
