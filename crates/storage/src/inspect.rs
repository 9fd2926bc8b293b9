//! What a data directory holds, for an operator: groups, their hard state and
//! membership, log bounds, snapshots and entries, as a table ([`std::fmt::Display`]) or
//! JSON ([`DataDirReport::to_json`]). Reads without changing anything, and refuses a
//! directory a running node has locked.

use std::fmt;
use std::path::{Path, PathBuf};

use concord_raft::{ConfChange, ConfChangeKind, ConfChangeTransition, ConfState, Entry, EntryKind};
use serde::Serialize;

use crate::config::CorruptionPolicy;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, StdFs};
use crate::replay::{self, RecoveryReport};
use crate::segment::{read_entries_record, segment_file_name};
use crate::snapshot;
use crate::GroupId;

/// What to include in an inspection.
#[derive(Clone, Debug, Default)]
pub struct InspectOptions {
    /// Show at most this many entries per group (the most recent); None shows all.
    pub entries_per_group_max: Option<u64>,
}

/// Everything in a data directory.
#[derive(Clone, Debug, Serialize)]
pub struct DataDirReport {
    /// The directory inspected.
    pub dir: PathBuf,
    /// Segment files read, oldest first.
    pub segments: Vec<SegmentReport>,
    /// What recovery would do: a torn tail to drop, or where corruption stops the log
    /// (`cut` names the corruption; the groups show the log up to it).
    pub recovery: RecoveryReport,
    /// Groups, by id.
    pub groups: Vec<GroupReport>,
}

/// One segment file.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    /// File name.
    pub file: String,
    /// Bytes up to the end of its last complete batch.
    pub bytes: u64,
}

/// One group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    /// The group id.
    pub group: GroupId,
    /// Its last recorded hard state.
    pub hard_state: HardStateReport,
    /// Its membership.
    pub conf_state: ConfStateReport,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Its latest snapshot, if any.
    pub snapshot: Option<SnapshotReport>,
    /// Entries shown (all, or the most recent per [`InspectOptions`]).
    pub entries: Vec<EntryReport>,
    /// Entries in the log but not shown.
    pub entries_omitted: u64,
}

/// A hard state.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct HardStateReport {
    /// Current term.
    pub term: u64,
    /// Vote in that term (0: none).
    pub vote: u64,
    /// Commit index.
    pub commit: u64,
}

/// A membership.
#[derive(Clone, Debug, Serialize)]
pub struct ConfStateReport {
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Outgoing voters (joint configuration).
    pub voters_outgoing: Vec<u64>,
    /// Learners once the joint configuration is left.
    pub learners_next: Vec<u64>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl From<&ConfState> for ConfStateReport {
    fn from(conf_state: &ConfState) -> Self {
        ConfStateReport {
            voters: conf_state.voters.clone(),
            learners: conf_state.learners.clone(),
            voters_outgoing: conf_state.voters_outgoing.clone(),
            learners_next: conf_state.learners_next.clone(),
            auto_leave: conf_state.auto_leave,
        }
    }
}

/// A snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    /// Last index it covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Bytes of state machine data.
    pub data_bytes: u64,
    /// Membership as of `index`.
    pub conf_state: ConfStateReport,
    /// Its file.
    pub file: String,
}

/// One entry.
#[derive(Clone, Debug, Serialize)]
pub struct EntryReport {
    /// Log index.
    pub index: u64,
    /// Term.
    pub term: u64,
    /// `normal` or `conf-change`.
    pub kind: String,
    /// Payload bytes.
    pub data_bytes: u64,
    /// A decoded conf change, or a short preview of the payload.
    pub summary: String,
}

/// Inspects the data directory `dir` on the real disk, showing every entry.
pub fn inspect(dir: impl AsRef<Path>) -> Result<DataDirReport> {
    inspect_with(&StdFs, dir.as_ref(), &InspectOptions::default())
}

/// Inspects `dir` on `fs`. Fails with [`Error::Locked`] if a node has the directory
/// open.
pub fn inspect_with(
    fs: &dyn FileSystem,
    dir: &Path,
    options: &InspectOptions,
) -> Result<DataDirReport> {
    let _lock = fs.lock(dir).map_err(|error| {
        if error.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_owned(),
            }
        } else {
            Error::io("locking", dir, error)
        }
    })?;
    let recovered = replay::recover(fs, dir, CorruptionPolicy::CutLog, false)?;
    let mut segments = Vec::new();
    let mut files = std::collections::BTreeMap::new();
    for (&number, segment) in &recovered.segments {
        segments.push(SegmentReport {
            file: segment_file_name(number),
            bytes: segment.valid_bytes,
        });
        let file = fs
            .open(&segment.path)
            .map_err(|error| Error::io("opening", &segment.path, error))?;
        files.insert(number, (segment.path.clone(), file));
    }
    let mut groups = Vec::new();
    for (&group, state) in &recovered.groups {
        let first_index = state.first_index();
        let last_index = state.last_index();
        let shown_from = match options.entries_per_group_max {
            Some(max) => first_index.max((last_index + 1).saturating_sub(max)),
            None => first_index,
        };
        let plan = state.plan_read(shown_from, last_index + 1, u64::MAX)?;
        let mut entries = Vec::new();
        for (span, from, to) in plan.disk {
            let (path, file) = &files[&span.segment];
            for entry in read_entries_record(&**file, path, &span, group)? {
                if entry.index >= from && entry.index < to {
                    entries.push(entry_report(&entry));
                }
            }
        }
        let snapshot = (!snapshot::is_none(&state.snapshot)).then(|| SnapshotReport {
            index: state.snapshot.index,
            term: state.snapshot.term,
            data_bytes: state.snapshot.data_bytes,
            conf_state: (&state.snapshot.conf_state).into(),
            file: snapshot::file_name(group, state.snapshot.index),
        });
        groups.push(GroupReport {
            group,
            hard_state: HardStateReport {
                term: state.hard_state.term,
                vote: state.hard_state.vote,
                commit: state.hard_state.commit,
            },
            conf_state: (&state.conf_state).into(),
            first_index,
            last_index,
            snapshot,
            entries_omitted: shown_from - first_index,
            entries,
        });
    }
    Ok(DataDirReport {
        dir: dir.to_owned(),
        segments,
        recovery: recovered.report,
        groups,
    })
}

/// Characters of a text payload shown in a summary.
const PREVIEW_CHARS_MAX: usize = 40;
/// Bytes of a binary payload shown (as hex) in a summary.
const PREVIEW_HEX_BYTES_MAX: usize = 16;

fn entry_report(entry: &Entry) -> EntryReport {
    let (kind, summary) = match entry.kind {
        EntryKind::ConfChange => ("conf-change", conf_change_summary(&entry.data)),
        EntryKind::Normal => ("normal", payload_preview(&entry.data)),
    };
    EntryReport {
        index: entry.index,
        term: entry.term,
        kind: kind.to_owned(),
        data_bytes: entry.data.len() as u64,
        summary,
    }
}

fn conf_change_summary(data: &[u8]) -> String {
    let change = match ConfChange::decode(data) {
        Ok(change) => change,
        Err(error) => return format!("undecodable conf change: {error}"),
    };
    if change.is_leave_joint() {
        return "leave joint configuration".into();
    }
    let changes: Vec<String> = change
        .changes
        .iter()
        .map(|single| {
            let verb = match single.kind {
                ConfChangeKind::AddVoter => "add voter",
                ConfChangeKind::AddLearner => "add learner",
                ConfChangeKind::Remove => "remove",
            };
            format!("{verb} {}", single.node)
        })
        .collect();
    let transition = match change.transition {
        ConfChangeTransition::Auto => "",
        ConfChangeTransition::JointAutoLeave => " (joint, auto leave)",
        ConfChangeTransition::JointExplicit => " (joint, explicit leave)",
    };
    format!("{}{transition}", changes.join(", "))
}

fn payload_preview(data: &[u8]) -> String {
    if data.is_empty() {
        return "(empty: leader no-op)".into();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if text.chars().all(|c| !c.is_control() || c == ' ') {
            let shown: String = text.chars().take(PREVIEW_CHARS_MAX).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            return format!("{shown:?}{more}");
        }
    }
    let hex: String = data
        .iter()
        .take(PREVIEW_HEX_BYTES_MAX)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let more = if data.len() > PREVIEW_HEX_BYTES_MAX {
        "…"
    } else {
        ""
    };
    format!("0x{hex}{more}")
}

impl DataDirReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}

fn ids(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("[{}]", shown.join(", "))
}

impl fmt::Display for ConfStateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters {}", ids(&self.voters))?;
        if !self.learners.is_empty() {
            write!(f, ", learners {}", ids(&self.learners))?;
        }
        if !self.voters_outgoing.is_empty() {
            write!(f, ", outgoing voters {}", ids(&self.voters_outgoing))?;
        }
        if !self.learners_next.is_empty() {
            write!(f, ", next learners {}", ids(&self.learners_next))?;
        }
        if self.auto_leave {
            write!(f, ", auto leave")?;
        }
        Ok(())
    }
}

impl fmt::Display for DataDirReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data directory {}", self.dir.display())?;
        let total_bytes: u64 = self.segments.iter().map(|segment| segment.bytes).sum();
        writeln!(
            f,
            "segments       {} ({} bytes, {} batches)",
            self.segments.len(),
            total_bytes,
            self.recovery.batches
        )?;
        if let Some(torn) = &self.recovery.torn_tail {
            writeln!(
                f,
                "torn tail      {} bytes after byte {} of {} ({}); a restart drops them",
                torn.bytes_dropped,
                torn.offset,
                torn.path.display(),
                torn.reason
            )?;
        }
        if let Some(cut) = &self.recovery.cut {
            writeln!(f, "CORRUPTION     {}", cut.corruption)?;
            writeln!(
                f,
                "               shown up to byte {} of {}; a node refuses to start here",
                cut.offset,
                cut.path.display()
            )?;
        }
        writeln!(f, "groups         {}", self.groups.len())?;
        for group in &self.groups {
            writeln!(f)?;
            writeln!(f, "group {}", group.group)?;
            let hard_state = &group.hard_state;
            writeln!(
                f,
                "  hard state   term {}, vote {}, commit {}",
                hard_state.term, hard_state.vote, hard_state.commit
            )?;
            writeln!(f, "  conf state   {}", group.conf_state)?;
            writeln!(
                f,
                "  log          first index {}, last index {}",
                group.first_index, group.last_index
            )?;
            match &group.snapshot {
                Some(snapshot) => writeln!(
                    f,
                    "  snapshot     index {}, term {}, {} bytes, {} ({})",
                    snapshot.index,
                    snapshot.term,
                    snapshot.data_bytes,
                    snapshot.conf_state,
                    snapshot.file
                )?,
                None => writeln!(f, "  snapshot     none")?,
            }
            if group.entries.is_empty() && group.entries_omitted == 0 {
                continue;
            }
            writeln!(
                f,
                "  {:>10}  {:>6}  {:<11}  {:>8}  summary",
                "index", "term", "kind", "bytes"
            )?;
            if group.entries_omitted > 0 {
                writeln!(
                    f,
                    "  ... {} earlier entries not shown",
                    group.entries_omitted
                )?;
            }
            for entry in &group.entries {
                writeln!(
                    f,
                    "  {:>10}  {:>6}  {:<11}  {:>8}  {}",
                    entry.index, entry.term, entry.kind, entry.data_bytes, entry.summary
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Payload previews quote text, hex-dump binary, and name the empty no-op.
    #[test]
    fn previews() {
        assert_eq!(payload_preview(b""), "(empty: leader no-op)");
        assert_eq!(payload_preview(b"put /a 1"), "\"put /a 1\"");
        assert_eq!(payload_preview(&[0, 1, 255]), "0x0001ff");
        assert_eq!(
            conf_change_summary(&ConfChange::add_voter(4).encode()),
            "add voter 4"
        );
        assert_eq!(
            conf_change_summary(&ConfChange::leave_joint().encode()),
            "leave joint configuration"
        );
    }
}
