//! The daemon's processes and the host's memory, as /proc shows them: which
//! process serves the API, which one the storage socket, how much memory
//! each holds and how much the host has left.

use std::path::Path;

use anyhow::{Context as _, Result};

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the status of process {pid}"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// VmRSS of a process in MiB.
pub fn rss_mib(pid: i32) -> Result<f64> {
    rss_kib(pid).map(kib_to_mib)
}

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The host's MemAvailable in KiB: what it can still give without swapping.
pub fn mem_available_kib() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    parse_meminfo_kib(&meminfo, "MemAvailable")
        .ok_or_else(|| anyhow::anyhow!("/proc/meminfo has no MemAvailable"))
}

fn parse_meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The process listening on the API's loopback port: its socket inode from
/// /proc/net/tcp{,6}, then the process holding that inode.
pub fn find_daemon_pid(port: u16) -> Option<i32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    pid_holding_sockets(&inodes)
}

/// The storage process of the daemon whose data dir is `data_dir`: the
/// process listening on `DATA_DIR/run/storage.sock` (/proc/net/unix, then
/// the process holding that socket). `None` when none runs.
pub fn find_storage_pid(data_dir: &Path) -> Option<i32> {
    let mut paths = vec![data_dir.join("run").join("storage.sock")];
    if let Ok(real) = data_dir.canonicalize() {
        paths.push(real.join("run").join("storage.sock"));
    }
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let inodes: Vec<u64> = paths
        .iter()
        .filter_map(|p| p.to_str())
        .flat_map(|p| listening_unix_inodes(&table, p))
        .collect();
    pid_holding_sockets(&inodes)
}

/// The first process with one of the sockets `inodes` among its open files.
fn pid_holding_sockets(inodes: &[u64]) -> Option<i32> {
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Inodes of sockets in state LISTEN (0A) on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = cols.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *cols.get(3)? == "0A")
                .then(|| cols.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// `__SO_ACCEPTCON` in the flags of /proc/net/unix: a listening socket.
const UNIX_LISTENING: &str = "00010000";

/// Inodes of listening unix sockets bound to `path` in /proc/net/unix.
fn listening_unix_inodes(table: &str, path: &str) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let bound = cols.get(7..)?.join(" ");
            (bound == path && *cols.get(3)? == UNIX_LISTENING)
                .then(|| cols.get(6)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1D2E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0\n\
   1: 0100007F:1D2E 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0\n\
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0\n";
        assert_eq!(listening_inodes(table, 7470), vec![12345]);
        assert_eq!(listening_inodes(table, 8080), vec![999]);
        assert!(listening_inodes(table, 1).is_empty());
    }

    #[test]
    fn our_own_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(find_daemon_pid(port), Some(std::process::id() as i32));
    }

    #[test]
    fn listening_unix_sockets_are_found_by_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 4242 /srv/b/run/storage.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 4343 /srv/b/run/storage.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 4444\n\
0000000000000000: 00000002 00000000 00010000 0001 01 4545 /srv/a b/run/storage.sock\n";
        assert_eq!(
            listening_unix_inodes(table, "/srv/b/run/storage.sock"),
            vec![4242]
        );
        assert_eq!(
            listening_unix_inodes(table, "/srv/a b/run/storage.sock"),
            vec![4545]
        );
        assert!(listening_unix_inodes(table, "/srv/c/run/storage.sock").is_empty());
    }

    #[test]
    fn our_own_storage_socket_is_found() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let run = data_dir.path().join("run");
        std::fs::create_dir_all(&run).expect("run dir");
        assert_eq!(find_storage_pid(data_dir.path()), None);
        let _listener =
            std::os::unix::net::UnixListener::bind(run.join("storage.sock")).expect("bind");
        assert_eq!(
            find_storage_pid(data_dir.path()),
            Some(std::process::id() as i32)
        );
    }

    #[test]
    fn rss_of_this_process() {
        assert_eq!(
            parse_vm_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2048)
        );
        assert!(rss_mib(std::process::id() as i32).expect("own rss") > 0.0);
        assert_eq!(kib_to_mib(1536), 1.5);
    }

    #[test]
    fn meminfo_fields() {
        let meminfo = "MemTotal:       24683520 kB\nMemFree:        17915904 kB\n\
MemAvailable:   23932160 kB\nBuffers:          123 kB\n";
        assert_eq!(parse_meminfo_kib(meminfo, "MemAvailable"), Some(23_932_160));
        assert_eq!(parse_meminfo_kib(meminfo, "MemTotal"), Some(24_683_520));
        assert_eq!(parse_meminfo_kib(meminfo, "Mem"), None);
        assert_eq!(parse_meminfo_kib(meminfo, "Cached"), None);
        assert!(mem_available_kib().expect("this host's meminfo") > 0);
    }
}
