//! Bounded exponential backoff for transient object-store errors.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries including the first; at least 1.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// About 25 s of trying in all before an error surfaces: long enough to ride
    /// out a store restart, short enough that a dead store is reported.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy for tests: many quick retries.
    pub fn fast() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    /// The delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.max_attempts.max(1) => {
                    let delay = self.delay(attempt);
                    tracing::debug!(%e, attempt, ?delay, "{what}: retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            max_attempts: 50,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(4), Duration::from_millis(800));
        assert_eq!(p.delay(10), Duration::from_secs(5));
        assert_eq!(p.delay(40), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up_and_never_retries_permanent() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, _> = RetryPolicy::fast()
            .run("t", || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 {
                    Err(StoreError::Transient("flaky".into()))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = RetryPolicy::fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Transient("down".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 10);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = RetryPolicy::fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Permanent("denied".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
