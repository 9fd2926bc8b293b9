//! Segment files: how they are named, what the log knows of each, and reading one
//! group's entries record back from one. Shared by the log, its replay at open and
//! the offline inspector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{Entry, Index};

use crate::error::{Error, Result};
use crate::fs::File;
use crate::group::Span;
use crate::record::{self, RecordType, HEADER_BYTES};
use crate::GroupId;

/// The file name of segment `number`.
pub(crate) fn segment_file_name(number: u64) -> String {
    format!("segment-{number:020}.log")
}

/// The segment number a file name stands for.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// What a segment holds of one group, to know when the segment can be deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentGroup {
    /// The highest entry index of the group written in the segment.
    pub max_index: Index,
    /// The sequence number of the last batch in the segment with entries of the group.
    pub last_sequence: u64,
}

/// A segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    /// None until the flusher has created the file.
    pub file: Option<Arc<dyn File>>,
    pub groups: BTreeMap<GroupId, SegmentGroup>,
}

/// Reads the `Entries` record at `span` and checks it is intact and belongs to `group`.
pub(crate) fn read_entries_record(
    file: &dyn File,
    path: &Path,
    span: &Span,
    group: GroupId,
) -> Result<Vec<Entry>> {
    let mut buf = vec![0u8; span.record_bytes as usize];
    file.read_at(span.offset, &mut buf)
        .map_err(|error| Error::io("reading", path, error))?;
    let (header, _) = record::parse_record(&buf)
        .map_err(|damage| Error::corruption(path, span.offset, damage.describe()))?;
    if header.kind != RecordType::Entries || header.group != group {
        return Err(Error::corruption(
            path,
            span.offset,
            format!(
                "expected entries of group {group}, found a {} record of group {}",
                header.kind.name(),
                header.group
            ),
        ));
    }
    let payload = Bytes::from(buf).slice(HEADER_BYTES..);
    let entries = record::decode_entries(&payload)
        .map_err(|malformed| Error::corruption(path, span.offset, malformed.0))?;
    if entries.first().map(|entry| entry.index) != Some(span.first_index) {
        return Err(Error::corruption(
            path,
            span.offset,
            format!("expected entries from index {}", span.first_index),
        ));
    }
    Ok(entries)
}
