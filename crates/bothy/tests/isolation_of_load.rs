//! One box's barrier uploading to a slow object store holds up nobody else:
//! while it runs, another box's status, exec (with synced writes), a create
//! and a destroy (which starts a garbage collection) all complete.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bothy_store::testing::S3Server;
use common::cli::Reaped;
use common::slow_proxy::SlowProxy;
use common::{wait_until, Daemon};

#[test]
fn a_slow_barrier_of_one_box_does_not_stall_the_others() {
    let s3 = S3Server::start().unwrap_or_else(|e| {
        panic!("cannot start the S3 test server ({e}); run scripts/test.sh, which installs it")
    });
    let target: SocketAddr = format!("127.0.0.1:{}", s3.port())
        .parse()
        .unwrap_or_else(|e| panic!("moto's address: {e}"));
    let proxy = SlowProxy::start(target);
    let url = s3
        .url()
        .replace(&s3.endpoint(), &format!("http://{}", proxy.addr()));
    let d = Daemon::start_with(vec!["--object-store".into(), url], s3.env());
    d.create("slow");
    d.create("other");
    // Everything so far (the base image too) reaches the store at full speed.
    d.cli(&["sync"]).run().assert_success("sync at full speed");

    // From now on the store answers slowly: 40 MiB of new chunks take
    // tens of seconds to upload.
    proxy.set_delay(Duration::from_millis(40));
    d.sh(
        "slow",
        "head -c 40000000 /dev/urandom > /root/big && sync /root/big",
    );
    let mut barrier = Reaped(
        d.cli(&["sync", "-s", "slow"])
            .timeout(Duration::from_secs(1800))
            .spawn_detached_io(),
    );
    // Uploads of the slow box's data are under way (and the barrier waits
    // for them) once a few MiB went through the slow store.
    let before = proxy.sent();
    wait_until(
        "the slow box's data to be uploading",
        Duration::from_secs(120),
        || {
            let moved = proxy.sent() - before;
            if moved > 4 << 20 {
                Ok(())
            } else {
                Err(format!("{moved} bytes sent"))
            }
        },
    );

    // Meanwhile, everything about the other box stays prompt.
    assert_eq!(d.get("other")["status"], "running");
    d.sh(
        "other",
        "echo fine > /root/f && sync /root/f && cat /root/f",
    );
    d.create("third");
    d.cli(&["destroy", "third", "--force"])
        .run()
        .assert_success("destroy during a slow barrier");
    // The destroy started a collection: the other box's synced writes go
    // on all through it (ten seconds of them).
    d.sh(
        "other",
        "for i in $(seq 20); do echo $i > /root/g; sync /root/g; sleep 0.5; done",
    );
    assert!(
        barrier
            .0
            .try_wait()
            .unwrap_or_else(|e| panic!("barrier process: {e}"))
            .is_none(),
        "the slow barrier was still running while the rest completed"
    );

    proxy.set_delay(Duration::ZERO);
    let status = common::cli::wait_with_deadline(&mut barrier.0, Duration::from_secs(600))
        .unwrap_or_else(|| panic!("the barrier did not finish once the store was fast again"));
    assert!(status.success(), "the slow barrier succeeds: {status}");
}
