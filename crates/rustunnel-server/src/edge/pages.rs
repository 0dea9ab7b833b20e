//! Error pages served by the edge itself. They name the problem and what to do, and expose no
//! internals (no addresses, no stack traces, no versions).
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

pub fn page(status: StatusCode, title: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}\
         h1{{font-size:1.4em}}p{{color:#555}}</style></head><body><h1>{code} {title}</h1><p>{detail}</p>\
         <p><small>rustunnel</small></p></body></html>\n",
        code = status.as_u16(),
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-rustunnel-error", header::HeaderValue::from_static("1"));
    r
}

pub fn not_found() -> Response<Full<Bytes>> {
    page(
        StatusCode::NOT_FOUND,
        "Tunnel not found",
        "No tunnel is open for this host name. Check the URL, or start the tunnel again.",
    )
}
pub fn bad_request(why: &str) -> Response<Full<Bytes>> {
    page(StatusCode::BAD_REQUEST, "Bad request", why)
}
pub fn bad_gateway() -> Response<Full<Bytes>> {
    page(StatusCode::BAD_GATEWAY, "Tunnel unavailable", "The tunnel client for this host is not connected or did not answer. It may be reconnecting; try again in a moment.")
}
pub fn gateway_timeout() -> Response<Full<Bytes>> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "Local service too slow",
        "The service behind this tunnel did not answer in time.",
    )
}
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "This edge is not a forward proxy.")
}
pub fn busy() -> Response<Full<Bytes>> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Tunnel busy",
        "This tunnel is serving as many requests as it may at once. Try again shortly.",
    )
}
pub fn no_healthy_member() -> Response<Full<Bytes>> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy backend",
        "Every service behind this load-balanced tunnel is failing its health check. Try again shortly.",
    )
}
