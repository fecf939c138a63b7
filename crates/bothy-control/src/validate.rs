//! Validation of what callers ask for: a request that fails here changes
//! nothing. Pure functions, so every rule is unit-tested.

use bothy_api::{CreateSpriteRequest, UrlSettings, MAX_TOKEN_LIFETIME_SECS};

use crate::error::ControlError;
use crate::state::{RowState, SpriteRow};
use crate::tokens::hex;

const RAM_MB: std::ops::RangeInclusive<u64> = 128..=65536;
const CPUS: std::ops::RangeInclusive<u32> = 1..=64;
const STORAGE_GB: std::ops::RangeInclusive<u64> = 1..=1000;
const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 64;
const MAX_COMMENT_CHARS: usize = 1024;

/// A memory limit in MiB, in the range a create accepts.
pub fn ram_mb(field: &str, ram_mb: u64) -> Result<(), ControlError> {
    if RAM_MB.contains(&ram_mb) {
        Ok(())
    } else {
        Err(out_of_range(field, ram_mb, RAM_MB.into_inner()))
    }
}

fn out_of_range<T: std::fmt::Display>(field: &str, v: T, range: (T, T)) -> ControlError {
    ControlError::Invalid {
        code: "invalid_config",
        message: format!(
            "config.{field} = {v} is out of range; use {} to {}",
            range.0, range.1
        ),
    }
}

pub fn sprite_name(name: &str) -> Result<(), ControlError> {
    bothy_api::names::validate_sprite_name(name).map_err(|message| ControlError::Invalid {
        code: "invalid_name",
        message,
    })
}

pub fn labels(labels: &[String]) -> Result<(), ControlError> {
    if labels.len() > MAX_LABELS {
        return Err(ControlError::invalid(format!(
            "{} labels given; at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|l| {
        l.is_empty() || l.chars().count() > MAX_LABEL_LEN || l.chars().any(char::is_control)
    }) {
        return Err(ControlError::invalid(format!(
            "label {:?} must be 1 to {MAX_LABEL_LEN} printable characters",
            bad.chars().take(MAX_LABEL_LEN + 1).collect::<String>()
        )));
    }
    Ok(())
}

pub fn url_settings(s: &UrlSettings) -> Result<(), ControlError> {
    match s.auth.as_deref() {
        None | Some("sprite") | Some("public") => {}
        Some(other) => {
            return Err(ControlError::invalid(format!(
                "url_settings.auth must be \"sprite\" or \"public\", not {:?}",
                other.chars().take(64).collect::<String>()
            )))
        }
    }
    if s.private_access.as_ref().is_some_and(|p| p.len() > 256) {
        return Err(ControlError::invalid(
            "url_settings.private_access is too long",
        ));
    }
    Ok(())
}

pub fn comment(comment: Option<&str>) -> Result<(), ControlError> {
    if let Some(c) = comment {
        if c.chars().count() > MAX_COMMENT_CHARS
            || c.chars().any(|ch| ch.is_control() && ch != '\n')
        {
            return Err(ControlError::invalid(format!(
                "comment must be at most {MAX_COMMENT_CHARS} printable characters"
            )));
        }
    }
    Ok(())
}

/// `vN` → N, or a 400 that says what a checkpoint id looks like.
pub fn checkpoint_id(id: &str) -> Result<u64, ControlError> {
    bothy_api::parse_checkpoint_id(id).ok_or_else(|| {
        ControlError::invalid(format!(
            "{:?} is not a checkpoint id; checkpoint ids look like v1, v2, ...",
            id.chars().take(64).collect::<String>()
        ))
    })
}

/// The expiry a token create asks for, as milliseconds since the epoch
/// (`None`: never), given the time `now_ms`. `expires_in` counts seconds
/// from now; `expires_at` is an RFC 3339 time. Either must land after now
/// and at most [`MAX_TOKEN_LIFETIME_SECS`] from now.
pub fn token_expiry(
    expires_in: Option<i64>,
    expires_at: Option<&str>,
    now_ms: u64,
) -> Result<Option<u64>, ControlError> {
    let bad = |message: String| ControlError::Invalid {
        code: "invalid_expiry",
        message,
    };
    let max_ms = u64::try_from(MAX_TOKEN_LIFETIME_SECS).unwrap_or(u64::MAX) * 1000;
    match (expires_in, expires_at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(
            "give expires_in (seconds from now) or expires_at (an RFC 3339 time), not both".into(),
        )),
        (Some(secs), None) => {
            if secs <= 0 || secs > MAX_TOKEN_LIFETIME_SECS {
                return Err(bad(format!(
                    "expires_in = {secs} is out of range; give seconds from 1 to {MAX_TOKEN_LIFETIME_SECS} (10 years), or leave it out for a token that never expires"
                )));
            }
            Ok(Some(now_ms + u64::try_from(secs).unwrap_or(0) * 1000))
        }
        (None, Some(at)) => {
            let shown = at.chars().take(64).collect::<String>();
            let parsed =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        bad(format!(
                    "expires_at = {shown:?} is not an RFC 3339 time like 2030-01-31T12:00:00Z"
                ))
                    })?;
            let ms = u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            if ms <= now_ms {
                return Err(bad(format!("expires_at = {shown:?} is not in the future")));
            }
            if ms - now_ms > max_ms {
                return Err(bad(format!(
                    "expires_at = {shown:?} is more than 10 years away; tokens live at most that long"
                )));
            }
            Ok(Some(ms))
        }
    }
}

fn new_box_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("b{}", hex(&bytes))
}

/// Validates a create request into the row to insert (state `creating`).
pub fn new_row(
    org: &str,
    req: &CreateSpriteRequest,
    now: String,
) -> Result<SpriteRow, ControlError> {
    sprite_name(&req.name)?;
    let config = req.config.clone().unwrap_or_default();
    let ram_mb = config.ram_mb.unwrap_or(bothy_api::DEFAULT_RAM_MB);
    if !RAM_MB.contains(&ram_mb) {
        return Err(out_of_range("ram_mb", ram_mb, RAM_MB.into_inner()));
    }
    let cpus = config.cpus.unwrap_or(bothy_api::DEFAULT_CPUS);
    if !CPUS.contains(&cpus) {
        return Err(out_of_range("cpus", cpus, CPUS.into_inner()));
    }
    let storage_gb = config.storage_gb.unwrap_or(bothy_api::DEFAULT_STORAGE_GB);
    if !STORAGE_GB.contains(&storage_gb) {
        return Err(out_of_range(
            "storage_gb",
            storage_gb,
            STORAGE_GB.into_inner(),
        ));
    }
    let url = req.url_settings.clone().unwrap_or_default();
    url_settings(&url)?;
    let labels_given = req.labels.clone().unwrap_or_default();
    labels(&labels_given)?;
    Ok(SpriteRow {
        id: new_box_id(),
        org: org.to_string(),
        name: req.name.clone(),
        ram_mb,
        cpus,
        storage_gb,
        url_auth: url.auth.unwrap_or_else(|| "sprite".into()),
        url_private_access: url.private_access,
        labels: labels_given,
        state: RowState::Creating,
        created_at: now.clone(),
        updated_at: now,
        last_running_at: None,
        nesting: config.nesting.unwrap_or(false),
        memory_policy_mb: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_api::SpriteConfig;

    #[test]
    fn token_expiry_is_in_the_future_and_bounded() {
        let now = 1_700_000_000_000;
        let ok = |expires_in, expires_at| token_expiry(expires_in, expires_at, now).ok();
        assert_eq!(ok(None, None), Some(None));
        assert_eq!(ok(Some(60), None), Some(Some(now + 60_000)));
        assert_eq!(
            ok(Some(MAX_TOKEN_LIFETIME_SECS), None),
            Some(Some(now + 315_360_000_000))
        );
        // 2023-11-14T23:00:00Z, with its offset applied.
        assert_eq!(
            ok(None, Some("2023-11-15T00:00:00+01:00")),
            Some(Some(1_700_002_800_000))
        );
        for (expires_in, expires_at) in [
            (Some(0), None),
            (Some(-5), None),
            (Some(MAX_TOKEN_LIFETIME_SECS + 1), None),
            (None, Some("tomorrow")),
            (None, Some("2023-11-14")),
            (None, Some("2001-01-01T00:00:00Z")),
            (None, Some("2043-11-15T00:00:00Z")),
            (Some(60), Some("2023-11-15T00:00:00Z")),
        ] {
            match token_expiry(expires_in, expires_at, now) {
                Err(ControlError::Invalid { code, message }) => {
                    assert_eq!(code, "invalid_expiry");
                    assert!(message.contains("expires_"), "{message}");
                }
                other => panic!("{expires_in:?} {expires_at:?}: {other:?}"),
            }
        }
    }

    fn req(name: &str, config: Option<SpriteConfig>) -> CreateSpriteRequest {
        CreateSpriteRequest {
            name: name.into(),
            config,
            ..Default::default()
        }
    }

    fn code(e: &ControlError) -> &'static str {
        match e {
            ControlError::Invalid { code, .. } => code,
            _ => "not invalid",
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let row = new_row("o", &req("dev", None), "t".into()).expect("valid");
        assert_eq!((row.ram_mb, row.cpus, row.storage_gb), (2048, 2, 100));
        assert_eq!(row.url_auth, "sprite");
        assert!(row.id.starts_with('b') && row.id.len() == 13);
        for (cfg, field) in [
            (
                SpriteConfig {
                    ram_mb: Some(64),
                    ..Default::default()
                },
                "ram_mb",
            ),
            (
                SpriteConfig {
                    cpus: Some(0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                SpriteConfig {
                    cpus: Some(65),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                SpriteConfig {
                    storage_gb: Some(1001),
                    ..Default::default()
                },
                "storage_gb",
            ),
        ] {
            let e = new_row("o", &req("dev", Some(cfg)), "t".into()).expect_err(field);
            assert_eq!(code(&e), "invalid_config");
            assert!(e.to_string().contains(field));
        }
        let e = new_row("o", &req("Bad", None), "t".into()).expect_err("name");
        assert_eq!(code(&e), "invalid_name");
    }

    #[test]
    fn labels_url_settings_comments_and_ids() {
        let mut r = req("dev", None);
        r.labels = Some(vec!["x".repeat(65)]);
        assert!(new_row("o", &r, "t".into()).is_err());
        let mut r = req("dev", None);
        r.labels = Some((0..33).map(|i| i.to_string()).collect());
        assert!(new_row("o", &r, "t".into()).is_err());
        let mut r = req("dev", None);
        r.url_settings = Some(UrlSettings {
            auth: Some("open".into()),
            private_access: None,
        });
        assert!(new_row("o", &r, "t".into()).is_err());
        assert!(comment(Some("fine\nmultiline")).is_ok());
        assert!(comment(Some("bell\u{7}")).is_err());
        assert!(comment(Some(&"x".repeat(1025))).is_err());
        assert_eq!(checkpoint_id("v12").ok(), Some(12));
        for bad in ["12", "v", "v-1", "V1", "v1 "] {
            assert!(checkpoint_id(bad).is_err(), "{bad}");
        }
    }
}
