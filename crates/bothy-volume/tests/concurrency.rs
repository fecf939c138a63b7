//! What runs beside what: a volume that never stops writing beside the
//! background uploader, a barrier stuck on the object store beside other
//! volumes, and GC deleting objects beside uploads of the same chunks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::{FaultPlan, FaultyBlobs};
use bothy_volume::VolumeError;
use common::*;

/// A box that writes and fsyncs without ever pausing (a database, a log)
/// never gives the uploader a quiet spell: its flushed writes must still
/// reach the object store, and a head snapshot naming them, within a bounded
/// time, so that they come back from the store alone.
#[test]
fn a_volume_written_without_pause_still_reaches_the_object_store() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const CHUNKS: u64 = 16;
    // Step k writes its own content to chunk 1 + k % 15; chunk 0 is written
    // once before.
    let step = |k: u64| {
        (
            1 + k % (CHUNKS - 1),
            pattern((k % 250) as u8 + 1, CS as usize),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let s = storage(dir.path(), blobs.clone());
    let mut v = s.create_volume("busy", CHUNKS * CS, CS).unwrap();
    let first = pattern(200, CS as usize);
    v.write(0, &first).unwrap();
    v.flush().unwrap();
    let stop = AtomicBool::new(false);
    let steps = AtomicU64::new(0);
    let recovered = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let (idx, data) = step(k);
                v.write(idx * CS, &data).unwrap();
                v.flush().unwrap();
                k += 1;
                steps.store(k, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Stops the writer however this thread leaves the scope.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stop = Stop(&stop);
        let deadline = Instant::now() + Duration::from_secs(30);
        let recovered = loop {
            let empty = tempfile::tempdir().unwrap();
            let fresh = storage(empty.path(), blobs.clone());
            match fresh.recover_volume("busy") {
                Ok(r)
                    if read_all(&r)[..CS as usize] == first[..]
                        && steps.load(Ordering::SeqCst) > 0 =>
                {
                    break read_all(&r);
                }
                Ok(_) | Err(VolumeError::NoSuchVolume(_)) => {}
                Err(e) => panic!("recovering a shipped volume failed: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "after {} flushes in a row, the object store still cannot bring the volume back",
                steps.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        drop(stop);
        writer.join().unwrap();
        recovered
    });
    // The recovered volume is the volume as it was after some step the
    // writer made while it never paused.
    let done = steps.load(Ordering::SeqCst);
    let mut model = vec![0u8; (CHUNKS * CS) as usize];
    model[..CS as usize].copy_from_slice(&first);
    let mut matched = None;
    for k in 0..done {
        let (idx, data) = step(k);
        model[(idx * CS) as usize..((idx + 1) * CS) as usize].copy_from_slice(&data);
        if recovered == model {
            matched = Some(k);
        }
    }
    assert!(
        matched.is_some(),
        "the recovered volume is the state after one of the {done} flushes"
    );
}

/// One box's barrier stuck on an object store that does not answer stalls
/// no other box: another volume's write and flush, a clone, a delete, a GC
/// and an open all finish while the barrier still waits.
#[test]
fn a_barrier_stuck_on_the_store_stalls_no_other_volume() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBlobs::new(mem_blobs(), FaultPlan::default()));
    let s = storage(dir.path(), faulty.clone());
    let mut a = s.create_volume("a", 8 * CS, CS).unwrap();
    // Two chunks for GC to delete meanwhile.
    a.write(0, &pattern(1, 2 * CS as usize)).unwrap();
    a.sync().unwrap();
    a.write(0, &pattern(2, 2 * CS as usize)).unwrap();
    a.sync().unwrap();
    let mut b = s.create_volume("b", 8 * CS, CS).unwrap();
    b.write(0, &pattern(3, CS as usize)).unwrap();
    let cp = b.checkpoint().unwrap();
    b.sync().unwrap();
    let mut c = s.create_volume("c", 8 * CS, CS).unwrap();
    c.write(0, &pattern(4, CS as usize)).unwrap();
    c.sync().unwrap();
    drop(c);
    // Everything is uploaded: a's next barrier waits in the put of its map
    // snapshot, holding whatever a barrier holds there.
    faulty.set_plan(FaultPlan {
        hold_puts: true,
        ..Default::default()
    });
    std::thread::scope(|scope| {
        let release = Release(&faulty);
        let stuck = scope.spawn(|| a.sync());
        assert!(
            eventually(Duration::from_secs(60), || faulty.held() >= 1),
            "a's barrier reaches the store"
        );
        let others = scope.spawn(|| -> Result<_, VolumeError> {
            b.write(CS, &pattern(5, CS as usize))?;
            b.flush()?;
            b.clone_from_checkpoint(cp, "b2")?;
            s.delete_volume("c")?;
            let report = s.gc()?;
            // Again, now that the background uploader is stuck in a put of
            // b's chunk too.
            b.write(2 * CS, &pattern(6, CS as usize))?;
            b.flush()?;
            s.open_volume("b2")?;
            Ok(report)
        });
        // The deadline only turns a hang into a failure: while the store
        // holds every put, a's barrier cannot end.
        let finished = eventually(Duration::from_secs(60), || others.is_finished());
        assert!(!stuck.is_finished(), "a's barrier is still waiting");
        assert!(
            finished,
            "flush, clone, delete, GC and open of other volumes wait for a's barrier"
        );
        drop(release);
        let report = others.join().unwrap().unwrap();
        assert_eq!(
            report.deleted_objects, 3,
            "a's two overwritten chunks and c's one"
        );
        stuck.join().unwrap().unwrap();
    });
    assert_eq!(s.volume_names().unwrap(), vec!["a", "b", "b2"]);
}

/// GC deletes a batch's objects after it lets go of the fence. A flush that
/// names one of those chunks again while its delete is under way must get
/// it uploaded after the delete lands: an upload before it would find the
/// object still there and skip, and the delete would then remove the only
/// copy.
#[test]
fn a_chunk_named_again_while_gc_deletes_it_is_uploaded_after_the_delete() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let faulty = Arc::new(FaultyBlobs::new(blobs.clone(), FaultPlan::default()));
    let s = storage(dir.path(), faulty.clone());
    let mut v = s.create_volume("t", 4 * CS, CS).unwrap();
    let data = pattern(3, CS as usize);
    v.write(0, &data).unwrap();
    v.sync().unwrap();
    v.punch_hole(0, CS).unwrap();
    v.sync().unwrap();
    assert_eq!(s.cached_bytes().unwrap(), CS, "dead, clean and cached");
    faulty.set_plan(FaultPlan {
        hold_deletes: true,
        ..Default::default()
    });
    std::thread::scope(|scope| {
        let release = Release(&faulty);
        let gc = scope.spawn(|| s.gc());
        // GC dropped the chunk's cache row and is deleting its object.
        assert!(
            eventually(Duration::from_secs(60), || {
                faulty.held() >= 1 && s.cached_bytes().unwrap() == 0
            }),
            "GC deletes the dead chunk"
        );
        let flush = scope.spawn(|| {
            v.write(CS, &data)?;
            v.flush()
        });
        // The deadline only turns a hang into a failure.
        assert!(
            eventually(Duration::from_secs(60), || flush.is_finished()),
            "a flush waits for GC's deletes"
        );
        flush.join().unwrap().unwrap();
        s.upload_pending().unwrap();
        assert_eq!(
            s.dirty_chunks().unwrap(),
            1,
            "the chunk waits for its delete to land"
        );
        drop(release);
        assert_eq!(gc.join().unwrap().unwrap().deleted_objects, 1);
    });
    v.sync().unwrap();
    drop(v);
    drop(s);
    assert_eq!(recovered_chunk(blobs, "t", 1), data);
}

/// An upload whose put lands before GC finds the chunk dead, and whose
/// answer comes after GC deleted the object and a flush named the chunk
/// again, must not mark the new cache row clean: nothing would upload the
/// chunk again, and the store has lost it.
#[test]
fn a_put_answered_after_gc_freed_its_chunk_marks_nothing_clean() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = mem_blobs();
    let faulty = Arc::new(FaultyBlobs::new(blobs.clone(), FaultPlan::default()));
    let s = storage(dir.path(), faulty.clone());
    let mut v = s.create_volume("v", 4 * CS, CS).unwrap();
    let mut other = s.create_volume("other", 4 * CS, CS).unwrap();
    let data = pattern(5, CS as usize);
    std::thread::scope(|scope| {
        // The background uploader stays off: only the barrier below uploads.
        let pause = s.pause_uploads();
        // A chunk flushed, then dead before any upload: dirty, named by no
        // map.
        v.write(0, &data).unwrap();
        v.flush().unwrap();
        v.punch_hole(0, CS).unwrap();
        v.flush().unwrap();
        faulty.set_plan(FaultPlan {
            hold_put_answers: true,
            ..Default::default()
        });
        let release = Release(&faulty);
        // Another volume's barrier uploads every dirty chunk: its put of
        // the dead chunk is stored, and the answer waits.
        let barrier = scope.spawn(|| other.sync());
        assert!(
            eventually(Duration::from_secs(60), || faulty.held() >= 1),
            "the put is stored and its answer held"
        );
        let report = s.gc().unwrap();
        assert_eq!(report.deleted_objects, 1, "GC deletes the dead chunk");
        v.write(CS, &data).unwrap();
        v.flush().unwrap();
        drop(release);
        barrier.join().unwrap().unwrap();
        drop(pause);
    });
    v.sync().unwrap();
    drop(v);
    drop(other);
    drop(s);
    assert_eq!(recovered_chunk(blobs, "v", 1), data);
}
