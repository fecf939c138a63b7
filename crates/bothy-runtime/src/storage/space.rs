//! The space guard: a host disk that fills up reaches a box as ENOSPC at
//! write(2), like a full disk of its own, never as an I/O error.
//!
//! A box's ext4 believes its disk is as big as its volume, but the volume's
//! chunks live on the host: in the cache under the data dir, and in the
//! object store when that is a local directory. Were the host disk to fill
//! first, the FUSE server could not keep a write the loop device had
//! already accepted; ext4 would see an I/O error, abort its journal and go
//! read-only. So, twice a second, the guard works out how much the boxes may
//! still add on the host ([`room`]) and hides the rest of each box's free
//! space behind the kernel's `reserved_clusters` knob of its ext4
//! (`/sys/fs/ext4/<dev>/`): clusters only the filesystem's own metadata may
//! use (so deleting still works on a full disk), set in memory, never
//! written to the superblock. Box root cannot take them (it has no host
//! `CAP_SYS_RESOURCE`) and cannot reach the knob (host sysfs).
//!
//! What the host keeps back: [`host_reserve`] for the daemon's database,
//! uploads and writes already in flight; writes the boxes made that have not
//! reached the host yet (ext4's delayed allocations, volumes' unflushed
//! writes); and, when the object store is on the same disk, a second copy of
//! every chunk not uploaded yet. Clean cached chunks count as free: the
//! guard sheds them when the disk runs short. Deleted files give their
//! chunks back (box disks are mounted with `discard`), and the guard starts
//! a collection while room is short so that they are freed.
//!
//! Every box sees the whole room: several boxes filling the disk within the
//! same half second can overshoot it by what they write in that time, which
//! the reserve absorbs, and a flush that still finds the disk full waits for
//! room briefly before it fails (see `bothy_volume::Volume::flush`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_volume::SpaceUse;

use super::stack::Stack;

/// How often the guard looks.
const TICK: Duration = Duration::from_millis(500);
/// How often a collection may start while room is short.
const GC_WHILE_SHORT: Duration = Duration::from_secs(5);

const MIB: u64 = 1 << 20;
/// Room below which the guard collects garbage (deleted files free nothing
/// until then).
const SHORT_OF_ROOM: u64 = 256 * MIB;
/// Changes of a box's reserve smaller than this are left for later.
const KNOB_SLACK: u64 = 4 * MIB;

/// What the host keeps back from boxes on a filesystem of `size` bytes.
pub fn host_reserve(size: u64) -> u64 {
    (size / 50).clamp(128 * MIB, 2048 * MIB)
}

/// A host filesystem, as `statvfs` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFs {
    /// Tells filesystems apart (the cache's and a local store's may be one).
    pub id: u64,
    pub size: u64,
    /// Free bytes an unprivileged writer may use.
    pub avail: u64,
}

/// Bytes the boxes may still add on the host: the cache's filesystem
/// (`cache`) and a local object store's (`store`), given what the storage
/// holds (`held`) and what boxes wrote that has not reached the storage yet
/// (`in_flight`).
pub fn room(cache: HostFs, store: Option<HostFs>, held: SpaceUse, in_flight: u64) -> u64 {
    let coming = held.pending_bytes.saturating_add(in_flight);
    let shared = store.is_some_and(|s| s.id == cache.id);
    // Every chunk not uploaded yet needs a copy in a local store.
    let store_copies = if shared { held.dirty_bytes } else { 0 };
    let cache_room = cache
        .avail
        .saturating_add(held.clean_bytes)
        .saturating_sub(host_reserve(cache.size))
        .saturating_sub(coming)
        .saturating_sub(store_copies);
    match store {
        Some(s) if !shared => cache_room.min(
            s.avail
                .saturating_sub(host_reserve(s.size))
                .saturating_sub(coming)
                .saturating_sub(held.dirty_bytes),
        ),
        _ => cache_room,
    }
}

/// A box's ext4, as `statvfs` on its mount and its sysfs directory tell it
/// (counts in blocks; no bigalloc, so a cluster is a block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxFs {
    pub block: u64,
    pub blocks: u64,
    /// Free blocks less delayed allocations.
    pub bfree: u64,
    /// What an unprivileged writer may still allocate.
    pub bavail: u64,
    /// `reserved_clusters` now.
    pub reserved: u64,
}

/// The `reserved_clusters` the kernel sets at mount (and the least the guard
/// sets: ext4 needs it for metadata on a full filesystem).
pub fn kernel_default_reserve(blocks: u64) -> u64 {
    (blocks / 50).min(4096)
}

/// The `reserved_clusters` that leaves a box `room` bytes to allocate.
pub fn reserved_for(fs: BoxFs, room: u64) -> u64 {
    // bavail = bfree - (root's reserved blocks + reserved_clusters), or 0;
    // mkfs gives box disks no root reserve, and when bavail is 0 assuming
    // none only hides a little more.
    let root_reserve = if fs.bavail > 0 {
        fs.bfree.saturating_sub(fs.bavail + fs.reserved)
    } else {
        0
    };
    let want = room / fs.block.max(1);
    fs.bfree
        .saturating_sub(root_reserve)
        .saturating_sub(want)
        .max(kernel_default_reserve(fs.blocks))
        .min(fs.blocks.saturating_sub(1))
}

/// Where the storage keeps bytes on the host.
pub struct Places {
    pub cache: PathBuf,
    /// A `file://` object store's directory.
    pub store: Option<PathBuf>,
}

/// Runs the guard until the task is dropped.
pub async fn guard(stack: Arc<Stack>, places: Places) {
    let collecting = Arc::new(AtomicBool::new(false));
    let mut last_gc: Option<Instant> = None;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        ticks.tick().await;
        let disks = stack.mounted_disks();
        if disks.is_empty() {
            continue;
        }
        let st = Arc::clone(&stack);
        let cache = places.cache.clone();
        let store = places.store.clone();
        let looked = tokio::task::spawn_blocking(move || look(&st, &cache, store.as_deref()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let short = match looked {
            Ok(room) => {
                let st = Arc::clone(&stack);
                let set = tokio::task::spawn_blocking(move || limit_boxes(&st, room)).await;
                if let Ok(Err(e)) = set {
                    if !warned {
                        tracing::warn!(error = %e, "cannot limit boxes to the host's free space");
                        warned = true;
                    }
                }
                room < SHORT_OF_ROOM
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot tell the host's free space");
                    warned = true;
                }
                false
            }
        };
        if short
            && !collecting.load(Ordering::SeqCst)
            && last_gc.is_none_or(|t| t.elapsed() >= GC_WHILE_SHORT)
        {
            last_gc = Some(Instant::now());
            collecting.store(true, Ordering::SeqCst);
            let st = Arc::clone(&stack);
            let flag = Arc::clone(&collecting);
            tokio::spawn(async move {
                match st.gc().await {
                    Ok(r) => tracing::info!(
                        deleted_objects = r.deleted_objects,
                        deleted_cached = r.deleted_cached,
                        "collected while the host disk is short of room"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "collection while the host disk is short of room failed")
                    }
                }
                flag.store(false, Ordering::SeqCst);
            });
        }
    }
}

/// Sheds clean chunks if the cache's disk runs short, then answers the room
/// the boxes have.
fn look(stack: &Stack, cache: &Path, store: Option<&Path>) -> Result<u64, String> {
    let storage = stack.storage();
    let cache_fs = host_fs(cache)?;
    let store_fs = store.map(host_fs).transpose()?;
    let short = (2 * host_reserve(cache_fs.size)).saturating_sub(cache_fs.avail);
    if short > 0 {
        match storage.shed_clean(short) {
            Ok(0) => {}
            Ok(freed) => tracing::info!(
                freed,
                "the host disk is short of room: shed clean cached chunks"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot shed clean cached chunks"),
        }
    }
    let cache_fs = host_fs(cache)?;
    let held = storage.space_use().map_err(|e| e.to_string())?;
    let in_flight: u64 = stack
        .mounted_disks()
        .iter()
        .filter_map(|(dev, mount)| {
            let blocks = read_knob(dev, "delayed_allocation_blocks").ok()?;
            let fs = box_fs(dev, mount).ok()?;
            Some(blocks * fs.block)
        })
        .sum();
    Ok(room(cache_fs, store_fs, held, in_flight))
}

fn limit_boxes(stack: &Stack, room: u64) -> Result<(), String> {
    let mut first_err = None;
    for (dev, mount) in stack.mounted_disks() {
        let set = box_fs(&dev, &mount).and_then(|fs| {
            let want = reserved_for(fs, room);
            // The host's free space moves with every write: a change of
            // less than the slack is not worth a write to sysfs.
            if want.abs_diff(fs.reserved) * fs.block < KNOB_SLACK {
                return Ok(());
            }
            std::fs::write(knob(&dev, "reserved_clusters"), want.to_string())
                .map_err(|e| format!("{dev}: {e}"))
        });
        if let Err(e) = set {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn host_fs(path: &Path) -> Result<HostFs, String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let unit = st.fragment_size() as u64;
    Ok(HostFs {
        id: st.filesystem_id() as u64,
        size: st.blocks() as u64 * unit,
        avail: st.blocks_available() as u64 * unit,
    })
}

/// `statvfs` on a box's ext4 reads counters in memory: no I/O through the
/// disk this process serves.
fn box_fs(dev: &str, mount: &Path) -> Result<BoxFs, String> {
    let st = nix::sys::statvfs::statvfs(mount).map_err(|e| format!("{}: {e}", mount.display()))?;
    Ok(BoxFs {
        block: st.fragment_size() as u64,
        blocks: st.blocks() as u64,
        bfree: st.blocks_free() as u64,
        bavail: st.blocks_available() as u64,
        reserved: read_knob(dev, "reserved_clusters")?,
    })
}

fn knob(dev: &str, name: &str) -> PathBuf {
    let base = Path::new(dev).file_name().unwrap_or_default();
    Path::new("/sys/fs/ext4").join(base).join(name)
}

fn read_knob(dev: &str, name: &str) -> Result<u64, String> {
    let path = knob(dev, name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{}: {text:?}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn fs(id: u64, size: u64, avail: u64) -> HostFs {
        HostFs { id, size, avail }
    }

    #[test]
    fn the_reserve_grows_with_the_disk_within_bounds() {
        assert_eq!(host_reserve(GIB), 128 * MIB);
        assert_eq!(host_reserve(50 * GIB), GIB);
        assert_eq!(host_reserve(10_000 * GIB), 2 * GIB);
    }

    #[test]
    fn clean_chunks_count_as_room_and_dirty_ones_twice_on_a_shared_disk() {
        let cache = fs(1, 10 * GIB, 4 * GIB);
        let held = SpaceUse {
            clean_bytes: GIB,
            dirty_bytes: GIB,
            pending_bytes: 0,
        };
        let reserve = host_reserve(10 * GIB);
        // S3: dirty chunks are already on this disk, nothing more to come.
        assert_eq!(room(cache, None, held, 0), 5 * GIB - reserve);
        // The store on the same disk will take a copy of each dirty chunk.
        let same = Some(fs(1, 10 * GIB, 4 * GIB));
        assert_eq!(room(cache, same, held, 0), 4 * GIB - reserve);
        // A store elsewhere is limited by its own free space.
        let small = Some(fs(2, 10 * GIB, 2 * GIB));
        assert_eq!(room(cache, small, held, 0), GIB - reserve);
    }

    #[test]
    fn a_full_host_leaves_no_room_however_much_is_in_flight() {
        let cache = fs(1, 10 * GIB, 100 * MIB);
        assert_eq!(room(cache, None, SpaceUse::default(), u64::MAX), 0);
    }

    #[test]
    fn a_box_sees_the_room_as_its_free_space() {
        let fs = BoxFs {
            block: 4096,
            blocks: 2_621_440, // 10 GiB
            bfree: 2_000_000,
            bavail: 2_000_000 - 4096,
            reserved: 4096,
        };
        let resv = reserved_for(fs, 100 * MIB);
        assert_eq!(fs.bfree - resv, 100 * MIB / 4096);
        // More room than free space: the kernel's own reserve stays.
        assert_eq!(reserved_for(fs, 100 * GIB), 4096);
        // No room: everything free is hidden.
        assert_eq!(reserved_for(fs, 0), fs.bfree);
    }

    proptest! {
        /// Whatever the numbers, the box never gets more than the room (or
        /// than its own free space), the kernel's minimum reserve stays, and
        /// the knob takes the value (below the block count).
        #[test]
        fn the_reserve_never_grants_more_than_the_room(
            blocks in 1_000u64..100_000_000,
            free_pct in 0u64..=100,
            reserved_now in 0u64..100_000,
            root_pct in 0u64..5,
            room in 0u64..(1u64 << 44),
        ) {
            let bfree = blocks * free_pct / 100;
            let root = blocks * root_pct / 100;
            let bavail = bfree.saturating_sub(root + reserved_now);
            let fs = BoxFs { block: 4096, blocks, bfree, bavail, reserved: reserved_now };
            let resv = reserved_for(fs, room);
            prop_assert!(resv < blocks);
            prop_assert!(resv >= kernel_default_reserve(blocks).min(blocks - 1));
            let granted = bfree.saturating_sub(root + resv);
            prop_assert!(
                granted * 4096 <= room
                    || resv == kernel_default_reserve(blocks)
                    || resv == blocks - 1
            );
        }
    }
}
