//! The error a caller of a concord node handles.

use concord_raft::{NodeId, ProposeError, NO_NODE};

use crate::{ClientId, GroupId};

/// An error a caller of the API handles: retry elsewhere, retry later, or give up.
/// (Errors that stop a node are the node's own.)
///
/// What each says about a write: [`ApiError::NotLeader`], [`ApiError::GroupNotFound`],
/// [`ApiError::ProposalDropped`], [`ApiError::InvalidRequest`], [`ApiError::Busy`],
/// [`ApiError::ClientUnknown`] and [`ApiError::GroupStopped`] mean it did not apply
/// and will not; [`ApiError::Timeout`], [`ApiError::OutcomeUnknown`] and
/// [`ApiError::Unavailable`] mean it may have applied or may yet apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// This node does not lead the group. Retry at the leader when one is known.
    #[error("not the leader{}", not_leader_hint(.leader, .address))]
    NotLeader {
        /// The leader, when known.
        leader: Option<NodeId>,
        /// Where the leader listens, when known.
        address: Option<String>,
    },
    /// This node hosts no such group.
    #[error("group {group} not found on this node")]
    GroupNotFound {
        /// The group asked for.
        group: GroupId,
    },
    /// The proposal was accepted but lost (a new leader overwrote it): it did not
    /// apply. Safe to retry.
    #[error("proposal dropped before it applied; retry")]
    ProposalDropped,
    /// Gave up waiting. The request may or may not take effect.
    #[error("timed out")]
    Timeout,
    /// The request was accepted, but this node cannot tell whether it applied: its
    /// leadership was lost, a snapshot replaced its log, or it stopped. Sending it
    /// again is safe only with a [`crate::RequestId`].
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The request is malformed or not allowed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node cannot be reached or cannot serve now (unreachable, shutting down).
    /// A request may have reached it.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The group is busy (membership change or leader transfer under way, too much
    /// uncommitted data, too many pending reads). Retry shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// The group's exactly-once table does not know this client: it was never
    /// registered, or its entry was evicted (the table is bounded) or expired. The
    /// request did not apply. Whether the client's earlier unanswered requests
    /// applied cannot be known; register again for new requests.
    #[error("client {client} is not registered with the group (expired or evicted); the request did not apply")]
    ClientUnknown {
        /// The client.
        client: ClientId,
    },
    /// The group stopped on this node: its state machine failed or refused a
    /// snapshot. The request did not apply here.
    #[error("group {group} stopped on this node: {reason}")]
    GroupStopped {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// A failure the caller cannot fix; a write that failed so may have applied
    /// ([`ApiError::outcome_unknown`]).
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_leader_hint(leader: &Option<NodeId>, address: &Option<String>) -> String {
    match (leader, address) {
        (Some(leader), Some(address)) => format!(" (leader: node {leader} at {address})"),
        (Some(leader), None) => format!(" (leader: node {leader})"),
        (None, Some(address)) => format!(" (leader at {address})"),
        (None, None) => " (leader unknown)".into(),
    }
}

impl From<ProposeError> for ApiError {
    /// The core's refusals. `NotLeader` has no address yet: the node fills it in from
    /// the group's membership.
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader_hint } => ApiError::NotLeader {
                leader: leader_hint.filter(|&leader| leader != NO_NODE),
                address: None,
            },
            ProposeError::InvalidConfChange(reason) => ApiError::InvalidRequest(reason),
            ProposeError::EmptyBatch => ApiError::InvalidRequest(error.to_string()),
            ProposeError::TransferInProgress { .. }
            | ProposeError::UncommittedBytesExceeded { .. }
            | ProposeError::ConfChangePending { .. }
            | ProposeError::TooManyPendingReads { .. } => ApiError::Busy(error.to_string()),
        }
    }
}

impl ApiError {
    /// True when the same request may be sent again as is (to the leader for
    /// `NotLeader`): the node did not act on it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NotLeader { .. } | ApiError::ProposalDropped | ApiError::Busy(_)
        )
    }

    /// True when a write that failed so may still have applied (or may yet apply).
    /// An internal error (a node's own, or a gRPC failure without concord's error
    /// detail) says nothing of whether it applied, so it counts too.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ApiError::Timeout
                | ApiError::OutcomeUnknown(_)
                | ApiError::Unavailable(_)
                | ApiError::Internal(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core's refusals map to what a client can act on.
    #[test]
    fn propose_errors_map() {
        assert_eq!(
            ApiError::from(ProposeError::NotLeader {
                leader_hint: Some(2)
            }),
            ApiError::NotLeader {
                leader: Some(2),
                address: None
            }
        );
        assert!(matches!(
            ApiError::from(ProposeError::ConfChangePending { pending_index: 4 }),
            ApiError::Busy(_)
        ));
        assert!(matches!(
            ApiError::from(ProposeError::InvalidConfChange("x".into())),
            ApiError::InvalidRequest(_)
        ));
    }

    /// Each error says plainly whether a write may have applied, and only refusals
    /// are safe to send again as they are.
    #[test]
    fn errors_say_whether_a_write_may_have_applied() {
        let not_applied = [
            ApiError::NotLeader {
                leader: None,
                address: None,
            },
            ApiError::GroupNotFound { group: 1 },
            ApiError::ProposalDropped,
            ApiError::InvalidRequest("x".into()),
            ApiError::Busy("x".into()),
            ApiError::ClientUnknown { client: 3 },
            ApiError::GroupStopped {
                group: 1,
                reason: "x".into(),
            },
        ];
        for error in &not_applied {
            assert!(!error.outcome_unknown(), "{error}");
        }
        for error in [
            ApiError::Timeout,
            ApiError::OutcomeUnknown("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::Internal("x".into()),
        ] {
            assert!(error.outcome_unknown(), "{error}");
            assert!(!error.is_retryable(), "{error}");
        }
    }
}
