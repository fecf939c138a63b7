//! Services: what a box's init keeps running (see `bothy_agent::services`).
//! Every call wakes the box; definitions are checked here before the agent
//! checks them against the box's other services (needs, cycles, the HTTP
//! port).

use std::time::Duration;

use bothy_agent::proto::Request;
pub use bothy_agent::proto::{ServiceDef, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

use crate::error::{ControlError, ControlResult};
use crate::exec::agent_call;
use crate::sleep::AwakeHold;
use crate::state::SpriteRow;
use crate::{Boxes, Control};

/// Longest a streamed answer follows a service.
pub const MAX_FOLLOW: Duration = Duration::from_secs(300);
/// Most of a log a logs call returns.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

/// What a service operation streams: events while the caller follows; the
/// box stays awake meanwhile.
pub struct ServiceStream {
    pub events: mpsc::Receiver<ServiceEvent>,
    pub log_path: String,
    pub awake: AwakeHold,
}

/// A service name: 1-63 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn check_name(name: &str) -> ControlResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(format!(
            "invalid service name {name:?}: use 1-63 of a-z 0-9 - _ . starting with a letter or digit"
        )))
    }
}

fn check_def(def: &ServiceDef) -> ControlResult<()> {
    if def.cmd.trim().is_empty() {
        return Err(ControlError::invalid(
            "cmd is required: the program the service runs",
        ));
    }
    if def.args.len() > 1024 || def.env.len() > 1024 || def.needs.len() > 64 {
        return Err(ControlError::invalid("too many args, env entries or needs"));
    }
    if def.http_port == Some(0) {
        return Err(ControlError::invalid("http_port must be 1-65535"));
    }
    for key in def.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ControlError::invalid(format!(
                "env key {key:?} is not valid"
            )));
        }
    }
    for need in &def.needs {
        check_name(need)?;
    }
    Ok(())
}

/// `5s`, `2.5s`, `500ms`, `1m` or a number of seconds; at most [`MAX_FOLLOW`].
pub fn parse_follow(s: &str) -> ControlResult<Duration> {
    let bad =
        || ControlError::invalid(format!("{s:?} is not a duration: use e.g. 5s, 2.5s, 500ms"));
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(
        (v * scale).min(MAX_FOLLOW.as_secs_f64()),
    ))
}

impl<B: Boxes> Control<B> {
    pub async fn services(&self, row: &SpriteRow) -> ControlResult<Vec<ServiceInfo>> {
        let _awake = self.ensure_running(row).await?;
        Ok(agent_call(self.boxes().services(&row.id)).await?)
    }

    pub async fn service(&self, row: &SpriteRow, name: &str) -> ControlResult<ServiceInfo> {
        check_name(name)?;
        self.services(row)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ControlError::NotFound(format!("no service named {name:?}")))
    }

    /// Creates or replaces a service and starts it; follows it for `follow`.
    pub async fn put_service(
        &self,
        row: &SpriteRow,
        name: &str,
        def: ServiceDef,
        follow: Duration,
    ) -> ControlResult<ServiceStream> {
        check_name(name)?;
        check_def(&def)?;
        let awake = self.ensure_running(row).await?;
        let req = Request::ServicePut {
            name: name.to_string(),
            def,
            follow_ms: follow.as_millis() as u64,
        };
        let events = agent_call(self.boxes().service_stream(&row.id, req)).await?;
        self.streaming(row, name, events, awake).await
    }

    pub async fn delete_service(&self, row: &SpriteRow, name: &str) -> ControlResult<()> {
        check_name(name)?;
        let _awake = self.ensure_running(row).await?;
        let req = Request::ServiceDelete {
            name: name.to_string(),
        };
        Ok(agent_call(self.boxes().service_call(&row.id, req)).await?)
    }

    /// Starts (or, with `restart`, stops then starts) a service.
    pub async fn start_service(
        &self,
        row: &SpriteRow,
        name: &str,
        restart: bool,
        follow: Duration,
    ) -> ControlResult<ServiceStream> {
        check_name(name)?;
        let awake = self.ensure_running(row).await?;
        if restart {
            let stop = Request::ServiceStop {
                name: name.to_string(),
                timeout_ms: None,
            };
            match agent_call(self.boxes().service_call(&row.id, stop)).await {
                Ok(()) | Err(crate::BoxError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.wait_stopped(row, name).await?;
        }
        let req = Request::ServiceStart {
            name: name.to_string(),
            follow_ms: follow.as_millis() as u64,
        };
        let events = agent_call(self.boxes().service_stream(&row.id, req)).await?;
        self.streaming(row, name, events, awake).await
    }

    /// Stops a service (SIGTERM, then SIGKILL after `timeout`) and follows
    /// it until it stopped or `timeout` and a little more passed.
    pub async fn stop_service(
        &self,
        row: &SpriteRow,
        name: &str,
        timeout: Option<Duration>,
    ) -> ControlResult<ServiceStream> {
        check_name(name)?;
        let awake = self.ensure_running(row).await?;
        let watch = Request::ServiceWatch {
            name: name.to_string(),
            duration_ms: (timeout.unwrap_or(Duration::from_secs(10)) + Duration::from_secs(2))
                .as_millis() as u64,
        };
        let events = agent_call(self.boxes().service_stream(&row.id, watch)).await?;
        let req = Request::ServiceStop {
            name: name.to_string(),
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
        };
        agent_call(self.boxes().service_call(&row.id, req)).await?;
        self.streaming(row, name, events, awake).await
    }

    pub async fn signal_service(
        &self,
        row: &SpriteRow,
        name: &str,
        signal: i32,
    ) -> ControlResult<()> {
        check_name(name)?;
        let _awake = self.ensure_running(row).await?;
        let req = Request::ServiceSignal {
            name: name.to_string(),
            signal,
        };
        Ok(agent_call(self.boxes().service_call(&row.id, req)).await?)
    }

    /// Follows a service for `follow` (what it prints, exits, restarts).
    pub async fn watch_service(
        &self,
        row: &SpriteRow,
        name: &str,
        follow: Duration,
    ) -> ControlResult<ServiceStream> {
        check_name(name)?;
        let awake = self.ensure_running(row).await?;
        let watch = Request::ServiceWatch {
            name: name.to_string(),
            duration_ms: follow.as_millis() as u64,
        };
        let events = agent_call(self.boxes().service_stream(&row.id, watch)).await?;
        self.streaming(row, name, events, awake).await
    }

    /// The end of the service's log and its path in the box.
    pub async fn service_logs(
        &self,
        row: &SpriteRow,
        name: &str,
        max_bytes: u64,
    ) -> ControlResult<(String, String)> {
        check_name(name)?;
        let _awake = self.ensure_running(row).await?;
        Ok(agent_call(
            self.boxes()
                .service_log(&row.id, name, max_bytes.min(MAX_LOG_BYTES)),
        )
        .await?)
    }

    async fn wait_stopped(&self, row: &SpriteRow, name: &str) -> ControlResult<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.service(row, name).await?;
            if s.state.pid.is_none() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn streaming(
        &self,
        row: &SpriteRow,
        name: &str,
        events: mpsc::Receiver<ServiceEvent>,
        awake: AwakeHold,
    ) -> ControlResult<ServiceStream> {
        let (_, log_path) = agent_call(self.boxes().service_log(&row.id, name, 0)).await?;
        Ok(ServiceStream {
            events,
            log_path,
            awake,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_durations_parse_as_the_sdks_send_them() {
        assert_eq!(parse_follow("5.0s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(parse_follow("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse_follow("2").ok(), Some(Duration::from_secs(2)));
        assert_eq!(parse_follow("1h").ok(), None);
        assert_eq!(parse_follow("9999s").ok(), Some(MAX_FOLLOW));
        assert!(parse_follow("-1s").is_err() && parse_follow("NaNs").is_err());
    }

    #[test]
    fn names_and_definitions_are_checked() {
        assert!(check_name("web").is_ok() && check_name("db-1.main").is_ok());
        for bad in ["", "-x", "Web", "a/b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_def(&ServiceDef::default()).is_err(), "no cmd");
        let port0 = ServiceDef {
            cmd: "x".into(),
            http_port: Some(0),
            ..Default::default()
        };
        assert!(check_def(&port0).is_err());
    }
}
