//! Harness of the black-box tests: a real `bothy daemon` on a free loopback port
//! with a throwaway data dir, the real CLI pointed at it, a tiny HTTP client, and
//! checks that nothing (mounts, loop devices, cgroups, processes) outlives a daemon.
//!
//! Every test binary compiles this module on its own and uses a different part
//! of it, hence the allowance for dead code and unused re-exports.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod daemon;
pub mod host;
pub mod http;
pub mod slow_proxy;
pub mod storage;
pub mod wait;

pub use cli::{CliRun, Output};
pub use daemon::{Daemon, Shared};
pub use http::Response;
pub use wait::wait_until;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible and
/// the data covers every byte value.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of `data` in hex, computed by the host's coreutils (the same tool the
/// box runs), so the comparison needs no hashing crate.
pub fn host_sha256(data: &[u8]) -> String {
    let out = CliRun::program("sha256sum", &[])
        .stdin(data.to_vec())
        .run()
        .assert_success("sha256sum on the host");
    first_word(&out.stdout_str())
}

pub fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_string()
}

/// A name that no earlier run left behind, for boxes created by a test.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id() & 0xfff,
        nanos & 0xfffff
    )
}
