//! The one poison-tolerant lock every concord crate uses.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning. concord's mutexes guard maps and counters that
/// stay consistent whatever a panicking holder was doing (every update is a single
/// insert, remove or store), so a panic elsewhere must not take the lock down too.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_poisoned_mutex_still_locks() {
        let mutex = std::sync::Arc::new(std::sync::Mutex::new(1));
        let holder = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(mutex.is_poisoned());
        *super::lock(&mutex) += 1;
        assert_eq!(*super::lock(&mutex), 2);
    }
}
