//! A box's network policy as the runtime enforces it: an ordered list of
//! rules over DNS names, the first that matches a name decides, and a name
//! no rule matches is allowed.
//!
//! Rules come from the control layer, which validates what a user sent
//! (names, actions, include lists) and builds a [`NetPolicy`]; here they are
//! only matched. `example.com` matches itself and every name under it,
//! `*.example.com` only the names under it, `*` every name.

/// Built-in lists of domains a rule can name with `include`: what a box
/// needs for one package ecosystem. Each domain also covers its subdomains.
pub const INCLUDES: &[(&str, &[&str])] = &[
    (
        "debian",
        &["deb.debian.org", "security.debian.org", "ftp.debian.org"],
    ),
    ("pypi", &["pypi.org", "pythonhosted.org", "pypi.python.org"]),
    (
        "npm",
        &[
            "registry.npmjs.org",
            "npmjs.org",
            "npmjs.com",
            "yarnpkg.com",
        ],
    ),
    (
        "crates",
        &["crates.io", "static.rust-lang.org", "sh.rustup.rs"],
    ),
    (
        "github",
        &[
            "github.com",
            "githubusercontent.com",
            "githubassets.com",
            "ghcr.io",
        ],
    ),
];

/// The domains of the built-in list `name`, if there is one.
pub fn include_list(name: &str) -> Option<&'static [&'static str]> {
    INCLUDES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// What a rule's name pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every name.
    Any,
    /// `example.com`: the name and every name under it.
    Domain(String),
    /// `*.example.com`: every name under it, not the name itself.
    Subdomains(String),
}

impl Pattern {
    /// Whether `name` (lowercase, no trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Domain(d) => name == d || is_under(name, d),
            Self::Subdomains(d) => is_under(name, d),
        }
    }
}

fn is_under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// One rule: a pattern and whether names it matches are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    pub pattern: Pattern,
    pub allow: bool,
}

/// A box's rules, in order. The default (no rules) allows every name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    pub rules: Vec<NetRule>,
}

impl NetPolicy {
    /// Whether a lookup of `name` is allowed: the first matching rule
    /// decides; no matching rule allows.
    pub fn allows(&self, name: &str) -> bool {
        let name = normalize(name);
        self.rules
            .iter()
            .find(|r| r.pattern.matches(&name))
            .is_none_or(|r| r.allow)
    }

    /// The policy denies by default when its first `*` rule denies: then
    /// the box may connect only to addresses its allowed lookups returned.
    pub fn denies_by_default(&self) -> bool {
        self.rules
            .iter()
            .find(|r| r.pattern == Pattern::Any)
            .is_some_and(|r| !r.allow)
    }
}

/// A DNS name as rules see it: lowercase, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(p: &str, allow: bool) -> NetRule {
        let pattern = if p == "*" {
            Pattern::Any
        } else if let Some(d) = p.strip_prefix("*.") {
            Pattern::Subdomains(d.into())
        } else {
            Pattern::Domain(p.into())
        };
        NetRule { pattern, allow }
    }

    #[test]
    fn patterns_match_as_documented() {
        let d = rule("example.com", true).pattern;
        assert!(d.matches("example.com"));
        assert!(d.matches("a.b.example.com"));
        assert!(!d.matches("badexample.com"));
        assert!(!d.matches("example.com.evil"));
        let s = rule("*.example.com", true).pattern;
        assert!(!s.matches("example.com"));
        assert!(s.matches("www.example.com"));
        assert!(!s.matches("xexample.com"));
        assert!(Pattern::Any.matches("anything.at.all"));
    }

    #[test]
    fn first_match_wins_and_no_match_allows() {
        let p = NetPolicy {
            rules: vec![
                rule("good.example.com", true),
                rule("example.com", false),
                rule("*", false),
            ],
        };
        assert!(p.allows("good.example.com"));
        assert!(p.allows("X.Good.Example.COM."));
        assert!(!p.allows("example.com"));
        assert!(!p.allows("other.org"));
        assert!(p.denies_by_default());
        assert!(NetPolicy::default().allows("anything"));
        assert!(!NetPolicy::default().denies_by_default());
        let allow_first = NetPolicy {
            rules: vec![rule("*", true), rule("*", false)],
        };
        assert!(!allow_first.denies_by_default());
    }

    #[test]
    fn every_include_list_is_well_formed() {
        for (name, domains) in INCLUDES {
            assert!(!domains.is_empty(), "{name}");
            for d in *domains {
                assert_eq!(*d, normalize(d));
                assert!(!d.starts_with('*'));
            }
        }
        assert!(include_list("debian").is_some());
        assert!(include_list("nope").is_none());
    }

    fn label() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "ab", "c-d"]).prop_map(String::from)
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            name(),
            name().prop_map(|n| format!("*.{n}")),
        ]
    }

    /// The model: labels compared from the right.
    fn model_matches(pattern: &str, name: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        let (sub_only, dom) = match pattern.strip_prefix("*.") {
            Some(d) => (true, d),
            None => (false, pattern),
        };
        let n: Vec<&str> = name.split('.').rev().collect();
        let d: Vec<&str> = dom.split('.').rev().collect();
        n.len() >= d.len() && n[..d.len()] == d[..] && (!sub_only || n.len() > d.len())
    }

    proptest! {
        #[test]
        fn allows_agrees_with_a_first_match_model(
            rules in prop::collection::vec((pattern(), any::<bool>()), 0..6),
            name in name(),
        ) {
            let policy = NetPolicy {
                rules: rules.iter().map(|(p, a)| rule(p, *a)).collect(),
            };
            let expected = rules
                .iter()
                .find(|(p, _)| model_matches(p, &name))
                .map(|(_, a)| *a)
                .unwrap_or(true);
            prop_assert_eq!(policy.allows(&name), expected);
        }
    }
}
