//! Turning a typed async handler into an rmcp [`ToolRoute`]: the input schema and the parsing
//! come from the handler's argument type, the output schema from its output type; success is
//! structured output plus a text copy, failure an `isError` result. [`CallCtx`] carries the
//! call's progress and cancellation.
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject, ProgressNotificationParam, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::ToolError;
use super::{parse, schema};
use crate::server::McpServer;

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

/// What a tool is: name, title, description and hints. The input schema comes from the
/// handler's argument type, the output schema from its output type.
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub annotations: ToolAnnotations,
}

/// Builds a route from an async handler `(server, arguments, ctx) -> Result<O, ToolError>`
/// whose arguments `A` are parsed from the call (see [`parse`]).
pub fn route<A, O, F, Fut>(spec: ToolSpec, handler: F) -> ToolRoute<McpServer>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + JsonSchema + 'static,
    F: Fn(McpServer, A, CallCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
{
    route_with_schema(spec, schema::input_schema::<A>(), handler)
}

/// [`route`] with the input schema given: `A`'s schema with a description changed (tools that
/// share an argument type).
pub fn route_with_schema<A, O, F, Fut>(spec: ToolSpec, input: JsonObject, handler: F) -> ToolRoute<McpServer>
where
    A: DeserializeOwned + Send + 'static,
    O: Serialize + JsonSchema + 'static,
    F: Fn(McpServer, A, CallCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
{
    let input = Arc::new(input);
    let mut tool = Tool::new(spec.name, spec.description, input.clone())
        .with_title(spec.title)
        .with_raw_output_schema(Arc::new(schema::output_schema::<O>()));
    tool.annotations = Some(spec.annotations);
    let handler = Arc::new(handler);
    ToolRoute::new_dyn(tool, move |ctx: ToolCallContext<'_, McpServer>| {
        let handler = handler.clone();
        let input = input.clone();
        let server = ctx.service.clone();
        let arguments = ctx.arguments.unwrap_or_default();
        let call = CallCtx::new(ctx.request_context);
        Box::pin(async move {
            let outcome = match parse::parse_with::<A>(&input, arguments) {
                Ok(args) => handler(server, args, call).await,
                Err(e) => Err(e),
            };
            let result = match outcome {
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
