//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, HardState, Index, LogStore, MemStorage, Storage, Term};
use concord_storage::{GroupId, Log, LogConfig, SimFs, WriteBatch};

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
        // Several preallocation steps per segment, so rolls cut zeros off.
        preallocate_bytes: 1024,
        ..LogConfig::default()
    }
}

/// [`small_config`] without preallocation: segment files end at their last record,
/// for tests that cut or damage them at exact byte offsets.
pub fn exact_config() -> LogConfig {
    LogConfig {
        preallocate_bytes: 0,
        ..small_config()
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
    assert_eq!(
        all_entries(actual),
        all_entries(expected),
        "{context}: entries"
    );
    assert_eq!(
        actual.initial_state(),
        expected.initial_state(),
        "{context}: initial state"
    );
    assert_eq!(
        actual.snapshot(0),
        expected.snapshot(0),
        "{context}: snapshot"
    );
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

/// The state after one batch of a [`History`]: where the log ended and what each
/// group held.
pub struct Step {
    /// The newest segment file.
    pub segment: PathBuf,
    /// Its length after the batch.
    pub segment_bytes: u64,
    /// What each group held.
    pub models: BTreeMap<GroupId, MemStorage>,
}

/// A log written batch by batch on a simulated disk, with the expected state after each.
pub struct History {
    /// The disk, with every batch synced.
    pub fs: SimFs,
    /// The config the log was written with.
    pub config: LogConfig,
    /// The state after opening, then after each batch.
    pub steps: Vec<Step>,
}

/// A small deterministic random number generator for tests (splitmix64).
pub struct TestRng(pub u64);

impl TestRng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The newest segment file on `fs` and its length.
pub fn newest_segment(fs: &SimFs) -> (PathBuf, u64) {
    let path = fs
        .paths()
        .into_iter()
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("segment-"))
        })
        .max()
        .expect("a segment");
    let bytes = fs.file_bytes(&path).unwrap().len() as u64;
    (path, bytes)
}

/// Writes `batches` batches over three groups: each appends 1 to 3 entries to one group
/// (every seventh rewrites that group's last two entries, a conflicting suffix) and
/// records the hard state of the next group, in the same batch.
pub fn build_history(seed: u64, config: LogConfig, batches: usize) -> History {
    let fs = SimFs::new(seed);
    let log = open_sim(&fs, config.clone()).unwrap();
    let mut rng = TestRng(seed);
    let mut models: BTreeMap<GroupId, MemStorage> =
        (1..=3).map(|group| (group, MemStorage::new())).collect();
    let mut steps = Vec::new();
    let snapshot = |fs: &SimFs, models: &BTreeMap<GroupId, MemStorage>| {
        let (segment, segment_bytes) = newest_segment(fs);
        Step {
            segment,
            segment_bytes,
            models: models.clone(),
        }
    };
    steps.push(snapshot(&fs, &models));
    for step in 0..batches {
        let group = 1 + step as u64 % 3;
        let other = 1 + (step as u64 + 1) % 3;
        let term = 1 + step as u64 / 10;
        let last = models[&group].last_index().unwrap();
        let first = if step % 7 == 6 && last >= 2 {
            last - 1
        } else {
            last + 1
        };
        let count = 1 + rng.below(3) as usize;
        let appended = entries(first, &vec![term; count], rng.below(60) as usize);
        let hard_state = HardState {
            term,
            vote: other,
            commit: models[&other].last_index().unwrap(),
        };
        let mut batch = WriteBatch::new();
        batch.group(group).entries = appended.clone();
        batch.group(other).hard_state = Some(hard_state);
        log.write(batch).unwrap();
        models.get_mut(&group).unwrap().append(&appended).unwrap();
        models
            .get_mut(&other)
            .unwrap()
            .set_hard_state(hard_state)
            .unwrap();
        steps.push(snapshot(&fs, &models));
    }
    History { fs, config, steps }
}

/// Asserts every group of `log` holds what `models` hold.
pub fn assert_log_matches(log: &Log, models: &BTreeMap<GroupId, MemStorage>, context: &str) {
    for (group, model) in models {
        assert_same_store(
            model,
            &log.group(*group),
            &format!("{context}, group {group}"),
        );
    }
}
