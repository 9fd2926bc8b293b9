//! The leader's tracking of every member: membership configuration, per-node
//! progress, votes; and applying membership changes to them (thesis §4.1 and §4.3).

use std::collections::{BTreeMap, BTreeSet};

use crate::conf_change::ConfChange;
use crate::progress::Progress;
use crate::quorum::{JointConfig, VoteResult};
use crate::types::{ConfState, Index, NodeId};

/// The membership as the tracker holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Voters (joint while `voters.outgoing` is non-empty).
    pub voters: JointConfig,
    /// Learners. Invariant: disjoint from both voter halves... except see learners_next.
    pub learners: BTreeSet<NodeId>,
    /// Voters of the outgoing half being demoted to learners; they become learners on
    /// leaving the joint config. Invariant: each is in voters.outgoing, not in learners.
    pub learners_next: BTreeSet<NodeId>,
    /// Leave joint automatically.
    pub auto_leave: bool,
}

/// Membership, progress and votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    /// The membership.
    pub config: TrackerConfig,
    /// Progress of every member (voters of both halves and learners).
    /// Invariant: keys == config's voters ∪ learners ∪ learners_next.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current election.
    pub votes: BTreeMap<NodeId, bool>,
    /// In-flight window for new progresses.
    pub inflight_messages_max: usize,
    /// In-flight byte limit for new progresses (0 = none).
    pub inflight_bytes_max: u64,
}

impl ProgressTracker {
    /// An empty tracker.
    pub fn new(inflight_messages_max: usize, inflight_bytes_max: u64) -> Self { let _ = (inflight_messages_max, inflight_bytes_max); todo!() }
    /// Replaces the membership with `conf_state`, creating fresh progress for every
    /// member with `next_index` (matched 0), and dropping progress of non-members.
    pub fn restore(&mut self, conf_state: &ConfState, next_index: Index) { let _ = (conf_state, next_index); todo!() }
    /// Applies a membership change (validated: see errors) and returns the new ConfState.
    /// New members get progress with `next_index`. Rules, as etcd's confchange:
    /// - empty `changes` (leave joint): only valid while joint; outgoing dropped,
    ///   learners_next become learners, nodes in neither half nor learners are removed.
    /// - `Auto` with at most one voter added/removed (learner changes free): single step,
    ///   only valid when not joint.
    /// - otherwise (or `Joint*`): enter joint: outgoing = current incoming, then apply
    ///   the changes to incoming; auto_leave = transition != JointExplicit. Only valid
    ///   when not joint.
    /// - AddVoter on a learner promotes it; AddLearner on a voter demotes it (in joint,
    ///   it goes to learners_next if it is an outgoing voter); Remove drops it.
    /// - Errors (Err(message)): changing while joint (other than leave), leave when not
    ///   joint, a result with no voters in incoming, node id 0, a node listed twice.
    pub fn apply_conf_change(&mut self, change: &ConfChange, next_index: Index) -> Result<ConfState, String> { let _ = (change, next_index); todo!() }
    /// The current membership as a ConfState (sorted ids).
    pub fn conf_state(&self) -> ConfState { todo!() }
    /// The largest index a quorum has matched (joint: both halves).
    pub fn committed(&self) -> Index { todo!() }
    /// True if `id` votes (either half).
    pub fn is_voter(&self, id: NodeId) -> bool { let _ = id; todo!() }
    /// True if the config has exactly one voter and it is `id`... generally: the only voter.
    pub fn is_singleton(&self) -> bool { todo!() }
    /// Clears votes.
    pub fn reset_votes(&mut self) { todo!() }
    /// Records `id`'s vote (first vote from a node wins; later ones are ignored).
    pub fn record_vote(&mut self, id: NodeId, granted: bool) { let _ = (id, granted); todo!() }
    /// (granted count, rejected count, result) over voters.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) { todo!() }
    /// True if the voters marked `recent_active` form a quorum (the leader counts itself
    /// via its own entry, which the caller keeps active).
    pub fn quorum_active(&self) -> bool { todo!() }
    /// Quorum over an arbitrary set of acknowledging ids (for ReadIndex).
    pub fn quorum_reached(&self, acks: &BTreeSet<NodeId>) -> bool { let _ = acks; todo!() }
    /// Every member id (voters, learners, learners_next).
    pub fn member_ids(&self) -> Vec<NodeId> { todo!() }
    /// Checks invariants (progress keys match members, learners disjoint from voters,
    /// each progress matched < next_index), panicking with details on a breach.
    pub fn check_invariants(&self) { todo!() }
}
