//! `rustunnel-server demo`: everything on loopback, in one process: a dev server on free ports, a
//! sample page, a tunnel to it, a fetch through the public URL (HTTP and HTTPS), a TCP echo
//! through a TCP tunnel, then a clean shutdown. Each step is printed.
//! `rustunnel-server demo agents` tours the agent channel instead (see [`agents`]).
//! It lives in the server binary so that the `rustunnel` client binary links no server code.
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustunnel_client::{ClientHandle, ClientOptions, Event, TlsOptions, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_server::{Config, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod agents;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Which demo (default: tunnels).
    #[command(subcommand)]
    pub what: Option<DemoWhat>,
}

#[derive(Subcommand, Debug)]
pub enum DemoWhat {
    /// Two AI agents in an end-to-end-encrypted room through a tunnel: join, talk, verify, close.
    Agents,
}

const PAGE: &str = "<!doctype html><title>rustunnel demo</title><h1>Hello through rustunnel</h1>\n";

pub async fn run(a: DemoArgs) -> i32 {
    if let Some(DemoWhat::Agents) = a.what {
        return agents::run().await;
    }
    match demo().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            1
        }
    }
}

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}] {}", text.as_ref());
}

async fn sample_page() -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
                    r.headers_mut().insert("content-type", http::HeaderValue::from_static("text/html"));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    Ok((port, task))
}

async fn echo_service() -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok((port, task))
}

async fn fetch(
    edge: std::net::SocketAddr,
    host: &str,
    tls: Option<&TlsOptions>,
) -> anyhow::Result<(http::StatusCode, String, Duration)> {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(edge).await?;
    let req = http::Request::get("/").header("host", host).body(Empty::<Bytes>::new())?;
    let resp = if let Some(tls) = tls {
        let cfg = rustunnel_client::tls::client_config(tls, &[b"http/1.1"])?;
        let name = rustls_pki_types::ServerName::try_from(host.split(':').next().unwrap_or("localhost").to_string())?;
        let s = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    };
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), started.elapsed()))
}

async fn demo() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerHandle::spawn(Config::ephemeral(dir.path())).await?;
    let http = server.http_addr().ok_or_else(|| anyhow::anyhow!("no HTTP edge"))?;
    let https = server.https_addr().ok_or_else(|| anyhow::anyhow!("no HTTPS edge"))?;
    step(
        1,
        format!(
            "dev server up: control wss://localhost:{}, HTTP edge :{}, HTTPS edge :{}",
            server.control_addr().port(),
            http.port(),
            https.port()
        ),
    );

    let (page_port, page) = sample_page().await?;
    let (echo_port, echo) = echo_service().await?;
    step(2, format!("sample page on http://127.0.0.1:{page_port}, TCP echo on 127.0.0.1:{echo_port}"));

    let mut opts = ClientOptions::new(server.control_addr().to_string(), server.admin_token());
    // The dev server's private CA: certificates are checked, as a user's client would.
    let tls = TlsOptions { insecure: false, ca: Some(server.cert_path().to_path_buf()) };
    opts.tls = tls.clone();
    let mut web = TunnelConfig::new("web", Protocol::Http, page_port);
    web.subdomain = Some("demo".into());
    opts.tunnels = vec![web, TunnelConfig::new("echo", Protocol::Tcp, echo_port)];
    let started = Instant::now();
    let mut client = ClientHandle::spawn(opts);
    let ready = tokio::time::timeout(Duration::from_secs(15), client.wait_ready(2)).await??;
    step(3, format!("tunnels ready in {:.0} ms:", started.elapsed().as_secs_f64() * 1000.0));
    let mut urls = Vec::new();
    for e in &ready {
        if let Event::TunnelReady { name, public_url, public_urls, local_addr, .. } = e {
            println!("      {name:<5} {} -> {local_addr}", public_urls.join("  "));
            urls.push((name.clone(), public_url.clone(), public_urls.clone()));
        }
    }

    let (_, web_url, web_urls) =
        urls.iter().find(|(n, _, _)| n == "web").cloned().ok_or_else(|| anyhow::anyhow!("no web tunnel"))?;
    let host = web_url.trim_start_matches("http://").to_string();
    let (status, body, took) = fetch(http, &host, None).await?;
    step(
        4,
        format!(
            "GET {web_url} -> {status} in {:.1} ms: {}",
            took.as_secs_f64() * 1000.0,
            body.lines().next().unwrap_or("").chars().take(80).collect::<String>()
        ),
    );
    anyhow::ensure!(status == 200 && body == PAGE, "unexpected answer through the HTTP edge");
    if let Some(https_url) = web_urls.iter().find(|u| u.starts_with("https://")) {
        let host = https_url.trim_start_matches("https://");
        let (status, body, took) = fetch(https, host, Some(&tls)).await?;
        step(
            5,
            format!(
                "GET {https_url} -> {status} in {:.1} ms over TLS (verified against the dev server's CA)",
                took.as_secs_f64() * 1000.0
            ),
        );
        anyhow::ensure!(status == 200 && body == PAGE, "unexpected answer through the HTTPS edge");
    }

    let (_, echo_url, _) =
        urls.iter().find(|(n, _, _)| n == "echo").cloned().ok_or_else(|| anyhow::anyhow!("no echo tunnel"))?;
    let port: u16 =
        echo_url.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("bad tcp url"))?;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"ping through rustunnel").await?;
    let mut buf = [0u8; 22];
    s.read_exact(&mut buf).await?;
    step(6, format!("TCP {echo_url}: sent 'ping through rustunnel', got '{}' back", String::from_utf8_lossy(&buf)));

    client.stop().await.ok();
    server.shutdown().await;
    page.abort();
    echo.abort();
    step(7, "tunnels closed, server drained and stopped. Run it for real:");
    println!("      rustunnel-server --dev");
    println!("      rustunnel http 3000 --insecure");
    Ok(())
}
