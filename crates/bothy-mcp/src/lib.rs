//! MCP (Model Context Protocol) for bothy: tools an agent calls to create
//! sprites, run commands, checkpoint, restore, fork, manage services, URLs
//! and files. A frontend over [`bothy_client::Client`]: every tool is an
//! API call with the caller's token, so the daemon enforces everything.
//!
//! Two transports: stdio ([`serve_stdio`], `bothy mcp`) and streamable
//! HTTP ([`http_service`], mounted by the daemon at `/mcp`).

mod exec;
mod output;
mod params;
mod tools;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;

pub use tools::{bearer, Bothy};

/// The daemon's MCP endpoint as a tower service.
pub type HttpService = StreamableHttpService<Bothy, LocalSessionManager>;

/// Serves the tools on stdin/stdout with `client`'s token until the client
/// closes stdin.
pub async fn serve_stdio(client: bothy_client::Client) -> Result<(), String> {
    let running = Bothy::with_client(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP session could not start: {e}"))?;
    running
        .waiting()
        .await
        .map(drop)
        .map_err(|e| format!("MCP session failed: {e}"))
}

/// The streamable HTTP endpoint: each session acts with the bearer token
/// of the request that opened it, against the API at `api_url` (the
/// daemon's own address). The caller authenticates requests before they
/// get here. Cancelling `config().cancellation_token` ends every session.
pub fn http_service(api_url: String) -> HttpService {
    // Host checks guard unauthenticated local servers against DNS
    // rebinding; every request here carries a bearer token a rebinding page
    // does not have, and the daemon is reached under many names (box
    // domain, IPs), so they are off.
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(Bothy::for_bearer(api_url.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
