//! Subdomain rules, and which characters of a name or label a listing cannot show as they are.

/// Whether `c` would not appear as itself where a name, label or path is shown: a control
/// character (terminal escape sequences) or an invisible formatting one (soft hyphen,
/// bidirectional controls such as U+202E, zero-width characters, the byte-order mark,
/// interlinear annotation). Token labels refuse them; the CLI writes them out as `\u{..}`.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Names nobody may claim: they collide with the service's own hosts or with
/// well-known prefixes used for certificates and mail.
pub const RESERVED_SUBDOMAINS: &[&str] = &[
    "www",
    "api",
    "admin",
    "dashboard",
    "mail",
    "smtp",
    "imap",
    "pop",
    "ftp",
    "ns",
    "ns1",
    "ns2",
    "dns",
    "mx",
    "status",
    "metrics",
    "control",
    "edge",
    "tunnel",
    "rustunnel",
    "root",
    "localhost",
    "static",
    "cdn",
    "auth",
    "login",
    "_acme-challenge",
    "autoconfig",
    "autodiscover",
    "wpad",
    "isatap",
];

/// Why a subdomain is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubdomainError {
    #[error("subdomain must be 3 to 63 characters long")]
    Length,
    #[error("subdomain may contain only lowercase letters a-z, digits and '-'")]
    Charset,
    #[error("subdomain must not start or end with '-'")]
    Hyphen,
    #[error("subdomain '{0}' is reserved")]
    Reserved(String),
    #[error("punycode (xn--) subdomains are not allowed")]
    Punycode,
}

/// Checks a requested subdomain: 3-63 characters of `a-z0-9-`, no leading or trailing `-`,
/// not reserved, not punycode (lookalike names).
pub fn validate_subdomain(name: &str) -> Result<(), SubdomainError> {
    if name.len() < 3 || name.len() > 63 {
        return Err(SubdomainError::Length);
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(SubdomainError::Charset);
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(SubdomainError::Hyphen);
    }
    if name.starts_with("xn--") {
        return Err(SubdomainError::Punycode);
    }
    if RESERVED_SUBDOMAINS.contains(&name) {
        return Err(SubdomainError::Reserved(name.to_string()));
    }
    Ok(())
}

/// The single label in front of the domain, or `None` when the host is not one of ours
/// (IP literals, trailing dots, nested labels, other domains).
pub fn subdomain_of<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    if host.ends_with('.') || host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let sub = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!sub.is_empty() && !sub.contains('.')).then_some(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_routing_rules() {
        assert_eq!(subdomain_of("app.localhost", "localhost"), Some("app"));
        assert_eq!(subdomain_of("app.localhost.", "localhost"), None);
        assert_eq!(subdomain_of("a.b.localhost", "localhost"), None);
        assert_eq!(subdomain_of("localhost", "localhost"), None);
        assert_eq!(subdomain_of("applocalhost", "localhost"), None);
        assert_eq!(subdomain_of("127.0.0.1", "localhost"), None);
        assert_eq!(subdomain_of("[::1]", "localhost"), None);
        assert_eq!(subdomain_of("app.example.com", "localhost"), None);
    }

    #[test]
    fn hidden_characters() {
        for c in ['\x1b', '\n', '\u{7f}', '\u{ad}', '\u{200b}', '\u{202e}', '\u{2066}', '\u{feff}'] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', ' ', 'é', '日', '-', '\u{2070}'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
    }

    #[test]
    fn accepts_plain_names() {
        for n in ["abc", "my-app", "a1b2c3", &"x".repeat(63)] {
            assert_eq!(validate_subdomain(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_subdomain("ab"), Err(SubdomainError::Length));
        assert_eq!(validate_subdomain(&"x".repeat(64)), Err(SubdomainError::Length));
        assert_eq!(validate_subdomain("MyApp"), Err(SubdomainError::Charset));
        assert_eq!(validate_subdomain("my_app"), Err(SubdomainError::Charset));
        assert_eq!(validate_subdomain("my.app"), Err(SubdomainError::Charset));
        assert_eq!(validate_subdomain("-app"), Err(SubdomainError::Hyphen));
        assert_eq!(validate_subdomain("app-"), Err(SubdomainError::Hyphen));
        assert_eq!(validate_subdomain("xn--pple-43d"), Err(SubdomainError::Punycode));
        for r in ["www", "api", "admin"] {
            assert!(matches!(validate_subdomain(r), Err(SubdomainError::Reserved(_))));
        }
        assert_eq!(validate_subdomain("аpp"), Err(SubdomainError::Charset)); // Cyrillic a
    }
}
