//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, Index, LogStore, Storage, Term};
use concord_storage::{Log, LogConfig, SimFs};

/// The data directory used on simulated disks.
pub fn sim_dir() -> PathBuf {
    PathBuf::from("/data")
}

/// Opens the log in [`sim_dir`] on `fs`.
pub fn open_sim(fs: &SimFs, config: LogConfig) -> concord_storage::Result<Log> {
    Log::open_with(Arc::new(fs.clone()), sim_dir(), config)
}

/// A config with small segments and caches, so tests roll segments and miss the cache.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        entry_cache_bytes_max: 256,
        entries_record_bytes_max: 200,
        ..LogConfig::default()
    }
}

/// Entries `first..first + terms.len()` with the given terms and payloads of
/// `payload_bytes` bytes that depend on index and term.
pub fn entries(first: Index, terms: &[Term], payload_bytes: usize) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| {
            let index = first + offset as Index;
            let data: Vec<u8> = (0..payload_bytes)
                .map(|byte| (index as usize * 31 + term as usize * 7 + byte) as u8)
                .collect();
            Entry {
                term,
                index,
                kind: EntryKind::Normal,
                data: Bytes::from(data),
            }
        })
        .collect()
}

/// Every entry of a store.
pub fn all_entries<S: Storage>(store: &S) -> Vec<Entry> {
    let low = store.first_index().unwrap();
    let high = store.last_index().unwrap() + 1;
    store.entries(low, high, u64::MAX).unwrap()
}

/// Asserts two stores hold the same log, hard state, membership and snapshot.
pub fn assert_same_store<A: LogStore, B: LogStore>(expected: &A, actual: &B, context: &str) {
    assert_eq!(
        actual.first_index(),
        expected.first_index(),
        "{context}: first index"
    );
    assert_eq!(
        actual.last_index(),
        expected.last_index(),
        "{context}: last index"
    );
    let compacted = expected.first_index().unwrap() - 1;
    assert_eq!(
        actual.term(compacted),
        expected.term(compacted),
        "{context}: term of the compaction point"
    );
    assert_eq!(all_entries(actual), all_entries(expected), "{context}: entries");
    assert_eq!(
        actual.initial_state(),
        expected.initial_state(),
        "{context}: initial state"
    );
    assert_eq!(actual.snapshot(0), expected.snapshot(0), "{context}: snapshot");
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty, uniquely named directory.
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "concord-storage-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
