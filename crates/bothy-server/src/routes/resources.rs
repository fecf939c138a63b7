//! `/v1/sprites/{name}/policy/resources`: a box's memory limit, changed
//! while it runs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::{MemoryPolicy, ResourcesPolicy};
use bothy_control::{Boxes, Control};

use super::ApiJson;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};

pub async fn get<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ResourcesPolicy>> {
    let Path(name) = path?;
    let mb = control.memory_policy(&caller, &name).await?;
    Ok(Json(ResourcesPolicy {
        memory: mb.map(|limit_mb| MemoryPolicy {
            limit_mb,
            autoscale: false,
        }),
    }))
}

pub async fn set<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(policy): ApiJson<ResourcesPolicy>,
) -> ApiResult<StatusCode> {
    let Path(name) = path?;
    let Some(memory) = policy.memory else {
        return Err(ApiError::bad_request(
            "the policy needs \"memory\": {\"limit_mb\": N}; DELETE clears it",
        ));
    };
    if memory.autoscale {
        return Err(ApiError::bad_request(
            "memory autoscale is not supported: bothy keeps the limit you set",
        ));
    }
    control
        .set_memory_policy(&caller, &name, Some(memory.limit_mb))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn clear<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = path?;
    control.set_memory_policy(&caller, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
