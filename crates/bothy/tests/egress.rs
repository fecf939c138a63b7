//! What a box reaches over the network: never the host. Listeners on every
//! address of every host interface (and on the wildcard addresses, as host
//! services usually are) must see no connection from a box, whatever address
//! box root dials. Only the host's own addresses are dialled, so a broken
//! filter shows up here without a packet leaving the host.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener};
use std::process::Command;

use common::{Daemon, Shared};

const BOX: &str = "egress-box";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

/// An address of a host interface: `ip -o addr` fields.
struct HostAddr {
    ip: IpAddr,
    ifindex: u32,
}

fn host_addresses() -> Vec<HostAddr> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip -o addr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ifindex = f.first()?.trim_end_matches(':').parse().ok()?;
            let ip: IpAddr = f.get(3)?.split('/').next()?.parse().ok()?;
            (f.get(1) != Some(&"lo") && !ip.is_loopback()).then_some(HostAddr { ip, ifindex })
        })
        .collect()
}

fn listen(addr: SocketAddr) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
    l.set_nonblocking(true).expect("nonblocking");
    l
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[test]
fn host_services_on_every_address_are_out_of_reach() {
    let d = daemon();
    let addrs = host_addresses();
    assert!(!addrs.is_empty(), "the host has addresses besides loopback");
    let any4 = listen("0.0.0.0:0".parse().expect("addr"));
    let any6 = listen("[::]:0".parse().expect("addr"));
    let mut listeners = vec![("0.0.0.0".to_string(), any4), ("[::]".to_string(), any6)];
    // (address as the box dials it, port)
    let mut targets: Vec<(String, u16)> = Vec::new();
    for a in &addrs {
        let specific = match a.ip {
            IpAddr::V4(_) => listen(SocketAddr::new(a.ip, 0)),
            IpAddr::V6(v6) => listen(SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, a.ifindex))),
        };
        let port = specific.local_addr().expect("port").port();
        let wildcard = match a.ip {
            IpAddr::V4(_) => listeners[0].1.local_addr().expect("port").port(),
            IpAddr::V6(_) => listeners[1].1.local_addr().expect("port").port(),
        };
        // Link-local addresses need the box's interface as their scope.
        let dialled = if is_link_local(&a.ip) {
            format!("{}%$IF", a.ip)
        } else {
            a.ip.to_string()
        };
        targets.push((dialled.clone(), port));
        targets.push((dialled, wildcard));
        listeners.push((a.ip.to_string(), specific));
    }
    let mut script = String::from(
        "IF=$(ls /sys/class/net | grep -vx lo | head -n1)\n\
         try() { if timeout 5 bash -c \"exec 3<>/dev/tcp/$1/$2\" 2>/dev/null; \
         then echo \"OPEN $1 $2\"; else echo \"closed $1 $2\"; fi; }\n",
    );
    for (addr, port) in &targets {
        script.push_str(&format!("try {addr} {port}\n"));
    }
    let out = d.sh(BOX, &script);
    let open: Vec<&str> = out.lines().filter(|l| l.starts_with("OPEN")).collect();
    assert!(
        open.is_empty(),
        "the box reached host listeners: {open:?}\n{out}"
    );
    assert_eq!(
        out.lines().count(),
        targets.len(),
        "every target was tried: {out}"
    );
    for (what, l) in &listeners {
        match l.accept() {
            Ok((_, from)) => panic!("a connection from {from} reached the host listener on {what}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{what}: {e}"),
        }
    }
}

#[test]
fn box_root_cannot_change_its_network() {
    let d = daemon();
    // CAP_NET_ADMIN (bit 12) is in no set of box root's: the filter in its
    // namespace stays as the daemon loaded it.
    let status = d.sh(BOX, "grep -E '^Cap(Eff|Bnd):' /proc/self/status");
    for line in status.lines() {
        let hex = line.split_whitespace().nth(1).expect("cap mask");
        let mask = u64::from_str_radix(hex, 16).expect("hex cap mask");
        assert_eq!(mask & (1 << 12), 0, "CAP_NET_ADMIN in {line}");
    }
}

#[test]
fn private_link_local_and_metadata_ranges_are_filtered() {
    let d = daemon();
    let pid = box_init_pid(BOX).expect("the box's init on the host");
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["nft", "list", "table", "inet", "bothy_egress"])
        .output()
        .expect("nsenter nft");
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 169.254.169.254 (cloud metadata) is in the link-local range.
    for range in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ] {
        assert!(rules.contains(range), "{range} is not filtered:\n{rules}");
    }
    let _ = d;
}

/// The host pid of box `name`'s init: the `bothy init` process whose UTS
/// namespace carries the box's hostname.
fn box_init_pid(name: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !(args.first().is_some_and(|a| a.ends_with(b"bothy"))
            && args.get(1) == Some(&&b"init"[..]))
        {
            continue;
        }
        let host = Command::new("nsenter")
            .arg(format!("--uts=/proc/{pid}/ns/uts"))
            .arg("hostname")
            .output()
            .ok()?;
        if String::from_utf8_lossy(&host.stdout).trim() == name {
            return Some(pid);
        }
    }
    None
}

/// The pid of the pasta serving `BOX`.
fn box_pasta() -> u32 {
    let init = box_init_pid(BOX).expect("the box's init on the host");
    let netns = format!("/proc/{init}/ns/net");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("pasta")) && args.contains(&netns)
        })
        .expect("the box's pasta")
}

#[test]
fn pasta_holds_no_host_privilege() {
    let d = daemon();
    let init = box_init_pid(BOX).expect("the box's init on the host");
    let pasta = box_pasta();
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).expect("ns/user");
    assert_eq!(
        ns(&pasta.to_string()),
        ns(&init.to_string()),
        "pasta lives in the box's user namespace"
    );
    assert_ne!(
        ns(&pasta.to_string()),
        ns("self"),
        "pasta has no place in the host's user namespace"
    );
    let status = std::fs::read_to_string(format!("/proc/{pasta}/status")).expect("status");
    assert!(
        status.lines().any(|l| l == "NoNewPrivs:\t1"),
        "pasta cannot regain privileges: {status}"
    );
    let _ = d;
}

/// pasta zero-fills ~28 MiB of packet buffers at start; it is started opted
/// in to same-page merging, so those pages go back to the kernel's zero page
/// and a running box costs the host a few MiB of pasta, not 29.
#[test]
fn pastas_zeroed_buffers_are_given_back() {
    let d = daemon();
    if !std::path::Path::new("/sys/kernel/mm/ksm").exists() {
        eprintln!("this kernel has no KSM: nothing to check");
        return;
    }
    let pasta = box_pasta();
    let stat = std::fs::read_to_string(format!("/proc/{pasta}/ksm_stat")).unwrap_or_default();
    assert!(
        stat.contains("ksm_merge_any: yes"),
        "pasta runs opted in to merging: {stat}"
    );
    assert_eq!(
        std::fs::read_to_string("/sys/kernel/mm/ksm/run")
            .unwrap_or_default()
            .trim(),
        "1",
        "the daemon runs ksmd"
    );
    let private_kib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pasta}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Private_Dirty:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    common::wait_until(
        "pasta's private memory to fall under 8 MiB",
        std::time::Duration::from_secs(180),
        || match private_kib() {
            kib if kib < 8 << 10 => Ok(()),
            kib => Err(format!("{kib} KiB private")),
        },
    );
    let _ = d;
}
