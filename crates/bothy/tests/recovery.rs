//! Durable state is a URL: a daemon whose data dir is lost comes back from its
//! object store alone (a real S3 server on loopback) with every box, every
//! checkpoint and every synced byte.

mod common;

use std::time::Duration;

use bothy_store::testing::S3Server;
use common::{wait_until, Daemon};

fn checkpoint_ids(d: &Daemon, name: &str) -> Vec<String> {
    let out = d
        .cli(&["--json", "checkpoint", "list", "--include-auto", "-s", name])
        .run()
        .assert_success("checkpoint list");
    out.json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_empty_data_dir_comes_back_from_the_object_store() {
    let s3 = S3Server::start().unwrap_or_else(|e| {
        panic!("cannot start the S3 test server ({e}); run scripts/test.sh, which installs it")
    });
    let mut d = Daemon::start_with(vec!["--object-store".into(), s3.url()], s3.env());

    d.create("keep");
    d.sh(
        "keep",
        "echo before > /root/note && head -c 3000000 /dev/urandom > /root/blob \
         && sha256sum /root/blob > /root/blob.sum && sync",
    );
    d.cli(&["checkpoint", "create", "-s", "keep", "--comment", "first"])
        .run()
        .assert_success("checkpoint create");
    d.sh("keep", "echo after > /root/note && sync");
    d.cli(&["create", "copy", "--from", "keep@v1", "--skip-console"])
        .run()
        .assert_success("fork");
    d.sh("copy", "echo forked > /root/own && sync");
    // Uploads start once the boxes have been quiet for a moment.
    wait_until(
        "chunks to reach the S3 store",
        Duration::from_secs(60),
        || match s3.count_objects("chunks/") {
            Ok(n) if n > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The host loses its disk; a new daemon has only the object store.
    d.restart_with_empty_data_dir();
    assert_eq!(d.names(), vec!["copy".to_string(), "keep".to_string()]);
    d.wait_running("keep");
    d.wait_running("copy");
    assert_eq!(
        d.sh("keep", "cat /root/note"),
        "after\n",
        "the synced head is back"
    );
    d.sh("keep", "sha256sum -c --quiet /root/blob.sum");
    assert_eq!(d.sh("copy", "cat /root/note /root/own"), "before\nforked\n");
    assert_eq!(checkpoint_ids(&d, "keep"), vec!["v1".to_string()]);
    let info = d
        .cli(&["--json", "checkpoint", "info", "v1", "-s", "keep"])
        .run()
        .assert_success("checkpoint info")
        .json();
    assert_eq!(info["comment"], "first");

    // The checkpoint's data came back too.
    d.cli(&["restore", "-s", "keep", "v1"])
        .run()
        .assert_success("restore after recovery");
    assert_eq!(d.sh("keep", "cat /root/note"), "before\n");
    d.sh("keep", "sha256sum -c --quiet /root/blob.sum");

    d.shutdown();
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

/// The barrier: a durable checkpoint, a sync of one box and a sync of all,
/// each followed by the loss of the whole host at once (kill -9, no data
/// dir): everything acknowledged before them comes back from the store.
#[test]
fn after_a_barrier_a_lost_host_loses_nothing() {
    let s3 = S3Server::start().unwrap_or_else(|e| {
        panic!("cannot start the S3 test server ({e}); run scripts/test.sh, which installs it")
    });
    let mut d = Daemon::start_with(vec!["--object-store".into(), s3.url()], s3.env());
    d.create("fast");
    // Not even fsynced: the barrier writes the box's filesystem back first.
    d.sh("fast", "echo one > /root/a");
    let made = d
        .cli(&[
            "--json",
            "checkpoint",
            "create",
            "-s",
            "fast",
            "--durable",
            "--comment",
            "durable",
        ])
        .run()
        .assert_success("checkpoint create --durable")
        .json();
    assert_eq!(made["id"], "v1");
    assert_eq!(made["in_object_store"], true, "{made}");
    d.sh("fast", "echo two > /root/a");
    d.cli(&["sync", "-s", "fast"])
        .run()
        .assert_success("sync -s fast");
    d.lose_the_host();

    assert_eq!(d.names(), vec!["fast".to_string()]);
    d.wait_running("fast");
    assert_eq!(
        d.sh("fast", "cat /root/a"),
        "two\n",
        "the synced head is back"
    );
    let info = d
        .cli(&["--json", "checkpoint", "info", "v1", "-s", "fast"])
        .run()
        .assert_success("checkpoint info")
        .json();
    assert_eq!(info["comment"], "durable");
    assert_eq!(info["in_object_store"], true, "{info}");

    // The daemon-wide barrier covers a box made after the recovery, and the
    // checkpoint restores.
    d.create("other");
    d.sh("other", "echo three > /root/b");
    let synced = d
        .cli(&["--json", "sync"])
        .run()
        .assert_success("sync")
        .json();
    let names: Vec<&str> = synced["sprites"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["fast", "other"], "{synced}");
    d.lose_the_host();
    assert_eq!(d.names(), vec!["fast".to_string(), "other".to_string()]);
    d.wait_running("other");
    assert_eq!(d.sh("other", "cat /root/b"), "three\n");
    d.cli(&["restore", "-s", "fast", "v1"])
        .run()
        .assert_success("restore v1");
    assert_eq!(
        d.sh("fast", "cat /root/a"),
        "one\n",
        "the durable checkpoint's data"
    );
}
