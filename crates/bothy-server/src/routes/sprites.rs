//! `/v1/sprites`: create, list, get, update, destroy.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::{
    CheckpointRef, CreateSpriteRequest, Sprite, SpriteConfig, SpriteList, UpdateSpriteRequest,
    UrlSettings,
};
use futures_util::future::join_all;

use super::ApiJson;
use crate::app::{now, App};
use crate::auth::{hex, Caller};
use crate::boxes::{Boxes, DiskSource};
use crate::error::{ApiError, ApiResult};
use crate::params::{encode_continuation, parse_list_query};
use crate::store::{RowState, SpriteRow, StoreError};

const RAM_MB: std::ops::RangeInclusive<u64> = 128..=65536;
const CPUS: std::ops::RangeInclusive<u32> = 1..=64;
const STORAGE_GB: std::ops::RangeInclusive<u64> = 1..=1000;
const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 64;

fn to_sprite(row: &SpriteRow, status: &str) -> Sprite {
    Sprite {
        id: row.id.clone(),
        name: row.name.clone(),
        organization: row.org.clone(),
        status: status.to_string(),
        config: SpriteConfig {
            ram_mb: Some(row.ram_mb),
            cpus: Some(row.cpus),
            region: Some("local".into()),
            storage_gb: Some(row.storage_gb),
        },
        url_settings: UrlSettings {
            auth: Some(row.url_auth.clone()),
            private_access: row.url_private_access.clone(),
        },
        labels: row.labels.clone(),
        url: None,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        last_running_at: row.last_running_at.clone(),
        primary_region: Some("local".into()),
    }
}

fn out_of_range<T: std::fmt::Display>(field: &str, v: T, range: (T, T)) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_config",
        message: format!(
            "config.{field} = {v} is out of range; use {} to {}",
            range.0, range.1
        ),
    }
}

fn validate_labels(labels: &[String]) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "{} labels given; at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|l| {
        l.is_empty() || l.chars().count() > MAX_LABEL_LEN || l.chars().any(char::is_control)
    }) {
        return Err(ApiError::bad_request(format!(
            "label {:?} must be 1 to {MAX_LABEL_LEN} printable characters",
            bad.chars().take(MAX_LABEL_LEN + 1).collect::<String>()
        )));
    }
    Ok(())
}

fn validate_url_settings(s: &UrlSettings) -> Result<(), ApiError> {
    match s.auth.as_deref() {
        None | Some("sprite") | Some("public") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "url_settings.auth must be \"sprite\" or \"public\", not {:?}",
                other.chars().take(64).collect::<String>()
            )))
        }
    }
    if s.private_access.as_ref().is_some_and(|p| p.len() > 256) {
        return Err(ApiError::bad_request(
            "url_settings.private_access is too long",
        ));
    }
    Ok(())
}

fn new_box_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("b{}", hex(&bytes))
}

/// Validates a create request into the row to insert.
pub fn row_from_request(org: &str, req: CreateSpriteRequest) -> Result<SpriteRow, ApiError> {
    bothy_api::names::validate_sprite_name(&req.name).map_err(|message| ApiError::BadRequest {
        code: "invalid_name",
        message,
    })?;
    let config = req.config.unwrap_or_default();
    let ram_mb = config.ram_mb.unwrap_or(bothy_api::DEFAULT_RAM_MB);
    if !RAM_MB.contains(&ram_mb) {
        return Err(out_of_range("ram_mb", ram_mb, RAM_MB.into_inner()));
    }
    let cpus = config.cpus.unwrap_or(bothy_api::DEFAULT_CPUS);
    if !CPUS.contains(&cpus) {
        return Err(out_of_range("cpus", cpus, CPUS.into_inner()));
    }
    let storage_gb = config.storage_gb.unwrap_or(bothy_api::DEFAULT_STORAGE_GB);
    if !STORAGE_GB.contains(&storage_gb) {
        return Err(out_of_range(
            "storage_gb",
            storage_gb,
            STORAGE_GB.into_inner(),
        ));
    }
    let url = req.url_settings.unwrap_or_default();
    validate_url_settings(&url)?;
    let labels = req.labels.unwrap_or_default();
    validate_labels(&labels)?;
    let t = now();
    Ok(SpriteRow {
        id: new_box_id(),
        org: org.to_string(),
        name: req.name,
        ram_mb,
        cpus,
        storage_gb,
        url_auth: url.auth.unwrap_or_else(|| "sprite".into()),
        url_private_access: url.private_access,
        labels,
        state: RowState::Creating,
        created_at: t.clone(),
        updated_at: t,
        last_running_at: None,
    })
}

pub async fn create<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSpriteRequest>,
) -> ApiResult<(StatusCode, Json<Sprite>)> {
    let fork = match &req.from_checkpoint {
        Some(from) => Some(fork_source(&app, &caller, from).await?),
        None => None,
    };
    let row = row_from_request(caller.org(), req)?;
    match app.store().insert_sprite(row.clone()).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(ApiError::AlreadyExists(format!(
                "a sprite named {:?} already exists in your organization; pick another name or destroy it first",
                row.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let source = match &fork {
        Some((source, _)) => source.clone(),
        None => DiskSource::Base,
    };
    app.finish_create(row.clone(), source).await?;
    if let Some((_, history)) = fork {
        app.store().set_history(row.id.clone(), history).await?;
    }
    let row = load(&app, &caller, &row.name).await?;
    Ok((StatusCode::CREATED, Json(to_sprite(&row, "running"))))
}

/// The disk a fork starts from, and its history (`src@vN` and before).
async fn fork_source<B: Boxes>(
    app: &App<B>,
    caller: &Caller,
    from: &CheckpointRef,
) -> ApiResult<(DiskSource, Vec<String>)> {
    let seq = bothy_api::parse_checkpoint_id(&from.checkpoint).ok_or_else(|| {
        ApiError::bad_request(format!(
            "from_checkpoint.checkpoint {:?} is not a checkpoint id; use v1, v2, ...",
            from.checkpoint.chars().take(64).collect::<String>()
        ))
    })?;
    bothy_api::names::validate_sprite_name(&from.sprite).map_err(|message| {
        ApiError::BadRequest {
            code: "invalid_name",
            message: format!("from_checkpoint.sprite: {message}"),
        }
    })?;
    let src = load(app, caller, &from.sprite).await?;
    let ckpt = app.checkpoint_of(&src, seq).await?;
    let mut history: Vec<String> = ckpt
        .history
        .iter()
        .map(|h| format!("{}@{h}", src.name))
        .collect();
    history.push(format!("{}@{}", src.name, ckpt.id()));
    Ok((
        DiskSource::Checkpoint {
            box_id: src.id,
            checkpoint: ckpt.volume_checkpoint,
        },
        history,
    ))
}

pub async fn load<B: Boxes>(app: &App<B>, caller: &Caller, name: &str) -> ApiResult<SpriteRow> {
    app.store()
        .sprite(caller.org().to_string(), name.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(name))
}

/// The sprite named in the path, in the caller's org (another org's is 404).
pub async fn sprite_of<B: Boxes>(
    app: &App<B>,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<SpriteRow> {
    let Path(name) = path?;
    load(app, caller, &name).await
}

pub async fn get_one<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Sprite>> {
    let row = sprite_of(&app, &caller, path).await?;
    let status = app.status_of(&row.id).await;
    Ok(Json(to_sprite(&row, status)))
}

pub async fn list<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<SpriteList>> {
    let q = parse_list_query(raw.as_deref())?;
    let mut rows = app
        .store()
        .list_sprites(caller.org().to_string(), q.prefix, q.after, q.limit + 1)
        .await?;
    let has_more = rows.len() > q.limit;
    rows.truncate(q.limit);
    let next = if has_more {
        rows.last().map(|r| encode_continuation(&r.name))
    } else {
        None
    };
    // Counts cover the whole org; checks run concurrently, each bounded.
    let ids = app.store().sprite_ids(caller.org().to_string()).await?;
    let statuses: std::collections::HashMap<String, &'static str> = join_all(
        ids.iter()
            .map(|id| async { (id.clone(), app.status_of(id).await) }),
    )
    .await
    .into_iter()
    .collect();
    let running = statuses.values().filter(|s| **s == "running").count() as u64;
    let sprites = rows
        .iter()
        .map(|r| to_sprite(r, statuses.get(&r.id).copied().unwrap_or("cold")))
        .collect();
    Ok(Json(SpriteList {
        sprites,
        has_more,
        next_continuation_token: next,
        running,
        warm: 0,
        cold: statuses.len() as u64 - running,
    }))
}

pub async fn update<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    ApiJson(req): ApiJson<UpdateSpriteRequest>,
) -> ApiResult<Json<Sprite>> {
    let row = sprite_of(&app, &caller, path).await?;
    if let Some(u) = &req.url_settings {
        validate_url_settings(u)?;
    }
    if let Some(l) = &req.labels {
        validate_labels(l)?;
    }
    let url = req.url_settings.map(|u| {
        (
            u.auth.unwrap_or_else(|| row.url_auth.clone()),
            u.private_access.or_else(|| row.url_private_access.clone()),
        )
    });
    app.store()
        .update_sprite(row.id.clone(), url, req.labels, now())
        .await?;
    let row = load(&app, &caller, &row.name).await?;
    let status = app.status_of(&row.id).await;
    Ok(Json(to_sprite(&row, status)))
}

pub async fn destroy<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let row = sprite_of(&app, &caller, path).await?;
    app.destroy(row).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, config: Option<SpriteConfig>) -> CreateSpriteRequest {
        CreateSpriteRequest {
            name: name.into(),
            config,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let row = row_from_request("o", req("dev", None)).expect("valid");
        assert_eq!((row.ram_mb, row.cpus, row.storage_gb), (2048, 2, 100));
        assert_eq!(row.url_auth, "sprite");
        assert!(row.id.starts_with('b') && row.id.len() == 13);
        for (cfg, field) in [
            (
                SpriteConfig {
                    ram_mb: Some(64),
                    ..Default::default()
                },
                "ram_mb",
            ),
            (
                SpriteConfig {
                    cpus: Some(0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                SpriteConfig {
                    cpus: Some(65),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                SpriteConfig {
                    storage_gb: Some(1001),
                    ..Default::default()
                },
                "storage_gb",
            ),
        ] {
            let e = row_from_request("o", req("dev", Some(cfg))).expect_err(field);
            assert_eq!(e.code(), "invalid_config");
            assert!(e.to_string().contains(field));
        }
        assert_eq!(
            row_from_request("o", req("Bad", None))
                .expect_err("name")
                .code(),
            "invalid_name"
        );
    }

    #[test]
    fn labels_and_url_settings() {
        let mut r = req("dev", None);
        r.labels = Some(vec!["x".repeat(65)]);
        assert!(row_from_request("o", r).is_err());
        let mut r = req("dev", None);
        r.labels = Some((0..33).map(|i| i.to_string()).collect());
        assert!(row_from_request("o", r).is_err());
        let mut r = req("dev", None);
        r.url_settings = Some(UrlSettings {
            auth: Some("open".into()),
            private_access: None,
        });
        assert!(row_from_request("o", r).is_err());
    }
}
