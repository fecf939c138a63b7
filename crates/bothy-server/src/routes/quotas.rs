//! Per-organisation quotas (bothy extension): read by the organisation or an
//! admin, set by an admin.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use bothy_api::{OrgQuota, QuotaLimits, QuotaUsage};
use bothy_control::{Boxes, Control, Quota, Usage};

use super::ApiJson;
use crate::auth::Auth;
use crate::error::ApiResult;

fn answer(org: String, (q, u): (Quota, Usage)) -> Json<OrgQuota> {
    Json(OrgQuota {
        organization: org,
        limits: QuotaLimits {
            max_boxes: q.max_boxes,
            max_running_boxes: q.max_running_boxes,
            max_storage_gb: q.max_storage_gb,
            max_checkpoints: q.max_checkpoints,
        },
        usage: QuotaUsage {
            boxes: u.boxes,
            running_boxes: u.running_boxes,
            storage_gb: u.storage_gb,
            checkpoints: u.checkpoints,
        },
    })
}

pub async fn get<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<OrgQuota>> {
    let Path(org) = path?;
    let found = control.quota(&caller, &org).await?;
    Ok(answer(org, found))
}

pub async fn put<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ApiJson(limits): ApiJson<QuotaLimits>,
) -> ApiResult<Json<OrgQuota>> {
    let Path(org) = path?;
    let quota = Quota {
        max_boxes: limits.max_boxes,
        max_running_boxes: limits.max_running_boxes,
        max_storage_gb: limits.max_storage_gb,
        max_checkpoints: limits.max_checkpoints,
    };
    let set = control.set_quota(&caller, &org, quota).await?;
    Ok(answer(org, set))
}
