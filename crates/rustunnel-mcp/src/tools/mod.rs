//! Tool plumbing shared by every tool module: the error type every tool returns, the helper
//! that turns an async handler into an rmcp [`ToolRoute`] (structured output + text copy,
//! failures as `isError` results, output schema derived from the output type), argument
//! parsing, and per-call context (progress, cancellation).
//!
//! A tool module exposes `pub fn router() -> ToolRouter<McpServer>`; the server adds routers
//! together (see [`crate::server::McpServerBuilder::with_tools`]).
pub mod agent_tools;
pub mod args;
pub mod schema;
pub mod tunnel_tools;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, JsonObject, ProgressNotificationParam, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use schemars::JsonSchema;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::server::McpServer;
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
    Agent(#[from] agent_tools::AgentError),
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

/// Per-call context handed to tool handlers: cancellation and progress.
#[derive(Clone)]
pub struct CallCtx {
    request: RequestContext<RoleServer>,
    step: Arc<AtomicU32>,
}

impl CallCtx {
    pub fn new(request: RequestContext<RoleServer>) -> Self {
        CallCtx { request, step: Arc::new(AtomicU32::new(0)) }
    }

    /// Cancelled when the client cancels this call (or the server stops).
    pub fn cancelled(&self) -> CancellationToken {
        self.request.ct.clone()
    }

    /// Sends a progress notification if the client asked for progress (a `progressToken`);
    /// otherwise does nothing. `total` is the expected number of steps, if known.
    pub async fn progress(&self, message: impl Into<String>, total: Option<u32>) {
        let Some(token) = self.request.meta.get_progress_token() else {
            return;
        };
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p = ProgressNotificationParam::new(token, f64::from(step)).with_message(message);
        if let Some(t) = total {
            p = p.with_total(f64::from(t));
        }
        if let Err(e) = self.request.peer.notify_progress(p).await {
            tracing::debug!("progress notification not sent: {e}");
        }
    }

    pub fn request(&self) -> &RequestContext<RoleServer> {
        &self.request
    }
}

/// What a tool is: name, description, input schema and hints. The output schema comes from
/// the handler's output type.
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// Plain JSON Schema (`{"type":"object","properties":{...}}`).
    pub input_schema: serde_json::Value,
    pub annotations: ToolAnnotations,
}

/// Builds a route from an async handler `(server, arguments, ctx) -> Result<O, ToolError>`.
/// Success returns `structuredContent` (O as JSON) plus the same JSON as text; failure returns
/// an `isError` result. The tool's `outputSchema` is O's schema, so they cannot drift apart.
pub fn route<O, F, Fut>(spec: ToolSpec, handler: F) -> ToolRoute<McpServer>
where
    O: Serialize + JsonSchema + 'static,
    F: Fn(McpServer, JsonObject, CallCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
{
    let input = match spec.input_schema {
        serde_json::Value::Object(o) => o,
        _ => JsonObject::new(),
    };
    let mut tool = Tool::new(spec.name, spec.description, Arc::new(input))
        .with_title(spec.title)
        .with_raw_output_schema(Arc::new(schema::output_schema::<O>()));
    tool.annotations = Some(spec.annotations.clone());
    let handler = Arc::new(handler);
    ToolRoute::new_dyn(tool, move |ctx: ToolCallContext<'_, McpServer>| {
        let handler = handler.clone();
        let server = ctx.service.clone();
        let arguments = ctx.arguments.unwrap_or_default();
        let call = CallCtx::new(ctx.request_context);
        Box::pin(async move {
            let result = match handler(server, arguments, call).await {
                Ok(out) => match serde_json::to_value(&out) {
                    Ok(v) => CallToolResult::structured(v),
                    Err(e) => ToolError::invalid(format!("internal: output not serializable: {e}")).into_result(),
                },
                Err(e) => {
                    tracing::debug!(code = e.code(), "tool call failed: {e}");
                    e.into_result()
                }
            };
            Ok(CallToolResponse::from(result))
        })
    })
}
