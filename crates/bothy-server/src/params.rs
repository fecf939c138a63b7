//! Parsing and validation of query strings and small request values. Pure
//! functions, so every rule is unit-tested.

use std::time::Duration;

use bothy_api::names::validate_sprite_name;
use bothy_api::{
    KillSessionRequest, DEFAULT_KILL_TIMEOUT_SECS, MAX_KILL_TIMEOUT_SECS, MAX_LIST_RESULTS,
};
use bothy_control::{CheckpointListQuery, ListQuery};

use crate::error::ApiError;

/// Longest accepted query string value (a command argument, an env entry).
const MAX_QUERY_VALUE: usize = 64 * 1024;
/// Most `cmd` plus `env` entries in one exec.
const MAX_QUERY_ITEMS: usize = 4096;

fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        prefix: String::new(),
        limit: MAX_LIST_RESULTS,
        after: None,
    };
    for (k, v) in pairs(raw) {
        match k.as_str() {
            "prefix" => {
                if v.len() > bothy_api::names::MAX_SPRITE_NAME_LEN {
                    return Err(ApiError::bad_request(
                        "prefix is longer than any sprite name",
                    ));
                }
                q.prefix = v;
            }
            "max_results" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "max_results must be a whole number from 1 to {MAX_LIST_RESULTS}, not {:?}",
                        truncate(&v)
                    ))
                })?;
                if n == 0 {
                    return Err(ApiError::bad_request(format!(
                        "max_results must be from 1 to {MAX_LIST_RESULTS}"
                    )));
                }
                // The SDK's list_all asks for 100: serve a smaller page rather than fail.
                q.limit = n.min(MAX_LIST_RESULTS);
            }
            "continuation_token" if !v.is_empty() => q.after = Some(decode_continuation(&v)?),
            // bulk_load and anything unknown: accepted and ignored, as Fly does.
            _ => {}
        }
    }
    Ok(q)
}

/// `GET /v1/sprites` as a watch: which sprites, and how many at most in the
/// first lines (all of them unless `max_results` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchQuery {
    pub prefix: String,
    pub max: Option<usize>,
}

pub fn parse_watch_query(raw: Option<&str>) -> Result<WatchQuery, ApiError> {
    let list = parse_list_query(raw)?;
    let asked = pairs(raw).iter().any(|(k, _)| k == "max_results");
    Ok(WatchQuery {
        prefix: list.prefix,
        max: asked.then_some(list.limit),
    })
}

/// The continuation token is the last name of the previous page; opaque to
/// clients, checked here so that it cannot smuggle anything into a query.
pub fn encode_continuation(last_name: &str) -> String {
    last_name.to_string()
}

fn decode_continuation(token: &str) -> Result<String, ApiError> {
    validate_sprite_name(token).map_err(|_| {
        ApiError::bad_request(
            "continuation_token is not one this server issued; pass next_continuation_token from the previous page",
        )
    })?;
    Ok(token.to_string())
}

/// `GET .../checkpoints` query: `include_auto`, `history`.
pub fn parse_checkpoint_list_query(raw: Option<&str>) -> Result<CheckpointListQuery, ApiError> {
    let mut q = CheckpointListQuery::default();
    for (k, v) in pairs(raw) {
        match k.as_str() {
            "include_auto" => q.include_auto = parse_bool("include_auto", &v)?,
            "history" => q.history = Some(v),
            _ => {}
        }
    }
    Ok(q)
}

/// `GET /v1/tokens` query: `org` (empty = not given). The name itself is
/// control's to check.
pub fn parse_token_list_query(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut org = None;
    for (k, v) in pairs(raw) {
        if k == "org" && !v.is_empty() {
            if org.is_some() {
                return Err(ApiError::bad_request("give org at most once"));
            }
            org = Some(v);
        }
    }
    Ok(org)
}

/// `GET /v1/sprites/{name}/exec` query, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecQuery {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub dir: Option<String>,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// `stdin=` as given: the WebSocket expects stdin unless told `false`,
    /// HTTP exec reads its body as stdin only when told `true`.
    pub stdin: Option<bool>,
    /// `None` = the agent's default; `Some(0)` = forever.
    pub max_run_after_disconnect_ms: Option<u64>,
}

pub fn parse_exec_query(raw: Option<&str>) -> Result<ExecQuery, ApiError> {
    exec_query_of_pairs(pairs(raw))
}

/// An exec query from its `(key, value)` pairs: the exec WebSocket's query
/// string, or a control connection's `op.start` arguments turned into the
/// same pairs, so that both are held to the same rules.
pub fn exec_query_of_pairs(pairs: Vec<(String, String)>) -> Result<ExecQuery, ApiError> {
    let mut q = ExecQuery {
        cmd: Vec::new(),
        env: Vec::new(),
        dir: None,
        tty: false,
        rows: 24,
        cols: 80,
        stdin: None,
        max_run_after_disconnect_ms: None,
    };
    if pairs.len() > MAX_QUERY_ITEMS {
        return Err(ApiError::bad_request("too many query parameters"));
    }
    for (k, v) in pairs {
        if v.len() > MAX_QUERY_VALUE || v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "query parameter {k:?} is too long or contains a NUL byte"
            )));
        }
        match k.as_str() {
            "cmd" => q.cmd.push(v),
            "env" => {
                validate_env(&v)?;
                q.env.push(v);
            }
            "dir" if !v.is_empty() => {
                if !v.starts_with('/') {
                    return Err(ApiError::bad_request(format!(
                        "dir must be an absolute path in the box, not {:?}",
                        truncate(&v)
                    )));
                }
                q.dir = Some(v);
            }
            "tty" => q.tty = parse_bool("tty", &v)?,
            "stdin" => q.stdin = Some(parse_bool("stdin", &v)?),
            "rows" => q.rows = parse_dimension("rows", &v)?,
            "cols" => q.cols = parse_dimension("cols", &v)?,
            "max_run_after_disconnect" if !v.is_empty() => {
                q.max_run_after_disconnect_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "max_run_after_disconnect must be seconds (e.g. 30) or a duration like 10s, 5m, 1h30m (0 = forever), not {:?}",
                        truncate(&v)
                    ))
                })?);
            }
            // `path` repeats cmd[0]; `id` is a client-side hint. Unknown keys are
            // ignored for forward compatibility.
            _ => {}
        }
    }
    if q.cmd.is_empty() || q.cmd[0].is_empty() {
        return Err(ApiError::bad_request(
            "no command: pass it as repeated `cmd` query parameters, e.g. ?cmd=ls&cmd=-l",
        ));
    }
    Ok(q)
}

/// `cols` and `rows` of an attach request, when both are given.
pub fn parse_attach_size(raw: Option<&str>) -> Result<Option<(u16, u16)>, ApiError> {
    let (mut cols, mut rows) = (None, None);
    for (k, v) in pairs(raw) {
        match k.as_str() {
            "cols" => cols = Some(parse_dimension("cols", &v)?),
            "rows" => rows = Some(parse_dimension("rows", &v)?),
            _ => {}
        }
    }
    Ok(cols.zip(rows))
}

fn validate_env(entry: &str) -> Result<(), ApiError> {
    let Some((key, _)) = entry.split_once('=') else {
        return Err(ApiError::bad_request(format!(
            "env entries must look like KEY=VALUE, not {:?}",
            truncate(entry)
        )));
    };
    let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return Err(ApiError::bad_request(format!(
            "env name {:?} is not valid; use letters, digits and '_', not starting with a digit",
            truncate(key)
        )));
    }
    Ok(())
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {:?}",
            truncate(v)
        ))),
    }
}

fn parse_dimension(name: &str, v: &str) -> Result<u16, ApiError> {
    match v.parse::<u16>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be a number from 1 to 4096, not {:?}",
            truncate(v)
        ))),
    }
}

/// Whole seconds (`30`), or a Go-style duration (`500ms`, `10s`, `5m`, `1h30m`).
/// Returns milliseconds; `None` when malformed or absurdly large.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per_unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(per_unit)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The signal a kill sends unless it names one.
const SIGTERM: i32 = 15;

/// Linux signal names by number (1 to 31), without `SIG`.
const SIGNAL_NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// A signal name (`SIGTERM`, `TERM`) or number (1 to 64).
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let n = SIGNAL_NAMES.iter().position(|known| *known == name)?;
    i32::try_from(n + 1).ok()
}

/// The name of signal `n` with its `SIG` prefix (`SIG34` for one without a
/// name of its own).
pub fn signal_name(n: i32) -> String {
    usize::try_from(n - 1)
        .ok()
        .and_then(|i| SIGNAL_NAMES.get(i))
        .map_or_else(|| format!("SIG{n}"), |name| format!("SIG{name}"))
}

/// What a kill asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillParams {
    pub signal: i32,
    /// How long the process gets before SIGKILL; zero = send the signal
    /// only, wait for nothing.
    pub grace: Duration,
}

/// `POST .../exec/{id}/kill`: `?signal=&timeout=` (`@fly/sprites`; timeout
/// `10s`, `500ms` or seconds) or a JSON body `{signal, timeout}`
/// (`sprites-py`; timeout in seconds). The query wins.
pub fn parse_kill(raw: Option<&str>, body: KillSessionRequest) -> Result<KillParams, ApiError> {
    let mut signal = body.signal;
    let mut grace_ms = body.timeout.map(|secs| secs.saturating_mul(1000));
    for (k, v) in pairs(raw) {
        match k.as_str() {
            "signal" if !v.is_empty() => signal = Some(v),
            "timeout" if !v.is_empty() => {
                grace_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "timeout must be seconds (e.g. 10) or a duration like 10s or 500ms, not {:?}",
                        truncate(&v)
                    ))
                })?);
            }
            _ => {}
        }
    }
    let signal = match signal {
        None => SIGTERM,
        Some(name) => parse_signal(&name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown signal {:?}; use a name like SIGTERM, SIGINT, SIGKILL or a number",
                truncate(&name)
            ))
        })?,
    };
    let grace_ms = grace_ms.unwrap_or(DEFAULT_KILL_TIMEOUT_SECS * 1000);
    if grace_ms > MAX_KILL_TIMEOUT_SECS * 1000 {
        return Err(ApiError::bad_request(format!(
            "timeout must be at most {MAX_KILL_TIMEOUT_SECS}s"
        )));
    }
    Ok(KillParams {
        signal,
        grace: Duration::from_millis(grace_ms),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_list_query() {
        assert_eq!(parse_token_list_query(None).ok(), Some(None));
        assert_eq!(parse_token_list_query(Some("org=")).ok(), Some(None));
        assert_eq!(
            parse_token_list_query(Some("org=acme&x=1")).ok(),
            Some(Some("acme".into()))
        );
        assert!(parse_token_list_query(Some("org=a&org=b")).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("30"), Some(30_000));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        for bad in [
            "",
            "s",
            "10x",
            "-1",
            "1.5s",
            "10 s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn exec_query_repeated_cmd_env_and_defaults() {
        let q = parse_exec_query(Some(
            "cmd=sh&cmd=-c&cmd=echo+%22hi%22&path=sh&env=A%3D1&env=B%3Dx%3Dy&stdin=true&tty=true&rows=50&cols=120&max_run_after_disconnect=5m",
        ))
        .expect("valid");
        assert_eq!(q.cmd, ["sh", "-c", "echo \"hi\""]);
        assert_eq!(q.env, ["A=1", "B=x=y"]);
        assert!(q.tty && q.stdin == Some(true));
        assert_eq!((q.rows, q.cols), (50, 120));
        assert_eq!(q.max_run_after_disconnect_ms, Some(300_000));
        let d = parse_exec_query(Some("cmd=ls")).expect("valid");
        assert_eq!(
            (d.tty, d.rows, d.cols, d.dir, d.stdin),
            (false, 24, 80, None, None)
        );
    }

    #[test]
    fn exec_query_rejections() {
        for bad in [
            None,
            Some(""),
            Some("cmd="),
            Some("path=ls"),
            Some("cmd=ls&env=NOEQUALS"),
            Some("cmd=ls&env=1A%3D2"),
            Some("cmd=ls&env=A-B%3D2"),
            Some("cmd=ls&dir=relative"),
            Some("cmd=ls&tty=maybe"),
            Some("cmd=ls&rows=0"),
            Some("cmd=ls&cols=99999"),
            Some("cmd=ls&max_run_after_disconnect=forever"),
            Some("cmd=a%00b"),
        ] {
            let err = parse_exec_query(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn list_query_clamps_and_validates() {
        assert_eq!(parse_list_query(None).expect("ok").limit, MAX_LIST_RESULTS);
        assert_eq!(
            parse_list_query(Some("max_results=100")).expect("ok").limit,
            50
        );
        assert_eq!(
            parse_list_query(Some("max_results=7")).expect("ok").limit,
            7
        );
        let q = parse_list_query(Some("prefix=dev&continuation_token=dev-3&bulk_load=true"))
            .expect("ok");
        assert_eq!(q.prefix, "dev");
        assert_eq!(q.after.as_deref(), Some("dev-3"));
        for bad in [
            "max_results=0",
            "max_results=ten",
            "max_results=-1",
            "continuation_token=%27%3B--",
        ] {
            assert!(parse_list_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            decode_continuation(&encode_continuation("web-1")).expect("round trip"),
            "web-1"
        );
    }

    #[test]
    fn attach_size() {
        assert_eq!(
            parse_attach_size(Some("tty=true&rows=30&cols=100")).expect("ok"),
            Some((100, 30))
        );
        assert_eq!(parse_attach_size(Some("rows=30")).expect("ok"), None);
        assert!(parse_attach_size(Some("rows=x&cols=1")).is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("SIGSYS"), Some(31));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("SIGFOO"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        for n in 1..=31 {
            assert_eq!(parse_signal(&signal_name(n)), Some(n), "{n}");
        }
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "SIG40");
    }

    #[test]
    fn kill_params_from_the_query_or_the_body() {
        let body = |signal: Option<&str>, timeout: Option<u64>| KillSessionRequest {
            signal: signal.map(str::to_string),
            timeout,
        };
        let p = |raw: Option<&str>, b| parse_kill(raw, b).expect("valid");
        assert_eq!(
            p(None, body(None, None)),
            KillParams {
                signal: 15,
                grace: Duration::from_secs(10)
            }
        );
        // sprites-py: a JSON body, timeout in seconds.
        assert_eq!(
            p(None, body(Some("SIGINT"), Some(5))),
            KillParams {
                signal: 2,
                grace: Duration::from_secs(5)
            }
        );
        // @fly/sprites: the query, and it wins over a body.
        assert_eq!(
            p(
                Some("signal=SIGKILL&timeout=500ms"),
                body(Some("SIGINT"), Some(5))
            ),
            KillParams {
                signal: 9,
                grace: Duration::from_millis(500)
            }
        );
        assert_eq!(
            p(Some("timeout=0s"), body(None, None)).grace,
            Duration::ZERO
        );
        assert_eq!(
            p(Some("timeout=30"), body(None, None)).grace,
            Duration::from_secs(30)
        );
        assert_eq!(
            p(Some("timeout=300s"), body(None, None)).grace,
            Duration::from_secs(300)
        );
        for (raw, b) in [
            (Some("signal=SIGNOPE"), body(None, None)),
            (None, body(Some("NOPE"), None)),
            (Some("timeout=soon"), body(None, None)),
            (Some("timeout=301s"), body(None, None)),
            (None, body(None, Some(301))),
            (Some("timeout=-1"), body(None, None)),
        ] {
            let err = parse_kill(raw, b).expect_err(&format!("{raw:?}"));
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn watch_query() {
        assert_eq!(
            parse_watch_query(Some("prefix=web")).expect("ok"),
            WatchQuery {
                prefix: "web".into(),
                max: None
            }
        );
        assert_eq!(
            parse_watch_query(Some("max_results=3")).expect("ok").max,
            Some(3)
        );
        assert!(parse_watch_query(Some("max_results=0")).is_err());
    }
}
