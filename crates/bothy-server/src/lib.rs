//! The frontends of the bothy daemon over the control layer: the
//! Sprites-compatible HTTP + WebSocket API, and each box's own control socket
//! ([`inbox`]). Here live routes, auth extraction, parsing of query strings,
//! the exec WebSocket framing, and the one mapping from control's error kinds
//! to status codes and the Sprites error shape ([`error`]). Nothing here
//! touches boxes, disks or the state database directly.
//!
//! Behaviour worth knowing:
//! - Create answers 201 with the sprite once its box runs; destroy answers 204.
//! - Exec (and session calls) on a cold box start it first; if that fails the
//!   answer is 503 with the reason.
//! - A command that cannot be started in the box (not found, bad directory)
//!   is not an HTTP error: the client gets the reason on stderr and exit code
//!   127, as with ssh or `docker exec`.
//! - Streamed answers (kill, the list watch, HTTP exec) check everything they
//!   can before the first byte: those errors are plain HTTP errors; later ones
//!   are lines or frames of the stream.
//! - Unimplemented Sprites routes under `/v1` answer 501 `not_implemented`.
//! - A box's own socket is hostile input: a cap on its connections, an idle
//!   timeout and a rate limit on checkpoint create and restore keep one box
//!   from exhausting the daemon ([`inbox`]).
//! - Logs go to stderr (`RUST_LOG` filters them, default `info`); they never
//!   carry tokens or query strings.

mod auth;
mod bridge;
pub mod edge;
mod error;
pub mod inbox;
mod params;
mod routes;
mod stream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use bothy_control::{Boxes, Control};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;

pub use error::ApiError;

/// How long open connections get to finish after the stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Fires when the frontends begin to shut down: open exec WebSockets close
/// with "going away" rather than hold the shutdown up.
#[derive(Clone)]
pub struct Shutdown(pub watch::Receiver<bool>);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}; is another daemon running there?")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Logs to stderr, `info` unless RUST_LOG says otherwise, coloured only on a
/// terminal. A subscriber installed earlier wins.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The binary may have installed a subscriber already; that one wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Binds the API address. A daemon restarted right after a crash may find
/// the port still held by the dying process for a moment: retry briefly.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(ServerError::Listen { addr, source }),
        }
    }
}

/// Serves the API on `listener`, with box URLs under `localhost` on the
/// same listener, until `stop` completes.
pub async fn serve<B: Boxes>(
    control: Control<B>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let frontends = Frontends {
        api: listener,
        edge: None,
        tls: None,
        settings: edge::EdgeSettings::local(addr),
    };
    serve_frontends(control, frontends, stop).await
}

/// The daemon's listeners.
pub struct Frontends {
    /// The API and box URLs.
    pub api: tokio::net::TcpListener,
    /// Box URLs only (`--edge-listen`).
    pub edge: Option<tokio::net::TcpListener>,
    /// HTTPS: the API and box URLs (`--tls-listen`).
    pub tls: Option<(
        tokio::net::TcpListener,
        std::sync::Arc<rustls::ServerConfig>,
    )>,
    pub settings: edge::EdgeSettings,
}

/// Serves the API and box URLs on `frontends`, and every box's control
/// socket, until `stop` completes; then closes connections, giving them a
/// bounded time. The boxes are not touched: what happens to them at
/// shutdown is control's.
pub async fn serve_frontends<B: Boxes>(
    control: Control<B>,
    frontends: Frontends,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let inbox = tokio::spawn(inbox::serve(
        control.clone(),
        inbox::Limits::from_env(),
        shutdown_rx.clone(),
    ));
    let urls = frontends.settings.urls.clone();
    let mcp = routes::McpEndpoint::new(frontends.api.local_addr().map_err(ServerError::Serve)?);
    let router = routes::router(control.clone(), Shutdown(shutdown_rx.clone()), urls)
        .layer(axum::Extension(mcp.clone()));
    let edge = std::sync::Arc::new(edge::Edge::new(control, frontends.settings));
    let graceful = std::sync::Arc::new(GracefulShutdown::new());
    let mut listeners = vec![edge::Listener {
        tcp: frontends.api,
        tls: None,
        api: Some(router.clone()),
    }];
    if let Some(tcp) = frontends.edge {
        listeners.push(edge::Listener {
            tcp,
            tls: None,
            api: None,
        });
    }
    if let Some((tcp, config)) = frontends.tls {
        listeners.push(edge::Listener {
            tcp,
            tls: Some(config),
            api: Some(router),
        });
    }
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(edge::serve_connections(
                l,
                std::sync::Arc::clone(&edge),
                std::sync::Arc::clone(&graceful),
                shutdown_rx.clone(),
            ))
        })
        .collect();
    stop.await;
    tracing::info!("shutting down: closing connections");
    let _ = shutdown_tx.send(true);
    mcp.close();
    for l in loops {
        let _ = l.await;
    }
    match std::sync::Arc::try_unwrap(graceful) {
        Ok(graceful) => {
            if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway");
            }
        }
        Err(_) => tracing::warn!("connections still being accepted at shutdown"),
    }
    drop(edge);
    // The inbox sockets close once the shutdown signal fired.
    let _ = inbox.await;
    Ok(())
}
