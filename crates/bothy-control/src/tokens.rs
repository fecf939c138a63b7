//! Bearer tokens: minting, hashing, who a token belongs to, expiry, listing
//! and revocation. A token is shown once; afterwards it is known by its
//! public id (`tok_` + 12 hex digits), which is not a secret.

use bothy_api::{CreateTokenRequest, CreateTokenResponse, TokenInfo, TokenLimits};

use crate::error::{ControlError, ControlResult};
use crate::state::{NewToken, Revoked, TokenOwner};
use crate::{validate, Boxes, Control};

pub use bothy_api::TOKEN_PREFIX;
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
    /// The limits of a token made for an agent.
    pub fn limits(&self) -> Option<&TokenLimits> {
        self.0.limits.as_ref()
    }
    /// Whether the caller may see sprite `name` (a limited token sees only
    /// its prefix).
    pub fn sees(&self, name: &str) -> bool {
        self.limits().is_none_or(|l| name.starts_with(&l.prefix))
    }
    /// Refuses a limited token: tokens are managed with unlimited ones.
    pub fn may_manage_tokens(&self) -> ControlResult<()> {
        match self.limits() {
            Some(_) => Err(ControlError::Forbidden(
                "this token is limited to its sprites (made with --mcp); tokens are managed with an unlimited token".into(),
            )),
            None => Ok(()),
        }
    }
}

/// Checks the limits asked for a new token: a prefix that can begin a
/// sprite name, a sane cap.
fn check_limits(l: &TokenLimits) -> ControlResult<()> {
    let bad = |m: String| ControlError::Invalid {
        code: "invalid_request",
        message: m,
    };
    if l.prefix.is_empty() || l.prefix.len() > bothy_api::MAX_MCP_PREFIX {
        return Err(bad(format!(
            "mcp.prefix must be 1 to {} characters",
            bothy_api::MAX_MCP_PREFIX
        )));
    }
    if !l.prefix.starts_with(|c: char| c.is_ascii_lowercase())
        || !l
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || l.prefix.contains("--")
    {
        return Err(bad(format!(
            "mcp.prefix {:?} must start with a lowercase letter and hold only a-z, 0-9 and single '-', like the names it begins",
            l.prefix
        )));
    }
    if l.max_sprites > MAX_LIMITED_SPRITES {
        return Err(bad(format!(
            "mcp.max_sprites must be at most {MAX_LIMITED_SPRITES}"
        )));
    }
    Ok(())
}

/// The most sprites a limited token may be allowed.
const MAX_LIMITED_SPRITES: u32 = 10_000;

impl<B: Boxes> Control<B> {
    /// Who `token` belongs to, if it is known and has not expired. There is
    /// no cache in front of the store: a revoked token is refused from the
    /// very next request on.
    pub async fn authenticate(&self, token: &str) -> ControlResult<Caller> {
        let Some(row) = self.store().token_by_hash(hash_token(token)).await? else {
            return Err(ControlError::Unauthorized(
                "unknown or revoked token: check that you copied it whole, or ask an admin for a new one"
                    .into(),
            ));
        };
        if row.is_expired(&crate::time::now()) {
            return Err(ControlError::Unauthorized(format!(
                "token {} expired at {}; ask an admin for a new one (`bothy token create --org {} --expires-in 30d`)",
                row.id,
                row.expires_at.as_deref().unwrap_or_default(),
                row.org
            )));
        }
        Ok(Caller(TokenOwner {
            org: row.org,
            is_admin: row.is_admin,
            limits: row.limits,
        }))
    }

    /// Mints a token for `org` (created if new), expiring as `req` asks. An
    /// admin may mint for any organisation, others only for their own.
    pub async fn mint_token(
        &self,
        caller: &Caller,
        org: &str,
        req: &CreateTokenRequest,
    ) -> ControlResult<CreateTokenResponse> {
        caller.may_manage_tokens()?;
        if let Some(l) = &req.mcp {
            check_limits(l)?;
        }
        if !caller.is_admin() && org != caller.org() {
            return Err(ControlError::Forbidden(format!(
                "your token belongs to organization {:?} and cannot mint tokens for {org:?}; use an admin token",
                caller.org()
            )));
        }
        org_name(org)?;
        if req
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(ControlError::invalid(format!(
                "description is longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        let now_ms = crate::time::now_ms();
        let expires_at = validate::token_expiry(req.expires_in, req.expires_at.as_deref(), now_ms)?
            .map(crate::time::rfc3339_ms);
        let token = new_token();
        let row = self
            .store()
            .add_token(NewToken {
                hash: hash_token(&token),
                org: org.to_string(),
                is_admin: false,
                description: req.description.clone(),
                created_at: crate::time::rfc3339_ms(now_ms),
                expires_at,
                limits: req.mcp.clone(),
            })
            .await?;
        tracing::info!(org = %org, id = %row.id, by_admin = caller.is_admin(), expires_at = ?row.expires_at, "token minted");
        Ok(CreateTokenResponse {
            token,
            organization: row.org,
            mcp: row.limits,
            id: row.id,
            expires_at: row.expires_at,
        })
    }

    /// The tokens the caller may see: its organisation's, or with an admin
    /// token every organisation's (`org` narrows it to one).
    pub async fn list_tokens(
        &self,
        caller: &Caller,
        org: Option<&str>,
    ) -> ControlResult<Vec<TokenInfo>> {
        caller.may_manage_tokens()?;
        if let Some(o) = org {
            org_name(o)?;
        }
        let scope = match org {
            Some(o) if !caller.is_admin() && o != caller.org() => {
                return Err(ControlError::Forbidden(format!(
                    "your token belongs to organization {:?} and sees only its tokens; use an admin token to list {o:?}",
                    caller.org()
                )))
            }
            Some(o) => Some(o.to_string()),
            None if caller.is_admin() => None,
            None => Some(caller.org().to_string()),
        };
        let now = crate::time::now();
        let rows = self.store().list_tokens(scope).await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                expired: r.is_expired(&now),
                id: r.id,
                organization: r.org,
                description: r.description,
                created_at: r.created_at,
                expires_at: r.expires_at,
                is_admin: r.is_admin,
                mcp: r.limits,
            })
            .collect())
    }

    /// Revokes token `id`: it is refused from the next request on. Others'
    /// organisations' tokens are not found for a non-admin (ids do not leak
    /// across organisations), admin tokens are for admins to revoke, and
    /// the last admin token that has not expired stays, so that the host
    /// can always be administered.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> ControlResult<()> {
        caller.may_manage_tokens()?;
        if !bothy_api::is_token_id(id) {
            // Never echoed: a token pasted here by mistake is a secret.
            let hint = if id.starts_with(TOKEN_PREFIX) {
                "that is a token itself, not its id (keep it secret)"
            } else {
                "that is not a token id"
            };
            return Err(ControlError::invalid(format!(
                "{hint}; token ids look like tok_ and 12 hex digits, `bothy token list` shows them"
            )));
        }
        let not_found = || {
            ControlError::NotFound(format!(
                "no token {id} in your organization; `bothy token list` shows the ones there are"
            ))
        };
        let row = self
            .store()
            .token_by_id(id.to_string())
            .await?
            .filter(|r| caller.is_admin() || r.org == caller.org())
            .ok_or_else(not_found)?;
        if row.is_admin && !caller.is_admin() {
            return Err(ControlError::Forbidden(format!(
                "{id} is an admin token: only an admin token can revoke it"
            )));
        }
        match self
            .store()
            .revoke_token(id.to_string(), crate::time::now())
            .await?
        {
            Revoked::Yes(r) => {
                tracing::info!(id = %r.id, org = %r.org, by_admin = caller.is_admin(), "token revoked");
            }
            Revoked::NotFound => return Err(not_found()),
            Revoked::LastAdmin => {
                return Err(ControlError::Refused {
                    code: "last_admin_token",
                    message: format!(
                        "{id} is the last admin token that has not expired: without it nobody could administer this host, so it stays"
                    ),
                })
            }
        }
        // A revocation should survive the loss of this host: ship the state
        // now rather than within the next second. Failing that, the
        // background loop retries; the token is already refused here.
        if let Err(e) = self.ship_state_now().await {
            tracing::warn!(error = %e, "the revocation is not in the object store yet; retried in the background");
        }
        Ok(())
    }
}

/// Organisation names follow the rules of sprite names.
fn org_name(org: &str) -> ControlResult<()> {
    bothy_api::names::validate_sprite_name(org).map_err(|e| ControlError::Invalid {
        code: "invalid_name",
        message: format!("organization {e}"),
    })
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
