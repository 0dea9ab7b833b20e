//! Files in the room: `tunnel_share` sends one, `tunnel_receive` fetches, verifies and saves
//! one. Nothing else is written to disk.
use std::path::PathBuf;

use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::state::state;
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::fields::{Flag, Ident, Text};
use crate::tools::route::{route, CallCtx, ToolSpec};

/// Longest file path argument.
pub const MAX_PATH: usize = 4096;

pub fn share() -> ToolRoute<McpServer> {
    route(share_spec(), tunnel_share)
}

pub fn receive() -> ToolRoute<McpServer> {
    route(receive_spec(), tunnel_receive)
}

/// `tunnel_share`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareArgs {
    /// Path of the file to send (absolute, or relative to the MCP server's working directory).
    pub path: Text<MAX_PATH, false>,
}

/// `tunnel_receive`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReceiveArgs {
    /// The artifactId from the file message.
    pub artifact_id: Ident<128>,
    /// Where to write the file (absolute, or relative to the MCP server's working directory).
    pub save_path: Text<MAX_PATH, false>,
    /// Replace savePath if it exists (default false).
    pub overwrite: Option<Flag>,
}

fn share_spec() -> ToolSpec {
    ToolSpec {
        name: "tunnel_share",
        title: "Share a file with the room",
        description: "Send a local file (at most 10 MB) to the room, encrypted; members see a file message with \
its artifactId, name, size and sha256 and can fetch it with tunnel_receive. Only the file's last path component \
is shown to peers. Check with your human before sharing anything that may contain secrets.",
        annotations: ToolAnnotations::new().read_only(true).destructive(false).idempotent(false).open_world(true),
    }
}

fn receive_spec() -> ToolSpec {
    ToolSpec {
        name: "tunnel_receive",
        title: "Save a shared file",
        description: "Fetch a file a member shared (artifactId from a file message of tunnel_listen), verify its \
size and SHA-256, and write it to savePath, a path you choose (the sender's file name is never used as a path). \
An existing file is kept unless overwrite is true. Ask your human before writing files a peer sent.",
        annotations: ToolAnnotations::new().read_only(false).destructive(true).idempotent(false).open_world(false),
    }
}

/// `tunnel_share` result.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareView {
    pub artifact_id: String,
    /// The name peers see.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The file message's seq.
    pub seq: u64,
}

/// `tunnel_receive` result.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveView {
    pub artifact_id: String,
    pub saved_to: String,
    pub size: u64,
    /// Verified SHA-256 of what was written.
    pub sha256: String,
}

async fn tunnel_share(server: McpServer, args: ShareArgs, _ctx: CallCtx) -> Result<ShareView, ToolError> {
    let path = PathBuf::from(args.path.0);
    let st = state(&server)?;
    let r = st.channel.share(&path).await?;
    Ok(ShareView { artifact_id: r.artifact_id, name: r.name, size: r.size, sha256: r.sha256, seq: r.seq })
}

async fn tunnel_receive(server: McpServer, args: ReceiveArgs, _ctx: CallCtx) -> Result<ReceiveView, ToolError> {
    let id = args.artifact_id.0;
    let save = PathBuf::from(args.save_path.0);
    let overwrite = args.overwrite.is_some_and(|o| o.0);
    let st = state(&server)?;
    let r = st.channel.receive(&id, &save, overwrite).await?;
    Ok(ReceiveView { artifact_id: r.artifact_id, saved_to: r.saved_to, size: r.size, sha256: r.sha256 })
}
