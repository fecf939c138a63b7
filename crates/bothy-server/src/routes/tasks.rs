//! `/v1/sprites/{name}/tasks`: holds that keep a box running. `POST {name?,
//! ttl}` → 201 `{id, name, expires_at}`; `PUT .../{id}` `{ttl}` extends it
//! (a heartbeat); `DELETE .../{id}` releases it; `GET` lists `{tasks}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_control::tasks::{parse_ttl, TaskView};
use bothy_control::{Boxes, Control};
use serde::Deserialize;
use serde_json::{json, Value};

use super::sprites::sprite_of;
use super::ApiJson;
use crate::auth::Auth;
use crate::error::ApiResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    #[serde(default)]
    name: Option<String>,
    ttl: String,
}

impl HoldBody {
    pub(crate) fn parts(self) -> ApiResult<(Option<String>, std::time::Duration)> {
        let ttl = parse_ttl(&self.ttl)?;
        Ok((self.name, ttl))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    ttl: String,
}

impl ExtendBody {
    pub(crate) fn ttl(&self) -> ApiResult<std::time::Duration> {
        Ok(parse_ttl(&self.ttl)?)
    }
}

pub async fn hold<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<HoldBody>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    let (name, ttl) = body.parts()?;
    let row = sprite_of(&control, &caller, path).await?;
    Ok((
        StatusCode::CREATED,
        Json(control.hold_task(&row, name, ttl).await?),
    ))
}

pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let row = sprite_of(&control, &caller, path).await?;
    Ok(Json(json!({ "tasks": control.tasks(&row) })))
}

pub async fn extend<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> ApiResult<Json<TaskView>> {
    let Path((sprite, id)) = path?;
    let ttl = body.ttl()?;
    let row = control.sprite(&caller, &sprite).await?;
    Ok(Json(control.extend_task(&row, &id, ttl)?))
}

pub async fn release<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((sprite, id)) = path?;
    let row = control.sprite(&caller, &sprite).await?;
    control.release_task(&row, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
