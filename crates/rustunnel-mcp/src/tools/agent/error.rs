//! Why an agent-channel tool failed, with a stable code and a hint for each case.
use rustunnel_agent::member::{GuestOpError, JoinError};
use rustunnel_agent::room::RoomError;
use rustunnel_agent::session::SessionError;

/// Why an agent-channel tool failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The channel layer refused or failed (see its message).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The relay listener could not be bound on loopback.
    #[error("cannot start the room relay on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    /// The tunnel offers only `https://` URLs, which guests cannot dial (no TLS in the channel).
    #[error("the rustunnel server offered no plain http:// URL for the room relay (got: {0})")]
    NoPlainUrl(String),
    /// This server was built without the agent channel state.
    #[error("the agent channel is not configured in this MCP server")]
    NotConfigured,
    /// The client cancelled the call.
    #[error("cancelled by the client")]
    Cancelled,
}

impl AgentError {
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::Session(e) => session_code(e),
            AgentError::Bind(_) => "relay_bind_failed",
            AgentError::NoPlainUrl(_) => "no_plain_url",
            AgentError::NotConfigured => "not_configured",
            AgentError::Cancelled => "cancelled",
        }
    }

    pub fn hint(&self) -> String {
        match self {
            AgentError::Session(e) => session_hint(e),
            AgentError::Bind(_) => "check that this machine allows listening on loopback, then retry".into(),
            AgentError::NoPlainUrl(_) => {
                "use a rustunnel server whose HTTP edge serves plain http:// tunnel URLs (wss:// is not supported yet)"
                    .into()
            }
            AgentError::NotConfigured => "start the standard rustunnel-mcp binary".into(),
            AgentError::Cancelled => "call the tool again if still needed".into(),
        }
    }
}

fn session_code(e: &SessionError) -> &'static str {
    match e {
        SessionError::NoOpenTunnel => "no_open_tunnel",
        SessionError::AlreadyOpen => "already_open",
        SessionError::NotHost => "not_host",
        SessionError::Closed => "room_closed",
        SessionError::Link(_) => "bad_join_link",
        SessionError::Join(j) => match j {
            JoinError::Link(_) => "bad_join_link",
            JoinError::TlsUnsupported => "tls_unsupported",
            JoinError::Connect { .. } => "relay_unreachable",
            JoinError::Upgrade(_) => "room_not_found",
            JoinError::AlreadyUsed => "link_already_used",
            JoinError::Expired => "link_expired",
            JoinError::UnknownInvite => "unknown_invite",
            JoinError::BadKey => "bad_key",
            JoinError::Closed => "room_closed",
            JoinError::Refused(_) => "refused",
            JoinError::Handshake(_) | JoinError::Frame(_) => "handshake_failed",
            JoinError::ConnectionClosed => "connection_closed",
            JoinError::Timeout(_) => "timeout",
        },
        SessionError::Open(_) => "invalid_goal",
        SessionError::Mint(_) => "too_many_invites",
        SessionError::Room(r) => match r {
            RoomError::Closed => "room_closed",
            RoomError::Full(_) => "room_full",
            RoomError::TooLarge { .. } => "message_too_large",
            RoomError::Empty => "empty_message",
            RoomError::RateLimited { .. } => "rate_limited",
            RoomError::UnknownMember => "unknown_member",
            RoomError::FileTooLarge { .. } => "file_too_large",
            RoomError::Quota(_) => "file_quota",
            RoomError::NoSuchArtifact => "no_such_artifact",
        },
        SessionError::Guest(g) => match g {
            GuestOpError::Disconnected => "reconnecting",
            GuestOpError::Closed => "room_closed",
            GuestOpError::Refused { .. } => "refused",
            GuestOpError::File(_) => "file_error",
        },
        SessionError::File(f) => match f {
            rustunnel_agent::files::FileError::Exists(_) => "file_exists",
            rustunnel_agent::files::FileError::Integrity => "integrity",
            rustunnel_agent::files::FileError::TooLarge { .. } => "file_too_large",
            _ => "file_error",
        },
    }
}

fn session_hint(e: &SessionError) -> String {
    match session_code(e) {
        "no_open_tunnel" => "call tunnel_open to host a room, or tunnel_join with a join link".into(),
        "already_open" => "this MCP server is already in a room: keep using it, or call tunnel_close first".into(),
        "not_host" => "only the host mints invites: ask the host for a new join link".into(),
        "room_closed" => "the room has ended; open a new one with tunnel_open or ask the host for a new link".into(),
        "bad_join_link" => "paste the join link exactly as the host sent it (ws://.../t/<room>#<secret>)".into(),
        "tls_unsupported" => "ask the host for the ws:// form of the link".into(),
        "relay_unreachable" | "room_not_found" | "connection_closed" | "timeout" | "handshake_failed" => {
            "the host's room may have closed or its tunnel is down; ask the host to check tunnel_status and send a new link".into()
        }
        "link_already_used" | "link_expired" | "unknown_invite" => {
            "join links are single-use and expire after 10 minutes: ask the host for a new one (tunnel_invite)".into()
        }
        "bad_key" => "the link was altered or mistyped: ask the host to resend it".into(),
        "invalid_goal" => "pass a non-empty goal describing what the agents should do together".into(),
        "too_many_invites" => "wait for outstanding links to be used or to expire, then call tunnel_invite".into(),
        "room_full" => "the room holds at most 16 members".into(),
        "message_too_large" => "split the text into several tunnel_say calls, or send it as a file with tunnel_share".into(),
        "empty_message" => "pass some text".into(),
        "rate_limited" => "wait a moment and send again; prefer fewer, longer messages".into(),
        "reconnecting" => "the connection dropped and is being resumed; retry in a few seconds".into(),
        "file_exists" => "choose another savePath, or pass overwrite: true after checking with your human".into(),
        "integrity" => "the file did not arrive intact and was not written; ask the sender to share it again".into(),
        "file_too_large" | "file_quota" => "files are limited to 10 MB each (50 MB per member, 100 MB per room)".into(),
        "no_such_artifact" => "use an artifactId from a file message returned by tunnel_listen".into(),
        "file_error" => "check the path (it must be a readable regular file, or a writable savePath)".into(),
        _ => "check tunnel_status and retry".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_code_and_hint() {
        for e in [
            SessionError::NoOpenTunnel,
            SessionError::AlreadyOpen,
            SessionError::NotHost,
            SessionError::Join(JoinError::AlreadyUsed),
            SessionError::Join(JoinError::Expired),
        ] {
            let code = session_code(&e);
            assert!(!code.is_empty());
            assert!(!session_hint(&e).starts_with("check tunnel_status"), "{code} has a specific hint");
        }
    }
}
