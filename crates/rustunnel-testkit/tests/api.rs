//! The management API against a real server and real clients: closing a tunnel and revoking a
//! token take effect at once on the public endpoints and on the clients.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rustunnel_client::{ClientHandle, Event};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;

async fn api(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    json: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut s = http1_conn(addr).await;
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api")
        .header("authorization", format!("Bearer {token}"));
    if json.is_some() {
        b = b.header("content-type", "application/json");
    }
    let resp = s.send_request(b.body(body(json.unwrap_or("").to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn mint(server: &TestServer, label: &str) -> (String, String) {
    let body = format!(r#"{{"label":"{label}"}}"#);
    let (st, v) =
        api(server.handle.api_addr().unwrap(), Method::POST, "/api/tokens", server.handle.admin_token(), Some(&body))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    (v["token"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

/// Nothing matching `pred` arrives within `d`.
async fn quiet(c: &mut rustunnel_client::ClientHandle, pred: impl Fn(&Event) -> bool, d: Duration) {
    let r = tokio::time::timeout(d, async {
        while let Some(e) = c.events.recv().await {
            if pred(&e) {
                return Some(e);
            }
        }
        None
    })
    .await;
    if let Ok(Some(e)) = r {
        panic!("unexpected event {e:?}");
    }
}

/// A client holding `tok` with an HTTP tunnel "web" to an app and a TCP tunnel "db" to an
/// echo; the services live as long as the returned pair.
async fn web_and_db(server: &TestServer, tok: &str) -> (ClientHandle, Ready, Ready, (Service, Service)) {
    let app = http_app("app").await;
    let echo = tcp_echo().await;
    let mut opts = server
        .client_options(vec![tunnel("web", Protocol::Http, app.port()), tunnel("db", Protocol::Tcp, echo.port())]);
    opts.token = tok.to_string();
    let (c, ready) = spawn_ready(opts).await;
    let web = ready.iter().find(|r| r.name == "web").unwrap().clone();
    let db = ready.iter().find(|r| r.name == "db").unwrap().clone();
    (c, web, db, (app, echo))
}

#[tokio::test]
async fn closing_through_the_api_stops_the_url_at_once_and_is_final() {
    let server = TestServer::start().await;
    let api_addr = server.handle.api_addr().unwrap();
    let (tok, _) = mint(&server, "ci").await;
    let (mut c, web, db, _services) = web_and_db(&server, &tok).await;
    assert_eq!(get(server.http_addr(), &web.host(), "/").await.0, StatusCode::OK);

    let started = Instant::now();
    let (st, v) = api(api_addr, Method::DELETE, &format!("/api/tunnels/{}", web.tunnel_id), &tok, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(get(server.http_addr(), &web.host(), "/").await.0, StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_secs(1));
    let e = next_event(&mut c, |e| matches!(e, Event::TunnelClosed { .. }), Duration::from_secs(1)).await;
    assert!(
        matches!(&e, Event::TunnelClosed { name, reason, .. } if name == "web" && reason == "closed_by_api"),
        "{e:?}"
    );
    // Not re-created, and the other tunnel keeps working.
    quiet(&mut c, |e| matches!(e, Event::TunnelReady { .. } | Event::Reconnected { .. }), Duration::from_millis(700))
        .await;
    let (_, list) = api(api_addr, Method::GET, "/api/tunnels", &tok, None).await;
    let ids: Vec<&str> = list["tunnels"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [db.tunnel_id.as_str()]);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", db.port())).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"ping");
    let (_, h) = api(api_addr, Method::GET, "/api/history?active=false", &tok, None).await;
    assert_eq!(h["entries"][0]["id"], web.tunnel_id.as_str());
    assert_eq!(h["entries"][0]["close_reason"], "closed_by_api");
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_and_its_tunnels_close() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let api_addr = server.handle.api_addr().unwrap();
    let (tok, tok_id) = mint(&server, "doomed").await;
    let (other, _) = mint(&server, "other").await;
    let (mut c, web, db, services) = web_and_db(&server, &tok).await;
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", db.port())).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut held, b"x").await.unwrap();
    assert_eq!(read_n(&mut held, 1).await, b"x");

    let (st, v) =
        api(api_addr, Method::DELETE, &format!("/api/tokens/{tok_id}"), server.handle.admin_token(), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["closed_tunnels"], 2);
    // At once: the API refuses the token, the URL is gone, the open TCP connection is cut.
    assert_eq!(api(api_addr, Method::GET, "/api/tunnels", &tok, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(server.http_addr(), &web.host(), "/").await.0, StatusCode::NOT_FOUND);
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read(&mut held, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "held connection closed: {n:?}");
    // The client is told why; with nothing left to serve it stops (or, if it tries to
    // reconnect, is refused as unauthorized), and never re-creates the tunnels.
    let mut closed = Vec::new();
    let fatal = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = c.events.recv().await {
            match e {
                Event::TunnelClosed { name, reason, .. } => closed.push((name, reason)),
                Event::TunnelReady { .. } | Event::Reconnected { .. } => panic!("re-created after revocation: {e:?}"),
                Event::Error { fatal: true, code, .. } => return Some(code),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("client stops in time");
    closed.sort();
    assert_eq!(
        closed,
        [("db".to_string(), "token_revoked".to_string()), ("web".to_string(), "token_revoked".to_string())]
    );
    assert!(fatal.is_none() || fatal.as_deref() == Some("unauthorized"), "{fatal:?}");
    // Connecting again with the revoked token is refused.
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, services.0.port())]);
    opts.token = tok.clone();
    opts.reconnect = false;
    let mut again = rustunnel_client::ClientHandle::spawn(opts);
    let e = next_event(&mut again, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    assert!(matches!(&e, Event::Error { code, fatal: true, .. } if code == "unauthorized"), "{e:?}");
    // Other tokens are untouched.
    assert_eq!(api(api_addr, Method::GET, "/api/tunnels", &other, None).await.0, StatusCode::OK);
}
