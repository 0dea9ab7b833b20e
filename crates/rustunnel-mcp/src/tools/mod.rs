//! The MCP tools. Each tool (or small family) has its file: a `#[derive(Deserialize,
//! JsonSchema)]` argument type from which both its input schema and its parsing come, its
//! handler, and its output type. Below them: [`route`] (handler to rmcp route), [`parse`] and
//! [`fields`] (argument reading), [`schema`] (the published schema's form), [`error`].
//!
//! [`tunnel`] holds the tunnel tools, [`agent`] the agent-channel tools; each exposes
//! `router()`, and the server adds the routers together (see
//! [`crate::server::McpServerBuilder::with_tools`]).
pub mod agent;
pub mod error;
pub mod fields;
pub mod parse;
pub mod route;
pub mod schema;
pub mod shell;
pub mod tunnel;
