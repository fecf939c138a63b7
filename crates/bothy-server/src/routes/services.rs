//! `/v1/sprites/{name}/services`: what the box's init keeps running, as
//! `sprites-py` (`services.py`) calls it. PUT, start, restart and stop answer
//! with NDJSON `{type, data?, exit_code?, timestamp, log_files?}` lines
//! while they follow the service (`?duration=5s`; stop: `?timeout=`), then
//! `{"type": "complete"}`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_control::services::{parse_follow, ServiceDef, ServiceEvent, ServiceInfo, ServiceStream};
use bothy_control::time::{now_ms, rfc3339_ms};
use bothy_control::{Boxes, Control, SpriteRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sprites::sprite_of;
use super::ApiJson;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::params::parse_signal;
use crate::stream::{streamed, NDJSON};

/// A service's definition as the SDKs send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceBody {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    http_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalBody {
    name: String,
    signal: Value,
}

#[derive(Serialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_files: Option<BTreeMap<String, String>>,
}

fn to_json(s: &ServiceInfo) -> Value {
    let st = &s.state;
    json!({
        "name": s.name,
        "cmd": s.def.cmd,
        "args": s.def.args,
        "env": s.def.env,
        "dir": s.def.dir,
        "needs": s.def.needs,
        "http_port": s.def.http_port,
        "state": {
            "name": s.name,
            "status": st.status,
            "pid": st.pid,
            "started_at": st.started_ms.map(rfc3339_ms),
            "error": st.error,
            "restart_count": st.restart_count,
            "next_restart_at": st.next_restart_ms.map(rfc3339_ms),
        },
    })
}

/// One query parameter (`duration`, `timeout`) as a duration.
fn query_duration(raw: Option<&str>, key: &str) -> ApiResult<Option<Duration>> {
    query_value(raw, key)
        .map(|v| parse_follow(&v).map_err(ApiError::from))
        .transpose()
}

/// The decoded value of query parameter `key`, if given.
fn query_value(raw: Option<&str>, key: &str) -> Option<String> {
    raw?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The streamed answer of an operation that follows a service; a stop's
/// ends once the service has stopped.
fn answer(stream: ServiceStream, until_stopped: bool) -> Response {
    let (out, response) = streamed(NDJSON);
    tokio::spawn(async move {
        let ServiceStream {
            mut events,
            log_path,
            awake,
        } = stream;
        let line = |e: ServiceEvent| Line {
            kind: e.kind,
            data: e.data,
            exit_code: e.exit_code,
            timestamp: e.timestamp_ms,
            log_files: None,
        };
        loop {
            tokio::select! {
                next = events.recv() => match next {
                    Some(e) => {
                        let stopped = e.kind == "stopped";
                        if !out.line(&line(e)).await {
                            return;
                        }
                        if stopped && until_stopped {
                            break;
                        }
                    }
                    None => break,
                },
                () = out.closed() => return,
            }
        }
        let mut files = BTreeMap::new();
        files.insert("output".to_string(), log_path);
        let _ = out
            .line(&Line {
                kind: "complete".into(),
                data: None,
                exit_code: None,
                timestamp: now_ms(),
                log_files: Some(files),
            })
            .await;
        drop(awake);
    });
    response
}

/// One services call, whoever makes it (the API with a token, or the box
/// itself on its own socket).
pub(crate) enum Call {
    List,
    Get(String),
    /// Name, definition, the raw query (`duration`).
    Put(String, ServiceBody, Option<String>),
    Delete(String),
    /// Name, operation, the raw query (`duration`, stop: `timeout`).
    Op(String, Op, Option<String>),
    Signal(SignalBody),
    /// Name, the raw query (`lines`, `duration` to follow).
    Logs(String, Option<String>),
}

/// The operation a POST on a service names.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    Start,
    Restart,
    Stop,
}

/// Answers `call` on `row`'s box.
pub(crate) async fn call<B: Boxes>(
    control: &Control<B>,
    row: &SpriteRow,
    call: Call,
) -> ApiResult<Response> {
    Ok(match call {
        Call::List => {
            let services = control.services(row).await?;
            Json(Value::Array(services.iter().map(to_json).collect())).into_response()
        }
        Call::Get(name) => Json(to_json(&control.service(row, &name).await?)).into_response(),
        Call::Put(name, body, raw) => {
            let follow = query_duration(raw.as_deref(), "duration")?.unwrap_or_default();
            let def = ServiceDef {
                cmd: body.cmd,
                args: body.args,
                env: body.env,
                dir: body.dir,
                needs: body.needs,
                http_port: body.http_port,
            };
            answer(control.put_service(row, &name, def, follow).await?, false)
        }
        Call::Delete(name) => {
            control.delete_service(row, &name).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        Call::Op(name, op, raw) => {
            let key = if matches!(op, Op::Stop) {
                "timeout"
            } else {
                "duration"
            };
            let secs = query_duration(raw.as_deref(), key)?;
            let stream = match op {
                Op::Start | Op::Restart => {
                    let restart = matches!(op, Op::Restart);
                    control
                        .start_service(row, &name, restart, secs.unwrap_or_default())
                        .await?
                }
                Op::Stop => control.stop_service(row, &name, secs).await?,
            };
            answer(stream, matches!(op, Op::Stop))
        }
        Call::Signal(body) => {
            let signal = match &body.signal {
                Value::String(s) => parse_signal(s),
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| (1..=64).contains(n)),
                _ => None,
            }
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid signal {}: use a name like SIGTERM or a number 1-64",
                    body.signal
                ))
            })?;
            control.signal_service(row, &body.name, signal).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        Call::Logs(name, raw) => {
            let lines = query_value(raw.as_deref(), "lines")
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        ApiError::bad_request(format!("lines={v:?}: give a number of lines"))
                    })
                })
                .transpose()?;
            let follow = query_duration(raw.as_deref(), "duration")?;
            let (text, log_path) = control
                .service_logs(row, &name, bothy_control::services::MAX_LOG_BYTES)
                .await?;
            let followed = match follow {
                Some(d) if !d.is_zero() => Some(control.watch_service(row, &name, d).await?),
                _ => None,
            };
            log_lines(text, lines, log_path, followed)
        }
    })
}

/// The end of a service's log (its last `lines`, if given): one NDJSON
/// `{type: "stdout", data}` line per log line, then what the service does
/// while `followed` lasts, then `complete` with the log's path.
fn log_lines(
    text: String,
    lines: Option<usize>,
    log_path: String,
    followed: Option<ServiceStream>,
) -> Response {
    let (out, response) = streamed(NDJSON);
    tokio::spawn(async move {
        let at = now_ms();
        let all: Vec<&str> = text.lines().collect();
        let from = lines.map_or(0, |n| all.len().saturating_sub(n));
        for l in &all[from..] {
            let line = Line {
                kind: "stdout".into(),
                data: Some(format!("{l}\n")),
                exit_code: None,
                timestamp: at,
                log_files: None,
            };
            if !out.line(&line).await {
                return;
            }
        }
        if let Some(mut f) = followed {
            loop {
                tokio::select! {
                    next = f.events.recv() => match next {
                        Some(e) => {
                            let line = Line {
                                kind: e.kind,
                                data: e.data,
                                exit_code: e.exit_code,
                                timestamp: e.timestamp_ms,
                                log_files: None,
                            };
                            if !out.line(&line).await {
                                return;
                            }
                        }
                        None => break,
                    },
                    () = out.closed() => return,
                }
            }
        }
        let mut files = BTreeMap::new();
        files.insert("output".to_string(), log_path);
        let _ = out
            .line(&Line {
                kind: "complete".into(),
                data: None,
                exit_code: None,
                timestamp: now_ms(),
                log_files: Some(files),
            })
            .await;
    });
    response
}

type Named = Result<Path<(String, String)>, PathRejection>;

/// The sprite and service a path names, and the sprite's row.
async fn named<B: Boxes>(
    control: &Control<B>,
    caller: &bothy_control::Caller,
    path: Named,
) -> ApiResult<(SpriteRow, String)> {
    let Path((sprite, name)) = path?;
    Ok((control.sprite(caller, &sprite).await?, name))
}

pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    call(&control, &row, Call::List).await
}

pub async fn get_one<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Get(name)).await
}

pub async fn put<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
    RawQuery(raw): RawQuery,
    ApiJson(body): ApiJson<ServiceBody>,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Put(name, body, raw)).await
}

pub async fn delete<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Delete(name)).await
}

pub async fn start<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Op(name, Op::Start, raw)).await
}

pub async fn restart<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Op(name, Op::Restart, raw)).await
}

pub async fn stop<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Op(name, Op::Stop, raw)).await
}

pub async fn signal<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<SignalBody>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    call(&control, &row, Call::Signal(body)).await
}

pub async fn logs<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Named,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (row, name) = named(&control, &caller, path).await?;
    call(&control, &row, Call::Logs(name, raw)).await
}
