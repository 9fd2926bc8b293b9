//! Recovery: read every segment, check every checksum, rebuild each group's state and
//! entry index, drop a torn tail, and refuse corruption anywhere else.
//!
//! A record that fails its checks at offset X is a torn tail only if it is in the last
//! segment and no intact record follows it: a crash cuts the last write short, it does
//! not damage data before intact data. Then everything after the last complete batch is
//! dropped (a batch is applied only once its commit record is read, so a half-written
//! batch goes whole). Anything else, including records that are intact but contradict
//! the log before them, is corruption: recovery fails with the file and byte offset,
//! or with [`CorruptionPolicy::CutLog`] cuts the log at the last complete batch before
//! it and deletes every later segment.
//!
//! Every segment starts with a checkpoint batch holding each group's metadata, so
//! replay starts from the oldest segment still there; its checkpoint may describe
//! entries in deleted segments, which later records must have compacted away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::CorruptionPolicy;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::group::{GroupState, Span};
use crate::record::{self, parse_record, Damage, Header, RecordType, SnapshotOrigin};
use crate::segment::{parse_segment_file_name, segment_file_name, SegmentGroup};
use crate::snapshot::{self, SnapshotReader};
use crate::GroupId;

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Complete batches replayed.
    pub batches: u64,
    /// The torn tail dropped, if the last write was cut short by a crash.
    pub torn_tail: Option<TornTail>,
    /// Where the log was cut at corruption, under [`CorruptionPolicy::CutLog`].
    pub cut: Option<LogCut>,
    /// Files deleted: snapshot files no record names (written just before a crash),
    /// unfinished temp files, and a last segment with no complete batch.
    pub removed_files: Vec<PathBuf>,
}

/// A last write cut short by a crash, dropped by recovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the log now ends: the end of the last complete batch.
    pub offset: u64,
    /// Bytes dropped after it.
    pub bytes_dropped: u64,
    /// What was wrong at the first damaged byte.
    pub reason: String,
}

/// Where the log was cut because of corruption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogCut {
    /// The corruption, as the error recovery would have refused to start with.
    pub corruption: String,
    /// The segment file cut.
    pub path: PathBuf,
    /// Where the log now ends in it.
    pub offset: u64,
    /// Later segment files deleted.
    pub segments_deleted: Vec<PathBuf>,
}

/// A segment as recovery leaves it.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    pub path: PathBuf,
    pub groups: BTreeMap<GroupId, SegmentGroup>,
    /// Bytes up to the end of its last complete batch.
    pub valid_bytes: u64,
    /// Bytes of the file as found.
    pub file_bytes: u64,
    /// True if it holds at least its checkpoint batch.
    pub has_checkpoint: bool,
}

/// The state the log starts from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub groups: BTreeMap<GroupId, GroupState>,
    pub segments: BTreeMap<u64, RecoveredSegment>,
    /// Sequence number of the last complete batch (0 for an empty log).
    pub last_sequence: u64,
    /// Groups removed during the replayed history, with the removing batch.
    pub removed: BTreeMap<GroupId, u64>,
    pub report: RecoveryReport,
}

/// Corruption found while scanning, with where the log would be cut to skip it.
struct Corrupt {
    error: Error,
    segment: u64,
    /// End of the last complete batch before the corruption in `segment`.
    cut_offset: u64,
}

/// Reads the log in `dir`. With `repair`, also truncates a torn tail, applies a cut,
/// and deletes orphan files; without it (inspection) nothing is changed.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    policy: CorruptionPolicy,
    repair: bool,
) -> Result<Recovered> {
    let names = fs
        .list_dir(dir)
        .map_err(|error| Error::io("listing", dir, error))?;
    let numbers: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .collect();
    let mut recovered = match scan(fs, dir, &numbers, None) {
        Ok(recovered) => recovered,
        Err(corrupt) if policy == CorruptionPolicy::CutLog => {
            let mut recovered = scan(
                fs,
                dir,
                &numbers,
                Some((corrupt.segment, corrupt.cut_offset)),
            )
            .map_err(|second| second.error)?;
            let path = dir.join(segment_file_name(corrupt.segment));
            let segments_deleted = numbers
                .iter()
                .filter(|&&number| number > corrupt.segment)
                .map(|&number| dir.join(segment_file_name(number)))
                .collect();
            recovered.report.cut = Some(LogCut {
                corruption: corrupt.error.to_string(),
                path,
                offset: corrupt.cut_offset,
                segments_deleted,
            });
            recovered
        }
        Err(corrupt) => return Err(corrupt.error),
    };
    for (&group, state) in &recovered.groups {
        if let Some((first, last)) = state.unknown_entries() {
            let first_segment = recovered
                .segments
                .values()
                .next()
                .map(|segment| segment.path.clone())
                .unwrap_or_else(|| dir.to_owned());
            return Err(Error::corruption(
                first_segment,
                0,
                format!(
                    "entries {first}..={last} of group {group} are in no segment: a segment \
                     was deleted while they were still needed"
                ),
            ));
        }
    }
    // The snapshot every group names must be there and intact.
    for (&group, state) in &recovered.groups {
        if snapshot::is_none(&state.snapshot) {
            continue;
        }
        let path = dir.join(snapshot::file_name(group, state.snapshot.index));
        let reader = SnapshotReader::open(fs, &path)?;
        reader.check_matches(group, &state.snapshot)?;
        reader.verify()?;
    }
    if repair {
        apply_repairs(fs, dir, &names, &numbers, &mut recovered)?;
    }
    Ok(recovered)
}

/// Makes the disk match what recovery decided: the cut, the torn tail, empty segments
/// and orphan snapshot files.
fn apply_repairs(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[String],
    numbers: &[u64],
    recovered: &mut Recovered,
) -> Result<()> {
    let io = |operation, path: &Path| {
        let path = path.to_owned();
        move |error| Error::io(operation, path, error)
    };
    // Newest first, syncing after each, so the segments left are always a prefix.
    for &number in numbers.iter().rev() {
        if recovered.segments.contains_key(&number) {
            continue;
        }
        let path = dir.join(segment_file_name(number));
        fs.remove(&path).map_err(io("removing", &path))?;
        fs.sync_dir(dir).map_err(io("syncing directory", dir))?;
    }
    // Cut the last segment back to its last complete batch.
    if let Some((_, last)) = recovered.segments.iter().next_back() {
        if last.valid_bytes < last.file_bytes {
            let file = fs.open(&last.path).map_err(io("opening", &last.path))?;
            file.truncate(last.valid_bytes)
                .map_err(io("truncating", &last.path))?;
            file.sync_data().map_err(io("syncing", &last.path))?;
        }
    }
    // A last segment without its checkpoint (cut short while being started) is dropped.
    if let Some((&number, last)) = recovered.segments.iter().next_back() {
        if !last.has_checkpoint {
            fs.remove(&last.path).map_err(io("removing", &last.path))?;
            fs.sync_dir(dir).map_err(io("syncing directory", dir))?;
            recovered.report.removed_files.push(last.path.clone());
            recovered.segments.remove(&number);
        }
    }
    for name in names {
        let orphan = if name.ends_with(snapshot::TEMP_SUFFIX) {
            name.starts_with("snapshot-")
        } else if let Some((group, index)) = snapshot::parse_file_name(name) {
            recovered
                .groups
                .get(&group)
                .is_none_or(|state| state.snapshot.index != index)
        } else {
            false
        };
        if orphan {
            let path = dir.join(name);
            fs.remove(&path).map_err(io("removing", &path))?;
            recovered.report.removed_files.push(path);
        }
    }
    Ok(())
}

/// Where replay is.
struct Scanner<'a> {
    fs: &'a dyn FileSystem,
    groups: BTreeMap<GroupId, GroupState>,
    segments: BTreeMap<u64, RecoveredSegment>,
    removed: BTreeMap<GroupId, u64>,
    /// The sequence number the next batch must have (None before the first batch).
    next_sequence: Option<u64>,
    report: RecoveryReport,
}

/// A record of a batch not yet committed.
struct PendingRecord {
    offset: u64,
    header: Header,
    /// Payload position in the segment buffer.
    payload_start: usize,
}

/// Replays segments `numbers` in order, stopping at `stop` (segment, offset) if given.
fn scan(
    fs: &dyn FileSystem,
    dir: &Path,
    numbers: &[u64],
    stop: Option<(u64, u64)>,
) -> std::result::Result<Recovered, Corrupt> {
    let mut scanner = Scanner {
        fs,
        groups: BTreeMap::new(),
        segments: BTreeMap::new(),
        removed: BTreeMap::new(),
        next_sequence: None,
        report: RecoveryReport::default(),
    };
    for (position, &number) in numbers.iter().enumerate() {
        let path = dir.join(segment_file_name(number));
        if position > 0 && numbers[position - 1] + 1 != number {
            return Err(Corrupt {
                error: Error::corruption(
                    &path,
                    0,
                    format!("segment {} is missing before it", numbers[position - 1] + 1),
                ),
                segment: numbers[position - 1],
                cut_offset: scanner.segments[&numbers[position - 1]].valid_bytes,
            });
        }
        let end = match stop {
            Some((segment, offset)) if segment == number => Some(offset),
            _ => None,
        };
        let is_last = position + 1 == numbers.len() || end.is_some();
        scanner.scan_segment(number, &path, is_last, end)?;
        if end.is_some() {
            break;
        }
    }
    let last_sequence = scanner.next_sequence.map_or(0, |next| next - 1);
    Ok(Recovered {
        groups: scanner.groups,
        segments: scanner.segments,
        last_sequence,
        removed: scanner.removed,
        report: scanner.report,
    })
}

/// True if an intact record starts anywhere in `bytes` at or after `from`.
fn intact_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(record::HEADER_BYTES - 1))
        .any(|offset| parse_record(&bytes[offset..]).is_ok())
}

impl Scanner<'_> {
    fn scan_segment(
        &mut self,
        number: u64,
        path: &Path,
        is_last: bool,
        end: Option<u64>,
    ) -> std::result::Result<(), Corrupt> {
        let corrupt = |offset: u64, cut_offset: u64, reason: String| Corrupt {
            error: Error::corruption(path, offset, reason),
            segment: number,
            cut_offset,
        };
        let plain = |error: Error| Corrupt {
            error,
            segment: number,
            cut_offset: 0,
        };
        let file = self
            .fs
            .open(path)
            .map_err(|error| plain(Error::io("opening", path, error)))?;
        let file_bytes = file
            .len()
            .map_err(|error| plain(Error::io("reading the length of", path, error)))?;
        let scan_bytes = end.map_or(file_bytes, |end| end.min(file_bytes));
        let mut bytes = vec![0u8; scan_bytes as usize];
        file.read_at(0, &mut bytes)
            .map_err(|error| plain(Error::io("reading", path, error)))?;
        drop(file);
        self.report.segments += 1;
        self.report.bytes += scan_bytes;
        let first_segment = self.segments.is_empty();
        self.segments.insert(
            number,
            RecoveredSegment {
                path: path.to_owned(),
                groups: BTreeMap::new(),
                valid_bytes: 0,
                file_bytes,
                has_checkpoint: false,
            },
        );

        let mut position = 0usize;
        let mut last_good = 0u64;
        let mut batch: Vec<PendingRecord> = Vec::new();
        let mut batch_start = 0u64;
        let mut batches_in_segment = 0u64;
        loop {
            let parsed = if position == bytes.len() {
                if batch.is_empty() && position > 0 {
                    break;
                }
                Err(if position == 0 {
                    "empty segment file"
                } else {
                    "batch without its commit record"
                })
            } else {
                parse_record(&bytes[position..])
                    .map(|(header, _)| header)
                    .map_err(Damage::describe)
            };
            let header = match parsed {
                Ok(header) => header,
                Err(reason) => {
                    // Torn tail: last segment, nothing intact after the damage.
                    if is_last && !intact_record_after(&bytes, position + 1) {
                        if last_good < file_bytes && end.is_none() {
                            // Zeros only: space written ahead of the tail
                            // (LogConfig::preallocate_bytes), not a cut-short write.
                            let zeros = bytes[last_good as usize..].iter().all(|&byte| byte == 0);
                            self.report.torn_tail = Some(TornTail {
                                path: path.to_owned(),
                                offset: last_good,
                                bytes_dropped: file_bytes - last_good,
                                reason: if zeros {
                                    "unused preallocated space (zeros)".to_owned()
                                } else {
                                    reason.to_owned()
                                },
                            });
                        }
                        break;
                    }
                    let offset = if position == bytes.len() {
                        batch_start
                    } else {
                        position as u64
                    };
                    return Err(corrupt(offset, last_good, reason.to_owned()));
                }
            };
            let offset = position as u64;
            let next = position + header.record_bytes() as usize;
            if position == 0 {
                if header.kind != RecordType::SegmentHeader {
                    return Err(corrupt(
                        0,
                        0,
                        "segment does not start with a segment header".into(),
                    ));
                }
                let found = record::decode_segment_header(&bytes[record::HEADER_BYTES..next])
                    .map_err(|malformed| corrupt(0, 0, malformed.0))?;
                if found != number {
                    return Err(corrupt(
                        0,
                        0,
                        format!("segment header says segment {found}, the file name {number}"),
                    ));
                }
                position = next;
                last_good = next as u64;
                batch_start = last_good;
                continue;
            }
            match header.kind {
                RecordType::SegmentHeader => {
                    return Err(corrupt(
                        offset,
                        last_good,
                        "segment header in the middle of a segment".into(),
                    ));
                }
                RecordType::BatchCommit => {
                    let payload = &bytes[position + record::HEADER_BYTES..next];
                    let commit = record::decode_batch_commit(payload)
                        .map_err(|malformed| corrupt(offset, last_good, malformed.0))?;
                    if commit.record_count as usize != batch.len() {
                        return Err(corrupt(
                            offset,
                            last_good,
                            format!(
                                "batch commit counts {} records, the batch has {}",
                                commit.record_count,
                                batch.len()
                            ),
                        ));
                    }
                    if let Some(expected) = self.next_sequence {
                        if commit.sequence != expected {
                            return Err(corrupt(
                                offset,
                                last_good,
                                format!(
                                    "batch sequence {} where {expected} was expected: batches \
                                     are missing or repeated",
                                    commit.sequence
                                ),
                            ));
                        }
                    }
                    let checkpoint = batches_in_segment == 0;
                    self.apply_batch(
                        number,
                        &bytes,
                        &batch,
                        commit.sequence,
                        checkpoint,
                        first_segment,
                    )
                    .map_err(|reason| corrupt(batch_start, last_good, reason))?;
                    self.next_sequence = Some(commit.sequence + 1);
                    self.report.batches += 1;
                    batches_in_segment += 1;
                    batch.clear();
                    last_good = next as u64;
                    batch_start = last_good;
                    let segment = self.segments.get_mut(&number).expect("inserted");
                    segment.valid_bytes = last_good;
                    segment.has_checkpoint = true;
                }
                _ => batch.push(PendingRecord {
                    offset,
                    header,
                    payload_start: position + record::HEADER_BYTES,
                }),
            }
            position = next;
        }
        let segment = self.segments.get_mut(&number).expect("inserted");
        segment.valid_bytes = last_good;
        if !is_last && !segment.has_checkpoint {
            return Err(corrupt(0, 0, "segment has no checkpoint batch".into()));
        }
        Ok(())
    }

    /// Applies a committed batch, checking each record against the state before it.
    /// An error is a reason: the batch contradicts the log.
    fn apply_batch(
        &mut self,
        number: u64,
        bytes: &[u8],
        batch: &[PendingRecord],
        sequence: u64,
        checkpoint: bool,
        first_segment: bool,
    ) -> std::result::Result<(), String> {
        let payload_of = |pending: &PendingRecord| {
            &bytes[pending.payload_start
                ..pending.payload_start + pending.header.payload_bytes as usize]
        };
        let malformed = |pending: &PendingRecord, error: record::Malformed| {
            format!(
                "{} record at byte {}: {}",
                pending.header.kind.name(),
                pending.offset,
                error.0
            )
        };
        if checkpoint {
            if let Some(other) = batch
                .iter()
                .find(|pending| pending.header.kind != RecordType::Checkpoint)
            {
                return Err(format!(
                    "the first batch of a segment holds a {} record, not only checkpoints",
                    other.header.kind.name()
                ));
            }
            if !first_segment && batch.len() != self.groups.len() {
                return Err(format!(
                    "checkpoint of {} groups where the log has {}",
                    batch.len(),
                    self.groups.len()
                ));
            }
            for pending in batch {
                let group = pending.header.group;
                let checkpoint = record::decode_checkpoint(payload_of(pending))
                    .map_err(|error| malformed(pending, error))?;
                if first_segment {
                    if self
                        .groups
                        .insert(group, GroupState::from_checkpoint(&checkpoint))
                        .is_some()
                    {
                        return Err(format!("two checkpoints of group {group}"));
                    }
                } else if self.groups.get(&group).map(GroupState::checkpoint)
                    != Some(checkpoint.clone())
                {
                    return Err(format!(
                        "checkpoint of group {group} disagrees with the log before it"
                    ));
                }
            }
            return Ok(());
        }
        for pending in batch {
            let group = pending.header.group;
            let payload = payload_of(pending);
            let missing = || {
                format!(
                    "{} record for group {group}, which has no state",
                    pending.header.kind.name()
                )
            };
            match pending.header.kind {
                RecordType::Checkpoint => {
                    return Err("checkpoint record outside a segment's first batch".into());
                }
                RecordType::SegmentHeader | RecordType::BatchCommit => {
                    unreachable!("handled while scanning")
                }
                RecordType::Entries => {
                    let (first, terms) = record::decode_entry_terms(payload)
                        .map_err(|error| malformed(pending, error))?;
                    let state = self.groups.entry(group).or_default();
                    if first != state.last_index() + 1 || first <= state.compacted_index {
                        return Err(format!(
                            "entries of group {group} from index {first} do not follow its last \
                             index {}",
                            state.last_index()
                        ));
                    }
                    let last = first + terms.len() as u64 - 1;
                    state.append_terms(
                        terms,
                        Span {
                            first_index: first,
                            segment: number,
                            offset: pending.offset,
                            record_bytes: pending.header.record_bytes(),
                        },
                    );
                    let held = self
                        .segments
                        .get_mut(&number)
                        .expect("inserted")
                        .groups
                        .entry(group)
                        .or_default();
                    held.max_index = held.max_index.max(last);
                    held.last_sequence = sequence;
                }
                RecordType::TruncateAfter => {
                    let (index, _) = record::decode_index_term(payload)
                        .map_err(|error| malformed(pending, error))?;
                    let state = self.groups.get_mut(&group).ok_or_else(missing)?;
                    if index < state.compacted_index || index >= state.last_index() {
                        return Err(format!(
                            "truncation of group {group} after index {index} outside its log \
                             ({}..={})",
                            state.compacted_index,
                            state.last_index()
                        ));
                    }
                    state.truncate_after(index);
                }
                RecordType::Compact => {
                    let (index, term) = record::decode_index_term(payload)
                        .map_err(|error| malformed(pending, error))?;
                    let state = self.groups.get_mut(&group).ok_or_else(missing)?;
                    if index <= state.compacted_index
                        || index > state.last_index()
                        || index > state.snapshot.index
                    {
                        return Err(format!(
                            "compaction of group {group} to index {index} outside its log or \
                             past its snapshot"
                        ));
                    }
                    if let Ok(known) = state.term(index) {
                        if known != term {
                            return Err(format!(
                                "compaction of group {group} says term {term} at index {index}, \
                                 the log has {known}"
                            ));
                        }
                    }
                    state.compact(index, term);
                }
                RecordType::Snapshot => {
                    let (origin, snapshot) = record::decode_snapshot(payload)
                        .map_err(|error| malformed(pending, error))?;
                    let state = self.groups.entry(group).or_default();
                    match origin {
                        SnapshotOrigin::Created => {
                            if snapshot.index <= state.snapshot.index
                                || snapshot.index < state.compacted_index
                                || snapshot.index > state.last_index()
                            {
                                return Err(format!(
                                    "snapshot of group {group} at index {} outside its log or \
                                     not newer than its snapshot",
                                    snapshot.index
                                ));
                            }
                            if let Ok(known) = state.term(snapshot.index) {
                                if known != snapshot.term {
                                    return Err(format!(
                                        "snapshot of group {group} says term {} at index {}, the \
                                         log has {known}",
                                        snapshot.term, snapshot.index
                                    ));
                                }
                            }
                            state.snapshot = snapshot;
                        }
                        SnapshotOrigin::Installed => {
                            if snapshot.index <= state.snapshot.index.max(state.compacted_index) {
                                return Err(format!(
                                    "installed snapshot of group {group} at index {} is not newer \
                                     than its snapshot or compaction point",
                                    snapshot.index
                                ));
                            }
                            state.install_snapshot(snapshot);
                        }
                    }
                }
                RecordType::HardState => {
                    let hard_state = record::decode_hard_state(payload)
                        .map_err(|error| malformed(pending, error))?;
                    self.groups
                        .entry(group)
                        .or_default()
                        .set_hard_state(hard_state);
                }
                RecordType::ConfState => {
                    let conf_state = record::decode_conf_state(payload)
                        .map_err(|error| malformed(pending, error))?;
                    self.groups.entry(group).or_default().conf_state = conf_state;
                }
                RecordType::RemoveGroup => {
                    if self.groups.remove(&group).is_none() {
                        return Err(missing());
                    }
                    self.removed.insert(group, sequence);
                }
            }
        }
        Ok(())
    }
}
