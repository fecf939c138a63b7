//! The box's resolver: a DNS forwarder in the daemon that applies the box's
//! network policy.
//!
//! The box's resolver address ([`DNS_ADDR`]) is put on the loopback
//! interface of the box's network namespace, and the daemon listens there on
//! UDP and TCP port 53 with sockets it makes inside that namespace (a socket
//! keeps the namespace it was made in), so the box's queries reach the
//! daemon and never pasta. A query for a name the policy denies is answered
//! REFUSED; any other is sent to the host's first nameserver over the same
//! transport and its answer returned. When the policy denies by default,
//! the A and AAAA records of allowed answers are added to the egress
//! filter's allowed sets before the answer goes back, so the box can then
//! connect to them.
//!
//! The box crafts these packets: a query is parsed (and re-encoded before it
//! goes upstream) with sizes bounded, every upstream exchange has a timeout,
//! and each box has its own bounded number of queries in flight, so a box
//! flooding its resolver slows only itself.
//!
//! While the daemon restarts, nobody listens: the box's queries fail or
//! time out and its resolver retries; the next daemon serves again as it
//! adopts the box.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::netpolicy::NetPolicy;
use crate::network::DNS_ADDR;
use crate::{egress, host, RuntimeError};

/// How long the upstream nameserver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a TCP connection from the box may sit idle.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// UDP queries of one box in flight at once; more are dropped (the box's
/// resolver retries).
const UDP_IN_FLIGHT: usize = 64;
/// TCP connections of one box at once.
const TCP_CONNECTIONS: usize = 16;
/// Largest UDP message taken or returned (EDNS's usual limit).
const MAX_UDP: usize = 4096;

/// What the forwarder of one box needs.
struct BoxState {
    policy: RwLock<Arc<NetPolicy>>,
}

impl BoxState {
    fn policy(&self) -> Arc<NetPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A running forwarder: its tasks end when it is dropped.
struct Server {
    pid: i32,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The forwarders of every box, and every box's policy.
#[derive(Default)]
pub(crate) struct Dns {
    states: Mutex<HashMap<String, Arc<BoxState>>>,
    servers: Mutex<HashMap<String, Server>>,
}

impl Dns {
    fn state(&self, id: &str) -> Arc<BoxState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(states.entry(id.to_string()).or_insert_with(|| {
            Arc::new(BoxState {
                policy: RwLock::new(Arc::new(NetPolicy::default())),
            })
        }))
    }

    /// Box `id`'s policy (the default allows everything).
    pub fn policy(&self, id: &str) -> Arc<NetPolicy> {
        self.state(id).policy()
    }

    /// Replaces box `id`'s policy; the forwarder uses it from its next
    /// query on. Returns the pid of the box's init if the box is served.
    pub fn set_policy(&self, id: &str, policy: NetPolicy) -> Option<i32> {
        *self
            .state(id)
            .policy
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|s| s.pid)
    }

    /// Serves box `id`'s resolver in the network namespace of `pid` (its
    /// init); replaces a forwarder it had.
    pub async fn serve(&self, id: &str, pid: i32) -> Result<(), RuntimeError> {
        // Already serving this init: keep it. (Replacing it would race the
        // old sockets, which close only once their aborted tasks are polled,
        // against the new binds.)
        let serving = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|s| s.pid == pid && s.tasks.iter().all(|t| !t.is_finished()));
        if serving {
            return Ok(());
        }
        self.stop(id);
        let upstream = upstream()?;
        add_resolver_address(pid).await?;
        let (udp, tcp) = tokio::task::spawn_blocking(move || sockets_in_netns(pid))
            .await
            .map_err(|e| RuntimeError::Failed(format!("box resolver setup panicked: {e}")))??;
        let udp = UdpSocket::from_std(udp)?;
        let tcp = TcpListener::from_std(tcp)?;
        let state = self.state(id);
        let ctx = Arc::new(Ctx {
            state,
            upstream,
            pid,
        });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::clone(&ctx), udp)),
            tokio::spawn(serve_tcp(ctx, tcp)),
        ];
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Server { pid, tasks });
        Ok(())
    }

    /// Stops box `id`'s forwarder (its policy stays).
    pub fn stop(&self, id: &str) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Forgets box `id` entirely (it is destroyed).
    pub fn forget(&self, id: &str) {
        self.stop(id);
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The host's nameserver: the first `nameserver` of /etc/resolv.conf.
fn upstream() -> Result<SocketAddr, RuntimeError> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    first_nameserver(&conf)
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| {
            RuntimeError::HostNotReady(
                "the host has no nameserver in /etc/resolv.conf; boxes need one to resolve names"
                    .into(),
            )
        })
}

fn first_nameserver(conf: &str) -> Option<IpAddr> {
    conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.split('%').next()?.parse().ok())
            .flatten()
    })
}

/// Puts [`DNS_ADDR`] on the loopback interface of the box's namespace, so
/// the box's queries stay in it (a local address wins over pasta's route).
async fn add_resolver_address(pid: i32) -> Result<(), RuntimeError> {
    let address = format!("{DNS_ADDR}/32");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "replace", address.as_str(), "dev", "lo"],
    ] {
        host::run(host::command_in("net", pid, &host::IP).args(&args)).await?;
    }
    Ok(())
}

/// UDP and TCP sockets on [`DNS_ADDR`]:53 in the network namespace of
/// `pid`, made on a thread of their own that enters the namespace and ends.
fn sockets_in_netns(
    pid: i32,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), RuntimeError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let thread = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            RuntimeError::Failed(format!("cannot enter box pid {pid}'s network: {e}"))
        })?;
        let addr: Ipv4Addr = DNS_ADDR
            .parse()
            .map_err(|_| RuntimeError::Failed("bad resolver address".into()))?;
        let at = SocketAddr::new(IpAddr::V4(addr), 53);
        let udp = std::net::UdpSocket::bind(at)?;
        udp.set_nonblocking(true)?;
        let tcp = std::net::TcpListener::bind(at)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    });
    thread
        .join()
        .map_err(|_| RuntimeError::Failed("box resolver setup panicked".into()))?
}

struct Ctx {
    state: Arc<BoxState>,
    upstream: SocketAddr,
    pid: i32,
}

async fn serve_udp(ctx: Arc<Ctx>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let limit = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "box resolver: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let ctx = Arc::clone(&ctx);
        let sock = Arc::clone(&sock);
        tokio::spawn(async move {
            if let Some(answer) = answer(&ctx, &query, false).await {
                let _ = sock.send_to(&answer, from).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(ctx: Arc<Ctx>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let _ = serve_tcp_conn(&ctx, conn).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_conn(ctx: &Ctx, mut conn: TcpStream) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut conn)).await {
            Ok(Ok(q)) => q,
            _ => return Ok(()),
        };
        let Some(answer) = answer(ctx, &query, true).await else {
            return Ok(());
        };
        tokio::time::timeout(TCP_IDLE, write_framed(&mut conn, &answer))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
}

async fn read_framed(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = conn.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    conn.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn write_framed(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    conn.write_all(&out).await
}

/// What to tell the box about `query`: REFUSED if the policy denies its
/// name, the upstream's answer otherwise (SERVFAIL if there is none).
/// Nothing for bytes that are no query.
async fn answer(ctx: &Ctx, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let policy = ctx.state.policy();
    let denied = msg.queries().is_empty()
        || msg
            .queries()
            .iter()
            .any(|q| !policy.allows(&q.name().to_ascii()));
    if denied {
        return reply(&msg, ResponseCode::Refused);
    }
    let upstream = match exchange(ctx.upstream, &msg, tcp).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(error = %e, "box resolver: upstream failed");
            return reply(&msg, ResponseCode::ServFail);
        }
    };
    let Ok(parsed) = Message::from_vec(&upstream) else {
        return reply(&msg, ResponseCode::ServFail);
    };
    if parsed.id() != msg.id() {
        return reply(&msg, ResponseCode::ServFail);
    }
    if policy.denies_by_default() {
        let addrs = allowed_addresses(&parsed);
        if !addrs.is_empty() {
            if let Err(e) = egress::allow(ctx.pid, &addrs).await {
                tracing::warn!(error = %e, "box resolver: cannot open the egress filter to an answer");
                return reply(&msg, ResponseCode::ServFail);
            }
        }
    }
    Some(upstream)
}

/// A's and AAAA's of an answer, with how long the filter keeps each open:
/// its TTL, at least a minute, at most an hour.
fn allowed_addresses(answer: &Message) -> Vec<(IpAddr, u32)> {
    answer
        .answers()
        .iter()
        .filter_map(|r| {
            let ip = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => return None,
            };
            Some((ip, r.ttl().clamp(60, 3600)))
        })
        .collect()
}

fn reply(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(query.id(), query.op_code(), code);
    m.set_recursion_desired(query.recursion_desired());
    m.set_recursion_available(true);
    m.add_queries(query.queries().iter().cloned());
    m.to_vec().ok()
}

/// Sends `query` (re-encoded from what was parsed) to the upstream and
/// returns its answer.
async fn exchange(upstream: SocketAddr, query: &Message, tcp: bool) -> std::io::Result<Vec<u8>> {
    let bytes = query
        .to_vec()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let work = async {
        if tcp {
            let mut conn = TcpStream::connect(upstream).await?;
            write_framed(&mut conn, &bytes).await?;
            read_framed(&mut conn).await
        } else {
            let local: SocketAddr = if upstream.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(local).await?;
            sock.connect(upstream).await?;
            sock.send(&bytes).await?;
            let mut buf = vec![0u8; MAX_UDP];
            loop {
                let n = sock.recv(&mut buf).await?;
                // Skip anything that is not the answer to this query.
                if n >= 2 && buf[..2] == query.id().to_be_bytes() {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpolicy::normalize;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn the_first_nameserver_is_the_upstream() {
        let conf = "# comment\nsearch x\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n";
        assert_eq!(
            first_nameserver(conf),
            Some("127.0.0.53".parse().expect("ip"))
        );
        assert_eq!(
            first_nameserver("nameserver fe80::1%eth0\n"),
            Some("fe80::1".parse().expect("ip"))
        );
        assert_eq!(first_nameserver("nameserver bogus\n"), None);
        assert_eq!(first_nameserver(""), None);
    }

    #[test]
    fn a_refusal_answers_the_query() {
        let mut q = Message::new();
        q.set_id(0x1234);
        q.set_recursion_desired(true);
        q.add_query(Query::query(
            Name::from_ascii("blocked.example.").expect("name"),
            RecordType::A,
        ));
        let bytes = reply(&q, ResponseCode::Refused).expect("reply");
        let r = Message::from_vec(&bytes).expect("parse");
        assert_eq!(r.id(), 0x1234);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.queries(), q.queries());
    }

    #[test]
    fn names_from_queries_are_matched_normalized() {
        let n = Name::from_ascii("WWW.Example.COM.").expect("name");
        assert_eq!(normalize(&n.to_ascii()), "www.example.com");
    }
}
