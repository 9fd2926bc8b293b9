//! Election Safety (Raft paper Figure 3): at most one leader can be elected in a given
//! term.
//!
//! The simulator observes every node's role and term after each of its inputs and
//! reports the first term in which two different nodes were seen leading. Because a
//! leader is recorded the moment it wins, a violation is caught even if the two leaders
//! never overlap in time (one may have crashed before the other won).

use std::collections::BTreeMap;

use concord_raft::{NodeId, Term};

use crate::network::Time;

/// The leader seen in each term.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    /// Term -> (the node seen leading it, when first seen).
    leader_by_term: BTreeMap<Term, (NodeId, Time)>,
}

impl ElectionSafety {
    /// No leader seen yet.
    pub fn new() -> ElectionSafety {
        ElectionSafety::default()
    }

    /// Records that `node` is leader in `term` at `now`. Returns `Ok(true)` the first
    /// time `node` is seen leading `term` (the moment it won), `Ok(false)` after that,
    /// and the violation if another node already led `term`.
    pub fn observe_leader(&mut self, node: NodeId, term: Term, now: Time) -> Result<bool, String> {
        match self.leader_by_term.get(&term) {
            None => {
                self.leader_by_term.insert(term, (node, now));
                Ok(true)
            }
            Some(&(leader, _)) if leader == node => Ok(false),
            Some(&(leader, since)) => Err(format!(
                "two leaders in term {term}: node {leader} (leader since t={since}) and node \
                 {node} (leader at t={now})"
            )),
        }
    }

    /// The leader seen in `term`, if any.
    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leader_by_term.get(&term).map(|&(node, _)| node)
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leader_by_term.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A second node leading a term already led is a violation naming both nodes.
    #[test]
    fn second_leader_in_a_term_is_caught() {
        let mut checker = ElectionSafety::new();
        assert_eq!(checker.observe_leader(1, 3, 10), Ok(true));
        assert_eq!(checker.observe_leader(1, 3, 11), Ok(false));
        assert_eq!(checker.observe_leader(2, 4, 12), Ok(true));
        let violation = checker.observe_leader(2, 3, 13).unwrap_err();
        assert_eq!(
            violation,
            "two leaders in term 3: node 1 (leader since t=10) and node 2 (leader at t=13)"
        );
    }
}
