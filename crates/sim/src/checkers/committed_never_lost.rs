//! Committed entries are never lost: the record of every entry any node ever knew to be
//! committed, and the checks against it.
//!
//! After each input to a node, every index newly covered by its commit index is recorded
//! with its term, a hash of its data, and the *commit term*: the lowest term of a node
//! seen holding it committed, which is the term of the leader that committed it (the
//! leader's commit index moves first; followers learn it in the same or a later term).
//!
//! Checks:
//! - two nodes never report different entries committed at one index;
//! - every leader of term `T` holds in its log every entry committed in a term `<= T`
//!   (entries below its compaction point are in its snapshot, whose consistency the
//!   state-machine-safety checker covers); entries committed in later terms are skipped,
//!   because a deposed leader that has not noticed yet legitimately lacks them;
//! - every entry a node applies is on record as committed, and is the committed one.
//!
//! The record also serves [`super::leader_completeness`].

use std::collections::BTreeMap;

use concord_raft::{Index, NodeId, Term};

use super::LogView;

use crate::network::Time;
use crate::rng::hash_bytes;

/// One entry known to be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// The entry's term.
    pub term: Term,
    /// A hash of its data; `None` when only known as a snapshot's last entry.
    pub data_hash: Option<u64>,
    /// The lowest term of a node seen holding it committed.
    pub commit_term: Term,
    /// The node first seen holding it committed.
    pub node: NodeId,
    /// When.
    pub time: Time,
}

/// Every entry ever known committed, and how far each node's commit index was read.
#[derive(Clone, Debug, Default)]
pub struct CommittedRecord {
    entries: BTreeMap<Index, CommittedEntry>,
    /// Per node, the commit index up to which its log was read.
    observed: BTreeMap<NodeId, Index>,
}

impl CommittedRecord {
    /// Nothing committed yet.
    pub fn new() -> CommittedRecord {
        CommittedRecord::default()
    }

    /// The committed entry at `index`, if known.
    pub fn get(&self, index: Index) -> Option<&CommittedEntry> {
        self.entries.get(&index)
    }

    /// The highest index known committed (0 if none).
    pub fn highest_index(&self) -> Index {
        self.entries
            .last_key_value()
            .map(|(&index, _)| index)
            .unwrap_or(0)
    }

    /// Number of indexes known committed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is known committed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Committed entries at `from` and above, in index order.
    pub fn entries_from(&self, from: Index) -> impl Iterator<Item = (Index, &CommittedEntry)> {
        self.entries
            .range(from..)
            .map(|(&index, entry)| (index, entry))
    }

    /// Reads what `node` (in `term`) newly holds committed in `log` and records it.
    /// Fails if it contradicts an entry recorded as committed at the same index.
    pub fn observe(
        &mut self,
        node: NodeId,
        term: Term,
        log: &impl LogView,
        now: Time,
    ) -> Result<(), String> {
        let committed = log.committed();
        let observed = self.observed.entry(node).or_insert(0);
        if committed <= *observed {
            // A restart can bring the commit index back down; read again from there.
            *observed = committed;
            return Ok(());
        }
        let low = (*observed + 1).max(log.first_index());
        *observed = committed;
        let compaction_point = log.first_index() - 1;
        if compaction_point >= low.saturating_sub(1) && compaction_point > 0 {
            if let Some(point_term) = log.term(compaction_point) {
                self.record(compaction_point, point_term, None, term, node, now)?;
            }
        }
        if low > committed {
            return Ok(());
        }
        for entry in log.entries(low, committed + 1) {
            let hash = hash_bytes(&entry.data);
            self.record(entry.index, entry.term, Some(hash), term, node, now)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        index: Index,
        term: Term,
        data_hash: Option<u64>,
        commit_term: Term,
        node: NodeId,
        now: Time,
    ) -> Result<(), String> {
        match self.entries.get_mut(&index) {
            None => {
                self.entries.insert(
                    index,
                    CommittedEntry {
                        term,
                        data_hash,
                        commit_term,
                        node,
                        time: now,
                    },
                );
                Ok(())
            }
            Some(known) => {
                let data_differs =
                    matches!((known.data_hash, data_hash), (Some(a), Some(b)) if a != b);
                if known.term != term || data_differs {
                    return Err(format!(
                        "two different entries committed at index {index}: node {} held \
                         (term {}, data hash {:016x}) committed at t={}, node {node} holds \
                         (term {term}, data hash {:016x}) committed at t={now}",
                        known.node,
                        known.term,
                        known.data_hash.unwrap_or(0),
                        known.time,
                        data_hash.unwrap_or(0)
                    ));
                }
                if known.data_hash.is_none() {
                    known.data_hash = data_hash;
                }
                known.commit_term = known.commit_term.min(commit_term);
                Ok(())
            }
        }
    }

    /// Checks that leader `node` of `term` holds every entry committed in a term up to
    /// its own (those at or above its compaction point).
    pub fn check_leader(&self, node: NodeId, term: Term, log: &impl LogView) -> Result<(), String> {
        let compaction_point = log.first_index() - 1;
        let last_index = log.last_index();
        for (index, committed) in self.entries_from(compaction_point) {
            if committed.commit_term > term {
                continue;
            }
            let held = if index > last_index {
                None
            } else {
                log.term(index)
            };
            if held != Some(committed.term) {
                return Err(format!(
                    "committed entry lost: index {index} (term {}) was committed in term {} \
                     (seen on node {} at t={}), but leader {node} of term {term} holds {} \
                     (its log covers {}..={last_index})",
                    committed.term,
                    committed.commit_term,
                    committed.node,
                    committed.time,
                    match held {
                        Some(held_term) => format!("an entry of term {held_term} there"),
                        None => "no entry there".to_string(),
                    },
                    compaction_point + 1,
                ));
            }
        }
        Ok(())
    }

    /// Checks that the entry `node` applies at `index` is the committed one.
    pub fn check_applied(
        &self,
        node: NodeId,
        index: Index,
        term: Term,
        data_hash: u64,
    ) -> Result<(), String> {
        // Every commit index is read right after the input that moved it, before
        // anything is applied, so an applied index must be on record.
        let Some(committed) = self.entries.get(&index) else {
            return Err(format!(
                "node {node} applied an entry at index {index} (term {term}) that no node \
                 held committed (highest index known committed: {})",
                self.highest_index()
            ));
        };
        let data_differs = committed.data_hash.is_some_and(|hash| hash != data_hash);
        if committed.term != term || data_differs {
            return Err(format!(
                "node {node} applied (term {term}, data hash {data_hash:016x}) at index \
                 {index}, but the entry committed there is (term {}, data hash {:016x}), \
                 seen on node {} at t={}",
                committed.term,
                committed.data_hash.unwrap_or(0),
                committed.node,
                committed.time
            ));
        }
        Ok(())
    }
}
