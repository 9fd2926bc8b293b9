//! State Machine Safety (Raft paper Figure 3, §5.4.3): if a server has applied a log
//! entry at a given index to its state machine, no other server will ever apply a
//! different log entry for the same index.
//!
//! Every application of an entry by any node, in any incarnation, is recorded as
//! `(index, term, data hash, digest)`, where the digest folds in every entry applied
//! before it (see [`crate::kv`]). Equal digests mean equal applied prefixes, so
//! comparing them also covers entries a node skipped by installing a snapshot: the
//! snapshot carries the digest at its index and is checked on restore.

use std::collections::BTreeMap;

use concord_raft::{Index, NodeId, Term};

use crate::network::Time;

/// What was first applied at one index.
#[derive(Clone, Copy, Debug)]
struct AppliedRecord {
    term: Term,
    /// `None` when first learnt from a snapshot, which does not carry entry data.
    data_hash: Option<u64>,
    digest: u64,
    node: NodeId,
    time: Time,
}

/// The record of every index applied anywhere.
#[derive(Clone, Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<Index, AppliedRecord>,
}

impl StateMachineSafety {
    /// Nothing applied yet.
    pub fn new() -> StateMachineSafety {
        StateMachineSafety::default()
    }

    /// The highest index applied anywhere (0 if none).
    pub fn highest_index(&self) -> Index {
        self.applied
            .last_key_value()
            .map(|(&index, _)| index)
            .unwrap_or(0)
    }

    /// Records that `node` applied the entry at `index` with `term` and `data_hash`,
    /// reaching `digest`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        data_hash: u64,
        digest: u64,
        now: Time,
    ) -> Result<(), String> {
        self.record(node, index, term, Some(data_hash), digest, now, "applied")
    }

    /// Records that `node` restored a snapshot ending at `index` (of `term`) whose
    /// state has `digest`.
    pub fn on_restore(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        digest: u64,
        now: Time,
    ) -> Result<(), String> {
        self.record(
            node,
            index,
            term,
            None,
            digest,
            now,
            "restored a snapshot at",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        data_hash: Option<u64>,
        digest: u64,
        now: Time,
        action: &str,
    ) -> Result<(), String> {
        let Some(known) = self.applied.get_mut(&index) else {
            self.applied.insert(
                index,
                AppliedRecord {
                    term,
                    data_hash,
                    digest,
                    node,
                    time: now,
                },
            );
            return Ok(());
        };
        let data_differs = matches!((known.data_hash, data_hash), (Some(a), Some(b)) if a != b);
        if known.term != term || data_differs {
            return Err(format!(
                "node {node} {action} index {index} with an entry of term {term} (data hash \
                 {:016x}), but node {} applied an entry of term {} (data hash {:016x}) there \
                 at t={}",
                data_hash.unwrap_or(0),
                known.node,
                known.term,
                known.data_hash.unwrap_or(0),
                known.time
            ));
        }
        if known.digest != digest {
            return Err(format!(
                "node {node} {action} index {index} (term {term}) reaching state digest \
                 {digest:016x}, but node {} reached {:016x} at the same index at t={}: their \
                 state machines applied different entries or membership changes before it",
                known.node, known.digest, known.time
            ));
        }
        if known.data_hash.is_none() {
            known.data_hash = data_hash;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A different entry, or the same entry on a different history, at an index already
    // applied elsewhere is caught; the same entry and history passes.
    #[test]
    fn different_applies_at_one_index_are_caught() {
        let mut checker = StateMachineSafety::new();
        checker.on_apply(1, 5, 2, 0xAA, 0x11, 10).unwrap();
        checker.on_apply(2, 5, 2, 0xAA, 0x11, 11).unwrap();
        checker.on_restore(3, 5, 2, 0x11, 12).unwrap();
        let violation = checker.on_apply(3, 5, 3, 0xBB, 0x22, 13).unwrap_err();
        assert!(
            violation.contains("node 3 applied index 5 with an entry of term 3"),
            "{violation}"
        );
        let violation = checker.on_restore(4, 5, 2, 0x99, 14).unwrap_err();
        assert!(violation.contains("state digest"), "{violation}");
    }
}
