//! A bothy's network policy (`/v1/sprites/{name}/policy/network`): stored,
//! validated, enforced by the box's resolver (REFUSED for denied names) and,
//! when it denies by default, by the egress filter. Denied names are ones
//! the resolver must refuse (no packet leaves the host if it did not); the
//! allowed one is `deb.debian.org`, which the apt tests fetch anyway.

mod common;

use std::process::Command;

use common::storage::box_id;
use common::{Daemon, Shared};
use serde_json::json;

const BOX: &str = "policy-box";
const DENIED: &str = "denied.bothy-test.invalid";
const ALLOWED: &str = "deb.debian.org";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

fn path(name: &str) -> String {
    format!("/v1/sprites/{name}/policy/network")
}

fn get_policy(d: &Daemon, name: &str) -> serde_json::Value {
    let r = d.api("GET", &path(name));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn set_policy(d: &Daemon, name: &str, rules: serde_json::Value) {
    let r = d.api_json("POST", &path(name), &json!({ "rules": rules }));
    assert_eq!(r.status, 204, "{}", r.text());
}

/// The response code the box's resolver gives for an A query of `name`,
/// asked with a raw packet (no retries, no search domains).
fn rcode(d: &Daemon, sprite: &str, name: &str) -> String {
    let script = format!(
        r#"perl -MIO::Socket::INET -e '
$s = IO::Socket::INET->new(PeerAddr => "169.254.0.53:53", Proto => "udp") or die "socket: $!";
$q = pack("nnnnnn", 0x4242, 0x0100, 1, 0, 0, 0);
$q .= join("", map {{ chr(length) . $_ }} split /\./, $ARGV[0]) . "\0" . pack("nn", 1, 1);
$s->send($q);
$rin = ""; vec($rin, fileno($s), 1) = 1;
select($rin, undef, undef, 5) or die "timeout\n";
$s->recv($r, 4096);
printf "rcode=%d\n", unpack("n", substr($r, 2, 2)) & 15;' {name}"#
    );
    d.sh(sprite, &script).trim().to_string()
}

fn resolves(d: &Daemon, sprite: &str, name: &str) -> bool {
    d.sh(
        sprite,
        &format!("getent hosts {name} >/dev/null && echo yes || echo no"),
    )
    .trim()
        == "yes"
}

/// The pid of the box's init, from the pasta serving its namespace.
fn box_pid(d: &Daemon, name: &str) -> u32 {
    let pid_file = format!("{}.pasta.pid", box_id(d, name));
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a.ends_with(&pid_file)) {
            continue;
        }
        if let Some(ns) = args.iter().find(|a| a.ends_with("/ns/net")) {
            let pid = ns.trim_start_matches("/proc/").trim_end_matches("/ns/net");
            return pid.parse().expect("pid");
        }
    }
    panic!("no pasta serves {name}");
}

fn nft_table(d: &Daemon, name: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", box_pid(d, name)))
        .args(["nft", "list", "table", "inet", "bothy_egress"])
        .output()
        .expect("nsenter nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_fresh_box_has_no_rules_and_bad_policies_change_nothing() {
    let d = daemon();
    assert_eq!(get_policy(d, BOX), json!({ "rules": [] }));
    let good = json!([{ "domain": "Example.COM", "action": "deny" }]);
    set_policy(d, BOX, good);
    let stored = json!({ "rules": [{ "domain": "example.com", "action": "deny" }] });
    assert_eq!(get_policy(d, BOX), stored);
    let too_many: Vec<_> = (0..257)
        .map(|_| json!({"domain": "*", "action": "allow"}))
        .collect();
    for bad in [
        json!([{ "domain": "example.com", "action": "block" }]),
        json!([{ "domain": "example.com" }]),
        json!([{ "domain": "ex ample.com", "action": "deny" }]),
        json!([{ "domain": "a.*.com", "action": "deny" }]),
        json!([{ "include": "nosuchlist" }]),
        json!([{ "domain": "example.com", "include": "debian", "action": "allow" }]),
        json!([{ "action": "allow" }]),
        json!(too_many),
    ] {
        let r = d.api_json("POST", &path(BOX), &json!({ "rules": bad }));
        r.assert_error(400, &format!("policy {bad}"));
        assert_eq!(
            get_policy(d, BOX),
            stored,
            "a refused policy changed nothing"
        );
    }
    let r = d.api_json("POST", &path("no-such-box"), &json!({ "rules": [] }));
    r.assert_error(404, "policy of a missing box");
    set_policy(d, BOX, json!([]));
    assert_eq!(get_policy(d, BOX), json!({ "rules": [] }));
}

#[test]
fn denied_names_are_refused_and_the_rules_survive_restarts() {
    let d = Daemon::start();
    let name = "policy-live";
    let other = "policy-other";
    d.create(name);
    d.create(other);
    assert!(
        resolves(&d, name, ALLOWED),
        "{ALLOWED} resolves without rules"
    );
    set_policy(
        &d,
        name,
        json!([{ "domain": "bothy-test.invalid", "action": "deny" }]),
    );
    let check = |d: &Daemon, when: &str| {
        assert_eq!(rcode(d, name, DENIED), "rcode=5", "{when}: REFUSED");
        assert!(!resolves(d, name, DENIED), "{when}: getent fails");
        assert!(resolves(d, name, ALLOWED), "{when}: allowed names resolve");
        assert_ne!(
            rcode(d, other, DENIED),
            "rcode=5",
            "{when}: another box is unaffected"
        );
    };
    check(&d, "at once");

    d.kill9();
    d.spawn();
    d.wait_running(name);
    d.wait_running(other);
    check(&d, "after a daemon restart");

    let r = d.api("POST", &format!("/v1/sprites/{name}/restart"));
    assert!(r.status < 300, "restart: {} {}", r.status, r.text());
    d.wait_running(name);
    check(&d, "after a box restart");
    assert_eq!(
        get_policy(&d, name),
        json!({ "rules": [{ "domain": "bothy-test.invalid", "action": "deny" }] })
    );
    d.shutdown();
}

#[test]
fn deny_by_default_opens_the_filter_only_to_allowed_answers() {
    let d = daemon();
    let name = "policy-strict";
    d.create(name);
    set_policy(
        d,
        name,
        json!([
            { "domain": ALLOWED, "action": "allow" },
            { "domain": "*", "action": "deny" },
        ]),
    );
    let table = nft_table(d, name);
    assert!(table.contains("@allowed4 accept"), "{table}");
    assert_eq!(rcode(d, name, DENIED), "rcode=5");
    let addr = d.sh(
        name,
        &format!("getent ahostsv4 {ALLOWED} | head -n1 | cut -d' ' -f1"),
    );
    let addr = addr.trim();
    assert!(!addr.is_empty(), "{ALLOWED} resolves");
    let table = nft_table(d, name);
    let set = table
        .split("set allowed4")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap_or_default()
        .to_string();
    assert!(set.contains(addr), "{addr} is in the allowed set: {table}");
    // A host address stays out of reach: the host's ranges come first.
    let host_ip = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .expect("ip");
    let host_ip = String::from_utf8_lossy(&host_ip.stdout)
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .map(String::from);
    if let Some(ip) = host_ip {
        let out = d.sh(
            name,
            &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/22' 2>/dev/null && echo OPEN || echo closed"),
        );
        assert_eq!(out.trim(), "closed", "{ip}");
    }
    // Back to no rules: the filter lets everything but the host out again.
    set_policy(d, name, json!([]));
    assert!(!nft_table(d, name).contains("@allowed4 accept"));
}

#[test]
fn the_cli_sets_rules_and_they_survive_a_checkpoint_restore() {
    let d = daemon();
    let name = "policy-cli";
    d.create(name);
    let rules = r#"{"rules": [{"domain": "*.bothy-test.invalid", "action": "deny"}, {"include": "debian"}]}"#;
    let set = d
        .cli(&["policy", "set", "-s", name, "--json"])
        .stdin(rules.as_bytes().to_vec())
        .run()
        .assert_success("policy set");
    let expected = json!({ "rules": [
        { "domain": "*.bothy-test.invalid", "action": "deny" },
        { "include": "debian" },
    ] });
    assert_eq!(set.json(), expected);
    let got = d
        .cli(&["policy", "get", "-s", name, "--json"])
        .run()
        .assert_success("policy get");
    assert_eq!(got.json(), expected);
    d.cli(&["policy", "set", "-s", name])
        .stdin(br#"{"rules": [{"domain": "x", "action": "maybe"}]}"#.to_vec())
        .run()
        .assert_code(1, "an invalid policy");
    assert_eq!(get_policy(d, name), expected, "unchanged");

    let v1 = common::storage::checkpoint(d, name, None);
    set_policy(
        d,
        name,
        json!([{ "domain": "bothy-test.invalid", "action": "deny" }]),
    );
    common::storage::restore(d, name, &v1);
    d.wait_running(name);
    assert_eq!(
        get_policy(d, name),
        json!({ "rules": [{ "domain": "bothy-test.invalid", "action": "deny" }] }),
        "rules are box settings, not disk content"
    );
    assert_eq!(
        rcode(d, name, DENIED),
        "rcode=5",
        "enforced after the restore"
    );
}

#[test]
fn garbage_and_half_open_queries_leave_the_resolver_applying_the_policy() {
    let d = daemon();
    let name = "policy-hostile";
    d.create(name);
    set_policy(
        d,
        name,
        json!([{ "domain": "bothy-test.invalid", "action": "deny" }]),
    );
    // 500 datagrams of random bytes, 40 TCP connections that announce a
    // 64 KiB query and never send it, then a query for a denied name on a
    // socket of its own (its answer is the one with its id).
    let script = format!(
        r#"perl -MIO::Socket::INET -e '
$u = IO::Socket::INET->new(PeerAddr => "169.254.0.53:53", Proto => "udp") or die "udp: $!";
for (1..500) {{ $u->send(join("", map {{ chr(int(rand(256))) }} 1..(1 + int(rand(600))))); }}
for (1..40) {{
  $c = IO::Socket::INET->new(PeerAddr => "169.254.0.53:53", Proto => "tcp", Timeout => 2) or next;
  print $c "\xff\xff" . ("a" x 100);
  push @held, $c;
}}
$s = IO::Socket::INET->new(PeerAddr => "169.254.0.53:53", Proto => "udp") or die "socket: $!";
$q = pack("nnnnnn", 0x4242, 0x0100, 1, 0, 0, 0);
$q .= join("", map {{ chr(length) . $_ }} split /\./, $ARGV[0]) . "\0" . pack("nn", 1, 1);
$s->send($q);
$end = time + 10;
while (time < $end) {{
  $rin = ""; vec($rin, fileno($s), 1) = 1;
  select($rin, undef, undef, 1) or next;
  $s->recv($r, 4096);
  next unless unpack("n", $r) == 0x4242;
  printf "rcode=%d\n", unpack("n", substr($r, 2, 2)) & 15;
  exit 0;
}}
die "no answer\n";' {DENIED}"#
    );
    assert_eq!(d.sh(name, &script).trim(), "rcode=5", "still REFUSED");
    assert!(resolves(d, name, ALLOWED), "allowed names still resolve");
    assert!(!resolves(d, name, DENIED));
}
