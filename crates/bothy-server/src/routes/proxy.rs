//! `WSS /v1/sprites/{name}/proxy` (a TCP port forward into the box) and
//! `WSS /v1/sprites/{name}/ports/watch` (the box's listening ports), as
//! `@fly/sprites` speaks them.
//!
//! A forward's token and sprite are checked before the upgrade (errors are
//! HTTP answers); what it connects to is only known from its first message,
//! so a refused target is a `{"status":"error"}` message and a close. The
//! only reachable addresses are the box's own loopback
//! ([`bothy_control::ports::forward_port`]).

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use bothy_api::ports::{
    PortList, PortNotification, ProxyInit, ProxyStatus, MAX_PROXY_INIT, PORT_CLOSED, PORT_LIST,
    PORT_OPENED, PROXY_CONNECTED, PROXY_ERROR, PROXY_INIT_TIMEOUT_SECS,
};
use bothy_control::ports::{OpenPort, PortChange, PortWatch};
use bothy_control::state::SpriteRow;
use bothy_control::{Boxes, Control, ControlError};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::needs_upgrade;
use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::Shutdown;

/// Largest message a forward's client may send: one write of its local
/// socket (the JS SDK sends each chunk it reads as one message).
const MAX_FORWARD_MESSAGE: usize = 1024 * 1024;
/// Bytes read from the box per binary frame.
const READ_CHUNK: usize = 64 * 1024;
/// How often a watch reads the box's socket table.
const WATCH_POLL: Duration = Duration::from_millis(500);
/// A watch client sends nothing; this bounds what it may send anyway.
const MAX_WATCH_MESSAGE: usize = 4 * 1024;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL: u16 = 1011;

/// `GET .../proxy` (upgrade).
pub async fn proxy<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let ws = ws.map_err(|_| needs_upgrade("a port forward"))?;
    Ok(ws
        .max_message_size(MAX_FORWARD_MESSAGE)
        .max_frame_size(MAX_FORWARD_MESSAGE)
        .on_upgrade(move |socket| forward(socket, control, row, shutdown.0)))
}

async fn forward<B: Boxes>(
    mut socket: WebSocket,
    control: Control<B>,
    row: SpriteRow,
    shutdown: watch::Receiver<bool>,
) {
    let init = match read_init(&mut socket).await {
        Ok(init) => init,
        Err(e) => return refuse(socket, CLOSE_POLICY, &e).await,
    };
    let port = init.port.as_i64().unwrap_or(0);
    let (tcp, awake) = match control.forward(&row, &init.host, port).await {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                ControlError::Invalid { .. } => CLOSE_POLICY,
                _ => CLOSE_INTERNAL,
            };
            tracing::info!(box_id = %row.id, port, "port forward refused: {e}");
            return refuse(socket, code, &e.to_string()).await;
        }
    };
    let target = target_of(&init.host, port);
    let connected = ProxyStatus {
        status: PROXY_CONNECTED.into(),
        target: Some(target.clone()),
        error: None,
    };
    if socket.send(json_message(&connected)).await.is_err() {
        return;
    }
    tracing::info!(box_id = %row.id, %target, "port forward open");
    pump(socket, tcp, shutdown).await;
    drop(awake);
    tracing::info!(box_id = %row.id, %target, "port forward closed");
}

/// The first message: `{"host": ..., "port": N}` within the deadline.
async fn read_init(socket: &mut WebSocket) -> Result<ProxyInit, String> {
    let deadline = Duration::from_secs(PROXY_INIT_TIMEOUT_SECS);
    loop {
        let message = match tokio::time::timeout(deadline, socket.recv()).await {
            Err(_) => {
                return Err(format!(
                    "no {{\"host\", \"port\"}} message within {PROXY_INIT_TIMEOUT_SECS} s"
                ))
            }
            Ok(None) | Ok(Some(Err(_))) => return Err("the client went away".into()),
            Ok(Some(Ok(m))) => m,
        };
        let bytes = match &message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b.as_ref(),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err("the client closed the connection".into()),
        };
        if bytes.len() > MAX_PROXY_INIT {
            return Err(format!(
                "the first message must be at most {MAX_PROXY_INIT} bytes of JSON {{\"host\": \"localhost\", \"port\": N}}"
            ));
        }
        let init: ProxyInit = serde_json::from_slice(bytes).map_err(|e| {
            format!("the first message must be JSON {{\"host\": \"localhost\", \"port\": N}}: {e}")
        })?;
        if init.port.as_i64().is_none() {
            return Err(format!(
                "port {} is not a whole number: a port is 1-65535",
                init.port
            ));
        }
        return Ok(init);
    }
}

/// The target as the SDK prints it: the host asked for (the box's
/// loopback when none), then the port.
fn target_of(host: &str, port: i64) -> String {
    match host.trim() {
        "" => format!("localhost:{port}"),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

/// Says why in the SDK's shape, then closes.
async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    let status = ProxyStatus {
        status: PROXY_ERROR.into(),
        target: None,
        error: Some(reason.to_string()),
    };
    let _ = socket.send(json_message(&status)).await;
    let _ = socket.send(close_message(code, reason)).await;
}

fn json_message<T: serde::Serialize>(value: &T) -> Message {
    Message::Text(serde_json::to_string(value).unwrap_or_default().into())
}

fn close_message(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes; cut on a character boundary.
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

/// Bytes both ways until either side closes or the daemon stops; then the
/// other side is closed too. Each direction waits for its writes, so a slow
/// reader slows its writer rather than filling the daemon's memory.
async fn pump(socket: WebSocket, tcp: TcpStream, mut shutdown: watch::Receiver<bool>) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (code, reason) = {
        let client_to_box = async {
            while let Some(Ok(message)) = ws_rx.next().await {
                match message {
                    Message::Binary(b) => {
                        if tcp_tx.write_all(&b).await.is_err() {
                            return (CLOSE_NORMAL, "the connection in the sprite was reset");
                        }
                    }
                    Message::Close(_) => break,
                    // Bytes go as binary frames only: text is not data.
                    Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            (CLOSE_NORMAL, "")
        };
        let box_to_client = async {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match tcp_rx.read(&mut buf).await {
                    Ok(0) => return (CLOSE_NORMAL, "the sprite closed the connection"),
                    Ok(n) => {
                        let frame = Message::Binary(buf[..n].to_vec().into());
                        if ws_tx.send(frame).await.is_err() {
                            return (CLOSE_NORMAL, "");
                        }
                    }
                    Err(_) => return (CLOSE_NORMAL, "the connection in the sprite was reset"),
                }
            }
        };
        tokio::select! {
            r = client_to_box => r,
            r = box_to_client => r,
            _ = shutdown.changed() => (CLOSE_GOING_AWAY, "the bothy daemon is shutting down"),
        }
    };
    let _ = ws_tx.send(close_message(code, reason)).await;
    // Dropping the TCP halves closes the connection in the box.
}

/// `GET .../ports/watch` (upgrade): a `port_list`, then `port_opened` and
/// `port_closed` as they happen. Wakes the box once; does not keep it awake.
pub async fn watch_ports<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let ws = ws.map_err(|_| needs_upgrade("a port watch"))?;
    let watch = control.watch_ports(&row).await?;
    Ok(ws
        .max_message_size(MAX_WATCH_MESSAGE)
        .max_frame_size(MAX_WATCH_MESSAGE)
        .on_upgrade(move |socket| follow_ports(socket, control, watch, shutdown.0)))
}

async fn follow_ports<B: Boxes>(
    socket: WebSocket,
    control: Control<B>,
    mut watch: PortWatch,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut tx, mut rx) = socket.split();
    let list = PortList {
        kind: PORT_LIST.into(),
        ports: watch
            .ports()
            .iter()
            .map(|p| notification(PORT_OPENED, p))
            .collect(),
    };
    if tx.send(json_message(&list)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(WATCH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => match control.poll_ports(&mut watch).await {
                Ok(changes) => {
                    for change in changes {
                        let n = match &change {
                            PortChange::Opened(p) => notification(PORT_OPENED, p),
                            PortChange::Closed(p) => notification(PORT_CLOSED, p),
                        };
                        if tx.send(json_message(&n)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e @ ControlError::NotFound(_)) => {
                    let _ = tx.send(close_message(CLOSE_NORMAL, &e.to_string())).await;
                    return;
                }
                // Passing trouble (storage, a wedged box): the next poll
                // tells again.
                Err(e) => tracing::debug!("port watch poll failed: {e}"),
            },
            _ = shutdown.changed() => {
                let _ = tx.send(close_message(CLOSE_GOING_AWAY, "the bothy daemon is shutting down")).await;
                return;
            }
        }
    }
}

fn notification(kind: &str, p: &OpenPort) -> PortNotification {
    PortNotification {
        kind: kind.into(),
        port: p.port,
        address: p.address.to_string(),
        pid: p.pid.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_host_port() {
        assert_eq!(target_of("", 8080), "localhost:8080");
        assert_eq!(target_of("localhost", 80), "localhost:80");
        assert_eq!(target_of("::1", 3000), "[::1]:3000");
        assert_eq!(target_of("[::1]", 3000), "[::1]:3000");
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(200);
        let Message::Close(Some(f)) = close_message(CLOSE_POLICY, &long) else {
            panic!("not a close");
        };
        assert!(f.reason.len() <= 123);
    }
}
