#!/usr/bin/env python3
"""Side-by-side benchmarks on loopback: direct (no tunnel), rustunnel, and rathole.

Every figure is the median of --runs runs, measured in the same invocation, and reported as a
ratio to direct (and rustunnel/rathole). Encryption: rustunnel always runs TLS between client
and server; rathole runs with its TLS transport too (same encryption), and with plain TCP as a
second reference.

Needs: target/release/{rustunnel-server,rustunnel}, rathole (--rathole or $RATHOLE or PATH),
iperf3, wrk, nginx, openssl. bench/run.sh installs them.

--link-delay MS puts every tunnel client's connections to its server (and the direct runs'
connections to the services) behind a relay that adds MS milliseconds each way (the example
`delay_relay` of rustunnel-proto; the kernel here has no netem): a long link, for the HTTP
download figure (--only download).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RUSTUNNEL_BIN") or os.path.join(ROOT, "target", "release")
PROCS = []
# Relay fronting a port on the simulated long link (identity without --link-delay).
LINK = {"delay_ms": 0, "relays": {}}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open")


def spawn(args, work, name, **kw):
    """Starts a process with stdout and stderr in files (a pipe nobody reads would fill up
    and stall it)."""
    out = open(os.path.join(work, name + ".out"), "ab")
    err = open(os.path.join(work, name + ".log"), "ab")
    p = subprocess.Popen(args, stdout=out, stderr=err, **kw)
    p.out_path = out.name
    PROCS.append(p)
    return p


def wait_line(p, pred, timeout=20.0, start=0):
    """Waits for a stdout line matching pred; returns (line, offset after it)."""
    end = time.time() + timeout
    while time.time() < end:
        with open(p.out_path, "rb") as f:
            f.seek(start)
            for line in f:
                start += len(line)
                if pred(line):
                    return line, start
        if p.poll() is not None:
            raise RuntimeError(f"process exited: {p.args}")
        time.sleep(0.01)
    raise RuntimeError(f"no expected output from {p.args}")


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- local services

def link(port, work=None):
    """The port to use for `port` across the simulated link: itself, or a delay relay's."""
    if not LINK["delay_ms"]:
        return port
    if port not in LINK["relays"]:
        relay = os.environ.get("DELAY_RELAY") or os.path.join(BIN, "examples", "delay_relay")
        front = free_port()
        spawn([relay, f"127.0.0.1:{front}", f"127.0.0.1:{port}", str(LINK["delay_ms"])], work or tempfile.gettempdir(),
              f"relay-{port}")
        wait_port(front)
        LINK["relays"][port] = front
    return LINK["relays"][port]


def start_nginx(work):
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    location = /big.bin {{ root {work}/files; sendfile on; }}
  }}
}}
""")
    # nginx's worker runs unprivileged: it must be able to reach the file.
    os.chmod(work, 0o711)
    os.makedirs(os.path.join(work, "files"), mode=0o755, exist_ok=True)
    with open(os.path.join(work, "files", "big.bin"), "wb") as f:
        f.truncate(DOWNLOAD_BYTES)
    os.chmod(os.path.join(work, "files", "big.bin"), 0o644)
    spawn(["nginx", "-c", conf, "-p", work], work, "nginx")
    wait_port(port)
    return port


def start_iperf(work):
    port = free_port()
    spawn(["iperf3", "-s", "-p", str(port)], work, "iperf3-server")
    wait_port(port)
    return port


ECHO = r"""
import asyncio, sys
async def h(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d: break
            w.write(d); await w.drain()
    except Exception: pass
    w.close()
async def main():
    s = await asyncio.start_server(h, '127.0.0.1', int(sys.argv[1]), backlog=4096)
    async with s: await s.serve_forever()
asyncio.run(main())
"""


def start_echo(work):
    port = free_port()
    spawn([sys.executable, "-c", ECHO, str(port)], work, "echo")
    wait_port(port)
    return port


# ---------------------------------------------------------------- systems under test

class Direct:
    name = "direct"

    def __init__(self, svc):
        self.svc = svc

    def endpoints(self):
        return {"iperf": link(self.svc["iperf"]), "http": link(self.svc["http"]), "echo": link(self.svc["echo"]),
                "host": None}

    def pids(self):
        return []


class Rustunnel:
    """rustunnel with TLS data connections, or (plain=True) with plain data connections
    (`--allow-plain-data` / `--plain-data`: no encryption, splice(2) between sockets)."""

    def __init__(self, svc, work, plain=False, bin_dir=None, name=None):
        self.name = name or ("rustunnel-plain" if plain else "rustunnel")
        self.plain = plain
        self.bin = bin_dir or BIN
        self.svc, self.work = svc, os.path.join(work, self.name)
        os.makedirs(self.work, exist_ok=True)
        self.control, self.http = free_port(), free_port()
        base = 30000 + (os.getpid() % 1000) * 20 + (5 if plain else 0) + (10 if bin_dir else 0)
        self.ports = f"{base}-{base + 4}"
        self.start_server()
        # All three tunnels in one client process, as `rustunnel start` runs them.
        conf = os.path.join(self.work, "tunnels.toml")
        with open(conf, "w") as f:
            f.write(f'server = "127.0.0.1:{link(self.control, self.work)}"\ninsecure = true\nplain_data = {str(self.plain).lower()}\n')
            for name, proto, port in [("iperf", "tcp", svc["iperf"]), ("echo", "tcp", svc["echo"]),
                                      ("http", "http", svc["http"])]:
                f.write(f'[tunnels.{name}]\nprotocol = "{proto}"\nlocal_port = {port}\nlocal_host = "127.0.0.1"\n')
                if proto == "http":
                    f.write('subdomain = "bench"\n')
        self.client = spawn([os.path.join(self.bin, "rustunnel"), "start", "--config", conf, "--json"], self.work, "client")
        self.urls = {}
        offset = 0
        while len(self.urls) < 3:
            line, offset = wait_line(self.client, lambda l: b'"tunnel_ready"' in l or b'"fatal":true' in l, start=offset)
            ev = json.loads(line)
            if ev.get("event") != "tunnel_ready":
                raise RuntimeError(ev)
            self.urls[ev["name"]] = ev["public_url"]

    def start_server(self):
        path = os.path.join(self.work, "server.out")
        self.out_offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.server = spawn([os.path.join(self.bin, "rustunnel-server"), "--dev", "--data-dir", os.path.join(self.work, "data"),
                             "--control-addr", f"127.0.0.1:{self.control}", "--api-addr", "off",
                             "--http-addr", f"127.0.0.1:{self.http}", "--https-addr", "off",
                             "--tcp-ports", self.ports, "--udp-ports", self.ports]
                            + (["--allow-plain-data"] if self.plain else []),
                            self.work, "server")
        wait_line(self.server, lambda l: b"ready" in l, start=self.out_offset)
        self.server_ready_at = time.time()
        wait_port(self.control)

    def endpoints(self):
        port = lambda u: int(u.rsplit(":", 1)[1])
        return {"iperf": port(self.urls["iperf"]), "echo": port(self.urls["echo"]), "http": self.http,
                "host": self.urls["http"].split("://", 1)[1]}

    def pids(self):
        return [self.server.pid, self.client.pid]

    def restart_recovery(self):
        """Seconds from 'server ready again' to the first successful request through the tunnel."""
        stop(self.server, signal.SIGTERM)
        self.start_server()
        return wait_http_ok(self.http, self.endpoints()["host"]) - self.server_ready_at


class Rathole:
    name = "rathole"

    def __init__(self, svc, work, binary, tls=True):
        self.name = "rathole" if tls else "rathole-plain"
        self.svc, self.work, self.binary, self.tls = svc, os.path.join(work, self.name), binary, tls
        os.makedirs(self.work, exist_ok=True)
        self.ctrl = free_port()
        self.bind = {k: free_port() for k in ("iperf", "echo", "http")}
        if tls:
            self.make_cert()
        transport_s = ('[server.transport]\ntype = "tls"\n[server.transport.tcp]\nnodelay = true\n'
                       '[server.transport.tls]\npkcs12 = "identity.pfx"\npkcs12_password = "1234"\n') if tls else \
            '[server.transport]\ntype = "tcp"\n[server.transport.tcp]\nnodelay = true\n'
        transport_c = ('[client.transport]\ntype = "tls"\n[client.transport.tcp]\nnodelay = true\n'
                       '[client.transport.tls]\ntrusted_root = "ca.pem"\nhostname = "localhost"\n') if tls else \
            '[client.transport]\ntype = "tcp"\n[client.transport.tcp]\nnodelay = true\n'
        with open(os.path.join(self.work, "server.toml"), "w") as f:
            f.write(f'[server]\nbind_addr = "127.0.0.1:{self.ctrl}"\ndefault_token = "bench-token"\n{transport_s}')
            for k, p in self.bind.items():
                f.write(f'[server.services.{k}]\nbind_addr = "127.0.0.1:{p}"\nnodelay = true\n')
        with open(os.path.join(self.work, "client.toml"), "w") as f:
            f.write(f'[client]\nremote_addr = "localhost:{link(self.ctrl, self.work)}"\ndefault_token = "bench-token"\n{transport_c}')
            for k in self.bind:
                f.write(f'[client.services.{k}]\nlocal_addr = "127.0.0.1:{svc[k]}"\nnodelay = true\n')
        self.start_server()
        self.client = spawn([self.binary, "--client", "client.toml"], self.work, "client", cwd=self.work)
        wait_http_ok(self.bind["http"], None)

    def start_server(self):
        self.server = spawn([self.binary, "--server", "server.toml"], self.work, "server", cwd=self.work)
        wait_port(self.ctrl)
        self.server_ready_at = time.time()

    def make_cert(self):
        w = self.work
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-keyout", f"{w}/key.pem", "-out", f"{w}/ca.pem"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "pkcs12", "-export", "-out", f"{w}/identity.pfx", "-inkey", f"{w}/key.pem", "-in",
                        f"{w}/ca.pem", "-passout", "pass:1234"], check=True, capture_output=True)

    def endpoints(self):
        return {"iperf": self.bind["iperf"], "http": self.bind["http"], "echo": self.bind["echo"], "host": None}

    def pids(self):
        return [self.server.pid, self.client.pid]

    def restart_recovery(self):
        stop(self.server, signal.SIGTERM)
        self.start_server()
        return wait_http_ok(self.bind["http"], None) - self.server_ready_at


def http_get_ok(port, host, timeout=0.5):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.settimeout(timeout)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host or 'localhost'}\r\nConnection: close\r\n\r\n".encode())
        data = s.recv(64)
        s.close()
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_http_ok(port, host, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        if http_get_ok(port, host):
            return time.time()
        time.sleep(0.01)
    raise RuntimeError(f"no 200 through port {port}")


# ---------------------------------------------------------------- measurements

def iperf(port, secs):
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"], capture_output=True, text=True)
    j = json.loads(out.stdout)
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


DOWNLOAD_BYTES = 1 << 30


def download(port, host):
    """One 1 GiB HTTP download (curl), in Gbit/s."""
    args = ["curl", "-sf", "-o", "/dev/null", "-w", "%{speed_download}"]
    if host:
        args += ["-H", f"Host: {host}"]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}/big.bin"], capture_output=True, text=True, check=True)
    return float(out.stdout) * 8 / 1e9


def wrk(port, host, secs, conns, threads, latency=False):
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s"]
    if host:
        args += ["-H", f"Host: {host}"]
    if latency:
        args.append("--latency")
    out = subprocess.run(args + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # Error pages are fast: a run with any is not a measurement of the tunnel.
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        raise RuntimeError(f"wrk through port {port} (Host {host}) got {bad.group(1)} non-2xx responses:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        log(f"wrk through port {port}: {errors.group(0)}")
    res = {"rps": rps}
    if latency:
        def ms(v):
            n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
            return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
        for pct in ("50", "99"):
            res[f"p{pct}_ms"] = ms(re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+\w+)", out).group(1))
        res["max_ms"] = ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))
    return res


def held_connections(port, n, pids):
    """RSS cost per held connection: open n connections through the tunnel, exchange a byte on
    each so every hop is established, and compare RSS."""
    before = sum(rss_kib(p) for p in pids)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    for s in socks:
        s.sendall(b"x")
    for s in socks:
        s.recv(1)
    time.sleep(0.5)
    after = sum(rss_kib(p) for p in pids)
    for s in socks:
        s.close()
    return (after - before) / n


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--rathole", default=os.environ.get("RATHOLE") or shutil.which("rathole")
                    or os.path.join(ROOT, "bench", ".work", "bin", "rathole"))
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--report", metavar="JSON", help="only print the tables of results saved with --json")
    ap.add_argument("--link-delay", type=int, default=0, metavar="MS",
                    help="add MS ms each way between tunnel clients and servers (and for direct)")
    ap.add_argument("--baseline-bin", metavar="DIR",
                    help="also run rustunnel (TLS) from the binaries in DIR as 'rustunnel-baseline' (A/B of two builds)")
    ap.add_argument("--only", choices=["tcp", "http", "download", "latency"], action="append",
                    help="measure only this (repeatable); skips memory and restart figures")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        report(results, len(results["direct"]["tcp_gbps"]), None)
        return

    work = tempfile.mkdtemp(prefix="rustunnel-bench-")
    LINK["delay_ms"] = args.link_delay
    svc = {"http": start_nginx(work), "iperf": start_iperf(work), "echo": start_echo(work)}
    systems = [Direct(svc), Rustunnel(svc, work), Rustunnel(svc, work, plain=True)]
    if args.baseline_bin:
        systems.append(Rustunnel(svc, work, bin_dir=args.baseline_bin, name="rustunnel-baseline"))
    if os.path.exists(args.rathole):
        systems += [Rathole(svc, work, args.rathole, tls=True), Rathole(svc, work, args.rathole, tls=False)]
    else:
        log(f"rathole not found at {args.rathole}: comparing with direct only")

    results = {s.name: {"tcp_gbps": [], "http_rps": [], "download_gbps": [], "p50_ms": [], "p99_ms": [], "max_ms": []}
               for s in systems}
    only = set(args.only or ["tcp", "http", "download", "latency"])
    for s in systems:
        if s.pids() and not args.only:
            results[s.name]["idle_rss_mib"] = sum(rss_kib(p) for p in s.pids()) / 1024
            # On fresh processes, before any load: afterwards the allocator reuses memory freed
            # by the load phases and the per-connection cost would read as near zero.
            results[s.name]["kib_per_held_conn"] = held_connections(s.endpoints()["echo"], args.held, s.pids())
    for run in range(args.runs):
        for s in systems:
            e = s.endpoints()
            log(f"run {run + 1}/{args.runs}: {s.name}")
            r = results[s.name]
            if "tcp" in only:
                r["tcp_gbps"].append(iperf(e["iperf"], args.secs))
            if "http" in only:
                r["http_rps"].append(wrk(e["http"], e["host"], args.secs, 50, 2)["rps"])
            if "download" in only:
                r["download_gbps"].append(download(e["http"], e["host"]))
            if "latency" in only:
                lat = wrk(e["http"], e["host"], args.secs, 1, 1, latency=True)
                r["p50_ms"].append(lat["p50_ms"])
                r["p99_ms"].append(lat["p99_ms"])
                r["max_ms"].append(lat["max_ms"])
    for s in systems:
        if hasattr(s, "restart_recovery") and not args.only:
            results[s.name]["restart_recovery_s"] = median([s.restart_recovery() for _ in range(args.runs)])

    for p in PROCS:
        stop(p)
    if args.link_delay:
        results["link_delay_ms"] = args.link_delay
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    report(results, args.runs, args.secs)


def report(results, runs, secs):
    d = results["direct"]
    each = f", {secs} s each" if secs else ""
    delay = results.get("link_delay_ms", 0)
    where = f"loopback with {delay} ms added each way between tunnel clients and servers" if delay else "loopback"
    print(f"\nMedians of {runs} runs{each}, {os.cpu_count()} cores, {where}.\n")
    print("| system | TCP Gbit/s | vs direct | HTTP req/s (50 conns) | vs direct | HTTP download Gbit/s |"
          " serial p50 ms | p99 ms | max ms | idle RSS MiB | KiB/held conn | restart recovery s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        t, h = median(r["tcp_gbps"]), median(r["http_rps"])
        print(f"| {name} | {t:.2f} | {t / median(d['tcp_gbps']):.0%} | {h:,.0f} | {h / median(d['http_rps']):.0%} | "
              f"{median(r.get('download_gbps', [])):.2f} | "
              f"{median(r['p50_ms']):.3f} | {median(r['p99_ms']):.3f} | {median(r['max_ms']):.2f} | "
              f"{r.get('idle_rss_mib', 0):.1f} | {r.get('kib_per_held_conn', float('nan')):.1f} | "
              f"{r.get('restart_recovery_s', float('nan')):.2f} |")
    if "rathole" in results:
        rt, rh = results["rustunnel"], results["rathole"]
        print(f"\nrustunnel / rathole (TLS both): TCP {median(rt['tcp_gbps']) / median(rh['tcp_gbps']):.2f}x, "
              f"HTTP {median(rt['http_rps']) / median(rh['http_rps']):.2f}x")
    if "rathole-plain" in results:
        rt, rp = results["rustunnel"], results["rathole-plain"]
        print(f"rustunnel (TLS) / rathole (plain TCP): TCP {median(rt['tcp_gbps']) / median(rp['tcp_gbps']):.2f}x, "
              f"HTTP {median(rt['http_rps']) / median(rp['http_rps']):.2f}x")
        rt = results["rustunnel-plain"]
        print(f"rustunnel (plain) / rathole (plain TCP): TCP {median(rt['tcp_gbps']) / median(rp['tcp_gbps']):.2f}x, "
              f"HTTP {median(rt['http_rps']) / median(rp['http_rps']):.2f}x")

    # The systems take turns within each round, so a round's figures share the machine's state
    # that moment: the median of the per-round ratios is the paired view of the same data.
    def per_round(a, b, key, op):
        return median([op(x, y) for x, y in zip(results[a][key], results[b][key])])

    def ratio(x, y):
        return x / y

    def minus(x, y):
        return x - y

    print("\nPaired by round (median of the per-round figures):")
    for name in results:
        if name == "direct" or not isinstance(results[name], dict):
            continue
        print(f"- {name} vs direct: TCP {per_round(name, 'direct', 'tcp_gbps', ratio):.0%}, "
              f"HTTP {per_round(name, 'direct', 'http_rps', ratio):.0%}, "
              f"p99 +{per_round(name, 'direct', 'p99_ms', minus):.2f} ms")
    for ours, theirs in (("rustunnel", "rathole"), ("rustunnel-plain", "rathole-plain"),
                         ("rustunnel", "rustunnel-baseline")):
        if ours in results and theirs in results:
            print(f"- {ours} / {theirs}: TCP {per_round(ours, theirs, 'tcp_gbps', ratio):.2f}x, "
                  f"HTTP {per_round(ours, theirs, 'http_rps', ratio):.2f}x")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
