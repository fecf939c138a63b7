//! Timestamps as the API shows them.

/// Now as RFC 3339 with milliseconds, the precision every other timestamp has.
pub fn now() -> String {
    rfc3339_ms(now_ms())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).unwrap_or(0)
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    // Always three fraction digits, so that the strings sort like the times.
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_always_have_three_digits() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_120), "2023-11-14T22:13:20.120Z");
        assert!(now() > rfc3339_ms(1_700_000_000_000));
    }
}
