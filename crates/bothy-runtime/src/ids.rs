//! Each box's range of host ids.
//!
//! Files on every box's disk are owned by disk ids ([`UID_SHIFT`] + k, the
//! same for every box, so disks, checkpoints and forks are interchangeable).
//! Each box's processes run as its own host ids, `base + k` for box id k,
//! with `base = UID_SHIFT + ID_RANGE * (slot + 1)`; the box's root is an
//! idmapped view of its disk (see [`crate::idmap`]). The slot is a small
//! number kept in the box's directory (`DIR/boxes/<id>/slot`): unique among
//! this daemon's boxes, reused only once the box is destroyed, never one whose
//! range overlaps a range of `/etc/subuid` or `/etc/subgid`. It is host-local
//! (a box brought back on another host gets a new one at its next boot).
//!
//! A box without a slot file was booted by an older build with host ids
//! `UID_SHIFT..` (the "legacy" range, which every such box shares): it keeps
//! them while it runs, and gets a slot the next time it boots.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{fsutil, RuntimeError, ID_RANGE, UID_SHIFT};

/// Name of the file holding a box's slot, in its box dir.
pub(crate) const SLOT_FILE: &str = "slot";

/// Slots above this would run past the 32-bit id space.
pub(crate) const MAX_SLOTS: u32 = 60_000;

/// Ranges of host ids given to host users (`/etc/subuid`, `/etc/subgid`),
/// as (first, count).
pub(crate) type Reserved = Vec<(u64, u64)>;

/// The first host id of a box in `slot`.
pub(crate) fn base(slot: u32) -> u32 {
    UID_SHIFT + ID_RANGE * (slot + 1)
}

/// The ranges of `name:first:count` lines (subuid(5)); other lines are skipped.
pub(crate) fn parse_subids(text: &str) -> Reserved {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let _name = fields.next()?;
            let first = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            Some((first, count))
        })
        .collect()
}

/// The ranges of the host's `/etc/subuid` and `/etc/subgid` (missing files
/// reserve nothing).
pub(crate) fn host_reserved() -> Reserved {
    ["/etc/subuid", "/etc/subgid"]
        .iter()
        .flat_map(|f| parse_subids(&std::fs::read_to_string(f).unwrap_or_default()))
        .collect()
}

fn overlaps_reserved(slot: u32, reserved: &Reserved) -> bool {
    let (start, end) = (
        u64::from(base(slot)),
        u64::from(base(slot)) + u64::from(ID_RANGE),
    );
    reserved
        .iter()
        .any(|&(first, count)| first < end && first.saturating_add(count) > start)
}

/// The lowest slot not in `used` whose range no host user has.
pub(crate) fn allocate(used: &BTreeSet<u32>, reserved: &Reserved) -> Option<u32> {
    (0..MAX_SLOTS).find(|s| !used.contains(s) && !overlaps_reserved(*s, reserved))
}

/// The slot recorded in a box dir, if any.
pub(crate) fn read_slot(box_dir: &Path) -> Result<Option<u32>, RuntimeError> {
    let path = box_dir.join(SLOT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(slot) if slot < MAX_SLOTS => Ok(Some(slot)),
            _ => Err(RuntimeError::Failed(format!(
                "{} holds no valid id slot: {text:?}",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The slots recorded in every box dir under `boxes`.
pub(crate) fn used_slots(boxes: &Path) -> Result<BTreeSet<u32>, RuntimeError> {
    let mut used = BTreeSet::new();
    let entries = match std::fs::read_dir(boxes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(used),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        // A damaged slot file of another box must not stop this one: its
        // slot is unknown, so that box gets a new one at its next boot.
        if let Ok(Some(slot)) = read_slot(&entry.path()) {
            used.insert(slot);
        }
    }
    Ok(used)
}

/// Records a new slot for the box in `box_dir`, one no other box under
/// `boxes` holds. The caller serializes calls.
pub(crate) fn assign(
    boxes: &Path,
    box_dir: &Path,
    reserved: &Reserved,
) -> Result<u32, RuntimeError> {
    let used = used_slots(boxes)?;
    let slot = allocate(&used, reserved).ok_or_else(|| {
        RuntimeError::Failed(format!(
            "no free range of host ids for another box ({} boxes hold one)",
            used.len()
        ))
    })?;
    fsutil::write_atomic(
        &box_dir.join(SLOT_FILE),
        format!("{slot}\n").as_bytes(),
        0o600,
    )?;
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_after_the_disk_range() {
        assert_eq!(base(0), 165_536);
        assert_eq!(base(1), 231_072);
        assert!(u64::from(base(MAX_SLOTS - 1)) + u64::from(ID_RANGE) < u64::from(u32::MAX));
    }

    #[test]
    fn the_lowest_free_slot_is_taken_and_freed_ones_are_reused() {
        let none = Reserved::new();
        assert_eq!(allocate(&BTreeSet::new(), &none), Some(0));
        assert_eq!(allocate(&BTreeSet::from([0, 1, 3]), &none), Some(2));
        assert_eq!(allocate(&BTreeSet::from([0, 1, 2]), &none), Some(3));
        let full: BTreeSet<u32> = (0..MAX_SLOTS).collect();
        assert_eq!(allocate(&full, &none), None);
    }

    #[test]
    fn ranges_of_host_users_are_skipped() {
        // Debian's useradd gives the first users 100000:65536, 165536:65536, ...
        let reserved = parse_subids("alice:100000:65536\nbob:165536:65536\n# x\nbad:line\n");
        assert_eq!(reserved, vec![(100_000, 65_536), (165_536, 65_536)]);
        assert_eq!(allocate(&BTreeSet::new(), &reserved), Some(1));
        // A range that only touches a slot's last id takes that slot.
        let partial = vec![(u64::from(base(1)) + 65_535, 1)];
        assert_eq!(allocate(&BTreeSet::from([0]), &partial), Some(2));
        // One that ends right before it does not.
        let before = vec![(u64::from(base(1)) - 10, 10)];
        assert_eq!(allocate(&BTreeSet::from([0]), &before), Some(1));
    }

    #[test]
    fn slots_are_recorded_in_box_dirs_and_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boxes = dir.path();
        let mut got = Vec::new();
        for name in ["b1", "b2", "b3"] {
            let box_dir = boxes.join(name);
            std::fs::create_dir(&box_dir).expect("mkdir");
            assert_eq!(read_slot(&box_dir).expect("read"), None);
            got.push(assign(boxes, &box_dir, &Reserved::new()).expect("assign"));
            assert_eq!(read_slot(&box_dir).expect("read"), got.last().copied());
        }
        assert_eq!(got, vec![0, 1, 2]);
        // Destroying a box frees its slot for the next one.
        std::fs::remove_dir_all(boxes.join("b2")).expect("rm");
        let b4 = boxes.join("b4");
        std::fs::create_dir(&b4).expect("mkdir");
        assert_eq!(assign(boxes, &b4, &Reserved::new()).expect("assign"), 1);
        // A damaged file is an error for its own box only.
        std::fs::write(boxes.join("b1").join(SLOT_FILE), "x").expect("write");
        assert!(read_slot(&boxes.join("b1")).is_err());
        assert_eq!(used_slots(boxes).expect("used"), BTreeSet::from([1, 2]));
    }
}
