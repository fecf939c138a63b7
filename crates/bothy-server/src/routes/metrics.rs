//! `GET /metrics`: Prometheus text for the daemon and each sprite the token
//! may see (every sprite for an admin token, the organisation's otherwise).
//! Built per scrape from what control reports, so nothing is kept between.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bothy_control::{Boxes, Control, Metrics};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};

const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FloatFamily = Family<Labels, Gauge<f64, AtomicU64>>;

pub async fn metrics<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
) -> ApiResult<Response> {
    let m = control.metrics(&caller).await?;
    let text = render(&m).map_err(|e| ApiError::internal(&format!("encoding metrics: {e}")))?;
    Ok(([(CONTENT_TYPE, CONTENT)], text).into_response())
}

fn render(m: &Metrics) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("bothy");
    let rss = Gauge::<f64, AtomicU64>::default();
    if let Some(b) = m.daemon_rss_bytes {
        rss.set(b as f64);
    }
    reg.register(
        "daemon_resident_memory_bytes",
        "The daemon's resident memory",
        rss,
    );
    let sprites = Family::<Labels, Gauge>::default();
    for state in ["running", "warm", "cold"] {
        let n = m.sprites.iter().filter(|s| s.usage.status == state).count();
        sprites
            .get_or_create(&vec![("state", state.to_string())])
            .set(n as i64);
    }
    reg.register("sprites", "Sprites by state", sprites);
    let pool = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    pool.set(m.pool_ready as i64);
    reg.register("warm_pool_ready", "Ready boxes in the warm pool", pool);
    let size = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    size.set(m.pool_size as i64);
    reg.register("warm_pool_size", "Boxes the warm pool keeps ready", size);

    let state_seconds = FloatFamily::default();
    let disk = FloatFamily::default();
    let kept = FloatFamily::default();
    let checkpoints = FloatFamily::default();
    let cpu = FloatFamily::default();
    let tasks = FloatFamily::default();
    let up = FloatFamily::default();
    for s in &m.sprites {
        let u = &s.usage;
        let labels = vec![("sprite", u.name.clone()), ("org", s.org.clone())];
        let with = |k: &'static str, v: &str| {
            let mut l = labels.clone();
            l.push((k, v.to_string()));
            l
        };
        for (state, secs) in [
            ("running", u.running_seconds),
            ("warm", u.warm_seconds),
            ("cold", u.cold_seconds),
        ] {
            state_seconds.get_or_create(&with("state", state)).set(secs);
            up.get_or_create(&with("state", state))
                .set(if u.status == state { 1.0 } else { 0.0 });
        }
        if let Some(b) = u.disk_bytes {
            disk.get_or_create(&labels).set(b as f64);
        }
        if let Some(b) = u.checkpoint_bytes {
            kept.get_or_create(&labels).set(b as f64);
        }
        checkpoints.get_or_create(&labels).set(u.checkpoints as f64);
        if let Some(c) = s.cpu_seconds {
            cpu.get_or_create(&labels).set(c);
        }
        tasks.get_or_create(&labels).set(s.tasks as f64);
    }
    reg.register(
        "sprite_state_seconds",
        "Seconds the sprite spent in each state since it was created",
        state_seconds,
    );
    reg.register("sprite_status", "1 for the state the sprite is in", up);
    reg.register(
        "sprite_disk_bytes",
        "Distinct chunks the sprite's disk refers to, in bytes",
        disk,
    );
    reg.register(
        "sprite_checkpoint_bytes",
        "Distinct chunks only the sprite's checkpoints keep, in bytes",
        kept,
    );
    reg.register(
        "sprite_checkpoints",
        "Checkpoints the sprite keeps",
        checkpoints,
    );
    reg.register(
        "sprite_cpu_seconds",
        "CPU time the sprite's processes used since it booted",
        cpu,
    );
    reg.register("sprite_tasks", "Live tasks holding the sprite awake", tasks);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
