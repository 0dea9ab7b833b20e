//! Join links: `<ws|wss>://<host>[:port][/prefix]/t/<roomId>#<secret>`.
//!
//! The secret (invite id + 32-byte key, base64url without padding) lives only in
//! the URL fragment, which HTTP clients never send: [`JoinLink::request_path`]
//! and [`JoinLink::request_url`] strip it, so the tunnel edge never sees the key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use zeroize::Zeroize;

/// Length of an invite id in bytes.
pub const INVITE_ID_LEN: usize = 16;
/// Length of an invite key in bytes.
pub const INVITE_KEY_LEN: usize = 32;
/// Longest link we accept; anything longer is not something we minted.
pub const MAX_LINK_LEN: usize = 2048;

/// Why a join link was refused. Every variant names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("join link is too long ({0} bytes); paste the link exactly as the host sent it")]
    TooLong(usize),
    #[error("join link has no '#<secret>' part; the link was cut off, ask the host to resend it")]
    NoFragment,
    #[error("join link secret is not valid base64url; the link was altered, ask the host to resend it")]
    BadBase64,
    #[error("join link secret has {0} bytes, expected {expected}; the link was cut off or altered", expected = INVITE_ID_LEN + INVITE_KEY_LEN)]
    WrongKeyLength(usize),
    #[error("join link must start with ws:// or wss:// (got '{0}')")]
    WrongScheme(String),
    #[error("join link host is missing or invalid")]
    BadHost,
    #[error("join link path must end in /t/<roomId> with a room id of 8-64 letters, digits, '-' or '_'")]
    BadRoomId,
    #[error("join link must not contain a query string or user info")]
    Unexpected,
}

/// URL scheme of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }
}

/// `N` bytes from the thread's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Opaque room identifier; the only room-identifying value on the wire in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// A fresh random room id (32 lowercase hex chars).
    pub fn random() -> Self {
        RoomId(hex::encode(random_bytes::<16>()))
    }
    /// Validates a room id taken from a URL path.
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let ok = (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(RoomId(s.to_owned()))
        } else {
            Err(LinkError::BadRoomId)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Public lookup handle of an invite. Not secret: it only selects which key to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteId(pub [u8; INVITE_ID_LEN]);

impl InviteId {
    pub fn random() -> Self {
        InviteId(random_bytes())
    }
}

/// Per-invite pre-shared key for the Noise handshake. Zeroized on drop; `Debug` is masked.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteKey(pub [u8; INVITE_KEY_LEN]);

impl InviteKey {
    pub fn random() -> Self {
        InviteKey(random_bytes())
    }
}

impl Drop for InviteKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for InviteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteKey(***)")
    }
}

/// Where the relay can be reached, without room or secret: `ws://abc.localhost:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayBase {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
    prefix: String,
}

impl RelayBase {
    /// Parses the public base URL of the relay. `http`/`https` are mapped to
    /// `ws`/`wss` because tunnels report their public URL as HTTP.
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let (scheme, rest) = split_scheme(s, true)?;
        if rest.contains('#') || rest.contains('?') {
            return Err(LinkError::Unexpected);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = parse_authority(authority)?;
        let prefix = path.trim_end_matches('/');
        check_prefix(prefix)?;
        Ok(RelayBase { scheme, host, port, prefix: prefix.to_owned() })
    }

    /// Builds the link for `room` carrying `invite`'s secret in the fragment.
    pub fn join_link(&self, room: &RoomId, id: InviteId, key: &InviteKey) -> JoinLink {
        JoinLink { base: self.clone(), room: room.clone(), invite_id: id, key: key.clone() }
    }
}

impl RelayBase {
    /// `scheme://host[:port]`, without the path prefix.
    fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }
}

impl std::fmt::Display for RelayBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.prefix)
    }
}

/// A parsed join link. `Debug` masks the key; `Display` prints the full secret link.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinLink {
    base: RelayBase,
    room: RoomId,
    invite_id: InviteId,
    key: InviteKey,
}

impl std::fmt::Debug for JoinLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinLink({}#***)", self.request_url())
    }
}

impl std::fmt::Display for JoinLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut secret = [0u8; INVITE_ID_LEN + INVITE_KEY_LEN];
        secret[..INVITE_ID_LEN].copy_from_slice(&self.invite_id.0);
        secret[INVITE_ID_LEN..].copy_from_slice(&self.key.0);
        let enc = URL_SAFE_NO_PAD.encode(secret);
        secret.zeroize();
        write!(f, "{}#{}", self.request_url(), enc)
    }
}

impl JoinLink {
    /// Strict parser; never panics on any input (property-tested).
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let s = s.trim();
        if s.len() > MAX_LINK_LEN {
            return Err(LinkError::TooLong(s.len()));
        }
        let (scheme, rest) = split_scheme(s, false)?;
        let (before, fragment) = rest.split_once('#').ok_or(LinkError::NoFragment)?;
        if before.contains('?') {
            return Err(LinkError::Unexpected);
        }
        let (authority, path) = match before.find('/') {
            Some(i) => (&before[..i], &before[i..]),
            None => (before, ""),
        };
        let (host, port) = parse_authority(authority)?;
        let (prefix, room) = path.rsplit_once("/t/").ok_or(LinkError::BadRoomId)?;
        check_prefix(prefix)?;
        let room = RoomId::parse(room)?;
        let mut raw = URL_SAFE_NO_PAD.decode(fragment.as_bytes()).map_err(|_| LinkError::BadBase64)?;
        if raw.len() != INVITE_ID_LEN + INVITE_KEY_LEN {
            let n = raw.len();
            raw.zeroize();
            return Err(LinkError::WrongKeyLength(n));
        }
        let mut id = [0u8; INVITE_ID_LEN];
        id.copy_from_slice(&raw[..INVITE_ID_LEN]);
        let mut key = [0u8; INVITE_KEY_LEN];
        key.copy_from_slice(&raw[INVITE_ID_LEN..]);
        raw.zeroize();
        Ok(JoinLink {
            base: RelayBase { scheme, host, port, prefix: prefix.to_owned() },
            room: RoomId(room.0),
            invite_id: InviteId(id),
            key: InviteKey(key),
        })
    }

    pub fn room_id(&self) -> &RoomId {
        &self.room
    }
    pub fn invite_id(&self) -> InviteId {
        self.invite_id
    }
    pub fn key(&self) -> &InviteKey {
        &self.key
    }
    pub fn base(&self) -> &RelayBase {
        &self.base
    }
    pub fn scheme(&self) -> Scheme {
        self.base.scheme
    }

    /// The URL without the secret: what is actually dialled.
    pub fn request_url(&self) -> String {
        // The request path already carries the prefix.
        format!("{}{}", self.base.origin(), self.request_path())
    }

    /// Request path sent in the HTTP request line (`/prefix/t/<room>`); never has the fragment.
    pub fn request_path(&self) -> String {
        format!("{}/t/{}", self.base.prefix, self.room)
    }

    /// `Host` header value.
    pub fn host_header(&self) -> String {
        match self.base.port {
            Some(p) => format!("{}:{p}", self.base.host),
            None => self.base.host.clone(),
        }
    }

    /// TCP address to dial. `*.localhost` resolves to loopback by definition (RFC 6761),
    /// so we dial 127.0.0.1 rather than trusting the system resolver with it.
    pub fn dial_target(&self) -> (String, u16) {
        let port = self.base.port.unwrap_or(self.base.scheme.default_port());
        let h = self.base.host.to_ascii_lowercase();
        if h == "localhost" || h.ends_with(".localhost") {
            ("127.0.0.1".to_owned(), port)
        } else {
            (self.base.host.clone(), port)
        }
    }
}

fn split_scheme(s: &str, allow_http: bool) -> Result<(Scheme, &str), LinkError> {
    let (scheme, rest) = s.split_once("://").ok_or_else(|| LinkError::WrongScheme(s.chars().take(10).collect()))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        "http" if allow_http => Scheme::Ws,
        "https" if allow_http => Scheme::Wss,
        _ => return Err(LinkError::WrongScheme(scheme.chars().take(10).collect())),
    };
    Ok((scheme, rest))
}

fn parse_authority(a: &str) -> Result<(String, Option<u16>), LinkError> {
    if a.contains('@') {
        return Err(LinkError::Unexpected);
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().map_err(|_| LinkError::BadHost)?;
            if port == 0 {
                return Err(LinkError::BadHost);
            }
            (h, Some(port))
        }
        None => (a, None),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('.')
        && !host.starts_with('-')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok((host.to_owned(), port))
    } else {
        Err(LinkError::BadHost)
    }
}

fn check_prefix(p: &str) -> Result<(), LinkError> {
    let ok = p.is_empty()
        || (p.starts_with('/')
            && p.len() <= 256
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
            && !p.split('/').any(|seg| seg == ".."));
    if ok {
        Ok(())
    } else {
        Err(LinkError::BadRoomId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> JoinLink {
        let base = RelayBase::parse("http://abc.localhost:8080").unwrap();
        base.join_link(&RoomId::parse("room1234abcd").unwrap(), InviteId([7; 16]), &InviteKey([9; 32]))
    }

    #[test]
    fn round_trip_and_fragment_never_in_request() {
        let link = sample();
        let s = link.to_string();
        assert!(s.starts_with("ws://abc.localhost:8080/t/room1234abcd#"));
        let back = JoinLink::parse(&s).unwrap();
        assert_eq!(back, link);
        assert!(!link.request_url().contains('#'));
        assert_eq!(link.request_path(), "/t/room1234abcd");
        assert_eq!(link.dial_target(), ("127.0.0.1".into(), 8080));
        assert!(!format!("{link:?}").contains(&s[s.len() - 20..]));
    }

    #[test]
    fn prefix_and_default_ports() {
        let l =
            JoinLink::parse(&format!("wss://example.com/relay/t/room1234abcd#{}", URL_SAFE_NO_PAD.encode([1u8; 48])))
                .unwrap();
        assert_eq!(l.request_path(), "/relay/t/room1234abcd");
        assert_eq!(l.request_url(), "wss://example.com/relay/t/room1234abcd");
        assert_eq!(JoinLink::parse(&l.to_string()).unwrap(), l);
        assert_eq!(l.dial_target(), ("example.com".into(), 443));
        assert_eq!(l.host_header(), "example.com");
    }

    #[test]
    fn typed_errors() {
        let good = sample().to_string();
        let (no_frag, frag) = good.split_once('#').unwrap();
        assert_eq!(JoinLink::parse(no_frag), Err(LinkError::NoFragment));
        assert_eq!(JoinLink::parse(&format!("{no_frag}#!!!")), Err(LinkError::BadBase64));
        assert_eq!(JoinLink::parse(&format!("{no_frag}#{}", &frag[..40])), Err(LinkError::WrongKeyLength(30)));
        assert!(matches!(JoinLink::parse(&good.replacen("ws://", "http://", 1)), Err(LinkError::WrongScheme(_))));
        assert!(matches!(JoinLink::parse(&good.replacen("ws://", "ftp://", 1)), Err(LinkError::WrongScheme(_))));
        assert_eq!(JoinLink::parse(&good.replace("room1234abcd", "r/../x")), Err(LinkError::BadRoomId));
        assert_eq!(JoinLink::parse(&good.replace("room1234abcd", "short")), Err(LinkError::BadRoomId));
        assert_eq!(JoinLink::parse(&good.replace("abc.localhost", "u@abc.localhost")), Err(LinkError::Unexpected));
        assert_eq!(JoinLink::parse(&good.replace(":8080", ":99999")), Err(LinkError::BadHost));
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = JoinLink::parse(&s);
            let _ = RelayBase::parse(&s);
        }

        #[test]
        fn mutated_links_never_panic(pos in 0usize..200, c in any::<char>()) {
            let mut s: Vec<char> = sample().to_string().chars().collect();
            let i = pos % s.len();
            s[i] = c;
            let s: String = s.into_iter().collect();
            if let Ok(l) = JoinLink::parse(&s) {
                // Anything that parses must print back to something that parses identically.
                prop_assert_eq!(JoinLink::parse(&l.to_string()).unwrap(), l);
            }
        }

        #[test]
        fn any_secret_round_trips(id in any::<[u8; 16]>(), key in any::<[u8; 32]>()) {
            let base = RelayBase::parse("ws://127.0.0.1:9").unwrap();
            let l = base.join_link(&RoomId::random(), InviteId(id), &InviteKey(key));
            prop_assert_eq!(JoinLink::parse(&l.to_string()).unwrap(), l);
        }
    }
}
