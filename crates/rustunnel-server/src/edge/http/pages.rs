//! Error pages served by the edge itself. They name the problem and what to do, and expose no
//! internals (no addresses, no stack traces, no versions).
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// One of the edge's pages: a status and a small HTML body.
pub struct Page {
    pub status: StatusCode,
    pub body: Bytes,
    /// One more header some pages need (`www-authenticate`, `retry-after`).
    pub extra: Option<(&'static str, String)>,
}

/// The headers of every page (besides its length).
const HEADERS: [(&str, &str); 3] =
    [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"), ("x-rustunnel-error", "1")];

impl Page {
    pub fn response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        for (name, value) in HEADERS {
            r.headers_mut().insert(name, header::HeaderValue::from_static(value));
        }
        if let Some((name, value)) = self.extra {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    }

    /// The page as an HTTP/1.1 response, with `connection: close` when `close`.
    pub fn h1(&self, close: bool) -> Vec<u8> {
        let reason = self.status.canonical_reason().unwrap_or("");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status.as_u16());
        for (name, value) in HEADERS {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some((name, value)) = &self.extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        // RFC 9110 6.6.1: an origin with a clock sends Date (hyper adds it on its own path).
        head.push_str(&format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())));
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

pub fn page(status: StatusCode, title: &str, detail: &str) -> Page {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}\
         h1{{font-size:1.4em}}p{{color:#555}}</style></head><body><h1>{code} {title}</h1><p>{detail}</p>\
         <p><small>rustunnel</small></p></body></html>\n",
        code = status.as_u16(),
    );
    Page { status, body: Bytes::from(body), extra: None }
}

pub fn address_refused() -> Page {
    page(StatusCode::FORBIDDEN, "Access denied", "This tunnel does not accept visitors from your network address.")
}
pub fn unauthorized() -> Page {
    Page {
        extra: Some(("www-authenticate", "Basic realm=\"rustunnel\", charset=\"UTF-8\"".into())),
        ..page(StatusCode::UNAUTHORIZED, "Login required", "This tunnel asks for a user name and password.")
    }
}
pub fn too_many_logins(retry_after_secs: u64) -> Page {
    Page {
        extra: Some(("retry-after", retry_after_secs.to_string())),
        ..page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins",
            "Too many wrong user names or passwords came from this address. Try again in a minute.",
        )
    }
}

pub fn not_found() -> Page {
    page(
        StatusCode::NOT_FOUND,
        "Tunnel not found",
        "No tunnel is open for this host name. Check the URL, or start the tunnel again.",
    )
}
pub fn headers_too_large() -> Page {
    page(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "Request headers too large",
        "This edge takes at most 100 header fields and 64 KiB of request head.",
    )
}
pub fn uri_too_long() -> Page {
    page(
        StatusCode::URI_TOO_LONG,
        "Request target too long",
        "This edge takes a request line of at most 64 KiB; send long data in the request body.",
    )
}
pub fn bad_request(why: &str) -> Page {
    page(StatusCode::BAD_REQUEST, "Bad request", why)
}
pub fn bad_gateway() -> Page {
    page(StatusCode::BAD_GATEWAY, "Tunnel unavailable", "The tunnel client for this host is not connected or did not answer. It may be reconnecting; try again in a moment.")
}
pub fn local_closed() -> Page {
    page(
        StatusCode::BAD_GATEWAY,
        "No answer from the local service",
        "The service behind this tunnel accepted the request and closed the connection without answering.",
    )
}
pub fn gateway_timeout() -> Page {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "Local service too slow",
        "The service behind this tunnel did not answer in time.",
    )
}
pub fn method_not_allowed() -> Page {
    page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "This edge is not a forward proxy.")
}
pub fn busy() -> Page {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Tunnel busy",
        "This tunnel is serving as many requests as it may at once. Try again shortly.",
    )
}
pub fn no_healthy_member() -> Page {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy backend",
        "Every service behind this load-balanced tunnel is failing its health check. Try again shortly.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` holds something shaped like an IPv4 address (`1.2.3.4`).
    fn has_ipv4(s: &str) -> bool {
        s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|w| w.split('.').filter(|p| !p.is_empty() && p.len() <= 3).count() == 4)
    }

    #[test]
    fn pages_name_the_problem_and_expose_no_internals() {
        let pages = [
            address_refused(),
            unauthorized(),
            too_many_logins(60),
            not_found(),
            headers_too_large(),
            uri_too_long(),
            bad_request("The request target is not valid."),
            bad_gateway(),
            local_closed(),
            gateway_timeout(),
            method_not_allowed(),
            busy(),
            no_healthy_member(),
        ];
        for p in pages {
            let status = p.status;
            let wire = String::from_utf8(p.h1(true)).unwrap();
            let text = wire.to_ascii_lowercase();
            assert!(text.contains(&format!("<h1>{} ", status.as_u16())), "{wire}");
            for leak in [
                env!("CARGO_PKG_VERSION"),
                "rustunnel-server",
                "localhost",
                "::1",
                ".rs",
                "panicked",
                "backtrace",
                "hyper",
                "tokio",
                "\r\nserver:",
            ] {
                assert!(!text.contains(leak), "{status}: {leak:?} in\n{wire}");
            }
            assert!(!has_ipv4(&text), "{status}: an address in\n{wire}");
        }
        assert!(has_ipv4("at 10.0.0.1:80") && !has_ipv4("0.1.0"));
    }
}
