//! The on-disk record: a fixed, self-checking header and a checksummed payload, and the
//! encoding of every payload. Hand-written and little-endian throughout.
//!
//! ```text
//! offset  size  field
//!      0     4  length       payload bytes
//!      4     1  type         RecordType
//!      5     8  group        raft group id (0 for log-level records)
//!     13     4  crc          CRC32C over type, group and payload
//!     17     4  header_crc   CRC32C over bytes 0..17
//!     21     -  payload
//! ```
//!
//! The header checksum lets recovery trust `length` before reading the payload: a bit
//! flip in a length field is reported as corruption instead of looking like a record cut
//! short by a crash, and looking for an intact record after a damaged one costs a 17-byte
//! checksum per candidate offset.

use bytes::{Buf, BufMut, Bytes};
use concord_raft::{ConfState, Entry, EntryKind, HardState, Index, Term};

use crate::GroupId;

/// Bytes of the fixed record header.
pub(crate) const HEADER_BYTES: usize = 21;
/// The first bytes of every segment's header record.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CNCDLOG\0";
/// The segment format version this code writes and reads.
pub(crate) const SEGMENT_VERSION: u32 = 1;
/// Fixed bytes of one entry inside an `Entries` payload: term, kind, data length.
pub(crate) const ENTRY_HEADER_BYTES: usize = 8 + 1 + 4;

/// What a record holds. The numbers are the on-disk `type` byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordType {
    /// First record of every segment: magic, version, segment number.
    SegmentHeader = 1,
    /// Ends a batch: its sequence number and record count. A batch without one is
    /// dropped whole on restart.
    BatchCommit = 2,
    /// Consecutive entries of one group.
    Entries = 3,
    /// A group's hard state.
    HardState = 4,
    /// A group's membership.
    ConfState = 5,
    /// Drop a group's entries after an index (a follower's conflicting suffix).
    TruncateAfter = 6,
    /// Drop a group's entries up to an index (covered by a snapshot).
    Compact = 7,
    /// A snapshot was created or installed; its file holds the data.
    Snapshot = 8,
    /// A group's whole metadata, written at the start of each segment so older
    /// segments can be deleted.
    Checkpoint = 9,
    /// The group is gone from this node.
    RemoveGroup = 10,
}

impl RecordType {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => RecordType::SegmentHeader,
            2 => RecordType::BatchCommit,
            3 => RecordType::Entries,
            4 => RecordType::HardState,
            5 => RecordType::ConfState,
            6 => RecordType::TruncateAfter,
            7 => RecordType::Compact,
            8 => RecordType::Snapshot,
            9 => RecordType::Checkpoint,
            10 => RecordType::RemoveGroup,
            _ => return None,
        })
    }

    /// A short lowercase name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RecordType::SegmentHeader => "segment-header",
            RecordType::BatchCommit => "batch-commit",
            RecordType::Entries => "entries",
            RecordType::HardState => "hard-state",
            RecordType::ConfState => "conf-state",
            RecordType::TruncateAfter => "truncate-after",
            RecordType::Compact => "compact",
            RecordType::Snapshot => "snapshot",
            RecordType::Checkpoint => "checkpoint",
            RecordType::RemoveGroup => "remove-group",
        }
    }
}

/// A record header that passed its own checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub payload_bytes: u32,
    pub kind: RecordType,
    pub group: GroupId,
    pub crc: u32,
}

impl Header {
    /// Bytes of the whole record, header included.
    pub(crate) fn record_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + self.payload_bytes as u64
    }
}

/// Why bytes are not an intact record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Fewer bytes than a header remain.
    HeaderCut,
    /// The header checksum does not match.
    HeaderChecksum,
    /// The header is intact but names no known record type.
    UnknownType,
    /// The header is intact but the payload runs past the end of the file.
    PayloadCut,
    /// The payload checksum does not match.
    PayloadChecksum,
}

impl Damage {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Damage::HeaderCut => "record header cut short",
            Damage::HeaderChecksum => "record header checksum mismatch",
            Damage::UnknownType => "unknown record type",
            Damage::PayloadCut => "record payload cut short",
            Damage::PayloadChecksum => "record payload checksum mismatch",
        }
    }
}

/// Starts a record of `kind` for `group` at the end of `out`; write the payload after it
/// and call [`finish_record`] with the returned start.
pub(crate) fn begin_record(out: &mut Vec<u8>, kind: RecordType, group: GroupId) -> usize {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(kind as u8);
    out.put_u64_le(group);
    out.put_u32_le(0);
    out.put_u32_le(0);
    start
}

/// Fills in the length and checksums of the record begun at `start`.
pub(crate) fn finish_record(out: &mut [u8], start: usize) {
    let payload_bytes = out.len() - start - HEADER_BYTES;
    let payload_bytes = u32::try_from(payload_bytes).expect("record payload over 4 GiB");
    out[start..start + 4].copy_from_slice(&payload_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..start + 13]);
    let crc = crc32c::crc32c_append(crc, &out[start + HEADER_BYTES..]);
    out[start + 13..start + 17].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 17]);
    out[start + 17..start + 21].copy_from_slice(&header_crc.to_le_bytes());
}

/// Appends a whole record with `payload`.
pub(crate) fn put_record(out: &mut Vec<u8>, kind: RecordType, group: GroupId, payload: &[u8]) {
    let start = begin_record(out, kind, group);
    out.extend_from_slice(payload);
    finish_record(out, start);
}

/// Reads and checks the header at the start of `bytes`.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, Damage> {
    if bytes.len() < HEADER_BYTES {
        return Err(Damage::HeaderCut);
    }
    let stored_header_crc = u32::from_le_bytes(bytes[17..21].try_into().unwrap());
    if crc32c::crc32c(&bytes[..17]) != stored_header_crc {
        return Err(Damage::HeaderChecksum);
    }
    let kind = RecordType::from_u8(bytes[4]).ok_or(Damage::UnknownType)?;
    Ok(Header {
        payload_bytes: u32::from_le_bytes(bytes[0..4].try_into().unwrap()),
        kind,
        group: u64::from_le_bytes(bytes[5..13].try_into().unwrap()),
        crc: u32::from_le_bytes(bytes[13..17].try_into().unwrap()),
    })
}

/// Checks the record at the start of `bytes` (header and payload) and returns its header
/// and payload.
pub(crate) fn parse_record(bytes: &[u8]) -> Result<(Header, &[u8]), Damage> {
    let header = parse_header(bytes)?;
    let end = header.record_bytes();
    if (bytes.len() as u64) < end {
        return Err(Damage::PayloadCut);
    }
    let payload = &bytes[HEADER_BYTES..end as usize];
    let crc = crc32c::crc32c(&bytes[4..13]);
    if crc32c::crc32c_append(crc, payload) != header.crc {
        return Err(Damage::PayloadChecksum);
    }
    Ok((header, payload))
}

/// Why an intact record's payload does not decode: a bug or a format mismatch, never a
/// torn write (the checksum passed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

type Decoded<T> = Result<T, Malformed>;

fn need(buf: &[u8], bytes: usize, what: &str) -> Decoded<()> {
    if buf.remaining() < bytes {
        return Err(Malformed(format!("payload too short for {what}")));
    }
    Ok(())
}

fn get_u8(buf: &mut &[u8], what: &str) -> Decoded<u8> {
    need(buf, 1, what)?;
    Ok(buf.get_u8())
}

fn get_u32(buf: &mut &[u8], what: &str) -> Decoded<u32> {
    need(buf, 4, what)?;
    Ok(buf.get_u32_le())
}

fn get_u64(buf: &mut &[u8], what: &str) -> Decoded<u64> {
    need(buf, 8, what)?;
    Ok(buf.get_u64_le())
}

fn finish(buf: &[u8], what: &str) -> Decoded<()> {
    if !buf.is_empty() {
        return Err(Malformed(format!(
            "{} trailing bytes after {what}",
            buf.len()
        )));
    }
    Ok(())
}

/// The segment header payload: magic, version, segment number.
pub(crate) fn encode_segment_header(segment: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.put_u32_le(SEGMENT_VERSION);
    out.put_u64_le(segment);
    out
}

/// Decodes a segment header payload into its segment number.
pub(crate) fn decode_segment_header(mut buf: &[u8]) -> Decoded<u64> {
    need(buf, 8, "segment magic")?;
    if buf[..8] != SEGMENT_MAGIC {
        return Err(Malformed("not a concord log segment (bad magic)".into()));
    }
    buf.advance(8);
    let version = get_u32(&mut buf, "segment version")?;
    if version != SEGMENT_VERSION {
        return Err(Malformed(format!(
            "segment format version {version}, this build reads {SEGMENT_VERSION}"
        )));
    }
    let segment = get_u64(&mut buf, "segment number")?;
    finish(buf, "segment header")?;
    Ok(segment)
}

/// A batch-commit payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchCommit {
    /// Batches are numbered 1, 2, 3, ... across the whole log.
    pub sequence: u64,
    /// Records in the batch before this one.
    pub record_count: u32,
}

pub(crate) fn encode_batch_commit(commit: BatchCommit) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&commit.sequence.to_le_bytes());
    out[8..].copy_from_slice(&commit.record_count.to_le_bytes());
    out
}

pub(crate) fn decode_batch_commit(mut buf: &[u8]) -> Decoded<BatchCommit> {
    let sequence = get_u64(&mut buf, "batch sequence")?;
    let record_count = get_u32(&mut buf, "batch record count")?;
    finish(buf, "batch commit")?;
    Ok(BatchCommit {
        sequence,
        record_count,
    })
}

/// Encodes entries into an `Entries` payload: first index, count, then for each entry
/// term, kind, data length and data.
pub(crate) fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    out.put_u64_le(entries[0].index);
    out.put_u32_le(entries.len() as u32);
    for entry in entries {
        out.put_u64_le(entry.term);
        out.put_u8(match entry.kind {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        });
        out.put_u32_le(entry.data.len() as u32);
        out.extend_from_slice(&entry.data);
    }
}

/// Bytes `put_entries` writes for `entries`.
pub(crate) fn entries_payload_bytes(entries: &[Entry]) -> usize {
    12 + entries
        .iter()
        .map(|entry| ENTRY_HEADER_BYTES + entry.data.len())
        .sum::<usize>()
}

/// The first index and terms of an `Entries` payload, without copying data.
pub(crate) fn decode_entry_terms(mut buf: &[u8]) -> Decoded<(Index, Vec<Term>)> {
    let first_index = get_u64(&mut buf, "first index")?;
    let count = get_u32(&mut buf, "entry count")?;
    let mut terms = Vec::with_capacity((count as usize).min(buf.len() / ENTRY_HEADER_BYTES));
    for _ in 0..count {
        let term = get_u64(&mut buf, "entry term")?;
        decode_kind(get_u8(&mut buf, "entry kind")?)?;
        let data_bytes = get_u32(&mut buf, "entry length")? as usize;
        need(buf, data_bytes, "entry data")?;
        buf.advance(data_bytes);
        terms.push(term);
    }
    finish(buf, "entries")?;
    if first_index == 0 || count == 0 {
        return Err(Malformed(
            "entries record with index 0 or no entries".into(),
        ));
    }
    Ok((first_index, terms))
}

fn decode_kind(kind: u8) -> Decoded<EntryKind> {
    match kind {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::ConfChange),
        other => Err(Malformed(format!("unknown entry kind {other}"))),
    }
}

/// Decodes the entries of an `Entries` payload held in `payload` (a slice of a record
/// buffer); entry data shares the buffer.
pub(crate) fn decode_entries(payload: &Bytes) -> Decoded<Vec<Entry>> {
    let mut buf: &[u8] = payload;
    let first_index = get_u64(&mut buf, "first index")?;
    let count = get_u32(&mut buf, "entry count")?;
    let mut entries = Vec::with_capacity((count as usize).min(buf.len() / ENTRY_HEADER_BYTES));
    for offset in 0..count as u64 {
        let term = get_u64(&mut buf, "entry term")?;
        let kind = decode_kind(get_u8(&mut buf, "entry kind")?)?;
        let data_bytes = get_u32(&mut buf, "entry length")? as usize;
        need(buf, data_bytes, "entry data")?;
        let start = payload.len() - buf.len();
        buf.advance(data_bytes);
        entries.push(Entry {
            term,
            index: first_index + offset,
            kind,
            data: payload.slice(start..start + data_bytes),
        });
    }
    finish(buf, "entries")?;
    Ok(entries)
}

pub(crate) fn put_hard_state(out: &mut Vec<u8>, hard_state: &HardState) {
    out.put_u64_le(hard_state.term);
    out.put_u64_le(hard_state.vote);
    out.put_u64_le(hard_state.commit);
}

fn get_hard_state(buf: &mut &[u8]) -> Decoded<HardState> {
    Ok(HardState {
        term: get_u64(buf, "hard state term")?,
        vote: get_u64(buf, "hard state vote")?,
        commit: get_u64(buf, "hard state commit")?,
    })
}

pub(crate) fn decode_hard_state(mut buf: &[u8]) -> Decoded<HardState> {
    let hard_state = get_hard_state(&mut buf)?;
    finish(buf, "hard state")?;
    Ok(hard_state)
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.put_u32_le(ids.len() as u32);
    for id in ids {
        out.put_u64_le(*id);
    }
}

fn get_ids(buf: &mut &[u8], what: &str) -> Decoded<Vec<u64>> {
    let count = get_u32(buf, what)? as usize;
    need(buf, count.saturating_mul(8), what)?;
    Ok((0..count).map(|_| buf.get_u64_le()).collect())
}

pub(crate) fn put_conf_state(out: &mut Vec<u8>, conf_state: &ConfState) {
    put_ids(out, &conf_state.voters);
    put_ids(out, &conf_state.learners);
    put_ids(out, &conf_state.voters_outgoing);
    put_ids(out, &conf_state.learners_next);
    out.put_u8(conf_state.auto_leave as u8);
}

pub(crate) fn get_conf_state(buf: &mut &[u8]) -> Decoded<ConfState> {
    let voters = get_ids(buf, "voters")?;
    let learners = get_ids(buf, "learners")?;
    let voters_outgoing = get_ids(buf, "outgoing voters")?;
    let learners_next = get_ids(buf, "next learners")?;
    let auto_leave = match get_u8(buf, "auto leave")? {
        0 => false,
        1 => true,
        other => return Err(Malformed(format!("auto leave flag {other}"))),
    };
    Ok(ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
    })
}

pub(crate) fn decode_conf_state(mut buf: &[u8]) -> Decoded<ConfState> {
    let conf_state = get_conf_state(&mut buf)?;
    finish(buf, "conf state")?;
    Ok(conf_state)
}

/// `TruncateAfter` and `Compact` carry an index (and `Compact` the term at it).
pub(crate) fn encode_index_term(index: Index, term: Term) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_le_bytes());
    out[8..].copy_from_slice(&term.to_le_bytes());
    out
}

pub(crate) fn decode_index_term(mut buf: &[u8]) -> Decoded<(Index, Term)> {
    let index = get_u64(&mut buf, "index")?;
    let term = get_u64(&mut buf, "term")?;
    finish(buf, "index and term")?;
    Ok((index, term))
}

/// What the log knows of a group's latest snapshot: where it stands, and the length and
/// checksum of the data in its file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotRecord {
    pub index: Index,
    pub term: Term,
    pub conf_state: ConfState,
    pub data_bytes: u64,
    pub data_crc: u32,
}

/// How a snapshot record came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotOrigin {
    /// `create_snapshot`: entries are kept.
    Created = 1,
    /// `apply_snapshot`: the log is replaced.
    Installed = 2,
}

fn put_snapshot_record(out: &mut Vec<u8>, snapshot: &SnapshotRecord) {
    out.put_u64_le(snapshot.index);
    out.put_u64_le(snapshot.term);
    put_conf_state(out, &snapshot.conf_state);
    out.put_u64_le(snapshot.data_bytes);
    out.put_u32_le(snapshot.data_crc);
}

fn get_snapshot_record(buf: &mut &[u8]) -> Decoded<SnapshotRecord> {
    Ok(SnapshotRecord {
        index: get_u64(buf, "snapshot index")?,
        term: get_u64(buf, "snapshot term")?,
        conf_state: get_conf_state(buf)?,
        data_bytes: get_u64(buf, "snapshot length")?,
        data_crc: get_u32(buf, "snapshot checksum")?,
    })
}

pub(crate) fn put_snapshot(out: &mut Vec<u8>, origin: SnapshotOrigin, snapshot: &SnapshotRecord) {
    out.put_u8(origin as u8);
    put_snapshot_record(out, snapshot);
}

pub(crate) fn decode_snapshot(mut buf: &[u8]) -> Decoded<(SnapshotOrigin, SnapshotRecord)> {
    let origin = match get_u8(&mut buf, "snapshot origin")? {
        1 => SnapshotOrigin::Created,
        2 => SnapshotOrigin::Installed,
        other => return Err(Malformed(format!("unknown snapshot origin {other}"))),
    };
    let snapshot = get_snapshot_record(&mut buf)?;
    finish(buf, "snapshot")?;
    Ok((origin, snapshot))
}

/// A group's whole metadata as of a point in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub snapshot: SnapshotRecord,
    pub compacted_index: Index,
    pub compacted_term: Term,
    pub last_index: Index,
}

pub(crate) fn put_checkpoint(out: &mut Vec<u8>, checkpoint: &Checkpoint) {
    put_hard_state(out, &checkpoint.hard_state);
    put_conf_state(out, &checkpoint.conf_state);
    put_snapshot_record(out, &checkpoint.snapshot);
    out.put_u64_le(checkpoint.compacted_index);
    out.put_u64_le(checkpoint.compacted_term);
    out.put_u64_le(checkpoint.last_index);
}

pub(crate) fn decode_checkpoint(mut buf: &[u8]) -> Decoded<Checkpoint> {
    let checkpoint = Checkpoint {
        hard_state: get_hard_state(&mut buf)?,
        conf_state: get_conf_state(&mut buf)?,
        snapshot: get_snapshot_record(&mut buf)?,
        compacted_index: get_u64(&mut buf, "compacted index")?,
        compacted_term: get_u64(&mut buf, "compacted term")?,
        last_index: get_u64(&mut buf, "last index")?,
    };
    finish(buf, "checkpoint")?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A record written by put_record parses back to the same header and payload, and
    // every single-bit flip anywhere in it is caught by one of the two checksums.
    #[test]
    fn record_round_trips_and_detects_every_bit_flip() {
        let mut out = Vec::new();
        put_record(&mut out, RecordType::HardState, 7, b"payload bytes");
        let (header, payload) = parse_record(&out).unwrap();
        assert_eq!(
            header,
            Header {
                payload_bytes: 13,
                kind: RecordType::HardState,
                group: 7,
                crc: header.crc,
            }
        );
        assert_eq!(payload, b"payload bytes");
        for bit in 0..out.len() * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_record(&flipped).is_err(), "bit {bit} not detected");
        }
        assert_eq!(parse_record(&out[..20]), Err(Damage::HeaderCut));
        assert_eq!(parse_record(&out[..30]), Err(Damage::PayloadCut));
    }

    // Entries, conf states, checkpoints and snapshots decode to what was encoded, and a
    // payload with trailing bytes is refused.
    #[test]
    fn payloads_round_trip() {
        let entries = vec![
            Entry {
                term: 3,
                index: 10,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"a"),
            },
            Entry {
                term: 4,
                index: 11,
                kind: EntryKind::ConfChange,
                data: Bytes::from_static(b""),
            },
        ];
        let mut out = Vec::new();
        put_entries(&mut out, &entries);
        assert_eq!(out.len(), entries_payload_bytes(&entries));
        assert_eq!(decode_entries(&Bytes::from(out.clone())), Ok(entries));
        assert_eq!(decode_entry_terms(&out), Ok((10, vec![3, 4])));
        out.push(0);
        assert!(decode_entry_terms(&out).is_err());

        let checkpoint = Checkpoint {
            hard_state: HardState {
                term: 5,
                vote: 2,
                commit: 9,
            },
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![1, 2],
                learners_next: vec![5],
                auto_leave: true,
            },
            snapshot: SnapshotRecord {
                index: 8,
                term: 4,
                conf_state: ConfState::with_voters([1]),
                data_bytes: 100,
                data_crc: 0xdead_beef,
            },
            compacted_index: 6,
            compacted_term: 3,
            last_index: 12,
        };
        let mut out = Vec::new();
        put_checkpoint(&mut out, &checkpoint);
        assert_eq!(decode_checkpoint(&out), Ok(checkpoint.clone()));
        let mut out = Vec::new();
        put_snapshot(&mut out, SnapshotOrigin::Installed, &checkpoint.snapshot);
        assert_eq!(
            decode_snapshot(&out),
            Ok((SnapshotOrigin::Installed, checkpoint.snapshot))
        );
        assert_eq!(decode_segment_header(&encode_segment_header(42)), Ok(42));
    }
}
