//! Quorum math: commit indexes and election results for majority and joint
//! configurations (Raft paper §5.3, thesis §4.3).

use std::collections::BTreeSet;

use crate::types::{Index, NodeId};

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
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index { let _ = matched; todo!() }
    /// Counts `votes(id)` (None = not yet voted). An empty config has `Won`.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult { let _ = votes; todo!() }
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
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> Option<Index>) -> Index { let _ = matched; todo!() }
    /// Won only if both halves won; Lost if either lost; else Pending.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult { let _ = votes; todo!() }
    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<NodeId> { todo!() }
    /// True when `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool { let _ = id; todo!() }
    /// True while joint.
    pub fn is_joint(&self) -> bool { todo!() }
}
