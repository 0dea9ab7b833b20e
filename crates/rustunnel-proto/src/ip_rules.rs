//! Which visitor addresses a tunnel accepts (`--cidr-allow`, `--cidr-deny`). Judged on the L4
//! peer address only, never on forwarding headers a visitor can write. Both ends check the
//! syntax, so the client refuses a bad rule before connecting.
use std::net::IpAddr;

use ipnet::IpNet;

/// Most networks in each list.
pub const MAX_RULES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRuleError {
    #[error("'{0}' is not an IP address or network (e.g. 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)")]
    Syntax(String),
    #[error("at most {MAX_RULES} networks in each of cidr_allow and cidr_deny")]
    TooMany,
}

/// A tunnel's address rules: a visitor in a denied network is refused; when any network is
/// allowed, a visitor outside all of them is refused too; no rules admit everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn parse_list(list: &[String]) -> Result<Vec<IpNet>, IpRuleError> {
    if list.len() > MAX_RULES {
        return Err(IpRuleError::TooMany);
    }
    let mut nets: Vec<IpNet> = list
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| IpRuleError::Syntax(s.chars().take(64).collect()))
        })
        .collect::<Result<_, _>>()?;
    // One form per rule set, so that two members of a pool with the same rules compare equal.
    nets.sort();
    nets.dedup();
    Ok(nets)
}

impl IpRules {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, IpRuleError> {
        Ok(IpRules { allow: parse_list(allow)?, deny: parse_list(deny)? })
    }

    /// The accepted and refused networks, in their canonical form (`10.0.0.0/8`).
    pub fn lists(&self) -> (Vec<String>, Vec<String>) {
        let show = |l: &[IpNet]| l.iter().map(|n| n.to_string()).collect();
        (show(&self.allow), show(&self.deny))
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a visitor at `ip` may reach the tunnel.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // An IPv4 visitor on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IpRules::parse(&v(allow), &v(deny)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_then_allow_restricts() {
        assert!(rules(&[], &[]).permits(ip("198.51.100.1")));
        let r = rules(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"], &["10.9.0.0/16"]);
        assert!(r.permits(ip("10.1.2.3")));
        assert!(!r.permits(ip("10.9.2.3")), "denied inside an allowed network");
        assert!(r.permits(ip("203.0.113.7")));
        assert!(!r.permits(ip("203.0.113.8")));
        assert!(r.permits(ip("2001:db8::1")));
        assert!(!r.permits(ip("2001:db9::1")));
        // An IPv4 visitor seen through a dual-stack socket is judged as IPv4.
        assert!(r.permits(ip("::ffff:10.1.2.3")));
        assert!(!r.permits(ip("::ffff:10.9.2.3")));
        let deny_only = rules(&[], &["127.0.0.1"]);
        assert!(!deny_only.permits(ip("127.0.0.1")) && deny_only.permits(ip("127.0.0.2")));
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = |s: &str| IpRules::parse(&[s.to_string()], &[]).unwrap_err();
        for s in ["10.0.0.0/33", "10.0.0", "example.com", "", "::1/129"] {
            assert!(matches!(bad(s), IpRuleError::Syntax(_)), "{s}");
        }
        let many: Vec<String> = (0..=MAX_RULES).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(IpRules::parse(&[], &many), Err(IpRuleError::TooMany));
    }

    #[test]
    fn equal_rules_compare_equal_however_written() {
        assert_eq!(
            rules(&["10.1.2.3/8", "192.0.2.1"], &[]),
            rules(&[" 192.0.2.1/32", "10.0.0.0/8", "10.0.0.0/8"], &[])
        );
        assert_ne!(rules(&["10.0.0.0/8"], &[]), rules(&[], &["10.0.0.0/8"]));
        let shown = rules(&["10.1.2.3/8", "192.0.2.1"], &["2001:db8::1/32"]).lists();
        assert_eq!(shown, (vec!["10.0.0.0/8".into(), "192.0.2.1/32".into()], vec!["2001:db8::/32".into()]));
    }
}
