#!/usr/bin/env python3
"""Profile-guided function layout for the release binaries.

Runs the release `rustunnel-server` and `rustunnel` under valgrind's callgrind through what a user
does with them (dev server with API and HTTPS edge, one client with TLS data connections and one
with plain ones, HTTP/HTTPS/TCP/UDP tunnels, the API, a few idle heartbeats, a graceful stop) and
writes the functions that ran, in three groups, to `crates/rustunnel-server/link.order` and
`crates/rustunnel-cli/link.order`:

  1. start-up and idle (what an idle server and client keep mapped), hottest first;
  2. traffic (requests, streams, datagrams, API), hottest first;
  3. shutdown.

The release build passes these files to the linker (see build-support/release_link.rs), so the code
an idle process runs sits together at the front of the text instead of being spread over it.
Symbols are stable across edits of function bodies; rerun this after dependency or toolchain
upgrades, or when the idle figure in docs/benchmarks.md creeps up.

Usage: bench/link-order.sh (builds the release binaries, runs this, rebuilds).
"""
import argparse
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[link-order] {msg}", file=sys.stderr, flush=True)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(path, pred, timeout, proc):
    end = time.time() + timeout
    while time.time() < end:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        hits = [l for l in lines if pred(l)]
        if hits:
            return hits
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early, see {path}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting in {path}")


def callgrind(out_file, args, work, name):
    vg = ["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no", "--compress-strings=no",
          "--compress-pos=no", f"--callgrind-out-file={out_file}"]
    out = open(os.path.join(work, name + ".out"), "wb")
    err = open(os.path.join(work, name + ".log"), "wb")
    p = subprocess.Popen(vg + args, stdout=out, stderr=err, cwd=work)
    p.out_path = out.name
    return p


def dump(proc):
    """Closes the current profile part of a process running under callgrind."""
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def serve_local(work):
    """An HTTP server, a TCP echo and a UDP echo for the tunnels to reach."""
    http_port, echo_port, udp_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    code = f"""
import socket, threading, http.server, socketserver
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
threading.Thread(target=http.server.ThreadingHTTPServer(("127.0.0.1", {http_port}), H).serve_forever, daemon=True).start()
class E(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            b = self.request.recv(65536)
            if not b: return
            self.request.sendall(b)
threading.Thread(target=socketserver.ThreadingTCPServer(("127.0.0.1", {echo_port}), E).serve_forever, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", {udp_port}))
while True:
    d, a = u.recvfrom(65536); u.sendto(d, a)
"""
    p = subprocess.Popen([sys.executable, "-c", code], cwd=work)
    return p, http_port, echo_port, udp_port


def traffic(urls, http_port, https_port, api_port, admin_token, subdomain):
    host = f"{subdomain}.localhost"
    for _ in range(3):
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}", f"http://127.0.0.1:{http_port}/"], check=True)
    subprocess.run(["curl", "-sk", "-o", "/dev/null", "--resolve", f"{host}:{https_port}:127.0.0.1",
                    f"https://{host}:{https_port}/"], check=True)
    subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "--resolve", f"{host}:{https_port}:127.0.0.1",
                    f"https://{host}:{https_port}/"], check=True)
    for name, url in urls.items():
        port = int(url.rsplit(":", 1)[1])
        if url.startswith("tcp://"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                payload = os.urandom(256 * 1024)
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got += s.recv(65536)
        elif url.startswith("udp://"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(30)
                for i in range(5):
                    u.sendto(b"ping %d" % i, ("127.0.0.1", port))
                    u.recvfrom(65536)
    for path in ["/api/status", "/api/tunnels", "/api/history", "/api/openapi.json", "/metrics"]:
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}",
                                     headers={"Authorization": f"Bearer {admin_token}"})
        urllib.request.urlopen(req, timeout=60).read()


def functions(path, binary):
    """Functions of `binary` in one callgrind part, with their cost."""
    cost = collections.Counter()
    ob = fn = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("fn="):
                name = line[3:].strip().split("'")[0]
                # valgrind's pseudo-functions ("(below main)") and unnamed code ("0x...") are no symbols
                symbol = not name.startswith(("0x", "(")) and " " not in name
                fn = name if ob and os.path.basename(ob) == binary and symbol else None
                if fn:
                    cost[fn] += 0
            elif fn and line[:1].isdigit():
                parts = line.split()
                if len(parts) >= 2:
                    cost[fn] += int(parts[1])
    return cost


def parts(prefix):
    """callgrind writes `prefix.1`, `prefix.2`, ... for dumps and `prefix` for the rest at exit."""
    d, base = os.path.dirname(prefix), os.path.basename(prefix)
    numbered = sorted((int(n.rsplit(".", 1)[1]), os.path.join(d, n)) for n in os.listdir(d)
                      if n.startswith(base + ".") and n.rsplit(".", 1)[1].isdigit())
    return [p for _, p in numbered] + ([prefix] if os.path.exists(prefix) else [])


def order(groups):
    seen, out = set(), []
    for group in groups:
        for name, _ in sorted(group.items(), key=lambda kv: (-kv[1], kv[0])):
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


def merge(counters):
    total = collections.Counter()
    for c in counters:
        total.update(c)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("RUSTUNNEL_BIN", os.path.join(ROOT, "target", "release")))
    ap.add_argument("--idle", type=float, default=25.0, help="seconds of idle heartbeats to record")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for tool in ["valgrind", "callgrind_control", "curl"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install valgrind curl)")

    work = tempfile.mkdtemp(prefix="rustunnel-link-order-")
    procs = []
    try:
        local, http_local, echo_local, udp_local = serve_local(work)
        procs.append(local)
        control, api, http, https = free_port(), free_port(), free_port(), free_port()
        lo = free_port()
        ports = f"{lo}-{lo + 9}" if lo + 9 < 65536 else "40000-40009"
        server = callgrind(os.path.join(work, "server.cg"), [
            os.path.join(args.bin, "rustunnel-server"), "--dev", "--data-dir", os.path.join(work, "data"),
            "--control-addr", f"127.0.0.1:{control}", "--api-addr", f"127.0.0.1:{api}",
            "--http-addr", f"127.0.0.1:{http}", "--https-addr", f"127.0.0.1:{https}",
            "--tcp-ports", ports, "--udp-ports", ports, "--allow-plain-data"], work, "server")
        procs.append(server)
        wait_for(server.out_path, lambda l: b"ready" in l, 300, server)
        admin = open(os.path.join(work, "data", "admin-token")).read().strip()
        log("server ready")

        clients, urls = [], {}
        for name, plain in [("client-tls", False), ("client-plain", True)]:
            conf = os.path.join(work, name + ".toml")
            with open(conf, "w") as f:
                f.write(f'server = "127.0.0.1:{control}"\ninsecure = true\ntoken = "{admin}"\n'
                        f'plain_data = {str(plain).lower()}\n')
                for tname, proto, port in [("web", "http", http_local), ("echo", "tcp", echo_local),
                                           ("dgram", "udp", udp_local)]:
                    f.write(f'[tunnels.{tname}]\nprotocol = "{proto}"\nlocal_port = {port}\nlocal_host = "127.0.0.1"\n')
                    if proto == "http":
                        f.write(f'subdomain = "{name}"\n')
            c = callgrind(os.path.join(work, name + ".cg"), [os.path.join(args.bin, "rustunnel"), "start",
                                                             "--config", conf, "--json"], work, name)
            procs.append(c)
            clients.append(c)
            ready = wait_for(c.out_path, lambda l: b'"tunnel_ready"' in l, 300, c)
            while len(ready) < 3:
                time.sleep(0.5)
                ready = wait_for(c.out_path, lambda l: b'"tunnel_ready"' in l, 300, c)
            urls[name] = {json.loads(l)["name"]: json.loads(l)["public_url"] for l in ready}
            log(f"{name} ready: {urls[name]}")

        log(f"idle for {args.idle:.0f} s")
        time.sleep(args.idle)
        for p in [server] + clients:
            dump(p)  # part 1: start-up and idle

        for name in urls:
            traffic(urls[name], http, https, api, admin, name)
        log("traffic done")
        for p in [server] + clients:
            dump(p)  # part 2: traffic

        for c in clients:
            c.send_signal(signal.SIGINT)
        for c in clients:
            c.wait(timeout=120)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)

        for binary, prefixes, crate in [
            ("rustunnel-server", [os.path.join(work, "server.cg")], "rustunnel-server"),
            ("rustunnel", [os.path.join(work, n + ".cg") for n in ("client-tls", "client-plain")], "rustunnel-cli"),
        ]:
            per_part = [[functions(p, binary) for p in parts(prefix)] for prefix in prefixes]
            groups = [merge(ps[i] for ps in per_part if i < len(ps)) for i in range(3)]
            names = order(groups)
            out = os.path.join(ROOT, "crates", crate, "link.order")
            with open(out, "w") as f:
                f.write("\n".join(names) + "\n")
            log(f"{out}: {len(names)} functions ({', '.join(str(len(g)) for g in groups)} per part)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
