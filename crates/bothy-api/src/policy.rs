//! The network policy of a sprite (`/v1/sprites/{name}/policy/network`).

use serde::{Deserialize, Serialize};

/// Most rules a policy may have.
pub const MAX_POLICY_RULES: usize = 256;

/// A sprite's DNS rules, in order: the first rule that matches a name
/// decides; a name no rule matches is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// One rule: exactly one of `domain` and `include`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// `*`, a DNS name (itself and its subdomains) or `*.` and a DNS name
    /// (only its subdomains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `allow` or `deny`; a rule with `include` may leave it out (allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The name of a built-in list of domains (`debian`, `pypi`, `npm`,
    /// `crates`, `github`), each matched as a `domain` would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
}
