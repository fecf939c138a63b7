//! Bearer tokens: minting, hashing, and who a token belongs to.

use crate::error::{ControlError, ControlResult};
use crate::state::TokenOwner;
use crate::{Boxes, Control};

/// Every token starts with this, so leaked tokens are easy to recognise.
pub const TOKEN_PREFIX: &str = "bothy_";
const MAX_DESCRIPTION: usize = 256;

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

/// The authenticated caller of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub TokenOwner);

impl Caller {
    pub fn org(&self) -> &str {
        &self.0.org
    }
    pub fn is_admin(&self) -> bool {
        self.0.is_admin
    }
}

impl<B: Boxes> Control<B> {
    /// Who `token` belongs to.
    pub async fn authenticate(&self, token: &str) -> ControlResult<Caller> {
        match self.store().token_owner(hash_token(token)).await? {
            Some(owner) => Ok(Caller(owner)),
            None => Err(ControlError::Unauthorized(
                "unknown token: check that you copied it whole, or ask an admin for a new one"
                    .into(),
            )),
        }
    }

    /// Mints a token for `org` (created if new). An admin may mint for any
    /// organisation, others only for their own.
    pub async fn mint_token(
        &self,
        caller: &Caller,
        org: &str,
        description: Option<String>,
    ) -> ControlResult<String> {
        if !caller.is_admin() && org != caller.org() {
            return Err(ControlError::Forbidden(format!(
                "your token belongs to organization {:?} and cannot mint tokens for {org:?}; use an admin token",
                caller.org()
            )));
        }
        bothy_api::names::validate_sprite_name(org).map_err(|e| ControlError::Invalid {
            code: "invalid_name",
            message: format!("organization {e}"),
        })?;
        if description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(ControlError::invalid(format!(
                "description is longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        let token = new_token();
        self.store()
            .add_token(
                org.to_string(),
                hash_token(&token),
                description,
                crate::time::now(),
            )
            .await?;
        tracing::info!(org = %org, by_admin = caller.is_admin(), "token minted");
        Ok(token)
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
}
