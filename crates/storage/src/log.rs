//! The log: one append-only sequence of segment files shared by every raft group on the
//! node, with group commit.
//!
//! A writer validates its batch, encodes it and applies it to the in-memory state under
//! one mutex, appending the bytes to a pending buffer; then it waits until its batch is
//! durable. Whoever waits while no flush is running becomes the flusher: it takes every
//! pending batch, writes them with one `write_at` per segment and one `fdatasync`, and
//! wakes the others. Writers arriving during a flush are batched into the next one.
//! A write or fsync failure poisons the log: every waiting and later writer gets an
//! error, and nothing is retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use concord_raft::{ConfState, Entry, HardState, Index, Snapshot, Term};

use crate::batch::{GroupWrite, WriteBatch};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::fs::{DirLock, File, FileSystem, StdFs};
use crate::group::{GroupState, Span};
use crate::record::{
    self, begin_record, finish_record, put_record, BatchCommit, RecordType, SnapshotOrigin,
    SnapshotRecord,
};
use crate::replay::{self, RecoveryReport};
use crate::segment::{read_entries_record, segment_file_name, Segment};
use crate::snapshot::{self, SnapshotReader};
use crate::storage::GroupStorage;
use crate::GroupId;

/// Bytes accepted but not yet handed to the disk, for one segment.
struct Chunk {
    segment: u64,
    /// Where `bytes` go in the segment file.
    offset: u64,
    bytes: Vec<u8>,
    /// The segment file must be created first (it starts with this chunk).
    create: bool,
    /// Zeros to write after the bytes, `[from, to)` (preallocation; set by `flush`).
    zero_fill: Option<(u64, u64)>,
}

/// How far a group's durable records let segments go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DurableFloor {
    /// Durable compaction point of the group's current life.
    pub compacted_index: Index,
    /// Sequence of the batch whose durable `RemoveGroup` ended an earlier life (0: none).
    pub removed_at: u64,
}

/// What happens once a batch is durable.
enum Effect {
    /// The group's durable compaction point rose to `index`.
    Compacted { group: GroupId, index: Index },
    /// The group was removed by batch `sequence`.
    Removed { group: GroupId, sequence: u64 },
    /// A file no record names any more (an older snapshot).
    DeleteFile(PathBuf),
}

/// Counters of the log's work since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches made durable (each caller's `write` is one; segment checkpoints too).
    pub batches: u64,
    /// Entries appended.
    pub entries: u64,
    /// Flushes: rounds of writes followed by fsync that made batches durable.
    pub flushes: u64,
    /// `fdatasync` calls on segment files (one per flush, two when a flush starts a new
    /// segment).
    pub syncs: u64,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// Segment files deleted because every group was past them.
    pub segments_deleted: u64,
}

/// Everything behind the state mutex.
struct State {
    groups: BTreeMap<GroupId, GroupState>,
    segments: BTreeMap<u64, Segment>,
    /// The segment new batches go to.
    tail_segment: u64,
    /// Length the tail segment will have once everything pending is written.
    tail_bytes: u64,
    /// How far this process wrote the tail segment's file, preallocated zeros
    /// included (0 after opening or rolling).
    tail_zeroed: u64,
    pending: Vec<Chunk>,
    pending_bytes: u64,
    pending_effects: Vec<Effect>,
    /// Sequence number of the next batch.
    next_sequence: u64,
    /// Every batch up to this sequence number is durable.
    // Invariant: durable_sequence < next_sequence.
    durable_sequence: u64,
    /// A flusher is writing (or deleting files); others wait for it.
    flushing: bool,
    /// Set by a fatal error; no more writes.
    poisoned: Option<String>,
    floors: BTreeMap<GroupId, DurableFloor>,
    stats: LogStats,
}

pub(crate) struct Shared {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: LogConfig,
    state: Mutex<State>,
    /// Signalled when a flush ends or pending bytes are taken.
    changed: Condvar,
    recovery: RecoveryReport,
    _lock: DirLock,
}

/// The node's log and snapshot store, shared by all its raft groups. Cheap to clone;
/// clones share the same log.
///
/// Open it with [`Log::open`] (the real disk) or [`Log::open_with`] (any
/// [`FileSystem`], such as [`crate::SimFs`]). Each group is reached through a
/// [`GroupStorage`] ([`Log::group`]), which implements concord-raft's `Storage` and
/// `LogStore`; a runtime persisting many groups' `Ready`s at once uses [`Log::write`].
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

/// A submitted batch, not yet known durable ([`Log::submit`]).
#[must_use = "a submitted batch is durable only once wait() returns Ok"]
#[derive(Debug)]
pub struct Durable {
    log: Log,
    sequence: u64,
}

impl Durable {
    /// Returns once the batch is durable (flushing it, with everything else pending,
    /// if no one else is). An [`Error::is_fatal`] error means the log stopped and the
    /// batch may or may not be on disk.
    pub fn wait(self) -> Result<()> {
        self.log.wait_durable(self.sequence)
    }

    /// True if the batch is already durable.
    pub fn is_durable(&self) -> bool {
        self.log.lock_state().durable_sequence >= self.sequence
    }
}

/// One group's part of a batch, with snapshot data already in its file.
#[derive(Debug, Default)]
pub(crate) struct GroupOps {
    pub remove: bool,
    pub install: Option<SnapshotRecord>,
    pub entries: Vec<Entry>,
    pub created: Option<SnapshotRecord>,
    pub compact: Option<Index>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
}

/// What validation worked out for one group's ops.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Entries after this index are replaced by the appended ones.
    truncate_after: Option<Index>,
    /// Compact to this index, whose term is this.
    compact: Option<(Index, Term)>,
}

/// The largest entry payload, in bytes: lengths on disk are 32-bit, and a record holds
/// at least one whole entry.
pub const ENTRY_DATA_BYTES_MAX: u64 = 1 << 30;

fn refused(message: String) -> Error {
    Error::Refused(message)
}

/// Checks `ops` against `group` as `MemStorage` would, in the order they apply, and
/// works out what to write. Changes nothing.
fn validate(group: &GroupState, ops: &GroupOps) -> Result<Plan> {
    let mut plan = Plan::default();
    if ops.remove {
        return Ok(plan);
    }
    let (mut compacted_index, mut compacted_term) = (group.compacted_index, group.compacted_term);
    let mut snapshot_index = group.snapshot.index;
    let mut last_index = group.last_index();
    // Entries up to here are the group's own; later ones come from `ops.entries`.
    let mut stored_up_to = last_index;
    if let Some(install) = &ops.install {
        let current = snapshot_index.max(compacted_index);
        if install.index <= current {
            return Err(refused(format!(
                "snapshot at index {} is not newer than the current snapshot or compaction \
                 point at index {current}",
                install.index
            )));
        }
        (compacted_index, compacted_term) = (install.index, install.term);
        snapshot_index = install.index;
        last_index = install.index;
        stored_up_to = install.index;
    }
    let first_new = ops.entries.first().map(|entry| entry.index);
    if let Some(first) = first_new {
        if !ops
            .entries
            .windows(2)
            .all(|pair| pair[1].index == pair[0].index + 1)
        {
            return Err(refused(
                "entries to append must have consecutive indexes".into(),
            ));
        }
        if let Some(entry) = ops
            .entries
            .iter()
            .find(|entry| entry.data.len() as u64 > ENTRY_DATA_BYTES_MAX)
        {
            return Err(refused(format!(
                "entry at index {} holds {} bytes, more than the {ENTRY_DATA_BYTES_MAX} an entry may",
                entry.index,
                entry.data.len()
            )));
        }
        if first > last_index + 1 {
            return Err(Error::Unavailable);
        }
        if first <= compacted_index {
            return Err(Error::Compacted);
        }
        if first <= last_index {
            plan.truncate_after = Some(first - 1);
        }
        stored_up_to = stored_up_to.min(first - 1);
        last_index = ops.entries.last().expect("not empty").index;
    }
    let term_at = |index: Index| -> Result<Term> {
        if index == compacted_index {
            Ok(compacted_term)
        } else if index <= stored_up_to {
            group.term(index)
        } else {
            let first = first_new.expect("index past the stored entries is appended");
            Ok(ops.entries[(index - first) as usize].term)
        }
    };
    if let Some(created) = &ops.created {
        if created.index <= snapshot_index {
            return Err(refused(format!(
                "snapshot at index {} is not newer than the current one at index {snapshot_index}",
                created.index
            )));
        }
        if created.index < compacted_index {
            return Err(Error::Compacted);
        }
        if created.index > last_index {
            return Err(Error::Unavailable);
        }
        let term = term_at(created.index)?;
        if term != created.term {
            return Err(refused(format!(
                "the entry at index {} changed while its snapshot was written",
                created.index
            )));
        }
        snapshot_index = created.index;
    }
    if let Some(index) = ops.compact {
        if index > compacted_index {
            if index > last_index {
                return Err(Error::Unavailable);
            }
            if index > snapshot_index {
                return Err(refused(format!(
                    "cannot compact to index {index}, past the latest snapshot at index \
                     {snapshot_index}: entries no snapshot covers would be lost"
                )));
            }
            plan.compact = Some((index, term_at(index)?));
        }
    }
    Ok(plan)
}

/// True if `ops` writes nothing once validated (a compaction that is a no-op).
fn writes_nothing(ops: &GroupOps, plan: &Plan) -> bool {
    !ops.remove
        && ops.install.is_none()
        && ops.entries.is_empty()
        && ops.created.is_none()
        && plan.compact.is_none()
        && ops.hard_state.is_none()
        && ops.conf_state.is_none()
}

fn snapshot_path(dir: &Path, group: GroupId, index: Index) -> PathBuf {
    dir.join(snapshot::file_name(group, index))
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real disk, recovering what is
    /// there. Takes the directory's lock: a second open of the same directory, by this
    /// or another process, fails with [`Error::Locked`].
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Log::open_with(Arc::new(StdFs), dir, config)
    }

    /// Opens the log in `dir` on `fs`. Recovery reads every segment, checks every
    /// checksum, drops a torn tail, and refuses corruption elsewhere (see
    /// [`crate::CorruptionPolicy`]); then a new segment is started.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        fs.create_dir_all(&dir)
            .map_err(|error| Error::io("creating directory", &dir, error))?;
        let lock = fs.lock(&dir).map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { path: dir.clone() }
            } else {
                Error::io("locking", &dir, error)
            }
        })?;
        let recovered = replay::recover(&*fs, &dir, config.corruption_policy, true)?;
        let mut segments = BTreeMap::new();
        for (number, segment) in recovered.segments {
            let file = fs
                .open(&segment.path)
                .map_err(|error| Error::io("opening", &segment.path, error))?;
            segments.insert(
                number,
                Segment {
                    path: segment.path,
                    file: Some(file),
                    groups: segment.groups,
                },
            );
        }
        let mut floors = BTreeMap::new();
        for (&group, &removed_at) in &recovered.removed {
            floors.insert(
                group,
                DurableFloor {
                    compacted_index: 0,
                    removed_at,
                },
            );
        }
        for (&group, state) in &recovered.groups {
            floors.entry(group).or_default().compacted_index = state.compacted_index;
        }
        let tail_segment = segments.keys().next_back().copied().unwrap_or(0);
        let state = State {
            groups: recovered.groups,
            segments,
            tail_segment,
            tail_bytes: 0,
            tail_zeroed: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_effects: Vec::new(),
            next_sequence: recovered.last_sequence + 1,
            durable_sequence: recovered.last_sequence,
            flushing: false,
            poisoned: None,
            floors,
            stats: LogStats::default(),
        };
        let log = Log {
            shared: Arc::new(Shared {
                fs,
                dir,
                config,
                state: Mutex::new(state),
                changed: Condvar::new(),
                recovery: recovered.report,
                _lock: lock,
            }),
        };
        // Start a new segment: its checkpoint lets every older segment go once the
        // groups are past it, and recovery never appends to a file it has repaired.
        let sequence = {
            let mut state = log.lock_state();
            log.roll(&mut state)
        };
        log.wait_durable(sequence)?;
        Ok(log)
    }

    /// What recovery found when the log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Counters of the work done since the log was opened.
    pub fn stats(&self) -> LogStats {
        self.lock_state().stats
    }

    /// The groups with state in the log, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock_state().groups.keys().copied().collect()
    }

    /// The storage of `group`: a group never written is empty (first index 1, last
    /// index 0, no members), as `MemStorage::new`, and is created by its first write.
    pub fn group(&self, group: GroupId) -> GroupStorage {
        GroupStorage::new(self.clone(), group)
    }

    /// Creates `group` as `MemStorage::with_conf_state` does, durably: its initial
    /// membership `conf_state` in a snapshot at `BOOTSTRAP_INDEX`/`BOOTSTRAP_TERM` with
    /// empty data, and hard state {term 1, no vote, commit 1}. Fails with
    /// [`Error::GroupExists`] if the group already has state.
    pub fn bootstrap_group(&self, group: GroupId, conf_state: ConfState) -> Result<GroupStorage> {
        if !self.with_group(group, GroupState::is_blank) {
            return Err(Error::GroupExists(group));
        }
        let mut batch = WriteBatch::new();
        let write = batch.group(group);
        write.snapshot = Some(Snapshot {
            metadata: concord_raft::SnapshotMetadata {
                index: concord_raft::storage::BOOTSTRAP_INDEX,
                term: concord_raft::storage::BOOTSTRAP_TERM,
                conf_state,
            },
            data: Bytes::new(),
        });
        write.hard_state = Some(HardState {
            term: concord_raft::storage::BOOTSTRAP_TERM,
            vote: concord_raft::NO_NODE,
            commit: concord_raft::storage::BOOTSTRAP_INDEX,
        });
        self.write(batch)?;
        Ok(self.group(group))
    }

    /// Makes `batch` durable: every group's part is checked first (nothing is written if
    /// any part is refused), snapshot data goes to snapshot files, then the batch is
    /// written and fsynced together with other writers' batches. Returns once it is
    /// durable; after a crash either all of it is there or none of it.
    ///
    /// An [`Error::is_fatal`] error means the log stopped: the node must restart.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.submit(batch)?.wait()
    }

    /// The first half of [`Log::write`]: checks `batch`, applies it to memory (reads see
    /// it at once) and queues it, without waiting for the disk. The returned
    /// [`Durable`] says when it is durable. Lets one group's driver have several
    /// batches in flight (send `Ready::messages` while persisting, persist the next
    /// `Ready` before the last is synced); batches become durable in submission order.
    ///
    /// A batch is flushed by whoever waits: wait on every `Durable` (a batch no one waits
    /// for is written by the next flush, if any).
    pub fn submit(&self, batch: WriteBatch) -> Result<Durable> {
        let mut ops: Vec<(GroupId, GroupOps)> = Vec::with_capacity(batch.writes.len());
        // (position in ops, metadata, data) of each snapshot to install.
        let mut installs = Vec::new();
        for (group, write) in batch.writes {
            if write.is_empty() {
                continue;
            }
            let GroupWrite {
                snapshot,
                entries,
                compact,
                hard_state,
                conf_state,
            } = write;
            // Validation needs only where the snapshot stands; the length and checksum
            // are filled in once its file is written.
            let install = snapshot.map(|snapshot| {
                let record = SnapshotRecord {
                    index: snapshot.metadata.index,
                    term: snapshot.metadata.term,
                    conf_state: snapshot.metadata.conf_state.clone(),
                    data_bytes: 0,
                    data_crc: 0,
                };
                installs.push((ops.len(), snapshot.metadata, snapshot.data));
                record
            });
            ops.push((
                group,
                GroupOps {
                    install,
                    entries,
                    compact,
                    hard_state,
                    conf_state,
                    ..GroupOps::default()
                },
            ));
        }
        if ops.is_empty() {
            return Ok(Durable {
                log: self.clone(),
                sequence: 0,
            });
        }
        if !installs.is_empty() {
            // Check first, so a refused batch writes no snapshot file. (If a concurrent
            // write to the same group gets it refused after all, the file is an orphan
            // that recovery deletes.)
            self.check(&ops)?;
            for (position, metadata, data) in installs {
                let group = ops[position].0;
                ops[position].1.install = Some(self.write_snapshot_file(group, &metadata, &data)?);
            }
        }
        let sequence = self.submit_ops(ops)?;
        Ok(Durable {
            log: self.clone(),
            sequence,
        })
    }

    /// Removes `group` and its snapshot from the log, durably. A no-op for a group
    /// with no state.
    pub fn remove_group(&self, group: GroupId) -> Result<()> {
        if !self.lock_state().groups.contains_key(&group) {
            return Ok(());
        }
        let sequence = self.submit_ops(vec![(
            group,
            GroupOps {
                remove: true,
                ..GroupOps::default()
            },
        )])?;
        self.wait_durable(sequence)
    }

    /// Records the application's snapshot of `group` at `index` (already applied),
    /// as `LogStore::create_snapshot`: the data goes to a new snapshot file, then a log
    /// record names it; the older snapshot file is deleted once that is durable.
    pub fn create_snapshot(
        &self,
        group: GroupId,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot> {
        let term = {
            let state = self.lock_state();
            let blank = GroupState::default();
            let current = state.groups.get(&group).unwrap_or(&blank);
            if index <= current.snapshot.index {
                return Err(refused(format!(
                    "snapshot at index {index} is not newer than the current one at index {}",
                    current.snapshot.index
                )));
            }
            current.term(index)?
        };
        let metadata = concord_raft::SnapshotMetadata {
            index,
            term,
            conf_state,
        };
        let record = self.write_snapshot_file(group, &metadata, &data)?;
        let sequence = self.submit_ops(vec![(
            group,
            GroupOps {
                created: Some(record),
                ..GroupOps::default()
            },
        )])?;
        self.wait_durable(sequence)?;
        Ok(Snapshot { metadata, data })
    }

    /// A reader of `group`'s latest snapshot file, for streaming it in chunks; None if
    /// the group has no snapshot.
    pub fn snapshot_reader(&self, group: GroupId) -> Result<Option<SnapshotReader>> {
        let record = self.with_group(group, |state| state.snapshot.clone());
        if snapshot::is_none(&record) {
            return Ok(None);
        }
        let path = snapshot_path(&self.shared.dir, group, record.index);
        let reader = SnapshotReader::open(&*self.shared.fs, &path)?;
        reader.check_matches(group, &record)?;
        Ok(Some(reader))
    }

    /// `group`'s latest snapshot with its data, checked against its checksum.
    pub(crate) fn read_snapshot(&self, group: GroupId) -> Result<Snapshot> {
        match self.snapshot_reader(group)? {
            None => Ok(Snapshot::default()),
            Some(reader) => Ok(Snapshot {
                metadata: reader.metadata().clone(),
                data: reader.read_data()?,
            }),
        }
    }

    pub(crate) fn with_group<T>(&self, group: GroupId, read: impl FnOnce(&GroupState) -> T) -> T {
        let state = self.lock_state();
        match state.groups.get(&group) {
            Some(found) => read(found),
            None => read(&GroupState::default()),
        }
    }

    /// Entries `[low, high)` of `group` within `max_bytes` (at least one), from the cache
    /// or from their records on disk, checked against their checksums.
    pub(crate) fn read_entries(
        &self,
        group: GroupId,
        low: Index,
        high: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>> {
        let (plan, files) = {
            let state = self.lock_state();
            let blank = GroupState::default();
            let plan = state
                .groups
                .get(&group)
                .unwrap_or(&blank)
                .plan_read(low, high, max_bytes)?;
            // One (path, file) per segment the plan touches, in the plan's order.
            let mut files = Vec::new();
            for (span, _, _) in &plan.disk {
                if files.iter().any(|(id, _, _)| *id == span.segment) {
                    continue;
                }
                let segment = state.segments.get(&span.segment);
                let file = segment.and_then(|segment| segment.file.clone());
                match (segment, file) {
                    (Some(segment), Some(file)) => {
                        files.push((span.segment, segment.path.clone(), file))
                    }
                    _ => {
                        return Err(Error::Poisoned(format!(
                            "entries of group {group} point at segment {} which is not on disk",
                            span.segment
                        )))
                    }
                }
            }
            (plan, files)
        };
        let mut out = Vec::new();
        let mut total_bytes = 0u64;
        let mut take = |entry: Entry, out: &mut Vec<Entry>| -> bool {
            total_bytes = total_bytes.saturating_add(entry.size_bytes());
            if !out.is_empty() && total_bytes > max_bytes {
                return false;
            }
            out.push(entry);
            true
        };
        for (span, from, to) in plan.disk {
            let (_, path, file) = files
                .iter()
                .find(|(id, _, _)| *id == span.segment)
                .expect("a file per planned segment");
            for entry in read_entries_record(&**file, path, &span, group)? {
                if entry.index < from || entry.index >= to {
                    continue;
                }
                if !take(entry, &mut out) {
                    return Ok(out);
                }
            }
        }
        for entry in plan.cached {
            if !take(entry, &mut out) {
                break;
            }
        }
        Ok(out)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poison(&self, error: &Error) {
        let mut state = self.lock_state();
        if state.poisoned.is_none() {
            state.poisoned = Some(error.to_string());
        }
        self.shared.changed.notify_all();
    }

    fn write_snapshot_file(
        &self,
        group: GroupId,
        metadata: &concord_raft::SnapshotMetadata,
        data: &[u8],
    ) -> Result<SnapshotRecord> {
        if let Some(reason) = &self.lock_state().poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        snapshot::write_file(&*self.shared.fs, &self.shared.dir, group, metadata, data).inspect_err(
            |error| {
                if error.is_fatal() {
                    self.poison(error);
                }
            },
        )
    }

    /// Validates without writing.
    fn check(&self, ops: &[(GroupId, GroupOps)]) -> Result<()> {
        let state = self.lock_state();
        let blank = GroupState::default();
        for (group, group_ops) in ops {
            validate(state.groups.get(group).unwrap_or(&blank), group_ops)?;
        }
        Ok(())
    }

    /// Validates `ops`, applies them to memory and queues their records; returns the
    /// batch's sequence number (0 if there was nothing to write).
    fn submit_ops(&self, ops: Vec<(GroupId, GroupOps)>) -> Result<u64> {
        let mut state = self.lock_state();
        // Back-pressure: too much is waiting for the disk.
        while state.poisoned.is_none()
            && !state.pending.is_empty()
            && state.pending_bytes >= self.shared.config.pending_bytes_max
        {
            if state.flushing {
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            } else {
                let (guard, _) = self.flush(state);
                state = guard;
            }
        }
        if let Some(reason) = &state.poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        let blank = GroupState::default();
        let mut plans = Vec::with_capacity(ops.len());
        for (group, group_ops) in &ops {
            plans.push(validate(
                state.groups.get(group).unwrap_or(&blank),
                group_ops,
            )?);
        }
        if ops
            .iter()
            .zip(&plans)
            .all(|((_, group_ops), plan)| writes_nothing(group_ops, plan))
        {
            return Ok(0);
        }
        if state.tail_bytes >= self.shared.config.segment_bytes_max {
            self.roll(&mut state);
        }
        Ok(self.encode(&mut state, &ops, &plans))
    }

    /// Appends one batch's records to the pending bytes of the tail segment and applies
    /// it to memory. Returns the batch's sequence number.
    fn encode(&self, state: &mut State, ops: &[(GroupId, GroupOps)], plans: &[Plan]) -> u64 {
        let config = &self.shared.config;
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let segment = state.tail_segment;
        if state
            .pending
            .last()
            .is_none_or(|chunk| chunk.segment != segment)
        {
            state.pending.push(Chunk {
                segment,
                offset: state.tail_bytes,
                bytes: Vec::new(),
                create: false,
                zero_fill: None,
            });
        }
        let chunk = state.pending.last_mut().expect("tail chunk");
        let chunk_offset = chunk.offset;
        let mut bytes = std::mem::take(&mut chunk.bytes);
        let start_bytes = bytes.len();
        let mut record_count = 0u32;
        let mut effects = Vec::new();
        let durable_sequence = state.durable_sequence;
        for ((group, group_ops), plan) in ops.iter().zip(plans) {
            let group = *group;
            if writes_nothing(group_ops, plan) {
                continue;
            }
            if group_ops.remove {
                put_record(&mut bytes, RecordType::RemoveGroup, group, &[]);
                record_count += 1;
                if let Some(removed) = state.groups.remove(&group) {
                    if !snapshot::is_none(&removed.snapshot) {
                        effects.push(Effect::DeleteFile(snapshot_path(
                            &self.shared.dir,
                            group,
                            removed.snapshot.index,
                        )));
                    }
                }
                effects.push(Effect::Removed { group, sequence });
                continue;
            }
            let group_state = state.groups.entry(group).or_default();
            if let Some(install) = &group_ops.install {
                let start = begin_record(&mut bytes, RecordType::Snapshot, group);
                record::put_snapshot(&mut bytes, SnapshotOrigin::Installed, install);
                finish_record(&mut bytes, start);
                record_count += 1;
                if !snapshot::is_none(&group_state.snapshot) {
                    effects.push(Effect::DeleteFile(snapshot_path(
                        &self.shared.dir,
                        group,
                        group_state.snapshot.index,
                    )));
                }
                group_state.install_snapshot(install.clone());
                effects.push(Effect::Compacted {
                    group,
                    index: install.index,
                });
            }
            if let Some(index) = plan.truncate_after {
                put_record(
                    &mut bytes,
                    RecordType::TruncateAfter,
                    group,
                    &record::encode_index_term(index, 0),
                );
                record_count += 1;
                group_state.truncate_after(index);
            }
            let mut remaining: &[Entry] = &group_ops.entries;
            while !remaining.is_empty() {
                // Split so each record holds at most entries_record_bytes_max of data
                // (and at least one entry).
                let mut count = 0;
                let mut payload_bytes = 0u64;
                while count < remaining.len() {
                    let entry_bytes =
                        (record::ENTRY_HEADER_BYTES + remaining[count].data.len()) as u64;
                    if count > 0 && payload_bytes + entry_bytes > config.entries_record_bytes_max {
                        break;
                    }
                    payload_bytes += entry_bytes;
                    count += 1;
                }
                let (part, rest) = remaining.split_at(count);
                remaining = rest;
                let offset = chunk_offset + bytes.len() as u64;
                let start = begin_record(&mut bytes, RecordType::Entries, group);
                bytes.reserve(record::entries_payload_bytes(part));
                record::put_entries(&mut bytes, part);
                finish_record(&mut bytes, start);
                record_count += 1;
                let span = Span {
                    first_index: part[0].index,
                    segment,
                    offset,
                    record_bytes: (bytes.len() - start) as u64,
                };
                group_state.append(
                    part,
                    span,
                    sequence,
                    config.entry_cache_bytes_max,
                    durable_sequence,
                );
                state.stats.entries += part.len() as u64;
            }
            if let Some(last) = group_ops.entries.last() {
                let segment_group = state
                    .segments
                    .get_mut(&segment)
                    .expect("tail segment")
                    .groups
                    .entry(group)
                    .or_default();
                segment_group.max_index = segment_group.max_index.max(last.index);
                segment_group.last_sequence = sequence;
            }
            if let Some(created) = &group_ops.created {
                let start = begin_record(&mut bytes, RecordType::Snapshot, group);
                record::put_snapshot(&mut bytes, SnapshotOrigin::Created, created);
                finish_record(&mut bytes, start);
                record_count += 1;
                if !snapshot::is_none(&group_state.snapshot) {
                    effects.push(Effect::DeleteFile(snapshot_path(
                        &self.shared.dir,
                        group,
                        group_state.snapshot.index,
                    )));
                }
                group_state.snapshot = created.clone();
            }
            if let Some((index, term)) = plan.compact {
                put_record(
                    &mut bytes,
                    RecordType::Compact,
                    group,
                    &record::encode_index_term(index, term),
                );
                record_count += 1;
                group_state.compact(index, term);
                effects.push(Effect::Compacted { group, index });
            }
            if let Some(hard_state) = group_ops.hard_state {
                let start = begin_record(&mut bytes, RecordType::HardState, group);
                record::put_hard_state(&mut bytes, &hard_state);
                finish_record(&mut bytes, start);
                record_count += 1;
                group_state.set_hard_state(hard_state);
            }
            if let Some(conf_state) = &group_ops.conf_state {
                let start = begin_record(&mut bytes, RecordType::ConfState, group);
                record::put_conf_state(&mut bytes, conf_state);
                finish_record(&mut bytes, start);
                record_count += 1;
                group_state.conf_state = conf_state.clone();
            }
        }
        put_record(
            &mut bytes,
            RecordType::BatchCommit,
            0,
            &record::encode_batch_commit(BatchCommit {
                sequence,
                record_count,
            }),
        );
        let added = (bytes.len() - start_bytes) as u64;
        state.pending.last_mut().expect("tail chunk").bytes = bytes;
        state.tail_bytes += added;
        state.pending_bytes += added;
        state.pending_effects.extend(effects);
        sequence
    }

    /// Starts a new segment: its header and a checkpoint of every group, as a batch of
    /// its own. Returns that batch's sequence number.
    fn roll(&self, state: &mut State) -> u64 {
        let number = state.tail_segment + 1;
        // A finished segment must end at its last record (recovery takes damage in
        // any segment but the last for corruption). Zeros never go past
        // segment_bytes_max and a segment is finished only once its records reach
        // it, so none are left behind.
        debug_assert!(state.tail_zeroed <= state.tail_bytes);
        state.tail_zeroed = 0;
        let path = self.shared.dir.join(segment_file_name(number));
        state.segments.insert(
            number,
            Segment {
                path,
                file: None,
                groups: BTreeMap::new(),
            },
        );
        let mut bytes = Vec::new();
        put_record(
            &mut bytes,
            RecordType::SegmentHeader,
            0,
            &record::encode_segment_header(number),
        );
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let mut record_count = 0u32;
        for (&group, group_state) in &state.groups {
            let start = begin_record(&mut bytes, RecordType::Checkpoint, group);
            record::put_checkpoint(&mut bytes, &group_state.checkpoint());
            finish_record(&mut bytes, start);
            record_count += 1;
        }
        put_record(
            &mut bytes,
            RecordType::BatchCommit,
            0,
            &record::encode_batch_commit(BatchCommit {
                sequence,
                record_count,
            }),
        );
        state.tail_segment = number;
        state.tail_bytes = bytes.len() as u64;
        state.pending_bytes += bytes.len() as u64;
        state.pending.push(Chunk {
            segment: number,
            offset: 0,
            bytes,
            create: true,
            zero_fill: None,
        });
        sequence
    }

    /// Returns once batch `sequence` is durable, flushing if no one else is.
    fn wait_durable(&self, sequence: u64) -> Result<()> {
        let mut state = self.lock_state();
        loop {
            if state.durable_sequence >= sequence {
                return Ok(());
            }
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned(reason.clone()));
            }
            if state.flushing {
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            let (guard, result) = self.flush(state);
            state = guard;
            // The flusher reports its own error as it happened; others see `Poisoned`.
            result?;
        }
    }

    /// One flush: writes every pending batch, fsyncs, then applies what follows from
    /// their durability (compaction floors, file and segment deletion).
    fn flush<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Result<()>) {
        debug_assert!(!state.flushing);
        state.flushing = true;
        let mut chunks = std::mem::take(&mut state.pending);
        let effects = std::mem::take(&mut state.pending_effects);
        state.pending_bytes = 0;
        let end_sequence = state.next_sequence - 1;
        let preallocate = self.shared.config.preallocate_bytes;
        let segment_bytes_max = self.shared.config.segment_bytes_max;
        for chunk in &mut chunks {
            if preallocate == 0 || chunk.segment != state.tail_segment {
                continue;
            }
            let end = chunk.offset + chunk.bytes.len() as u64;
            if end <= state.tail_zeroed {
                continue;
            }
            // Zeros up to `preallocate` past the end, not far past where the segment
            // will be finished anyway.
            let to = (end + preallocate).min(end.max(segment_bytes_max));
            let from = end.max(state.tail_zeroed);
            if to > from {
                chunk.zero_fill = Some((from, to));
            }
            state.tail_zeroed = to.max(end);
        }
        let targets: Vec<(PathBuf, Option<Arc<dyn File>>)> = chunks
            .iter()
            .map(|chunk| {
                let segment = &state.segments[&chunk.segment];
                (segment.path.clone(), segment.file.clone())
            })
            .collect();
        self.shared.changed.notify_all();
        drop(state);

        let result = self.write_chunks(&chunks, targets);

        let mut state = self.lock_state();
        let (created, syncs) = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                state.flushing = false;
                state.poisoned = Some(error.to_string());
                self.shared.changed.notify_all();
                return (state, Err(error));
            }
        };
        for (number, file) in created {
            if let Some(segment) = state.segments.get_mut(&number) {
                segment.file = Some(file);
            }
        }
        let batches = end_sequence - state.durable_sequence;
        state.durable_sequence = end_sequence;
        state.stats.batches += batches;
        state.stats.flushes += 1;
        state.stats.syncs += syncs;
        state.stats.bytes_written += chunks
            .iter()
            .map(|chunk| chunk.bytes.len() as u64)
            .sum::<u64>();

        let mut files_to_delete = Vec::new();
        for effect in effects {
            match effect {
                Effect::Compacted { group, index } => {
                    let floor = state.floors.entry(group).or_default();
                    floor.compacted_index = floor.compacted_index.max(index);
                }
                Effect::Removed { group, sequence } => {
                    state.floors.insert(
                        group,
                        DurableFloor {
                            compacted_index: 0,
                            removed_at: sequence,
                        },
                    );
                }
                Effect::DeleteFile(path) => files_to_delete.push(path),
            }
        }
        let segments_to_delete = deletable_segments(&state);
        if !files_to_delete.is_empty() || !segments_to_delete.is_empty() {
            let segment_paths: Vec<PathBuf> = segments_to_delete
                .iter()
                .map(|number| state.segments[number].path.clone())
                .collect();
            drop(state);
            let deleted = self.delete_files(&files_to_delete, &segment_paths);
            state = self.lock_state();
            if let Err(error) = deleted {
                state.flushing = false;
                state.poisoned = Some(error.to_string());
                self.shared.changed.notify_all();
                return (state, Err(error));
            }
            for number in &segments_to_delete {
                state.segments.remove(number);
            }
            state.stats.segments_deleted += segments_to_delete.len() as u64;
            forget_floors(&mut state);
        }
        state.flushing = false;
        self.shared.changed.notify_all();
        (state, Ok(()))
    }

    /// Writes `chunks` to their segment files and fsyncs them. A new segment is created
    /// only after everything before it is synced, and the directory is synced after it.
    /// Returns the files created and the number of fsyncs.
    #[allow(clippy::type_complexity)]
    fn write_chunks(
        &self,
        chunks: &[Chunk],
        targets: Vec<(PathBuf, Option<Arc<dyn File>>)>,
    ) -> Result<(Vec<(u64, Arc<dyn File>)>, u64)> {
        let fs = &*self.shared.fs;
        let mut created: Vec<(u64, Arc<dyn File>)> = Vec::new();
        let mut unsynced: Vec<(PathBuf, Arc<dyn File>)> = Vec::new();
        let mut syncs = 0;
        for (chunk, (path, file)) in chunks.iter().zip(targets) {
            let file = if chunk.create {
                for (path, file) in unsynced.drain(..) {
                    file.sync_data().map_err(fatal("syncing", &path))?;
                    syncs += 1;
                }
                let file = fs.create(&path).map_err(fatal("creating", &path))?;
                created.push((chunk.segment, file.clone()));
                file
            } else if let Some(file) = file {
                file
            } else {
                created
                    .iter()
                    .find(|(number, _)| *number == chunk.segment)
                    .map(|(_, file)| file.clone())
                    .ok_or_else(|| {
                        Error::Poisoned(format!("no file for segment {}", path.display()))
                    })?
            };
            file.write_at(chunk.offset, &chunk.bytes)
                .map_err(fatal("writing", &path))?;
            if let Some((from, to)) = chunk.zero_fill {
                write_zeros(&*file, from, to).map_err(fatal("preallocating", &path))?;
            }
            if !unsynced.iter().any(|(known, _)| *known == path) {
                unsynced.push((path, file));
            }
        }
        for (path, file) in unsynced {
            file.sync_data().map_err(fatal("syncing", &path))?;
            syncs += 1;
        }
        if !created.is_empty() {
            let dir = &self.shared.dir;
            fs.sync_dir(dir).map_err(fatal("syncing directory", dir))?;
        }
        Ok((created, syncs))
    }

    /// Deletes old snapshot files, then whole segments oldest first, syncing the
    /// directory after each segment so the deleted ones are always a prefix.
    fn delete_files(&self, files: &[PathBuf], segments: &[PathBuf]) -> Result<()> {
        let fs = &*self.shared.fs;
        let dir = &self.shared.dir;
        for path in files {
            match fs.remove(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(fatal("removing", path)(error)),
            }
        }
        for path in segments {
            fs.remove(path).map_err(fatal("removing", path))?;
            fs.sync_dir(dir).map_err(fatal("syncing directory", dir))?;
        }
        Ok(())
    }
}

/// Writes zeros over `[from, to)` of `file`, 64 KiB at a time.
fn write_zeros(file: &dyn File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut offset = from;
    while offset < to {
        let length = (to - offset).min(ZEROS.len() as u64) as usize;
        file.write_at(offset, &ZEROS[..length])?;
        offset += length as u64;
    }
    Ok(())
}

/// Turns an IO error of `operation` on `path` into the fatal error it is.
fn fatal(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Fatal {
        operation,
        path,
        source,
    }
}

/// Segments that can go: the oldest ones, before the tail, whose successor is on disk,
/// holding only entries every group has durably compacted (or that belong to a group
/// durably removed since).
fn deletable_segments(state: &State) -> Vec<u64> {
    let mut deletable = Vec::new();
    for (&number, segment) in &state.segments {
        if number == state.tail_segment {
            break;
        }
        let successor_on_disk = state
            .segments
            .get(&(number + 1))
            .is_some_and(|next| next.file.is_some());
        let pending = state.pending.iter().any(|chunk| chunk.segment == number);
        if !successor_on_disk || pending {
            break;
        }
        let passed = segment.groups.iter().all(|(group, held)| {
            let floor = state.floors.get(group).copied().unwrap_or_default();
            held.max_index <= floor.compacted_index || held.last_sequence < floor.removed_at
        });
        if !passed {
            break;
        }
        deletable.push(number);
    }
    deletable
}

/// Drops floors of removed groups no segment mentions any more.
fn forget_floors(state: &mut State) {
    let State {
        floors,
        groups,
        segments,
        ..
    } = state;
    floors.retain(|group, _| {
        groups.contains_key(group)
            || segments
                .values()
                .any(|segment| segment.groups.contains_key(group))
    });
}
