//! `bothy bench wake`: the exec that wakes a sleeping bothy. One bothy,
//! whose own idle policy never puts it to sleep, is put to sleep through the
//! API (`POST /v1/sprites/{name}/sleep`), warm (its processes frozen in their
//! cgroup) or cold (stopped, its disk synced and detached); then one exec of
//! `true` is timed from connect to its exit frame: the thaw or the boot plus
//! the exec. `true` on the same bothy while it runs is timed in the same
//! rounds, as the baseline.
//!
//! Each round times one exec on the running bothy (after an untimed one, so
//! the bothy is up), then one wake from each requested sleep, so a host whose
//! load changes during the run changes all the series alike.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_client::{Client, ExecParams};
use serde::Serialize;

use crate::args::BenchWakeArgs;
use crate::boxes::{bench_prefix, create_sleepless_box, destroy_all, run_true};
use crate::stats::{percentile, round3, sorted_ms};
use crate::Daemon;

/// Untimed execs after create, before anything is timed.
const WARM_UP: usize = 3;

/// The JSON line `bench wake` prints for each state it wakes from, and for
/// `running`, the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct WakeLine {
    bench: &'static str,
    state: &'static str,
    runs: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl WakeLine {
    /// Summarises `samples`; `None` when there are none.
    fn from_samples(state: &'static str, samples: &[Duration]) -> Option<Self> {
        let ms = sorted_ms(samples);
        Some(Self {
            bench: "wake",
            state,
            runs: ms.len(),
            p50_ms: round3(percentile(&ms, 50.0)?),
            p90_ms: round3(percentile(&ms, 90.0)?),
            p99_ms: round3(percentile(&ms, 99.0)?),
            min_ms: round3(*ms.first()?),
            max_ms: round3(*ms.last()?),
        })
    }
}

fn state_name(cold: bool) -> &'static str {
    if cold {
        "cold"
    } else {
        "warm"
    }
}

pub async fn wake(daemon: &Daemon<'_>, args: BenchWakeArgs) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-wake", bench_prefix());
    // The daemon's idle pass must not put the bothy to sleep between rounds:
    // only the bench does.
    create_sleepless_box(&client, &name).await?;
    let outcome = wake_rounds(&client, &name, &args).await;
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    for (state, samples) in outcome? {
        let line = WakeLine::from_samples(state, &samples)
            .ok_or_else(|| anyhow::anyhow!("no {state} run finished"))?;
        println!("{}", serde_json::to_string(&line)?);
    }
    cleanup.map(|()| 0)
}

/// The samples of each requested sleep, in order, then of `running`.
async fn wake_rounds(
    client: &Client,
    name: &str,
    args: &BenchWakeArgs,
) -> Result<Vec<(&'static str, Vec<Duration>)>> {
    let params = ExecParams::new(vec!["true".into()]);
    for _ in 0..WARM_UP {
        run_true(client, name, &params).await?;
    }
    let colds = args.state.colds();
    let mut asleep: Vec<Vec<Duration>> = colds
        .iter()
        .map(|_| Vec::with_capacity(args.runs))
        .collect();
    let mut running = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        run_true(client, name, &params).await?;
        let started = Instant::now();
        run_true(client, name, &params).await?;
        running.push(started.elapsed());
        for (&cold, samples) in colds.iter().zip(&mut asleep) {
            samples.push(wake_once(client, name, &params, cold).await?);
        }
    }
    let mut series: Vec<_> = colds.iter().map(|&c| state_name(c)).zip(asleep).collect();
    series.push(("running", running));
    Ok(series)
}

/// Puts the bothy to sleep (untimed), then times the exec that wakes it.
async fn wake_once(
    client: &Client,
    name: &str,
    params: &ExecParams,
    cold: bool,
) -> Result<Duration> {
    let state = state_name(cold);
    let answer = client
        .sleep_sprite(name, cold)
        .await
        .with_context(|| format!("putting {name} to {state} sleep"))?;
    anyhow::ensure!(
        answer["status"] == state,
        "asked {name} to go {state}, the daemon answered {answer}"
    );
    let started = Instant::now();
    run_true(client, name, params)
        .await
        .with_context(|| format!("waking {name} from {state} sleep"))?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_state_with_p99() {
        let s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let line = WakeLine::from_samples("cold", &s).expect("samples");
        assert_eq!(
            (line.runs, line.p50_ms, line.p90_ms, line.p99_ms),
            (100, 50.0, 90.0, 99.0)
        );
        assert_eq!((line.min_ms, line.max_ms), (1.0, 100.0));
        let json = serde_json::to_value(&line).expect("serialisable");
        assert_eq!(
            (&json["bench"], &json["state"]),
            (&"wake".into(), &"cold".into())
        );
        assert!(WakeLine::from_samples("warm", &[]).is_none());
        assert_eq!((state_name(false), state_name(true)), ("warm", "cold"));
    }
}
