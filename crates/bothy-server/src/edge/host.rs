//! Which host a request names, and what serves it: the API, or the URL of
//! one box. Everything here is pure, and strict: a request whose host is
//! ambiguous is refused rather than guessed at, since the answer decides
//! which box (or the API) a stranger's bytes reach.

use axum::http::header::HOST;
use axum::http::{HeaderMap, Uri};

/// The organisation whose boxes have the short URLs `NAME.DOMAIN`; other
/// organisations' boxes are `NAME--ORG.DOMAIN` (names cannot contain `--`).
pub const DEFAULT_ORG: &str = "default";

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The API (the domain itself, an IP address, any other name).
    Api,
    /// The URL of box `name` of organisation `org`.
    Sprite { org: String, name: String },
    /// Under the domain but no box's URL could have this name.
    NoSuchSprite,
}

/// Why a request's host was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHost(pub &'static str);

/// The host of a request, lower-cased, without port or trailing dot: from
/// the request target's authority (absolute form, HTTP/2) and the `Host`
/// header, which must agree when both are there.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<String, BadHost> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(BadHost("more than one Host header")),
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| BadHost("the Host header is not ASCII"))?,
        ),
        (None, None) | (None, Some(_)) => None,
    };
    let from_header = header.map(normalize).transpose()?;
    let from_target = match uri.authority() {
        Some(a) => {
            if !matches!(uri.scheme_str(), None | Some("http") | Some("https")) {
                return Err(BadHost(
                    "the request target has a scheme other than http(s)",
                ));
            }
            Some(normalize(a.as_str())?)
        }
        None => None,
    };
    match (from_target, from_header) {
        (Some(t), Some(h)) if t != h => Err(BadHost(
            "the request target's host and the Host header differ",
        )),
        (Some(t), _) => Ok(t),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(BadHost("the request names no host (send a Host header)")),
    }
}

/// `Host`-header syntax to a bare lower-case host: no userinfo, a port of
/// digits at most, one trailing dot dropped, only the characters a DNS name
/// or an IP literal has.
fn normalize(raw: &str) -> Result<String, BadHost> {
    if raw.contains('@') {
        return Err(BadHost("userinfo in the host"));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or(BadHost("an unclosed IPv6 literal in the host"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(BadHost("a malformed IPv6 literal in the host"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or(BadHost("junk after the IPv6 literal"))?,
            ),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (raw.to_string(), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadHost("a malformed port in the host"));
        }
    }
    let mut host = host.to_ascii_lowercase();
    if host.ends_with('.') && !host.starts_with('[') {
        host.pop();
    }
    let valid = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !host.split('.').any(str::is_empty));
    if !valid {
        return Err(BadHost("the host is not a DNS name or an IP address"));
    }
    Ok(host)
}

/// What `host` (as [`request_host`] returns it) names under `domain`.
pub fn classify(host: &str, domain: &str) -> Target {
    let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Target::Api;
    };
    let (name, org) = match label.split_once("--") {
        Some((name, org)) => (name, org),
        None => (label, DEFAULT_ORG),
    };
    let valid = |s: &str| bothy_api::names::validate_sprite_name(s).is_ok();
    if label.contains('.')
        || !valid(name)
        || !valid(org)
        || (org == DEFAULT_ORG && label.contains("--"))
    {
        return Target::NoSuchSprite;
    }
    Target::Sprite {
        org: org.to_string(),
        name: name.to_string(),
    }
}

/// The host of box `name` of `org` under `domain` (the inverse of
/// [`classify`]).
pub fn sprite_host(org: &str, name: &str, domain: &str) -> String {
    if org == DEFAULT_ORG {
        format!("{name}.{domain}")
    } else {
        format!("{name}--{org}.{domain}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn host(uri: &str, hosts: &[&str]) -> Result<String, BadHost> {
        let uri: Uri = uri.parse().expect("uri");
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(HOST, HeaderValue::from_str(h).expect("header"));
        }
        request_host(&uri, &headers)
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            host("/", &["Dev.LocalHost:7070"]).as_deref(),
            Ok("dev.localhost")
        );
        assert_eq!(
            host("/", &["dev.localhost."]).as_deref(),
            Ok("dev.localhost")
        );
        assert_eq!(host("/", &["[::1]:80"]).as_deref(), Ok("[::1]"));
        assert_eq!(host("/", &["127.0.0.1"]).as_deref(), Ok("127.0.0.1"));
        assert_eq!(
            host("http://dev.localhost:7070/x", &["DEV.localhost"]).as_deref(),
            Ok("dev.localhost")
        );
    }

    #[test]
    fn ambiguous_hosts_are_refused() {
        for (uri, hosts) in [
            ("/", vec![]),
            ("/", vec!["a.localhost", "b.localhost"]),
            ("http://a.localhost/", vec!["b.localhost"]),
            ("/", vec!["user@a.localhost"]),
            ("/", vec!["a.localhost:80:80"]),
            ("/", vec!["a.localhost:"]),
            ("/", vec!["a..localhost"]),
            ("/", vec!["a_b.localhost"]),
            ("/", vec!["a.localhost/x"]),
            ("/", vec!["[::1"]),
            ("/", vec!["[zz]"]),
            ("/", vec![""]),
            ("ftp://a.localhost/", vec![]),
        ] {
            assert!(
                host(uri, &hosts).is_err(),
                "{uri} {hosts:?} should be refused"
            );
        }
    }

    #[test]
    fn hosts_are_classified() {
        let sprite = |org: &str, name: &str| Target::Sprite {
            org: org.into(),
            name: name.into(),
        };
        assert_eq!(classify("localhost", "localhost"), Target::Api);
        assert_eq!(classify("127.0.0.1", "localhost"), Target::Api);
        assert_eq!(classify("example.com", "localhost"), Target::Api);
        assert_eq!(classify("xlocalhost", "localhost"), Target::Api);
        assert_eq!(
            classify("dev.localhost", "localhost"),
            sprite("default", "dev")
        );
        assert_eq!(
            classify("dev--acme.localhost", "localhost"),
            sprite("acme", "dev")
        );
        assert_eq!(
            classify("dev.b.example.com", "b.example.com"),
            sprite("default", "dev")
        );
        for none in [
            "a.b.localhost",
            "1x.localhost",
            "dev--.localhost",
            "dev--default.localhost",
            "--x.localhost",
        ] {
            assert_eq!(classify(none, "localhost"), Target::NoSuchSprite, "{none}");
        }
    }

    #[test]
    fn a_sprite_host_names_its_sprite() {
        for (org, name) in [("default", "dev"), ("acme", "web-1")] {
            let h = sprite_host(org, name, "localhost");
            assert_eq!(
                classify(&h, "localhost"),
                Target::Sprite {
                    org: org.into(),
                    name: name.into()
                }
            );
        }
    }
}
