//! Browser sessions on a private box's URL. A browser cannot send a bearer
//! header, so `/__bothy/login` takes a token once (a form post), checks it
//! belongs to the box's organisation, and sets a cookie for that one host:
//! the box's id and an expiry, signed with the daemon's key. The token is
//! never stored in the browser and the cookie never reaches the box.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The session cookie's name; the edge removes it from every request it
/// forwards.
pub const COOKIE: &str = "bothy_session";
/// Paths the edge answers itself on a private box's URL.
pub const LOGIN_PATH: &str = "/__bothy/login";
pub const LOGOUT_PATH: &str = "/__bothy/logout";
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Signs and checks session cookies.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
}

impl Sessions {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, box_id: &str, expires: u64) -> String {
        blake3::keyed_hash(&self.key, format!("{box_id}.{expires}").as_bytes())
            .to_hex()
            .to_string()
    }

    /// A cookie value for box `box_id`, valid for [`SESSION_TTL`].
    pub fn issue(&self, box_id: &str) -> String {
        let expires = now_secs() + SESSION_TTL.as_secs();
        format!("{expires}.{}", self.mac(box_id, expires))
    }

    /// Whether `value` is a live session of box `box_id`.
    pub fn verify(&self, box_id: &str, value: &str) -> bool {
        let Some((expires, mac)) = value.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let expected = self.mac(box_id, expires);
        // Compare in constant time: the MAC is the secret part.
        let same = blake3::Hash::from_hex(mac)
            .ok()
            .zip(blake3::Hash::from_hex(&expected).ok())
            .is_some_and(|(a, b)| a == b);
        same && expires > now_secs()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The values of cookie `name` in `Cookie` header values.
pub fn cookie_values<'a>(headers: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == COOKIE).then_some(v.trim())
        })
        .collect()
}

/// A `Cookie` header value without the session cookie, or `None` if
/// nothing else is left.
pub fn without_session_cookie(value: &str) -> Option<String> {
    let rest: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && pair.split_once('=').map_or(pair.trim(), |(k, _)| k.trim()) != COOKIE
        })
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Where to send the browser after a login: a path on the same host only
/// (never `//other` or a URL), else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/".into(),
    }
}

/// The login page a browser gets on a private box's URL.
pub fn login_page(sprite: &str, next: &str, error: Option<&str>) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let error = error
        .map(|e| format!("<p style=\"color:#b00\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{sprite} — bothy</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>{sprite}</h1>
<p>This sprite's URL is private. Paste a bothy token of its organization
(<code>bothy token create</code> makes one) to open it in this browser.</p>
{error}
<form method="post" action="{LOGIN_PATH}">
<input type="password" name="token" placeholder="bothy_…" autofocus style="width:100%">
<input type="hidden" name="next" value="{next}">
<p><button type="submit">Open</button></p>
</form>
</body></html>
"#,
        sprite = esc(sprite),
        next = esc(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_bound_to_its_box_and_key() {
        let s = Sessions::new([7; 32]);
        let v = s.issue("box1");
        assert!(s.verify("box1", &v));
        assert!(!s.verify("box2", &v), "another box's cookie");
        assert!(!Sessions::new([8; 32]).verify("box1", &v), "another key");
        let (exp, mac) = v.split_once('.').expect("shape");
        let later = exp.parse::<u64>().expect("num") + 1000;
        assert!(
            !s.verify("box1", &format!("{later}.{mac}")),
            "extended expiry"
        );
        assert!(
            !s.verify("box1", &format!("1.{}", s.mac("box1", 1))),
            "expired"
        );
        for junk in ["", ".", "x.y", "1", "99999999999.zz"] {
            assert!(!s.verify("box1", junk), "{junk:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_removed_and_others_kept() {
        assert_eq!(
            without_session_cookie("a=1; bothy_session=x; b=2").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(without_session_cookie("bothy_session=x"), None);
        assert_eq!(without_session_cookie(" bothy_session = x ;"), None);
        assert_eq!(
            cookie_values(["a=1; bothy_session=x", "bothy_session=y"].into_iter()),
            vec!["x", "y"]
        );
    }

    #[test]
    fn next_stays_on_the_host() {
        assert_eq!(safe_next(Some("/app?x=1")), "/app?x=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "x",
            "/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
