//! `integrations/install.sh` against a temporary HOME with every supported host present, a
//! fake `claude` CLI on PATH, and pre-existing configuration that must survive. No cargo run
//! (`--skip-build --bin`), no network.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integrations/install.sh")
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn run(home: &Path, fakebin: &Path, extra: &[&str], token: Option<&str>) -> String {
    let mut c = Command::new("bash");
    c.arg(script())
        .args(["--skip-build", "--bin", "/opt/rt/bin/rustunnel-mcp", "--server", "tunnel.example.com:4040"])
        .args(["--api", "https://tunnel.example.com:4041"])
        .args(extra)
        .env_clear()
        .env("HOME", home)
        .env("PATH", format!("{}:/usr/bin:/bin", fakebin.display()));
    if let Some(t) = token {
        c.env("RUSTUNNEL_TOKEN", t);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "install.sh failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn install_registers_with_every_host_idempotently() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not available: skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let fakebin = tmp.path().join("bin");
    let claude_log = tmp.path().join("claude.log");
    // A fake `claude` that records its arguments.
    write(&fakebin.join("claude"), &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", claude_log.display()));
    Command::new("chmod").arg("+x").arg(fakebin.join("claude")).status().unwrap();

    // Hosts present, some with existing configuration.
    let desktop = home.join(".config/Claude/claude_desktop_config.json");
    write(&desktop, r#"{"mcpServers": {"other": {"command": "other-mcp"}}, "theme": "dark"}"#);
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    std::fs::create_dir_all(home.join(".codeium/windsurf")).unwrap();
    let cline_dir = home.join(".config/Code/User/globalStorage/saoudrizwan.claude-dev");
    std::fs::create_dir_all(&cline_dir).unwrap();
    let codex = home.join(".codex/config.toml");
    write(&codex, "model = \"o4\"\n\n[mcp_servers.other]\ncommand = \"other\"\n");

    let first = run(&home, &fakebin, &["--insecure"], None);
    assert!(first.contains("Claude Desktop: added rustunnel"), "{first}");
    assert!(first.contains("Cursor: added rustunnel"), "{first}");
    assert!(first.contains("Windsurf: added rustunnel"), "{first}");
    assert!(first.contains("Cline: added rustunnel"), "{first}");
    assert!(first.contains("Codex: wrote [mcp_servers.rustunnel]"), "{first}");
    assert!(first.contains("Claude Code: registered rustunnel"), "{first}");
    assert!(first.contains("token: not written"), "{first}");

    let expected = json!({
        "command": "/opt/rt/bin/rustunnel-mcp",
        "args": ["--server", "tunnel.example.com:4040", "--api", "https://tunnel.example.com:4041", "--insecure"]
    });
    let d = read_json(&desktop);
    assert_eq!(d["mcpServers"]["rustunnel"], expected);
    assert_eq!(d["mcpServers"]["other"]["command"], "other-mcp", "other servers kept");
    assert_eq!(d["theme"], "dark", "other settings kept");
    assert_eq!(read_json(&home.join(".cursor/mcp.json"))["mcpServers"]["rustunnel"], expected);
    assert_eq!(read_json(&home.join(".codeium/windsurf/mcp_config.json"))["mcpServers"]["rustunnel"], expected);
    assert_eq!(read_json(&cline_dir.join("settings/cline_mcp_settings.json"))["mcpServers"]["rustunnel"], expected);
    let toml = std::fs::read_to_string(&codex).unwrap();
    assert!(toml.starts_with("model = \"o4\"\n\n[mcp_servers.other]\ncommand = \"other\"\n"), "{toml}");
    assert!(
        toml.contains("[mcp_servers.rustunnel]\ncommand = \"/opt/rt/bin/rustunnel-mcp\"\nargs = [\"--server\", \"tunnel.example.com:4040\", \"--api\", \"https://tunnel.example.com:4041\", \"--insecure\"]\n"),
        "{toml}"
    );
    let log = std::fs::read_to_string(&claude_log).unwrap();
    assert!(
        log.contains("mcp add --scope user rustunnel -- /opt/rt/bin/rustunnel-mcp --server tunnel.example.com:4040"),
        "{log}"
    );

    // Second run: nothing changes.
    let snapshot = |p: &Path| std::fs::read_to_string(p).unwrap();
    let before = [snapshot(&desktop), snapshot(&codex), snapshot(&home.join(".cursor/mcp.json"))];
    let second = run(&home, &fakebin, &["--insecure"], None);
    assert!(second.contains("Claude Desktop: unchanged rustunnel"), "{second}");
    assert!(second.contains("Codex: unchanged rustunnel"), "{second}");
    assert_eq!(before, [snapshot(&desktop), snapshot(&codex), snapshot(&home.join(".cursor/mcp.json"))]);
    assert_eq!(toml.matches("[mcp_servers.rustunnel]").count(), 1);

    // --with-token writes the token; other changes (no --insecure) update in place.
    let third = run(&home, &fakebin, &["--with-token"], Some("tok123"));
    assert!(third.contains("Cursor: updated rustunnel"), "{third}");
    let c = read_json(&home.join(".cursor/mcp.json"));
    assert_eq!(c["mcpServers"]["rustunnel"]["env"]["RUSTUNNEL_TOKEN"], "tok123");
    assert_eq!(c["mcpServers"]["rustunnel"]["args"].as_array().unwrap().len(), 4);
    let toml = std::fs::read_to_string(&codex).unwrap();
    assert_eq!(toml.matches("[mcp_servers.rustunnel]").count(), 1, "{toml}");
    assert!(toml.contains("env = { RUSTUNNEL_TOKEN = \"tok123\" }"), "{toml}");
    assert!(toml.contains("[mcp_servers.other]"), "{toml}");
}

#[test]
fn install_with_no_hosts_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let empty_bin = tmp.path().join("bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let out = run(&home, &empty_bin, &[], None);
    assert!(out.contains("no MCP host found"), "{out}");
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0, "nothing written to HOME");
}

#[test]
fn plugin_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integrations/claude-code-plugin");
    let plugin = read_json(&root.join(".claude-plugin/plugin.json"));
    assert_eq!(plugin["name"], "rustunnel");
    let mcp = read_json(&root.join(".mcp.json"));
    assert_eq!(mcp["mcpServers"]["rustunnel"]["command"], "rustunnel-mcp");
}
