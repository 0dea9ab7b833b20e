//! HTTP Basic credentials a tunnel can require of its visitors (`--basic-auth user:password`).
//! Both ends check the same rules, so the client refuses bad credentials before connecting.
use serde::{Deserialize, Serialize};

/// Longest user name.
pub const MAX_USER: usize = 64;
/// Shortest and longest password: short ones fall to guessing, however rate-limited.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 128;

/// Why credentials are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicAuthError {
    #[error("basic auth must be given as user:password")]
    NoColon,
    #[error("the basic auth user name must be 1-{MAX_USER} printable characters without ':'")]
    BadUser,
    #[error("the basic auth password must be {MIN_PASSWORD}-{MAX_PASSWORD} printable characters")]
    BadPassword,
}

/// `user:password`, checked. Its `Debug` never shows the password; on the wire it is the plain
/// string, inside the TLS control channel only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BasicAuth(String);

impl BasicAuth {
    pub fn parse(s: &str) -> Result<Self, BasicAuthError> {
        let (user, password) = s.split_once(':').ok_or(BasicAuthError::NoColon)?;
        let printable = |t: &str| t.chars().all(|c| !c.is_control());
        if user.is_empty() || user.chars().count() > MAX_USER || !printable(user) {
            return Err(BasicAuthError::BadUser);
        }
        let n = password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) || !printable(password) {
            return Err(BasicAuthError::BadPassword);
        }
        Ok(BasicAuth(s.to_string()))
    }

    /// Checks what arrived from the other end (deserialised without the rules).
    pub fn checked(&self) -> Result<(), BasicAuthError> {
        Self::parse(&self.0).map(drop)
    }

    /// `user:password`, the bytes a visitor's `Authorization: Basic` header encodes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn user(&self) -> &str {
        self.0.split_once(':').map_or("", |(u, _)| u)
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}:***)", self.user())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(BasicAuth::parse("ana:correct horse").unwrap().user(), "ana");
        // The password may hold ':' (only the first one splits), the user may not.
        assert_eq!(BasicAuth::parse("ana:pa:ss:word").unwrap().as_str(), "ana:pa:ss:word");
        assert_eq!(BasicAuth::parse("anapassword"), Err(BasicAuthError::NoColon));
        assert_eq!(BasicAuth::parse(":password1"), Err(BasicAuthError::BadUser));
        assert_eq!(BasicAuth::parse(&format!("{}:password1", "u".repeat(MAX_USER + 1))), Err(BasicAuthError::BadUser));
        assert_eq!(BasicAuth::parse("a\nb:password1"), Err(BasicAuthError::BadUser));
        assert_eq!(BasicAuth::parse("ana:short"), Err(BasicAuthError::BadPassword));
        assert_eq!(BasicAuth::parse("ana:pass\rword"), Err(BasicAuthError::BadPassword));
        assert_eq!(
            BasicAuth::parse(&format!("ana:{}", "p".repeat(MAX_PASSWORD + 1))),
            Err(BasicAuthError::BadPassword)
        );
        let wire: BasicAuth = serde_json::from_str("\"x:y\"").unwrap();
        assert!(wire.checked().is_err(), "what arrives is checked again");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let a = BasicAuth::parse("ana:hunter2hunter2").unwrap();
        let shown = format!("{a:?}");
        assert!(shown.contains("ana") && !shown.contains("hunter2"), "{shown}");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"ana:hunter2hunter2\"");
    }
}
