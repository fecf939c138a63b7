//! Port forwards (`/proxy`) and port watches (`/ports/watch`): what a
//! client may ask to be connected to, and which ports a box listens on.
//!
//! A forward only ever reaches the box's own loopback, from inside the
//! box's network namespace: whatever a client names, the daemon never
//! connects anywhere else, so it cannot be used to reach the host or the
//! networks the host sees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::boxes::{BoxError, ListeningPort};
use crate::error::{ControlError, ControlResult};
use crate::sleep::AwakeHold;
use crate::state::SpriteRow;
use crate::{Boxes, Control};

/// How long a forward's connect may take, waking the box included: a cold
/// box boots and starts its services within it; a refused connect is
/// retried meanwhile.
pub const FORWARD_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The names a forward may give for the box's loopback. Empty is what a
/// client that sends no host means: the box itself.
const LOOPBACK_HOSTS: [&str; 5] = ["", "localhost", "127.0.0.1", "::1", "[::1]"];

/// The port a forward to `host`:`port` goes to, or why it is refused.
pub fn forward_port(host: &str, port: i64) -> ControlResult<u16> {
    let host = host.trim();
    if !LOOPBACK_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(ControlError::Invalid {
            code: "forbidden_host",
            message: format!(
                "cannot forward to {host:?}: only the sprite's own loopback (localhost, 127.0.0.1, ::1) can be reached through /proxy"
            ),
        });
    }
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ControlError::invalid(format!(
            "port {port} is out of range: a port is 1-65535"
        ))),
    }
}

/// A port a box listens on, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPort {
    pub port: u16,
    /// What the socket is bound to (`0.0.0.0`, `::` for every address).
    pub address: IpAddr,
    /// The owner's pid in the box, when it was found.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChange {
    Opened(OpenPort),
    Closed(OpenPort),
}

/// The listening sockets of one box as last seen, by socket inode (a port
/// closed and opened again between two polls is a new socket: the watcher
/// hears both).
pub struct PortWatch {
    row: SpriteRow,
    known: BTreeMap<u64, OpenPort>,
}

impl PortWatch {
    /// The ports open now, by port then address.
    pub fn ports(&self) -> Vec<OpenPort> {
        let mut ports: Vec<OpenPort> = self.known.values().cloned().collect();
        ports.sort_by_key(|p| (p.port, p.address));
        ports
    }
}

impl<B: Boxes> Control<B> {
    /// A connection to `port` on the box's loopback for a forward to
    /// `host`:`port`, waking the box; the hold keeps it awake while the
    /// forward lives.
    pub async fn forward(
        &self,
        row: &SpriteRow,
        host: &str,
        port: i64,
    ) -> ControlResult<(TcpStream, AwakeHold)> {
        let port = forward_port(host, port)?;
        self.connect_box(row, Some(port), FORWARD_CONNECT_WAIT)
            .await
    }

    /// Starts watching the box's listening ports. The box is woken so the
    /// first answer is its real state, but not kept awake: watching is not
    /// using it, and a box that goes to sleep keeps its (frozen) sockets
    /// or, once stopped, closes them all, which the watch then reports.
    pub async fn watch_ports(&self, row: &SpriteRow) -> ControlResult<PortWatch> {
        drop(self.ensure_running(row).await?);
        let mut watch = PortWatch {
            row: row.clone(),
            known: BTreeMap::new(),
        };
        self.poll_ports(&mut watch).await?;
        Ok(watch)
    }

    /// What changed since the last poll. `NotFound` once the sprite is gone.
    pub async fn poll_ports(&self, watch: &mut PortWatch) -> ControlResult<Vec<PortChange>> {
        let now = match self.boxes().listening_ports(&watch.row.id).await {
            Ok(ports) => ports,
            Err(BoxError::NotFound(_)) => {
                self.still_there(&watch.row).await?;
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let new = new_inodes(&watch.known, &now);
        let owners = if new.is_empty() {
            HashMap::new()
        } else {
            // Owners are a nicety: a box whose processes cannot be walked
            // still has its ports reported.
            self.boxes()
                .port_owners(&watch.row.id, new)
                .await
                .unwrap_or_default()
        };
        Ok(apply(&mut watch.known, now, &owners))
    }

    /// A stopped box has no ports; a destroyed (or destroyed and recreated)
    /// one ends the watch.
    async fn still_there(&self, row: &SpriteRow) -> ControlResult<()> {
        let current = self
            .store()
            .sprite(row.org.clone(), row.name.clone())
            .await?;
        match current {
            Some(r) if r.id == row.id => Ok(()),
            _ => Err(ControlError::sprite_not_found(&row.name)),
        }
    }
}

fn new_inodes(known: &BTreeMap<u64, OpenPort>, now: &[ListeningPort]) -> HashSet<u64> {
    now.iter()
        .map(|p| p.inode)
        .filter(|i| !known.contains_key(i))
        .collect()
}

/// Brings `known` to `now` and says what changed: closings first, then
/// openings, each by port.
fn apply(
    known: &mut BTreeMap<u64, OpenPort>,
    now: Vec<ListeningPort>,
    owners: &HashMap<u64, u32>,
) -> Vec<PortChange> {
    let live: HashSet<u64> = now.iter().map(|p| p.inode).collect();
    let gone: Vec<u64> = known
        .keys()
        .filter(|i| !live.contains(i))
        .copied()
        .collect();
    let mut closed: Vec<OpenPort> = gone.iter().filter_map(|i| known.remove(i)).collect();
    let mut opened = Vec::new();
    for p in now {
        if known.contains_key(&p.inode) {
            continue;
        }
        let open = OpenPort {
            port: p.port,
            address: p.address,
            pid: owners.get(&p.inode).copied(),
        };
        known.insert(p.inode, open.clone());
        opened.push(open);
    }
    closed.sort_by_key(|p| (p.port, p.address));
    opened.sort_by_key(|p| (p.port, p.address));
    closed
        .into_iter()
        .map(PortChange::Closed)
        .chain(opened.into_iter().map(PortChange::Opened))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_box_loopback_is_forwarded() {
        for host in [
            "",
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "::1",
            "[::1]",
            " localhost ",
        ] {
            assert_eq!(forward_port(host, 8080).ok(), Some(8080), "{host:?}");
        }
        for host in [
            "10.0.0.1",
            "example.com",
            "169.254.0.53",
            "127.0.0.2",
            "0.0.0.0",
            "::",
            "localhost.example.com",
            "127.0.0.1:22",
        ] {
            let e = forward_port(host, 8080).unwrap_err();
            assert!(
                e.to_string().contains("only the sprite's own loopback"),
                "{host:?}: {e}"
            );
        }
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(forward_port("localhost", 1).ok(), Some(1));
        assert_eq!(forward_port("localhost", 65535).ok(), Some(65535));
        for bad in [0, -1, 65536, 70000, i64::MAX, i64::MIN] {
            assert!(forward_port("localhost", bad).is_err(), "{bad}");
        }
    }

    fn listening(port: u16, inode: u64) -> ListeningPort {
        ListeningPort {
            port,
            address: "127.0.0.1".parse().unwrap(),
            inode,
        }
    }

    fn open(port: u16, pid: Option<u32>) -> OpenPort {
        OpenPort {
            port,
            address: "127.0.0.1".parse().unwrap(),
            pid,
        }
    }

    #[test]
    fn changes_are_closings_then_openings() {
        let mut known = BTreeMap::new();
        let first = vec![listening(8080, 1), listening(22, 2)];
        assert_eq!(new_inodes(&known, &first), HashSet::from([1, 2]));
        let changes = apply(&mut known, first, &HashMap::from([(1, 42)]));
        assert_eq!(
            changes,
            vec![
                PortChange::Opened(open(22, None)),
                PortChange::Opened(open(8080, Some(42)))
            ]
        );

        let same = vec![listening(22, 2), listening(8080, 1)];
        assert!(new_inodes(&known, &same).is_empty());
        assert!(apply(&mut known, same, &HashMap::new()).is_empty());

        // 8080 closed and opened again by another process between two polls.
        let changes = apply(
            &mut known,
            vec![listening(8080, 3), listening(3000, 4)],
            &HashMap::from([(3, 7)]),
        );
        assert_eq!(
            changes,
            vec![
                PortChange::Closed(open(22, None)),
                PortChange::Closed(open(8080, Some(42))),
                PortChange::Opened(open(3000, None)),
                PortChange::Opened(open(8080, Some(7))),
            ]
        );
        assert_eq!(
            apply(&mut known, Vec::new(), &HashMap::new()).len(),
            2,
            "a stopped box closes everything"
        );
    }
}
