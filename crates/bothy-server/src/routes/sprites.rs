//! `/v1/sprites`: create, list (or watch), get, update, destroy.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bothy_api::{
    CreateSpriteRequest, SleepRequest, Sprite, SpriteConfig, SpriteList, UpdateSpriteRequest,
    UrlSettings,
};
use bothy_control::{Boxes, Control, SpriteRow, SpriteView};

use super::ApiJson;
use crate::auth::Auth;
use crate::edge::Urls;
use crate::error::ApiResult;
use crate::params::{encode_continuation, parse_list_query, parse_watch_query};
use crate::stream::NDJSON;
use crate::Shutdown;

pub fn to_sprite(view: &SpriteView, urls: &Urls) -> Sprite {
    let row = &view.row;
    Sprite {
        id: row.id.clone(),
        name: row.name.clone(),
        organization: row.org.clone(),
        status: view.status.as_str().to_string(),
        config: SpriteConfig {
            ram_mb: Some(row.ram_mb),
            cpus: Some(row.cpus),
            region: Some("local".into()),
            storage_gb: Some(row.storage_gb),
            nesting: row.nesting.then_some(true),
        },
        url_settings: UrlSettings {
            auth: Some(row.url_auth.clone()),
            private_access: row.url_private_access.clone(),
        },
        labels: row.labels.clone(),
        url: Some(urls.of(&row.org, &row.name)),
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        last_running_at: row.last_running_at.clone(),
        last_active_at: view.last_active_at.clone(),
        lifecycle: Some(view.sleep.to_api()),
        primary_region: Some("local".into()),
    }
}

pub async fn create<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(urls): Extension<Urls>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CreateSpriteRequest>,
) -> ApiResult<(StatusCode, Json<Sprite>)> {
    let view = control.create(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(to_sprite(&view, &urls))))
}

/// The sprite named in the path, in the caller's org (another org's is 404).
pub async fn sprite_of<B: Boxes>(
    control: &Control<B>,
    caller: &bothy_control::Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<SpriteRow> {
    let Path(name) = path?;
    Ok(control.sprite(caller, &name).await?)
}

pub async fn get_one<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(urls): Extension<Urls>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Sprite>> {
    let row = sprite_of(&control, &caller, path).await?;
    Ok(Json(to_sprite(&control.view(row).await, &urls)))
}

/// A page of sprites; with `Accept: application/x-ndjson`, a watch of them
/// ([`super::watch`]).
pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Extension(urls): Extension<Urls>,
    Auth(caller): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    if wants_ndjson(&headers) {
        let q = parse_watch_query(raw.as_deref())?;
        return super::watch::start(control, caller, q, shutdown.0, super::watch::HEARTBEAT).await;
    }
    let q = parse_list_query(raw.as_deref())?;
    let listing = control.list(&caller, q).await?;
    Ok(Json(SpriteList {
        sprites: listing
            .sprites
            .iter()
            .map(|v| to_sprite(v, &urls))
            .collect(),
        has_more: listing.next_after.is_some(),
        next_continuation_token: listing.next_after.as_deref().map(encode_continuation),
        running: listing.running,
        warm: listing.warm,
        cold: listing.cold,
    })
    .into_response())
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON))
}

pub async fn update<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(urls): Extension<Urls>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(req): ApiJson<UpdateSpriteRequest>,
) -> ApiResult<Json<Sprite>> {
    let Path(name) = path?;
    let view = control.update(&caller, &name, req).await?;
    Ok(Json(to_sprite(&view, &urls)))
}

/// `POST /v1/sprites/{name}/sleep`: warm now, or cold with `{"cold": true}`.
pub async fn sleep<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let req: SleepRequest = super::optional_json(body)?;
    let row = sprite_of(&control, &caller, path).await?;
    let status = control.sleep(&row, req.cold).await?;
    Ok(Json(serde_json::json!({ "status": status.as_str() })))
}

/// `GET /v1/sprites/{name}/usage`: time in each state, bytes stored.
pub async fn usage<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<bothy_api::SpriteUsage>> {
    let row = sprite_of(&control, &caller, path).await?;
    Ok(Json(control.usage(&row).await?))
}

pub async fn destroy<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let row = sprite_of(&control, &caller, path).await?;
    control.destroy(row).await?;
    Ok(StatusCode::NO_CONTENT)
}
