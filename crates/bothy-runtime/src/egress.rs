//! What a box may connect to: the internet, and nothing of the host or its
//! networks.
//!
//! pasta turns the box's connections into the host's own sockets, so without
//! a filter a box reaches whatever the host reaches: services bound to the
//! host's wildcard addresses (through any address of any interface, IPv6
//! link-local included), the host's LAN, private networks and the cloud
//! metadata service. An nftables table in the box's network namespace
//! rejects those destinations before a packet reaches pasta.
//!
//! The table is out of the box's reach: its network namespace belongs to the
//! box's user namespace, but box root holds no CAP_NET_ADMIN there (it is not
//! in the box's bounding set), and a nested namespace (with nesting on) has
//! no route out.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::network::DNS_ADDR;
use crate::{host, RuntimeError};

/// Name of the nftables table in the box's namespace.
const TABLE: &str = "bothy_egress";

/// Destinations no box reaches, whatever the host's addresses: private
/// (RFC 1918), CGNAT (RFC 6598), link-local with the metadata service at
/// 169.254.169.254, "this network", multicast and reserved.
const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Unique-local (ULA), link-local, multicast, and the IPv4-mapped range
/// (whose packets would be the IPv4 ones above).
const BLOCKED_V6: &[&str] = &["fc00::/7", "fe80::/10", "ff00::/8", "::ffff:0:0/96"];

/// The end of the chain of a box whose policy denies by default.
const DENY_BY_DEFAULT: &str = "    ct state established,related accept
    ip daddr @allowed4 accept
    ip6 daddr @allowed6 accept
    reject with icmpx type admin-prohibited
";

/// A network as nftables writes it: the address with host bits cleared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => {
                let prefix = prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let prefix = prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self { addr, prefix }
    }

    fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self::new(addr, prefix)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The host's addresses and the networks they are on, every interface but
/// loopback: each address itself, and the on-link network (the host's LAN
/// neighbours are no more the internet than the host is).
pub(crate) fn host_networks() -> Result<Vec<Net>, RuntimeError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| RuntimeError::Failed(format!("cannot list the host's addresses: {e}")))?;
    let mut nets = BTreeSet::new();
    for ifa in addrs {
        if ifa.interface_name == "lo" {
            continue;
        }
        let (Some(addr), netmask) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (ip, prefix) = if let Some(v4) = addr.as_sockaddr_in() {
            let prefix = netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| u32::from(m.ip()).count_ones() as u8)
                .unwrap_or(32);
            (IpAddr::V4(v4.ip()), prefix)
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let prefix = netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map(|m| u128::from(m.ip()).count_ones() as u8)
                .unwrap_or(128);
            (IpAddr::V6(v6.ip()), prefix)
        } else {
            continue;
        };
        if ip.is_loopback() || ip.is_unspecified() {
            continue;
        }
        nets.insert(Net::host(ip));
        nets.insert(Net::new(ip, prefix));
    }
    Ok(nets.into_iter().collect())
}

/// The nftables script for a box, given the host's networks. Loading it
/// replaces the table as one transaction, so it can be loaded again.
///
/// `allowed4`/`allowed6` hold the addresses the box's resolver returned for
/// allowed names, each with a timeout; when the box's policy denies by
/// default (`deny_by_default`), every other destination is rejected.
/// Connections already established stay up, and the host's addresses and
/// private ranges are rejected before the sets are looked at.
pub(crate) fn ruleset(host: &[Net], deny_by_default: bool) -> String {
    let mut v4: Vec<String> = BLOCKED_V4.iter().map(|s| s.to_string()).collect();
    let mut v6: Vec<String> = BLOCKED_V6.iter().map(|s| s.to_string()).collect();
    for net in host {
        match net.addr {
            IpAddr::V4(_) => v4.push(net.to_string()),
            IpAddr::V6(_) => v6.push(net.to_string()),
        }
    }
    format!(
        "table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
  set blocked4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {v4} }} }}
  set blocked6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ {v6} }} }}
  set allowed4 {{ type ipv4_addr; flags timeout; }}
  set allowed6 {{ type ipv6_addr; flags timeout; }}
  chain out {{
    type filter hook output priority 0; policy accept;
    oifname \"lo\" accept
    ip daddr {DNS_ADDR} meta l4proto {{ tcp, udp }} th dport 53 accept
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
    ip daddr @blocked4 reject with icmpx type admin-prohibited
    ip6 daddr @blocked6 reject with icmpx type admin-prohibited
{default}  }}
}}
",
        v4 = v4.join(", "),
        v6 = v6.join(", "),
        default = if deny_by_default { DENY_BY_DEFAULT } else { "" },
    )
}

/// Loads the egress filter into the network namespace of `pid` (the box's
/// init). Called before pasta gives the namespace a route out, so no
/// connection leaves unfiltered.
pub(crate) async fn install(pid: i32, deny_by_default: bool) -> Result<(), RuntimeError> {
    load(pid, ruleset(&host_networks()?, deny_by_default)).await
}

/// Lets the box whose init is `pid` connect to each address for its number
/// of seconds (from now; an address already there gets the new timeout).
pub(crate) async fn allow(pid: i32, addrs: &[(IpAddr, u32)]) -> Result<(), RuntimeError> {
    let mut script = String::new();
    for (ip, secs) in addrs {
        let set = if ip.is_ipv4() { "allowed4" } else { "allowed6" };
        script.push_str(&format!(
            "delete element inet {TABLE} {set} {{ {ip} }}\nadd element inet {TABLE} {set} {{ {ip} timeout {secs}s }}\n"
        ));
    }
    // A delete of an element that is not there fails the whole transaction;
    // add it first so it always is.
    let mut first = String::new();
    for (ip, secs) in addrs {
        let set = if ip.is_ipv4() { "allowed4" } else { "allowed6" };
        first.push_str(&format!(
            "add element inet {TABLE} {set} {{ {ip} timeout {secs}s }}\n"
        ));
    }
    load(pid, first + &script).await
}

async fn load(pid: i32, script: String) -> Result<(), RuntimeError> {
    use tokio::io::AsyncWriteExt;

    let mut cmd = host::command_in("net", pid, &host::NFT);
    cmd.args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Failed(format!("cannot run nft for box pid {pid}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "loading the box's egress filter failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_drop_host_bits() {
        let n = Net::new("192.0.2.77".parse().expect("ip"), 24);
        assert_eq!(n.to_string(), "192.0.2.0/24");
        let n = Net::new("fe80::fc:ff:fe00:1".parse().expect("ip"), 64);
        assert_eq!(n.to_string(), "fe80::/64");
        let n = Net::new("10.1.2.3".parse().expect("ip"), 0);
        assert_eq!(n.to_string(), "0.0.0.0/0");
        assert_eq!(
            Net::host("fd00::2".parse().expect("ip")).to_string(),
            "fd00::2/128"
        );
    }

    #[test]
    fn the_ruleset_names_every_blocked_range_and_the_host() {
        let host = [
            Net::host("203.0.113.9".parse().expect("ip")),
            Net::new("203.0.113.9".parse().expect("ip"), 24),
            Net::host("2001:db8::9".parse().expect("ip")),
        ];
        let rules = ruleset(&host, false);
        assert!(!rules.contains("@allowed4 accept"));
        let deny = ruleset(&host, true);
        assert!(deny.contains("ip daddr @allowed4 accept"));
        let block = deny.find("@blocked4 reject").expect("block rule");
        let allowed = deny.find("@allowed4 accept").expect("allowed rule");
        assert!(block < allowed, "host ranges stay blocked:\n{deny}");
        for needle in [
            "169.254.0.0/16",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "fc00::/7",
            "fe80::/10",
            "203.0.113.9/32",
            "203.0.113.0/24",
            "2001:db8::9/128",
            "policy accept",
            "oifname \"lo\" accept",
        ] {
            assert!(rules.contains(needle), "{needle} missing from:\n{rules}");
        }
        // DNS to pasta's forwarder is let through before the link-local block.
        let dns = rules.find(DNS_ADDR).expect("dns rule");
        let block = rules.find("@blocked4 reject").expect("block rule");
        assert!(dns < block);
    }

    #[test]
    fn this_hosts_networks_are_found() {
        let nets = host_networks().expect("getifaddrs");
        assert!(
            nets.iter().all(|n| !match n.addr {
                IpAddr::V4(a) => a.is_loopback(),
                IpAddr::V6(a) => a.is_loopback(),
            }),
            "loopback is the box's own, never blocked: {nets:?}"
        );
    }
}
