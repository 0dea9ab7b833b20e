//! What a client token may open: which subdomains (exact names or `prefix*` patterns) and
//! which TCP/UDP ports. A token without rights may open anything the server allows; the admin
//! token and a dev server's anonymous owner have no limits. A token can only mint tokens with
//! rights inside its own.
use std::fmt;
use std::ops::RangeInclusive;

use rustunnel_proto::names::validate_subdomain;

/// Most patterns or port ranges in one token.
pub const MAX_ENTRIES: usize = 32;
/// Longest prefix of a `prefix*` pattern: a random part of 10 characters still fits in 63.
pub const MAX_PREFIX: usize = 50;

/// A subdomain a token may use: one name, or every name starting with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Prefix(String),
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// Every name this pattern allows is allowed by `other`.
    fn within(&self, other: &NamePattern) -> bool {
        match (self, other) {
            (NamePattern::Exact(n), o) => o.matches(n),
            (NamePattern::Prefix(p), NamePattern::Prefix(q)) => p.starts_with(q.as_str()),
            (NamePattern::Prefix(_), NamePattern::Exact(_)) => false,
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A token's rights. `None` in a field: no limit there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    pub subdomains: Option<Vec<NamePattern>>,
    pub ports: Option<Vec<RangeInclusive<u16>>>,
}

/// A right that does not parse, or a mint that asks for more than the minting token has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RightsError {
    #[error("subdomain pattern '{0}' is not a subdomain or a prefix followed by '*' (a-z, 0-9, '-', not starting with '-', prefix at most {MAX_PREFIX} characters)")]
    BadPattern(String),
    #[error("port range '{0}' is not a port or two ports joined by '-' (1-65535, the first not above the second)")]
    BadPorts(String),
    #[error("at most {MAX_ENTRIES} subdomain patterns and {MAX_ENTRIES} port ranges")]
    TooMany,
    #[error("an empty list would allow nothing; leave the field out for no limit")]
    Empty,
    #[error("the new token cannot have rights its maker does not have (this token's rights: {0})")]
    Wider(String),
}

impl Rights {
    /// No limits.
    pub fn unrestricted() -> Rights {
        Rights::default()
    }

    /// Rights that allow no subdomain and no port (never parsed from input: an empty list is
    /// refused there).
    pub fn nothing() -> Rights {
        Rights { subdomains: Some(Vec::new()), ports: Some(Vec::new()) }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.subdomains.is_none() && self.ports.is_none()
    }

    /// Parses lists as given on the command line or in the API: subdomain patterns (`docs`,
    /// `ci-*`; `*` alone allows every name) and port ranges (`20000-20099`, `20500`).
    pub fn parse<S: AsRef<str>>(subdomains: Option<&[S]>, ports: Option<&[S]>) -> Result<Rights, RightsError> {
        let subdomains = subdomains.map(parse_patterns).transpose()?;
        let ports = ports.map(parse_ports).transpose()?;
        Ok(Rights { subdomains, ports })
    }

    /// The stored form of each field: comma-separated, `None` for no limit.
    pub fn encode(&self) -> (Option<String>, Option<String>) {
        (self.subdomain_list().map(|l| l.join(",")), self.port_list().map(|l| l.join(",")))
    }

    /// The subdomains for people: the stored form, or "any".
    pub fn names_text(&self) -> String {
        self.subdomain_list().map_or_else(|| "any".into(), |l| l.join(","))
    }

    /// The ports for people: the stored form, or "any".
    pub fn ports_text(&self) -> String {
        self.port_list().map_or_else(|| "any".into(), |l| l.join(","))
    }

    /// Reads the stored form back.
    pub fn decode(subdomains: Option<&str>, ports: Option<&str>) -> Result<Rights, RightsError> {
        let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let s = subdomains.map(split);
        let p = ports.map(split);
        Rights::parse(s.as_deref(), p.as_deref())
    }

    /// The subdomain patterns as strings (`None`: no limit), for the API.
    pub fn subdomain_list(&self) -> Option<Vec<String>> {
        self.subdomains.as_ref().map(|p| p.iter().map(ToString::to_string).collect())
    }

    /// The port ranges as strings (`None`: no limit), for the API.
    pub fn port_list(&self) -> Option<Vec<String>> {
        self.ports.as_ref().map(|r| r.iter().map(range_str).collect())
    }

    pub fn allows_subdomain(&self, name: &str) -> bool {
        self.subdomains.as_ref().is_none_or(|p| p.iter().any(|p| p.matches(name)))
    }

    pub fn allows_port(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|r| r.iter().any(|r| r.contains(&port)))
    }

    /// Where a random subdomain for this token must start: `Some("")` with no limit, the first
    /// `prefix*` pattern's prefix, or `None` when the token may only use exact names.
    pub fn random_prefix(&self) -> Option<&str> {
        match &self.subdomains {
            None => Some(""),
            Some(p) => p.iter().find_map(|p| match p {
                NamePattern::Prefix(q) => Some(q.as_str()),
                NamePattern::Exact(_) => None,
            }),
        }
    }

    /// Every subdomain and port `self` allows is allowed by `maker`.
    pub fn within(&self, maker: &Rights) -> bool {
        let names = match (&self.subdomains, &maker.subdomains) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => mine.iter().all(|p| theirs.iter().any(|q| p.within(q))),
        };
        let ports = match (&self.ports, &maker.ports) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => {
                let theirs = merged(theirs);
                mine.iter().all(|r| theirs.iter().any(|t| t.start() <= r.start() && r.end() <= t.end()))
            }
        };
        names && ports
    }

    /// The rights of a token minted by `maker` that asked for `self`: each field left out is
    /// inherited; anything wider than the maker's is refused.
    pub fn minted_by(self, maker: &Rights) -> Result<Rights, RightsError> {
        let wanted = Rights {
            subdomains: self.subdomains.or_else(|| maker.subdomains.clone()),
            ports: self.ports.or_else(|| maker.ports.clone()),
        };
        if wanted.within(maker) {
            Ok(wanted)
        } else {
            Err(RightsError::Wider(maker.to_string()))
        }
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subdomains {}, ports {}", self.names_text(), self.ports_text())
    }
}

fn range_str(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

fn parse_patterns<S: AsRef<str>>(list: &[S]) -> Result<Vec<NamePattern>, RightsError> {
    let mut out = Vec::new();
    for raw in list {
        let s = raw.as_ref().trim();
        let bad = || RightsError::BadPattern(s.chars().take(80).collect());
        let pattern = match s.strip_suffix('*') {
            Some(prefix) => {
                let ok_chars = prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                // `*` alone (an empty prefix) allows every name.
                if prefix.len() > MAX_PREFIX || !ok_chars || prefix.starts_with('-') || prefix.starts_with("xn--") {
                    return Err(bad());
                }
                NamePattern::Prefix(prefix.to_owned())
            }
            None => {
                validate_subdomain(s).map_err(|_| bad())?;
                NamePattern::Exact(s.to_owned())
            }
        };
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    check_count(out.len())?;
    Ok(out)
}

fn parse_ports<S: AsRef<str>>(list: &[S]) -> Result<Vec<RangeInclusive<u16>>, RightsError> {
    let mut out = Vec::new();
    for raw in list {
        let s = raw.as_ref().trim();
        let bad = || RightsError::BadPorts(s.chars().take(80).collect());
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        let range = match s.split_once('-') {
            Some((a, b)) => port(a)?..=port(b)?,
            None => port(s)?..=port(s)?,
        };
        if range.is_empty() {
            return Err(bad());
        }
        if !out.contains(&range) {
            out.push(range);
        }
    }
    check_count(out.len())?;
    Ok(out)
}

fn check_count(n: usize) -> Result<(), RightsError> {
    match n {
        0 => Err(RightsError::Empty),
        n if n > MAX_ENTRIES => Err(RightsError::TooMany),
        _ => Ok(()),
    }
}

/// Sorted, with touching and overlapping ranges joined: a range spanning two of a maker's
/// adjacent ranges is within them.
fn merged(ranges: &[RangeInclusive<u16>]) -> Vec<RangeInclusive<u16>> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| *r.start());
    let mut out: Vec<RangeInclusive<u16>> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                *last = *last.start()..=(*last.end()).max(*r.end());
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(s: Option<&[&str]>, p: Option<&[&str]>) -> Rights {
        Rights::parse(s, p).unwrap()
    }

    #[test]
    fn patterns_and_ports_parse_match_and_round_trip() {
        let r = rights(Some(&["docs", "ci-*", " docs "]), Some(&["20000-20099", "20500"]));
        assert_eq!(r.subdomains.as_ref().unwrap().len(), 2, "duplicates dropped");
        assert!(r.allows_subdomain("docs") && r.allows_subdomain("ci-123") && r.allows_subdomain("ci-"));
        assert!(!r.allows_subdomain("doc") && !r.allows_subdomain("xci-1") && !r.allows_subdomain("docs2"));
        assert!(r.allows_port(20000) && r.allows_port(20099) && r.allows_port(20500));
        assert!(!r.allows_port(20100) && !r.allows_port(19999));
        assert_eq!(r.random_prefix(), Some("ci-"));
        let (s, p) = r.encode();
        assert_eq!((s.as_deref(), p.as_deref()), (Some("docs,ci-*"), Some("20000-20099,20500")));
        assert_eq!(Rights::decode(s.as_deref(), p.as_deref()).unwrap(), r);
        assert_eq!(r.to_string(), "subdomains docs,ci-*, ports 20000-20099,20500");
        // A star alone allows every name; exact names only leave no random prefix.
        let star = rights(Some(&["*"]), None);
        assert!(star.allows_subdomain("anything") && star.random_prefix() == Some(""));
        assert_eq!(rights(Some(&["docs"]), None).random_prefix(), None);
        assert_eq!(Rights::unrestricted().random_prefix(), Some(""));
        assert!(Rights::unrestricted().allows_subdomain("anything") && Rights::unrestricted().allows_port(1));
    }

    #[test]
    fn bad_rights_are_refused_with_the_reason() {
        for bad in ["", "Docs", "-x*", "*x", "a*b*", "www", "xn--abc", "xn--*", "a b", &"a".repeat(64), "ab\u{430}*"] {
            let e = Rights::parse(Some(&[bad]), None).unwrap_err();
            assert!(matches!(e, RightsError::BadPattern(_)), "{bad:?}: {e}");
        }
        let long_prefix = format!("{}*", "a".repeat(51));
        assert!(Rights::parse(Some(&[long_prefix.as_str()]), None).is_err());
        for bad in ["0", "70000", "20-10", "a-b", "1-", "-5", "1-2-3", ""] {
            let e = Rights::parse(None, Some(&[bad])).unwrap_err();
            assert!(matches!(e, RightsError::BadPorts(_)), "{bad:?}: {e}");
        }
        let empty: &[&str] = &[];
        assert_eq!(Rights::parse(Some(empty), None).unwrap_err(), RightsError::Empty);
        assert_eq!(Rights::parse(None, Some(empty)).unwrap_err(), RightsError::Empty);
        let many: Vec<String> = (0..33).map(|i| format!("name{i}")).collect();
        assert_eq!(Rights::parse(Some(&many), None).unwrap_err(), RightsError::TooMany);
    }

    #[test]
    fn a_minted_token_stays_within_its_maker() {
        let maker = rights(Some(&["ci-*", "docs"]), Some(&["20000-20049", "20050-20099"]));
        // Left out: inherited.
        assert_eq!(Rights::unrestricted().minted_by(&maker).unwrap(), maker);
        // Narrower: kept.
        let narrow = rights(Some(&["ci-web-*", "ci-db", "docs"]), Some(&["20010-20060"]));
        assert_eq!(narrow.clone().minted_by(&maker).unwrap(), narrow);
        // Wider: refused, naming the maker's rights.
        for wider in [
            rights(Some(&["c*"]), None),
            rights(Some(&["docs2"]), None),
            rights(Some(&["*"]), Some(&["20000"])),
            rights(None, Some(&["19999-20010"])),
            rights(None, Some(&["20090-20100"])),
        ] {
            let e = wider.clone().minted_by(&maker).unwrap_err();
            assert!(matches!(&e, RightsError::Wider(m) if m.contains("ci-*")), "{wider:?}: {e}");
        }
        // An unrestricted maker may mint anything.
        assert_eq!(narrow.clone().minted_by(&Rights::unrestricted()).unwrap(), narrow);
    }
}
