//! Listing and revoking tokens (bothy extensions): `GET /v1/tokens[?org=]`
//! and `DELETE /v1/tokens/{id}`. What a caller may see and revoke is
//! control's to decide; here are only the HTTP shapes.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use bothy_api::TokenList;
use bothy_control::{Boxes, Control};

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::params::parse_token_list_query;

/// The caller's organisation's tokens; an admin sees every organisation's
/// unless `?org=` names one. Never a token or its hash.
pub async fn list<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TokenList>> {
    let org = parse_token_list_query(query.as_deref())?;
    let tokens = control.list_tokens(&caller, org.as_deref()).await?;
    Ok(Json(TokenList { tokens }))
}

/// 204 once the token is gone: its next request gets 401.
pub async fn revoke<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(id) = path?;
    control.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
