//! `bothy bench density`: what a cold bothy costs the host while it sleeps,
//! and how long one of many takes to wake.
//!
//! One warm-up bothy is made, put to cold sleep, woken and destroyed first,
//! so what the daemon sets up once, at its first boot of a box, is not
//! charged to the others. Then N bothies, whose own idle policy never puts
//! them to sleep, are created [`CONCURRENCY`] at a time; each is put to
//! cold sleep through the API (`POST /v1/sprites/{name}/sleep` with
//! `{"cold": true}`: stopped, its disk synced to the object store and
//! detached) as soon as its create returns, so no more than [`CONCURRENCY`]
//! run at once. The daemon's RSS, its storage process's and the host's
//! MemAvailable are read before the first of the N and once all N are cold,
//! each time after the host went quiet and the daemon had one period of its
//! heap trimmer; the difference over N is what one cold bothy costs. Then a
//! sample of them, spread over the set, is woken one at a time by an exec of
//! `true`, timed from connect to its exit frame: the boot plus the exec.
//! Everything the bench made is destroyed at the end, also when a step
//! fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_client::{Client, ExecParams};
use serde::Serialize;

use crate::args::BenchDensityArgs;
use crate::boxes::{bench_prefix, destroy_all, run_true, sleepless};
use crate::procs::{find_daemon_pid, find_storage_pid, kib_to_mib, mem_available_kib, rss_kib};
use crate::stats::{percentile, round1, round3, sorted_ms};
use crate::Daemon;

/// Creates (each followed by its cold sleep) in flight at once.
const CONCURRENCY: usize = 4;
/// Cold bothies woken and timed at the end (all of them when there are fewer).
const WAKE_SAMPLE: usize = 20;
/// Waited before each memory reading, after the host went quiet: longer
/// than the period of the daemon's heap trimmer (10 s), so heap the daemon
/// has freed is back with the kernel and not counted.
const TRIM_PAUSE: Duration = Duration::from_secs(11);

/// The one JSON line `bench density` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct DensityLine {
    bench: &'static str,
    boxes: usize,
    concurrency: usize,
    daemon_pid: i32,
    daemon_rss_before_mib: f64,
    daemon_rss_after_mib: f64,
    daemon_rss_per_cold_box_kib: f64,
    storage_pid: Option<i32>,
    storage_rss_before_mib: Option<f64>,
    storage_rss_after_mib: Option<f64>,
    storage_rss_per_cold_box_kib: Option<f64>,
    host_mem_available_before_mib: f64,
    host_mem_available_after_mib: f64,
    host_mem_per_cold_box_kib: f64,
    create_p50_ms: f64,
    create_p90_ms: f64,
    cold_sleep_p50_ms: f64,
    cold_sleep_p90_ms: f64,
    wake_runs: usize,
    wake_p50_ms: f64,
    wake_p90_ms: f64,
    wake_max_ms: f64,
    /// `true` on a running bothy (the last one woken), the baseline.
    exec_running_p50_ms: f64,
    exec_running_p90_ms: f64,
}

/// Memory as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Snapshot {
    daemon_kib: u64,
    storage_kib: Option<u64>,
    available_kib: u64,
}

/// The times of one bothy made and put to cold sleep.
#[derive(Debug, Clone, Copy)]
struct Made {
    create: Duration,
    sleep: Duration,
}

/// What the daemon's memory grew by from `before_kib` to `after_kib`, shared
/// by `boxes` bothies, in KiB each (negative when it shrank).
fn per_box_kib(before_kib: u64, after_kib: u64, boxes: usize) -> f64 {
    (after_kib as f64 - before_kib as f64) / boxes.max(1) as f64
}

/// `k` indices out of `0..n`, evenly spread (the middle of each of `k` equal
/// stretches), all of them when `n <= k`.
fn spread_sample(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k).map(|i| (2 * i + 1) * n / (2 * k)).collect()
}

pub async fn density(daemon: &Daemon<'_>, args: BenchDensityArgs) -> Result<i32> {
    let client = daemon.client()?;
    let daemon_pid = match args.daemon_pid {
        Some(pid) => pid,
        None => client
            .base_url()
            .port_or_known_default()
            .and_then(find_daemon_pid)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no local daemon process listens for {} (pass --daemon-pid): this bench reads its memory",
                    client.base_url()
                )
            })?,
    };
    let storage_pid = find_storage_pid(&daemon.data_dir);
    if storage_pid.is_none() {
        eprintln!(
            "warning: no storage process listens in {} (BOTHY_DATA_DIR names the daemon's data dir): no storage memory",
            daemon.data_dir.display()
        );
    }
    let prefix = bench_prefix();
    let created = Arc::new(Mutex::new(Vec::new()));
    let outcome = measure(
        &client,
        &prefix,
        args.boxes,
        (daemon_pid, storage_pid),
        &created,
    )
    .await;
    let cleanup = clean_up(&client, &prefix, &created).await;
    let Measured {
        made,
        before,
        after,
        wakes,
        execs,
    } = outcome?;

    let ms = |f: fn(&Made) -> Duration| sorted_ms(&made.iter().map(f).collect::<Vec<_>>());
    let creates = ms(|m| m.create);
    let sleeps = ms(|m| m.sleep);
    let wakes = sorted_ms(&wakes);
    let execs = sorted_ms(&execs);
    let p = |sorted: &[f64], q: f64| {
        percentile(sorted, q)
            .map(round3)
            .ok_or_else(|| anyhow::anyhow!("no run finished"))
    };
    let storage = before.storage_kib.zip(after.storage_kib);
    let line = DensityLine {
        bench: "density",
        boxes: args.boxes,
        concurrency: CONCURRENCY.min(args.boxes),
        daemon_pid,
        daemon_rss_before_mib: round1(kib_to_mib(before.daemon_kib)),
        daemon_rss_after_mib: round1(kib_to_mib(after.daemon_kib)),
        daemon_rss_per_cold_box_kib: round1(per_box_kib(
            before.daemon_kib,
            after.daemon_kib,
            args.boxes,
        )),
        storage_pid: storage.and(storage_pid),
        storage_rss_before_mib: storage.map(|(b, _)| round1(kib_to_mib(b))),
        storage_rss_after_mib: storage.map(|(_, a)| round1(kib_to_mib(a))),
        storage_rss_per_cold_box_kib: storage.map(|(b, a)| round1(per_box_kib(b, a, args.boxes))),
        host_mem_available_before_mib: round1(kib_to_mib(before.available_kib)),
        host_mem_available_after_mib: round1(kib_to_mib(after.available_kib)),
        // What became unavailable: the change the other way round.
        host_mem_per_cold_box_kib: round1(per_box_kib(
            after.available_kib,
            before.available_kib,
            args.boxes,
        )),
        create_p50_ms: p(&creates, 50.0)?,
        create_p90_ms: p(&creates, 90.0)?,
        cold_sleep_p50_ms: p(&sleeps, 50.0)?,
        cold_sleep_p90_ms: p(&sleeps, 90.0)?,
        wake_runs: wakes.len(),
        wake_p50_ms: p(&wakes, 50.0)?,
        wake_p90_ms: p(&wakes, 90.0)?,
        wake_max_ms: p(&wakes, 100.0)?,
        exec_running_p50_ms: p(&execs, 50.0)?,
        exec_running_p90_ms: p(&execs, 90.0)?,
    };
    println!("{}", serde_json::to_string(&line)?);
    cleanup.map(|()| 0)
}

/// Reads memory once the host is quiet and the daemon's heap trimmed. A
/// storage process that is gone (replaced, or stopped) is reported as
/// unknown, with a warning.
async fn snapshot(daemon_pid: i32, storage_pid: Option<i32>) -> Result<Snapshot> {
    crate::settle::settle().await?;
    tokio::time::sleep(TRIM_PAUSE).await;
    let daemon_kib = rss_kib(daemon_pid).context("reading the daemon's memory")?;
    let storage_kib = storage_pid.and_then(|pid| match rss_kib(pid) {
        Ok(kib) => Some(kib),
        Err(e) => {
            eprintln!("warning: the storage process: {e:#}; no storage memory");
            None
        }
    });
    Ok(Snapshot {
        daemon_kib,
        storage_kib,
        available_kib: mem_available_kib()?,
    })
}

/// What [`measure`] found.
struct Measured {
    made: Vec<Made>,
    before: Snapshot,
    after: Snapshot,
    wakes: Vec<Duration>,
    execs: Vec<Duration>,
}

/// Makes, wakes and destroys one warm-up bothy (so what the daemon sets up
/// once, at its first boot of a box, is not charged to the N), reads
/// memory, makes the N cold bothies, reads memory again, wakes the sample.
async fn measure(
    client: &Client,
    prefix: &str,
    boxes: usize,
    pids: (i32, Option<i32>),
    created: &Arc<Mutex<Vec<String>>>,
) -> Result<Measured> {
    let warm_up = format!("{prefix}-warm-up");
    make_cold(client, &warm_up, &Mutex::new(Vec::new())).await?;
    let params = ExecParams::new(vec!["true".into()]);
    run_true(client, &warm_up, &params)
        .await
        .with_context(|| format!("waking {warm_up} from cold sleep"))?;
    client
        .destroy_sprite(&warm_up)
        .await
        .with_context(|| format!("destroying {warm_up}"))?;
    let before = snapshot(pids.0, pids.1).await?;

    let made = make_cold_boxes(client, prefix, boxes, created).await?;
    // In the order they were made, so the sample is spread over the run.
    let names = lock(created).clone();
    let listed = client
        .list_all(Some(prefix))
        .await
        .context("listing the bench bothies")?;
    let cold = listed.iter().filter(|s| s.status == "cold").count();
    anyhow::ensure!(
        cold == boxes && names.len() == boxes,
        "{cold} of the {boxes} bench bothies are cold ({} made)",
        names.len()
    );
    let after = snapshot(pids.0, pids.1).await?;

    let mut wakes = Vec::new();
    let mut last_woken = None;
    for i in spread_sample(names.len(), WAKE_SAMPLE) {
        let name = names
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no bothy {i} of {}", names.len()))?;
        let started = Instant::now();
        run_true(client, name, &params)
            .await
            .with_context(|| format!("waking {name} from cold sleep"))?;
        wakes.push(started.elapsed());
        last_woken = Some(name);
    }
    // The baseline in the same run: `true` on the last bothy woken, running.
    let mut execs = Vec::new();
    if let Some(name) = last_woken {
        run_true(client, name, &params).await?;
        for _ in 0..WAKE_SAMPLE {
            let started = Instant::now();
            run_true(client, name, &params)
                .await
                .with_context(|| format!("exec in {name}"))?;
            execs.push(started.elapsed());
        }
    }
    Ok(Measured {
        made,
        before,
        after,
        wakes,
        execs,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked while holding the lock left valid data behind.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `{prefix}-0` … `{prefix}-{boxes - 1}`, made and put to cold sleep by
/// [`CONCURRENCY`] workers; each name goes into `created` as soon as its
/// create returns. The first failure stops the workers (each finishes the
/// bothy it is at) and is returned once all have stopped.
async fn make_cold_boxes(
    client: &Client,
    prefix: &str,
    boxes: usize,
    created: &Arc<Mutex<Vec<String>>>,
) -> Result<Vec<Made>> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY.min(boxes) {
        let (client, prefix) = (client.clone(), prefix.to_string());
        let (next, failed, created) = (next.clone(), failed.clone(), created.clone());
        workers.spawn(async move {
            let mut made = Vec::new();
            while !failed.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= boxes {
                    break;
                }
                match make_cold(&client, &format!("{prefix}-{i}"), &created).await {
                    Ok(m) => made.push(m),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
            }
            Ok(made)
        });
    }
    let mut all = Vec::with_capacity(boxes);
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined.map_err(anyhow::Error::new).and_then(|r| r) {
            Ok(made) => all.extend(made),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

/// Creates `name` (timed), then puts it to cold sleep (timed).
async fn make_cold(client: &Client, name: &str, created: &Mutex<Vec<String>>) -> Result<Made> {
    // Only the bench puts it to sleep: the daemon's idle pass must not.
    let request = sleepless(name);
    let started = Instant::now();
    client
        .create_sprite(&request)
        .await
        .with_context(|| format!("creating {name}"))?;
    let create = started.elapsed();
    lock(created).push(name.to_string());
    let started = Instant::now();
    let answer = client
        .sleep_sprite(name, true)
        .await
        .with_context(|| format!("putting {name} to cold sleep"))?;
    let sleep = started.elapsed();
    anyhow::ensure!(
        answer["status"] == "cold",
        "asked {name} to go cold, the daemon answered {answer}"
    );
    Ok(Made { create, sleep })
}

/// Destroys what the bench made: the bothies whose create returned, and any
/// other with its prefix (a create that failed half way).
async fn clean_up(client: &Client, prefix: &str, created: &Mutex<Vec<String>>) -> Result<()> {
    let mut names = lock(created).clone();
    match client.list_all(Some(prefix)).await {
        Ok(listed) => {
            for sprite in listed {
                if !names.contains(&sprite.name) {
                    names.push(sprite.name);
                }
            }
        }
        Err(e) => eprintln!("warning: cannot list the bench bothies ({e}); destroying those made"),
    }
    destroy_all(client, &names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_spread_over_the_set() {
        assert_eq!(spread_sample(500, 20).len(), 20);
        assert_eq!(spread_sample(500, 20)[..3], [12, 37, 62]);
        assert_eq!(spread_sample(500, 20).last(), Some(&487));
        assert_eq!(spread_sample(100, 20)[..3], [2, 7, 12]);
        assert_eq!(spread_sample(5, 20), [0, 1, 2, 3, 4]);
        assert_eq!(spread_sample(20, 20), (0..20).collect::<Vec<_>>());
        assert_eq!(spread_sample(1, 20), [0]);
        assert!(spread_sample(0, 20).is_empty());
        for n in 1..300 {
            let s = spread_sample(n, WAKE_SAMPLE);
            assert_eq!(s.len(), n.min(WAKE_SAMPLE), "n = {n}");
            assert!(
                s.windows(2).all(|w| w[0] < w[1]),
                "distinct, in order: {s:?}"
            );
            assert!(s.iter().all(|&i| i < n), "in range: {s:?}");
        }
    }

    #[test]
    fn per_box_growth_in_kib() {
        // 100 MiB more over 500 bothies: 204.8 KiB each.
        assert_eq!(per_box_kib(50 * 1024, 150 * 1024, 500), 204.8);
        assert_eq!(per_box_kib(2000, 1000, 100), -10.0);
        assert_eq!(per_box_kib(1000, 1000, 0), 0.0);
    }

    #[test]
    fn the_line_has_the_fields_the_docs_name() {
        let line = DensityLine {
            bench: "density",
            boxes: 100,
            concurrency: 4,
            daemon_pid: 1,
            daemon_rss_before_mib: 30.0,
            daemon_rss_after_mib: 31.0,
            daemon_rss_per_cold_box_kib: 10.2,
            storage_pid: None,
            storage_rss_before_mib: None,
            storage_rss_after_mib: None,
            storage_rss_per_cold_box_kib: None,
            host_mem_available_before_mib: 1000.0,
            host_mem_available_after_mib: 990.0,
            host_mem_per_cold_box_kib: 102.4,
            create_p50_ms: 100.0,
            create_p90_ms: 120.0,
            cold_sleep_p50_ms: 50.0,
            cold_sleep_p90_ms: 60.0,
            wake_runs: 20,
            wake_p50_ms: 200.0,
            wake_p90_ms: 250.0,
            wake_max_ms: 300.0,
            exec_running_p50_ms: 2.0,
            exec_running_p90_ms: 3.0,
        };
        let json = serde_json::to_value(&line).expect("serialisable");
        assert_eq!(json["bench"], "density");
        assert_eq!(json["boxes"], 100);
        assert!(json["storage_rss_per_cold_box_kib"].is_null());
        for field in [
            "daemon_rss_before_mib",
            "daemon_rss_after_mib",
            "daemon_rss_per_cold_box_kib",
            "host_mem_per_cold_box_kib",
            "wake_runs",
            "wake_p50_ms",
            "wake_p90_ms",
            "create_p50_ms",
            "exec_running_p50_ms",
        ] {
            assert!(json[field].is_number(), "{field}");
        }
    }
}
