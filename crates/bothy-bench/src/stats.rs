//! Latency summaries for `bothy bench`.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

/// The JSON line `bothy bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub bench: String,
    pub runs: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    pub min_ms: f64,
}

impl BenchReport {
    /// Summarises `samples`; `None` when there are none.
    pub fn from_samples(bench: &str, samples: &[Duration]) -> Option<Self> {
        let ms = sorted_ms(samples);
        Some(Self {
            bench: bench.to_string(),
            runs: ms.len(),
            p50_ms: round3(percentile(&ms, 50.0)?),
            p90_ms: round3(percentile(&ms, 90.0)?),
            max_ms: round3(*ms.last()?),
            min_ms: round3(*ms.first()?),
        })
    }
}

/// Prints the summary of `samples` as one JSON line on stdout.
pub fn report(bench: &str, samples: &[Duration]) -> Result<()> {
    let report = BenchReport::from_samples(bench, samples)
        .ok_or_else(|| anyhow::anyhow!("no {bench} run finished"))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The samples in milliseconds, smallest first: what [`percentile`] takes.
pub fn sorted_ms(samples: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// Nearest-rank percentile of sorted values: the smallest value with at least
/// `p`% of the samples at or below it. Always one of the samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// One decimal: how the JSON lines show MiB and KiB.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Three decimals: how the JSON lines show milliseconds and seconds.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn report_sorts_and_converts_to_ms() {
        let s = [30, 10, 20].map(Duration::from_millis);
        let r = BenchReport::from_samples("exec", &s).expect("samples");
        assert_eq!(
            (r.runs, r.min_ms, r.p50_ms, r.max_ms),
            (3, 10.0, 20.0, 30.0)
        );
        let json = serde_json::to_value(&r).expect("serialisable");
        assert_eq!(json["bench"], "exec");
        assert!(BenchReport::from_samples("x", &[]).is_none());
    }
}
