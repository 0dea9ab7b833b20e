//! Network-namespace labs for the tests that drive the real binaries across links they build
//! (`p2p_netns.rs`, `impaired_netns.rs`): running `ip`/`nft`, deciding when to skip, spawning
//! processes inside a namespace and reading their output. Each lab deletes its namespaces (and
//! so every link and address in them) and kills its processes on drop, also on failure.
#![allow(dead_code)]
pub mod scripted;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "netns-admin-token-0123456789";

pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}", args, String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn ns_exec(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

pub fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    c.stdin.take().ok_or("stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name prefix no other lab of this process or another one uses.
pub fn unique_tag() -> String {
    format!("rt{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

/// Prints "skipped: <reason>" and returns true when a lab cannot run here: not root, a missing
/// tool, device file or binary.
pub fn skipped(tools: &[&str], files: &[&str]) -> bool {
    let why = skip_reason(tools)
        .or_else(|| files.iter().find(|f| !std::path::Path::new(f).exists()).map(|f| format!("no {f}")));
    if let Some(why) = &why {
        println!("skipped: {why}");
    }
    why.is_some()
}

/// Why these tests cannot run here (not root, a missing tool or binary), or `None`.
fn skip_reason(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in tools {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("`{tool}` not installed"));
        }
    }
    let probe = format!("{}probe", unique_tag());
    if run(&["ip", "netns", "add", &probe]).is_err() {
        return Some("`ip netns add` is not permitted here".into());
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    for b in ["rustunnel-server", "rustunnel"] {
        if !bin(b).exists() {
            return Some(format!("{} not built (cargo build -p rustunnel-server -p rustunnel-cli)", bin(b).display()));
        }
    }
    None
}

/// `target/<profile>/<name>`, next to this test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(|d| d.parent()).map(PathBuf::from).unwrap_or_default();
    dir.join(name)
}

/// Namespaces and the processes running in them; all removed on drop.
pub struct Lab {
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
    /// Each child's stdout lines not read yet, once [`Lab::wait_line`] started reading them.
    lines: Vec<Option<mpsc::Receiver<String>>>,
    pub data_dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Lab {
    pub fn new() -> Result<Lab, String> {
        Ok(Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
            lines: Vec::new(),
            data_dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        })
    }

    /// A new namespace with its loopback up.
    pub fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ns_exec(name, &["ip", "link", "set", "lo", "up"])
    }

    /// Starts `program` (in `ns`, or here with `None`), its output piped; returns its index.
    pub fn spawn(
        &mut self,
        ns: Option<&str>,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<usize, String> {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        let child = c.spawn().map_err(|e| format!("spawn {program}: {e}"))?;
        self.children.push(child);
        self.lines.push(None);
        Ok(self.children.len() - 1)
    }

    /// Runs this test binary inside `ns` as the helper role `mode` (see each file's `helper`).
    pub fn helper(&mut self, ns: &str, env: &str, mode: &str) -> Result<usize, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?.to_string_lossy().to_string();
        self.spawn(Some(ns), &exe, &["--exact", "helper", "--nocapture", "--test-threads=1"], &[(env, mode)])
    }

    /// `rustunnel-server` in `ns` with the lab's data directory, the admin token and `args`.
    pub fn server(&mut self, ns: &str, args: &[&str]) -> Result<usize, String> {
        let dir = self.data_dir.path().to_string_lossy().to_string();
        let server = bin("rustunnel-server").to_string_lossy().to_string();
        let mut all = vec!["--admin-token", TOKEN, "--data-dir", &dir];
        all.extend_from_slice(args);
        self.spawn(Some(ns), &server, &all, &[])
    }

    /// Reads the child's next stdout lines until one contains `want` (returned), or the
    /// deadline; later calls go on from there. A leading '^' anchors the match at the start of
    /// the line. The child's output is read all along, so it never blocks on a full pipe.
    pub fn wait_line(&mut self, idx: usize, want: &str, deadline: Duration) -> Result<String, String> {
        if self.lines[idx].is_none() {
            let out = self.children[idx].stdout.take().ok_or("stdout taken")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            self.lines[idx] = Some(rx);
        }
        let rx = self.lines[idx].as_ref().ok_or("no output")?;
        let end = Instant::now() + deadline;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if want.strip_prefix('^').map_or(line.contains(want), |w| line.starts_with(w)) => {
                    return Ok(line);
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.children[idx].stderr.take() {
            let _ = self.children[idx].kill();
            let _ = e.read_to_string(&mut err);
        }
        Err(format!("no line with {want:?}; stdout: {seen:?}; stderr: {err}"))
    }

    pub fn wait_exit(&mut self, idx: usize, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.children[idx].try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The role (and its argument) this test binary was re-executed to play inside a namespace
/// (`env` set to `role:arg`, see [`Lab::helper`]); the roles both files share are played here
/// and give `None`, as does a normal test run.
pub fn helper_role(env: &str) -> Option<(String, String)> {
    let mode = std::env::var(env).ok()?;
    let (role, arg) = mode.split_once(':').unwrap_or((&mode, ""));
    match role {
        "echo" => roles::echo(arg),
        "client" => roles::echo_client(arg),
        _ => return Some((role.to_string(), arg.to_string())),
    }
    None
}

/// Helper roles both files' test binaries play inside a namespace.
pub mod roles {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use sha2::{Digest, Sha256};

    /// A TCP echo service on `127.0.0.1:port`, one thread per connection; prints "echo ready".
    pub fn echo(port: &str) {
        let l = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind echo");
        println!("echo ready");
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    }

    /// Sends `len` patterned bytes to `addr` while reading the echo back; prints
    /// "transfer <bytes> hash-ok|hash-mismatch <sha256>".
    pub fn echo_client(rest: &str) {
        let (addr, len) = rest.rsplit_once(':').expect("addr:len");
        let len: usize = len.parse().expect("len");
        let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0]).collect();
        let want = hex::encode(Sha256::digest(&data));
        let s = TcpStream::connect(addr).expect("connect");
        let mut w = s.try_clone().expect("clone");
        let t = std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::with_capacity(len);
        let mut r = s;
        r.set_read_timeout(Some(Duration::from_secs(60))).ok();
        r.read_to_end(&mut got).expect("read");
        t.join().expect("writer");
        let h = hex::encode(Sha256::digest(&got));
        println!("transfer {} {} {}", got.len(), if h == want { "hash-ok" } else { "hash-mismatch" }, h);
    }

    /// One HTTP/1.1 request without a body; prints the raw response.
    pub fn http_get(addr: &str, host: &str, path: &str) {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("write");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        print!("{body}");
    }
}
