//! From server state and store rows to the shared REST DTOs, and RFC 3339 timestamps.
use rustunnel_api_types as dto;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::config::RegionConfig;
use crate::state::Shared;
use crate::store::{HistoryRecord, TokenRecord};
use crate::tunnel::Tunnel;

/// `2024-05-01T12:00:00.000Z`: UTC, millisecond precision.
const RFC3339_MS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Unix milliseconds as RFC 3339 UTC with millisecond precision (`2024-05-01T12:00:00.000Z`).
/// Instants beyond the years 1-9999 (only a corrupt row holds one) show as the nearest end.
pub fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(if ms < 0 {
        PrimitiveDateTime::MIN.assume_utc()
    } else {
        PrimitiveDateTime::MAX.assume_utc()
    });
    t.format(RFC3339_MS).unwrap_or_default()
}

pub fn tunnel(shared: &Shared, t: &Tunnel) -> dto::Tunnel {
    let (bytes_in, bytes_out, requests, connections) = t.stats.get();
    let (cidr_allow, cidr_deny) = t.access.ip_rules.lists();
    dto::Tunnel {
        id: t.id.clone(),
        name: t.name.clone(),
        protocol: t.protocol.to_string(),
        public_url: t.info.public_url.clone(),
        public_urls: t.info.public_urls.clone(),
        subdomain: t.info.subdomain.clone(),
        port: t.info.remote_port,
        local_addr: t.local_addr.clone(),
        client_addr: t.session.peer.to_string(),
        region: shared.config().region.id.clone(),
        owner_id: t.session.principal.owner_id.clone(),
        created_at: rfc3339(t.opened_at_ms),
        bytes_in,
        bytes_out,
        requests,
        connections,
        status: "active".into(),
        basic_auth: t.access.basic_auth.is_some(),
        cidr_allow,
        cidr_deny,
    }
}

/// A history row; an open tunnel's counters are read live rather than from the row (which
/// gets them only at close).
pub fn history(shared: &Shared, h: HistoryRecord) -> dto::HistoryEntry {
    let live = if h.closed_at.is_none() { shared.tunnel(&h.id).map(|t| t.stats.get()) } else { None };
    let nonneg = |v: i64| u64::try_from(v).unwrap_or(0);
    let (bytes_in, bytes_out, requests, connections) =
        live.unwrap_or((nonneg(h.bytes_in), nonneg(h.bytes_out), nonneg(h.requests), nonneg(h.connections)));
    dto::HistoryEntry {
        id: h.id,
        name: h.name,
        protocol: h.protocol,
        public_url: h.public_url,
        subdomain: h.subdomain,
        port: h.port.and_then(|p| u16::try_from(p).ok()),
        local_addr: h.local_addr,
        client_addr: h.client_addr,
        region: h.region,
        owner_id: h.owner_id,
        opened_at: rfc3339(h.opened_at),
        closed_at: h.closed_at.map(rfc3339),
        active: h.closed_at.is_none(),
        bytes_in,
        bytes_out,
        requests,
        connections,
        close_reason: h.close_reason,
    }
}

pub fn token(t: TokenRecord) -> dto::Token {
    dto::Token {
        id: t.id,
        label: t.label,
        owner_id: t.owner_id,
        created_at: rfc3339(t.created_at),
        last_used_at: t.last_used_at.map(rfc3339),
        subdomains: t.rights.subdomain_list(),
        ports: t.rights.port_list(),
    }
}

pub fn region(r: &RegionConfig) -> dto::Region {
    dto::Region {
        id: r.id.clone(),
        name: r.name.clone(),
        location: r.location.clone(),
        control_addr: r.control_addr.clone(),
        api_url: r.api_url.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
