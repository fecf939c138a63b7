//! Which bothy a verb acts on: `-s NAME`, else the nearest `.bothy` file
//! (written by `bothy use`) in the current directory or a parent.

use std::path::{Path, PathBuf};

use bothy_api::names::validate_sprite_name;

/// Name of the file `bothy use` writes.
pub const DOT_FILE: &str = ".bothy";
/// A `.bothy` file bigger than this is not ours.
const MAX_DOT_FILE_BYTES: u64 = 4096;

/// The nearest `.bothy` file at or above `start`.
pub fn find_dot_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(DOT_FILE))
        .find(|p| p.is_file())
}

/// The bothy named in a `.bothy` file: its first non-empty line.
pub fn read_dot_file(path: &Path) -> Result<String, String> {
    let fail = |why: String| format!("cannot use {}: {why}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_DOT_FILE_BYTES {
        return Err(fail("the file is too big to be a .bothy file".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let name = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    validate_sprite_name(name).map_err(|e| fail(format!("{e}; fix it with `bothy use NAME`")))?;
    Ok(name.to_string())
}

/// Resolves the bothy to act on.
pub fn resolve_sprite(flag: Option<&str>, cwd: &Path) -> Result<String, String> {
    if let Some(name) = flag {
        return Ok(name.to_string());
    }
    match find_dot_file(cwd) {
        Some(path) => read_dot_file(&path),
        None => Err("no bothy selected: pass -s NAME or run `bothy use NAME`".into()),
    }
}

/// Writes `dir/.bothy` naming `name`.
pub fn write_dot_file(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(DOT_FILE);
    std::fs::write(&path, format!("{name}\n"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_dot_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dot_file(dir.path(), "from-file").expect("write");
        assert_eq!(resolve_sprite(Some("flag"), dir.path()), Ok("flag".into()));
        assert_eq!(resolve_sprite(None, dir.path()), Ok("from-file".into()));
    }

    #[test]
    fn nearest_parent_dot_file_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).expect("mkdir");
        write_dot_file(dir.path(), "outer").expect("write");
        write_dot_file(&dir.path().join("a"), "inner").expect("write");
        assert_eq!(resolve_sprite(None, &deep), Ok("inner".into()));
        assert_eq!(find_dot_file(&deep), Some(dir.path().join("a/.bothy")));
    }

    #[test]
    fn nothing_selected_tells_how_to_select() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A temp dir's parents may hold a .bothy on a developer machine; only
        // check the message when none is found.
        if find_dot_file(dir.path()).is_none() {
            let e = resolve_sprite(None, dir.path()).expect_err("none");
            assert!(e.contains("-s NAME") && e.contains("bothy use NAME"), "{e}");
        }
    }

    #[test]
    fn a_dot_file_with_junk_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for junk in ["", "Bad Name\n", "../etc\n"] {
            std::fs::write(dir.path().join(DOT_FILE), junk).expect("write");
            let e = resolve_sprite(None, dir.path()).expect_err(junk);
            assert!(e.contains(".bothy"), "{e}");
        }
        std::fs::write(dir.path().join(DOT_FILE), "\n  dev  \nextra\n").expect("write");
        assert_eq!(resolve_sprite(None, dir.path()), Ok("dev".into()));
    }
}
