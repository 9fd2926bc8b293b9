//! What the log keeps in memory per group: hard state, membership, the latest snapshot's
//! description, an index of where each entry is on disk (its term and the record that
//! holds it), and a cache of recent entries bounded in bytes. Never the whole log.
//!
//! ```text
//! compacted_index  known_from            last_index
//!        |             |                     |
//!        [  unknown    ][ terms, spans ...   ]
//!                               [ cache ...  ]
//! ```
//!
//! The unknown stretch exists only while recovery replays from a checkpoint whose
//! entries lived in deleted segments; recovery fails if any is left at the end.

use std::collections::VecDeque;

use concord_raft::{ConfState, Entry, HardState, Index, Term, ENTRY_OVERHEAD_BYTES};

use crate::error::{Error, Result};
use crate::record::SnapshotRecord;

/// Where one `Entries` record is: it holds the entries from `first_index` up to the next
/// span's first index (later entries of the record were truncated and rewritten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub first_index: Index,
    pub segment: u64,
    /// Byte offset of the record in its segment file.
    pub offset: u64,
    /// Bytes of the whole record.
    pub record_bytes: u64,
}

/// An entry in the cache, with the sequence number of the batch that wrote it.
#[derive(Clone, Debug)]
struct CachedEntry {
    entry: Entry,
    sequence: u64,
}

/// One group's in-memory state.
#[derive(Clone, Debug)]
pub(crate) struct GroupState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The latest snapshot (index 0 if none).
    pub snapshot: SnapshotRecord,
    /// Index of the last compacted entry (0 for a log never compacted).
    pub compacted_index: Index,
    /// Term of the entry at `compacted_index`.
    pub compacted_term: Term,
    /// First entry whose term and place are known.
    // Invariant: compacted_index < known_from.
    known_from: Index,
    /// Term of each entry from `known_from`.
    // Invariant: terms[i] is the term of entry known_from + i.
    terms: VecDeque<Term>,
    /// The records holding the known entries, by first index.
    // Invariant: sorted by first_index; spans[0].first_index <= known_from when there
    // are known entries, and no span starts past last_index.
    spans: VecDeque<Span>,
    /// The most recent entries.
    // Invariant: a suffix of the log: cache[i].index == last_index - cache.len() + 1 + i.
    cache: VecDeque<CachedEntry>,
    /// Sum of `size_bytes` over `cache`.
    cache_bytes: u64,
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState {
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: SnapshotRecord::default(),
            compacted_index: 0,
            compacted_term: 0,
            known_from: 1,
            terms: VecDeque::new(),
            spans: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
        }
    }
}

/// Entries to read: from disk records, then from the cache.
pub(crate) struct ReadPlan {
    /// Records to read, each with the range of indexes to take from it.
    pub disk: Vec<(Span, Index, Index)>,
    /// Entries served from memory, after the disk ones.
    pub cached: Vec<Entry>,
}

impl GroupState {
    pub(crate) fn first_index(&self) -> Index {
        self.compacted_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.known_from - 1 + self.terms.len() as Index
    }

    /// True if the group holds nothing at all (never written, or a fresh store).
    pub(crate) fn is_blank(&self) -> bool {
        self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.snapshot.index == 0
            && self.compacted_index == 0
            && self.last_index() == 0
    }

    /// First index of an unknown stretch that is still there, if any.
    pub(crate) fn unknown_entries(&self) -> Option<(Index, Index)> {
        (self.known_from > self.compacted_index + 1)
            .then(|| (self.compacted_index + 1, self.known_from - 1))
    }

    /// The term of entry `index`, as `Storage::term` answers it.
    pub(crate) fn term(&self, index: Index) -> Result<Term> {
        if index < self.compacted_index {
            return Err(Error::Compacted);
        }
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index > self.last_index() || index < self.known_from {
            return Err(Error::Unavailable);
        }
        Ok(self.terms[(index - self.known_from) as usize])
    }

    fn cache_first_index(&self) -> Index {
        self.last_index() + 1 - self.cache.len() as Index
    }

    /// Records a hard state.
    pub(crate) fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Drops entries after `index`. Precondition: `compacted_index <= index`.
    pub(crate) fn truncate_after(&mut self, index: Index) {
        debug_assert!(self.compacted_index <= index);
        if index >= self.last_index() {
            return;
        }
        let cache_keep = (index + 1).saturating_sub(self.cache_first_index()) as usize;
        for dropped in self.cache.drain(cache_keep..) {
            self.cache_bytes -= dropped.entry.size_bytes();
        }
        if index + 1 >= self.known_from {
            self.terms.truncate((index + 1 - self.known_from) as usize);
        } else {
            self.terms.clear();
            self.known_from = index + 1;
        }
        while self
            .spans
            .back()
            .is_some_and(|span| span.first_index > index)
        {
            self.spans.pop_back();
        }
    }

    /// Appends entries that follow the last index, held by the record at `span`.
    pub(crate) fn append(
        &mut self,
        entries: &[Entry],
        span: Span,
        sequence: u64,
        cache_bytes_max: u64,
        durable_sequence: u64,
    ) {
        debug_assert_eq!(entries[0].index, self.last_index() + 1);
        debug_assert_eq!(span.first_index, entries[0].index);
        self.append_terms(entries.iter().map(|entry| entry.term), span);
        for entry in entries {
            self.cache_bytes += entry.size_bytes();
            self.cache.push_back(CachedEntry {
                entry: entry.clone(),
                sequence,
            });
        }
        self.evict(cache_bytes_max, durable_sequence);
    }

    /// Appends entries known only by their terms (recovery: they stay on disk).
    pub(crate) fn append_terms(&mut self, terms: impl IntoIterator<Item = Term>, span: Span) {
        debug_assert_eq!(span.first_index, self.last_index() + 1);
        debug_assert!(self.cache.is_empty() || span.first_index == self.last_index() + 1);
        self.terms.extend(terms);
        self.spans.push_back(span);
    }

    /// Drops cached entries from the front, oldest first, while over the limit; entries
    /// of batches not yet durable stay (they may not be on disk yet).
    pub(crate) fn evict(&mut self, cache_bytes_max: u64, durable_sequence: u64) {
        while self.cache_bytes > cache_bytes_max {
            match self.cache.front() {
                Some(front) if front.sequence <= durable_sequence => {
                    self.cache_bytes -= front.entry.size_bytes();
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops entries up to `index`, whose term is `term`. Precondition:
    /// `compacted_index < index <= last_index()`.
    pub(crate) fn compact(&mut self, index: Index, term: Term) {
        debug_assert!(self.compacted_index < index && index <= self.last_index());
        if index >= self.known_from {
            let dropped = (index + 1 - self.known_from) as usize;
            self.terms.drain(..dropped);
            self.known_from = index + 1;
        }
        self.compacted_index = index;
        self.compacted_term = term;
        if self.terms.is_empty() {
            self.spans.clear();
        } else {
            while self.spans.len() >= 2 && self.spans[1].first_index <= self.known_from {
                self.spans.pop_front();
            }
        }
        while self
            .cache
            .front()
            .is_some_and(|cached| cached.entry.index <= index)
        {
            let dropped = self.cache.pop_front().expect("front exists");
            self.cache_bytes -= dropped.entry.size_bytes();
        }
    }

    /// Replaces the whole log with an installed snapshot.
    pub(crate) fn install_snapshot(&mut self, snapshot: SnapshotRecord) {
        self.terms.clear();
        self.spans.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.compacted_index = snapshot.index;
        self.compacted_term = snapshot.term;
        self.known_from = snapshot.index + 1;
        self.conf_state = snapshot.conf_state.clone();
        self.snapshot = snapshot;
    }

    /// Sets the whole state from a checkpoint whose entries up to `last_index` are in
    /// segments that may be gone (recovery only).
    pub(crate) fn from_checkpoint(checkpoint: &crate::record::Checkpoint) -> GroupState {
        GroupState {
            hard_state: checkpoint.hard_state,
            conf_state: checkpoint.conf_state.clone(),
            snapshot: checkpoint.snapshot.clone(),
            compacted_index: checkpoint.compacted_index,
            compacted_term: checkpoint.compacted_term,
            known_from: checkpoint.last_index + 1,
            ..GroupState::default()
        }
    }

    /// The checkpoint describing this state.
    pub(crate) fn checkpoint(&self) -> crate::record::Checkpoint {
        crate::record::Checkpoint {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
            snapshot: self.snapshot.clone(),
            compacted_index: self.compacted_index,
            compacted_term: self.compacted_term,
            last_index: self.last_index(),
        }
    }

    /// Checks `[low, high)` against the log's bounds and plans how to read it within
    /// `max_bytes` (always at least one entry when the range is not empty).
    pub(crate) fn plan_read(&self, low: Index, high: Index, max_bytes: u64) -> Result<ReadPlan> {
        assert!(low <= high, "invalid entries range [{low}, {high})");
        if low < self.first_index() {
            return Err(Error::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(Error::Unavailable);
        }
        let mut plan = ReadPlan {
            disk: Vec::new(),
            cached: Vec::new(),
        };
        // Every entry counts at least its overhead against `max_bytes`, so no read
        // takes more than this many: plan no further (a restart applying a long log
        // one small batch at a time would otherwise plan the whole log each time).
        let entries_max = (max_bytes / ENTRY_OVERHEAD_BYTES).saturating_add(1);
        let cache_first = self.cache_first_index();
        let disk_high = high.min(cache_first).min(low.saturating_add(entries_max));
        if low < disk_high {
            // The last span starting at or before `low`.
            let mut position = self
                .spans
                .partition_point(|span| span.first_index <= low)
                .checked_sub(1)
                .expect("a span covers every known entry");
            let mut next = low;
            while next < disk_high {
                let span = self.spans[position];
                let span_end = self
                    .spans
                    .get(position + 1)
                    .map_or(self.last_index() + 1, |following| following.first_index);
                let end = span_end.min(disk_high);
                plan.disk.push((span, next, end));
                next = end;
                position += 1;
            }
        }
        // The cache follows the disk part only if that part reached it.
        if high > cache_first && disk_high >= cache_first.min(high) {
            let mut total_bytes = 0u64;
            let skip = low.saturating_sub(cache_first) as usize;
            let take = (high - low.max(cache_first)) as usize;
            for cached in self.cache.iter().skip(skip).take(take) {
                total_bytes = total_bytes.saturating_add(cached.entry.size_bytes());
                if !plan.cached.is_empty() && total_bytes > max_bytes {
                    break;
                }
                plan.cached.push(cached.entry.clone());
            }
        }
        Ok(plan)
    }

    /// Memory held by the cache, in `size_bytes` units.
    pub(crate) fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use concord_raft::EntryKind;

    use super::*;

    fn entries(first: Index, terms: &[Term]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(offset, &term)| Entry {
                term,
                index: first + offset as Index,
                kind: EntryKind::Normal,
                data: Bytes::from(vec![0u8; 100]),
            })
            .collect()
    }

    fn span(first_index: Index, offset: u64) -> Span {
        Span {
            first_index,
            segment: 1,
            offset,
            record_bytes: 10,
        }
    }

    // The cache keeps only its byte limit of durable entries, keeps entries of batches
    // not yet durable past the limit, and reads fall back to the records on disk.
    #[test]
    fn cache_is_bounded_and_reads_split_between_disk_and_cache() {
        let mut group = GroupState::default();
        let entry_bytes = entries(1, &[1])[0].size_bytes();
        group.append(&entries(1, &[1, 1, 1]), span(1, 0), 1, 2 * entry_bytes, 0);
        assert_eq!(
            group.cache.len(),
            3,
            "batch 1 is not durable: nothing evicted"
        );
        group.append(&entries(4, &[2, 2]), span(4, 100), 2, 2 * entry_bytes, 1);
        assert_eq!(
            group.cache.len(),
            2,
            "batch 1 durable: evicted down to the limit"
        );
        assert_eq!(group.cache_bytes(), 2 * entry_bytes);
        let plan = group.plan_read(2, 6, u64::MAX).unwrap();
        assert_eq!(plan.disk, vec![(span(1, 0), 2, 4)]);
        assert_eq!(
            plan.cached
                .iter()
                .map(|entry| entry.index)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        let plan = group.plan_read(4, 6, 0).unwrap();
        assert!(plan.disk.is_empty());
        assert_eq!(plan.cached.len(), 1, "max_bytes 0 still returns one entry");
    }

    // A read plans no more of the disk than `max_bytes` could take (each entry counts
    // at least its overhead), and adds cached entries only when the disk part
    // reached them, so what it returns stays contiguous.
    #[test]
    fn reads_plan_no_more_than_the_byte_limit_can_take() {
        let mut group = GroupState::default();
        for index in 1..=1_000 {
            group.append(
                &entries(index, &[1]),
                span(index, index * 10),
                index,
                0,
                index,
            );
        }
        group.append(
            &entries(1_001, &[1, 1]),
            span(1_001, 20_000),
            1_001,
            u64::MAX,
            1_000,
        );
        assert_eq!(group.cache.len(), 2, "the last batch is not durable yet");
        let plan = group.plan_read(1, 1_003, 0).unwrap();
        assert_eq!(plan.disk, vec![(span(1, 10), 1, 2)]);
        assert!(plan.cached.is_empty());
        let limit = 10 * ENTRY_OVERHEAD_BYTES;
        let plan = group.plan_read(5, 1_003, limit).unwrap();
        assert_eq!(plan.disk.len(), 11);
        assert_eq!(plan.disk.last().unwrap().2, 16);
        assert!(
            plan.cached.is_empty(),
            "the disk part stopped short of the cache"
        );
        let plan = group.plan_read(995, 1_003, limit).unwrap();
        assert_eq!(plan.disk.len(), 6);
        assert!(!plan.cached.is_empty(), "the disk part reached the cache");
        let plan = group.plan_read(1, 1_003, u64::MAX).unwrap();
        assert_eq!((plan.disk.len(), plan.cached.len()), (1_000, 2));
    }

    // Truncating drops later spans, terms and cached entries; compacting drops spans
    // wholly below the compaction point and keeps its term.
    #[test]
    fn truncate_and_compact_keep_index_consistent() {
        let mut group = GroupState::default();
        group.append(&entries(1, &[1, 1, 1, 1]), span(1, 0), 1, u64::MAX, 1);
        group.append(&entries(5, &[1, 1]), span(5, 100), 2, u64::MAX, 2);
        group.truncate_after(3);
        assert_eq!(group.last_index(), 3);
        assert_eq!(group.spans, VecDeque::from([span(1, 0)]));
        group.append(&entries(4, &[2, 2]), span(4, 200), 3, u64::MAX, 3);
        assert_eq!(group.term(4).unwrap(), 2);
        let plan = group.plan_read(1, 6, u64::MAX).unwrap();
        assert_eq!(plan.cached.len(), 5);
        group.compact(4, 2);
        assert_eq!(group.spans, VecDeque::from([span(4, 200)]));
        assert_eq!(group.first_index(), 5);
        assert_eq!(group.term(4).unwrap(), 2);
        assert!(matches!(group.term(3), Err(Error::Compacted)));
        group.compact(5, 2);
        assert!(group.spans.is_empty());
        assert_eq!((group.first_index(), group.last_index()), (6, 5));
    }
}
