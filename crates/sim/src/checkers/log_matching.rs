//! Log Matching (Raft paper Figure 3, §5.3): if two logs contain an entry with the same
//! index and term, then the logs are identical in all entries up through that index.
//!
//! Checked on the durable logs in storage, as they are written, with a global table
//! from `(index, term)` to the entry's data hash and the term of the entry before it.
//! A leader creates at most one entry per index in its term and never rewrites it, so
//! every durable copy of `(index, term)` anywhere, at any time, must agree on both.
//! Agreement on the previous term at every index makes the whole prefixes identical by
//! induction, which is the property.

use std::collections::BTreeMap;

use concord_raft::{Index, NodeId, Storage, Term};

use crate::network::Time;
use crate::rng::hash_bytes;

/// What was first seen durable at one `(index, term)`.
#[derive(Clone, Copy, Debug)]
struct Seen {
    data_hash: u64,
    previous_term: Term,
    node: NodeId,
    time: Time,
}

/// The table of every durable `(index, term)` ever seen.
#[derive(Clone, Debug, Default)]
pub struct LogMatching {
    seen: BTreeMap<(Index, Term), Seen>,
}

impl LogMatching {
    /// Nothing seen yet.
    pub fn new() -> LogMatching {
        LogMatching::default()
    }

    /// Number of distinct `(index, term)` entries seen.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks the durable entries of `node` from index `from` to its last index.
    pub fn check_storage<S: Storage>(
        &mut self,
        node: NodeId,
        storage: &S,
        from: Index,
        now: Time,
    ) -> Result<(), String> {
        let (Ok(first_index), Ok(last_index)) = (storage.first_index(), storage.last_index())
        else {
            return Err(format!("node {node}: storage cannot report its log bounds"));
        };
        let low = from.max(first_index);
        if low > last_index {
            return Ok(());
        }
        let mut previous_term = storage
            .term(low - 1)
            .map_err(|error| format!("node {node}: term of durable index {}: {error}", low - 1))?;
        let entries = storage
            .entries(low, last_index + 1, u64::MAX)
            .map_err(|error| {
                format!("node {node}: durable entries {low}..={last_index}: {error}")
            })?;
        for entry in entries {
            let data_hash = hash_bytes(&entry.data);
            let key = (entry.index, entry.term);
            match self.seen.get(&key) {
                None => {
                    self.seen.insert(
                        key,
                        Seen {
                            data_hash,
                            previous_term,
                            node,
                            time: now,
                        },
                    );
                }
                Some(seen)
                    if seen.data_hash != data_hash || seen.previous_term != previous_term =>
                {
                    return Err(format!(
                        "logs differ at (index {}, term {}): node {node}'s durable log holds data \
                         hash {data_hash:016x} after an entry of term {previous_term}, but node {} \
                         held data hash {:016x} after an entry of term {} there at t={}",
                        entry.index,
                        entry.term,
                        seen.node,
                        seen.data_hash,
                        seen.previous_term,
                        seen.time
                    ));
                }
                Some(_) => {}
            }
            previous_term = entry.term;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::{Entry, EntryKind, LogStore, MemStorage};

    fn entries(terms_and_data: &[(Term, &'static str)]) -> Vec<Entry> {
        terms_and_data
            .iter()
            .enumerate()
            .map(|(offset, &(term, data))| Entry {
                term,
                index: offset as Index + 1,
                kind: EntryKind::Normal,
                data: Bytes::from_static(data.as_bytes()),
            })
            .collect()
    }

    // Two logs agreeing on (index, term) but not on the data, or on the entry before
    // it, are caught; matching logs pass.
    #[test]
    fn differing_entries_with_same_index_and_term_are_caught() {
        let mut checker = LogMatching::new();
        let mut a = MemStorage::new();
        a.append(&entries(&[(1, "x"), (1, "y"), (2, "z")])).unwrap();
        let mut b = MemStorage::new();
        b.append(&entries(&[(1, "x"), (1, "y")])).unwrap();
        checker.check_storage(1, &a, 1, 0).unwrap();
        checker.check_storage(2, &b, 1, 0).unwrap();

        let mut c = MemStorage::new();
        c.append(&entries(&[(1, "x"), (1, "other")])).unwrap();
        let violation = checker.check_storage(3, &c, 1, 5).unwrap_err();
        assert!(
            violation.contains("logs differ at (index 2, term 1)"),
            "{violation}"
        );

        let mut d = MemStorage::new();
        d.append(&entries(&[(1, "x"), (3, "w"), (2, "z")])).unwrap();
        let violation = checker.check_storage(4, &d, 1, 6).unwrap_err();
        assert!(violation.contains("(index 3, term 2)"), "{violation}");
        assert!(
            violation.contains("after an entry of term 3"),
            "{violation}"
        );
    }
}
