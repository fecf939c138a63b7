//! The extractor that authenticates a call: a bearer token, checked by
//! control.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bothy_control::{Boxes, Caller, Control};

use crate::error::ApiError;

/// The authenticated caller of a request.
pub struct Auth(pub Caller);

/// The token of an `Authorization: Bearer <token>` header, if well formed.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

/// The token of an `Authorization: Bearer <token>` header in `headers`.
pub fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<B: Boxes> FromRequestParts<Control<B>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, control: &Control<B>) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::Unauthorized(
                "missing token: send `Authorization: Bearer <token>` (the admin token is in the daemon's data dir, file admin-token)".into(),
            ));
        };
        Ok(Self(control.authenticate(token).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let parts = |v: &str| {
            let (p, ()) = axum::http::Request::builder()
                .header(AUTHORIZATION, v)
                .body(())
                .expect("request")
                .into_parts();
            p
        };
        assert_eq!(bearer(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("Basic abc")), None);
        assert_eq!(bearer(&parts("Bearer ")), None);
    }
}
