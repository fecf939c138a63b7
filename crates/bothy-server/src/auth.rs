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
        let caller = control.authenticate(token).await?;
        if caller.limits().is_some_and(|l| l.read_only) && !is_read(parts) {
            return Err(ApiError::Forbidden(
                "this token is read-only: it may only make calls that read (GET, and the watch WebSockets)".into(),
            ));
        }
        Ok(Self(caller))
    }
}

/// A call that changes nothing: a GET or HEAD that is not a WebSocket,
/// except the watches (exec and port forwards are WebSockets that act).
fn is_read(parts: &Parts) -> bool {
    let method = &parts.method;
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return false;
    }
    let path = parts.uri.path();
    !parts.headers.contains_key(axum::http::header::UPGRADE)
        || path.ends_with("/fs/watch")
        || path.ends_with("/ports/watch")
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
