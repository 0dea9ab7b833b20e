//! Views shared by several agent tools: who sent a message, a room member, a role.
use rustunnel_agent::session::{self, Role};
use schemars::JsonSchema;
use serde::Serialize;

/// Who sent a message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SenderView {
    /// Member id (0 is the host).
    pub id: u32,
    /// Display name (peer-authored).
    pub name: String,
}

impl From<rustunnel_agent::room::Sender> for SenderView {
    fn from(s: rustunnel_agent::room::Sender) -> Self {
        SenderView { id: s.id, name: s.name }
    }
}

/// A room member.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub id: u32,
    pub name: String,
    pub is_host: bool,
    pub connected: bool,
    /// Host view: the verification code shared with this member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
}

impl From<session::MemberStatus> for MemberView {
    fn from(m: session::MemberStatus) -> Self {
        MemberView {
            id: m.id,
            name: m.name,
            is_host: m.is_host,
            connected: m.connected,
            verification_code: m.verification_code,
        }
    }
}

pub fn role_str(r: Role) -> String {
    match r {
        Role::Host => "host".into(),
        Role::Guest => "guest".into(),
    }
}
