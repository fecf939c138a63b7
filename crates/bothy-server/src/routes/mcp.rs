//! `/mcp`: the MCP tools over streamable HTTP (bothy-mcp). A request must
//! carry a token the daemon knows, checked here before any MCP traffic;
//! the tools then call this daemon's own API with that token, so every
//! permission and limit is the API's, as for any other client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bothy_control::{Boxes, Control};

use crate::auth::bearer;
use crate::error::ApiError;

/// The MCP endpoint, given to the router as an extension by the daemon,
/// which knows the API's address (tests that build the router alone have
/// none and get 503).
#[derive(Clone)]
pub struct McpEndpoint(bothy_mcp::HttpService);

impl McpEndpoint {
    /// An endpoint whose tools call the API listening on `api`. A wildcard
    /// listen address is reached on the loopback of its family.
    pub fn new(api: SocketAddr) -> Self {
        Self(bothy_mcp::http_service(self_url(api)))
    }

    /// Ends every MCP session (their open event streams would otherwise
    /// hold the daemon's shutdown until the drain timeout).
    pub fn close(&self) {
        self.0.config.cancellation_token.cancel();
    }
}

/// The URL this daemon's own API answers on, from its listen address.
fn self_url(api: SocketAddr) -> String {
    let ip = match api.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, api.port()))
}

pub async fn serve<B: Boxes>(State(control): State<Control<B>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Not the Auth extractor: it refuses every POST of a read-only token,
    // and MCP posts even to read; the API refuses such a token's writes
    // when a tool makes them.
    let Some(token) = bearer(&parts) else {
        return ApiError::Unauthorized(
            "missing token: send `Authorization: Bearer <token>` with every MCP request".into(),
        )
        .into_response();
    };
    if let Err(e) = control.authenticate(token).await {
        return ApiError::from(e).into_response();
    }
    let Some(endpoint) = parts.extensions.get::<McpEndpoint>().cloned() else {
        return ApiError::Unavailable("MCP is not served by this daemon".into()).into_response();
    };
    endpoint
        .0
        .handle(Request::from_parts(parts, body))
        .await
        .map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        for (listen, want) in [
            ("0.0.0.0:7070", "http://127.0.0.1:7070"),
            ("[::]:7070", "http://[::1]:7070"),
            ("127.0.0.2:80", "http://127.0.0.2:80"),
        ] {
            let addr: SocketAddr = listen.parse().expect("address");
            assert_eq!(self_url(addr), want);
        }
    }
}
