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
`delay_relay` of rustunnel-transport; the kernel here has no netem): a long link, for the HTTP
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


TAKEN = set()


def free_range(n):
    """First port of n consecutive ports free on TCP and UDP, below the ephemeral range (so no
    outgoing connection takes one meanwhile), and not handed out before in this run."""
    import random
    for _ in range(1000):
        base = random.randrange(10000, 32000 - n)
        ports = range(base, base + n)
        if TAKEN & set(ports):
            continue
        try:
            for p in ports:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        TAKEN.update(ports)
        return base
    raise RuntimeError(f"no {n} consecutive free ports")


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


UDP_PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp_probe.py")


def start_udp_echo(work):
    port = free_port()
    p = spawn([sys.executable, UDP_PROBE, "echo", str(port)], work, "udp-echo")
    wait_line(p, lambda l: l.startswith(b"ready"))
    return port


def start_nginx_tls(work):
    """nginx terminating TLS itself (HTTP/1.1 and HTTP/2), the reference for the HTTPS edge: an
    ECDSA P-256 certificate like the ones rustunnel's private CA issues, TLS 1.3 only, the
    client's cipher suite order (as rustunnel's edge), one worker per core."""
    tls = os.path.join(work, "nginx-tls")
    os.makedirs(tls, exist_ok=True)
    os.chmod(tls, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", f"{tls}/key.pem", "-out", f"{tls}/cert.pem"], check=True, capture_output=True)
    port = free_port()
    conf = os.path.join(tls, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes auto;
daemon off;
pid {tls}/nginx.pid;
error_log {tls}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 128;
  server {{
    listen 127.0.0.1:{port} ssl http2 backlog=4096;
    ssl_certificate {tls}/cert.pem;
    ssl_certificate_key {tls}/key.pem;
    ssl_protocols TLSv1.3;
    location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
  }}
}}
""")
    spawn(["nginx", "-c", conf, "-p", tls], tls, "nginx-tls")
    wait_port(port)
    return port


# ---------------------------------------------------------------- systems under test

class Direct:
    name = "direct"

    def __init__(self, svc):
        self.svc = svc

    def endpoints(self):
        return {"iperf": link(self.svc["iperf"]), "http": link(self.svc["http"]), "echo": link(self.svc["echo"]),
                "host": None, "iperf_udp": self.svc["iperf"], "udp_echo": self.svc["udp_echo"],
                "conn": link(self.svc["http"]), "https": self.svc.get("https"), "https_host": "localhost"}

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
        self.control, self.http, self.https = free_port(), free_port(), free_port()
        base = free_range(5)
        self.ports = f"{base}-{base + 4}"
        # iperf3 -u keeps its control connection on TCP and sends the datagrams to the same port
        # number: the TCP and UDP tunnels to it share their public port.
        self.remote = {"iperf": base, "iperfu": base, "echo": base + 1, "conn": base + 2, "echou": base + 1}
        self.start_server()
        # All three tunnels in one client process, as `rustunnel start` runs them.
        conf = os.path.join(self.work, "tunnels.toml")
        with open(conf, "w") as f:
            f.write(f'server = "127.0.0.1:{link(self.control, self.work)}"\ninsecure = true\nplain_data = {str(self.plain).lower()}\n')
            tunnels = [("iperf", "tcp", svc["iperf"]), ("echo", "tcp", svc["echo"]), ("http", "http", svc["http"]),
                       ("conn", "tcp", svc["http"]), ("iperfu", "udp", svc["iperf"]), ("echou", "udp", svc["udp_echo"])]
            for name, proto, port in tunnels:
                f.write(f'[tunnels.{name}]\nprotocol = "{proto}"\nlocal_port = {port}\nlocal_host = "127.0.0.1"\n')
                if proto == "http":
                    f.write('subdomain = "bench"\n')
                else:
                    f.write(f'remote_port = {self.remote[name]}\n')
        self.client = spawn([os.path.join(self.bin, "rustunnel"), "start", "--config", conf, "--json"], self.work, "client")
        self.urls = {}
        offset = 0
        while len(self.urls) < len(tunnels):
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
                             "--http-addr", f"127.0.0.1:{self.http}", "--https-addr", f"127.0.0.1:{self.https}",
                             "--tcp-ports", self.ports, "--udp-ports", self.ports]
                            + (["--allow-plain-data"] if self.plain else []),
                            self.work, "server")
        wait_line(self.server, lambda l: b"ready" in l, start=self.out_offset)
        self.server_ready_at = time.time()
        wait_port(self.control)

    def endpoints(self):
        port = lambda u: int(u.rsplit(":", 1)[1])
        host = self.urls["http"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        return {"iperf": port(self.urls["iperf"]), "echo": port(self.urls["echo"]), "http": self.http,
                "host": f"{host}:{self.http}", "iperf_udp": self.remote["iperfu"], "udp_echo": self.remote["echou"],
                "conn": port(self.urls["conn"]), "https": self.https, "https_host": host}

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
        self.bind = {k: free_port() for k in ("iperf", "echo", "http", "conn")}
        # UDP services: iperf3 -u's datagrams go to its control connection's port number.
        self.bind_udp = {"iperfu": self.bind["iperf"], "echou": free_port()}
        local_udp = {"iperfu": svc["iperf"], "echou": svc["udp_echo"]}
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
            for k, p in self.bind_udp.items():
                f.write(f'[server.services.{k}]\ntype = "udp"\nbind_addr = "127.0.0.1:{p}"\n')
        with open(os.path.join(self.work, "client.toml"), "w") as f:
            f.write(f'[client]\nremote_addr = "localhost:{link(self.ctrl, self.work)}"\ndefault_token = "bench-token"\n{transport_c}')
            for k in self.bind:
                local = svc["http" if k == "conn" else k]
                f.write(f'[client.services.{k}]\nlocal_addr = "127.0.0.1:{local}"\nnodelay = true\n')
            for k, p in local_udp.items():
                f.write(f'[client.services.{k}]\ntype = "udp"\nlocal_addr = "127.0.0.1:{p}"\n')
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
        return {"iperf": self.bind["iperf"], "http": self.bind["http"], "echo": self.bind["echo"], "host": None,
                "iperf_udp": self.bind_udp["iperfu"], "udp_echo": self.bind_udp["echou"], "conn": self.bind["conn"],
                "https": None}

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


UDP_LEN = 1200
UDP_MAX_LOSS = 1.0  # percent


def iperf_udp(port, pps, secs):
    """One iperf3 -u run of 1200-byte datagrams offered at pps datagrams/s: (received
    datagrams/s, loss %), from the receiver's count."""
    for _ in range(40):
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-l", str(UDP_LEN),
                              "-b", str(int(pps * UDP_LEN * 8)), "-t", str(secs), "-J"], capture_output=True, text=True)
        # The server finishes the previous test on its own time (its last datagrams may be lost).
        if "server is busy" not in out.stdout:
            break
        time.sleep(0.25)
    try:
        j = json.loads(out.stdout)
        end = j["end"]["sum"]
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"iperf3 -u through port {port}: {out.stdout[-500:]} {out.stderr[-500:]}") from e
    sent, lost = end["packets"], max(0, end["lost_packets"])
    log(f"  iperf3 -u port {port}: offered {pps:,.0f}/s, received {(sent - lost) / end['seconds']:,.0f}/s, "
        f"loss {100.0 * lost / max(1, sent):.1f} %")
    return (sent - lost) / end["seconds"], 100.0 * lost / max(1, sent)


def udp_rate(port, secs, steps):
    """Highest received datagrams/s with at most 1 % loss: one run offered far more than
    loopback carries (its received rate bounds the search), then a bisection of the offered
    rate. Returns (datagrams/s at <= 1 % loss, datagrams/s received and loss % when flooded)."""
    flood_pps, flood_loss = iperf_udp(port, 2_000_000, secs)
    if flood_loss <= UDP_MAX_LOSS:
        return flood_pps, flood_pps, flood_loss
    lo, hi, best = 0.0, flood_pps * 1.2, 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        got, loss = iperf_udp(port, mid, secs)
        if loss <= UDP_MAX_LOSS:
            lo, best = mid, max(best, got)
        else:
            hi = mid
    return best, flood_pps, flood_loss


def udp_ping(port, n):
    out = subprocess.run([sys.executable, UDP_PROBE, "ping", str(port), str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def cpu_ticks(pids):
    """utime + stime of the processes (all threads), in clock ticks."""
    total = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def wrk_count(out, what):
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"wrk ({what}) printed no result:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        raise RuntimeError(f"wrk ({what}) got {bad.group(1)} non-2xx responses:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        log(f"wrk ({what}): {errors.group(0)}")
    return int(m.group(1)), float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def conn_rate(port, secs, pids):
    """New TCP connections per second: wrk with `Connection: close`, so each request (a small
    HTTP exchange with nginx behind the tunnel) is a fresh connection, 50 in parallel. Also the
    CPU time of the tunnel's processes per connection, in microseconds."""
    before = cpu_ticks(pids)
    out = subprocess.run(["wrk", "-t2", "-c50", f"-d{secs}s", "-H", "Connection: close",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    ticks = cpu_ticks(pids) - before
    n, rate = wrk_count(out, f"new connections through port {port}")
    return rate, ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, n) if pids else float("nan")


def https_wrk(port, host, secs):
    """Small HTTPS responses over 50 kept-alive connections (wrk), requests/s."""
    out = subprocess.run(["wrk", "-t2", "-c50", f"-d{secs}s", "-H", f"Host: {host}", f"https://127.0.0.1:{port}/"],
                         capture_output=True, text=True).stdout
    return wrk_count(out, f"https to port {port}")[1]


def tls_resumed(port, host, secs):
    """New TLS connections per second, one request each (`Connection: close`), 50 in parallel:
    h2load --h1, which resumes the TLS 1.3 session it got on its first connection (as a returning
    browser does). A fixed count of requests (h2load's -D never ends when every connection is
    closed by the server); about secs seconds at 3000/s."""
    n = 3000 * secs
    out = subprocess.run(["h2load", "--h1", "-t2", "-c50", "-n", str(n), "-H", "Connection: close",
                          "--connect-to", f"127.0.0.1:{port}", f"https://{host}:{port}/"],
                         capture_output=True, text=True, timeout=60 + secs * 10).stdout
    return h2load_rate(out, port)


def tls_full(port, secs, procs=4):
    """Full TLS handshakes per second (no session resumed, no request): procs `openssl s_time
    -new` in parallel, each one handshake at a time."""
    ps = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(secs)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(procs)]
    total = 0.0
    for p in ps:
        out = p.communicate(timeout=secs + 60)[0]
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if not m:
            raise RuntimeError(f"openssl s_time to port {port} printed no result:\n{out}")
        total += int(m.group(1)) / max(1, int(m.group(2)))
    return total


def h2load_rate(out, port):
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if not m or not done:
        raise RuntimeError(f"h2load to port {port} printed no result:\n{out}")
    if int(done.group(3)) or int(done.group(1)) == 0:
        raise RuntimeError(f"h2load to port {port}: {done.group(3)} of {done.group(1)} requests failed:\n{out}")
    return float(m.group(1))


def h2load(port, host, secs):
    """HTTP/2 over TLS: 50 connections of 10 concurrent streams each (h2load), requests/s."""
    out = subprocess.run(["h2load", "-t2", "-c50", "-m10", "-D", str(secs), "--warm-up-time=1",
                          "--connect-to", f"127.0.0.1:{port}", f"https://{host}:{port}/"],
                         capture_output=True, text=True, timeout=60 + secs * 10).stdout
    return h2load_rate(out, port)


def tls_params(port, host):
    """The TLS version, cipher suite, key exchange group and certificate key of a server."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host, "-brief"],
                         input="", capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    pick = lambda pat: (re.search(pat, text) or [None, "?"])[1].strip()
    return {"protocol": pick(r"Protocol version: (.*)"), "cipher": pick(r"Ciphersuite: (.*)"),
            "group": pick(r"(?:Negotiated TLS1.3 group|Server Temp Key): (.*)"),
            "cert": pick(r"Peer public key type: (.*)") if "Peer public key" in text else pick(r"Signature type: (.*)")}


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
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


# The parts of the default run, and the heavier ones that run only when asked for by --only.
PARTS = ["tcp", "http", "download", "latency", "udp", "conn-rate", "https-edge", "h2"]
HEAVY = ["tunnels"]
SERIES = ["tcp_gbps", "http_rps", "download_gbps", "p50_ms", "p99_ms", "max_ms", "udp_pps", "udp_flood_pps",
          "udp_flood_loss", "udp_p50_ms", "udp_p99_ms", "udp_ping_lost", "conn_per_s", "cpu_us_per_conn",
          "https_rps", "tls_hs_per_s", "tls_full_per_s", "h2_rps"]


def systems_of(results):
    return [n for n, r in results.items() if isinstance(r, dict) and n != "tunnels"]


def many_tunnels(args, work):
    """Many tunnels on one server: --tunnel-clients clients of --tunnels-per-client HTTP
    tunnels each (config files, one `rustunnel start` each), started in waves of 50 clients
    (the server admits 64 unauthenticated connections per source address). Server RSS growth
    per tunnel, tunnels opened per second from the first client's start to the last tunnel
    ready, then the idle server's CPU over --idle-secs with the default heartbeats."""
    w = os.path.join(work, "tunnels")
    os.makedirs(w, exist_ok=True)
    control, http = free_port(), free_port()
    server = spawn([os.path.join(BIN, "rustunnel-server"), "--dev", "--data-dir", os.path.join(w, "data"),
                    "--control-addr", f"127.0.0.1:{control}", "--api-addr", "off", "--http-addr", f"127.0.0.1:{http}",
                    "--https-addr", "off", "--p2p-udp-addr", "off"], w, "server")
    wait_line(server, lambda l: b"ready" in l)
    wait_port(control)
    svc = start_nginx(w)
    time.sleep(1)
    rss0 = rss_kib(server.pid)
    n, per = args.tunnel_clients, args.tunnels_per_client
    clients = []
    t0 = time.time()
    for i in range(n):
        conf = os.path.join(w, f"client{i}.toml")
        with open(conf, "w") as f:
            f.write(f'server = "127.0.0.1:{control}"\ninsecure = true\n')
            for j in range(per):
                f.write(f'[tunnels.t{j}]\nprotocol = "http"\nlocal_port = {svc}\nsubdomain = "c{i}t{j}"\n')
        clients.append(spawn([os.path.join(BIN, "rustunnel"), "start", "--config", conf, "--json"], w, f"client{i}"))
        if len(clients) % 50 == 0 or i == n - 1:
            for c in clients[-50:]:
                off = 0
                for _ in range(per):
                    line, off = wait_line(c, lambda l: b'"tunnel_ready"' in l or b'"fatal":true' in l, 120, off)
                    if b'"fatal":true' in line:
                        raise RuntimeError(line)
    opened_s = time.time() - t0
    time.sleep(2)
    rss1 = rss_kib(server.pid)
    ticks0, t1 = cpu_ticks([server.pid]), time.time()
    time.sleep(args.idle_secs)
    idle = (cpu_ticks([server.pid]) - ticks0) / os.sysconf("SC_CLK_TCK") / (time.time() - t1)
    ok = http_get_ok(http, f"c{n - 1}t{per - 1}.localhost", timeout=5)
    client_rss = sum(rss_kib(c.pid) for c in clients)
    # All told at once: one at a time, their shutdowns would add up to minutes.
    for p in clients + [server]:
        p.send_signal(signal.SIGTERM)
    for p in clients + [server]:
        stop(p)
    return {"tunnels": n * per, "clients": n, "server_kib_per_tunnel": (rss1 - rss0) / (n * per),
            "server_rss_mib": rss1 / 1024, "client_rss_mib_each": client_rss / n / 1024,
            "tunnels_per_s": n * per / opened_s, "idle_server_cpu_pct": idle * 100, "last_tunnel_serves": ok}


def report_heavy(results):
    t = results.get("tunnels")
    if not t:
        return
    print(f"\nMany tunnels: {t['tunnels']:,} HTTP tunnels from {t['clients']} clients on one server "
          f"(last one serving: {t['last_tunnel_serves']}).\n")
    print("| figure | value | target | met |")
    print("|---|---|---|---|")
    rows = [("server RSS per tunnel KiB", t["server_kib_per_tunnel"], "<= 8", t["server_kib_per_tunnel"] <= 8),
            ("tunnels opened per s", t["tunnels_per_s"], ">= 2000", t["tunnels_per_s"] >= 2000),
            ("idle server CPU % of one core", t["idle_server_cpu_pct"], "< 2", t["idle_server_cpu_pct"] < 2),
            ("server RSS MiB", t["server_rss_mib"], "-", None), ("client RSS MiB each", t["client_rss_mib_each"], "-", None)]
    for name, v, target, met in rows:
        print(f"| {name} | {v:,.1f} | {target} | {'-' if met is None else ('yes' if met else 'NO')} |")


def report_parts(results, runs):
    names = systems_of(results)
    has = lambda key: any(results[n].get(key) for n in names)
    if not any(has(k) for k in ("udp_pps", "conn_per_s", "https_rps", "h2_rps")):
        return report_heavy(results)
    m = lambda n, k: median(results[n].get(k, [])) if n in results else float("nan")
    d = "direct"
    print(f"\nMedians of {runs} runs. UDP: iperf3 -u, {UDP_LEN}-byte datagrams, highest received rate with "
          f"<= {UDP_MAX_LOSS:g} % loss; RTT: one 32-byte datagram at a time. New connections: wrk -c50 with "
          f"`Connection: close` through a TCP tunnel to nginx. HTTPS/h2: the direct row is nginx terminating TLS "
          f"itself.\n")
    print("| system | UDP dgram/s | vs direct | flooded: recv dgram/s, loss | UDP RTT p50 ms | p99 ms |"
          " new conn/s | vs direct | CPU us/conn | HTTPS req/s (50 kept) | new TLS conn/s (resumed) |"
          " full handshakes/s | h2 req/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "-" if v != v else format(v, f)
    div = lambda x, y: x / y if y else float("nan")
    for n in names:
        u, c = m(n, "udp_pps"), m(n, "conn_per_s")
        # 0: no rate of the search lost 1 % or less.
        print(f"| {n} | {fmt(u, ',.0f') if u != 0 else 'none'} | {fmt(div(u, m(d, 'udp_pps')), '.0%')} | "
              f"{fmt(m(n, 'udp_flood_pps'), ',.0f')}, {fmt(m(n, 'udp_flood_loss'), '.1f')} % | "
              f"{fmt(m(n, 'udp_p50_ms'), '.3f')} | {fmt(m(n, 'udp_p99_ms'), '.3f')} | {fmt(c, ',.0f')} | "
              f"{fmt(div(c, m(d, 'conn_per_s')), '.0%')} | {fmt(m(n, 'cpu_us_per_conn'), ',.0f')} | "
              f"{fmt(m(n, 'https_rps'), ',.0f')} | {fmt(m(n, 'tls_hs_per_s'), ',.0f')} | "
              f"{fmt(m(n, 'tls_full_per_s'), ',.0f')} | {fmt(m(n, 'h2_rps'), ',.0f')} |")
    for n in names:
        if results[n].get("tls"):
            t = results[n]["tls"]
            who = "nginx" if n == d else n
            print(f"- TLS at the edge of {who}: {t['protocol']}, {t['cipher']}, group {t['group']}, "
                  f"certificate {t['cert']}")

    def paired(a, b, key, op):
        if a not in results or b not in results:
            return float("nan")
        return median([op(x, y) for x, y in zip(results[a].get(key, []), results[b].get(key, []))])

    ratio = lambda x, y: x / y if y else float("nan")
    minus = lambda x, y: x - y
    print("\nAgainst the targets (ratio of the medians; in brackets the median of the per-round ratios):\n")
    print("| figure | ours | reference | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    rows = []
    for ours, theirs in (("rustunnel", "rathole"), ("rustunnel-plain", "rathole-plain")):
        rows += [(f"UDP dgram/s, {ours} / {theirs}", ours, theirs, "udp_pps", ratio, ">=", 1.5),
                 (f"new TCP conn/s, {ours} / {theirs}", ours, theirs, "conn_per_s", ratio, ">=", 2.0),
                 (f"CPU per new conn, {ours} / {theirs}", ours, theirs, "cpu_us_per_conn", ratio, "<=", 0.5)]
    rows += [("UDP dgram/s, rustunnel / direct", "rustunnel", d, "udp_pps", ratio, ">=", 0.5),
             ("UDP RTT p99 ms, rustunnel - direct", "rustunnel", d, "udp_p99_ms", minus, "<=", 0.5),
             ("HTTPS req/s (50 kept-alive), rustunnel / nginx", "rustunnel", d, "https_rps", ratio, ">=", 0.6),
             ("new TLS conn/s (resumed), rustunnel / nginx", "rustunnel", d, "tls_hs_per_s", ratio, ">=", 0.8),
             ("full TLS handshakes/s, rustunnel / nginx", "rustunnel", d, "tls_full_per_s", ratio, ">=", 0.8),
             ("HTTP/2 req/s, rustunnel / nginx", "rustunnel", d, "h2_rps", ratio, ">=", 0.5)]
    if "rustunnel-baseline" in results:
        rows += [(f"{k}, rustunnel / rustunnel-baseline", "rustunnel", "rustunnel-baseline", k, ratio, "", None)
                 for k in ("udp_pps", "conn_per_s", "https_rps", "tls_hs_per_s", "tls_full_per_s", "h2_rps") if has(k)]
    for label, a, b, key, op, cmp, target in rows:
        if a not in results or b not in results or not results[a].get(key) or not results[b].get(key):
            continue
        if key == "udp_pps" and not (m(a, key) and m(b, key)):
            print(f"| {label} | {m(a, key):,.0f} | {m(b, key):,.0f} | - | {'-' if target is None else f'{cmp} {target:g}x'} | ? (a search found "
                  f"no rate with <= {UDP_MAX_LOSS:g} % loss: a busy machine) |")
            continue
        v = op(m(a, key), m(b, key))
        met = "-" if target is None else ("yes" if (v >= target if cmp == ">=" else v <= target) else "NO")
        unit = ".2f" if op is minus else ".2f"
        sfx = "" if op is minus else "x"
        num = lambda v: format(v, ",.0f") if abs(v) >= 100 else format(v, ".3f")
        print(f"| {label} | {num(m(a, key))} | {num(m(b, key))} | {v:{unit}}{sfx} ({paired(a, b, key, op):{unit}}{sfx}) | "
              f"{'-' if target is None else f'{cmp} {target:g}{sfx}'} | {met} |")
    report_heavy(results)


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
    ap.add_argument("--only", choices=list(PARTS) + list(HEAVY), action="append",
                    help="measure only this (repeatable); skips memory and restart figures. The default runs all")
    ap.add_argument("--udp-secs", type=int, default=3, help="seconds of each iperf3 -u run of the UDP search")
    ap.add_argument("--udp-steps", type=int, default=4, help="bisection steps of the UDP rate search")
    ap.add_argument("--pings", type=int, default=2000, help="UDP round trips per latency probe")
    ap.add_argument("--tunnel-clients", type=int, default=200, help="clients of --only tunnels")
    ap.add_argument("--tunnels-per-client", type=int, default=50, help="HTTP tunnels per client of --only tunnels")
    ap.add_argument("--idle-secs", type=int, default=30, help="seconds the idle server's CPU is measured (tunnels)")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        report(results, results.get("runs") or len(results["direct"]["tcp_gbps"]), None)
        return

    work = tempfile.mkdtemp(prefix="rustunnel-bench-")
    LINK["delay_ms"] = args.link_delay
    svc = {"http": start_nginx(work), "iperf": start_iperf(work), "echo": start_echo(work),
           "udp_echo": start_udp_echo(work), "https": start_nginx_tls(work)}
    only = set(args.only or PARTS + HEAVY)
    # First, with its own server, clients and nginx, all stopped before the others start.
    tunnels = None
    if "tunnels" in only:
        log("many tunnels")
        tunnels = many_tunnels(args, work)
    if not only - set(HEAVY):
        results = {"runs": 1, "tunnels": tunnels}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        report_heavy(results)
        return
    systems = [Direct(svc), Rustunnel(svc, work), Rustunnel(svc, work, plain=True)]
    if args.baseline_bin:
        systems.append(Rustunnel(svc, work, bin_dir=args.baseline_bin, name="rustunnel-baseline"))
    if os.path.exists(args.rathole):
        systems += [Rathole(svc, work, args.rathole, tls=True), Rathole(svc, work, args.rathole, tls=False)]
    else:
        log(f"rathole not found at {args.rathole}: comparing with direct only")

    results = {s.name: {k: [] for k in SERIES} for s in systems}
    results["runs"] = args.runs
    if tunnels:
        results["tunnels"] = tunnels
    if only & {"https-edge", "h2"}:
        for s in systems:
            e = s.endpoints()
            if e.get("https"):
                results[s.name]["tls"] = tls_params(e["https"], e["https_host"])
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
            if "udp" in only:
                try:
                    ok, flood, flood_loss = udp_rate(e["iperf_udp"], args.udp_secs, args.udp_steps)
                except RuntimeError as err:
                    # One failed iperf3 run (a peer's UDP tunnel dropping its control
                    # connection) costs this round's figure, not the whole run.
                    log(f"{s.name}: UDP rate not measured this round: {str(err).splitlines()[0]}")
                    ok, flood, flood_loss = float("nan"), float("nan"), float("nan")
                r["udp_pps"].append(ok)
                r["udp_flood_pps"].append(flood)
                r["udp_flood_loss"].append(flood_loss)
                ping = udp_ping(e["udp_echo"], args.pings)
                r["udp_p50_ms"].append(ping["p50_ms"])
                r["udp_p99_ms"].append(ping["p99_ms"])
                r["udp_ping_lost"].append(ping["lost"])
            if "conn-rate" in only:
                rate, cpu = conn_rate(e["conn"], args.secs, s.pids())
                r["conn_per_s"].append(rate)
                r["cpu_us_per_conn"].append(cpu)
            if "https-edge" in only and e.get("https"):
                r["https_rps"].append(https_wrk(e["https"], e["https_host"], args.secs))
                r["tls_hs_per_s"].append(tls_resumed(e["https"], e["https_host"], args.secs))
                r["tls_full_per_s"].append(tls_full(e["https"], args.secs))
            if "h2" in only and e.get("https"):
                r["h2_rps"].append(h2load(e["https"], e["https_host"], args.secs))
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
    if any(results[n].get(k) for n in systems_of(results) for k in ("tcp_gbps", "http_rps", "download_gbps", "p50_ms")):
        report_streams(results, runs, secs)
    report_parts(results, runs)


def report_streams(results, runs, secs):
    d = results["direct"]
    each = f", {secs} s each" if secs else ""
    delay = results.get("link_delay_ms", 0)
    where = f"loopback with {delay} ms added each way between tunnel clients and servers" if delay else "loopback"
    print(f"\nMedians of {runs} runs{each}, {os.cpu_count()} cores, {where}.\n")
    print("| system | TCP Gbit/s | vs direct | HTTP req/s (50 conns) | vs direct | HTTP download Gbit/s |"
          " serial p50 ms | p99 ms | max ms | idle RSS MiB | KiB/held conn | restart recovery s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in systems_of(results):
        r = results[name]
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
    # Idle memory is a comparison, not an absolute figure: server plus client at rest, against the
    # peer with the same encryption, both measured fresh in this run.
    for ours, theirs in (("rustunnel", "rathole"), ("rustunnel-plain", "rathole-plain")):
        a, b = results.get(ours, {}).get("idle_rss_mib"), results.get(theirs, {}).get("idle_rss_mib")
        if a and b:
            print(f"idle RSS, server + client, {ours} / {theirs}: {a:.1f} / {b:.1f} MiB = {a / b:.2f}x "
                  f"(target <= 1.00x: {'met' if a <= b else 'NOT met'})")
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
    for name in systems_of(results):
        if name == "direct":
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
