//! Waits for the host to go quiet before a measurement, so that background
//! work an earlier workload left behind (a daemon's uploads to the object
//! store, page-cache writeback, JuiceFS's own flushing) is not charged to the
//! next one.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One measurement window of host CPU use.
const WINDOW: Duration = Duration::from_millis(500);
/// Busy share of all CPUs (iowait counts as busy) below which the host is quiet.
const QUIET_BELOW: f64 = 0.10;
/// Measure anyway after this long, with a warning.
const PATIENCE: Duration = Duration::from_secs(120);

/// Returns once a whole [`WINDOW`] had the host's CPUs under 10 % busy,
/// then writes back the host's dirty pages (a daemon's uploads to a `file://`
/// store leave them to the kernel, whose writeback would otherwise queue
/// ahead of the next measurement's fsyncs).
pub async fn settle() -> Result<()> {
    quiet_cpus().await?;
    tokio::task::spawn_blocking(|| {
        // SAFETY: sync has no arguments and cannot fail.
        unsafe { libc::sync() }
    })
    .await
    .context("sync(2) of the host")?;
    Ok(())
}

async fn quiet_cpus() -> Result<()> {
    let started = Instant::now();
    let mut before = cpu_times()?;
    loop {
        tokio::time::sleep(WINDOW).await;
        let now = cpu_times()?;
        let busy = busy_share(before, now);
        if busy < QUIET_BELOW {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            eprintln!(
                "warning: the host stayed {:.0} % busy for {} s before this workload; measuring anyway",
                busy * 100.0,
                PATIENCE.as_secs()
            );
            return Ok(());
        }
        before = now;
    }
}

/// (busy, total) jiffies of all CPUs since boot.
fn cpu_times() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_cpu_line(&stat).ok_or_else(|| anyhow::anyhow!("/proc/stat has no aggregate cpu line"))
}

fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    let idle = *fields.get(3)?;
    Some((total - idle, total))
}

fn busy_share(before: (u64, u64), now: (u64, u64)) -> f64 {
    let total = now.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    now.0.saturating_sub(before.0) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iowait_counts_as_busy_and_guest_time_is_not_counted_twice() {
        let stat = "cpu  100 0 50 800 40 5 5 0 30 0\ncpu0 50 0 25 400 20 2 3 0 15 0\n";
        assert_eq!(parse_cpu_line(stat), Some((200, 1000)));
        assert_eq!(parse_cpu_line("intr 1 2 3\n"), None);
    }

    #[test]
    fn share_of_a_window() {
        assert_eq!(busy_share((200, 1000), (250, 1500)), 0.1);
        assert_eq!(busy_share((200, 1000), (200, 1000)), 0.0);
    }

    #[test]
    fn this_host_has_an_aggregate_cpu_line() {
        let (busy, total) = cpu_times().expect("reads /proc/stat");
        assert!(busy <= total && total > 0);
    }
}
