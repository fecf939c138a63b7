//! Same-page merging for what the runtime starts beside each box.
//!
//! pasta zero-fills about 28 MiB of static packet buffers at start, whatever
//! the traffic (see the network module): private memory every running box
//! pays, nearly all of it zeros. The kernel's same-page merging (KSM) with
//! `use_zero_pages` maps such pages back to the kernel's zero page: pasta is
//! started opted in (`PR_SET_MEMORY_MERGE`, kept across its exec and fork),
//! and `ksmd` scans only the memory of processes that opted in, so nothing
//! else on the host changes. A page pasta writes again is copied on write.
//!
//! Merging happens in the background: a new box's pasta shrinks within
//! seconds (ksmd scans 100 pages every 20 ms by default).
//!
//! Why this is safe to share: with `use_zero_pages` the pages of the boxes'
//! pastas are merged with the zero page, not with each other's content;
//! a non-zero page equal in two pastas could still be merged, which is the
//! classic KSM timing channel, between two processes that only hold frames
//! in flight. The box never maps pasta's memory.

use std::path::Path;

const KSM: &str = "/sys/kernel/mm/ksm";
/// `prctl(PR_SET_MEMORY_MERGE, 1)`: Linux 6.4 and later.
const PR_SET_MEMORY_MERGE: libc::c_int = 67;

/// Makes ksmd run and merge zero pages with the kernel's zero page. A host
/// whose administrator runs KSM already keeps its settings but for
/// `use_zero_pages`. Best effort: without it boxes only cost more memory.
pub(crate) fn start_merging() {
    let dir = Path::new(KSM);
    if !dir.exists() {
        tracing::info!("this kernel has no KSM; each box's pasta keeps its zeroed buffers");
        return;
    }
    for (name, value) in [("use_zero_pages", "1"), ("run", "1")] {
        let file = dir.join(name);
        let now = std::fs::read_to_string(&file).unwrap_or_default();
        if now.trim() == value {
            continue;
        }
        match std::fs::write(&file, value) {
            Ok(()) => tracing::info!("set {} to {value}", file.display()),
            Err(e) => tracing::warn!(
                "cannot set {} to {value}; each box's pasta keeps its zeroed buffers: {e}",
                file.display()
            ),
        }
    }
}

/// Starts `cmd`'s process opted in to merging (a kernel without it just
/// runs it as it is).
pub(crate) fn opt_in(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own
    // memory-management flags; its failure is ignored on purpose.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
            Ok(())
        });
    }
}
