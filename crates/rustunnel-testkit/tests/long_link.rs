//! The tunnel over a long link: a relay adding 20 ms each way between client and server (the
//! kernel here has no netem). Bodies arrive whole and in order both ways while the multiplexer's
//! windows grow, with small requests going on beside them.
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_a_long_link_arrives_whole_both_ways() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let relay = delay_relay(server.handle.control_addr(), Duration::from_millis(20)).await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.server = relay.addr.to_string();
    let (_c, ready) = spawn_ready(opts).await;
    let (edge, host) = (server.http_addr(), ready[0].host());

    let mut transfers = Vec::new();
    for i in 0..3 {
        let host = host.clone();
        // Downloads of different sizes at once, each on its own visitor connection.
        transfers.push(tokio::spawn(async move {
            let n = 6_000_000 + i * 777;
            let mut conn = http1_conn(edge).await;
            let req = Request::get(format!("/big?n={n}")).header("host", &host).body(body("")).unwrap();
            let got = conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got.len(), n);
            assert_eq!(sha256_hex(&got), sha256_hex(&pattern(n)));
        }));
    }
    {
        // An upload the other way.
        let host = host.clone();
        transfers.push(tokio::spawn(async move {
            let mut conn = http1_conn(edge).await;
            let data = pattern(5_000_000);
            let req = Request::post("/hash").header("host", &host).body(body(data.clone())).unwrap();
            let got = conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, sha256_hex(&data));
        }));
    }
    // Small requests keep being answered meanwhile.
    let mut conn = http1_conn(edge).await;
    for _ in 0..10 {
        // The connection's task may still be finishing the last response (another thread).
        conn.ready().await.unwrap();
        let req = Request::get("/").header("host", &host).body(body("")).unwrap();
        let got = conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, "hello from app\n");
    }
    for t in transfers {
        tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
}
