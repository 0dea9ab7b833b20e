//! The agent channel of one MCP server: the room (if any), the host's relay tunnel, and the
//! watcher that tears both down when the server stops or the room ends by itself.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustunnel_agent::session::{AgentChannel, ChannelConfig};

use super::error::AgentError;
use crate::config::McpConfig;
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::shell::shell_quote;
use crate::tunnels::TunnelManager;

/// Longest display name.
pub const MAX_NAME: usize = 64;
/// How often the watcher checks for rooms that ended by themselves.
const REAP_EVERY: Duration = Duration::from_secs(2);

/// The agent channel of one MCP server: the room (if any), the host's tunnel, and the watcher.
pub struct AgentState {
    pub(super) channel: AgentChannel,
    /// The host's relay tunnel lives here, apart from `create_tunnel`'s tunnels.
    pub(super) tunnels: TunnelManager,
    /// Serializes open/join/close/teardown; holds the host's tunnel id while hosting.
    pub(super) life: tokio::sync::Mutex<Option<String>>,
    watcher_started: AtomicBool,
    /// How the previous room ended, for `tunnel_status` after it is gone.
    last_end: Mutex<Option<String>>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState").finish_non_exhaustive()
    }
}

impl AgentState {
    /// `display_name` is how this agent appears to peers (`--name`); empty means "agent".
    pub fn new(config: &McpConfig, display_name: &str) -> Self {
        let name: String = display_name.trim().chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
        let name = if name.is_empty() { "agent".to_string() } else { name };
        AgentState {
            channel: AgentChannel::new(ChannelConfig { display_name: name, setup_command: setup_command(config) }),
            tunnels: TunnelManager::new(tokio_util::sync::CancellationToken::new()),
            life: tokio::sync::Mutex::new(None),
            watcher_started: AtomicBool::new(false),
            last_end: Mutex::new(None),
        }
    }

    pub(super) fn set_last_end(&self, s: impl Into<String>) {
        *self.last_end.lock() = Some(s.into());
    }

    pub(super) fn last_end(&self) -> Option<String> {
        self.last_end.lock().clone()
    }

    /// Starts the watcher once (on the first tool call that opens something).
    pub(super) fn ensure_watcher(self: &Arc<Self>, server: &McpServer) {
        if self.watcher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let st = self.clone();
        let stop = server.shutdown_token();
        server.tasks().spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => st.reap().await,
                }
            }
            st.teardown("the host's agent exited").await;
        });
    }

    /// Stops the host's tunnel once its room has ended by itself (idle timeout), and drops the
    /// room so no keys or transcript linger.
    async fn reap(&self) {
        let Ok(mut life) = self.life.try_lock() else { return };
        if life.is_none() {
            return;
        }
        let ended = match self.channel.status().await {
            None => true,
            Some(s) => s.closed,
        };
        if ended {
            if let Some(s) = self.channel.status().await {
                self.set_last_end(format!("room {} ended (idle timeout or closed)", s.room_id));
            }
            let _ = self.channel.close(None).await;
            if let Some(id) = life.take() {
                self.tunnels.close(&id).await;
            }
        }
    }

    /// Server shutdown: end the room (host) or leave it (guest), stop the tunnel.
    async fn teardown(&self, summary: &str) {
        let mut life = self.life.lock().await;
        let _ = self.channel.close(Some(summary)).await;
        if let Some(id) = life.take() {
            self.tunnels.close(&id).await;
        }
        self.tunnels.shutdown().await;
    }
}

/// The one-time setup a guest runs: register this MCP server with their agent host.
fn setup_command(config: &McpConfig) -> String {
    let mut s = format!("claude mcp add rustunnel -- rustunnel-mcp --server {}", shell_quote(&config.server));
    if config.insecure {
        s.push_str(" --insecure");
    }
    s
}

pub(super) fn state(server: &McpServer) -> Result<Arc<AgentState>, ToolError> {
    server.state::<AgentState>().ok_or(ToolError::Agent(AgentError::NotConfigured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_command_quotes_odd_servers() {
        let c = McpConfig::new("tunnel.example.com:4040", "http://x", true, None);
        assert_eq!(
            setup_command(&c),
            "claude mcp add rustunnel -- rustunnel-mcp --server tunnel.example.com:4040 --insecure"
        );
        let c = McpConfig::new("a b;rm", "http://x", false, None);
        assert!(setup_command(&c).ends_with("--server 'a b;rm'"));
    }
}
