//! The durability barrier (a bothy extension): `POST /v1/sprites/{name}/sync`
//! and `POST /v1/sync` answer once everything acknowledged before the call
//! (writes, checkpoints and the state rows naming them) is in the object
//! store. Without them, the same gets there within seconds in the
//! background. `POST /v1/drain` (admins) stops every box.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use bothy_api::SyncResult;
use bothy_control::{Boxes, Control};

use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::error::ApiResult;

fn result(sprites: Vec<String>, started: std::time::Instant) -> Json<SyncResult> {
    Json(SyncResult {
        sprites,
        synced_at: bothy_control::time::now(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// One sprite's disk and checkpoints, and the state.
pub async fn sprite<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SyncResult>> {
    let started = std::time::Instant::now();
    let row = sprite_of(&control, &caller, path).await?;
    control.sync_sprite(&row).await?;
    Ok(result(vec![row.name], started))
}

/// Stops every box and lets go of the storage process (admins only).
pub async fn drain<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
) -> ApiResult<Json<bothy_api::DrainResult>> {
    let started = std::time::Instant::now();
    let stopped = control.drain(&caller).await?;
    Ok(Json(bothy_api::DrainResult {
        stopped,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Every sprite the caller sees (an admin: all of them), and the state.
pub async fn all<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
) -> ApiResult<Json<SyncResult>> {
    let started = std::time::Instant::now();
    let names = control.sync_all(&caller).await?;
    Ok(result(names, started))
}
