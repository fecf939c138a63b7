//! `/v1/sprites/{name}/checkpoint(s)`: create, list, get, restore, delete.
//!
//! Create and restore answer with an NDJSON stream of `{type, data?, error?}`
//! lines as the Sprites API does; the last line is `complete` (its `data` is
//! the checkpoint id: the new one, or for a restore the automatic checkpoint
//! that keeps the state it replaced) or `error`. Failures found before any
//! work starts (unknown sprite or checkpoint, bad body) are plain API errors.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::{Checkpoint, CreateCheckpointRequest, StreamMessage};

use super::optional_json;
use super::sprites::{load, sprite_of};
use crate::app::App;
use crate::auth::Caller;
use crate::boxes::Boxes;
use crate::checkpoint_store::CheckpointRow;
use crate::error::{ApiError, ApiResult};
use crate::store::SpriteRow;

const MAX_COMMENT_CHARS: usize = 1024;

pub fn to_api(c: &CheckpointRow) -> Checkpoint {
    Checkpoint {
        id: c.id(),
        create_time: c.created_at.clone(),
        comment: c.comment.clone(),
        history: c.history.clone(),
        auto: c.auto,
    }
}

fn ndjson(lines: &[StreamMessage]) -> Response {
    let mut body = String::new();
    for l in lines {
        // Serialising a struct of strings cannot fail.
        body.push_str(&serde_json::to_string(l).unwrap_or_default());
        body.push('\n');
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

fn line(kind: &str, data: impl Into<String>) -> StreamMessage {
    StreamMessage {
        kind: kind.into(),
        data: Some(data.into()),
        error: None,
    }
}

fn error_line(e: &ApiError) -> StreamMessage {
    StreamMessage {
        kind: "error".into(),
        data: None,
        error: Some(e.to_string()),
    }
}

/// `vN` from the path, in the sprite named by it.
async fn target<B: Boxes>(
    app: &App<B>,
    caller: &Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<(SpriteRow, u64)> {
    let Path((name, id)) = path?;
    let row = load(app, caller, &name).await?;
    Ok((row, parse_id(&id)?))
}

fn parse_id(id: &str) -> ApiResult<u64> {
    bothy_api::parse_checkpoint_id(id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a checkpoint id; checkpoint ids look like v1, v2, ...",
            id.chars().take(64).collect::<String>()
        ))
    })
}

pub async fn create<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&app, &caller, path).await?;
    let req: CreateCheckpointRequest = optional_json(body)?;
    checkpoint_lines(&app, &row, req.comment).await
}

/// Checkpoints `row`'s box; the NDJSON answer.
pub async fn checkpoint_lines<B: Boxes>(
    app: &App<B>,
    row: &SpriteRow,
    comment: Option<String>,
) -> ApiResult<Response> {
    if let Some(c) = &comment {
        if c.chars().count() > MAX_COMMENT_CHARS
            || c.chars().any(|ch| ch.is_control() && ch != '\n')
        {
            return Err(ApiError::bad_request(format!(
                "comment must be at most {MAX_COMMENT_CHARS} printable characters"
            )));
        }
    }
    let started = std::time::Instant::now();
    let first = line("info", format!("Creating checkpoint of {}", row.name));
    let done = app.checkpoint(row, comment).await;
    Ok(progress(first, done, |made| {
        format!(
            "Checkpoint {} created in {} ms",
            made.id(),
            started.elapsed().as_millis()
        )
    }))
}

/// The NDJSON answer of an operation that ends with a checkpoint: `first`,
/// then a description of it and `complete` with its id, or the error.
fn progress(
    first: StreamMessage,
    done: Result<CheckpointRow, ApiError>,
    describe: impl FnOnce(&CheckpointRow) -> String,
) -> Response {
    let mut lines = vec![first];
    match done {
        Ok(c) => {
            lines.push(line("info", describe(&c)));
            lines.push(line("complete", c.id()));
        }
        Err(e) => lines.push(error_line(&e)),
    }
    ndjson(&lines)
}

/// `?include_auto=true` adds automatic checkpoints; `?history=ID` keeps only
/// those descending from checkpoint ID.
pub async fn list<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let row = sprite_of(&app, &caller, path).await?;
    Ok(Json(listing(&app, &row, raw.as_deref()).await?))
}

/// The sprite's checkpoints as a list query (`include_auto`, `history`) asks.
pub async fn listing<B: Boxes>(
    app: &App<B>,
    row: &SpriteRow,
    query: Option<&str>,
) -> ApiResult<Vec<Checkpoint>> {
    let mut include_auto = false;
    let mut history = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "include_auto" => {
                include_auto = match &*v {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "include_auto must be true or false, not {:?}",
                            other.chars().take(32).collect::<String>()
                        )))
                    }
                }
            }
            "history" => history = Some(v.into_owned()),
            _ => {}
        }
    }
    let all = app.store().checkpoints(row.id.clone()).await?;
    Ok(all
        .iter()
        .filter(|c| include_auto || !c.auto)
        .filter(|c| history.as_ref().is_none_or(|h| c.history.contains(h)))
        .map(to_api)
        .collect())
}

pub async fn get_one<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Checkpoint>> {
    let (row, seq) = target(&app, &caller, path).await?;
    Ok(Json(to_api(&app.checkpoint_of(&row, seq).await?)))
}

pub async fn restore<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let Path((name, id)) = path?;
    let row = load(&app, &caller, &name).await?;
    restore_lines(&app, &row, &id).await
}

/// Restores `row`'s box to checkpoint `id`; the NDJSON answer.
pub async fn restore_lines<B: Boxes>(
    app: &App<B>,
    row: &SpriteRow,
    id: &str,
) -> ApiResult<Response> {
    let seq = parse_id(id)?;
    app.ensure_ready(row)?;
    // Unknown checkpoints are a 404 before anything is touched.
    app.checkpoint_of(row, seq).await?;
    let started = std::time::Instant::now();
    let first = line("info", format!("Restoring {} to v{seq}", row.name));
    let done = app.restore(row, seq).await;
    Ok(progress(first, done, |kept| {
        format!(
            "State before the restore kept as {}; restored in {} ms",
            kept.id(),
            started.elapsed().as_millis()
        )
    }))
}

pub async fn delete<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (row, seq) = target(&app, &caller, path).await?;
    app.delete_checkpoint(&row, seq).await?;
    Ok(StatusCode::NO_CONTENT)
}
