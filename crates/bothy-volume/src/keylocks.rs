//! Locks taken per key (a volume name, a chunk hash) rather than for the
//! whole storage, so work on one key never waits for work on another.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug)]
pub(crate) struct KeyLocks<K> {
    held: Mutex<HashSet<K>>,
    released: Condvar,
}

impl<K> Default for KeyLocks<K> {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashSet::new()),
            released: Condvar::new(),
        }
    }
}

/// Holds one key of a [`KeyLocks`] until dropped.
#[derive(Debug)]
pub(crate) struct KeyGuard<'a, K: Hash + Eq> {
    locks: &'a KeyLocks<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyLocks<K> {
    fn held(&self) -> MutexGuard<'_, HashSet<K>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `key`, waiting while someone else holds it.
    pub(crate) fn lock(&self, key: &K) -> KeyGuard<'_, K> {
        let mut held = self.held();
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.clone());
        KeyGuard {
            locks: self,
            key: key.clone(),
        }
    }

    /// Takes `key` if nobody holds it.
    pub(crate) fn try_lock(&self, key: &K) -> Option<KeyGuard<'_, K>> {
        self.held().insert(key.clone()).then(|| KeyGuard {
            locks: self,
            key: key.clone(),
        })
    }

    /// Whether nobody holds `key`; with `wait`, waits until nobody does and
    /// returns `true`.
    pub(crate) fn is_free(&self, key: &K, wait: bool) -> bool {
        let mut held = self.held();
        while held.contains(key) {
            if !wait {
                return false;
            }
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        true
    }
}

impl<K: Hash + Eq> KeyGuard<'_, K> {
    pub(crate) fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_by_one_guard_at_a_time_and_others_are_free() {
        let locks = KeyLocks::<String>::default();
        let a = "a".to_string();
        let b = "b".to_string();
        let held = locks.lock(&a);
        assert!(locks.try_lock(&a).is_none());
        assert!(!locks.is_free(&a, false));
        assert!(locks.try_lock(&b).is_some(), "another key is free");
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let _again = locks.lock(&a);
            });
            drop(held);
            waiter
                .join()
                .expect("the waiter gets the key once it is released");
        });
        assert!(locks.is_free(&a, true));
    }
}
