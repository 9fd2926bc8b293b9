//! Limits and policies of the log, as named fields with their units.

use crate::error::{Error, Result};

/// What recovery does when it finds corruption that is not a torn tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CorruptionPolicy {
    /// Refuse to open, with an error naming the file and byte offset. The default.
    #[default]
    Refuse,
    /// Cut the log at the last complete batch before the corruption, deleting every
    /// later segment, and open. Acknowledged writes after that point are lost: only for
    /// an operator who accepts that (the node may have voted or acknowledged entries it
    /// no longer has, so it should rejoin its groups as a new member).
    CutLog,
}

/// Configuration of a [`crate::Log`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A new segment file is started once the current one holds at least this many
    /// bytes. A batch is never split across segments, so a segment can exceed this by
    /// one batch.
    pub segment_bytes_max: u64,
    /// Recent entries kept in memory per group, in bytes as counted by
    /// `Entry::size_bytes`. Entries not yet written to disk are kept even past this.
    pub entry_cache_bytes_max: u64,
    /// Payload bytes after which a group's entries in one batch are split into another
    /// record. Reading an entry not in the cache reads its whole record, so this bounds
    /// the cost of a cache miss.
    pub entries_record_bytes_max: u64,
    /// Bytes of accepted batches not yet handed to the disk beyond which new writers
    /// wait (back-pressure).
    pub pending_bytes_max: u64,
    /// Bytes of zeros written ahead of the tail segment's end, in steps of this
    /// size (0: none, the default). A write then lands in space the file already
    /// has, so its fdatasync need not also commit a new file length; on an ext4 disk
    /// that makes a small write's sync about a third faster. Zeros never go past
    /// `segment_bytes_max` (a finished segment ends at its last record), and recovery
    /// drops those after the tail's last record as it drops a torn tail.
    ///
    /// Off by default: a power loss during a sync can leave a later page of the
    /// unsynced write on disk without an earlier one (an appending write cannot,
    /// as the file length orders them), and recovery cannot yet tell that from
    /// corruption in the last segment, so it refuses to open (`CorruptionPolicy::
    /// CutLog` opens it at the damage, dropping only unacknowledged writes then).
    pub preallocate_bytes: u64,
    /// What recovery does on corruption.
    pub corruption_policy: CorruptionPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 << 20,
            entry_cache_bytes_max: 4 << 20,
            entries_record_bytes_max: 64 << 10,
            pending_bytes_max: 64 << 20,
            preallocate_bytes: 0,
            corruption_policy: CorruptionPolicy::Refuse,
        }
    }
}

impl LogConfig {
    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes_max < 4096 {
            return Err(Error::Config(format!(
                "segment_bytes_max is {} bytes; it must be at least 4096",
                self.segment_bytes_max
            )));
        }
        if self.entries_record_bytes_max == 0 || self.entries_record_bytes_max > (1 << 30) {
            return Err(Error::Config(format!(
                "entries_record_bytes_max is {} bytes; it must be in 1..=1 GiB",
                self.entries_record_bytes_max
            )));
        }
        if self.pending_bytes_max == 0 {
            return Err(Error::Config("pending_bytes_max must be above 0".into()));
        }
        Ok(())
    }
}
