//! Route tests without sockets (`Router::oneshot`), against SQLite always and PostgreSQL too
//! when `RUSTUNNEL_TEST_POSTGRES_URL` is set. Tunnels are opened in-process on a session whose
//! control queue the test holds, so what the client would be told is observable.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use rustunnel_proto::control::CloseReason;
use rustunnel_proto::{Protocol, ServerMsg, TunnelInfo};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::router;
use crate::auth::Principal;
use crate::config::Config;
use crate::session::Session;
use crate::state::Shared;
use crate::ServerHandle;

struct Env {
    handle: ServerHandle,
    app: Router,
    _dir: tempfile::TempDir,
}

impl Env {
    fn shared(&self) -> &Arc<Shared> {
        self.handle.shared()
    }
    fn admin(&self) -> String {
        self.handle.admin_token().to_string()
    }
}

async fn env_with(db: Option<&str>, f: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.database_url = db.map(String::from);
    f(&mut config);
    let handle = ServerHandle::spawn(config).await.unwrap();
    let app = router(handle.shared().clone());
    Env { handle, app, _dir: dir }
}

/// One server per backend.
async fn envs() -> Vec<Env> {
    let mut v = vec![env_with(None, |_| {}).await];
    if let Ok(url) = std::env::var("RUSTUNNEL_TEST_POSTGRES_URL") {
        // A region of its own: servers sharing the database only close their own region's
        // orphaned history rows on start, so parallel tests do not disturb each other.
        v.push(env_with(Some(&url), |c| c.region.id = uuid::Uuid::new_v4().to_string()).await);
    }
    v
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
    text: String,
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp { status, headers, json, text }
}

fn req(method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(s) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(s.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Resp {
    send(app, req(method, uri, token, body)).await
}

/// Mints a token for a new owner through the API; returns (raw token, token id, owner id).
async fn mint(e: &Env, label: &str) -> (String, String, String) {
    let r =
        call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&json!({ "label": label }).to_string())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let s = |k: &str| r.json[k].as_str().unwrap().to_string();
    (s("token"), s("id"), s("owner_id"))
}

/// A connected client as the server sees it, with the test holding its control queue.
fn session(shared: &Arc<Shared>, owner: &str, token_id: Option<&str>) -> (Arc<Session>, mpsc::Receiver<ServerMsg>) {
    let (tx, rx) = mpsc::channel(64);
    let p = Principal {
        owner_id: owner.into(),
        token_id: token_id.map(String::from),
        is_admin: false,
        rights: crate::rights::Rights::unrestricted(),
    };
    let s = Arc::new(Session::new(
        uuid::Uuid::new_v4().to_string(),
        p,
        "key".into(),
        "127.0.0.1:40000".parse().unwrap(),
        "test".into(),
        tx,
        shared.hard_stop().child_token(),
    ));
    shared.add_session(s.clone());
    (s, rx)
}

/// Publishes P2P service `name` from `publisher` and opens a (pending) link to it from `visitor`.
fn p2p_link(shared: &Arc<Shared>, owner: &str, publisher: &Session, visitor: &Session, name: &str, link: &str) {
    shared.p2p().with_table(|t| {
        t.publish(owner, &publisher.id, name, Protocol::Tcp).unwrap();
        let now = std::time::Instant::now();
        t.connect(now, owner, &visitor.id, link, name, Protocol::Tcp, "pake".into(), "fp".into(), vec![]).unwrap();
    });
}

async fn open(shared: &Arc<Shared>, s: &Arc<Session>, name: &str, protocol: &str) -> TunnelInfo {
    // Built from JSON so fields other work adds to the spec keep their defaults.
    let spec =
        serde_json::from_value(json!({ "name": name, "protocol": protocol, "local_addr": "localhost:3000" })).unwrap();
    shared.open_tunnel(s, spec).await.map_err(|e| e.message).unwrap()
}

fn assert_error(r: &Resp, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert!(r.json["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: {}", r.text);
    assert!(r.json["error"]["message"].as_str().is_some_and(|c| !c.is_empty()), "{what}: {}", r.text);
    assert_eq!(r.json.as_object().unwrap().len(), 1, "{what}: only `error` at the top: {}", r.text);
}

/// CORS is not `*` on authenticated routes. The API sends no CORS headers at all,
/// so a page on another origin can neither read an answer nor get a preflight through.
#[tokio::test]
async fn authenticated_routes_send_no_cors_headers_to_other_origins() {
    let e = env_with(None, |_| {}).await;
    let cors = |h: &HeaderMap| h.keys().filter(|k| k.as_str().starts_with("access-control-")).count();
    for (method, uri) in [(Method::GET, "/api/tunnels"), (Method::GET, "/api/tokens"), (Method::GET, "/api/history")] {
        let mut r = req(method.clone(), uri, Some(&e.admin()), None);
        r.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        let r = send(&e.app, r).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
        assert_eq!(cors(&r.headers), 0, "{uri}: {:?}", r.headers);
        // A browser's preflight for a cross-origin DELETE with the token gets no permission.
        let pre = Request::builder()
            .method(Method::OPTIONS)
            .uri(uri)
            .header(header::ORIGIN, "https://evil.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "DELETE")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .unwrap();
        let r = send(&e.app, pre).await;
        assert!(!r.status.is_success(), "{uri}: preflight answered {}", r.status);
        assert_eq!(cors(&r.headers), 0, "{uri}: {:?}", r.headers);
    }
}

#[tokio::test]
async fn public_routes_answer_without_a_token() {
    for e in envs().await {
        let r = call(&e.app, Method::GET, "/api/status", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(r.json["region"], e.shared().config().region.id.as_str());
        assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

        // A server with no regions configured lists itself, with the ports it really bound.
        let r = call(&e.app, Method::GET, "/api/regions", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let regions = r.json["regions"].as_array().unwrap();
        assert_eq!(regions.len(), 1);
        let control = e.handle.control_addr().port();
        assert_eq!(regions[0]["control_addr"], format!("localhost:{control}"));
        let api = e.handle.api_addr().unwrap().port();
        assert_eq!(regions[0]["api_url"], format!("http://localhost:{api}"));

        let r = call(&e.app, Method::GET, "/api/openapi.json", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.json["openapi"].as_str().unwrap().starts_with("3.1"));

        let r = call(&e.app, Method::GET, "/agents.md", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/markdown"));
        assert!(r.text.contains(&format!("localhost:{control}")), "{}", r.text);
        assert!(r.text.contains(&format!("http://localhost:{api}/api/tunnels")));
        assert!(r.text.contains("## FAQ"));
    }
}

#[tokio::test]
async fn regions_from_config_are_listed() {
    let e = env_with(None, |c| {
        c.regions = vec![
            crate::config::RegionConfig {
                id: "eu".into(),
                name: "Europe".into(),
                location: "Frankfurt".into(),
                control_addr: "eu.example.com:4040".into(),
                api_url: "https://eu.example.com:4041".into(),
            },
            crate::config::RegionConfig {
                id: "us".into(),
                name: "US".into(),
                location: "Virginia".into(),
                control_addr: "us.example.com:4040".into(),
                api_url: String::new(),
            },
        ]
    })
    .await;
    let r = call(&e.app, Method::GET, "/api/regions", None, None).await;
    let ids: Vec<&str> = r.json["regions"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["eu", "us"]);
    assert_eq!(r.json["regions"][0]["control_addr"], "eu.example.com:4040");
    assert_eq!(r.json["regions"][0]["location"], "Frankfurt");
}

#[tokio::test]
async fn list_read_and_close_a_tunnel() {
    for e in envs().await {
        let sh = e.shared().clone();
        let (tok, tok_id, owner) = mint(&e, "a").await;
        let (s, mut rx) = session(&sh, &owner, Some(&tok_id));
        let info = open(&sh, &s, "web", "http").await;
        // Distinct opening times, so "newest first" has one right answer.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        let tcp = open(&sh, &s, "db", "tcp").await;

        let r = call(&e.app, Method::GET, "/api/tunnels", Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let list = r.json["tunnels"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        let web = list.iter().find(|t| t["id"] == info.tunnel_id.as_str()).unwrap();
        let http_port = e.handle.http_addr().unwrap().port();
        let sub = info.subdomain.clone().unwrap();
        assert_eq!(web["public_url"], format!("http://{sub}.localhost:{http_port}"));
        assert_eq!(web["subdomain"], sub.as_str());
        assert_eq!(web["local_addr"], "localhost:3000");
        assert_eq!(web["client_addr"], "127.0.0.1:40000");
        assert_eq!(web["owner_id"], owner.as_str());
        assert_eq!(web["status"], "active");
        assert!(web["created_at"].as_str().unwrap().ends_with('Z'));
        let db = list.iter().find(|t| t["id"] == tcp.tunnel_id.as_str()).unwrap();
        assert_eq!(db["port"], tcp.remote_port.unwrap());
        assert!(db["public_url"].as_str().unwrap().starts_with("tcp://localhost:"));

        let status = call(&e.app, Method::GET, "/api/status", None, None).await;
        assert!(status.json["tunnels"]["http"].as_u64().unwrap() >= 1);
        assert!(status.json["sessions"].as_u64().unwrap() >= 1);

        let path = format!("/api/tunnels/{}", info.tunnel_id);
        let r = call(&e.app, Method::GET, &path, Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["name"], "web");

        let r = call(&e.app, Method::DELETE, &path, Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json, json!({ "id": info.tunnel_id, "closed": true }));
        // The public endpoint is gone at once and the client is told why.
        assert!(sh.route(&sub).is_none());
        match rx.try_recv() {
            Ok(ServerMsg::TunnelClosed { tunnel_id, reason, .. }) => {
                assert_eq!(tunnel_id, info.tunnel_id);
                assert_eq!(reason, CloseReason::ClosedByApi);
            }
            other => panic!("expected tunnel_closed, got {other:?}"),
        }
        assert_error(&call(&e.app, Method::GET, &path, Some(&tok), None).await, StatusCode::NOT_FOUND, "closed");
        assert_error(&call(&e.app, Method::DELETE, &path, Some(&tok), None).await, StatusCode::NOT_FOUND, "twice");

        // History, newest first, records the reason.
        let r = call(&e.app, Method::GET, "/api/history", Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["limit"], 25);
        let entries = r.json["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["id"], tcp.tunnel_id.as_str());
        let closed = &entries[1];
        assert_eq!(closed["close_reason"], "closed_by_api");
        assert_eq!(closed["active"], false);
        assert!(closed["closed_at"].as_str().unwrap().ends_with('Z'));
        let r = call(&e.app, Method::GET, "/api/history?protocol=tcp&limit=1", Some(&tok), None).await;
        assert_eq!(r.json["entries"].as_array().unwrap().len(), 1);
        assert_eq!(r.json["entries"][0]["protocol"], "tcp");
        let r = call(&e.app, Method::GET, "/api/history?active=false", Some(&tok), None).await;
        assert_eq!(r.json["entries"].as_array().unwrap().len(), 1);
        let r = call(&e.app, Method::GET, "/api/history?offset=1", Some(&tok), None).await;
        assert_eq!(r.json["entries"][0]["id"], info.tunnel_id.as_str());
        assert_eq!(r.json["offset"], 1);
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn tenants_see_and_touch_only_their_own_things() {
    for e in envs().await {
        let sh = e.shared().clone();
        let (tok_a, id_a, owner_a) = mint(&e, "a").await;
        let (tok_b, id_b, owner_b) = mint(&e, "b").await;
        assert_ne!(owner_a, owner_b);
        let (sb, _rx) = session(&sh, &owner_b, Some(&id_b));
        let tb = open(&sh, &sb, "web", "http").await;
        let (sa, _rxa) = session(&sh, &owner_a, Some(&id_a));
        let ta = open(&sh, &sa, "web", "http").await;

        let ids = |r: &Resp, key: &str| -> BTreeSet<String> {
            r.json[key].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
        };
        let r = call(&e.app, Method::GET, "/api/tunnels", Some(&tok_a), None).await;
        assert_eq!(ids(&r, "tunnels"), BTreeSet::from([ta.tunnel_id.clone()]));
        let b_path = format!("/api/tunnels/{}", tb.tunnel_id);
        // Not 403: A cannot even learn that B's tunnel exists.
        assert_error(&call(&e.app, Method::GET, &b_path, Some(&tok_a), None).await, StatusCode::NOT_FOUND, "read");
        assert_error(&call(&e.app, Method::DELETE, &b_path, Some(&tok_a), None).await, StatusCode::NOT_FOUND, "close");
        assert!(sh.tunnel(&tb.tunnel_id).is_some(), "B's tunnel is still open");

        let r = call(&e.app, Method::GET, "/api/history", Some(&tok_a), None).await;
        assert_eq!(ids(&r, "entries"), BTreeSet::from([ta.tunnel_id.clone()]));
        let r = call(&e.app, Method::GET, "/api/tokens", Some(&tok_a), None).await;
        assert_eq!(ids(&r, "tokens"), BTreeSet::from([id_a.clone()]));
        assert!(!r.text.contains("hash") && !r.text.contains(&tok_a), "no hashes or values: {}", r.text);
        let revoke_b = format!("/api/tokens/{id_b}");
        assert_error(&call(&e.app, Method::DELETE, &revoke_b, Some(&tok_a), None).await, StatusCode::NOT_FOUND, "rv");
        assert_eq!(call(&e.app, Method::GET, "/api/tunnels", Some(&tok_b), None).await.status, StatusCode::OK);
        // Minting for another owner is refused the same way.
        let body = json!({ "label": "x", "owner_id": owner_b }).to_string();
        assert_error(
            &call(&e.app, Method::POST, "/api/tokens", Some(&tok_a), Some(&body)).await,
            StatusCode::NOT_FOUND,
            "m",
        );

        // A token holder mints for its own owner; the admin for an existing owner.
        let r = call(&e.app, Method::POST, "/api/tokens", Some(&tok_a), Some(r#"{"label":"a2"}"#)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["owner_id"], owner_a.as_str());
        assert!(r.json["token"].as_str().unwrap().starts_with("rt_"));
        let body = json!({ "label": "b2", "owner_id": owner_b }).to_string();
        let r = call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&body)).await;
        assert_eq!(r.json["owner_id"], owner_b.as_str());
        let body = json!({ "label": "x", "owner_id": "no-such-owner" }).to_string();
        let r = call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&body)).await;
        assert_error(&r, StatusCode::NOT_FOUND, "admin mint for missing owner");

        // The admin sees everyone.
        let r = call(&e.app, Method::GET, "/api/tunnels", Some(&e.admin()), None).await;
        assert!(ids(&r, "tunnels").is_superset(&BTreeSet::from([ta.tunnel_id.clone(), tb.tunnel_id.clone()])));
        let r = call(&e.app, Method::GET, "/api/tokens", Some(&e.admin()), None).await;
        assert!(ids(&r, "tokens").is_superset(&BTreeSet::from([id_a.clone(), id_b.clone()])));
        let r = call(&e.app, Method::DELETE, &b_path, Some(&e.admin()), None).await;
        assert_eq!(r.status, StatusCode::OK);
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn p2p_services_and_links_are_listed_per_tenant() {
    for e in envs().await {
        let sh = e.shared().clone();
        let (tok, tok_id, owner) = mint(&e, "p2p").await;
        let (other, _, _) = mint(&e, "p2p-other").await;
        let (publisher, _prx) = session(&sh, &owner, Some(&tok_id));
        let (visitor, _vrx) = session(&sh, &owner, Some(&tok_id));
        p2p_link(&sh, &owner, &publisher, &visitor, "svc", "link-0123456789abcdef");
        // A published service with no link yet.
        sh.p2p().with_table(|t| t.publish(&owner, &publisher.id, "idle", Protocol::Udp)).unwrap();

        let r = call(&e.app, Method::GET, "/api/p2p", Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let services = r.json["services"].as_array().unwrap();
        assert_eq!(services.len(), 2, "{}", r.text);
        let svc = services.iter().find(|s| s["name"] == "svc").unwrap();
        assert_eq!(svc["protocol"], "tcp");
        assert_eq!(svc["owner_id"], owner.as_str());
        assert_eq!(svc["publisher"]["session_id"], publisher.id.as_str());
        assert_eq!(svc["publisher"]["client_addr"], "127.0.0.1:40000");
        let link = &svc["links"][0];
        assert_eq!(link["link_id"], "link-0123456789abcdef");
        assert_eq!(link["mode"], "pending", "the secret proof has not finished");
        assert_eq!(link["visitor"]["session_id"], visitor.id.as_str());
        assert_eq!(link["relayed_bytes_in"], 0);
        let idle = services.iter().find(|s| s["name"] == "idle").unwrap();
        assert_eq!(idle["protocol"], "udp");
        assert!(idle["links"].as_array().unwrap().is_empty());

        // Another tenant sees nothing; the admin sees everything.
        let r = call(&e.app, Method::GET, "/api/p2p", Some(&other), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json, json!({"services": []}));
        let r = call(&e.app, Method::GET, "/api/p2p", Some(&e.admin()), None).await;
        assert_eq!(r.json["services"].as_array().unwrap().len(), 2, "{}", r.text);
        let r = call(&e.app, Method::GET, "/api/p2p", Some("rt_bad"), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "bad token");
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn revoking_a_token_closes_its_tunnels_and_refuses_it_at_once() {
    for e in envs().await {
        let sh = e.shared().clone();
        let (tok, id, owner) = mint(&e, "ci").await;
        let (keep, keep_id, _) = mint(&e, "other").await;
        let (s, mut rx) = session(&sh, &owner, Some(&id));
        let t1 = open(&sh, &s, "web", "http").await;
        let t2 = open(&sh, &s, "db", "tcp").await;
        // The session drains its queue the way the control connection would.
        let drained = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                got.push(m);
            }
            got
        });
        let r = call(&e.app, Method::DELETE, &format!("/api/tokens/{id}"), Some(&keep), None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "a different token of another owner cannot revoke it");
        let r = call(&e.app, Method::DELETE, &format!("/api/tokens/{id}"), Some(&e.admin()), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json, json!({ "id": id, "revoked": true, "closed_tunnels": 2 }));
        assert!(sh.tunnel(&t1.tunnel_id).is_none() && sh.tunnel(&t2.tunnel_id).is_none());
        assert!(sh.session(&s.id).is_none(), "the session was ended");
        assert!(s.cancel.is_cancelled());
        let r = call(&e.app, Method::GET, "/api/tunnels", Some(&tok), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "revoked token");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(sh.store().verify_token(&tok).await.unwrap().is_none());
        drop(s);
        let msgs = tokio::time::timeout(std::time::Duration::from_secs(5), drained).await.unwrap().unwrap();
        let reasons: Vec<CloseReason> = msgs
            .iter()
            .filter_map(|m| match m {
                ServerMsg::TunnelClosed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [CloseReason::TokenRevoked, CloseReason::TokenRevoked]);
        let r = call(&e.app, Method::GET, "/api/history", Some(&e.admin()), None).await;
        let row = r.json["entries"].as_array().unwrap().iter().find(|h| h["id"] == t1.tunnel_id.as_str()).unwrap();
        assert_eq!(row["close_reason"], "token_revoked");
        // The other token still works.
        assert_eq!(call(&e.app, Method::GET, "/api/tokens", Some(&keep), None).await.status, StatusCode::OK);
        let _ = keep_id;
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn bad_input_is_a_json_4xx_never_a_500() {
    for e in envs().await {
        let admin = e.admin();
        let a = Some(admin.as_str());
        let post = |body: &'static str| req(Method::POST, "/api/tokens", a, Some(body));
        let huge = format!(r#"{{"label":"{}"}}"#, "x".repeat(super::MAX_BODY * 2));
        let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
            ("invalid json", post("{not json"), StatusCode::BAD_REQUEST),
            ("wrong type", post(r#"{"label": 5}"#), StatusCode::UNPROCESSABLE_ENTITY),
            ("missing field", post(r#"{}"#), StatusCode::UNPROCESSABLE_ENTITY),
            ("unknown field", post(r#"{"label":"x","admin":true}"#), StatusCode::UNPROCESSABLE_ENTITY),
            ("json array", post(r#"["x"]"#), StatusCode::UNPROCESSABLE_ENTITY),
            ("empty label", post(r#"{"label":"  "}"#), StatusCode::BAD_REQUEST),
            ("control chars", post(r#"{"label":"a\nb"}"#), StatusCode::BAD_REQUEST),
            ("bidi override", post(r#"{"label":"a\u202eb"}"#), StatusCode::BAD_REQUEST),
            ("zero width", post(r#"{"label":"a\u200bb"}"#), StatusCode::BAD_REQUEST),
            ("owner wrong type", post(r#"{"label":"x","owner_id":7}"#), StatusCode::UNPROCESSABLE_ENTITY),
            ("huge body", req(Method::POST, "/api/tokens", a, Some(&huge)), StatusCode::PAYLOAD_TOO_LARGE),
            (
                "no content type",
                Request::post("/api/tokens")
                    .header(header::AUTHORIZATION, format!("Bearer {admin}"))
                    .body(Body::from(r#"{"label":"x"}"#))
                    .unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            ("negative limit", req(Method::GET, "/api/history?limit=-1", a, None), StatusCode::BAD_REQUEST),
            ("zero limit", req(Method::GET, "/api/history?limit=0", a, None), StatusCode::BAD_REQUEST),
            ("huge limit", req(Method::GET, "/api/history?limit=100000", a, None), StatusCode::BAD_REQUEST),
            (
                "overflowing limit",
                req(Method::GET, "/api/history?limit=99999999999999999999999", a, None),
                StatusCode::BAD_REQUEST,
            ),
            ("garbage limit", req(Method::GET, "/api/history?limit=abc", a, None), StatusCode::BAD_REQUEST),
            ("negative offset", req(Method::GET, "/api/history?offset=-5", a, None), StatusCode::BAD_REQUEST),
            ("huge offset", req(Method::GET, "/api/history?offset=1000000000000", a, None), StatusCode::BAD_REQUEST),
            ("bad protocol", req(Method::GET, "/api/history?protocol=ftp", a, None), StatusCode::BAD_REQUEST),
            ("bad active", req(Method::GET, "/api/history?active=maybe", a, None), StatusCode::BAD_REQUEST),
            ("unknown param", req(Method::GET, "/api/history?limt=5", a, None), StatusCode::BAD_REQUEST),
            ("unknown route", req(Method::GET, "/api/nope", a, None), StatusCode::NOT_FOUND),
            ("wrong method", req(Method::PUT, "/api/tunnels", a, None), StatusCode::METHOD_NOT_ALLOWED),
            ("unknown tunnel", req(Method::GET, "/api/tunnels/nope", a, None), StatusCode::NOT_FOUND),
            (
                "long tunnel id",
                req(Method::DELETE, &format!("/api/tunnels/{}", "x".repeat(5000)), a, None),
                StatusCode::NOT_FOUND,
            ),
            (
                "long token id",
                req(Method::DELETE, &format!("/api/tokens/{}", "x".repeat(5000)), a, None),
                StatusCode::NOT_FOUND,
            ),
            ("bad token", req(Method::GET, "/api/tunnels", Some("rt_wrong"), None), StatusCode::UNAUTHORIZED),
            (
                "not bearer",
                Request::get("/api/tunnels").header(header::AUTHORIZATION, "Basic eDp5").body(Body::empty()).unwrap(),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "empty bearer",
                Request::get("/api/tokens").header(header::AUTHORIZATION, "Bearer ").body(Body::empty()).unwrap(),
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (what, request, status) in cases {
            assert_error(&send(&e.app, request).await, status, what);
        }
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn production_server_requires_a_token_and_dev_server_has_an_anonymous_owner() {
    // Loopback dev server: no header acts as the anonymous owner, who cannot mint tokens.
    let e = env_with(None, |_| {}).await;
    let r = call(&e.app, Method::GET, "/api/tunnels", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&e.app, Method::POST, "/api/tokens", None, Some(r#"{"label":"x"}"#)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "anonymous mint");
    // Without anonymous access every authenticated route needs a token.
    let e = env_with(None, |c| c.allow_anonymous = false).await;
    for path in ["/api/tunnels", "/api/tunnels/x", "/api/history", "/api/tokens"] {
        assert_error(&call(&e.app, Method::GET, path, None, None).await, StatusCode::UNAUTHORIZED, path);
    }
    assert_error(&call(&e.app, Method::DELETE, "/api/tokens/x", None, None).await, StatusCode::UNAUTHORIZED, "rv");
    let r = call(&e.app, Method::POST, "/api/tokens", None, Some(r#"{"label":"x"}"#)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "mint");
}

#[tokio::test]
async fn auth_failures_are_rate_limited_per_ip_and_counted() {
    let e = env_with(None, |_| {}).await;
    let from = |ip: &str, token: &str| {
        let mut r = req(Method::GET, "/api/tunnels", Some(token), None);
        let addr: SocketAddr = format!("{ip}:5000").parse().unwrap();
        r.extensions_mut().insert(ConnectInfo(addr));
        r
    };
    let admin = e.admin();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(send(&e.app, from("192.0.2.7", "rt_guess")).await.status);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS);
    // Even the right token is refused from that address for now; other addresses are fine.
    let r = send(&e.app, from("192.0.2.7", &admin)).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "blocked ip");
    assert_eq!(r.json["error"]["code"], "rate_limited");
    // When to come back: the rest of the one-minute window, as a standard header.
    let secs: u64 = r.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&secs), "{secs}");
    assert!(r.json["error"]["message"].as_str().unwrap().contains(&format!("try again in {secs} s")), "{}", r.json);
    assert_eq!(send(&e.app, from("192.0.2.8", &admin)).await.status, StatusCode::OK);

    let m = call(&e.app, Method::GET, "/metrics", None, None).await;
    assert!(m.text.contains("rustunnel_auth_failures_total 10\n"), "{}", m.text);
    assert!(m.text.contains("rustunnel_auth_rate_limited_total 3\n"), "{}", m.text);
    assert!(!m.text.contains(&admin));
}

#[tokio::test]
async fn metrics_expose_tunnels_sessions_traffic_and_latency() {
    let e = env_with(None, |_| {}).await;
    let sh = e.shared().clone();
    let (s, _rx) = session(&sh, "o", None);
    let web = open(&sh, &s, "web", "http").await;
    open(&sh, &s, "db", "tcp").await;
    let t = sh.tunnel(&web.tunnel_id).unwrap();
    t.stats.add_in(100);
    t.stats.add_out(250);
    sh.metrics().observe_http(std::time::Duration::from_millis(30));
    let m = call(&e.app, Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    for line in [
        "rustunnel_tunnels{protocol=\"http\"} 1",
        "rustunnel_tunnels{protocol=\"tcp\"} 1",
        "rustunnel_tunnels{protocol=\"udp\"} 0",
        "rustunnel_sessions 1",
        "rustunnel_bytes_total{direction=\"in\"} 100",
        "rustunnel_bytes_total{direction=\"out\"} 250",
        "rustunnel_http_request_duration_seconds_bucket{le=\"0.025\"} 0",
        "rustunnel_http_request_duration_seconds_bucket{le=\"0.05\"} 1",
        "rustunnel_http_request_duration_seconds_bucket{le=\"+Inf\"} 1",
        "rustunnel_http_request_duration_seconds_count 1",
        "# TYPE rustunnel_http_request_duration_seconds histogram",
    ] {
        assert!(m.text.lines().any(|l| l == line), "missing {line}:\n{}", m.text);
    }
    // Closing a tunnel keeps its bytes in the totals (counters never go down).
    sh.close_tunnel(&web.tunnel_id, CloseReason::ClosedByApi, "").await;
    let m = call(&e.app, Method::GET, "/metrics", None, None).await;
    assert!(m.text.contains("rustunnel_bytes_total{direction=\"out\"} 250\n"));
    assert!(m.text.contains("rustunnel_tunnels{protocol=\"http\"} 0\n"));
    assert!(m.text.contains("rustunnel_tunnels_closed_total 1\n"));
}

/// (documented path, method, request URI, token, JSON body)
type Case<'a> = (&'a str, Method, String, Option<&'a str>, Option<String>);

/// Every route's real answers, success and error, validate against the generated OpenAPI
/// document; every documented operation is exercised.
#[tokio::test]
async fn responses_conform_to_the_openapi_document() {
    for e in envs().await {
        let doc = call(&e.app, Method::GET, "/api/openapi.json", None, None).await.json;
        let mut strict = doc.clone();
        // Undocumented fields in an answer are drift too: close every object schema.
        if let Some(schemas) = strict["components"]["schemas"].as_object_mut() {
            for s in schemas.values_mut() {
                if s.get("properties").is_some() {
                    s["additionalProperties"] = json!(false);
                }
            }
        }
        let sh = e.shared().clone();
        let admin = e.admin();
        let (tok, tok_id, owner) = mint(&e, "conf").await;
        let (s, _rx) = session(&sh, &owner, Some(&tok_id));
        let web = open(&sh, &s, "web", "http").await;
        let tcp = open(&sh, &s, "db", "tcp").await;
        sh.close_tunnel(&tcp.tunnel_id, CloseReason::ClientRequest, "").await;
        let (_, other_id, _) = mint(&e, "other").await;
        let member = json!({ "name": "lb", "protocol": "http", "local_addr": "localhost:3001",
            "group": { "name": "lbpool", "key": "k", "health_check": "http GET /health every 5s" } });
        sh.open_tunnel(&s, serde_json::from_value(member).unwrap()).await.map_err(|e| e.message).unwrap();
        let (visitor, _vrx) = session(&sh, &owner, Some(&tok_id));
        p2p_link(&sh, &owner, &s, &visitor, "svc", "link-conformance-0001");

        let t = Some(tok.as_str());
        let ad = Some(admin.as_str());
        let web_path = format!("/api/tunnels/{}", web.tunnel_id);
        let cases: Vec<Case> = vec![
            ("/api/status", Method::GET, "/api/status".into(), None, None),
            ("/api/regions", Method::GET, "/api/regions".into(), None, None),
            ("/api/openapi.json", Method::GET, "/api/openapi.json".into(), None, None),
            ("/metrics", Method::GET, "/metrics".into(), None, None),
            ("/agents.md", Method::GET, "/agents.md".into(), None, None),
            ("/healthz", Method::GET, "/healthz".into(), None, None),
            ("/readyz", Method::GET, "/readyz".into(), None, None),
            ("/api/tunnels", Method::GET, "/api/tunnels".into(), t, None),
            ("/api/tunnels", Method::GET, "/api/tunnels".into(), Some("rt_bad"), None),
            ("/api/tunnels/{id}", Method::GET, web_path.clone(), t, None),
            ("/api/pools", Method::GET, "/api/pools".into(), t, None),
            ("/api/pools", Method::GET, "/api/pools".into(), Some("rt_bad"), None),
            ("/api/p2p", Method::GET, "/api/p2p".into(), t, None),
            ("/api/p2p", Method::GET, "/api/p2p".into(), Some("rt_bad"), None),
            ("/api/tunnels/{id}", Method::GET, "/api/tunnels/missing".into(), t, None),
            ("/api/history", Method::GET, "/api/history".into(), t, None),
            ("/api/history", Method::GET, "/api/history?active=true&protocol=http&limit=5&offset=0".into(), ad, None),
            ("/api/history", Method::GET, "/api/history?limit=-3".into(), t, None),
            ("/api/tokens", Method::GET, "/api/tokens".into(), t, None),
            ("/api/tokens", Method::POST, "/api/tokens".into(), t, Some(r#"{"label":"more"}"#.into())),
            ("/api/tokens", Method::POST, "/api/tokens".into(), t, Some(r#"{"label":1}"#.into())),
            ("/api/tokens", Method::POST, "/api/tokens".into(), t, Some("{".into())),
            (
                "/api/tokens",
                Method::POST,
                "/api/tokens".into(),
                ad,
                Some(r#"{"label":"x","owner_id":"nobody"}"#.into()),
            ),
            ("/api/tokens/{id}", Method::DELETE, format!("/api/tokens/{other_id}"), t, None),
            ("/api/tunnels/{id}", Method::DELETE, web_path.clone(), t, None),
            ("/api/tunnels/{id}", Method::DELETE, web_path.clone(), t, None),
            ("/api/tokens/{id}", Method::DELETE, format!("/api/tokens/{other_id}"), ad, None),
        ];
        let mut covered = BTreeSet::new();
        for (template, method, uri, token, body) in cases {
            let r = call(&e.app, method.clone(), &uri, token, body.as_deref()).await;
            let m = method.as_str().to_ascii_lowercase();
            covered.insert((template.to_string(), m.clone()));
            let pointer = format!("/paths/{}/{m}/responses/{}", template.replace('/', "~1"), r.status.as_u16());
            let documented = strict
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("{method} {uri} answered {} which is not documented", r.status));
            let content = documented["content"].as_object().expect("documented content");
            let ctype = r.headers[header::CONTENT_TYPE].to_str().unwrap();
            if ctype.starts_with("application/json") {
                assert!(content.contains_key("application/json"), "{method} {uri}: json not documented");
                let schema_ptr =
                    format!("#{pointer}/content/application~1json/schema").replace('{', "%7B").replace('}', "%7D");
                let mut root = strict.clone();
                root["$ref"] = json!(schema_ptr);
                let v = jsonschema::draft202012::new(&root).unwrap();
                let errors: Vec<String> = v.iter_errors(&r.json).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{method} {uri} ({}): {errors:?}\n{}", r.status, r.text);
            } else {
                let base = ctype.split(';').next().unwrap();
                assert!(content.contains_key(base), "{method} {uri}: {ctype} not documented");
            }
        }
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (p.clone(), m.clone())))
            .collect();
        assert_eq!(documented, covered, "every documented operation is exercised, and only those");
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let h = ServerHandle::spawn(Config::ephemeral(dir.path())).await.unwrap();
        let sh = h.shared().clone();
        let (s, _rx) = session(&sh, "o", None);
        let t = open(&sh, &s, "web", "http").await;
        sh.close_tunnel(&t.tunnel_id, CloseReason::ClosedByApi, "").await;
        h.shutdown().await;
        t.tunnel_id
    };
    let h = ServerHandle::spawn(Config::ephemeral(dir.path())).await.unwrap();
    let app = router(h.shared().clone());
    let r = call(&app, Method::GET, "/api/history", Some(h.admin_token()), None).await;
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], id.as_str());
    assert_eq!(entries[0]["close_reason"], "closed_by_api");
    assert_eq!(h.shared().tunnel_count(), 0);
}

/// Rights through the API: the admin mints a limited token; that token mints narrower ones
/// (or inherits its own when it asks for nothing) and is refused wider ones; malformed rights
/// get a 400 naming the problem; listings show the rights.
#[tokio::test]
async fn minted_rights_stay_within_the_minting_token() {
    for e in envs().await {
        let body = json!({ "label": "ci", "subdomains": ["ci-*", "docs"], "ports": ["20000-20099"] }).to_string();
        let r = call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["subdomains"], json!(["ci-*", "docs"]));
        assert_eq!(r.json["ports"], json!(["20000-20099"]));
        let limited = r.json["token"].as_str().unwrap().to_string();

        let mint = |body: serde_json::Value| {
            let app = e.app.clone();
            let limited = limited.clone();
            async move { call(&app, Method::POST, "/api/tokens", Some(&limited), Some(&body.to_string())).await }
        };
        let r = mint(json!({ "label": "inherit" })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!((&r.json["subdomains"], &r.json["ports"]), (&json!(["ci-*", "docs"]), &json!(["20000-20099"])));
        let r = mint(json!({ "label": "narrow", "subdomains": ["ci-web-*"], "ports": ["20010"] })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!((&r.json["subdomains"], &r.json["ports"]), (&json!(["ci-web-*"]), &json!(["20010"])));
        for wider in [
            json!({ "label": "w", "subdomains": ["*"] }),
            json!({ "label": "w", "subdomains": ["c*"] }),
            json!({ "label": "w", "ports": ["20000-20100"] }),
        ] {
            let r = mint(wider.clone()).await;
            assert_error(&r, StatusCode::FORBIDDEN, "wider");
            assert!(r.text.contains("its maker does not have"), "{wider}: {}", r.text);
        }
        for bad in [
            json!({ "label": "b", "subdomains": ["Bad!"] }),
            json!({ "label": "b", "ports": ["70000"] }),
            json!({ "label": "b", "subdomains": [] }),
        ] {
            let r = call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&bad.to_string())).await;
            assert_error(&r, StatusCode::BAD_REQUEST, "bad rights");
        }
        let r = call(&e.app, Method::GET, "/api/tokens", Some(&limited), None).await;
        let tokens = r.json["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 3, "{}", r.text);
        assert!(tokens.iter().all(|t| t["subdomains"].is_array() && t["ports"].is_array()), "{}", r.text);

        // Least privilege beyond opening: the limited token closes only tunnels on its names
        // and ports, and revokes only tokens within its rights.
        let owner = tokens[0]["owner_id"].as_str().unwrap().to_string();
        let free = json!({ "label": "free", "owner_id": owner }).to_string();
        let r = call(&e.app, Method::POST, "/api/tokens", Some(&e.admin()), Some(&free)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let free_id = r.json["id"].as_str().unwrap().to_string();
        let sh = e.shared().clone();
        let (s, _rx) = session(&sh, &owner, Some(&free_id));
        let outside = open(&sh, &s, "outside", "http").await;
        let r =
            call(&e.app, Method::DELETE, &format!("/api/tunnels/{}", outside.tunnel_id), Some(&limited), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "close outside");
        assert!(sh.tunnel(&outside.tunnel_id).is_some());
        let r = call(&e.app, Method::DELETE, &format!("/api/tokens/{free_id}"), Some(&limited), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "revoke wider");
        let narrow_id = tokens.iter().find(|t| t["label"] == "narrow").unwrap()["id"].as_str().unwrap().to_string();
        let r = call(&e.app, Method::DELETE, &format!("/api/tokens/{narrow_id}"), Some(&limited), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r =
            call(&e.app, Method::DELETE, &format!("/api/tunnels/{}", outside.tunnel_id), Some(&e.admin()), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let spec = json!({ "name": "docs", "protocol": "http", "local_addr": "localhost:3000", "subdomain": "docs" });
        let inside = sh.open_tunnel(&s, serde_json::from_value(spec).unwrap()).await.map_err(|e| e.message).unwrap();
        let r = call(&e.app, Method::DELETE, &format!("/api/tunnels/{}", inside.tunnel_id), Some(&limited), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        e.handle.abort().await;
    }
}

#[tokio::test]
async fn probes_answer_and_readiness_ends_with_the_drain() {
    for e in envs().await {
        let r = call(&e.app, Method::GET, "/healthz", None, None).await;
        assert_eq!((r.status, r.json["status"].as_str()), (StatusCode::OK, Some("ok")), "{}", r.text);
        let r = call(&e.app, Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json, json!({ "status": "ready", "draining": false, "database": "ok" }));
        // The first step of a graceful shutdown: from then on the server is not ready.
        e.shared().stop_accepting().cancel();
        let r = call(&e.app, Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert_eq!(r.json, json!({ "status": "not_ready", "draining": true, "database": "ok" }));
        assert_eq!(call(&e.app, Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
        e.handle.abort().await;
    }
}
