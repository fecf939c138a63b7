//! Restore and destroy on a busy host: the kernel lets go of a box's disk
//! some time after the box stops, later the busier the host is. Many rounds
//! of create, checkpoint, restore and destroy with both cores kept busy must
//! all succeed, restore must bring the checkpoint's content back, and the
//! host must be clean after.

mod common;

use std::process::{Command, Stdio};

use common::cli::Reaped;
use common::{storage, Daemon};

/// A CPU burner, killed and reaped however the test ends.
fn burn() -> Reaped {
    Reaped(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a CPU burner: {e}")),
    )
}

#[test]
fn create_checkpoint_restore_destroy_rounds_on_a_busy_host() {
    let d = Daemon::start();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _burners: Vec<Reaped> = (0..cores).map(|_| burn()).collect();
    for round in 0..8 {
        let name = format!("busy{round}");
        d.create(&name);
        d.sh(&name, &format!("echo {round} > /root/r && sync /root/r"));
        let id = storage::checkpoint(&d, &name, Some("before the change"));
        d.sh(
            &name,
            "echo changed > /root/r && rm -rf /usr/share/doc && sync",
        );
        storage::restore(&d, &name, &id);
        assert_eq!(
            d.sh(&name, "cat /root/r").trim(),
            round.to_string(),
            "round {round}: the restore brought the checkpoint back"
        );
        assert_eq!(
            d.exec(&name, &["test", "-d", "/usr/share/doc"]).code,
            0,
            "round {round}: files deleted after the checkpoint are back"
        );
        d.cli(&["destroy", &name, "--force"])
            .run()
            .assert_success(&format!("round {round}: destroy"));
    }
    assert!(d.names().is_empty(), "every box is gone: {:?}", d.names());
    assert_eq!(d.stop(), 0, "the daemon stops cleanly");
    let left = d.leftovers();
    assert!(left.is_empty(), "nothing is left on the host: {left:#?}");
}
