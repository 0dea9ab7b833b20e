//! REST API data types shared by server, CLI and MCP.
