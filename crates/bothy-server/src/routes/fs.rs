//! The fs API, `/v1/sprites/{name}/fs/...`, as `sprites-py` and
//! `@fly/sprites` call it: `read` answers the raw bytes, `write` takes them
//! as the body (both streamed, never held whole), `list` lists a directory
//! or answers a file as its one entry (how the SDKs stat), and `delete`,
//! `rename`, `copy`, `chmod`, `chown` change files. Every call names
//! `path` (or `source`/`dest`) and `workingDir`, which a relative path is
//! taken from. Failures answer `{error, code, path}` with `code` an errno
//! name (see `ApiError::Fs`). `fs/watch` is a WebSocket: a `subscribe`
//! message, then `subscribed` and `event` messages.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bothy_control::fs::{
    check_working_dir, parse_mode, FsCode, FsError, FsOwner, FsRead, FsRequest, FsWatch,
};
use bothy_control::{Boxes, Control};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::stream::OCTET_STREAM;
use crate::Shutdown;

/// How long a watch's client has to send its subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a watch's client may send.
const MAX_WATCH_MESSAGE: usize = 64 << 10;

fn einval(message: impl Into<String>, path: &str) -> ApiError {
    ApiError::Fs(FsError::new(FsCode::EINVAL, message, path))
}

/// The query of an fs call.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn path(&self) -> ApiResult<String> {
        match self.0.get("path") {
            Some(p) if !p.is_empty() => Ok(p.clone()),
            _ => Err(einval("the query needs a path", "")),
        }
    }

    fn working_dir(&self) -> ApiResult<String> {
        Ok(check_working_dir(
            self.0.get("workingDir").map(String::as_str),
        )?)
    }

    fn flag(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.0.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(einval(format!("{name}={other:?} is not true or false"), "")),
        }
    }
}

/// Where a path lands, as answers show it.
fn shown(working_dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", working_dir.trim_end_matches('/'))
    }
}

fn body_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes =
        body.map_err(|r| einval(format!("could not read the body: {}", r.body_text()), ""))?;
    serde_json::from_slice(&bytes).map_err(|e| einval(format!("malformed JSON body: {e}"), ""))
}

pub async fn read<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, name).await?;
    let q = Query::parse(raw.as_deref());
    let req = FsRequest::Read {
        path: q.path()?,
        working_dir: q.working_dir()?,
    };
    let file = control.fs_read(&row, req).await?;
    // Pulled by the client: the next piece is asked of the box only once
    // the last one was taken. A failure part-way aborts the answer, so the
    // client sees a cut-off body, never a short file as if whole.
    let body = futures_util::stream::unfold(Some(file), |file: Option<FsRead>| async move {
        let mut file = file?;
        match file.next().await {
            Ok(Some(piece)) => Some((Ok(Bytes::from(piece)), Some(file))),
            Ok(None) => None,
            Err(e) => {
                tracing::info!(error = %e, "fs read cut off");
                Some((Err(std::io::Error::other(e.to_string())), None))
            }
        }
    });
    Ok(([(CONTENT_TYPE, OCTET_STREAM)], Body::from_stream(body)).into_response())
}

pub async fn write<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let q = Query::parse(raw.as_deref());
    let (path, working_dir) = (q.path()?, q.working_dir()?);
    let mode = match q.0.get("mode").filter(|m| !m.is_empty()) {
        Some(m) => Some(parse_mode(m, &path)?),
        None => None,
    };
    // `mkdirParents` is what the SDKs send; `mkdir` what Fly's docs name.
    let mkdir_parents = q
        .flag("mkdirParents")?
        .or(q.flag("mkdir")?)
        .unwrap_or(false);
    let req = FsRequest::Write {
        path: path.clone(),
        working_dir: working_dir.clone(),
        mode,
        mkdir_parents,
    };
    let mut file = control.fs_write(&row, req).await?;
    let mut data = body.into_data_stream();
    while let Some(piece) = data.next().await {
        let piece = piece.map_err(|e| {
            ApiError::Fs(FsError::new(
                FsCode::EIO,
                format!("the upload was cut off ({e}); the file was not changed"),
                shown(&working_dir, &path),
            ))
        })?;
        if file.send(&piece).await.is_err() {
            return Err(file.failure().await.into());
        }
    }
    let entry = file.finish().await?;
    Ok(Json(json!({
        "path": entry.path,
        "size": entry.size,
        "mode": entry.mode,
    })))
}

pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let q = Query::parse(raw.as_deref());
    let (path, working_dir) = (q.path()?, q.working_dir()?);
    let req = FsRequest::List {
        path: path.clone(),
        working_dir: working_dir.clone(),
        recursive: q.flag("recursive")?.unwrap_or(false),
        pattern: q.0.get("pattern").filter(|p| !p.is_empty()).cloned(),
    };
    let entries = control.fs_list(&row, req).await?;
    Ok(Json(json!({
        "path": shown(&working_dir, &path),
        "count": entries.len(),
        "entries": entries,
    })))
}

pub async fn delete<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let q = Query::parse(raw.as_deref());
    let (path, working_dir) = (q.path()?, q.working_dir()?);
    let req = FsRequest::Delete {
        path: path.clone(),
        working_dir: working_dir.clone(),
        recursive: q.flag("recursive")?.unwrap_or(false),
    };
    let count = control.fs_change(&row, req).await?;
    Ok(Json(json!({
        "deleted": [shown(&working_dir, &path)],
        "count": count,
    })))
}

/// `rename` and `copy` bodies. `asRoot` is accepted and changes nothing:
/// every call already runs as the box's root.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoveBody {
    source: String,
    dest: String,
    working_dir: Option<String>,
    recursive: Option<bool>,
    preserve_attrs: Option<bool>,
    #[allow(dead_code)]
    as_root: Option<bool>,
}

pub async fn rename<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let b: MoveBody = body_json(body)?;
    let working_dir = check_working_dir(b.working_dir.as_deref())?;
    let req = FsRequest::Rename {
        source: b.source.clone(),
        dest: b.dest.clone(),
        working_dir: working_dir.clone(),
    };
    control.fs_change(&row, req).await?;
    Ok(Json(json!({
        "source": shown(&working_dir, &b.source),
        "dest": shown(&working_dir, &b.dest),
    })))
}

pub async fn copy<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let b: MoveBody = body_json(body)?;
    let working_dir = check_working_dir(b.working_dir.as_deref())?;
    let req = FsRequest::Copy {
        source: b.source.clone(),
        dest: b.dest.clone(),
        working_dir: working_dir.clone(),
        recursive: b.recursive.unwrap_or(false),
        preserve_attrs: b.preserve_attrs.unwrap_or(false),
    };
    let count = control.fs_change(&row, req).await?;
    Ok(Json(json!({
        "source": shown(&working_dir, &b.source),
        "dest": shown(&working_dir, &b.dest),
        "count": count,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChmodBody {
    path: String,
    working_dir: Option<String>,
    mode: String,
    recursive: Option<bool>,
    #[allow(dead_code)]
    as_root: Option<bool>,
}

pub async fn chmod<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let b: ChmodBody = body_json(body)?;
    let working_dir = check_working_dir(b.working_dir.as_deref())?;
    let mode = parse_mode(&b.mode, &b.path)?;
    let req = FsRequest::Chmod {
        path: b.path.clone(),
        working_dir: working_dir.clone(),
        mode,
        recursive: b.recursive.unwrap_or(false),
    };
    let count = control.fs_change(&row, req).await?;
    Ok(Json(json!({
        "path": shown(&working_dir, &b.path),
        "mode": format!("{mode:04o}"),
        "count": count,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChownBody {
    path: String,
    working_dir: Option<String>,
    uid: Option<FsOwner>,
    gid: Option<FsOwner>,
    recursive: Option<bool>,
    #[allow(dead_code)]
    as_root: Option<bool>,
}

pub async fn chown<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, name).await?;
    let b: ChownBody = body_json(body)?;
    let working_dir = check_working_dir(b.working_dir.as_deref())?;
    let req = FsRequest::Chown {
        path: b.path.clone(),
        working_dir: working_dir.clone(),
        uid: b.uid.clone(),
        gid: b.gid.clone(),
        recursive: b.recursive.unwrap_or(false),
    };
    let count = control.fs_change(&row, req).await?;
    Ok(Json(json!({
        "path": shown(&working_dir, &b.path),
        "uid": b.uid,
        "gid": b.gid,
        "count": count,
    })))
}

/// The watch's first client message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    paths: Vec<String>,
    #[serde(default)]
    recursive: bool,
    working_dir: Option<String>,
}

pub async fn watch<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    name: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, name).await?;
    let ws =
        ws.map_err(|_| ApiError::bad_request("fs/watch is a WebSocket: send the upgrade headers"))?;
    Ok(ws
        .max_message_size(MAX_WATCH_MESSAGE)
        .max_frame_size(MAX_WATCH_MESSAGE)
        .on_upgrade(move |socket| follow(socket, control, row, shutdown.0)))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(100).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn timestamp(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn follow<B: Boxes>(
    mut socket: WebSocket,
    control: Control<B>,
    row: bothy_control::SpriteRow,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, socket.recv()).await;
    let sub: Result<Subscribe, String> = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str())
            .map_err(|e| format!("malformed subscribe message: {e}")),
        Ok(Some(Ok(_))) => Err("send a JSON subscribe message first".into()),
        Ok(_) => return,
        Err(_) => Err(format!("no subscribe message within {SUBSCRIBE_TIMEOUT:?}")),
    };
    let sub = sub.and_then(|s| {
        if s.kind == "subscribe" {
            Ok(s)
        } else {
            Err(format!("expected a subscribe message, not {:?}", s.kind))
        }
    });
    let sub = match sub {
        Ok(s) => s,
        Err(message) => {
            let _ = socket
                .send(text(json!({"type": "error", "message": message})))
                .await;
            return close(socket, 1008, "bad subscription").await;
        }
    };
    let watch = match check_working_dir(sub.working_dir.as_deref()) {
        Ok(working_dir) => {
            let req = FsRequest::Watch {
                paths: sub.paths,
                working_dir,
                recursive: sub.recursive,
            };
            control.fs_watch(&row, req).await
        }
        Err(e) => Err(e),
    };
    let FsWatch {
        paths,
        mut events,
        awake: _awake,
    } = match watch {
        Ok(w) => w,
        Err(e) => {
            let _ = socket
                .send(text(json!({"type": "error", "message": e.to_string()})))
                .await;
            return close(socket, 1008, "watch refused").await;
        }
    };
    if socket
        .send(text(json!({"type": "subscribed", "paths": paths})))
        .await
        .is_err()
    {
        return;
    }
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            m = rx.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Further messages change nothing: one subscription per
                // connection.
                Some(Ok(_)) => {}
            },
            e = events.recv() => {
                let msg = match e {
                    Some(Ok(ev)) => json!({
                        "type": "event",
                        "path": ev.path,
                        "event": ev.event,
                        "timestamp": timestamp(ev.timestamp_ms),
                        "size": ev.size,
                        "isDir": ev.is_dir,
                    }),
                    Some(Err(err)) => json!({"type": "error", "message": err.message, "path": err.path}),
                    None => {
                        // The box stopped (or its agent ended the watch).
                        let frame = CloseFrame { code: 1000, reason: "the watch ended: the box stopped".into() };
                        let _ = tx.send(Message::Close(Some(frame))).await;
                        return;
                    }
                };
                if tx.send(text(msg)).await.is_err() {
                    return;
                }
            },
            _ = shutdown.changed() => {
                let frame = CloseFrame { code: 1001, reason: "the bothy daemon is shutting down".into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
}
