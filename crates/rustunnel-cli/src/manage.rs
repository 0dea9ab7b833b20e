//! Management commands over the REST API: tokens, tunnels, history, regions; and `--region`
//! resolution for the tunnel commands.
//!
//! Every command takes `--api URL` (env `RUSTUNNEL_API`, default `http://localhost:4041`),
//! `--token` (`RUSTUNNEL_TOKEN`) or `--admin-token` (`RUSTUNNEL_ADMIN_TOKEN`; used when given),
//! and `--json` (the API's JSON answer on stdout instead of a table).
//!
//! `--region auto` measures the TCP connect time to every region's control address (all at
//! once, 2 s timeout each) and takes the fastest; the choice is cached for
//! [`AUTO_REGION_TTL`] in `$XDG_CACHE_HOME/rustunnel/region-auto.json` (or
//! `~/.cache/rustunnel/...`), keyed by the API URL, so back-to-back runs do not re-measure.
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use rustunnel_api_types as api;
use rustunnel_client::api::{encode_path_segment as path_segment, ApiError};
use rustunnel_client::TlsOptions;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tunnels::ConnectArgs;

/// How long a `--region auto` choice is reused.
pub const AUTO_REGION_TTL: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Flags shared by every management command.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Management API URL of the server.
    #[arg(long, env = "RUSTUNNEL_API", default_value = "http://localhost:4041")]
    pub api: String,
    /// Token (acts on its owner's tunnels, history and tokens).
    #[arg(long, env = "RUSTUNNEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Admin token (sees every owner; mints tokens for new owners). Used instead of --token when given.
    #[arg(long, env = "RUSTUNNEL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ManageCommand {
    /// Mint, list and revoke tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List or close open tunnels.
    Tunnels {
        #[command(subcommand)]
        action: TunnelsAction,
    },
    /// Tunnel history, newest first.
    History {
        /// Only this protocol: http, tcp or udp.
        #[arg(long)]
        protocol: Option<String>,
        /// Rows to show (1-200).
        #[arg(long, default_value_t = 25)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Only open tunnels.
        #[arg(long, conflicts_with = "closed")]
        active: bool,
        /// Only closed tunnels.
        #[arg(long)]
        closed: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Regions this server's clients can connect to.
    Regions {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token (shown once). With --admin-token: for a new owner, or --owner ID.
    Create {
        #[arg(long)]
        label: String,
        /// Existing owner to mint for (admin token only).
        #[arg(long)]
        owner: Option<String>,
        /// Only these subdomains: exact names and `prefix*` patterns, comma-separated
        /// (`docs,ci-*`). Left out: any with --admin-token, else the minting token's.
        #[arg(long, value_delimiter = ',')]
        subdomains: Option<Vec<String>>,
        /// Only these TCP/UDP ports: ports and ranges, comma-separated (`20000-20099,20500`).
        #[arg(long, value_delimiter = ',')]
        ports: Option<Vec<String>>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a token: refused from now on; its tunnels close at once.
    Revoke {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TunnelsAction {
    /// List open tunnels.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Close a tunnel: its public URL stops at once and the client does not re-create it.
    Close {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Why a management call failed, with what to do about it.
#[derive(Debug)]
pub enum ManageError {
    /// The `--api` value is not a usable `http://host:port` URL.
    BadUrl(String),
    /// No connection to the API.
    Unreachable { url: String, detail: String },
    /// No answer in time.
    Timeout(String),
    /// The API answered with an error body.
    Api { status: StatusCode, code: String, message: String },
    /// The answer was not what the API documents.
    BadResponse(String),
    /// `--region` could not be resolved.
    Region(String),
}

impl std::fmt::Display for ManageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManageError::BadUrl(u) => {
                write!(f, "invalid --api URL '{u}': expected http://host:port (set --api or RUSTUNNEL_API)")
            }
            ManageError::Unreachable { url, detail } => write!(
                f,
                "cannot reach the management API at {url} ({detail}); is the server running? set --api or RUSTUNNEL_API"
            ),
            ManageError::Timeout(url) => write!(f, "the management API at {url} did not answer in time"),
            ManageError::Api { status, code, message } => {
                write!(f, "{message} ({code}, HTTP {})", status.as_u16())?;
                if *status == StatusCode::UNAUTHORIZED {
                    write!(f, "; pass --token (RUSTUNNEL_TOKEN) or --admin-token (RUSTUNNEL_ADMIN_TOKEN)")?;
                }
                Ok(())
            }
            ManageError::BadResponse(m) => write!(f, "unexpected answer from the management API: {m}"),
            ManageError::Region(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ManageError {}

impl From<ApiError> for ManageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadUrl { url, .. } => ManageError::BadUrl(url),
            ApiError::Unreachable { url, detail } => ManageError::Unreachable { url, detail },
            ApiError::Timeout { url, .. } => ManageError::Timeout(url),
            ApiError::Read { detail, .. } | ApiError::Decode { detail, .. } => ManageError::BadResponse(detail),
            ApiError::Status { status, code, message } => match StatusCode::from_u16(status) {
                Ok(status) if !code.is_empty() => ManageError::Api { status, code, message },
                Ok(status) => ManageError::BadResponse(format!("HTTP {status} without an error body")),
                Err(_) => ManageError::BadResponse(format!("HTTP {status} without an error body")),
            },
        }
    }
}

/// The management API client ([`rustunnel_client::api`]) with the command's token.
pub struct ApiClient {
    inner: rustunnel_client::api::ApiClient,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `base`, which must be an `http://host:port` URL.
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, ManageError> {
        let inner = rustunnel_client::api::ApiClient::new(base, &TlsOptions::default());
        match inner.check() {
            Ok(uri) if uri.scheme_str() == Some("http") => {}
            _ => return Err(ManageError::BadUrl(inner.base().to_string())),
        }
        Ok(ApiClient { inner, token: token.filter(|t| !t.is_empty()) })
    }

    pub fn from_args(a: &ApiArgs) -> Result<ApiClient, ManageError> {
        let token = a.admin_token.clone().filter(|t| !t.is_empty()).or_else(|| a.token.clone());
        Self::new(&a.api, token)
    }

    /// One call; decodes the JSON answer, or the API's error body into [`ManageError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ManageError> {
        Ok(self.inner.call(method, path, self.token.as_deref(), body.as_ref()).await?)
    }
}

/// Runs a management command; returns the exit code (0 ok, 1 failed).
pub async fn run(cmd: ManageCommand) -> i32 {
    match execute(cmd).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn json_out<T: Serialize>(v: &T) -> Result<String, ManageError> {
    serde_json::to_string_pretty(v).map(|s| s + "\n").map_err(|e| ManageError::BadResponse(e.to_string()))
}

/// A list answer: the whole of it as JSON with `--json`, else a table with one `row` per item.
fn listing<T: Serialize, I>(
    json: bool,
    answer: &T,
    items: &[I],
    headers: &[&str],
    empty: &str,
    row: impl Fn(&I) -> Vec<String>,
) -> Result<String, ManageError> {
    if json {
        return json_out(answer);
    }
    Ok(table(headers, items.iter().map(row).collect(), empty))
}

/// Runs a command and returns what to print on stdout.
pub async fn execute(cmd: ManageCommand) -> Result<String, ManageError> {
    match cmd {
        ManageCommand::Token { action: TokenAction::Create { label, owner, subdomains, ports, api: a } } => {
            let c = ApiClient::from_args(&a)?;
            let mut body = serde_json::json!({ "label": label });
            if let Some(o) = owner {
                body["owner_id"] = o.into();
            }
            if let Some(list) = subdomains {
                body["subdomains"] = list.into();
            }
            if let Some(list) = ports {
                body["ports"] = list.into();
            }
            let t: api::CreatedToken = c.call(Method::POST, "/api/tokens", Some(body)).await?;
            if a.json {
                return json_out(&t);
            }
            Ok(format!(
                "{}\n\ncreated token {} (label {}, owner {}; subdomains {}, ports {}).\nIt is shown only this once: store it now.\n",
                t.token,
                t.id,
                t.label,
                t.owner_id,
                list_or_any(&t.subdomains),
                list_or_any(&t.ports)
            ))
        }
        ManageCommand::Token { action: TokenAction::List { api: a } } => {
            let l: api::TokenList = ApiClient::from_args(&a)?.call(Method::GET, "/api/tokens", None).await?;
            let headers = ["ID", "LABEL", "OWNER", "CREATED", "LAST USED", "SUBDOMAINS", "PORTS"];
            listing(a.json, &l, &l.tokens, &headers, "no tokens", |t| {
                vec![
                    t.id.clone(),
                    t.label.clone(),
                    t.owner_id.clone(),
                    t.created_at.clone(),
                    t.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    list_or_any(&t.subdomains),
                    list_or_any(&t.ports),
                ]
            })
        }
        ManageCommand::Token { action: TokenAction::Revoke { id, api: a } } => {
            let c = ApiClient::from_args(&a)?;
            let r: api::RevokedToken =
                c.call(Method::DELETE, &format!("/api/tokens/{}", path_segment(&id)), None).await?;
            if a.json {
                return json_out(&r);
            }
            Ok(format!("revoked token {}; closed {} open tunnel(s)\n", r.id, r.closed_tunnels))
        }
        ManageCommand::Tunnels { action: TunnelsAction::List { api: a } } => {
            let c = ApiClient::from_args(&a)?;
            let l: api::TunnelList = c.call(Method::GET, "/api/tunnels", None).await?;
            let p: api::PoolList = c.call(Method::GET, "/api/pools", None).await?;
            if a.json {
                #[derive(Serialize)]
                struct Listing<'a> {
                    tunnels: &'a [api::Tunnel],
                    pools: &'a [api::Pool],
                }
                return json_out(&Listing { tunnels: &l.tunnels, pools: &p.pools });
            }
            let rows = l
                .tunnels
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.protocol.clone(),
                        t.public_url.clone(),
                        t.local_addr.clone(),
                        t.client_addr.clone(),
                        human_bytes(t.bytes_in),
                        human_bytes(t.bytes_out),
                        if t.protocol == "http" { t.requests } else { t.connections }.to_string(),
                        t.created_at.clone(),
                    ]
                })
                .collect();
            let mut out = table(
                &["ID", "NAME", "PROTO", "PUBLIC URL", "LOCAL", "CLIENT", "IN", "OUT", "REQ/CONN", "CREATED"],
                rows,
                "no open tunnels",
            );
            if !p.pools.is_empty() {
                out.push_str(&format!("\n{}", pools_table(&p.pools)));
            }
            Ok(out)
        }
        ManageCommand::Tunnels { action: TunnelsAction::Close { id, api: a } } => {
            let c = ApiClient::from_args(&a)?;
            let r: api::ClosedTunnel =
                c.call(Method::DELETE, &format!("/api/tunnels/{}", path_segment(&id)), None).await?;
            if a.json {
                return json_out(&r);
            }
            Ok(format!("closed tunnel {}\n", r.id))
        }
        ManageCommand::History { protocol, limit, offset, active, closed, api: a } => {
            let mut q = format!("/api/history?limit={limit}&offset={offset}");
            if let Some(p) = protocol {
                q.push_str(&format!("&protocol={}", path_segment(&p)));
            }
            if active {
                q.push_str("&active=true");
            } else if closed {
                q.push_str("&active=false");
            }
            let l: api::HistoryList = ApiClient::from_args(&a)?.call(Method::GET, &q, None).await?;
            let headers = ["ID", "NAME", "PROTO", "PUBLIC URL", "OPENED", "CLOSED", "REASON", "IN", "OUT"];
            listing(a.json, &l, &l.entries, &headers, "no history", |h| {
                vec![
                    h.id.clone(),
                    h.name.clone(),
                    h.protocol.clone(),
                    h.public_url.clone(),
                    h.opened_at.clone(),
                    h.closed_at.clone().unwrap_or_else(|| "open".into()),
                    h.close_reason.clone().unwrap_or_default(),
                    human_bytes(h.bytes_in),
                    human_bytes(h.bytes_out),
                ]
            })
        }
        ManageCommand::Regions { api: a } => {
            let l: api::RegionList = ApiClient::from_args(&a)?.call(Method::GET, "/api/regions", None).await?;
            listing(a.json, &l, &l.regions, &["ID", "NAME", "LOCATION", "CONTROL", "API"], "no regions", |r| {
                vec![r.id.clone(), r.name.clone(), r.location.clone(), r.control_addr.clone(), r.api_url.clone()]
            })
        }
    }
}

/// The "POOLS" section of `tunnels list`: one row per member, with the pool's health count.
pub fn pools_table(pools: &[api::Pool]) -> String {
    let rows = pools
        .iter()
        .flat_map(|p| {
            p.members.iter().map(move |m| {
                let state = if m.draining {
                    "draining".to_string()
                } else if m.healthy {
                    "healthy".to_string()
                } else {
                    match &m.health_detail {
                        Some(d) => format!("unhealthy ({d})"),
                        None => "unhealthy".to_string(),
                    }
                };
                vec![
                    p.name.clone(),
                    p.protocol.clone(),
                    p.public_url.clone(),
                    format!("{}/{}", p.healthy_members, p.members.len()),
                    m.tunnel_id.clone(),
                    m.local_addr.clone(),
                    state,
                    if p.protocol == "http" { m.requests } else { m.connections }.to_string(),
                ]
            })
        })
        .collect();
    format!(
        "POOLS\n{}",
        table(&["POOL", "PROTO", "PUBLIC URL", "HEALTHY", "MEMBER", "LOCAL", "STATE", "REQ/CONN"], rows, "no pools")
    )
}

/// Left-aligned columns separated by two spaces; `empty` when there are no rows. What the
/// server sent is shown, never interpreted by the terminal ([`crate::output::shown`]).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| crate::output::shown(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---- --region ----

/// The control address to dial: `--server`, or the region's when `--region` is given.
pub async fn resolve_server(c: &ConnectArgs) -> Result<String, String> {
    match c.region.as_deref() {
        None => Ok(c.server.clone()),
        Some(r) => resolve_region(&c.api, r).await.map_err(|e| e.to_string()),
    }
}

/// `--region ID` or `--region auto` against the regions listed by the API at `api_url`.
pub async fn resolve_region(api_url: &str, region: &str) -> Result<String, ManageError> {
    let client = ApiClient::new(api_url, None)?;
    if region != "auto" {
        let l: api::RegionList = client.call(Method::GET, "/api/regions", None).await?;
        return l.regions.iter().find(|r| r.id == region).map(|r| r.control_addr.clone()).ok_or_else(|| {
            let ids: Vec<&str> = l.regions.iter().map(|r| r.id.as_str()).collect();
            ManageError::Region(format!("no region '{region}' on this server; known: {} (or 'auto')", ids.join(", ")))
        });
    }
    let cache = cache_path();
    if let Some(hit) = cache.as_deref().and_then(|p| read_cache(p, api_url, now_ms())) {
        tracing::debug!(region = %hit.region, "using cached --region auto choice");
        return Ok(hit.control_addr);
    }
    let l: api::RegionList = client.call(Method::GET, "/api/regions", None).await?;
    let measured = measure(&l.regions).await;
    let best = pick_fastest(&measured).ok_or_else(|| {
        ManageError::Region("--region auto: no region's control address answered; check your network".into())
    })?;
    tracing::info!(region = %best.id, "--region auto picked the lowest-latency region");
    if let Some(p) = cache {
        write_cache(
            &p,
            &AutoCache {
                api: api_url.to_string(),
                region: best.id.clone(),
                control_addr: best.control_addr.clone(),
                at_ms: now_ms(),
            },
        );
    }
    Ok(best.control_addr.clone())
}

/// TCP connect time to each region's control address (`None`: unreachable), measured at once.
pub async fn measure(regions: &[api::Region]) -> Vec<(api::Region, Option<Duration>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in regions.iter().enumerate() {
        let addr = r.control_addr.clone();
        set.spawn(async move {
            let start = Instant::now();
            let ok =
                matches!(tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_)));
            (i, ok.then(|| start.elapsed()))
        });
    }
    let mut out: Vec<(api::Region, Option<Duration>)> = regions.iter().map(|r| (r.clone(), None)).collect();
    while let Some(Ok((i, d))) = set.join_next().await {
        out[i].1 = d;
    }
    out
}

/// The reachable region with the lowest latency (the first listed on ties).
pub fn pick_fastest(measured: &[(api::Region, Option<Duration>)]) -> Option<&api::Region> {
    measured.iter().filter_map(|(r, d)| d.map(|d| (r, d))).min_by_key(|(_, d)| *d).map(|(r, _)| r)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AutoCache {
    api: String,
    region: String,
    control_addr: String,
    at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rustunnel").join("region-auto.json"))
}

fn read_cache(path: &std::path::Path, api_url: &str, now: u64) -> Option<AutoCache> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.len() > 4096 {
        return None;
    }
    let c: AutoCache = serde_json::from_str(&text).ok()?;
    (c.api == api_url && now.saturating_sub(c.at_ms) < AUTO_REGION_TTL.as_millis() as u64).then_some(c)
}

/// Best effort: a cache that cannot be written only costs a re-measure next time.
fn write_cache(path: &std::path::Path, c: &AutoCache) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string(c) {
        let _ = std::fs::write(path, text);
    }
}

/// A token's list of rights for people: comma-separated, "any" for no limit, "none" for an
/// empty list (what the server shows for rights it cannot read).
fn list_or_any(list: &Option<Vec<String>>) -> String {
    match list {
        None => "any".into(),
        Some(l) if l.is_empty() => "none".into(),
        Some(l) => l.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: &str) -> api::Region {
        api::Region {
            id: id.into(),
            name: id.into(),
            location: String::new(),
            control_addr: format!("{id}.example:4040"),
            api_url: String::new(),
        }
    }

    #[test]
    fn fastest_reachable_region_wins() {
        let m = vec![
            (region("eu"), Some(Duration::from_millis(30))),
            (region("us"), None),
            (region("ap"), Some(Duration::from_millis(12))),
        ];
        assert_eq!(pick_fastest(&m).unwrap().id, "ap");
        assert!(pick_fastest(&[(region("eu"), None)]).is_none());
    }

    #[test]
    fn cache_is_keyed_by_api_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/region-auto.json");
        let c = AutoCache { api: "http://a:1".into(), region: "eu".into(), control_addr: "eu:1".into(), at_ms: 1_000 };
        write_cache(&p, &c);
        assert_eq!(read_cache(&p, "http://a:1", 2_000), Some(c.clone()));
        assert_eq!(read_cache(&p, "http://b:1", 2_000), None);
        assert_eq!(read_cache(&p, "http://a:1", 1_000 + AUTO_REGION_TTL.as_millis() as u64), None);
    }

    #[test]
    fn table_cells_cannot_drive_the_terminal() {
        let t = table(&["A"], vec![vec!["red \x1b[31m x\u{202e}y".into()]], "none");
        assert!(!t.contains('\x1b') && !t.contains('\u{202e}'), "{t:?}");
        assert!(t.contains("red \\u{1b}[31m x\\u{202e}y"), "{t:?}");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["ID", "NAME"], vec![vec!["1".into(), "web".into()], vec!["1234".into(), "x".into()]], "none");
        assert_eq!(t, "ID    NAME\n1     web\n1234  x\n");
        assert_eq!(table(&["ID"], vec![], "none"), "none\n");
    }

    #[test]
    fn api_urls_must_be_plain_http() {
        assert!(ApiClient::new("http://localhost:4041/", None).is_ok());
        assert!(matches!(ApiClient::new("localhost:4041", None), Err(ManageError::BadUrl(_))));
        assert!(matches!(ApiClient::new("ftp://x", None), Err(ManageError::BadUrl(_))));
    }

    #[test]
    fn ids_are_encoded_in_paths() {
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("abc-1_2.3~"), "abc-1_2.3~");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
