//! Conversions between the API's wire messages and `concord-types` values, used by the
//! server (`concord-node`) and the client (`concord-client`) alike. Decoding is strict:
//! unknown enum values and missing required fields are errors, never defaults.
//!
//! Errors travel as a gRPC status whose code means something on its own and whose
//! details carry the exact [`ApiError`] (see `api.proto`).

use concord_types::{
    ApiError, GroupHealth, GroupStatus, JoinTicket, Member, MemberRole, ReadMode, RequestId, Role,
};
use prost::Message as _;
use tonic::{Code, Status};

use crate::api as proto;

/// The gRPC code that says the most about `error` on its own.
pub fn error_code(error: &ApiError) -> Code {
    match error {
        ApiError::NotLeader { .. } => Code::FailedPrecondition,
        ApiError::GroupNotFound { .. } => Code::NotFound,
        ApiError::ProposalDropped => Code::Aborted,
        ApiError::Timeout => Code::DeadlineExceeded,
        ApiError::OutcomeUnknown(_) => Code::Unknown,
        ApiError::InvalidRequest(_) => Code::InvalidArgument,
        ApiError::Unavailable(_) => Code::Unavailable,
        ApiError::Busy(_) => Code::ResourceExhausted,
        ApiError::ClientUnknown { .. } => Code::FailedPrecondition,
        ApiError::GroupStopped { .. } => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
    }
}

/// The gRPC status for `error`: its code, its message, and the error itself in the
/// details (an `RpcStatus` holding one `ErrorDetail`).
pub fn error_to_status(error: &ApiError) -> Status {
    let code = error_code(error);
    let message = error.to_string();
    let details = proto::RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![proto::AnyDetail {
            type_url: proto::ERROR_DETAIL_TYPE_URL.into(),
            value: error_to_detail(error).encode_to_vec().into(),
        }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// `error` as the `ErrorDetail` message that carries it on the wire.
pub fn error_to_detail(error: &ApiError) -> proto::ErrorDetail {
    use proto::error_detail::Error as Detail;
    let detail = match error {
        ApiError::NotLeader { leader, address } => Detail::NotLeader(proto::NotLeader {
            leader_id: leader.unwrap_or(0),
            leader_address: address.clone().unwrap_or_default(),
        }),
        ApiError::GroupNotFound { group } => {
            Detail::GroupNotFound(proto::GroupNotFound { group: *group })
        }
        ApiError::ProposalDropped => Detail::ProposalDropped(proto::ProposalDropped {}),
        ApiError::Timeout => Detail::Timeout(proto::Timeout {}),
        ApiError::OutcomeUnknown(reason) => Detail::OutcomeUnknown(proto::OutcomeUnknown {
            reason: reason.clone(),
        }),
        ApiError::InvalidRequest(reason) => Detail::InvalidRequest(proto::InvalidRequest {
            reason: reason.clone(),
        }),
        ApiError::Unavailable(reason) => Detail::Unavailable(proto::Unavailable {
            reason: reason.clone(),
        }),
        ApiError::Busy(reason) => Detail::Busy(proto::Busy {
            reason: reason.clone(),
        }),
        ApiError::ClientUnknown { client } => {
            Detail::ClientUnknown(proto::ClientUnknown { client_id: *client })
        }
        ApiError::GroupStopped { group, reason } => Detail::GroupStopped(proto::GroupStopped {
            group: *group,
            reason: reason.clone(),
        }),
        ApiError::Internal(reason) => Detail::Internal(proto::Internal {
            reason: reason.clone(),
        }),
    };
    proto::ErrorDetail {
        error: Some(detail),
    }
}

/// The error an `ErrorDetail` carries, if it carries one.
pub fn error_from_detail(detail: proto::ErrorDetail) -> Option<ApiError> {
    use proto::error_detail::Error as Detail;
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    Some(match detail.error? {
        Detail::NotLeader(not_leader) => ApiError::NotLeader {
            leader: (not_leader.leader_id != 0).then_some(not_leader.leader_id),
            address: non_empty(not_leader.leader_address),
        },
        Detail::GroupNotFound(missing) => ApiError::GroupNotFound {
            group: missing.group,
        },
        Detail::ProposalDropped(_) => ApiError::ProposalDropped,
        Detail::Timeout(_) => ApiError::Timeout,
        Detail::OutcomeUnknown(error) => ApiError::OutcomeUnknown(error.reason),
        Detail::InvalidRequest(error) => ApiError::InvalidRequest(error.reason),
        Detail::Unavailable(error) => ApiError::Unavailable(error.reason),
        Detail::Busy(error) => ApiError::Busy(error.reason),
        Detail::ClientUnknown(error) => ApiError::ClientUnknown {
            client: error.client_id,
        },
        Detail::GroupStopped(error) => ApiError::GroupStopped {
            group: error.group,
            reason: error.reason,
        },
        Detail::Internal(error) => ApiError::Internal(error.reason),
    })
}

/// Reads the error out of a status: from its details when a concord node sent them,
/// else from its code (a status made by gRPC itself: connection refused, deadline
/// exceeded, message too large).
pub fn error_from_status(status: &Status) -> ApiError {
    if let Some(error) = error_from_details(status.details()) {
        return error;
    }
    let message = status.message().to_string();
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => ApiError::Timeout,
        Code::Unavailable | Code::Unknown => ApiError::Unavailable(message),
        Code::InvalidArgument | Code::OutOfRange => ApiError::InvalidRequest(message),
        Code::ResourceExhausted => ApiError::Busy(message),
        // Refused before anything ran: the server has no such call, or will not
        // take it from this client.
        code @ (Code::Unimplemented | Code::Unauthenticated | Code::PermissionDenied) => {
            ApiError::InvalidRequest(format!("{code:?}: {message}"))
        }
        code => ApiError::Internal(format!("{code:?}: {message}")),
    }
}

/// The `ErrorDetail` packed in a status's details, if there is a well-formed one.
fn error_from_details(details: &[u8]) -> Option<ApiError> {
    if details.is_empty() {
        return None;
    }
    let status = proto::RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|any| any.type_url == proto::ERROR_DETAIL_TYPE_URL)?;
    error_from_detail(proto::ErrorDetail::decode(any.value.clone()).ok()?)
}

/// A read mode on the wire.
pub fn read_mode_to_proto(mode: ReadMode) -> proto::ReadMode {
    match mode {
        ReadMode::Linearizable => proto::ReadMode::Linearizable,
        ReadMode::Stale => proto::ReadMode::Stale,
    }
}

/// A read mode from the wire; unspecified and unknown modes are refused.
pub fn read_mode_from_proto(value: i32) -> Result<ReadMode, ApiError> {
    match proto::ReadMode::try_from(value) {
        Ok(proto::ReadMode::Linearizable) => Ok(ReadMode::Linearizable),
        Ok(proto::ReadMode::Stale) => Ok(ReadMode::Stale),
        Ok(proto::ReadMode::Unspecified) => {
            Err(ApiError::InvalidRequest("missing read mode".into()))
        }
        Err(_) => Err(ApiError::InvalidRequest(format!(
            "unknown read mode {value}"
        ))),
    }
}

/// A request id on the wire.
pub fn request_id_to_proto(id: RequestId) -> proto::RequestId {
    proto::RequestId {
        client_id: id.client,
        sequence: id.sequence,
        first_unanswered: id.first_unanswered,
    }
}

/// A request id from the wire; one breaking its invariants is refused, saying why.
pub fn request_id_from_proto(id: proto::RequestId) -> Result<RequestId, ApiError> {
    let request = RequestId {
        client: id.client_id,
        sequence: id.sequence,
        first_unanswered: id.first_unanswered,
    };
    if !request.is_valid() {
        return Err(ApiError::InvalidRequest(format!(
            "request id (client {}, sequence {}, first unanswered {}) is invalid: the client \
             must not be 0, and 1 <= first_unanswered <= sequence",
            id.client_id, id.sequence, id.first_unanswered
        )));
    }
    Ok(request)
}

/// A member on the wire.
pub fn member_to_proto(member: Member) -> proto::Member {
    proto::Member {
        id: member.id,
        address: member.address,
        role: match member.role {
            MemberRole::Voter => proto::MemberRole::Voter,
            MemberRole::Learner => proto::MemberRole::Learner,
        } as i32,
    }
}

/// A member from the wire.
pub fn member_from_proto(member: proto::Member) -> Result<Member, String> {
    let role = match proto::MemberRole::try_from(member.role) {
        Ok(proto::MemberRole::Voter) => MemberRole::Voter,
        Ok(proto::MemberRole::Learner) => MemberRole::Learner,
        Ok(proto::MemberRole::Unspecified) => return Err("member without a role".into()),
        Err(_) => return Err(format!("unknown member role {}", member.role)),
    };
    if member.id == 0 {
        return Err("member with id 0".into());
    }
    Ok(Member {
        id: member.id,
        address: member.address,
        role,
    })
}

/// Members from the wire.
pub fn members_from_proto(members: Vec<proto::Member>) -> Result<Vec<Member>, String> {
    members.into_iter().map(member_from_proto).collect()
}

fn role_to_proto(role: Role) -> proto::Role {
    match role {
        Role::Follower => proto::Role::Follower,
        Role::PreCandidate => proto::Role::PreCandidate,
        Role::Candidate => proto::Role::Candidate,
        Role::Leader => proto::Role::Leader,
    }
}

fn role_from_proto(value: i32) -> Result<Role, String> {
    match proto::Role::try_from(value) {
        Ok(proto::Role::Follower) => Ok(Role::Follower),
        Ok(proto::Role::PreCandidate) => Ok(Role::PreCandidate),
        Ok(proto::Role::Candidate) => Ok(Role::Candidate),
        Ok(proto::Role::Leader) => Ok(Role::Leader),
        Ok(proto::Role::Unspecified) => Err("status without a role".into()),
        Err(_) => Err(format!("unknown role {value}")),
    }
}

/// A group status on the wire.
pub fn status_to_proto(status: GroupStatus) -> proto::StatusResponse {
    proto::StatusResponse {
        group: status.group,
        node_id: status.node_id,
        role: role_to_proto(status.role) as i32,
        term: status.term,
        leader: status.leader.map(member_to_proto),
        commit: status.commit,
        applied: status.applied,
        members: status.members.into_iter().map(member_to_proto).collect(),
        stopped_reason: match status.health {
            GroupHealth::Running => String::new(),
            GroupHealth::Stopped { reason } => reason,
        },
    }
}

/// A group status from the wire.
pub fn status_from_proto(status: proto::StatusResponse) -> Result<GroupStatus, String> {
    Ok(GroupStatus {
        group: status.group,
        node_id: status.node_id,
        role: role_from_proto(status.role)?,
        term: status.term,
        leader: status.leader.map(member_from_proto).transpose()?,
        commit: status.commit,
        applied: status.applied,
        members: members_from_proto(status.members)?,
        health: if status.stopped_reason.is_empty() {
            GroupHealth::Running
        } else {
            GroupHealth::Stopped {
                reason: status.stopped_reason,
            }
        },
    })
}

/// A join ticket on the wire.
pub fn ticket_to_proto(ticket: JoinTicket) -> proto::JoinTicket {
    proto::JoinTicket {
        group: ticket.group,
        node_id: ticket.node_id,
        members: ticket.members.into_iter().map(member_to_proto).collect(),
        leader: ticket.leader.map(member_to_proto),
    }
}

/// A join ticket from the wire.
pub fn ticket_from_proto(ticket: proto::JoinTicket) -> Result<JoinTicket, String> {
    Ok(JoinTicket {
        group: ticket.group,
        node_id: ticket.node_id,
        members: members_from_proto(ticket.members)?,
        leader: ticket.leader.map(member_from_proto).transpose()?,
    })
}

/// An error for a response a node should never have sent.
pub fn malformed(reason: String) -> ApiError {
    ApiError::Internal(format!("malformed response: {reason}"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn every_error() -> Vec<ApiError> {
        vec![
            ApiError::NotLeader {
                leader: Some(3),
                address: Some("127.0.0.1:7003".into()),
            },
            ApiError::NotLeader {
                leader: Some(3),
                address: None,
            },
            ApiError::NotLeader {
                leader: None,
                address: None,
            },
            ApiError::GroupNotFound { group: 9 },
            ApiError::ProposalDropped,
            ApiError::Timeout,
            ApiError::OutcomeUnknown("leader lost".into()),
            ApiError::InvalidRequest("bad".into()),
            ApiError::Unavailable("down".into()),
            ApiError::Busy("pending change".into()),
            ApiError::ClientUnknown { client: 12 },
            ApiError::GroupStopped {
                group: 4,
                reason: "restore failed".into(),
            },
            ApiError::Internal("disk".into()),
        ]
    }

    /// Every error survives the trip through a gRPC status (details encoded and
    /// decoded), and the status code alone already says what kind of error it is.
    #[test]
    fn errors_round_trip_through_status() {
        for error in every_error() {
            let status = error_to_status(&error);
            assert_eq!(status.code(), error_code(&error));
            assert_eq!(status.message(), error.to_string());
            assert_eq!(error_from_status(&status), error);
        }
    }

    /// A status without concord details (made by gRPC itself) or with garbage details
    /// maps by its code, without panicking.
    #[test]
    fn foreign_statuses_map_by_code() {
        assert_eq!(
            error_from_status(&Status::unavailable("connection refused")),
            ApiError::Unavailable("connection refused".into())
        );
        assert_eq!(
            error_from_status(&Status::deadline_exceeded("late")),
            ApiError::Timeout
        );
        let garbage = Status::with_details(Code::Unavailable, "x", Bytes::from_static(b"\xff\x01"));
        assert_eq!(
            error_from_status(&garbage),
            ApiError::Unavailable("x".into())
        );
        assert!(matches!(
            error_from_status(&Status::unimplemented("no such method")),
            ApiError::InvalidRequest(_)
        ));
        assert!(matches!(
            error_from_status(&Status::internal("h2 protocol error")),
            ApiError::Internal(_)
        ));
    }

    /// Members, statuses, tickets and request ids round-trip; unknown and missing
    /// roles and invalid request ids are refused.
    #[test]
    fn api_types_round_trip_and_refuse_bad_values() {
        let member = |id, role| Member {
            id,
            address: format!("127.0.0.1:{}", 7000 + id),
            role,
        };
        for health in [
            GroupHealth::Running,
            GroupHealth::Stopped {
                reason: "disk".into(),
            },
        ] {
            let status = GroupStatus {
                group: 1,
                node_id: 2,
                role: Role::Leader,
                term: 5,
                leader: Some(member(2, MemberRole::Voter)),
                commit: 10,
                applied: 9,
                members: vec![member(2, MemberRole::Voter), member(4, MemberRole::Learner)],
                health,
            };
            assert_eq!(
                status_from_proto(status_to_proto(status.clone())),
                Ok(status)
            );
        }
        let ticket = JoinTicket {
            group: 1,
            node_id: 4,
            members: vec![member(2, MemberRole::Voter), member(4, MemberRole::Learner)],
            leader: None,
        };
        assert_eq!(
            ticket_from_proto(ticket_to_proto(ticket.clone())),
            Ok(ticket)
        );
        let id = RequestId {
            client: 5,
            sequence: 3,
            first_unanswered: 2,
        };
        assert_eq!(request_id_from_proto(request_id_to_proto(id)), Ok(id));
        let bad = proto::RequestId {
            client_id: 5,
            sequence: 3,
            first_unanswered: 4,
        };
        assert!(matches!(
            request_id_from_proto(bad),
            Err(ApiError::InvalidRequest(reason)) if reason.contains("first_unanswered")
        ));

        let mut bad = member_to_proto(member(3, MemberRole::Voter));
        bad.role = 42;
        assert_eq!(
            member_from_proto(bad.clone()),
            Err("unknown member role 42".into())
        );
        bad.role = 0;
        assert!(member_from_proto(bad).is_err());
        assert!(read_mode_from_proto(0).is_err());
        assert!(read_mode_from_proto(99).is_err());
        assert_eq!(
            read_mode_from_proto(read_mode_to_proto(ReadMode::Stale) as i32),
            Ok(ReadMode::Stale)
        );
    }
}
