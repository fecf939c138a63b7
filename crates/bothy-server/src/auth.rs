//! Bearer tokens: minting, hashing, and the extractor that authenticates a call.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::App;
use crate::boxes::Boxes;
use crate::error::ApiError;
use crate::store::TokenOwner;

/// Every token starts with this, so leaked tokens are easy to recognise.
pub const TOKEN_PREFIX: &str = "bothy_";

/// A fresh token: the prefix and 128 random bits in hex.
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// Only hashes are stored, so a copy of the database grants nothing. The lookup
/// is by hash, never by comparing token strings.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub TokenOwner);

impl Caller {
    pub fn org(&self) -> &str {
        &self.0.org
    }
}

/// The token of an `Authorization: Bearer <token>` header, if well formed.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<B: Boxes> FromRequestParts<App<B>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App<B>) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::Unauthorized(
                "missing token: send `Authorization: Bearer <token>` (the admin token is in the daemon's data dir, file admin-token)".into(),
            ));
        };
        match app.store().token_owner(hash_token(token)).await? {
            Some(owner) => Ok(Caller(owner)),
            None => Err(ApiError::Unauthorized(
                "unknown token: check that you copied it whole, or ask an admin for a new one"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 32);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }

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
