//! `bothy usage [-s NAME]`: time each bothy spent running, warm and cold,
//! and what its disk and checkpoints store; of every bothy without `-s`.

use anyhow::{Context as _, Result};
use bothy_api::SpriteUsage;

use crate::output::{self, cell};
use crate::Context;

pub async fn run(ctx: &Context) -> Result<i32> {
    let client = ctx.client()?;
    let names = match ctx.explicit_sprite() {
        Some(name) => vec![name.to_string()],
        None => client
            .list_all(None)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let mut all = Vec::with_capacity(names.len());
    for name in &names {
        let usage = client
            .sprite_usage(name)
            .await
            .with_context(|| format!("cannot read the usage of {name}"))?;
        all.push(usage);
    }
    if ctx.json() {
        match (ctx.explicit_sprite(), all.as_slice()) {
            (Some(_), [one]) => output::print_json(one)?,
            _ => output::print_json(&all)?,
        }
        return Ok(0);
    }
    if all.is_empty() {
        eprintln!("no bothies yet: `bothy create NAME` makes one");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all.iter().map(row).collect();
    print!(
        "{}",
        output::table(
            &[
                "NAME",
                "STATUS",
                "RUNNING",
                "WARM",
                "COLD",
                "DISK",
                "CHECKPOINTS"
            ],
            &rows
        )
    );
    Ok(0)
}

fn row(u: &SpriteUsage) -> Vec<String> {
    let bytes = |b: Option<u64>| b.map(human_bytes).unwrap_or_else(|| "?".into());
    vec![
        cell(&u.name),
        cell(&u.status),
        human_seconds(u.running_seconds),
        human_seconds(u.warm_seconds),
        human_seconds(u.cold_seconds),
        bytes(u.disk_bytes),
        format!("{} ({})", u.checkpoints, bytes(u.checkpoint_bytes)),
    ]
}

/// `42s`, `3m12s`, `5h02m`, `2d04h`.
fn human_seconds(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 MiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_at_a_glance() {
        assert_eq!(human_seconds(0.4), "0s");
        assert_eq!(human_seconds(192.0), "3m12s");
        assert_eq!(human_seconds(18_120.0), "5h02m");
        assert_eq!(human_seconds(187_200.0), "2d04h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 << 10), "1.5 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
