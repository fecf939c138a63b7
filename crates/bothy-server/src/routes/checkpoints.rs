//! `/v1/sprites/{name}/checkpoint(s)`: create, list, get, restore, delete.
//!
//! Create and restore answer with an NDJSON stream of `{type, data?, error?}`
//! lines as the Sprites API does; the last line is `complete` (its `data` is
//! the checkpoint id: the new one, or for a restore the automatic checkpoint
//! that keeps the state it replaced) or `error`. Failures found before any
//! work starts (unknown sprite or checkpoint, bad body, a busy sprite) are
//! plain API errors with their status codes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bothy_api::{Checkpoint, CreateCheckpointRequest, StreamMessage};
use bothy_control::{Boxes, CheckpointRow, Control, ControlError, SpriteRow};

use super::optional_json;
use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::params::parse_checkpoint_list_query;

pub fn to_api(c: &CheckpointRow) -> Checkpoint {
    Checkpoint {
        id: c.id(),
        create_time: c.created_at.clone(),
        comment: c.comment.clone(),
        history: c.history.clone(),
        is_auto: c.auto,
        auto: c.auto,
        in_object_store: c.in_object_store,
        source_id: c.history.last().cloned(),
        // A record whose data is gone is dropped when the box is recovered,
        // so every checkpoint listed can be restored.
        health: String::new(),
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

/// The NDJSON answer of an operation that ends with a checkpoint: `first`,
/// then a description of it and `complete` with its id. An error found
/// before anything changed is a plain API error; one after is an `error`
/// line (the client already has the stream's first line).
fn progress(
    first: StreamMessage,
    done: Result<CheckpointRow, ControlError>,
    describe: impl FnOnce(&CheckpointRow) -> String,
) -> ApiResult<Response> {
    match done {
        Ok(c) => Ok(ndjson(&[
            first,
            line("info", describe(&c)),
            line("complete", c.id()),
        ])),
        Err(
            e @ (ControlError::NotFound(_) | ControlError::Invalid { .. } | ControlError::Busy(_)),
        ) => Err(e.into()),
        Err(e) => {
            // The conversion logs an internal error's details.
            let e = ApiError::from(e);
            Ok(ndjson(&[
                first,
                StreamMessage {
                    kind: "error".into(),
                    data: None,
                    error: Some(e.to_string()),
                },
            ]))
        }
    }
}

/// Path `{name}/{id}`: the sprite and the checkpoint id as given.
async fn target<B: Boxes>(
    control: &Control<B>,
    caller: &bothy_control::Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<(SpriteRow, String)> {
    let Path((name, id)) = path?;
    let row = control.sprite(caller, &name).await?;
    Ok((row, id))
}

pub async fn create<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let req: CreateCheckpointRequest = optional_json(body)?;
    checkpoint_lines(&control, &row, req).await
}

/// Checkpoints `row`'s box; the NDJSON answer.
pub async fn checkpoint_lines<B: Boxes>(
    control: &Control<B>,
    row: &SpriteRow,
    req: CreateCheckpointRequest,
) -> ApiResult<Response> {
    bothy_control::validate::comment(req.comment.as_deref()).map_err(ApiError::from)?;
    let started = std::time::Instant::now();
    let first = line("info", format!("Creating checkpoint of {}", row.name));
    let done = control.checkpoint(row, req.comment, req.durable).await;
    progress(first, done, |made| {
        let where_ = if made.in_object_store {
            "; it is in the object store"
        } else {
            ""
        };
        format!(
            "Checkpoint {} created in {} ms{where_}",
            made.id(),
            started.elapsed().as_millis()
        )
    })
}

/// `?include_auto=true` adds automatic checkpoints; `?history=ID` keeps only
/// those descending from checkpoint ID.
pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let row = sprite_of(&control, &caller, path).await?;
    Ok(Json(listing(&control, &row, raw.as_deref()).await?))
}

/// The sprite's checkpoints as a list query (`include_auto`, `history`) asks.
pub async fn listing<B: Boxes>(
    control: &Control<B>,
    row: &SpriteRow,
    query: Option<&str>,
) -> ApiResult<Vec<Checkpoint>> {
    let q = parse_checkpoint_list_query(query)?;
    Ok(control
        .checkpoints(row, &q)
        .await?
        .iter()
        .map(to_api)
        .collect())
}

pub async fn get_one<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Checkpoint>> {
    let (row, id) = target(&control, &caller, path).await?;
    Ok(Json(to_api(&control.checkpoint_named(&row, &id).await?)))
}

pub async fn restore<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (row, id) = target(&control, &caller, path).await?;
    restore_lines(&control, &row, &id).await
}

/// Restores `row`'s box to checkpoint `id`; the NDJSON answer.
pub async fn restore_lines<B: Boxes>(
    control: &Control<B>,
    row: &SpriteRow,
    id: &str,
) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let first = line("info", format!("Restoring {} to {id}", row.name));
    let done = control.restore(row, id).await;
    progress(first, done, |kept| {
        format!(
            "State before the restore kept as {}; restored in {} ms",
            kept.id(),
            started.elapsed().as_millis()
        )
    })
}

pub async fn delete<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (row, id) = target(&control, &caller, path).await?;
    control.delete_checkpoint(&row, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
