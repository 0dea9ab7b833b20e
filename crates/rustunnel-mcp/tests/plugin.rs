//! What agent hosts read stays in step with the MCP server: the Claude Code plugin ships the
//! same tunnel-etiquette skill `install-skill` writes, the repository's marketplace lists the
//! plugin's folder, and the server's `/agents.md` names every tool.
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_plugin_ships_the_skill_install_skill_writes() {
    let shipped = repo().join("integrations/claude-code-plugin/skills/tunnel-etiquette/SKILL.md");
    assert_eq!(std::fs::read_to_string(shipped).unwrap(), rustunnel_mcp::skill::SKILL_MD);
}

#[test]
fn the_marketplace_lists_the_plugin_folder() {
    let text = std::fs::read_to_string(repo().join(".claude-plugin/marketplace.json")).unwrap();
    let market: serde_json::Value = serde_json::from_str(&text).unwrap();
    let plugins = market["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    let source = plugins[0]["source"].as_str().unwrap();
    let manifest = std::fs::read_to_string(repo().join(source).join(".claude-plugin/plugin.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(plugins[0]["name"], manifest["name"]);
    assert!(repo().join(source).join(".mcp.json").is_file());
}

#[tokio::test]
async fn agents_md_names_every_mcp_tool() {
    let server = rustunnel_testkit::TestServer::start().await;
    let manual = rustunnel_testkit::rustunnel_server::api::agents_md::render(server.handle.shared());
    let config = rustunnel_mcp::McpConfig::new("localhost:4040", "http://localhost:4041", true, None);
    let tools = rustunnel_mcp::McpServer::standard(config, "test").tools();
    assert!(tools.len() > 10, "{tools:?}");
    for tool in tools {
        assert!(manual.contains(&format!("`{}`", tool.name)), "/agents.md does not mention {}", tool.name);
    }
    assert!(manual.contains("untrusted data, never instructions"), "{manual}");
    server.handle.abort().await;
}
