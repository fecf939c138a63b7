//! Which TCP ports a box listens on, seen from the host: the kernel's
//! socket tables of the box's network namespace (`/proc/<pid>/net/tcp` and
//! `tcp6` of any process in it), and which of the box's processes owns each
//! listening socket. Nothing runs in the box, so watching ports costs the
//! box nothing and works while its processes are frozen.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The socket state `TCP_LISTEN` as `/proc/net/tcp` prints it.
const TCP_LISTEN: &str = "0A";

/// Processes walked at most when looking for socket owners: a box with a
/// fork bomb must not make every poll of its ports walk all of it.
const MAX_PROCESSES: usize = 4096;

/// A listening TCP socket in a box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningPort {
    pub port: u16,
    /// The address it is bound to (`0.0.0.0` or `::` for all).
    pub address: IpAddr,
    /// The socket's inode: tells a socket closed and opened again on the
    /// same port from one that stayed.
    pub inode: u64,
}

/// The listening sockets in one `/proc/net/tcp` or `tcp6` table. Lines
/// that do not parse are skipped: the format is the kernel's, stable for
/// decades, and a half-understood line must not fail the whole table.
pub fn parse_listeners(table: &str) -> Vec<ListeningPort> {
    table.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<ListeningPort> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if fields.len() < 10 || fields[3] != TCP_LISTEN {
        return None;
    }
    let (addr, port) = fields[1].split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let inode = fields[9].parse().ok()?;
    Some(ListeningPort {
        port,
        address: parse_address(addr)?,
        inode,
    })
}

/// The kernel prints an address as 32-bit words in hex, each word the
/// network-order bytes read as a native integer.
fn parse_address(hex: &str) -> Option<IpAddr> {
    if !hex.is_ascii() {
        return None;
    }
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 socket reached through a dual-stack table keeps its v4 face.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The listening sockets of the network namespace `pid` is in: both tables,
/// v4 first. A missing `tcp6` (IPv6 disabled) is no error.
pub(crate) fn listeners_of(pid: i32) -> std::io::Result<Vec<ListeningPort>> {
    let mut all = parse_listeners(&std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?);
    match std::fs::read_to_string(format!("/proc/{pid}/net/tcp6")) {
        Ok(t) => all.extend(parse_listeners(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(all)
}

/// The box pids owning the socket `inodes`, found among `init` and its
/// descendants (a box's orphans are reparented to its init, so that is all
/// of the box). Best effort: a process that exits meanwhile is skipped.
pub(crate) fn owners(init: i32, inodes: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    let mut queue = vec![init];
    let mut seen = 0usize;
    while let Some(pid) = queue.pop() {
        seen += 1;
        if seen > MAX_PROCESSES || found.len() == inodes.len() {
            break;
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let inode = link
                    .to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                    if let Some(box_pid) = pid_in_box(pid) {
                        found.entry(inode).or_insert(box_pid);
                    }
                }
            }
        }
        queue.extend(children(pid));
    }
    found
}

/// `pid`'s children, from every thread's `children` list.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The pid of host process `pid` in its innermost pid namespace (the box's).
fn pid_in_box(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41235 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 41236 1 0000000000000000 20 4 30 10 -1
   3: garbage
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51000 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51001 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51002 1 0000000000000000 100 0 0 10 0
";

    fn listener(port: u16, address: &str, inode: u64) -> ListeningPort {
        ListeningPort {
            port,
            address: address.parse().unwrap(),
            inode,
        }
    }

    #[test]
    fn v4_table_keeps_only_listeners() {
        assert_eq!(
            parse_listeners(TCP),
            vec![
                listener(8080, "127.0.0.1", 41234),
                listener(22, "0.0.0.0", 41235)
            ]
        );
    }

    #[test]
    fn v6_table_reads_loopback_any_and_mapped_v4() {
        assert_eq!(
            parse_listeners(TCP6),
            vec![
                listener(3000, "::1", 51000),
                listener(8081, "::", 51001),
                listener(8082, "127.0.0.1", 51002)
            ]
        );
    }

    #[test]
    fn nonsense_is_skipped_not_fatal() {
        assert!(parse_listeners("").is_empty());
        assert!(parse_listeners("header\n0: zz:zz 0:0 0A a b c d e f\n").is_empty());
        assert!(parse_listeners("header\n0: 0100007F:FFFFF 0:0 0A a b c d e 1\n").is_empty());
        assert!(parse_listeners("header\n0: 0100007é:1F90 0:0 0A a b c d e 1\n").is_empty());
    }

    #[test]
    fn this_process_sees_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let pid = i32::try_from(std::process::id()).unwrap();
        let found = listeners_of(pid).unwrap();
        let mine = found.iter().find(|p| p.port == port).expect("own listener");
        let owners = owners(pid, &HashSet::from([mine.inode]));
        assert!(owners.contains_key(&mine.inode), "{owners:?}");
    }
}
