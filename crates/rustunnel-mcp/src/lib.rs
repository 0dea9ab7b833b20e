//! `rustunnel-mcp`: the Model Context Protocol server that lets AI agents open, list and close
//! rustunnel tunnels. It speaks MCP over stdio (newline-delimited JSON-RPC), both protocol
//! eras: the 2026-07-28 revision (`server/discover`, per-request metadata) and the
//! `initialize` handshake (2025-11-25 and older), on the official Rust SDK (`rmcp`).
//!
//! Component map:
//! - [`server`]: [`McpServer`] (the rmcp handler, composable tool routers, module state,
//!   shutdown) and the stdio lifecycle.
//! - [`tools`]: one file per tool or small family, each with its typed arguments (schema and
//!   parsing from one type): [`tools::tunnel`] (the six tunnel tools) and [`tools::agent`] (the
//!   nine agent-channel tools, on `rustunnel-agent`); below them the plumbing
//!   ([`tools::route`], [`tools::error`], [`tools::parse`], [`tools::fields`], [`tools::schema`]).
//! - [`tunnels`]: in-process tunnels ([`tunnels::TunnelManager`]) on the client library.
//! - [`api`]: the management REST API client.
//! - [`transport`]: tolerance for stray messages before the session starts.
//! - [`config`]: flags and defaults.
//! - [`skill`]: `rustunnel-mcp install-skill`, the agent-room etiquette skill.
//!
//! stdout carries protocol messages only; logs go to stderr.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod config;
pub mod server;
pub mod skill;
pub mod tools;
pub mod transport;
pub mod tunnels;

pub use config::McpConfig;
pub use server::{McpServer, McpServerBuilder, ServeError};
