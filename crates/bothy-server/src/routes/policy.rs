//! A sprite's network policy: `GET` answers the rules, `POST` replaces them
//! (204; 400 and nothing changed for an invalid policy).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::policy::NetworkPolicy;
use bothy_control::{Boxes, Control};

use super::ApiJson;
use crate::auth::Auth;
use crate::error::ApiResult;

pub async fn get<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<NetworkPolicy>> {
    let Path(name) = path?;
    Ok(Json(control.network_policy(&caller, &name).await?))
}

pub async fn set<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(policy): ApiJson<NetworkPolicy>,
) -> ApiResult<StatusCode> {
    let Path(name) = path?;
    control.set_network_policy(&caller, &name, &policy).await?;
    Ok(StatusCode::NO_CONTENT)
}
