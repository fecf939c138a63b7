//! `bothy bench control`: `true` run over one control WebSocket
//! (`/v1/sprites/{name}/control`, [`bothy_api::control`]) beside a new exec
//! WebSocket per command, which is what `bench exec` times.
//!
//! One bothy, one control connection opened before anything is timed. A
//! control operation is timed from sending its `op.start` to receiving its
//! `op.complete`; an exec from connect to its exit frame, as in `bench
//! exec`. After untimed warm-up operations on both paths, the runs
//! alternate between the two, so a host whose load changes during the run
//! changes both series alike.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::control::{Envelope, CONTROL_PREFIX, OP_COMPLETE, OP_ERROR, OP_EXEC, OP_START};
use bothy_client::{Client, ExecParams};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Url;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::args::BenchControlArgs;
use crate::boxes::{bench_prefix, create_sleepless_box, destroy_all, run_true};
use crate::stats::{percentile, round3, sorted_ms};
use crate::Daemon;

/// Untimed operations on each path before the clock starts.
const WARM_UP: usize = 5;
/// One operation (or the connect) taking longer than this is a failure.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Stdout, stderr, and so on that one `true` may send before its
/// `op.complete`: far more than it does.
const MAX_MESSAGES_PER_OP: usize = 1000;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The JSON line printed for each path.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ControlLine {
    bench: &'static str,
    path: &'static str,
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
}

impl ControlLine {
    /// Summarises `samples`; `None` when there are none.
    fn new(path: &'static str, samples: &[Duration]) -> Option<Self> {
        let ms = sorted_ms(samples);
        Some(Self {
            bench: "control",
            path,
            runs: ms.len(),
            p50_ms: round3(percentile(&ms, 50.0)?),
            p99_ms: round3(percentile(&ms, 99.0)?),
        })
    }
}

pub async fn control(daemon: &Daemon<'_>, args: BenchControlArgs) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-control", bench_prefix());
    // No idle sleep between runs: every command finds the bothy running.
    create_sleepless_box(&client, &name).await?;
    let outcome = measure(&client, &name, args.runs).await;
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    for (path, samples) in outcome? {
        let line = ControlLine::new(path, &samples)
            .ok_or_else(|| anyhow::anyhow!("no {path} run finished"))?;
        println!("{}", serde_json::to_string(&line)?);
    }
    cleanup.map(|()| 0)
}

/// The samples of `control-ws`, then of `exec-ws`.
async fn measure(
    client: &Client,
    name: &str,
    runs: usize,
) -> Result<Vec<(&'static str, Vec<Duration>)>> {
    let mut ws = connect(client, name).await?;
    let start = op_start(&["true"]);
    let params = ExecParams::new(vec!["true".into()]);
    for _ in 0..WARM_UP {
        run_op(&mut ws, &start).await?;
        run_true(client, name, &params).await?;
    }
    let mut control = Vec::with_capacity(runs);
    let mut exec = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run_op(&mut ws, &start).await?;
        control.push(started.elapsed());
        let started = Instant::now();
        run_true(client, name, &params).await?;
        exec.push(started.elapsed());
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(vec![("control-ws", control), ("exec-ws", exec)])
}

/// `ws(s)://…/v1/sprites/{name}/control` for the API at `base`.
fn control_url(base: &Url, name: &str) -> Result<Url> {
    let mut url = base.clone();
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => anyhow::bail!("the API URL {base} is {other}://, not http:// or https://"),
    };
    url.set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("cannot make a WebSocket URL of {base}"))?;
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["v1", "sprites", name, "control"]);
    }
    Ok(url)
}

/// Opens the control connection with the client's token.
async fn connect(client: &Client, name: &str) -> Result<Ws> {
    let url = control_url(client.base_url(), name)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("a WebSocket request to {url}"))?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", client.token()))
        .context("the API token is not a valid header value")?;
    auth.set_sensitive(true);
    request.headers_mut().insert("authorization", auth);
    let (ws, _) = tokio::time::timeout(OP_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .with_context(|| format!("opening {url} took over {OP_TIMEOUT:?}"))?
        .with_context(|| format!("opening {url}"))?;
    Ok(ws)
}

/// `control:{"type":"op.start","op":"exec",...}` running `cmd` without stdin.
fn op_start(cmd: &[&str]) -> String {
    let envelope = serde_json::json!({
        "type": OP_START,
        "op": OP_EXEC,
        "args": { "cmd": cmd, "stdin": "false" },
    });
    format!("{CONTROL_PREFIX}{envelope}")
}

/// What a server message means to an operation waiting for its end.
#[derive(Debug, PartialEq)]
enum Reply {
    /// `op.complete` with this exit code.
    Complete(i32),
    /// `op.error` with this text.
    Error(String),
    /// The connection is closing.
    Closed,
    /// Output, `session_info`, the exit frame, pings: the operation goes on.
    Other,
}

fn classify(message: &Message) -> Reply {
    match message {
        Message::Text(t) => match t.as_str().strip_prefix(CONTROL_PREFIX) {
            Some(json) => match serde_json::from_str::<Envelope>(json) {
                Ok(e) if e.kind == OP_COMPLETE => {
                    let code = e.args.get("exitCode").and_then(serde_json::Value::as_i64);
                    match code.and_then(|c| i32::try_from(c).ok()) {
                        Some(code) => Reply::Complete(code),
                        None => Reply::Error(format!("op.complete without an exit code: {json}")),
                    }
                }
                Ok(e) if e.kind == OP_ERROR => Reply::Error(
                    e.args
                        .get("error")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or(json)
                        .to_string(),
                ),
                Ok(_) => Reply::Other,
                Err(e) => Reply::Error(format!("malformed control message ({e}): {json}")),
            },
            None => Reply::Other,
        },
        Message::Close(_) => Reply::Closed,
        _ => Reply::Other,
    }
}

/// Sends `start` and reads until its `op.complete`; fails unless the
/// command exited 0.
async fn run_op(ws: &mut Ws, start: &str) -> Result<()> {
    ws.send(Message::text(start))
        .await
        .context("sending op.start")?;
    let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
    for _ in 0..MAX_MESSAGES_PER_OP {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no op.complete within {OP_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the control connection closed mid-operation"))?
            .context("reading the control connection")?;
        match classify(&message) {
            Reply::Complete(0) => return Ok(()),
            Reply::Complete(code) => anyhow::bail!("`true` exited {code} over control"),
            Reply::Error(e) => anyhow::bail!("the control operation failed: {e}"),
            Reply::Closed => anyhow::bail!("the daemon closed the control connection: {message}"),
            Reply::Other => continue,
        }
    }
    anyhow::bail!("over {MAX_MESSAGES_PER_OP} messages and no op.complete")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_start_is_what_the_sdks_send() {
        let text = op_start(&["true"]);
        let json = text.strip_prefix("control:").expect("prefixed");
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"type": "op.start", "op": "exec",
                "args": {"cmd": ["true"], "stdin": "false"}})
        );
        let parsed: bothy_api::control::OpStart = serde_json::from_str(json).expect("an OpStart");
        assert_eq!(parsed.args.cmd, ["true"]);
    }

    #[test]
    fn replies_end_the_operation_only_on_complete_error_or_close() {
        let text = |s: &str| Message::text(s.to_string());
        assert_eq!(
            classify(&text(&bothy_api::control::op_complete(0))),
            Reply::Complete(0)
        );
        assert_eq!(
            classify(&text(&bothy_api::control::op_complete(3))),
            Reply::Complete(3)
        );
        assert_eq!(
            classify(&text(&bothy_api::control::op_error("no box"))),
            Reply::Error("no box".into())
        );
        assert!(matches!(
            classify(&text(r#"control:{"type":"op.complete","args":{}}"#)),
            Reply::Error(e) if e.contains("without an exit code")
        ));
        assert!(matches!(
            classify(&text("control:{oops")),
            Reply::Error(e) if e.contains("malformed")
        ));
        assert_eq!(
            classify(&text(r#"{"type":"session_info","session_id":"1"}"#)),
            Reply::Other
        );
        assert_eq!(
            classify(&Message::binary(vec![3u8, 0])),
            Reply::Other,
            "the exit frame comes before op.complete"
        );
        assert_eq!(classify(&Message::Close(None)), Reply::Closed);
    }

    #[test]
    fn control_urls_follow_the_api_scheme() {
        let url = |base: &str| {
            control_url(&Url::parse(base).expect("url"), "my box").map(|u| u.to_string())
        };
        assert_eq!(
            url("http://127.0.0.1:7070").expect("http"),
            "ws://127.0.0.1:7070/v1/sprites/my%20box/control"
        );
        assert_eq!(
            url("https://api.example/base/").expect("https"),
            "wss://api.example/base/v1/sprites/my%20box/control"
        );
        assert!(url("ftp://h").is_err());
    }

    #[test]
    fn a_line_per_path() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let line = ControlLine::new("control-ws", &s).expect("samples");
        assert_eq!(
            serde_json::to_value(&line).expect("serialisable"),
            serde_json::json!({"bench": "control", "path": "control-ws", "runs": 100,
                "p50_ms": 50.0, "p99_ms": 99.0})
        );
        assert!(ControlLine::new("exec-ws", &[]).is_none());
    }
}
