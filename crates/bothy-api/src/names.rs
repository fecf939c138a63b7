//! Validation of user-chosen names.

/// Longest bothy name accepted. It must fit in one DNS label together with the
/// organisation (`<name>-<org>.<domain>`), hence shorter than 63.
pub const MAX_SPRITE_NAME_LEN: usize = 40;

/// Checks a bothy name: 1 to [`MAX_SPRITE_NAME_LEN`] characters of `a-z`, `0-9`
/// and `-`, starting with a letter and not ending with `-` (a lowercase DNS label).
/// The error says what is wrong in words a user can act on.
pub fn validate_sprite_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > MAX_SPRITE_NAME_LEN {
        return Err(format!(
            "name {:?} is {} characters long; the limit is {MAX_SPRITE_NAME_LEN}",
            truncate(name),
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "name {:?} contains {bad:?}; use lowercase letters, digits and '-'",
            truncate(name)
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("name {name:?} must start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(format!("name {name:?} must not end with '-'"));
    }
    if name.contains("--") {
        return Err(format!("name {name:?} must not contain '--'"));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "dev", "my-box-2", &"a".repeat(MAX_SPRITE_NAME_LEN)] {
            assert!(validate_sprite_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(MAX_SPRITE_NAME_LEN + 1);
        for bad in [
            "", "Dev", "1box", "-a", "a-", "a--b", "a_b", "a.b", "a b", "../x", "é", &long,
        ] {
            assert!(validate_sprite_name(bad).is_err(), "{bad:?}");
        }
    }
}
