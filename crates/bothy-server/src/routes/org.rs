//! Organisations and tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::{CreateTokenRequest, CreateTokenResponse, Organization};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use super::optional_json;
use crate::app::{now, App};
use crate::auth::{hash_token, new_token, Caller};
use crate::boxes::Boxes;
use crate::error::{ApiError, ApiResult};

const MAX_DESCRIPTION: usize = 256;

pub async fn organization<B: Boxes>(caller: Caller) -> Json<Organization> {
    Json(Organization {
        name: caller.org().to_string(),
        slug: caller.org().to_string(),
    })
}

/// An admin token may mint a token for any org (creating it); others only for
/// their own org.
pub async fn create_token<B: Boxes>(
    State(app): State<App<B>>,
    caller: Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    let Path(org) = path?;
    if !caller.0.is_admin && org != caller.org() {
        return Err(ApiError::Forbidden(format!(
            "your token belongs to organization {:?} and cannot mint tokens for {org:?}; use an admin token",
            caller.org()
        )));
    }
    bothy_api::names::validate_sprite_name(&org).map_err(|e| ApiError::BadRequest {
        code: "invalid_name",
        message: format!("organization {e}"),
    })?;
    let req: CreateTokenRequest = optional_json(body)?;
    let description = req.description;
    if description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION)
    {
        return Err(ApiError::bad_request(format!(
            "description is longer than {MAX_DESCRIPTION} bytes"
        )));
    }
    let token = new_token();
    app.store()
        .add_token(org.clone(), hash_token(&token), description, now())
        .await?;
    tracing::info!(org = %org, by_admin = caller.0.is_admin, "token minted");
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            token,
            organization: org,
        }),
    ))
}
