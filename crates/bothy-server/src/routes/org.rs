//! Organisations, and minting tokens (the Sprites route). Listing and
//! revoking them is in `tokens.rs`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::{CreateTokenRequest, CreateTokenResponse, Organization, StateCounts};
use bothy_control::{Boxes, Control};

use super::optional_json;
use crate::auth::Auth;
use crate::error::ApiResult;

/// The caller's organisation, with how many of its sprites are in each
/// state.
pub async fn organization<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
) -> ApiResult<Json<Organization>> {
    let c = control.counts(&caller).await?;
    Ok(Json(Organization {
        name: caller.org().to_string(),
        slug: caller.org().to_string(),
        sprites: Some(StateCounts {
            running: c.running,
            warm: c.warm,
            cold: c.cold,
            total: c.running + c.warm + c.cold,
        }),
    }))
}

/// An admin token may mint a token for any org (creating it); others only for
/// their own org. The body may ask for an expiry (`expires_in` seconds or
/// `expires_at`); the answer adds the token's public `id` and `expires_at`.
pub async fn create_token<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    let Path(org) = path?;
    let req: CreateTokenRequest = optional_json(body)?;
    let created = control.mint_token(&caller, &org, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}
