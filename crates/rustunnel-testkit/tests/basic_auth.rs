//! HTTP tunnels with `--basic-auth`: visitors log in at the edge, on every path a request can
//! take (the lean HTTP/1.1 path, hyper's for chunked bodies and WebSocket upgrades, HTTP/2),
//! the credentials never reach the local service, and guessing is limited per address.
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rustunnel_client::Event;
use rustunnel_proto::basic_auth::BasicAuth;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;

type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

const CREDS: &str = "ana:correct horse";

fn basic(creds: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds))
}

fn with_login(name: &str, port: u16, sub: &str) -> rustunnel_client::TunnelConfig {
    let mut t = tunnel(name, Protocol::Http, port);
    t.subdomain = Some(sub.into());
    t.basic_auth = Some(BasicAuth::parse(CREDS).unwrap());
    t
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    text: String,
}

async fn send(
    conn: &mut hyper::client::conn::http1::SendRequest<BoxBody>,
    req: http::request::Builder,
    b: BoxBody,
) -> Answer {
    let resp = conn.send_request(req.body(b).unwrap()).await.unwrap();
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Answer { status, challenge, text }
}

#[tokio::test]
async fn only_visitors_with_the_credentials_get_through_and_the_service_never_sees_them() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (mut c, ready) = spawn_ready(server.client_options(vec![with_login("web", app.port(), "locked")])).await;
    let host = ready[0].host();
    let edge = server.http_addr();
    let get = |path: &str| Request::get(path).header("host", &host);

    // One kept-alive connection, as a browser: challenged, then let in on the same connection.
    let mut conn = http1_conn(edge).await;
    let a = send(&mut conn, get("/"), body("")).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.challenge.as_deref(), Some("Basic realm=\"rustunnel\", charset=\"UTF-8\""));
    assert!(a.text.contains("user name and password"), "{}", a.text);
    let a = send(&mut conn, get("/").header("authorization", basic("ana:wrong horse")), body("")).await;
    assert_eq!(a.status, 401);
    let a = send(&mut conn, get("/").header("authorization", "Bearer abc"), body("")).await;
    assert_eq!(a.status, 401);
    let a = send(&mut conn, get("/headers").header("authorization", basic(CREDS)), body("")).await;
    assert_eq!(a.status, 200);
    assert!(!a.text.to_lowercase().contains("authorization"), "the login reached the service: {}", a.text);
    assert!(a.text.contains("x-forwarded-for"), "{}", a.text);

    // A chunked upload takes hyper's path: the same rules.
    let chunked = || {
        let frames = futures_util::stream::iter(
            [&b"part one "[..], b"part two"]
                .map(|d| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(d)))),
        );
        BodyExt::boxed(http_body_util::StreamBody::new(frames))
    };
    let post = |path: &str| Request::post(path).header("host", &host);
    let mut conn = http1_conn(edge).await;
    assert_eq!(send(&mut conn, post("/hash"), chunked()).await.status, 401);
    let mut conn = http1_conn(edge).await;
    let a = send(&mut conn, post("/hash").header("authorization", basic(CREDS)), chunked()).await;
    assert_eq!((a.status, a.text), (StatusCode::OK, sha256_hex(b"part one part two")));
    let a = send(&mut conn, post("/headers").header("authorization", basic(CREDS)), chunked()).await;
    assert!(!a.text.to_lowercase().contains("authorization"), "{}", a.text);
    // Two Authorization headers, one of them right: refused.
    let two = get("/").header("authorization", basic(CREDS)).header("authorization", basic("ana:wrong horse"));
    assert_eq!(send(&mut conn, two, body("")).await.status, 401);

    // A WebSocket upgrade: refused without the login, echoed with it.
    let url = format!("ws://{host}/ws");
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    match tokio_tungstenite::client_async(url.clone(), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("upgrade without the login: {other:?}"),
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("authorization", basic(CREDS).parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hi");

    // HTTP/2 over the HTTPS edge.
    let https = server.https_addr();
    let mut h2 = h2_conn(https, "locked.localhost").await;
    let url = format!("https://locked.localhost:{}/headers", https.port());
    let resp = h2.send_request(Request::get(&url).body(body("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let req = Request::get(&url).header("authorization", basic(CREDS)).body(body("")).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&text).to_lowercase().contains("authorization"), "{text:?}");

    // The management API says which tunnels ask for a login (never the login itself).
    let mut api = http1_conn(server.handle.api_addr().unwrap()).await;
    let req = Request::get("/api/tunnels")
        .header("host", "api")
        .header("authorization", format!("Bearer {}", server.handle.admin_token()));
    let a = send(&mut api, req, body("")).await;
    let list: serde_json::Value = serde_json::from_str(&a.text).unwrap();
    assert_eq!(list["tunnels"][0]["basic_auth"], true, "{list}");
    assert!(!a.text.contains("correct horse"), "{}", a.text);

    // Refused visits show in the client's live log, like any other request.
    let logged = next_event(&mut c, |e| matches!(e, Event::Request { status: 401, .. }), Duration::from_secs(5)).await;
    assert!(matches!(logged, Event::Request { ref path, .. } if path == "/"), "{logged:?}");
}

#[tokio::test]
async fn a_tunnel_without_a_login_passes_the_authorization_header_on() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("open".into());
    let (_c, ready) = server.client(vec![t]).await;
    let mut conn = http1_conn(server.http_addr()).await;
    let req = Request::get("/headers").header("host", ready[0].host()).header("authorization", "Bearer app-token");
    let a = send(&mut conn, req, body("")).await;
    assert!(a.text.contains("\"authorization\":\"Bearer app-token\""), "{}", a.text);
}

#[tokio::test]
async fn wrong_guesses_are_limited_per_address() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![with_login("web", app.port(), "guarded")]).await;
    let host = ready[0].host();
    let mut conn = http1_conn(server.http_addr()).await;
    let get = || Request::get("/").header("host", &host);
    // Challenges without credentials do not count: a browser's first request always is one.
    for _ in 0..20 {
        assert_eq!(send(&mut conn, get(), body("")).await.status, 401);
    }
    for i in 0..10 {
        let wrong = get().header("authorization", basic(&format!("ana:guess number {i}")));
        assert_eq!(send(&mut conn, wrong, body("")).await.status, 401, "guess {i}");
    }
    // Then even the right login waits for the block to end, and is told how long.
    let resp = conn.send_request(get().header("authorization", basic(CREDS)).body(body("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 429);
    let secs: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((50..=60).contains(&secs), "{secs}");
}

#[tokio::test]
async fn pool_members_must_ask_for_the_same_login() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let first = with_login("a", app.port(), "pooled").with_group("pooled", "k");
    let (_a, ready) = spawn_ready(server.client_options(vec![first])).await;
    // Same login: joins. Another login, or none: refused (it would let visitors around it).
    let same = with_login("b", app.port(), "pooled").with_group("pooled", "k");
    let (_b, _) = spawn_ready(server.client_options(vec![same])).await;
    let mut other = with_login("c", app.port(), "pooled").with_group("pooled", "k");
    other.basic_auth = Some(BasicAuth::parse("bob:another password").unwrap());
    let mut none = with_login("d", app.port(), "pooled").with_group("pooled", "k");
    none.basic_auth = None;
    for t in [other, none] {
        let mut c = rustunnel_client::ClientHandle::spawn(server.client_options(vec![t]));
        let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
        let Event::Error { message, fatal, .. } = e else { unreachable!() };
        assert!(message.contains("same --basic-auth"), "{message}");
        assert!(fatal);
    }
    let mut conn = http1_conn(server.http_addr()).await;
    let req = Request::get("/").header("host", ready[0].host());
    assert_eq!(send(&mut conn, req, body("")).await.status, 401);
}
