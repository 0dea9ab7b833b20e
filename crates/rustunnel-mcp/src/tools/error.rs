//! The error every tool returns: a code, a message and a hint, shown to the model as an
//! `isError` result.
use rmcp::model::{CallToolResult, ContentBlock};
use rustunnel_agent::session::SessionError;

use super::agent::error::AgentError;
use crate::api::ApiError;
use crate::tunnels::OpenError;

/// Why a tool call failed. Becomes a tool result with `isError: true` whose text says what
/// happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not match the input schema (type, range, unknown field, ...).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// Opening a tunnel failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A management API call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// `region` names no region the server knows.
    #[error("unknown region '{region}' (known: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownRegion { region: String, known: Vec<String> },
    /// An agent-channel tool failed (`tunnel_*`).
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl ToolError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        ToolError::InvalidArguments(msg.into())
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            ToolError::InvalidArguments(_) => "invalid_arguments",
            ToolError::Open(e) => e.code(),
            ToolError::Api(e) => e.code(),
            ToolError::UnknownRegion { .. } => "unknown_region",
            ToolError::Agent(e) => e.code(),
        }
    }

    /// What the agent (or its user) should do about it.
    pub fn hint(&self) -> String {
        match self {
            ToolError::InvalidArguments(_) => {
                "fix the arguments as described by the tool's input schema and call again".into()
            }
            ToolError::Open(e) => e.hint(),
            ToolError::Api(e) => e.hint(),
            ToolError::UnknownRegion { .. } => {
                "call list_regions for the ids, or omit region to use the configured server".into()
            }
            ToolError::Agent(e) => e.hint(),
        }
    }

    /// The `isError` tool result.
    pub fn into_result(self) -> CallToolResult {
        let text = format!("Error ({}): {}\nHint: {}", self.code(), self, self.hint());
        CallToolResult::error(vec![ContentBlock::text(text)])
    }
}

impl From<SessionError> for ToolError {
    fn from(e: SessionError) -> Self {
        ToolError::Agent(AgentError::Session(e))
    }
}
