mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::{ChunkStore, FaultPlan, FaultyBlobs, ObjectBlobs, RetryPolicy};
use bothy_volume::{CheckpointId, Storage, StorageConfig, VolumeError, VolumeUsage};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Punch(u64, u64),
    Read(u64, u64),
    Flush,
    Checkpoint,
    Restore(usize),
    Sync,
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    let range = (0..size).prop_flat_map(move |off| (Just(off), 0..=(size - off).min(3 * CS)));
    prop_oneof![
        4 => range.clone().prop_flat_map(|(off, len)| {
            (Just(off), proptest::collection::vec(any::<u8>(), len as usize))
        }).prop_map(|(o, d)| Op::Write(o, d)),
        2 => range.clone().prop_map(|(o, l)| Op::Punch(o, l)),
        3 => range.prop_map(|(o, l)| Op::Read(o, l)),
        1 => Just(Op::Flush),
        1 => Just(Op::Checkpoint),
        1 => (0usize..8).prop_map(Op::Restore),
        1 => Just(Op::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn volume_behaves_like_a_byte_array(ops in proptest::collection::vec(op(8 * CS), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = mem_blobs();
        // A tiny cache budget, so eviction and refetching are exercised too.
        let config = StorageConfig { cache_budget: 2 * CS, ..StorageConfig::default() };
        let store = ChunkStore::new(blobs.clone(), RetryPolicy::fast());
        let s = Storage::open(dir.path(), store, config).unwrap();
        let mut v = s.create_volume("p", 8 * CS, CS).unwrap();
        let mut model = vec![0u8; (8 * CS) as usize];
        let mut checkpoints: Vec<(CheckpointId, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Write(o, d) => {
                    v.write(o, &d).unwrap();
                    model[o as usize..o as usize + d.len()].copy_from_slice(&d);
                }
                Op::Punch(o, l) => {
                    v.punch_hole(o, l).unwrap();
                    model[o as usize..(o + l) as usize].fill(0);
                }
                Op::Read(o, l) => {
                    let mut buf = vec![0xAAu8; l as usize];
                    v.read(o, &mut buf).unwrap();
                    prop_assert_eq!(&buf[..], &model[o as usize..(o + l) as usize]);
                }
                Op::Flush => v.flush().unwrap(),
                Op::Sync => v.sync().unwrap(),
                Op::Checkpoint => {
                    let id = v.checkpoint().unwrap();
                    checkpoints.push((id, model.clone()));
                }
                Op::Restore(i) => {
                    if let Some((id, content)) = checkpoints.get(i % checkpoints.len().max(1)).cloned() {
                        v.restore(id).unwrap();
                        model = content;
                    }
                }
            }
        }
        prop_assert!(read_all(&v) == model);
        // Everything, checkpoints included, also survives a trip through
        // the object store alone.
        v.sync().unwrap();
        drop(v);
        drop(s);
        let empty = tempfile::tempdir().unwrap();
        let s2 = storage(empty.path(), blobs);
        let mut r = s2.recover_volume("p").unwrap();
        prop_assert!(read_all(&r) == model);
        for (id, content) in checkpoints {
            r.restore(id).unwrap();
            prop_assert!(read_all(&r) == content);
        }
    }
}

#[test]
fn bounds_and_geometry_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    assert!(matches!(
        s.create_volume("x", 10, 4),
        Err(VolumeError::Geometry(_))
    ));
    assert!(matches!(
        s.create_volume("x", 0, 0),
        Err(VolumeError::Geometry(_))
    ));
    let mut v = s.create_volume("v", 4 * CS, CS).unwrap();
    assert!(matches!(
        s.create_volume("v", 4 * CS, CS),
        Err(VolumeError::Exists(_))
    ));
    assert!(matches!(
        v.write(4 * CS - 1, b"ab"),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.punch_hole(u64::MAX, 2),
        Err(VolumeError::OutOfRange { .. })
    ));
    let mut buf = [0u8; 2];
    assert!(v.read(4 * CS, &mut buf[..1]).is_err());
    assert!(matches!(
        v.restore(CheckpointId(9)),
        Err(VolumeError::NoSuchCheckpoint { .. })
    ));
}

/// The files of a storage as a crash leaves them, while it is still open.
fn crash_image(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            crash_image(&entry.path(), &dst);
        } else if entry.file_name() != "lock" {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

#[test]
fn flushed_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let after_crash = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let data = pattern(7, 3 * CS as usize + 100);
    {
        let s = storage(dir.path(), blobs.clone());
        let mut v = s.create_volume("c", 16 * CS, CS).unwrap();
        v.write(CS / 2, &data).unwrap();
        v.flush().unwrap();
        v.write(10 * CS, b"not flushed").unwrap();
        // Neither handle is closed: a crash after flush.
        crash_image(dir.path(), after_crash.path());
        std::mem::forget(v);
        std::mem::forget(s);
    }
    let s = storage(after_crash.path(), blobs);
    let v = s.open_volume("c").unwrap();
    let mut buf = vec![0u8; data.len()];
    v.read(CS / 2, &mut buf).unwrap();
    assert_eq!(buf, data);
    let mut tail = [1u8; 11];
    v.read(10 * CS, &mut tail).unwrap();
    assert_eq!(
        tail, [0u8; 11],
        "unflushed writes may be lost, never half-kept"
    );
}

#[test]
fn a_synced_volume_comes_back_from_the_object_store_alone() {
    let blobs = mem_blobs();
    let first = tempfile::tempdir().unwrap();
    let (want_head, want_cp) = {
        let s = storage(first.path(), blobs.clone());
        let mut v = s.create_volume("r", 32 * CS, CS).unwrap();
        v.write(0, &pattern(1, 5 * CS as usize)).unwrap();
        let cp = v.checkpoint().unwrap();
        let at_cp = read_all(&v);
        v.write(2 * CS + 3, &pattern(9, 7000)).unwrap();
        v.punch_hole(0, CS).unwrap();
        v.sync().unwrap();
        v.sync().unwrap(); // a second sync supersedes the first snapshot
        (read_all(&v), (cp, at_cp))
    };
    let empty = tempfile::tempdir().unwrap();
    let s = storage(empty.path(), blobs);
    let mut v = s.recover_volume("r").unwrap();
    assert_eq!(read_all(&v), want_head);
    assert_eq!(v.checkpoints().unwrap(), vec![want_cp.0]);
    v.restore(want_cp.0).unwrap();
    assert_eq!(read_all(&v), want_cp.1);
    assert!(matches!(s.recover_volume("r"), Err(VolumeError::Exists(_))));
    assert!(matches!(
        s.recover_volume("nope"),
        Err(VolumeError::NoSuchVolume(_))
    ));
}

#[test]
fn checkpoint_restore_clone_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    let mut v = s.create_volume("a", 8 * CS, CS).unwrap();
    v.write(0, b"version one").unwrap();
    let v1 = v.checkpoint().unwrap();
    v.write(0, b"version two").unwrap();
    let v2 = v.checkpoint().unwrap();
    assert_eq!((v1, v2), (CheckpointId(1), CheckpointId(2)));
    v.clone_from_checkpoint(v1, "fork").unwrap();
    let mut fork = s.open_volume("fork").unwrap();
    fork.write(0, b"fork edits!").unwrap();
    v.restore(v1).unwrap();
    let mut buf = [0u8; 11];
    v.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"version one");
    fork.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"fork edits!");
    v.restore(v2).unwrap();
    v.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"version two");
    v.delete_checkpoint(v2).unwrap();
    assert_eq!(v.checkpoints().unwrap(), vec![v1]);
    assert!(v.restore(v2).is_err());
}

#[test]
fn gc_frees_exactly_the_unreferenced_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let store = ChunkStore::new(blobs.clone(), RetryPolicy::fast());
    let s = storage(dir.path(), blobs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let count = || rt.block_on(store.list()).unwrap().len();

    let mut v = s.create_volume("g", 8 * CS, CS).unwrap();
    for i in 0..4u64 {
        v.write(i * CS, &pattern(i as u8, CS as usize)).unwrap();
    }
    let cp = v.checkpoint().unwrap();
    v.write(0, &pattern(100, 2 * CS as usize)).unwrap(); // 2 new chunks
    v.sync().unwrap();
    assert_eq!(count(), 6);
    assert_eq!(s.gc().unwrap().deleted_objects, 0, "all six are referenced");

    v.delete_checkpoint(cp).unwrap();
    v.sync().unwrap();
    let report = s.gc().unwrap();
    assert_eq!(
        report.deleted_objects, 2,
        "the checkpoint's two overwritten chunks go"
    );
    assert_eq!(count(), 4);
    let before = read_all(&v);

    v.punch_hole(0, 8 * CS).unwrap();
    v.sync().unwrap();
    s.gc().unwrap();
    assert_eq!(count(), 0);
    assert!(before.iter().any(|&b| b != 0));
    assert!(read_all(&v).iter().all(|&b| b == 0));
}

#[test]
fn gc_never_deletes_a_chunk_rereferenced_after_it_was_freed() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let s = storage(dir.path(), blobs.clone());
    let mut v = s.create_volume("d", 4 * CS, CS).unwrap();
    let data = pattern(3, CS as usize);
    v.write(0, &data).unwrap();
    v.sync().unwrap();
    v.punch_hole(0, CS).unwrap();
    v.sync().unwrap();
    s.gc().unwrap();
    // The same content again: it must be uploaded anew, not assumed present.
    v.write(CS, &data).unwrap();
    v.sync().unwrap();
    s.gc().unwrap();
    drop(v);
    drop(s);
    assert_eq!(recovered_chunk(blobs, "d", 1), data);
}

#[test]
fn writes_succeed_while_the_store_fails_and_sync_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBlobs::new(
        mem_blobs(),
        FaultPlan {
            fail_first_puts: 5,
            ..Default::default()
        },
    ));
    let s = storage(dir.path(), faulty.clone());
    let mut v = s.create_volume("f", 8 * CS, CS).unwrap();
    v.write(0, &pattern(5, 3 * CS as usize)).unwrap();
    v.flush().unwrap();
    v.sync().unwrap();
    assert!(faulty.puts() > 5);
    assert_eq!(s.dirty_chunks().unwrap(), 0);

    // A store that stays down: flush still succeeds, sync reports the failure,
    // and once the store heals sync completes and nothing was lost.
    faulty.set_plan(FaultPlan {
        fail_first_puts: u64::MAX,
        ..Default::default()
    });
    v.write(4 * CS, &pattern(6, CS as usize)).unwrap();
    v.flush().unwrap();
    assert!(v.sync().is_err());
    assert_eq!(s.dirty_chunks().unwrap(), 1);
    faulty.set_plan(FaultPlan::default());
    v.sync().unwrap();
    assert_eq!(s.dirty_chunks().unwrap(), 0);
}

#[test]
fn a_storage_in_use_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let first = storage(dir.path(), mem_blobs());
    let started = Instant::now();
    let second = Storage::open(
        dir.path(),
        ChunkStore::new(mem_blobs(), RetryPolicy::fast()),
        StorageConfig::default(),
    );
    assert!(
        matches!(second, Err(VolumeError::InUse(_))),
        "a second open is refused"
    );
    assert!(started.elapsed() >= Duration::from_secs(5), "after waiting");
    drop(first);
    storage(dir.path(), mem_blobs());
}

#[test]
fn background_upload_happens_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    let mut v = s.create_volume("b", 4 * CS, CS).unwrap();
    v.write(0, &pattern(8, 2 * CS as usize)).unwrap();
    v.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.dirty_chunks().unwrap() > 0 {
        assert!(Instant::now() < deadline, "background uploader never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cache_stays_within_budget_and_evicts_only_clean_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let faulty = Arc::new(FaultyBlobs::new(
        blobs,
        FaultPlan {
            fail_first_puts: u64::MAX,
            ..Default::default()
        },
    ));
    let config = StorageConfig {
        cache_budget: 3 * CS,
        upload_interval: Duration::from_secs(3600),
    };
    let s = Storage::open(
        dir.path(),
        ChunkStore::new(faulty.clone(), RetryPolicy::fast()),
        config,
    )
    .unwrap();
    let mut v = s.create_volume("e", 16 * CS, CS).unwrap();
    let data: Vec<u8> = (0..16)
        .flat_map(|i| pattern(i as u8 + 1, CS as usize))
        .collect();
    v.write(0, &data).unwrap();
    v.flush().unwrap();
    // Nothing uploaded: all 16 chunks are dirty and must stay despite the budget.
    assert_eq!(s.cached_bytes().unwrap(), 16 * CS);
    faulty.set_plan(FaultPlan::default());
    v.sync().unwrap();
    assert!(s.cached_bytes().unwrap() <= 3 * CS);
    // Evicted chunks come back from the store.
    assert_eq!(read_all(&v), data);
    assert!(s.cached_bytes().unwrap() <= 3 * CS);
}

#[test]
fn works_over_a_file_url_store() {
    let objects = tempfile::tempdir().unwrap();
    let url: bothy_store::StoreUrl = format!("file://{}", objects.path().display())
        .parse()
        .unwrap();
    let open = |dir: &Path| {
        let store = ChunkStore::new(
            Arc::new(ObjectBlobs::new(url.open().unwrap())),
            RetryPolicy::fast(),
        );
        Storage::open(dir, store, StorageConfig::default()).unwrap()
    };
    let first = tempfile::tempdir().unwrap();
    let data = pattern(42, 3 * CS as usize);
    {
        let s = open(first.path());
        let mut v = s.create_volume("files", 4 * CS, CS).unwrap();
        v.write(CS, &data).unwrap();
        v.sync().unwrap();
    }
    assert!(objects.path().join("chunks").is_dir());
    assert!(objects.path().join("maps/files/head").is_dir());
    let empty = tempfile::tempdir().unwrap();
    let s = open(empty.path());
    let v = s.recover_volume("files").unwrap();
    let mut buf = vec![0u8; data.len()];
    v.read(CS, &mut buf).unwrap();
    assert_eq!(buf, data);
}

#[derive(Debug, Clone)]
enum CrashOp {
    Write(u64, Vec<u8>),
    Punch(u64, u64),
    Flush,
    Checkpoint,
    /// Drop everything without flushing and open it again.
    Crash,
}

fn crash_op(size: u64) -> impl Strategy<Value = CrashOp> {
    let range = (0..size).prop_flat_map(move |off| (Just(off), 0..=(size - off).min(3 * CS)));
    prop_oneof![
        4 => range.clone().prop_flat_map(|(off, len)| {
            (Just(off), proptest::collection::vec(any::<u8>(), len as usize))
        }).prop_map(|(o, d)| CrashOp::Write(o, d)),
        2 => range.prop_map(|(o, l)| CrashOp::Punch(o, l)),
        2 => Just(CrashOp::Flush),
        1 => Just(CrashOp::Checkpoint),
        2 => Just(CrashOp::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A crash loses exactly the writes since the last flush (checkpoint
    /// flushes too), never part of a flushed one.
    #[test]
    fn a_crash_loses_only_unflushed_writes(ops in proptest::collection::vec(crash_op(8 * CS), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = mem_blobs();
        let mut s = storage(dir.path(), blobs.clone());
        let mut v = s.create_volume("k", 8 * CS, CS).unwrap();
        let mut model = vec![0u8; (8 * CS) as usize];
        let mut durable = model.clone();
        for op in ops {
            match op {
                CrashOp::Write(o, d) => {
                    v.write(o, &d).unwrap();
                    model[o as usize..o as usize + d.len()].copy_from_slice(&d);
                }
                CrashOp::Punch(o, l) => {
                    v.punch_hole(o, l).unwrap();
                    model[o as usize..(o + l) as usize].fill(0);
                }
                CrashOp::Flush => {
                    v.flush().unwrap();
                    durable = model.clone();
                }
                CrashOp::Checkpoint => {
                    v.checkpoint().unwrap();
                    durable = model.clone();
                }
                CrashOp::Crash => {
                    drop(v);
                    drop(s);
                    s = storage(dir.path(), blobs.clone());
                    v = s.open_volume("k").unwrap();
                    model = durable.clone();
                    prop_assert!(read_all(&v) == model);
                }
            }
            let mapped = v.allocated_chunks().unwrap();
            let want = model.chunks(CS as usize).filter(|c| c.iter().any(|&b| b != 0)).count() as u64;
            prop_assert_eq!(mapped, want);
        }
        prop_assert!(read_all(&v) == model);
    }
}

#[test]
fn small_reads_and_writes_see_the_same_bytes_as_whole_chunk_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    let mut v = s.create_volume("small", 4 * CS, CS).unwrap();
    let data = pattern(3, 4 * CS as usize);
    v.write(0, &data).unwrap();
    v.flush().unwrap();
    // Range reads from the cache, in pieces that straddle chunks.
    let mut got = vec![0u8; data.len()];
    for (i, piece) in got.chunks_mut(1000).enumerate() {
        v.read(i as u64 * 1000, piece).unwrap();
    }
    assert_eq!(got, data);
    // A small write into a flushed chunk keeps the rest of it.
    v.write(CS + 10, b"xyz").unwrap();
    v.flush().unwrap();
    let mut want = data.clone();
    want[CS as usize + 10..CS as usize + 13].copy_from_slice(b"xyz");
    assert_eq!(read_all(&v), want);
    // Zeroing a chunk piece by piece turns it into a hole.
    assert_eq!(v.allocated_chunks().unwrap(), 4);
    v.punch_hole(2 * CS, CS / 2).unwrap();
    v.punch_hole(2 * CS + CS / 2, CS / 2).unwrap();
    v.flush().unwrap();
    assert_eq!(v.allocated_chunks().unwrap(), 3);
}

#[test]
fn delete_volume_frees_its_chunks_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let s = storage(dir.path(), blobs.clone());
    let mut keep = s.create_volume("keep", 4 * CS, CS).unwrap();
    keep.write(0, &pattern(1, CS as usize)).unwrap();
    keep.sync().unwrap();
    let mut gone = s.create_volume("gone", 4 * CS, CS).unwrap();
    gone.write(0, &pattern(2, 2 * CS as usize)).unwrap();
    gone.checkpoint().unwrap();
    gone.write(2 * CS, &pattern(3, CS as usize)).unwrap();
    gone.sync().unwrap();
    drop(gone);
    assert_eq!(
        s.volume_names().unwrap(),
        vec!["gone".to_string(), "keep".to_string()]
    );
    s.delete_volume("gone").unwrap();
    assert_eq!(s.volume_names().unwrap(), vec!["keep".to_string()]);
    assert!(matches!(
        s.open_volume("gone"),
        Err(VolumeError::NoSuchVolume(_))
    ));
    assert!(matches!(
        s.delete_volume("gone"),
        Err(VolumeError::NoSuchVolume(_))
    ));
    let report = s.gc().unwrap();
    assert_eq!(report.deleted_objects, 3);
    // Nothing of it is left in the store to recover from.
    let empty = tempfile::tempdir().unwrap();
    let s2 = storage(empty.path(), blobs);
    assert!(matches!(
        s2.recover_volume("gone"),
        Err(VolumeError::NoSuchVolume(_))
    ));
    assert_eq!(
        read_all(&s2.recover_volume("keep").unwrap())[..CS as usize],
        pattern(1, CS as usize)[..]
    );
    // The name can be used again.
    s.create_volume("gone", 4 * CS, CS).unwrap();
}

/// The runtime's restore: the current state is kept as a checkpoint, then the
/// head goes back to an older one. A GC running meanwhile must see the new
/// checkpoint's chunks, which the head no longer names (they may not even be
/// uploaded yet).
#[test]
fn gc_racing_checkpoint_and_restore_keeps_every_checkpoint_whole() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: u8 = 200;
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    let mut v = s.create_volume("race", 4 * CS, CS).unwrap();
    v.write(0, &pattern(0, 4 * CS as usize)).unwrap();
    let base = v.checkpoint().unwrap();
    let stop = AtomicBool::new(false);
    let kept = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                s.gc().unwrap();
            }
        });
        let mut kept = Vec::new();
        for round in 1..=ROUNDS {
            let data = pattern(round, 4 * CS as usize);
            v.write(0, &data).unwrap();
            v.flush().unwrap();
            kept.push((v.checkpoint().unwrap(), data));
            v.restore(base).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        gc.join().unwrap();
        kept
    });
    for (cp, data) in kept {
        v.restore(cp).unwrap();
        assert_eq!(read_all(&v), data, "checkpoint {cp:?} reads back whole");
    }
}

/// A checkpoint is recorded as "the head as it is" and copied out when the
/// head next changes: a crash on either side of that change keeps it whole.
#[test]
fn a_checkpoint_survives_a_crash_before_and_after_the_head_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let before = pattern(1, 4 * CS as usize);
    let after = pattern(2, 4 * CS as usize);
    let reopen = |from: &Path| {
        let image = tempfile::tempdir().unwrap();
        crash_image(from, image.path());
        image
    };
    let s = storage(dir.path(), blobs.clone());
    let mut v = s.create_volume("h", 4 * CS, CS).unwrap();
    v.write(0, &before).unwrap();
    let first = v.checkpoint().unwrap();
    let second = v.checkpoint().unwrap();
    assert_ne!(first, second);
    // Crash while both are still the head.
    let image1 = reopen(dir.path());
    v.write(0, &after).unwrap();
    v.flush().unwrap();
    // Crash after the head moved on.
    let image2 = reopen(dir.path());
    for image in [&image1, &image2] {
        let s = storage(image.path(), blobs.clone());
        let mut v = s.open_volume("h").unwrap();
        assert_eq!(v.checkpoints().unwrap(), vec![first, second]);
        for cp in [first, second] {
            v.restore(cp).unwrap();
            assert_eq!(
                read_all(&v),
                before,
                "{cp:?} holds what was written before it"
            );
        }
    }
    // Deleting one never frozen, then the other after it was.
    v.delete_checkpoint(second).unwrap();
    assert_eq!(v.checkpoints().unwrap(), vec![first]);
    let third = v.checkpoint().unwrap();
    v.delete_checkpoint(third).unwrap();
    v.restore(first).unwrap();
    assert_eq!(read_all(&v), before);
    v.delete_checkpoint(first).unwrap();
    assert!(v.checkpoints().unwrap().is_empty());
    assert!(matches!(
        v.delete_checkpoint(first),
        Err(VolumeError::NoSuchCheckpoint { .. })
    ));
}

#[derive(Debug, Clone)]
enum GcRaceOp {
    /// Whole chunk `idx` gets content `seed` (0 = zeros, a hole).
    Write(u64, u8),
    Flush,
    Checkpoint,
    /// As the runtime restores: a safety checkpoint, then back to an older one.
    Restore(usize),
    Fork(usize),
    DeleteCheckpoint(usize),
    DeleteFork(usize),
    Sync,
}

fn gc_race_op() -> impl Strategy<Value = GcRaceOp> {
    prop_oneof![
        6 => (0..6u64, 0..4u8).prop_map(|(i, s)| GcRaceOp::Write(i, s)),
        2 => Just(GcRaceOp::Flush),
        3 => Just(GcRaceOp::Checkpoint),
        2 => (0usize..8).prop_map(GcRaceOp::Restore),
        1 => (0usize..8).prop_map(GcRaceOp::Fork),
        1 => (0usize..8).prop_map(GcRaceOp::DeleteCheckpoint),
        1 => (0usize..8).prop_map(GcRaceOp::DeleteFork),
        1 => Just(GcRaceOp::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// GC runs without pause while a volume is written, checkpointed,
    /// restored and forked, and checkpoints and forks are deleted: nothing
    /// still named may be lost. The cache is tiny, so reads go to the object
    /// store and a chunk deleted there too early shows.
    #[test]
    fn gc_running_all_along_loses_nothing_still_named(
        ops in proptest::collection::vec(gc_race_op(), 1..60)
    ) {
        use std::sync::atomic::{AtomicBool, Ordering};
        const CHUNKS: u64 = 6;
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { cache_budget: 2 * CS, ..StorageConfig::default() };
        let store = ChunkStore::new(mem_blobs(), RetryPolicy::fast());
        let s = Storage::open(dir.path(), store, config).unwrap();
        let mut v = s.create_volume("main", CHUNKS * CS, CS).unwrap();
        let mut model = vec![0u8; (CHUNKS * CS) as usize];
        let mut checkpoints: Vec<(CheckpointId, Vec<u8>)> = Vec::new();
        let mut forks: Vec<(String, Vec<u8>)> = Vec::new();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<(), TestCaseError> {
            let gc = scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    s.gc().unwrap();
                }
            });
            let pick = |n: usize, i: usize| (n > 0).then(|| i % n);
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    GcRaceOp::Write(idx, seed) => {
                        // Seeds repeat, so chunks freed earlier come back.
                        let data = if seed == 0 { vec![0u8; CS as usize] } else { pattern(seed, CS as usize) };
                        v.write(idx * CS, &data).unwrap();
                        model[(idx * CS) as usize..((idx + 1) * CS) as usize].copy_from_slice(&data);
                    }
                    GcRaceOp::Flush => v.flush().unwrap(),
                    GcRaceOp::Sync => v.sync().unwrap(),
                    GcRaceOp::Checkpoint => {
                        checkpoints.push((v.checkpoint().unwrap(), model.clone()));
                    }
                    GcRaceOp::Restore(i) => {
                        if let Some(i) = pick(checkpoints.len(), i) {
                            let (target, content) = checkpoints[i].clone();
                            checkpoints.push((v.checkpoint().unwrap(), model.clone()));
                            v.restore(target).unwrap();
                            model = content;
                        }
                    }
                    GcRaceOp::Fork(i) => {
                        if let Some(i) = pick(checkpoints.len(), i) {
                            let name = format!("fork{step}");
                            v.clone_from_checkpoint(checkpoints[i].0, &name).unwrap();
                            forks.push((name, checkpoints[i].1.clone()));
                        }
                    }
                    GcRaceOp::DeleteCheckpoint(i) => {
                        if let Some(i) = pick(checkpoints.len(), i) {
                            let (id, _) = checkpoints.remove(i);
                            v.delete_checkpoint(id).unwrap();
                        }
                    }
                    GcRaceOp::DeleteFork(i) => {
                        if let Some(i) = pick(forks.len(), i) {
                            let (name, _) = forks.remove(i);
                            s.delete_volume(&name).unwrap();
                        }
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            gc.join().unwrap();
            Ok(())
        })?;
        s.gc().unwrap();
        prop_assert!(read_all(&v) == model, "the head");
        for (name, content) in &forks {
            let f = s.open_volume(name).unwrap();
            prop_assert!(&read_all(&f) == content, "fork {}", name);
        }
        for (id, content) in checkpoints {
            v.restore(id).unwrap();
            prop_assert!(read_all(&v) == content, "checkpoint {:?}", id);
        }
    }
}

#[test]
fn checkpoint_states_tell_which_checkpoints_the_object_store_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let s = storage(dir.path(), blobs.clone());
    let mut v = s.create_volume("s", 4 * CS, CS).unwrap();
    v.write(0, &pattern(1, CS as usize)).unwrap();
    let first = v.checkpoint().unwrap();
    assert_eq!(v.checkpoint_states().unwrap(), vec![(first, false)]);
    v.sync().unwrap();
    assert_eq!(v.checkpoint_states().unwrap(), vec![(first, true)]);
    // One frozen by the head's next change, one still the head.
    v.write(CS, &pattern(2, CS as usize)).unwrap();
    let second = v.checkpoint().unwrap();
    v.write(2 * CS, &pattern(3, CS as usize)).unwrap();
    let third = v.checkpoint().unwrap();
    assert_eq!(
        v.checkpoint_states().unwrap(),
        vec![(first, true), (second, false), (third, false)]
    );
    // What a host that lost its disk would get back now.
    let empty = tempfile::tempdir().unwrap();
    let other = storage(empty.path(), blobs.clone());
    assert_eq!(
        other.recover_volume("s").unwrap().checkpoints().unwrap(),
        vec![first]
    );
    drop(other);
    v.sync().unwrap();
    assert_eq!(
        v.checkpoint_states().unwrap(),
        vec![(first, true), (second, true), (third, true)]
    );
}

/// A local disk that cannot take a cache copy (full, failing) still serves
/// reads the object store answers: the box's ext4 must not see a dead disk
/// because a cache fill failed.
#[test]
fn reads_succeed_when_the_cache_cannot_keep_a_copy() {
    let blobs = mem_blobs();
    let first = tempfile::tempdir().unwrap();
    let want = {
        let s = storage(first.path(), blobs.clone());
        let mut v = s.create_volume("r", 16 * CS, CS).unwrap();
        v.write(0, &pattern(3, 6 * CS as usize)).unwrap();
        v.sync().unwrap();
        read_all(&v)
    };
    let empty = tempfile::tempdir().unwrap();
    let s = storage(empty.path(), blobs);
    let v = s.recover_volume("r").unwrap();
    // Nothing can be cached from here on.
    std::fs::remove_dir_all(empty.path().join("cache")).unwrap();
    assert_eq!(read_all(&v), want);
}

/// What the storage reports holding on the local disk follows unflushed
/// writes, dirty and clean chunks; shedding clean chunks loses nothing.
#[test]
fn space_use_follows_writes_and_shedding_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::new(mem_blobs(), RetryPolicy::fast());
    let s = Storage::open(dir.path(), store, StorageConfig::default()).unwrap();
    let mut v = s.create_volume("p", 8 * CS, CS).unwrap();
    let used = || s.space_use().unwrap();
    assert_eq!(used().pending_bytes, 0);
    v.write(0, &[1u8; 10]).unwrap();
    v.write(3 * CS, &[2u8; 10]).unwrap();
    assert_eq!(used().pending_bytes, 2 * CS, "two chunks wait for a flush");
    v.flush().unwrap();
    assert_eq!(used().pending_bytes, 0);
    assert_eq!(used().dirty_bytes, 2 * CS, "flushed chunks are dirty");
    v.sync().unwrap();
    assert_eq!((used().dirty_bytes, used().clean_bytes), (0, 2 * CS));
    assert!(s.shed_clean(u64::MAX).unwrap() >= 2 * CS);
    assert_eq!(used().clean_bytes, 0, "every clean chunk was shed");
    let mut buf = [0u8; 10];
    v.read(3 * CS, &mut buf).unwrap();
    assert_eq!(buf, [2u8; 10], "a shed chunk is fetched again");
    v.write(CS, &[3u8; 10]).unwrap();
    drop(v);
    assert_eq!(used().pending_bytes, 0, "a dropped volume counts nothing");
}

/// Usage counts the disk's distinct chunks and what only checkpoints keep,
/// whether or not the volume is open.
#[test]
fn usage_counts_distinct_chunks_of_the_disk_and_of_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), mem_blobs());
    let mut v = s.create_volume("u", 8 * CS, CS).unwrap();
    let usage = |s: &Storage| s.volume_usage("u").unwrap();
    assert_eq!(
        usage(&s),
        VolumeUsage::default(),
        "an empty disk stores nothing"
    );
    v.write(0, &[1u8; 10]).unwrap();
    v.write(CS, &[1u8; 10]).unwrap();
    v.write(2 * CS, &[2u8; 10]).unwrap();
    v.flush().unwrap();
    assert_eq!(usage(&s).disk_bytes, 2 * CS, "equal chunks are stored once");
    let first = v.checkpoint().unwrap();
    assert_eq!(
        (usage(&s).checkpoint_bytes, usage(&s).checkpoints),
        (0, 1),
        "a checkpoint of the disk as it is keeps nothing more"
    );
    v.write(2 * CS, &[3u8; 10]).unwrap();
    v.flush().unwrap();
    let u = usage(&s);
    assert_eq!((u.disk_bytes, u.checkpoint_bytes), (2 * CS, CS));
    drop(v);
    assert_eq!(usage(&s), u, "a closed volume reports the same");
    let mut v = s.open_volume("u").unwrap();
    v.delete_checkpoint(first).unwrap();
    assert_eq!(usage(&s).checkpoint_bytes, 0);
    assert!(matches!(
        s.volume_usage("nope"),
        Err(VolumeError::NoSuchVolume(_))
    ));
}
