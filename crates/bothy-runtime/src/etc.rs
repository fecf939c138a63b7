//! The files in a box's /etc that the runtime owns: its name and resolver.
//! They are rewritten at every start (the hostname can change) but lines the
//! user added to /etc/hosts are kept.

use std::path::Path;

use crate::fsutil;

/// Marks the /etc/hosts lines the runtime manages.
const MANAGED: &str = "# bothy";

/// /etc/hosts with the runtime's lines for `hostname` and the user's other
/// lines from `existing`.
pub(crate) fn hosts_file(existing: &str, hostname: &str) -> String {
    let mut text = format!(
        "127.0.0.1\tlocalhost {MANAGED}\n::1\tlocalhost ip6-localhost ip6-loopback {MANAGED}\n127.0.1.1\t{hostname} {MANAGED}\n"
    );
    let standard = ["127.0.0.1\tlocalhost", "::1\tlocalhost", "127.0.1.1\t"];
    for line in existing.lines() {
        let managed = line.trim_end().ends_with(MANAGED);
        let duplicate = standard.iter().any(|s| line.starts_with(s));
        if !managed && !duplicate {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Writes hostname, hosts and resolv.conf into the mounted rootfs. The box
/// owns that tree and may have replaced /etc by a symlink: every path is
/// resolved inside the rootfs.
pub(crate) fn write_identity(rootfs: &Path, hostname: &str, dns: &str) -> std::io::Result<()> {
    let etc = fsutil::open_dir_in_root(rootfs, "etc")?;
    let (uid, gid) = (crate::UID_SHIFT, crate::UID_SHIFT);
    let existing = fsutil::read_file_at(&etc, "hosts", 1 << 20)?.unwrap_or_default();
    fsutil::replace_file_at(
        &etc,
        "hosts",
        hosts_file(&existing, hostname).as_bytes(),
        uid,
        gid,
    )?;
    fsutil::replace_file_at(
        &etc,
        "hostname",
        format!("{hostname}\n").as_bytes(),
        uid,
        gid,
    )?;
    fsutil::replace_file_at(
        &etc,
        "resolv.conf",
        format!("nameserver {dns}\n").as_bytes(),
        uid,
        gid,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keeps_user_lines_and_replaces_the_name() {
        let first = hosts_file("", "old");
        let with_user = format!("{first}10.0.0.5\tdb\n");
        let renamed = hosts_file(&with_user, "new");
        assert!(renamed.contains("127.0.1.1\tnew # bothy"));
        assert!(!renamed.contains("old"));
        assert!(renamed.contains("10.0.0.5\tdb"));
        assert_eq!(renamed.lines().count(), 4, "{renamed}");
    }

    #[test]
    fn hosts_drops_debian_defaults_it_replaces() {
        let debian = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
        let text = hosts_file(debian, "box");
        assert_eq!(text.lines().count(), 3);
    }
}
