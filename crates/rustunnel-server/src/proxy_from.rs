//! The peers whose PROXY protocol headers the edges believe (`proxy_protocol_from`), as the
//! configuration gives them; the headers themselves are read in [`crate::edge::proxy_header`].
use std::net::IpAddr;

use ipnet::IpNet;

/// Most networks in `proxy_protocol_from`.
pub const MAX_NETWORKS: usize = 64;

/// The peers whose PROXY headers are believed (`--proxy-protocol-from`); empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyFrom {
    nets: Vec<IpNet>,
}

/// A `proxy_protocol_from` entry that is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyFromError {
    #[error("proxy_protocol_from: '{0}' is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)")]
    Syntax(String),
    #[error("proxy_protocol_from: at most {MAX_NETWORKS} networks")]
    TooMany,
}

impl ProxyFrom {
    /// Parses addresses and networks (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`); an entry may hold
    /// several separated by commas, as the flag and the environment give them.
    pub fn parse(list: &[String]) -> Result<Self, ProxyFromError> {
        let mut nets = Vec::new();
        for s in list.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ProxyFromError::Syntax(s.chars().take(64).collect()))?;
            nets.push(net.trunc());
            if nets.len() > MAX_NETWORKS {
                return Err(ProxyFromError::TooMany);
            }
        }
        Ok(ProxyFrom { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether connections from `ip` must start with a PROXY header. Nothing to compare (and
    /// so no cost) when the list is empty.
    #[inline]
    pub fn trusts(&self, ip: IpAddr) -> bool {
        !self.nets.is_empty() && {
            let ip = ip.to_canonical();
            self.nets.iter().any(|n| n.contains(&ip))
        }
    }

    /// The networks, in canonical form.
    pub fn networks(&self) -> Vec<String> {
        self.nets.iter().map(|n| n.to_string()).collect()
    }
}
