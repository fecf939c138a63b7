//! Network policies: validation of what a user sends, storage, and handing
//! the rules to the boxes, which enforce them (the runtime's resolver and
//! egress filter).

use bothy_api::policy::{NetworkPolicy, PolicyRule, MAX_POLICY_RULES};
use bothy_runtime::netpolicy::{include_list, NetPolicy, NetRule, Pattern, INCLUDES};

use crate::error::{ControlError, ControlResult};
use crate::tokens::Caller;
use crate::{Boxes, Control};

/// Checks `policy` and returns it as stored (domains lowercased) and as
/// the boxes enforce it.
pub fn validate(policy: &NetworkPolicy) -> ControlResult<(NetworkPolicy, NetPolicy)> {
    if policy.rules.len() > MAX_POLICY_RULES {
        return Err(ControlError::invalid(format!(
            "a policy has at most {MAX_POLICY_RULES} rules; this one has {}",
            policy.rules.len()
        )));
    }
    let mut stored = Vec::with_capacity(policy.rules.len());
    let mut rules = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let bad = |m: String| ControlError::invalid(format!("rule {i}: {m}"));
        let allow = match rule.action.as_deref() {
            Some("allow") => true,
            Some("deny") => false,
            None if rule.include.is_some() => true,
            None => return Err(bad("action is required: \"allow\" or \"deny\"".into())),
            Some(other) => {
                return Err(bad(format!(
                    "action must be \"allow\" or \"deny\", not {other:?}"
                )))
            }
        };
        match (&rule.domain, &rule.include) {
            (Some(domain), None) => {
                let domain = domain.to_ascii_lowercase();
                let pattern = pattern(&domain).map_err(bad)?;
                rules.push(NetRule { pattern, allow });
                stored.push(PolicyRule {
                    domain: Some(domain),
                    action: rule.action.clone(),
                    include: None,
                });
            }
            (None, Some(include)) => {
                let Some(domains) = include_list(include) else {
                    let known: Vec<&str> = INCLUDES.iter().map(|(n, _)| *n).collect();
                    return Err(bad(format!(
                        "no built-in list {include:?}; there are: {}",
                        known.join(", ")
                    )));
                };
                rules.extend(domains.iter().map(|d| NetRule {
                    pattern: Pattern::Domain((*d).to_string()),
                    allow,
                }));
                stored.push(rule.clone());
            }
            _ => return Err(bad("give exactly one of \"domain\" and \"include\"".into())),
        }
    }
    Ok((NetworkPolicy { rules: stored }, NetPolicy { rules }))
}

/// `*`, a DNS name, or `*.` and a DNS name (lowercase already).
fn pattern(domain: &str) -> Result<Pattern, String> {
    if domain == "*" {
        return Ok(Pattern::Any);
    }
    let (name, wild) = match domain.strip_prefix("*.") {
        Some(n) => (n, true),
        None => (domain, false),
    };
    check_dns_name(name)?;
    Ok(if wild {
        Pattern::Subdomains(name.to_string())
    } else {
        Pattern::Domain(name.to_string())
    })
}

fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("domain {name:?} must be 1 to 253 characters long"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "domain {name:?}: every label is 1 to 63 characters long"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "domain {name:?}: labels are letters, digits and '-' (use `*` or `*.` only at the start)"
            ));
        }
    }
    Ok(())
}

fn parse_stored(json: &str) -> ControlResult<(NetworkPolicy, NetPolicy)> {
    let policy: NetworkPolicy = serde_json::from_str(json)
        .map_err(|e| ControlError::Internal(format!("stored network policy is unreadable: {e}")))?;
    validate(&policy)
}

impl<B: Boxes> Control<B> {
    /// The network policy of the caller's sprite `name`.
    pub async fn network_policy(
        &self,
        caller: &Caller,
        name: &str,
    ) -> ControlResult<NetworkPolicy> {
        let row = self.sprite(caller, name).await?;
        match self.store().network_policy(row.id).await? {
            Some(json) => Ok(parse_stored(&json)?.0),
            None => Ok(NetworkPolicy::default()),
        }
    }

    /// Replaces the network policy of the caller's sprite `name`; a running
    /// box applies it at once. An invalid policy changes nothing.
    pub async fn set_network_policy(
        &self,
        caller: &Caller,
        name: &str,
        policy: &NetworkPolicy,
    ) -> ControlResult<()> {
        let (stored, enforced) = validate(policy)?;
        let row = self.sprite(caller, name).await?;
        let _guard = self.inner.locks.lock(&row.id, "network policy").await?;
        let json = serde_json::to_string(&stored)
            .map_err(|e| ControlError::Internal(format!("cannot encode a policy: {e}")))?;
        self.store()
            .set_network_policy(row.id.clone(), json)
            .await?;
        self.inner
            .boxes
            .set_network_policy(&row.id, enforced)
            .await
            .map_err(ControlError::from)?;
        tracing::info!(box_id = %row.id, name = %row.name, rules = stored.rules.len(), "network policy set");
        Ok(())
    }

    /// Hands every stored policy to the boxes; done before any box starts.
    pub(crate) async fn load_network_policies(&self) -> ControlResult<()> {
        for (id, json) in self.store().all_network_policies().await? {
            match parse_stored(&json) {
                Ok((_, enforced)) => {
                    if let Err(e) = self.inner.boxes.set_network_policy(&id, enforced).await {
                        tracing::warn!(box_id = %id, error = %e, "cannot apply the network policy");
                    }
                }
                Err(e) => tracing::warn!(box_id = %id, error = %e, "skipping a network policy"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: Option<&str>, action: Option<&str>, include: Option<&str>) -> PolicyRule {
        PolicyRule {
            domain: domain.map(Into::into),
            action: action.map(Into::into),
            include: include.map(Into::into),
        }
    }

    fn policy(rules: Vec<PolicyRule>) -> NetworkPolicy {
        NetworkPolicy { rules }
    }

    #[test]
    fn good_policies_are_normalized_and_expanded() {
        let (stored, enforced) = validate(&policy(vec![
            rule(Some("Example.COM"), Some("deny"), None),
            rule(Some("*.good.org"), Some("allow"), None),
            rule(None, None, Some("debian")),
            rule(Some("*"), Some("deny"), None),
        ]))
        .expect("valid");
        assert_eq!(stored.rules[0].domain.as_deref(), Some("example.com"));
        assert_eq!(stored.rules.len(), 4);
        assert!(!enforced.allows("www.example.com"));
        assert!(enforced.allows("a.good.org"));
        assert!(!enforced.allows("good.org"));
        assert!(enforced.allows("deb.debian.org"));
        assert!(enforced.denies_by_default());
        assert!(validate(&NetworkPolicy::default()).is_ok());
    }

    #[test]
    fn bad_policies_are_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 30].join(".");
        for bad in [
            rule(Some("example.com"), Some("block"), None),
            rule(Some("example.com"), None, None),
            rule(None, Some("allow"), None),
            rule(Some("example.com"), Some("allow"), Some("debian")),
            rule(None, Some("allow"), Some("nope")),
            rule(Some("exa_mple.com"), Some("allow"), None),
            rule(Some("a..b"), Some("allow"), None),
            rule(Some("*example.com"), Some("allow"), None),
            rule(Some("a.*.com"), Some("allow"), None),
            rule(Some("*."), Some("allow"), None),
            rule(Some(""), Some("allow"), None),
            rule(Some(&long_label), Some("allow"), None),
            rule(Some(&long_name), Some("allow"), None),
        ] {
            let err = validate(&policy(vec![bad.clone()])).expect_err("invalid");
            assert!(
                matches!(err, ControlError::Invalid { .. }),
                "{bad:?}: {err:?}"
            );
        }
        let many = vec![rule(Some("*"), Some("allow"), None); MAX_POLICY_RULES + 1];
        assert!(validate(&policy(many)).is_err());
        let most = vec![rule(Some("*"), Some("allow"), None); MAX_POLICY_RULES];
        assert!(validate(&policy(most)).is_ok());
    }
}
