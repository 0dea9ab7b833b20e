//! The rule for webhook URLs (pool alerts), shared by the configuration and the members that
//! give one.
use http::Uri;

/// Longest webhook URL accepted.
pub const MAX_WEBHOOK_LEN: usize = 512;

/// A webhook URL that is not `http://host[:port]/path` (or is too long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook URL must be http://host[:port]/path (got '{0}')")]
pub struct BadWebhookUrl(pub String);

/// Checks a webhook URL before it is accepted from a member or the configuration.
pub fn parse_webhook(url: &str) -> Result<Uri, BadWebhookUrl> {
    let bad = || BadWebhookUrl(url.chars().take(80).collect());
    if url.len() > MAX_WEBHOOK_LEN {
        return Err(bad());
    }
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(uri)
}
