//! Reloading the configuration of a running server (SIGHUP): the settings that can change
//! without dropping a tunnel or a connection are applied, the others are named as needing a
//! restart, and a configuration that does not load leaves the server exactly as it was.
//!
//! Applied live: the log level, the operator's certificate files (re-read on every reload, so
//! renewed files take effect; new handshakes get them), the alert webhook, the regions list.
use crate::config::{Config, ConfigError, TlsSource};
use crate::logging::LogControl;
use crate::state::Shared;
use crate::tls::{TlsError, TlsMaterial};

/// A reload that changed nothing: the server runs on as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Settings now in effect.
    pub applied: Vec<String>,
    /// Settings that differ from the running ones but take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "nothing".to_string() } else { v.join(", ") };
        let restart: Vec<String> = self.needs_restart.iter().map(|s| s.to_string()).collect();
        write!(f, "configuration reloaded: applied {}; needs a restart: {}", list(&self.applied), list(&restart))
    }
}

/// Applies `new` to the running server, whose configuration is `current` (updated to what now
/// runs). Everything is checked before anything is applied.
pub fn apply(
    shared: &Shared,
    current: &mut Config,
    new: Config,
    log: Option<&LogControl>,
) -> Result<Outcome, ReloadError> {
    let mut out = Outcome { needs_restart: needs_restart(current, &new), ..Default::default() };
    // Files to files: re-read (renewed certificates keep their paths). A switch between files
    // and the generated CA changes what clients must trust: that takes a restart.
    let cert = match (&current.tls, &new.tls) {
        (TlsSource::Files { .. }, TlsSource::Files { cert, key }) if shared.tls().has_operator_files() => {
            Some(TlsMaterial::read_operator_files(cert, key)?)
        }
        _ => None,
    };

    if new.log_level != current.log_level {
        let applied = match log {
            Some(l) => l.set_level(&new.log_level).map_err(|e| ConfigError::Invalid(e.to_string()))?,
            None => false,
        };
        out.applied.push(if applied {
            format!("log_level {}", new.log_level)
        } else {
            format!("log_level {} (RUSTUNNEL_LOG overrides it)", new.log_level)
        });
        current.log_level = new.log_level.clone();
    }
    if let Some(cert) = cert {
        shared.tls().replace_operator_cert(cert);
        out.applied.push("tls certificate files (re-read)".into());
        current.tls = new.tls.clone();
    }
    if new.alert_webhook != current.alert_webhook {
        shared.live().set_alert_webhook(new.alert_webhook.clone());
        out.applied.push("alert_webhook".into());
        current.alert_webhook = new.alert_webhook.clone();
    }
    if new.regions != current.regions {
        shared.live().set_regions(new.regions.clone());
        out.applied.push("regions".into());
        current.regions = new.regions;
    }
    Ok(out)
}

/// The settings that differ between `old` and `new` and only a restart applies, in the order
/// of the configuration file.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let tls_kind = |t: &TlsSource| matches!(t, TlsSource::Files { .. });
    let checks: [(&'static str, bool); 29] = [
        ("dev", old.dev != new.dev),
        ("domain", old.domain != new.domain),
        ("control_addr", old.control_addr != new.control_addr),
        ("api_addr", old.api_addr != new.api_addr),
        ("http_addr", old.http_addr != new.http_addr),
        ("https_addr", old.https_addr != new.https_addr),
        ("tcp_ports", old.tcp_ports != new.tcp_ports),
        ("udp_ports", old.udp_ports != new.udp_ports),
        ("data_dir", old.data_dir != new.data_dir),
        ("admin_token", old.admin_token != new.admin_token),
        ("tls_cert/tls_key (files vs. generated CA)", tls_kind(&old.tls) != tls_kind(&new.tls)),
        ("database_url", old.database_url != new.database_url),
        ("public_http_port", old.public_http_port != new.public_http_port),
        ("public_https_port", old.public_https_port != new.public_https_port),
        ("region_id", old.region.id != new.region.id),
        ("region_name", old.region.name != new.region.name),
        ("region_location", old.region.location != new.region.location),
        ("reservation_grace_secs", old.reservation_grace != new.reservation_grace),
        ("response_timeout_secs", old.response_timeout != new.response_timeout),
        ("drain_timeout_secs", old.drain_timeout != new.drain_timeout),
        ("heartbeat_secs", old.heartbeat != new.heartbeat),
        ("udp_idle_secs", old.udp_idle != new.udp_idle),
        ("history_retention_days", old.history_retention != new.history_retention),
        ("max_requests_per_tunnel", old.max_requests_per_tunnel != new.max_requests_per_tunnel),
        ("pool_size", old.pool_size != new.pool_size),
        ("p2p_udp_addr", old.p2p_udp != new.p2p_udp),
        ("allow_plain_data", old.allow_plain_data != new.allow_plain_data),
        ("log_format", old.log_format != new.log_format),
        ("proxy_protocol_from", old.proxy_protocol_from != new.proxy_protocol_from),
    ];
    checks.into_iter().filter(|(_, differs)| *differs).map(|(name, _)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn config(toml: &str) -> Config {
        let f = FileConfig::from_toml(toml).unwrap();
        Config::from_file_config(FileConfig { admin_token: Some("a".repeat(32)), ..f }).unwrap()
    }

    #[test]
    fn changes_that_need_a_restart_are_named() {
        let old = config("domain = \"a.example\"\nlog_level = \"info\"");
        let new = config("domain = \"b.example\"\nlog_level = \"debug\"\nhttp_addr = \"0.0.0.0:8080\"");
        assert_eq!(needs_restart(&old, &new), vec!["domain", "http_addr"]);
        assert!(needs_restart(&old, &old.clone()).is_empty());
    }

    #[test]
    fn the_outcome_is_one_line() {
        let o = Outcome { applied: vec!["regions".into()], needs_restart: vec!["domain"] };
        assert_eq!(o.to_string(), "configuration reloaded: applied regions; needs a restart: domain");
        assert_eq!(Outcome::default().to_string(), "configuration reloaded: applied nothing; needs a restart: nothing");
    }
}
