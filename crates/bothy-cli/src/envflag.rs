//! `--env K=V,K2=V2` (repeatable) into ordered pairs.

/// Parses every `--env` value. Pieces are split on commas; a piece without '='
/// continues the previous value, so `PATH=/a,/b` is not an error but
/// `A=1,B=2` is two variables.
pub fn parse_env_flags(flags: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for flag in flags {
        let mut first = true;
        for piece in flag.split(',') {
            match piece.split_once('=') {
                Some((key, value)) if valid_key(key) => {
                    out.push((key.to_string(), value.to_string()));
                }
                Some(_) | None if !first => match out.last_mut() {
                    Some((_, value)) => {
                        value.push(',');
                        value.push_str(piece);
                    }
                    None => return Err(bad_flag(flag)),
                },
                _ => return Err(bad_flag(flag)),
            }
            first = false;
        }
    }
    if out
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err("environment variables cannot contain NUL bytes".into());
    }
    Ok(out)
}

/// Names a shell can set: letters, digits and '_', not starting with a digit.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn bad_flag(flag: &str) -> String {
    format!("--env {flag:?}: expected NAME=VALUE[,NAME=VALUE...] with NAME made of letters, digits and '_'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(flags: &[&str]) -> Result<Vec<(String, String)>, String> {
        parse_env_flags(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn comma_separated_and_repeated_keep_order() {
        assert_eq!(
            pairs(&["A=1,B=2", "C=3"]).expect("valid"),
            [kv("A", "1"), kv("B", "2"), kv("C", "3")]
        );
    }

    #[test]
    fn values_may_hold_equals_commas_and_be_empty() {
        assert_eq!(
            pairs(&["OPTS=a=b,c", "E="]).expect("valid"),
            [kv("OPTS", "a=b,c"), kv("E", "")]
        );
        assert_eq!(
            pairs(&["P=/a,/b,Q=1"]).expect("valid"),
            [kv("P", "/a,/b"), kv("Q", "1")]
        );
    }

    #[test]
    fn rejects_missing_or_bad_names() {
        for bad in ["A", "=1", "1A=x", "A B=1", ",A=1", ""] {
            assert!(pairs(&[bad]).is_err(), "{bad:?}");
        }
        assert!(pairs(&["A=\0"]).is_err());
    }
}
