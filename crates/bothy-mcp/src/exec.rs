//! `exec`: run one command to its end and hand back what it printed.
//!
//! It goes over the exec WebSocket rather than the HTTP exec endpoint: the
//! HTTP answer's frames carry no length and are told apart only by HTTP
//! chunk boundaries, which an HTTP client does not keep (hyper hands a 32
//! KiB chunk over in pieces as its 8 KiB reads fill), so output past a few
//! KiB would be misread. WebSocket messages keep their boundaries.

use std::time::Duration;

use bothy_client::{Client, ClientError, ExecEvent};
use serde_json::json;

use crate::output::Capped;
use crate::params::ExecArgs;

/// Kept of each of stdout and stderr: the first 8 KiB and the last 24 KiB.
const HEAD: usize = 8 * 1024;
const TAIL: usize = 24 * 1024;

/// How a run ended, before it is turned into a tool result.
pub struct Outcome {
    pub stdout: Capped,
    pub stderr: Capped,
    /// `None` when the command did not end within the timeout, or the
    /// connection ended before its exit code came.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub session: Option<String>,
}

impl Outcome {
    pub fn to_json(&self, timeout: Duration) -> serde_json::Value {
        let mut v = json!({
            "exit_code": self.exit_code,
            "stdout": self.stdout.text(),
            "stderr": self.stderr.text(),
        });
        let mut notes = Vec::new();
        for (name, c) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if c.omitted() > 0 {
                notes.push(format!(
                    "{name} was {} bytes; the middle {} were left out: redirect to a file and read parts of it (head, tail, grep) for the rest",
                    c.total(),
                    c.omitted()
                ));
            }
        }
        if self.timed_out {
            notes.push(format!(
                "the command did not finish within {} s and was killed; give timeout_secs (at most 3600) or run long jobs as a service",
                timeout.as_secs()
            ));
        } else if self.exit_code.is_none() {
            notes.push(
                "the connection to the sprite ended before the command's exit code arrived".into(),
            );
        }
        if !notes.is_empty() {
            v["notes"] = json!(notes);
        }
        if let Some(s) = &self.session {
            v["session"] = json!(s);
        }
        v
    }
}

pub async fn run(client: &Client, args: &ExecArgs) -> Result<Outcome, RunError> {
    let params = args.params().map_err(RunError::Refused)?;
    let timeout = args.timeout();
    let conn = client
        .exec(&args.sprite, &params)
        .await
        .map_err(RunError::Api)?;
    let session = conn.session_info().map(|i| i.session_id.clone());
    let (mut tx, mut rx) = conn.split();
    let mut out = Outcome {
        stdout: Capped::new(HEAD, TAIL),
        stderr: Capped::new(HEAD, TAIL),
        exit_code: None,
        timed_out: false,
        session: session.clone(),
    };
    let work = async {
        if let Some(input) = &args.stdin {
            tx.send_stdin(input.as_bytes()).await?;
        }
        tx.send_stdin_eof().await?;
        while let Some(event) = rx.next_event().await? {
            match event {
                ExecEvent::Stdout(b) => out.stdout.push(&b),
                ExecEvent::Stderr(b) => out.stderr.push(&b),
                ExecEvent::Exit(code) => {
                    out.exit_code = Some(code);
                    break;
                }
                ExecEvent::SessionInfo(i) => out.session = Some(i.session_id),
                ExecEvent::PortOpen(_) => {}
            }
        }
        Ok::<(), ClientError>(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RunError::Api(e)),
        Err(_) => {
            out.timed_out = true;
            // The session would otherwise run on after we leave (for
            // max_run_after_disconnect); the caller was promised a kill.
            if let Some(id) = out.session.clone() {
                let req = bothy_api::KillSessionRequest {
                    signal: Some("KILL".into()),
                    timeout: Some(0),
                };
                if let Err(e) = client.kill_session(&args.sprite, &id, &req).await {
                    tracing::debug!(error = %e, "could not kill a timed-out exec");
                }
            }
        }
    }
    let _ = tx.close().await;
    Ok(out)
}

pub enum RunError {
    /// The tool's own check refused the arguments.
    Refused(String),
    Api(ClientError),
}
