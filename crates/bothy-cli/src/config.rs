//! Where the API is and which token to use.
//!
//! Order: `--api` / `BOTHY_API_URL`, else the local default. `--token` /
//! `BOTHY_TOKEN`, else the local daemon's admin token in its data dir
//! (`BOTHY_DATA_DIR`, default `/var/lib/bothy`).

use std::path::{Path, PathBuf};

/// API of a daemon started with no flags.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7070";
/// Data dir of a daemon started with no flags.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/bothy";
/// File in the data dir holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// A token file bigger than this is not a token.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The API URL to use.
pub fn resolve_api_url(flag_or_env: Option<&str>) -> String {
    match flag_or_env.map(str::trim) {
        Some(url) if !url.is_empty() => url.to_string(),
        _ => DEFAULT_API_URL.to_string(),
    }
}

/// The data dir whose admin token is the fallback.
pub fn data_dir(env_value: Option<PathBuf>) -> PathBuf {
    env_value
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// The token to use: the flag or env value, else the admin token file.
pub fn resolve_token(flag_or_env: Option<&str>, data_dir: &Path) -> Result<String, String> {
    if let Some(t) = flag_or_env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    read_token_file(&path).map_err(|why| {
        format!(
            "no API token: pass --token TOKEN or set BOTHY_TOKEN \
             (`bothy token create --org ORG` makes one), or run as root next to a \
             local `bothy daemon` to use its admin token ({}: {why})",
            path.display()
        )
    })
}

fn read_token_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err("not a token file".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_flag_or_env_wins_over_default() {
        assert_eq!(resolve_api_url(Some("http://h:1")), "http://h:1");
        assert_eq!(resolve_api_url(None), DEFAULT_API_URL);
        assert_eq!(resolve_api_url(Some("  ")), DEFAULT_API_URL);
    }

    #[test]
    fn data_dir_env_overrides_default() {
        assert_eq!(data_dir(None), PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(data_dir(Some("".into())), PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(data_dir(Some("/srv/b".into())), PathBuf::from("/srv/b"));
    }

    #[test]
    fn explicit_token_wins_over_admin_token_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "admin\n").expect("write");
        assert_eq!(resolve_token(Some("mine"), dir.path()), Ok("mine".into()));
        assert_eq!(resolve_token(None, dir.path()), Ok("admin".into()));
        assert_eq!(resolve_token(Some(""), dir.path()), Ok("admin".into()));
    }

    #[test]
    fn missing_or_bad_token_file_says_how_to_get_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = resolve_token(None, dir.path()).expect_err("no file");
        assert!(e.contains("--token") && e.contains("BOTHY_TOKEN"), "{e}");
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), " \n").expect("write");
        assert!(resolve_token(None, dir.path()).is_err(), "empty file");
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), vec![b'x'; 5000]).expect("write");
        assert!(resolve_token(None, dir.path()).is_err(), "huge file");
    }
}
