//! The box as a machine: restart, health check, upgrade.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::{RestartResult, SpriteCheck};
use bothy_control::{Boxes, Control};

use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::error::ApiResult;

/// `POST .../restart`: stop the box and boot it again on the same disk.
pub async fn restart<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<RestartResult>> {
    let row = sprite_of(&control, &caller, path).await?;
    control.restart(&row).await?;
    Ok(Json(RestartResult {
        message: format!(
            "sprite {} restarted: its processes and sessions were stopped, its disk is as it was",
            row.name
        ),
        sprite_name: row.name,
        machine_id: row.id,
    }))
}

/// `GET .../check`: whether the box's agent answers. A stopped box is
/// reported unhealthy, not started.
pub async fn check<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SpriteCheck>> {
    let row = sprite_of(&control, &caller, path).await?;
    let health = control.check(&row).await?;
    Ok(Json(SpriteCheck {
        sprite_name: row.name,
        sprite_id: row.id,
        status: if health.problem.is_none() {
            "healthy"
        } else {
            "unhealthy"
        }
        .into(),
        reason: health.problem,
        checked_at: health.checked_at,
        elapsed: u64::try_from(health.elapsed.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// `POST .../upgrade`: nothing to do. Fly upgrades the agent inside a
/// sprite; a bothy's agent is the daemon's own binary, mounted into the box
/// when it boots, so there is nothing to install. (A box booted by an older
/// daemon gets the current agent on its next restart.)
pub async fn upgrade<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    sprite_of(&control, &caller, path).await?;
    Ok(StatusCode::NO_CONTENT)
}
