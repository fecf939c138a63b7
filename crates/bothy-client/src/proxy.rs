//! Port forwards: one `/proxy` WebSocket per forwarded connection, carrying
//! raw bytes to a port on the box's loopback.

use std::time::Duration;

use bothy_api::ports::{ProxyInit, ProxyStatus, PROXY_CONNECTED, PROXY_ERROR};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::error::{ClientError, Result};
use crate::exec::{open_websocket, transport_error, Ws};

/// How long the server has to answer the connect request; it wakes the box
/// and waits for the port meanwhile.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the local side per message.
const READ_CHUNK: usize = 64 * 1024;

/// A forward the server has connected: bytes written to it reach the port
/// in the box.
pub struct ProxyConnection {
    ws: Ws,
    target: String,
}

impl ProxyConnection {
    /// Opens `url` (already `ws(s)://`) and asks for `host`:`port`.
    pub(crate) async fn connect(
        url: Url,
        token: &str,
        api_url: &str,
        host: &str,
        port: u16,
    ) -> Result<Self> {
        let mut ws = open_websocket(url, token, api_url).await?;
        let init = ProxyInit {
            host: host.to_string(),
            port: port.into(),
        };
        let text = serde_json::to_string(&init)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the forward: {e}")))?;
        ws.send(Message::Text(text.into()))
            .await
            .map_err(transport_error)?;
        let status = tokio::time::timeout(ANSWER_TIMEOUT, read_status(&mut ws))
            .await
            .map_err(|_| {
                ClientError::Transport(format!(
                    "the daemon did not connect the forward within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ))
            })??;
        match status.status.as_str() {
            PROXY_CONNECTED => Ok(Self {
                ws,
                target: status.target.unwrap_or_else(|| format!("{host}:{port}")),
            }),
            PROXY_ERROR => Err(ClientError::OperationFailed(
                status
                    .error
                    .unwrap_or_else(|| "the daemon refused the forward".into()),
            )),
            other => Err(ClientError::Protocol(format!(
                "forward status {other:?} is neither connected nor error"
            ))),
        }
    }

    /// What the server connected to (`localhost:8080`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Carries bytes between `local` and the box until either side closes,
    /// then closes the other.
    pub async fn pump<S>(self, local: S) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut ws_tx, mut ws_rx) = self.ws.split();
        let (mut local_rx, mut local_tx) = tokio::io::split(local);
        let outcome = {
            let to_box = async {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = local_rx
                        .read(&mut buf)
                        .await
                        .map_err(|e| ClientError::Transport(e.to_string()))?;
                    if n == 0 {
                        return Ok(());
                    }
                    ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .map_err(transport_error)?;
                }
            };
            let from_box = async {
                while let Some(message) = ws_rx.next().await {
                    match message.map_err(transport_error)? {
                        Message::Binary(b) => local_tx
                            .write_all(&b)
                            .await
                            .map_err(|e| ClientError::Transport(e.to_string()))?,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                let _ = local_tx.shutdown().await;
                Ok(())
            };
            tokio::select! {
                r = to_box => r,
                r = from_box => r,
            }
        };
        let _ = ws_tx.close().await;
        outcome
    }
}

/// The server's first text message; pings and stray binary before it are
/// skipped.
async fn read_status(ws: &mut Ws) -> Result<ProxyStatus> {
    while let Some(message) = ws.next().await {
        match message.map_err(transport_error)? {
            Message::Text(t) => {
                return serde_json::from_str(&t).map_err(|e| {
                    ClientError::Protocol(format!("forward answer {t:?} is not JSON: {e}"))
                })
            }
            Message::Close(frame) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(ClientError::Disconnected(format!(
                    "the daemon closed the forward before answering {why}"
                )));
            }
            _ => {}
        }
    }
    Err(ClientError::Disconnected(
        "the daemon closed the forward before answering".into(),
    ))
}

/// The `ws(s)://` URL of a forward.
pub(crate) fn proxy_url(api: Url) -> Result<Url> {
    crate::exec::websocket_url(api)
}
