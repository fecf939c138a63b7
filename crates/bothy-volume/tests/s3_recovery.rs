//! Volumes over a real S3 server (moto on loopback): what comes back on a
//! host that lost its local disk, and what a slow or failing store costs.
//!
//! What a new host recovers from the store alone ([`Storage::recover_volume`]):
//! - the head as of the volume's last `sync`, or of the last head snapshot
//!   the background uploader shipped after it (a flushed write is in one
//!   within seconds, see the crate docs), byte for byte;
//! - every checkpoint that existed at the last `sync`.
//!
//! What it does not recover:
//! - flushed writes no shipped head snapshot names yet;
//! - checkpoints taken after the last `sync`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::testing::S3Server;
use bothy_store::{Blobs, ChunkStore, FaultPlan, FaultyBlobs, ObjectBlobs, RetryPolicy};
use bothy_volume::{CheckpointId, Storage, StorageConfig, Volume};

const CS: u64 = 64 << 10;
const SIZE: u64 = 64 * CS;

fn s3_blobs(server: &S3Server) -> Arc<dyn Blobs> {
    Arc::new(ObjectBlobs::new(
        server.object_store().expect("client for the test server"),
    ))
}

fn storage(dir: &Path, blobs: Arc<dyn Blobs>) -> Storage {
    Storage::open(
        dir,
        ChunkStore::new(blobs, RetryPolicy::fast()),
        StorageConfig::default(),
    )
    .expect("open storage")
}

fn read_all(v: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; v.size() as usize];
    v.read(0, &mut buf).expect("read");
    buf
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 31 % 251) as u8) | 1)
        .collect()
}

/// Polls `cond` until it holds or `what` times out.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_synced_volume_and_its_checkpoints_come_back_from_s3_alone() {
    let server = S3Server::start().expect("moto server (run scripts/test.sh)");
    let first = tempfile::tempdir().unwrap();
    let (at_latest, cp1, at_cp1) = {
        let s = storage(first.path(), s3_blobs(&server));
        let mut v = s.create_volume("disk", SIZE, CS).unwrap();
        v.write(0, &pattern(1, 5 * CS as usize + 17)).unwrap();
        let cp1 = v.checkpoint().unwrap();
        let at_cp1 = read_all(&v);
        v.write(3 * CS - 5, &pattern(2, 2 * CS as usize)).unwrap();
        v.punch_hole(0, CS).unwrap();
        v.write(SIZE - 10, b"last bytes").unwrap();
        v.sync().unwrap();
        let synced = s.head_snapshot_seq("disk").unwrap();

        // After the last sync: uploaded and shipped as a head snapshot in the
        // background once quiet, so recovered. Checkpoints ship only at a
        // sync: this one is not.
        v.write(10 * CS, &pattern(3, CS as usize)).unwrap();
        v.checkpoint().unwrap();
        v.flush().unwrap();
        let at_latest = read_all(&v);
        wait_until("the background shipment", Duration::from_secs(30), || {
            s.head_snapshot_seq("disk").unwrap() > synced
        });
        (at_latest, cp1, at_cp1)
    };
    assert_eq!(server.count_objects("maps/disk/head").unwrap(), 1);
    assert_eq!(server.count_objects("maps/disk/checkpoints").unwrap(), 1);
    assert!(server.count_objects("chunks").unwrap() >= 8);

    let empty = tempfile::tempdir().unwrap();
    let s = storage(empty.path(), s3_blobs(&server));
    let mut v = s.recover_volume("disk").unwrap();
    assert!(
        read_all(&v) == at_latest,
        "head as of the last background shipment"
    );
    assert_eq!(
        v.checkpoints().unwrap(),
        vec![cp1],
        "only synced checkpoints"
    );
    v.restore(cp1).unwrap();
    assert!(read_all(&v) == at_cp1, "checkpoint content");

    // The recovered volume carries on: write, sync, recover again elsewhere.
    v.write(CS, b"second life").unwrap();
    let cp2 = v.checkpoint().unwrap();
    assert_eq!(cp2, CheckpointId(2));
    v.sync().unwrap();
    let want = read_all(&v);
    drop(v);
    drop(s);
    let third = tempfile::tempdir().unwrap();
    let s = storage(third.path(), s3_blobs(&server));
    let v = s.recover_volume("disk").unwrap();
    assert!(read_all(&v) == want);
    assert_eq!(v.checkpoints().unwrap(), vec![cp1, cp2]);
    assert_eq!(server.count_objects("maps/disk/head").unwrap(), 1);
}

#[test]
fn a_slow_then_failing_store_blocks_neither_writes_nor_flush() {
    let server = S3Server::start().expect("moto server (run scripts/test.sh)");
    const SLOW: Duration = Duration::from_secs(4);
    let faulty = Arc::new(FaultyBlobs::new(
        s3_blobs(&server),
        FaultPlan {
            put_delay: SLOW,
            ..Default::default()
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(
        dir.path(),
        ChunkStore::new(faulty.clone(), RetryPolicy::fast()),
        StorageConfig {
            upload_interval: Duration::from_millis(100),
            ..StorageConfig::default()
        },
    )
    .unwrap();
    let mut v = s.create_volume("busy", SIZE, CS).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut write = |v: &mut Volume, at: u64, seed: u8, len: u64| {
        let data = pattern(seed, len as usize);
        let started = Instant::now();
        v.write(at, &data).unwrap();
        v.flush().unwrap();
        model[at as usize..(at + len) as usize].copy_from_slice(&data);
        started.elapsed()
    };
    write(&mut v, 0, 1, 4 * CS);
    wait_until("a slow upload to start", Duration::from_secs(10), || {
        faulty.puts() >= 1
    });

    // An upload is now sleeping inside a put: writes and flushes go on.
    for i in 0..5u64 {
        let took = write(&mut v, (8 + i * 2) * CS, 10 + i as u8, CS + 100);
        assert!(
            took < SLOW / 2,
            "write+flush took {took:?} while the store is slow"
        );
        eprintln!("write+flush while a put sleeps {SLOW:?}: {took:?}");
    }

    // Now the store fails every put: still no effect on writers.
    faulty.set_plan(FaultPlan {
        fail_first_puts: u64::MAX,
        ..Default::default()
    });
    for i in 0..5u64 {
        let took = write(&mut v, (30 + i) * CS + 7, 20 + i as u8, CS);
        assert!(
            took < SLOW / 2,
            "write+flush took {took:?} while the store fails"
        );
        eprintln!("write+flush while every put fails: {took:?}");
    }
    assert!(
        s.dirty_chunks().unwrap() > 0,
        "nothing can have been uploaded"
    );
    assert!(v.sync().is_err(), "sync reports a store that is down");
    assert!(read_all(&v) == model, "reads are served from the cache");

    // The store heals: the background uploader drains everything by itself.
    faulty.set_plan(FaultPlan::default());
    wait_until("the backlog to drain", Duration::from_secs(60), || {
        s.dirty_chunks().unwrap() == 0
    });
    v.sync().unwrap();
    drop(v);
    drop(s);

    let empty = tempfile::tempdir().unwrap();
    let s = storage(empty.path(), s3_blobs(&server));
    let v = s.recover_volume("busy").unwrap();
    assert!(read_all(&v) == model, "every flushed byte arrived");
}

#[test]
fn chunks_dead_before_their_upload_are_dropped_without_one() {
    let server = S3Server::start().expect("moto server (run scripts/test.sh)");
    let faulty = Arc::new(FaultyBlobs::new(
        s3_blobs(&server),
        FaultPlan {
            fail_first_puts: u64::MAX,
            ..Default::default()
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(
        dir.path(),
        ChunkStore::new(faulty.clone(), RetryPolicy::fast()),
        StorageConfig::default(),
    )
    .unwrap();
    let mut keep = s.create_volume("keep", SIZE, CS).unwrap();
    keep.write(0, &pattern(1, CS as usize)).unwrap();
    keep.flush().unwrap();
    let mut gone = s.create_volume("gone", SIZE, CS).unwrap();
    gone.write(0, &pattern(2, 3 * CS as usize)).unwrap();
    gone.flush().unwrap();
    assert_eq!(s.dirty_chunks().unwrap(), 4, "the store takes nothing");
    drop(gone);
    s.delete_volume("gone").unwrap();

    let report = s.gc().unwrap();
    assert_eq!(report.deleted_cached, 3, "the deleted volume's chunks");
    assert_eq!(
        s.dirty_chunks().unwrap(),
        1,
        "only the live volume's chunk waits"
    );
    assert_eq!(s.cached_bytes().unwrap(), CS);

    faulty.set_plan(FaultPlan::default());
    keep.sync().unwrap();
    assert_eq!(
        server.count_objects("chunks").unwrap(),
        1,
        "nothing of the deleted volume was uploaded"
    );
}
