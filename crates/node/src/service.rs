//! The client and admin service (`concord.api.v1.Raft`), server side.
//!
//! The node implements [`RaftApi`]; [`RaftService`] adapts it to the generated tonic
//! service: it checks and converts requests, calls the node, and turns an
//! [`ApiError`] into a gRPC status whose code means something on its own and whose
//! details carry the exact error (see `api.proto`). [`serve`] runs the node's one
//! gRPC server: this service and the peer transport side by side.

use std::future::Future;
use std::sync::Arc;

use crate::transport::grpc::accepted_without_delay;
use bytes::Bytes;
use concord_proto::api::{self as proto, raft_server::RaftServer};
use concord_raft::{Index, NodeId, ProposeError, Role, Term, NO_NODE};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

use crate::transport::grpc::{server_builder, TransportServer};

/// An error a caller of the API handles: retry elsewhere, retry later, or give up.
/// (Errors that stop the node are the node's own.)
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
        group: u64,
    },
    /// The proposal was accepted but lost (a new leader overwrote it): it did not
    /// apply. Safe to retry.
    #[error("proposal dropped before it applied; retry")]
    ProposalDropped,
    /// Gave up waiting. The request may or may not take effect.
    #[error("timed out")]
    Timeout,
    /// The request is malformed or not allowed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node cannot serve now (unreachable, shutting down, no quorum).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The group is busy (membership change or leader transfer under way, too much
    /// uncommitted data, too many pending reads). Retry shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// A failure the caller cannot fix.
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
    /// The gRPC code that says the most about this error on its own.
    pub fn code(&self) -> Code {
        match self {
            ApiError::NotLeader { .. } => Code::FailedPrecondition,
            ApiError::GroupNotFound { .. } => Code::NotFound,
            ApiError::ProposalDropped => Code::Aborted,
            ApiError::Timeout => Code::DeadlineExceeded,
            ApiError::InvalidRequest(_) => Code::InvalidArgument,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Busy(_) => Code::ResourceExhausted,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The gRPC status for this error: its code, its message, and the error itself in
    /// the details (an `RpcStatus` holding one `ErrorDetail`).
    pub fn to_status(&self) -> Status {
        let code = self.code();
        let message = self.to_string();
        let details = proto::RpcStatus {
            code: code as i32,
            message: message.clone(),
            details: vec![proto::AnyDetail {
                type_url: proto::ERROR_DETAIL_TYPE_URL.into(),
                value: self.to_detail().encode_to_vec().into(),
            }],
        };
        Status::with_details(code, message, details.encode_to_vec().into())
    }

    /// This error as the `ErrorDetail` message that carries it on the wire.
    pub fn to_detail(&self) -> proto::ErrorDetail {
        use proto::error_detail::Error as Detail;
        let detail = match self {
            ApiError::NotLeader { leader, address } => Detail::NotLeader(proto::NotLeader {
                leader_id: leader.unwrap_or(NO_NODE),
                leader_address: address.clone().unwrap_or_default(),
            }),
            ApiError::GroupNotFound { group } => {
                Detail::GroupNotFound(proto::GroupNotFound { group: *group })
            }
            ApiError::ProposalDropped => Detail::ProposalDropped(proto::ProposalDropped {}),
            ApiError::Timeout => Detail::Timeout(proto::Timeout {}),
            ApiError::InvalidRequest(reason) => Detail::InvalidRequest(proto::InvalidRequest {
                reason: reason.clone(),
            }),
            ApiError::Unavailable(reason) => Detail::Unavailable(proto::Unavailable {
                reason: reason.clone(),
            }),
            ApiError::Busy(reason) => Detail::Busy(proto::Busy {
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
    pub fn from_detail(detail: proto::ErrorDetail) -> Option<ApiError> {
        use proto::error_detail::Error as Detail;
        let non_empty = |text: String| (!text.is_empty()).then_some(text);
        Some(match detail.error? {
            Detail::NotLeader(not_leader) => ApiError::NotLeader {
                leader: (not_leader.leader_id != NO_NODE).then_some(not_leader.leader_id),
                address: non_empty(not_leader.leader_address),
            },
            Detail::GroupNotFound(missing) => ApiError::GroupNotFound {
                group: missing.group,
            },
            Detail::ProposalDropped(_) => ApiError::ProposalDropped,
            Detail::Timeout(_) => ApiError::Timeout,
            Detail::InvalidRequest(error) => ApiError::InvalidRequest(error.reason),
            Detail::Unavailable(error) => ApiError::Unavailable(error.reason),
            Detail::Busy(error) => ApiError::Busy(error.reason),
            Detail::Internal(error) => ApiError::Internal(error.reason),
        })
    }

    /// Reads the error out of a status: from its details when a concord node sent
    /// them, else from its code (a status made by gRPC itself: connection refused,
    /// deadline exceeded, message too large).
    pub fn from_status(status: &Status) -> ApiError {
        if let Some(error) = error_from_details(status.details()) {
            return error;
        }
        let message = status.message().to_string();
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => ApiError::Timeout,
            Code::Unavailable | Code::Unknown => ApiError::Unavailable(message),
            Code::InvalidArgument | Code::OutOfRange => ApiError::InvalidRequest(message),
            Code::ResourceExhausted => ApiError::Busy(message),
            code => ApiError::Internal(format!("{code:?}: {message}")),
        }
    }

    /// True when the same request may be sent again as is (to the leader for
    /// `NotLeader`): the node did not act on it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NotLeader { .. } | ApiError::ProposalDropped | ApiError::Busy(_)
        )
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        error.to_status()
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
    ApiError::from_detail(proto::ErrorDetail::decode(any.value.clone()).ok()?)
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

/// One node's view of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: u64,
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
}

/// What a new node needs to start a group it was admitted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTicket {
    /// The group.
    pub group: u64,
    /// The node admitted.
    pub node_id: NodeId,
    /// The group's members, the new node included.
    pub members: Vec<Member>,
    /// The leader that admitted the node, if known.
    pub leader: Option<Member>,
}

/// What a node offers its clients and admins; [`RaftService`] serves it over gRPC.
///
/// Methods return `impl Future + Send` (implement them with `async fn`): the futures
/// run on tonic's multi-threaded server. Every method may fail with
/// [`ApiError::NotLeader`] (the client then follows the address),
/// [`ApiError::GroupNotFound`], [`ApiError::Timeout`] or [`ApiError::Unavailable`].
pub trait RaftApi: Send + Sync + 'static {
    /// Replicates `data` through `group`'s log and answers with the state machine's
    /// response once it applied.
    fn propose(
        &self,
        group: u64,
        data: Bytes,
    ) -> impl Future<Output = Result<ProposeResponse, ApiError>> + Send;

    /// Proposes each `(group, data)` as [`RaftApi::propose`] does, all at once;
    /// answers one result per proposal, in order.
    fn propose_batch(
        &self,
        proposals: Vec<(u64, Bytes)>,
    ) -> impl Future<Output = Vec<Result<ProposeResponse, ApiError>>> + Send {
        futures_util::future::join_all(
            proposals
                .into_iter()
                .map(|(group, data)| self.propose(group, data)),
        )
    }

    /// Answers `query` from `group`'s state machine.
    fn read(
        &self,
        group: u64,
        query: Bytes,
        mode: ReadMode,
    ) -> impl Future<Output = Result<Bytes, ApiError>> + Send;

    /// This node's view of `group`.
    fn status(&self, group: u64) -> impl Future<Output = Result<GroupStatus, ApiError>> + Send;

    /// `group`'s members with their addresses. By default, the members from
    /// [`RaftApi::status`].
    fn members(&self, group: u64) -> impl Future<Output = Result<Vec<Member>, ApiError>> + Send {
        async move { self.status(group).await.map(|status| status.members) }
    }

    /// Admits `node_id` (listening at `address`) to `group`, as a learner promoted
    /// once caught up, and returns the ticket the new node starts from.
    fn request_join(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> impl Future<Output = Result<JoinTicket, ApiError>> + Send;

    /// Takes `node_id` out of `group` at its own request.
    fn leave(
        &self,
        group: u64,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Adds `node_id` (listening at `address`) to `group` as a learner.
    fn add_learner(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Makes learner `node_id` of `group` a voter.
    fn promote(
        &self,
        group: u64,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Removes `node_id` from `group`.
    fn remove(
        &self,
        group: u64,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Hands leadership of `group` to `target`.
    fn transfer_leader(
        &self,
        group: u64,
        target: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The tonic adapter: serves a [`RaftApi`] as `concord.api.v1.Raft`. Cheap to clone.
pub struct RaftService<A> {
    api: Arc<A>,
    request_bytes_max: usize,
    propose_batch_max: usize,
}

impl<A> Clone for RaftService<A> {
    fn clone(&self) -> Self {
        RaftService {
            api: self.api.clone(),
            request_bytes_max: self.request_bytes_max,
            propose_batch_max: self.propose_batch_max,
        }
    }
}

/// Default largest encoded request [`RaftService`] accepts, in bytes (gRPC's usual 4 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Default most proposals [`RaftService`] accepts in one `ProposeBatch` call.
pub const PROPOSE_BATCH_MAX_DEFAULT: usize = 4096;

impl<A: RaftApi> RaftService<A> {
    /// Serves `api`.
    pub fn new(api: A) -> Self {
        Self::from_arc(Arc::new(api))
    }

    /// Serves an `api` shared with the rest of the node.
    pub fn from_arc(api: Arc<A>) -> Self {
        RaftService {
            api,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            propose_batch_max: PROPOSE_BATCH_MAX_DEFAULT,
        }
    }

    /// Refuses `ProposeBatch` calls carrying more than `count` proposals with
    /// `INVALID_ARGUMENT`.
    pub fn propose_batch_max(mut self, count: usize) -> Self {
        self.propose_batch_max = count;
        self
    }

    /// Refuses requests over `bytes` encoded bytes (proposals, queries) with
    /// `OUT_OF_RANGE` before reading them whole.
    pub fn request_bytes_max(mut self, bytes: usize) -> Self {
        self.request_bytes_max = bytes;
        self
    }

    /// The served API.
    pub fn api(&self) -> &Arc<A> {
        &self.api
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_service(self) -> RaftServer<Self> {
        let request_bytes_max = self.request_bytes_max;
        RaftServer::new(self).max_decoding_message_size(request_bytes_max)
    }
}

/// Runs a node's gRPC server on `listener`: the peer transport and the client service
/// side by side, until `shutdown` completes. Then it ends the peer streams (which
/// never end on their own) and waits for in-flight requests to finish.
pub async fn serve<A: RaftApi>(
    listener: TcpListener,
    transport: TransportServer,
    api: RaftService<A>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let closer = transport.clone();
    server_builder(transport.config())
        .add_service(transport.into_service())
        .add_service(api.into_service())
        .serve_with_incoming_shutdown(accepted_without_delay(listener), async move {
            shutdown.await;
            closer.close_streams();
        })
        .await
}

fn require_node(node_id: NodeId, field: &str) -> Result<NodeId, ApiError> {
    if node_id == NO_NODE {
        return Err(ApiError::InvalidRequest(format!("{field} must not be 0")));
    }
    Ok(node_id)
}

fn require_address(address: String) -> Result<String, ApiError> {
    if address.is_empty() {
        return Err(ApiError::InvalidRequest("address must not be empty".into()));
    }
    Ok(address)
}

#[tonic::async_trait]
impl<A: RaftApi> proto::raft_server::Raft for RaftService<A> {
    async fn propose(
        &self,
        request: Request<proto::ProposeRequest>,
    ) -> Result<Response<proto::ProposeResponse>, Status> {
        let request = request.into_inner();
        let applied = self.api.propose(request.group, request.data).await?;
        Ok(Response::new(proto::ProposeResponse {
            response: applied.response,
            index: applied.index,
            term: applied.term,
        }))
    }

    async fn propose_batch(
        &self,
        request: Request<proto::ProposeBatchRequest>,
    ) -> Result<Response<proto::ProposeBatchResponse>, Status> {
        let proposals = request.into_inner().proposals;
        if proposals.len() > self.propose_batch_max {
            return Err(ApiError::InvalidRequest(format!(
                "a ProposeBatch call carries {} proposals; at most {} are allowed (propose_batch_max)",
                proposals.len(),
                self.propose_batch_max
            ))
            .into());
        }
        let proposals = proposals
            .into_iter()
            .map(|proposal| (proposal.group, proposal.data))
            .collect();
        let results = self.api.propose_batch(proposals).await;
        use proto::propose_result::Outcome;
        let results = results
            .into_iter()
            .map(|result| proto::ProposeResult {
                outcome: Some(match result {
                    Ok(applied) => Outcome::Applied(proto::ProposeResponse {
                        response: applied.response,
                        index: applied.index,
                        term: applied.term,
                    }),
                    Err(error) => Outcome::Error(error.to_detail()),
                }),
            })
            .collect();
        Ok(Response::new(proto::ProposeBatchResponse { results }))
    }

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let request = request.into_inner();
        let mode = read_mode_from_proto(request.mode)?;
        let response = self.api.read(request.group, request.query, mode).await?;
        Ok(Response::new(proto::ReadResponse { response }))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let status = self.api.status(request.into_inner().group).await?;
        Ok(Response::new(status_to_proto(status)))
    }

    async fn members(
        &self,
        request: Request<proto::MembersRequest>,
    ) -> Result<Response<proto::MembersResponse>, Status> {
        let members = self.api.members(request.into_inner().group).await?;
        Ok(Response::new(proto::MembersResponse {
            members: members.into_iter().map(member_to_proto).collect(),
        }))
    }

    async fn request_join(
        &self,
        request: Request<proto::RequestJoinRequest>,
    ) -> Result<Response<proto::JoinTicket>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id")?;
        let address = require_address(request.address)?;
        let ticket = self
            .api
            .request_join(request.group, node_id, address)
            .await?;
        Ok(Response::new(ticket_to_proto(ticket)))
    }

    async fn leave(
        &self,
        request: Request<proto::LeaveRequest>,
    ) -> Result<Response<proto::LeaveResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id")?;
        self.api.leave(request.group, node_id).await?;
        Ok(Response::new(proto::LeaveResponse {}))
    }

    async fn add_learner(
        &self,
        request: Request<proto::AddLearnerRequest>,
    ) -> Result<Response<proto::AddLearnerResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id")?;
        let address = require_address(request.address)?;
        self.api
            .add_learner(request.group, node_id, address)
            .await?;
        Ok(Response::new(proto::AddLearnerResponse {}))
    }

    async fn promote(
        &self,
        request: Request<proto::PromoteRequest>,
    ) -> Result<Response<proto::PromoteResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id")?;
        self.api.promote(request.group, node_id).await?;
        Ok(Response::new(proto::PromoteResponse {}))
    }

    async fn remove(
        &self,
        request: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id")?;
        self.api.remove(request.group, node_id).await?;
        Ok(Response::new(proto::RemoveResponse {}))
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let target = require_node(request.target, "target")?;
        self.api.transfer_leader(request.group, target).await?;
        Ok(Response::new(proto::TransferLeaderResponse {}))
    }
}

// Conversions between the API's Rust types and their wire form. Decoding is strict:
// unknown enum values and missing required fields are errors, never defaults.

pub(crate) fn read_mode_to_proto(mode: ReadMode) -> proto::ReadMode {
    match mode {
        ReadMode::Linearizable => proto::ReadMode::Linearizable,
        ReadMode::Stale => proto::ReadMode::Stale,
    }
}

pub(crate) fn read_mode_from_proto(value: i32) -> Result<ReadMode, ApiError> {
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

pub(crate) fn member_to_proto(member: Member) -> proto::Member {
    proto::Member {
        id: member.id,
        address: member.address,
        role: match member.role {
            MemberRole::Voter => proto::MemberRole::Voter,
            MemberRole::Learner => proto::MemberRole::Learner,
        } as i32,
    }
}

pub(crate) fn member_from_proto(member: proto::Member) -> Result<Member, String> {
    let role = match proto::MemberRole::try_from(member.role) {
        Ok(proto::MemberRole::Voter) => MemberRole::Voter,
        Ok(proto::MemberRole::Learner) => MemberRole::Learner,
        Ok(proto::MemberRole::Unspecified) => return Err("member without a role".into()),
        Err(_) => return Err(format!("unknown member role {}", member.role)),
    };
    if member.id == NO_NODE {
        return Err("member with id 0".into());
    }
    Ok(Member {
        id: member.id,
        address: member.address,
        role,
    })
}

pub(crate) fn members_from_proto(members: Vec<proto::Member>) -> Result<Vec<Member>, String> {
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

pub(crate) fn status_to_proto(status: GroupStatus) -> proto::StatusResponse {
    proto::StatusResponse {
        group: status.group,
        node_id: status.node_id,
        role: role_to_proto(status.role) as i32,
        term: status.term,
        leader: status.leader.map(member_to_proto),
        commit: status.commit,
        applied: status.applied,
        members: status.members.into_iter().map(member_to_proto).collect(),
    }
}

pub(crate) fn status_from_proto(status: proto::StatusResponse) -> Result<GroupStatus, String> {
    Ok(GroupStatus {
        group: status.group,
        node_id: status.node_id,
        role: role_from_proto(status.role)?,
        term: status.term,
        leader: status.leader.map(member_from_proto).transpose()?,
        commit: status.commit,
        applied: status.applied,
        members: members_from_proto(status.members)?,
    })
}

pub(crate) fn ticket_to_proto(ticket: JoinTicket) -> proto::JoinTicket {
    proto::JoinTicket {
        group: ticket.group,
        node_id: ticket.node_id,
        members: ticket.members.into_iter().map(member_to_proto).collect(),
        leader: ticket.leader.map(member_to_proto),
    }
}

pub(crate) fn ticket_from_proto(ticket: proto::JoinTicket) -> Result<JoinTicket, String> {
    Ok(JoinTicket {
        group: ticket.group,
        node_id: ticket.node_id,
        members: members_from_proto(ticket.members)?,
        leader: ticket.leader.map(member_from_proto).transpose()?,
    })
}

#[cfg(test)]
mod tests {
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
            ApiError::InvalidRequest("bad".into()),
            ApiError::Unavailable("down".into()),
            ApiError::Busy("pending change".into()),
            ApiError::Internal("disk".into()),
        ]
    }

    /// Every error survives the trip through a gRPC status (details encoded and
    /// decoded), and the status code alone already says what kind of error it is.
    #[test]
    fn errors_round_trip_through_status() {
        for error in every_error() {
            let status = error.to_status();
            assert_eq!(status.code(), error.code());
            assert_eq!(status.message(), error.to_string());
            assert_eq!(ApiError::from_status(&status), error);
        }
    }

    /// A status without concord details (made by gRPC itself) or with garbage details
    /// maps by its code, without panicking.
    #[test]
    fn foreign_statuses_map_by_code() {
        assert_eq!(
            ApiError::from_status(&Status::unavailable("connection refused")),
            ApiError::Unavailable("connection refused".into())
        );
        assert_eq!(
            ApiError::from_status(&Status::deadline_exceeded("late")),
            ApiError::Timeout
        );
        let garbage = Status::with_details(Code::Unavailable, "x", Bytes::from_static(b"\xff\x01"));
        assert_eq!(
            ApiError::from_status(&garbage),
            ApiError::Unavailable("x".into())
        );
        assert!(matches!(
            ApiError::from_status(&Status::unimplemented("no such method")),
            ApiError::Internal(_)
        ));
    }

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

    /// Members, statuses and tickets round-trip; unknown and missing roles are refused.
    #[test]
    fn api_types_round_trip_and_refuse_bad_roles() {
        let member = |id, role| Member {
            id,
            address: format!("127.0.0.1:{}", 7000 + id),
            role,
        };
        let status = GroupStatus {
            group: 1,
            node_id: 2,
            role: Role::Leader,
            term: 5,
            leader: Some(member(2, MemberRole::Voter)),
            commit: 10,
            applied: 9,
            members: vec![member(2, MemberRole::Voter), member(4, MemberRole::Learner)],
        };
        assert_eq!(
            status_from_proto(status_to_proto(status.clone())),
            Ok(status)
        );
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
