//! A [`Blobs`] wrapper that fails, delays or holds chosen calls, for testing
//! retries and for showing that a slow, failing or stuck store does not
//! block writers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{Blobs, StoreError};

/// What to break. Counters are per wrapper and count every call of the kind.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// The first N puts fail with a transient error.
    pub fail_first_puts: u64,
    /// Every call number (1-based, over all kinds) in this list fails.
    pub fail_calls: Vec<u64>,
    /// Every put sleeps this long first.
    pub put_delay: Duration,
    /// Every get fails permanently while set (a store that lost everything).
    pub fail_all_gets: bool,
    /// Every put waits while set, until a new plan clears it: a store that
    /// does not answer, for as long as a test needs to show what waits for
    /// it ([`FaultyBlobs::held`] counts the calls waiting).
    pub hold_puts: bool,
    /// Every delete waits while set, as `hold_puts` does for puts.
    pub hold_deletes: bool,
    /// Every put is stored, then its answer waits while set: a store that
    /// answers late.
    pub hold_put_answers: bool,
}

#[derive(Debug)]
pub struct FaultyBlobs {
    inner: Arc<dyn Blobs>,
    plan: Mutex<FaultPlan>,
    /// Wakes held calls when the plan changes.
    replanned: Notify,
    calls: AtomicU64,
    puts: AtomicU64,
    held: AtomicU64,
}

impl FaultyBlobs {
    pub fn new(inner: Arc<dyn Blobs>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan: Mutex::new(plan),
            replanned: Notify::new(),
            calls: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Replaces the plan, e.g. to heal the store mid-test.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
        self.replanned.notify_waiters();
    }

    /// Calls waiting now because of `hold_puts`, `hold_deletes` or
    /// `hold_put_answers`.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    fn plan(&self) -> FaultPlan {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits while `holds` says the current plan holds this call.
    async fn hold(&self, holds: impl Fn(&FaultPlan) -> bool) {
        if !holds(&self.plan()) {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        loop {
            let replanned = self.replanned.notified();
            tokio::pin!(replanned);
            // Registered before the plan is read, so no change is missed.
            replanned.as_mut().enable();
            if !holds(&self.plan()) {
                break;
            }
            replanned.await;
        }
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    fn check_call(&self, plan: &FaultPlan) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if plan.fail_calls.contains(&n) {
            return Err(StoreError::Transient(format!(
                "injected failure of call {n}"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Blobs for FaultyBlobs {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let plan = self.plan();
        self.check_call(&plan)?;
        self.hold(|p| p.hold_puts).await;
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if !plan.put_delay.is_zero() {
            tokio::time::sleep(plan.put_delay).await;
        }
        if n <= plan.fail_first_puts {
            return Err(StoreError::Transient(format!(
                "injected failure of put {n}"
            )));
        }
        let stored = self.inner.put(key, body).await;
        self.hold(|p| p.hold_put_answers).await;
        stored
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let plan = self.plan();
        self.check_call(&plan)?;
        if plan.fail_all_gets {
            return Err(StoreError::Permanent("injected: store unreadable".into()));
        }
        self.inner.get(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.check_call(&self.plan())?;
        self.inner.exists(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check_call(&self.plan())?;
        self.hold(|p| p.hold_deletes).await;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check_call(&self.plan())?;
        self.inner.list(prefix).await
    }
}
