//! The daemon's heap. Its I/O path allocates and frees chunk buffers (256 KiB)
//! and FUSE request buffers (up to 16 MiB) on many threads, and glibc malloc
//! keeps what is freed: after a few GiB of box writes the daemon held hundreds
//! of MiB of free heap, and every fork it makes (crun, mount, losetup) copied
//! the page tables of all of it. Box creation went from ~80 ms to ~570 ms.

use std::time::Duration;

/// How often free heap goes back to the kernel. A trim walks the arenas and
/// costs well under a millisecond when there is little to give back.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Allocations this large are mmapped, so freeing them unmaps them at once.
/// glibc would otherwise raise its threshold to the largest block freed so
/// far, and FUSE buffers would then stay in the heap.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;
/// Fewer arenas hold less free memory between trims.
const ARENA_MAX: libc::c_int = 4;

/// Sets the malloc policy above and starts a thread that trims the heap.
pub fn keep_heap_small() {
    // SAFETY: mallopt changes allocator parameters; it is called before the
    // daemon starts its other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
    let spawned = std::thread::Builder::new()
        .name("bothy-heap-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim only returns free pages to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(%e, "cannot start the heap trimmer; memory freed by the daemon stays in its heap");
    }
}
