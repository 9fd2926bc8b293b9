//! Snapshot files: one per group (the latest), written to a temp file, fsynced, renamed
//! and the directory fsynced; checksummed; readable in chunks for streaming.
//!
//! ```text
//! magic "CNCDSNAP" (8) | version u32 | header_bytes u32
//! group u64 | index u64 | term u64 | conf state | data_bytes u64 | data_crc u32
//! header_crc u32 (CRC32C of everything before it)
//! data (data_bytes)
//! ```
//!
//! A snapshot file counts only once a log record names it: a file written before a
//! crash that lost its record is an orphan, deleted on restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use concord_raft::{Index, SnapshotMetadata};

use crate::error::{Error, Result};
use crate::fs::{File, FileSystem};
use crate::record::{get_conf_state, put_conf_state, SnapshotRecord};
use crate::GroupId;

const SNAPSHOT_MAGIC: [u8; 8] = *b"CNCDSNAP";
const SNAPSHOT_VERSION: u32 = 1;
/// Magic, version and header length.
const PREFIX_BYTES: usize = 16;
/// Bytes read at a time when checksumming a snapshot's data.
const VERIFY_CHUNK_BYTES: usize = 1 << 20;
/// Suffix of a snapshot file still being written.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// The file name of `group`'s snapshot at `index`.
pub(crate) fn file_name(group: GroupId, index: Index) -> String {
    format!("snapshot-{group:020}-{index:020}.snap")
}

/// The group and index a snapshot file name stands for.
pub(crate) fn parse_file_name(name: &str) -> Option<(GroupId, Index)> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    let (group, index) = rest.split_once('-')?;
    Some((group.parse().ok()?, index.parse().ok()?))
}

fn fatal(operation: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Fatal {
        operation,
        path: path.to_owned(),
        source,
    }
}

/// Writes `group`'s snapshot durably into `dir` and returns what the log records of it.
/// Any failure is fatal: a failed fsync leaves nothing known about what is on disk.
pub(crate) fn write_file(
    fs: &dyn FileSystem,
    dir: &Path,
    group: GroupId,
    metadata: &SnapshotMetadata,
    data: &[u8],
) -> Result<SnapshotRecord> {
    let data_crc = crc32c::crc32c(data);
    let mut body = Vec::new();
    body.put_u64_le(group);
    body.put_u64_le(metadata.index);
    body.put_u64_le(metadata.term);
    put_conf_state(&mut body, &metadata.conf_state);
    body.put_u64_le(data.len() as u64);
    body.put_u32_le(data_crc);
    let mut header = Vec::with_capacity(PREFIX_BYTES + body.len() + 4);
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.put_u32_le(SNAPSHOT_VERSION);
    header.put_u32_le(body.len() as u32);
    header.extend_from_slice(&body);
    let header_crc = crc32c::crc32c(&header);
    header.put_u32_le(header_crc);

    let final_path = dir.join(file_name(group, metadata.index));
    let temp_path = dir.join(format!("{}{TEMP_SUFFIX}", file_name(group, metadata.index)));
    let file = fs
        .create(&temp_path)
        .map_err(|error| fatal("creating", &temp_path, error))?;
    file.write_at(0, &header)
        .and_then(|()| file.write_at(header.len() as u64, data))
        .map_err(|error| fatal("writing", &temp_path, error))?;
    file.sync_data()
        .map_err(|error| fatal("syncing", &temp_path, error))?;
    drop(file);
    fs.rename(&temp_path, &final_path)
        .map_err(|error| fatal("renaming", &temp_path, error))?;
    fs.sync_dir(dir)
        .map_err(|error| fatal("syncing directory", dir, error))?;
    Ok(SnapshotRecord {
        index: metadata.index,
        term: metadata.term,
        conf_state: metadata.conf_state.clone(),
        data_bytes: data.len() as u64,
        data_crc,
    })
}

/// An open snapshot file whose header has been checked: its metadata, and its data
/// readable in chunks.
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    file: Arc<dyn File>,
    group: GroupId,
    metadata: SnapshotMetadata,
    data_offset: u64,
    data_bytes: u64,
    data_crc: u32,
}

impl SnapshotReader {
    /// Opens `path` and checks its header.
    pub(crate) fn open(fs: &dyn FileSystem, path: &Path) -> Result<Self> {
        let file = fs
            .open(path)
            .map_err(|error| Error::io("opening", path, error))?;
        let file_bytes = file
            .len()
            .map_err(|error| Error::io("reading the length of", path, error))?;
        let corrupt = |offset, reason: &str| Error::corruption(path, offset, reason.to_owned());
        if file_bytes < PREFIX_BYTES as u64 {
            return Err(corrupt(0, "snapshot file shorter than its header"));
        }
        let mut prefix = [0u8; PREFIX_BYTES];
        file.read_at(0, &mut prefix)
            .map_err(|error| Error::io("reading", path, error))?;
        if prefix[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt(0, "not a concord snapshot file (bad magic)"));
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().unwrap());
        if version != SNAPSHOT_VERSION {
            return Err(corrupt(8, "unknown snapshot format version"));
        }
        let body_bytes = u32::from_le_bytes(prefix[12..16].try_into().unwrap()) as u64;
        let header_bytes = PREFIX_BYTES as u64 + body_bytes + 4;
        if header_bytes > file_bytes {
            return Err(corrupt(12, "snapshot header longer than the file"));
        }
        let mut header = vec![0u8; header_bytes as usize];
        file.read_at(0, &mut header)
            .map_err(|error| Error::io("reading", path, error))?;
        let (covered, stored_crc) = header.split_at(header.len() - 4);
        if crc32c::crc32c(covered) != u32::from_le_bytes(stored_crc.try_into().unwrap()) {
            return Err(corrupt(0, "snapshot header checksum mismatch"));
        }
        let mut body = &covered[PREFIX_BYTES..];
        let malformed = || corrupt(PREFIX_BYTES as u64, "malformed snapshot header");
        if body.remaining() < 24 {
            return Err(malformed());
        }
        let group = body.get_u64_le();
        let index = body.get_u64_le();
        let term = body.get_u64_le();
        let conf_state = get_conf_state(&mut body).map_err(|_| malformed())?;
        if body.remaining() != 12 {
            return Err(malformed());
        }
        let data_bytes = body.get_u64_le();
        let data_crc = body.get_u32_le();
        if header_bytes + data_bytes != file_bytes {
            return Err(corrupt(
                header_bytes,
                &format!(
                    "snapshot data is {} bytes, its header says {data_bytes}",
                    file_bytes.saturating_sub(header_bytes)
                ),
            ));
        }
        Ok(SnapshotReader {
            path: path.to_owned(),
            file,
            group,
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state,
            },
            data_offset: header_bytes,
            data_bytes,
            data_crc,
        })
    }

    /// The group the snapshot belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Where in the log the snapshot stands.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// Length of the snapshot's data in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// CRC32C of the whole data, for a receiver to check a streamed copy.
    pub fn data_crc(&self) -> u32 {
        self.data_crc
    }

    /// The file the snapshot is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Up to `max_bytes` of data from `offset` (fewer at the end; empty at or past the
    /// end). Not checksummed by itself: a streamed copy is checked against
    /// [`SnapshotReader::data_crc`].
    pub fn read_chunk(&self, offset: u64, max_bytes: u64) -> Result<Bytes> {
        let end = offset.saturating_add(max_bytes).min(self.data_bytes);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.file
            .read_at(self.data_offset + offset, &mut buf)
            .map_err(|error| Error::io("reading", &self.path, error))?;
        Ok(Bytes::from(buf))
    }

    /// The whole data, checked against its checksum.
    pub fn read_data(&self) -> Result<Bytes> {
        let data = self.read_chunk(0, self.data_bytes)?;
        if crc32c::crc32c(&data) != self.data_crc {
            return Err(self.data_mismatch());
        }
        Ok(data)
    }

    /// Checks the data against its checksum without holding it all in memory.
    pub fn verify(&self) -> Result<()> {
        let mut crc = 0u32;
        let mut offset = 0;
        while offset < self.data_bytes {
            let chunk = self.read_chunk(offset, VERIFY_CHUNK_BYTES as u64)?;
            crc = crc32c::crc32c_append(crc, &chunk);
            offset += chunk.len() as u64;
        }
        if crc != self.data_crc {
            return Err(self.data_mismatch());
        }
        Ok(())
    }

    /// Checks that the file is the one the log names, down to the data checksum.
    pub(crate) fn check_matches(&self, group: GroupId, record: &SnapshotRecord) -> Result<()> {
        let expected = (
            group,
            record.index,
            record.term,
            record.data_bytes,
            record.data_crc,
        );
        let found = (
            self.group,
            self.metadata.index,
            self.metadata.term,
            self.data_bytes,
            self.data_crc,
        );
        if expected != found || self.metadata.conf_state != record.conf_state {
            return Err(Error::corruption(
                &self.path,
                0,
                format!(
                    "snapshot file does not match the log: the log names group {group} index \
                     {} term {}, the file holds group {} index {} term {}",
                    record.index, record.term, self.group, self.metadata.index, self.metadata.term
                ),
            ));
        }
        Ok(())
    }

    fn data_mismatch(&self) -> Error {
        Error::corruption(
            &self.path,
            self.data_offset,
            "snapshot data checksum mismatch",
        )
    }
}

/// A record for "no snapshot yet".
pub(crate) fn is_none(record: &SnapshotRecord) -> bool {
    record.index == 0
}

#[cfg(test)]
mod tests {
    use concord_raft::ConfState;

    use super::*;
    use crate::SimFs;

    // A written snapshot reads back whole and in chunks, and a flipped data bit is
    // caught by its checksum.
    #[test]
    fn snapshot_file_round_trips_and_detects_damage() {
        let fs = SimFs::new(3);
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let metadata = SnapshotMetadata {
            index: 7,
            term: 2,
            conf_state: ConfState::with_voters([1, 2, 3]),
        };
        let data = b"the state machine at index 7".to_vec();
        let record = write_file(&fs, dir, 9, &metadata, &data).unwrap();
        let path = dir.join(file_name(9, 7));
        assert_eq!(fs.paths(), vec![path.clone()]);
        assert_eq!(parse_file_name(&file_name(9, 7)), Some((9, 7)));
        let reader = SnapshotReader::open(&fs, &path).unwrap();
        reader.check_matches(9, &record).unwrap();
        assert_eq!(reader.metadata(), &metadata);
        assert_eq!(reader.read_data().unwrap(), Bytes::from(data.clone()));
        assert_eq!(
            reader.read_chunk(4, 5).unwrap(),
            Bytes::copy_from_slice(&data[4..9])
        );
        assert_eq!(reader.read_chunk(100, 5).unwrap(), Bytes::new());
        reader.verify().unwrap();
        let last = fs.file_bytes(&path).unwrap().len() as u64 - 1;
        fs.flip_bit(&path, last, 0).unwrap();
        assert!(matches!(reader.verify(), Err(Error::Corruption { .. })));
        assert!(matches!(reader.read_data(), Err(Error::Corruption { .. })));
    }
}
