use super::*;
use crate::edge::http::limits::MAX_HEADERS;

fn lean(req: &str) -> ReqHead {
    match parse_request(req.as_bytes(), "192.0.2.7", "http") {
        Parsed::Lean(h) => h,
        Parsed::Partial => panic!("partial: {req}"),
        Parsed::HandOver => panic!("handed over: {req}"),
        Parsed::TooLarge => panic!("too large: {req}"),
    }
}

fn handed_over(req: &str) -> bool {
    matches!(parse_request(req.as_bytes(), "192.0.2.7", "http"), Parsed::HandOver)
}

#[test]
fn the_authorization_line_is_found_for_a_tunnel_with_a_login_to_take_out() {
    let h = lean("GET / HTTP/1.1\r\nHost: a.localhost\r\nauthorization:   Basic eDp5  \r\nAccept: */*\r\n\r\n");
    assert_eq!(h.authorization_value(), Some(&b"Basic eDp5"[..]));
    let mut out = h.out.clone();
    out.drain(h.authorization.clone().unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("GET / HTTP/1.1\r\nHost: a.localhost\r\nAccept: */*\r\n"), "{text}");
    assert!(!text.to_lowercase().contains("authorization"), "{text}");
    assert_eq!(lean("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n").authorization_value(), None);
    // Two of them: hyper's path judges.
    assert!(handed_over("GET / HTTP/1.1\r\nHost: a.localhost\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"));
}

#[test]
fn the_login_line_goes_and_the_host_line_is_replaced_in_either_order() {
    for req in [
        "GET / HTTP/1.1\r\nHost: app.localhost:8080\r\nAccept: */*\r\nAuthorization: Basic eDp5\r\nX-A: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\nAccept: */*\r\nHost: app.localhost:8080\r\nX-A: 1\r\n\r\n",
    ] {
        let h = lean(req);
        let mut out = h.out.clone();
        edit_head(&mut out, h.authorization.clone(), Some((h.host_line.clone(), "localhost:3000")));
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert!(lines.contains(&"Host: localhost:3000") && lines.contains(&"Accept: */*"), "{text}");
        assert!(lines.contains(&"X-A: 1") && lines.contains(&"x-forwarded-host: app.localhost:8080"), "{text}");
        assert!(!text.contains("Authorization") && !text.contains("Host: app."), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}

#[test]
fn request_heads_are_rewritten_for_the_local_service() {
    let h = lean(
        "GET /a?b=1 HTTP/1.1\r\nHost: App.localhost:8080\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
         X-Forwarded-For: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\nrest",
    );
    let out = String::from_utf8(h.out).unwrap();
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nHost: App.localhost:8080\r\nAccept: */*\r\nx-forwarded-host: App.localhost:8080\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\nx-forwarded-proto: http\r\n\r\n"
    );
    assert_eq!(h.host_name, "app.localhost");
    assert_eq!(h.len, h.len.min(1000));
    assert!(!h.close);
    assert_eq!(h.body, 0);
}

#[test]
fn connection_cannot_drop_the_framing_or_routing_headers() {
    let h = lean(
        "POST / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close, content-length, host\r\nContent-Length: 3\r\n\r\n",
    );
    let out = String::from_utf8(h.out).unwrap();
    assert!(out.contains("Content-Length: 3\r\n") && out.contains("Host: a.localhost\r\n"), "{out}");
    assert!(h.close);
    assert_eq!(h.body, 3);
}

#[test]
fn what_hyper_must_judge_is_handed_over() {
    for req in [
        "GET / HTTP/1.0\r\nHost: a.localhost\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: +4\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.localhost\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: a.localhost\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "CONNECT a.localhost:443 HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
        "GET http://a.localhost/ HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.localhost\r\nBad Header: x\r\n\r\n",
    ] {
        assert!(handed_over(req), "{req}");
    }
    assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nHost: a", "x", "http"), Parsed::Partial));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.0\r\nHost: a.localhost\r\n{many}\r\n");
    assert!(matches!(parse_request(req.as_bytes(), "x", "http"), Parsed::TooLarge));
}

fn resp(r: &str, head_method: bool) -> RespHead {
    parse_response(r.as_bytes(), head_method, false).unwrap().unwrap()
}

#[test]
fn response_framing_follows_the_local_service() {
    let h = resp(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
        false,
    );
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.reusable);
    assert_eq!(String::from_utf8(h.out).unwrap(), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    let h = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", false);
    assert!(matches!(h.framing, Framing::Chunked(_)));
    assert_eq!(String::from_utf8(h.out).unwrap(), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let h = resp("HTTP/1.0 200 OK\r\n\r\n", false);
    assert_eq!(h.framing, Framing::Close);
    assert!(!h.reusable);
    assert!(String::from_utf8(h.out).unwrap().ends_with("connection: close\r\n\r\n"));
    let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
    assert_eq!(h.framing, Framing::Empty);
    let h = resp("HTTP/1.1 304 Not Modified\r\n\r\n", false);
    assert_eq!(h.framing, Framing::Empty);
    let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false);
    assert!(!h.reusable);
    let h = resp("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false);
    assert!(h.interim);
    for bad in [
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 003 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "SSH-2.0-x\r\n\r\n",
        // Faulty framing (RFC 9112 6.1): read as chunked or not, depending on the client.
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(parse_response(bad.as_bytes(), false, false).is_err(), "{bad}");
    }
    // A coding that is not text, before a final chunked in another field: one visitor
    // would read chunked, another would not.
    let odd = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xff\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(parse_response(odd, false, false).is_err());
    let two = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    assert!(matches!(two.framing, Framing::Chunked(_)));
}
