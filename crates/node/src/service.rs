//! The client and admin service (`concord.api.v1.Raft`), server side.
//!
//! The node implements [`RaftApi`]; [`RaftService`] adapts it to the generated tonic
//! service: it checks and converts requests (with `concord_proto::convert`), calls the
//! node, and turns an [`ApiError`] into a gRPC status whose code means something on
//! its own and whose details carry the exact error (see `api.proto`). [`serve`] runs
//! the node's one gRPC server: this service and the peer transport side by side.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use concord_proto::api::{self as proto, raft_server::RaftServer};
use concord_proto::convert;
use concord_raft::{NodeId, NO_NODE};
use concord_types::{
    ApiError, ClientId, GroupId, GroupStatus, JoinTicket, Member, ProposeResponse, ReadMode,
    ReadResponse, RequestId,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::transport::grpc::{accepted_without_delay, server_builder, TransportServer};

/// What a node offers its clients and admins; [`RaftService`] serves it over gRPC.
///
/// Methods return `impl Future + Send` (implement them with `async fn`): the futures
/// run on tonic's multi-threaded server. Every method may fail with
/// [`ApiError::NotLeader`] (the client then follows the address),
/// [`ApiError::GroupNotFound`], [`ApiError::Timeout`] or [`ApiError::Unavailable`].
pub trait RaftApi: Send + Sync + 'static {
    /// Replicates `data` through `group`'s log and answers with the state machine's
    /// response once it applied; with `request`, at most once however often it is
    /// sent.
    fn propose(
        &self,
        group: GroupId,
        data: Bytes,
        request: Option<RequestId>,
    ) -> impl Future<Output = Result<ProposeResponse, ApiError>> + Send;

    /// Proposes each `(group, data, request)` as [`RaftApi::propose`] does, all at
    /// once; answers one result per proposal, in order.
    fn propose_batch(
        &self,
        proposals: Vec<(GroupId, Bytes, Option<RequestId>)>,
    ) -> impl Future<Output = Vec<Result<ProposeResponse, ApiError>>> + Send {
        futures_util::future::join_all(
            proposals
                .into_iter()
                .map(|(group, data, request)| self.propose(group, data, request)),
        )
    }

    /// Runs each `(group, query, mode)` as [`RaftApi::read`] does, all at once;
    /// answers one result per read, in order.
    fn read_batch(
        &self,
        reads: Vec<(GroupId, Bytes, ReadMode)>,
    ) -> impl Future<Output = Vec<Result<ReadResponse, ApiError>>> + Send {
        futures_util::future::join_all(
            reads
                .into_iter()
                .map(|(group, query, mode)| self.read(group, query, mode)),
        )
    }

    /// Registers a client with `group`'s exactly-once table; returns its id.
    fn register_client(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<ClientId, ApiError>> + Send;

    /// Answers `query` from `group`'s state machine.
    fn read(
        &self,
        group: GroupId,
        query: Bytes,
        mode: ReadMode,
    ) -> impl Future<Output = Result<ReadResponse, ApiError>> + Send;

    /// This node's view of `group`.
    fn status(&self, group: GroupId) -> impl Future<Output = Result<GroupStatus, ApiError>> + Send;

    /// `group`'s members with their addresses. By default, the members from
    /// [`RaftApi::status`].
    fn members(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Vec<Member>, ApiError>> + Send {
        async move { self.status(group).await.map(|status| status.members) }
    }

    /// Admits `node_id` (listening at `address`) to `group`, as a learner promoted
    /// once caught up, and returns the ticket the new node starts from.
    fn request_join(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: String,
    ) -> impl Future<Output = Result<JoinTicket, ApiError>> + Send;

    /// Takes `node_id` out of `group` at its own request.
    fn leave(
        &self,
        group: GroupId,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Adds `node_id` (listening at `address`) to `group` as a learner.
    fn add_learner(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: String,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Makes learner `node_id` of `group` a voter.
    fn promote(
        &self,
        group: GroupId,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Removes `node_id` from `group`.
    fn remove(
        &self,
        group: GroupId,
        node_id: NodeId,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Hands leadership of `group` to `target`.
    fn transfer_leader(
        &self,
        group: GroupId,
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

/// Runs a node's gRPC server on `listener`: the peer transport, the client service and
/// the `extra` services side by side, until `shutdown` completes. Then it ends the peer streams (which
/// never end on their own) and waits for in-flight requests to finish.
pub async fn serve<A: RaftApi>(
    listener: TcpListener,
    transport: TransportServer,
    api: RaftService<A>,
    extra: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let closer = transport.clone();
    let config = transport.config().clone();
    let routes = extra
        .add_service(transport.into_service())
        .add_service(api.into_service());
    server_builder(&config)
        .add_routes(routes)
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

/// A gRPC status for `error`.
fn status_of(error: ApiError) -> Status {
    convert::error_to_status(&error)
}

fn request_id(request: Option<proto::RequestId>) -> Result<Option<RequestId>, ApiError> {
    request.map(convert::request_id_from_proto).transpose()
}

#[tonic::async_trait]
impl<A: RaftApi> proto::raft_server::Raft for RaftService<A> {
    async fn propose(
        &self,
        request: Request<proto::ProposeRequest>,
    ) -> Result<Response<proto::ProposeResponse>, Status> {
        let request = request.into_inner();
        let id = request_id(request.request).map_err(status_of)?;
        let applied = self
            .api
            .propose(request.group, request.data, id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::ProposeResponse {
            response: applied.response,
            index: applied.index,
            term: applied.term,
        }))
    }

    async fn register_client(
        &self,
        request: Request<proto::RegisterClientRequest>,
    ) -> Result<Response<proto::RegisterClientResponse>, Status> {
        let client_id = self
            .api
            .register_client(request.into_inner().group)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RegisterClientResponse { client_id }))
    }

    async fn propose_batch(
        &self,
        request: Request<proto::ProposeBatchRequest>,
    ) -> Result<Response<proto::ProposeBatchResponse>, Status> {
        let proposals = request.into_inner().proposals;
        if proposals.len() > self.propose_batch_max {
            return Err(status_of(ApiError::InvalidRequest(format!(
                "a ProposeBatch call carries {} proposals; at most {} are allowed (propose_batch_max)",
                proposals.len(),
                self.propose_batch_max
            ))));
        }
        use proto::propose_result::Outcome;
        // A malformed request id fails its own proposal, not the batch.
        let mut results: Vec<Option<Result<ProposeResponse, ApiError>>> = Vec::new();
        let mut valid = Vec::new();
        for proposal in proposals {
            match request_id(proposal.request) {
                Ok(id) => {
                    results.push(None);
                    valid.push((proposal.group, proposal.data, id));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let mut answered = self.api.propose_batch(valid).await.into_iter();
        let results = results
            .into_iter()
            .map(|result| {
                let result = result.unwrap_or_else(|| {
                    answered.next().unwrap_or_else(|| {
                        Err(ApiError::Internal("a proposal went unanswered".into()))
                    })
                });
                proto::ProposeResult {
                    outcome: Some(match result {
                        Ok(applied) => Outcome::Applied(proto::ProposeResponse {
                            response: applied.response,
                            index: applied.index,
                            term: applied.term,
                        }),
                        Err(error) => Outcome::Error(convert::error_to_detail(&error)),
                    }),
                }
            })
            .collect();
        Ok(Response::new(proto::ProposeBatchResponse { results }))
    }

    async fn read_batch(
        &self,
        request: Request<proto::ReadBatchRequest>,
    ) -> Result<Response<proto::ReadBatchResponse>, Status> {
        let reads = request.into_inner().reads;
        if reads.len() > self.propose_batch_max {
            return Err(status_of(ApiError::InvalidRequest(format!(
                "a ReadBatch call carries {} reads; at most {} are allowed (propose_batch_max)",
                reads.len(),
                self.propose_batch_max
            ))));
        }
        use proto::read_result::Outcome;
        // A malformed mode fails its own read, not the batch.
        let mut results: Vec<Option<Result<ReadResponse, ApiError>>> = Vec::new();
        let mut valid = Vec::new();
        for read in reads {
            match convert::read_mode_from_proto(read.mode) {
                Ok(mode) => {
                    results.push(None);
                    valid.push((read.group, read.query, mode));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let mut answered = self.api.read_batch(valid).await.into_iter();
        let results = results
            .into_iter()
            .map(|result| {
                let result = result.unwrap_or_else(|| {
                    answered
                        .next()
                        .unwrap_or_else(|| Err(ApiError::Internal("a read went unanswered".into())))
                });
                proto::ReadResult {
                    outcome: Some(match result {
                        Ok(answer) => Outcome::Answered(proto::ReadResponse {
                            response: answer.response,
                            index: answer.index,
                            term: answer.term,
                        }),
                        Err(error) => Outcome::Error(convert::error_to_detail(&error)),
                    }),
                }
            })
            .collect();
        Ok(Response::new(proto::ReadBatchResponse { results }))
    }

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let request = request.into_inner();
        let mode = convert::read_mode_from_proto(request.mode).map_err(status_of)?;
        let answer = self
            .api
            .read(request.group, request.query, mode)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::ReadResponse {
            response: answer.response,
            index: answer.index,
            term: answer.term,
        }))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let status = self
            .api
            .status(request.into_inner().group)
            .await
            .map_err(status_of)?;
        Ok(Response::new(convert::status_to_proto(status)))
    }

    async fn members(
        &self,
        request: Request<proto::MembersRequest>,
    ) -> Result<Response<proto::MembersResponse>, Status> {
        let members = self
            .api
            .members(request.into_inner().group)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::MembersResponse {
            members: members.into_iter().map(convert::member_to_proto).collect(),
        }))
    }

    async fn request_join(
        &self,
        request: Request<proto::RequestJoinRequest>,
    ) -> Result<Response<proto::JoinTicket>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id").map_err(status_of)?;
        let address = require_address(request.address).map_err(status_of)?;
        let ticket = self
            .api
            .request_join(request.group, node_id, address)
            .await
            .map_err(status_of)?;
        Ok(Response::new(convert::ticket_to_proto(ticket)))
    }

    async fn leave(
        &self,
        request: Request<proto::LeaveRequest>,
    ) -> Result<Response<proto::LeaveResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id").map_err(status_of)?;
        self.api
            .leave(request.group, node_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::LeaveResponse {}))
    }

    async fn add_learner(
        &self,
        request: Request<proto::AddLearnerRequest>,
    ) -> Result<Response<proto::AddLearnerResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id").map_err(status_of)?;
        let address = require_address(request.address).map_err(status_of)?;
        self.api
            .add_learner(request.group, node_id, address)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::AddLearnerResponse {}))
    }

    async fn promote(
        &self,
        request: Request<proto::PromoteRequest>,
    ) -> Result<Response<proto::PromoteResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id").map_err(status_of)?;
        self.api
            .promote(request.group, node_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::PromoteResponse {}))
    }

    async fn remove(
        &self,
        request: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        let request = request.into_inner();
        let node_id = require_node(request.node_id, "node_id").map_err(status_of)?;
        self.api
            .remove(request.group, node_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RemoveResponse {}))
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let target = require_node(request.target, "target").map_err(status_of)?;
        self.api
            .transfer_leader(request.group, target)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::TransferLeaderResponse {}))
    }
}
