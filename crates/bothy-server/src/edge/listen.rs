//! The daemon's listeners: plain or TLS, HTTP/1.1 (with upgrades) and
//! HTTP/2, each connection watched for a graceful shutdown. Limits here are
//! what a slow or hostile client meets first: a cap on connections, a
//! deadline for the request head and for the TLS handshake, a bound on the
//! head's size.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bothy_control::Boxes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::Edge;

/// Open connections one listener keeps; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8192;
/// Time for a client to send a request's head (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Time for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read (431 beyond, from HTTP/1; HTTP/2 refuses
/// a longer header list).
const MAX_HEAD: usize = 64 * 1024;

/// One listener and what it serves.
pub struct Listener {
    pub tcp: TcpListener,
    /// HTTPS with this configuration, else plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The API too (its own host names), else box URLs only.
    pub api: Option<axum::Router>,
}

/// What a request's handler knows of its connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub https: bool,
}

/// Accepts connections on `listener` until `stop` turns true; each is
/// served by `edge` and watched by `graceful`.
pub async fn serve_connections<B: Boxes>(
    listener: Listener,
    edge: Arc<Edge<B>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let builder = Arc::new(builder());
    let tls = listener.tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.tcp.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: give it a moment.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY a small write waits for the ACK of the one
        // before: exec output and NDJSON lines would lag.
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            https: tls.is_some(),
        };
        let (edge, builder, api, graceful, tls) = (
            Arc::clone(&edge),
            Arc::clone(&builder),
            listener.api.clone(),
            Arc::clone(&graceful),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(stream, conn, edge, api, &builder, &graceful).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_one(stream, conn, edge, api, &builder, &graceful).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_one<B: Boxes, I>(
    io: I,
    conn: ConnInfo,
    edge: Arc<Edge<B>>,
    api: Option<axum::Router>,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let edge = Arc::clone(&edge);
        let api = api.clone();
        async move { Ok::<_, Infallible>(edge.handle(req, conn, api).await) }
    });
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = graceful.watch(served.into_owned()).await {
        tracing::debug!(error = %e, peer = %conn.peer, "connection ended with an error");
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32);
    b
}
