//! The types that travel between concord's servers and its clients, free of any
//! transport: the [`ApiError`] a caller acts on, what proposals and reads answer, a
//! group's status and members, join tickets, and the [`RequestId`] that makes a
//! client's retries apply exactly once.
//!
//! `concord-proto` converts them to and from the wire; `concord-group`,
//! `concord-node` and `concord-client` all use these same definitions.
#![deny(missing_docs)]

mod error;
pub mod sync;

use bytes::Bytes;
pub use concord_raft::{Index, NodeId, Role, Term};
pub use error::ApiError;

/// A raft group's id.
pub type GroupId = u64;

/// A client registered with a group's exactly-once table: the index of the log entry
/// that registered it (unique in the group, never reused).
pub type ClientId = u64;

/// What makes a proposal apply at most once however often it is sent (Raft thesis
/// §6.3): the client that sends it, its request number, and the lowest request number
/// whose answer the client has not yet seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The client, as registered with the group.
    pub client: ClientId,
    /// The request's number. A client numbers its requests 1, 2, 3, ... and sends a
    /// retry with the number of the request it repeats.
    // Invariant: sequence >= 1.
    pub sequence: u64,
    /// Every request of this client numbered below this has been answered and will
    /// never be sent again: the group may forget their results.
    // Invariant: 1 <= first_unanswered <= sequence.
    pub first_unanswered: u64,
}

impl RequestId {
    /// True when the numbers obey their invariants.
    pub fn is_valid(&self) -> bool {
        self.client != 0
            && self.sequence >= 1
            && (1..=self.sequence).contains(&self.first_unanswered)
    }
}

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// Confirmed by the leader (ReadIndex) and served once the state machine has
    /// applied the read index: sees every write acknowledged before it began.
    #[default]
    Linearizable,
    /// Served from the contacted node's state machine as it is; may be stale.
    Stale,
}

/// A proposal that applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeResponse {
    /// The state machine's response.
    pub response: Bytes,
    /// The log index the proposal committed at.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
}

/// A read's answer and the point of the log it was served at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResponse {
    /// The state machine's answer.
    pub response: Bytes,
    /// The index the state machine had applied when it answered: at least the read
    /// index for a linearizable read.
    pub index: Index,
    /// The term of the node that served it, when it answered.
    pub term: Term,
}

/// Whether a member votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Votes and counts toward quorums.
    Voter,
    /// Receives the log without voting.
    Learner,
}

/// A node of a group and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// Where its gRPC server listens (host:port).
    pub address: String,
    /// Whether it votes.
    pub role: MemberRole,
}

/// Whether a group on a node is working.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GroupHealth {
    /// Replicating and applying.
    #[default]
    Running,
    /// Stopped applying: its state machine refused a snapshot or failed. Requests are
    /// refused with [`ApiError::GroupStopped`] until an operator repairs the node.
    Stopped {
        /// What failed.
        reason: String,
    },
}

/// One node's view of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// The node that answered.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows, if any.
    pub leader: Option<Member>,
    /// Its commit index.
    pub commit: Index,
    /// The index its state machine has applied.
    pub applied: Index,
    /// The members as it knows them.
    pub members: Vec<Member>,
    /// Whether the group works on this node.
    pub health: GroupHealth,
}

/// What a new node needs to start a group it was admitted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTicket {
    /// The group.
    pub group: GroupId,
    /// The node admitted.
    pub node_id: NodeId,
    /// The group's members, the new node included.
    pub members: Vec<Member>,
    /// The leader that admitted the node, if known.
    pub leader: Option<Member>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_number_from_one_and_ack_below_themselves() {
        let id = |client, sequence, first_unanswered| RequestId {
            client,
            sequence,
            first_unanswered,
        };
        assert!(id(7, 1, 1).is_valid());
        assert!(id(7, 9, 4).is_valid());
        assert!(id(7, 9, 9).is_valid());
        assert!(!id(0, 1, 1).is_valid(), "client 0 is nobody");
        assert!(!id(7, 0, 0).is_valid(), "numbers start at 1");
        assert!(!id(7, 3, 0).is_valid());
        assert!(
            !id(7, 3, 4).is_valid(),
            "a request cannot be answered already"
        );
    }
}
