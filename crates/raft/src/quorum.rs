//! Quorum math: commit indexes and election results for majority and joint
//! configurations (Raft paper §5.3, thesis §4.3).

use std::collections::BTreeSet;

use crate::types::{Index, NodeId};

/// Configs with at most this many voters compute their committed index in a stack
/// array; larger ones fall back to a heap vector. Clusters are almost always 3 to 7.
const STACK_VOTERS_MAX: usize = 7;

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: some votes are missing.
    Pending,
    /// A quorum voted no (or cannot vote yes any more).
    Lost,
    /// A quorum voted yes.
    Won,
}

/// A set of voters decided by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    /// The voters.
    pub voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// The largest index that a majority has matched. `matched(id)` gives a voter's
    /// match index (None counts as 0). An empty config returns `Index::MAX` so that it
    /// never holds back a joint config's other half.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index {
        let voter_count = self.voters.len();
        if voter_count == 0 {
            return Index::MAX;
        }
        // Called on every append acknowledgement: keep the common sizes off the heap.
        if voter_count <= STACK_VOTERS_MAX {
            let mut matches = [0 as Index; STACK_VOTERS_MAX];
            for (slot, &id) in matches.iter_mut().zip(&self.voters) {
                *slot = matched(id).unwrap_or(0);
            }
            quorum_match(&mut matches[..voter_count])
        } else {
            let mut matches: Vec<Index> = self
                .voters
                .iter()
                .map(|&id| matched(id).unwrap_or(0))
                .collect();
            quorum_match(&mut matches)
        }
    }

    /// Counts `votes(id)` (None = not yet voted). An empty config has `Won`.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            // An empty half must not block its joint partner (thesis §4.3); as a whole
            // config it only occurs before bootstrap.
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for &id in &self.voters {
            match votes(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = majority(self.voters.len());
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// The smallest number of voters that is more than half of `voter_count`.
fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The largest index that a majority of `matches` have reached: with the matches in
/// ascending order, the one a majority is at or above. Reorders `matches`.
fn quorum_match(matches: &mut [Index]) -> Index {
    debug_assert!(!matches.is_empty());
    let position = matches.len() - majority(matches.len());
    *matches.select_nth_unstable(position).1
}

/// Two majority configs that must both agree (joint consensus, thesis §4.3). When not
/// joint, `outgoing` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The new (or only) voters.
    pub incoming: MajorityConfig,
    /// The old voters while joint; empty otherwise.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// The smaller of the two halves' committed indexes.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index {
        // Thesis §4.3: an entry commits in a joint config only with majorities of both.
        let incoming = self.incoming.committed_index(&matched);
        let outgoing = self.outgoing.committed_index(&matched);
        incoming.min(outgoing)
    }

    /// Won only if both halves won; Lost if either lost; else Pending.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = self.incoming.vote_result(&votes);
        let outgoing = self.outgoing.vote_result(&votes);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .voters
            .union(&self.outgoing.voters)
            .copied()
            .collect()
    }

    /// True when `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.voters.contains(&id) || self.outgoing.voters.contains(&id)
    }

    /// True while joint.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.voters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn majority_of(ids: &[NodeId]) -> MajorityConfig {
        MajorityConfig {
            voters: ids.iter().copied().collect(),
        }
    }

    fn joint_of(incoming: &[NodeId], outgoing: &[NodeId]) -> JointConfig {
        JointConfig {
            incoming: majority_of(incoming),
            outgoing: majority_of(outgoing),
        }
    }

    fn lookup<V: Copy>(map: &BTreeMap<NodeId, V>) -> impl Fn(NodeId) -> Option<V> + '_ {
        move |id| map.get(&id).copied()
    }

    /// The naive committed index: the largest `i` such that more than half of the
    /// voters have matched at least `i` (Raft paper §5.3/§5.4.2 commit rule).
    fn naive_committed_index(
        voters: &BTreeSet<NodeId>,
        matched: &BTreeMap<NodeId, Index>,
    ) -> Index {
        if voters.is_empty() {
            return Index::MAX;
        }
        let match_of = |id: &NodeId| matched.get(id).copied().unwrap_or(0);
        let candidates = voters.iter().map(match_of).chain([0]);
        candidates
            .filter(|&index| {
                voters.iter().filter(|id| match_of(id) >= index).count() * 2 > voters.len()
            })
            .max()
            .unwrap()
    }

    /// The naive vote count: win with more than half yes, lose once more than half
    /// cannot say yes, otherwise wait (Raft paper §5.2).
    fn naive_vote_result(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        if voters.is_empty() {
            return VoteResult::Won;
        }
        let yes = voters
            .iter()
            .filter(|id| votes.get(id) == Some(&true))
            .count();
        let no = voters
            .iter()
            .filter(|id| votes.get(id) == Some(&false))
            .count();
        if yes * 2 > voters.len() {
            VoteResult::Won
        } else if no * 2 >= voters.len() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    #[test]
    fn committed_index_is_the_median_of_three() {
        // Raft paper §5.3: with matches 5, 3, 1 only index 3 is stored on a majority.
        let config = majority_of(&[1, 2, 3]);
        let matched = BTreeMap::from([(1, 5), (2, 3), (3, 1)]);
        assert_eq!(config.committed_index(lookup(&matched)), 3);
    }

    #[test]
    fn committed_index_of_even_config_needs_more_than_half() {
        // Raft paper §5.3: four voters need three matches, so 5, 4, 3, 2 commits 3.
        let config = majority_of(&[1, 2, 3, 4]);
        let matched = BTreeMap::from([(1, 5), (2, 4), (3, 3), (4, 2)]);
        assert_eq!(config.committed_index(lookup(&matched)), 3);
    }

    #[test]
    fn committed_index_counts_unknown_voters_as_zero() {
        // Raft paper §5.3: a voter with no reported match holds nothing, so two of three
        // missing leaves nothing committed.
        let config = majority_of(&[1, 2, 3]);
        let matched = BTreeMap::from([(1, 9)]);
        assert_eq!(config.committed_index(lookup(&matched)), 0);
        let matched = BTreeMap::from([(1, 9), (3, 7)]);
        assert_eq!(config.committed_index(lookup(&matched)), 7);
    }

    #[test]
    fn committed_index_of_single_voter_is_its_match() {
        // Raft paper §5.3: a one-node cluster is its own majority.
        let config = majority_of(&[7]);
        let matched = BTreeMap::from([(7, 12)]);
        assert_eq!(config.committed_index(lookup(&matched)), 12);
    }

    #[test]
    fn committed_index_of_empty_config_never_holds_back() {
        // Thesis §4.3: an empty half imposes no constraint on its joint partner.
        let config = MajorityConfig::default();
        assert_eq!(config.committed_index(|_| Some(3)), Index::MAX);
    }

    #[test]
    fn committed_index_of_large_config_uses_the_same_rule() {
        // Raft paper §5.3: nine voters need five; the fifth largest of 1..=9 is 5.
        let config = majority_of(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(config.committed_index(Some), 5);
    }

    #[test]
    fn joint_committed_index_is_the_smaller_half() {
        // Thesis §4.3: a joint config commits only what both majorities hold.
        let config = joint_of(&[1, 2, 3], &[3, 4, 5]);
        let matched = BTreeMap::from([(1, 10), (2, 10), (3, 6), (4, 4), (5, 2)]);
        assert_eq!(config.incoming.committed_index(lookup(&matched)), 10);
        assert_eq!(config.outgoing.committed_index(lookup(&matched)), 4);
        assert_eq!(config.committed_index(lookup(&matched)), 4);
    }

    #[test]
    fn joint_committed_index_when_not_joint_is_the_incoming_half() {
        // Thesis §4.3: outside a joint change only the single majority counts.
        let config = joint_of(&[1, 2, 3], &[]);
        let matched = BTreeMap::from([(1, 8), (2, 6), (3, 1)]);
        assert_eq!(config.committed_index(lookup(&matched)), 6);
    }

    #[test]
    fn vote_result_decides_as_soon_as_a_majority_is_known() {
        // Raft paper §5.2: two yes of three wins; two no of three loses; else wait.
        let config = majority_of(&[1, 2, 3]);
        let cases: [(&[(NodeId, bool)], VoteResult); 6] = [
            (&[], VoteResult::Pending),
            (&[(1, true)], VoteResult::Pending),
            (&[(1, true), (2, true)], VoteResult::Won),
            (&[(1, true), (2, false)], VoteResult::Pending),
            (&[(1, false), (2, false)], VoteResult::Lost),
            (&[(1, true), (2, false), (3, false)], VoteResult::Lost),
        ];
        for (votes, expected) in cases {
            let votes: BTreeMap<NodeId, bool> = votes.iter().copied().collect();
            assert_eq!(
                config.vote_result(lookup(&votes)),
                expected,
                "votes {votes:?}"
            );
        }
    }

    #[test]
    fn vote_result_of_even_config_loses_on_a_tie() {
        // Raft paper §5.2: with four voters two no votes leave at most two yes, not a
        // majority, so the election is lost.
        let config = majority_of(&[1, 2, 3, 4]);
        let votes = BTreeMap::from([(1, true), (2, true), (3, false), (4, false)]);
        assert_eq!(config.vote_result(lookup(&votes)), VoteResult::Lost);
        let votes = BTreeMap::from([(1, true), (2, true), (3, false)]);
        assert_eq!(config.vote_result(lookup(&votes)), VoteResult::Pending);
    }

    #[test]
    fn vote_result_of_empty_config_is_won() {
        // Thesis §4.3: an empty half never blocks its joint partner.
        assert_eq!(
            MajorityConfig::default().vote_result(|_| None),
            VoteResult::Won
        );
    }

    #[test]
    fn joint_vote_result_needs_both_halves() {
        // Thesis §4.3: elections in a joint config need majorities of both halves.
        let config = joint_of(&[1, 2, 3], &[3, 4, 5]);
        let votes = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(config.vote_result(lookup(&votes)), VoteResult::Pending);
        let votes = BTreeMap::from([(1, true), (2, true), (3, true)]);
        assert_eq!(
            config.vote_result(lookup(&votes)),
            VoteResult::Pending,
            "one of three outgoing voters is not a majority"
        );
        let votes = BTreeMap::from([(1, true), (2, true), (3, true), (4, true)]);
        assert_eq!(config.vote_result(lookup(&votes)), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, true), (4, false), (5, false)]);
        assert_eq!(config.vote_result(lookup(&votes)), VoteResult::Lost);
    }

    #[test]
    fn joint_membership_queries() {
        // Thesis §4.3: a joint config's voters are the union of both halves.
        let config = joint_of(&[1, 2, 3], &[3, 4]);
        assert_eq!(config.ids(), BTreeSet::from([1, 2, 3, 4]));
        assert!(config.contains(4) && config.contains(1) && !config.contains(5));
        assert!(config.is_joint());
        assert!(!joint_of(&[1, 2], &[]).is_joint());
    }

    /// A voter set drawn from ids 1..=12 (crossing the stack/heap boundary), and for
    /// each id an optional match index (None = no progress reported).
    fn voters_and_matches() -> impl Strategy<Value = (BTreeSet<NodeId>, BTreeMap<NodeId, Index>)> {
        (
            proptest::collection::btree_set(1..=12u64, 0..=12),
            proptest::collection::btree_map(1..=12u64, 0..20u64, 0..=12),
        )
    }

    proptest! {
        /// committed_index equals the naive "largest i matched by more than half"
        /// (Raft paper §5.3) for every size on both sides of the stack-array cutoff.
        #[test]
        fn committed_index_matches_naive_model((voters, matched) in voters_and_matches()) {
            let config = MajorityConfig { voters: voters.clone() };
            prop_assert_eq!(config.committed_index(lookup(&matched)), naive_committed_index(&voters, &matched));
        }

        /// A joint config commits the minimum of its halves' naive commit indexes
        /// (thesis §4.3).
        #[test]
        fn joint_committed_index_is_min_of_naive_halves(
            (incoming, matched) in voters_and_matches(),
            outgoing in proptest::collection::btree_set(1..=12u64, 0..=12),
        ) {
            let config = JointConfig {
                incoming: MajorityConfig { voters: incoming.clone() },
                outgoing: MajorityConfig { voters: outgoing.clone() },
            };
            let expected = naive_committed_index(&incoming, &matched).min(naive_committed_index(&outgoing, &matched));
            prop_assert_eq!(config.committed_index(lookup(&matched)), expected);
        }

        /// vote_result agrees with naive counting (Raft paper §5.2), and the joint
        /// result combines the halves as thesis §4.3 requires.
        #[test]
        fn vote_result_matches_naive_counting(
            incoming in proptest::collection::btree_set(1..=12u64, 0..=12),
            outgoing in proptest::collection::btree_set(1..=12u64, 0..=12),
            votes in proptest::collection::btree_map(1..=12u64, any::<bool>(), 0..=12),
        ) {
            let incoming_result = naive_vote_result(&incoming, &votes);
            let outgoing_result = naive_vote_result(&outgoing, &votes);
            let config = JointConfig {
                incoming: MajorityConfig { voters: incoming },
                outgoing: MajorityConfig { voters: outgoing },
            };
            prop_assert_eq!(config.incoming.vote_result(lookup(&votes)), incoming_result);
            prop_assert_eq!(config.outgoing.vote_result(lookup(&votes)), outgoing_result);
            let expected = if incoming_result == VoteResult::Won && outgoing_result == VoteResult::Won {
                VoteResult::Won
            } else if incoming_result == VoteResult::Lost || outgoing_result == VoteResult::Lost {
                VoteResult::Lost
            } else {
                VoteResult::Pending
            };
            prop_assert_eq!(config.vote_result(lookup(&votes)), expected);
        }
    }
}
