//! concord's Rust client: [`RaftClient`] talks to the `concord.api.v1.Raft` service of
//! a cluster's nodes. It depends on the wire crate and the shared types only, never
//! on the runtime: a client program does not compile the server.
//!
//! - **Leader discovery.** It follows `NotLeader` answers to the leader's address (at
//!   most `redirects_max` times per attempt), remembers per group where the leader
//!   was last found, and when a node cannot be reached tries the other addresses it
//!   knows (those given to [`RaftClient::connect_many`] and every leader it was sent
//!   to).
//! - **Writes apply exactly once.** By default the client registers with each group
//!   it writes to (through the log) and sends every proposal with a [`RequestId`]; a
//!   proposal whose outcome is unknown (timeout, connection lost, leader lost) is
//!   sent again with the same id until it is answered or `retry_deadline_ms` passes.
//!   The group answers a repeat from its exactly-once table, so a retry never applies
//!   twice. When it cannot know — the deadline passed, or the group forgot the client
//!   while an attempt was in doubt — it says [`ApiError::OutcomeUnknown`], never
//!   success.
//! - **Batching.** Concurrent proposals to one node travel together: a batcher task
//!   per address sends whatever is queued as one `ProposeBatch` call, with at most
//!   `propose_batches_in_flight_max` calls outstanding; concurrent reads likewise as
//!   `ReadBatch` calls. A lone request goes at once.
#![deny(missing_docs)]

mod batch;
pub mod service;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_proto::api::{self as proto, raft_client::RaftClient as ProtoClient};
use concord_proto::convert;
use concord_types::sync::lock;
pub use concord_types::{
    ApiError, ClientId, GroupHealth, GroupId, GroupStatus, JoinTicket, Member, MemberRole, NodeId,
    ProposeResponse, ReadMode, ReadResponse, RequestId,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::batch::{Batchers, Kind, Proposals, Queued, Reads};
pub use crate::service::ServiceClient;
use crate::session::Session;

/// A [`RaftClient`]'s limits and timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long connecting to a node may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one attempt of a call may take, in milliseconds (each redirect is a
    /// new attempt).
    pub request_timeout_ms: u64,
    /// How long a call keeps being retried (a proposal with the same request id), in
    /// milliseconds, before its error is returned (for a proposal whose outcome is
    /// in doubt: [`ApiError::OutcomeUnknown`]). 0: one attempt only.
    pub retry_deadline_ms: u64,
    /// Pause between retries, in milliseconds.
    pub retry_pause_ms: u64,
    /// Most `NotLeader` redirects followed in one attempt.
    pub redirects_max: u32,
    /// Largest encoded response accepted, in bytes.
    pub response_bytes_max: usize,
    /// Send proposals with a [`RequestId`] so retries apply exactly once. Off, a
    /// proposal gets one attempt and is never sent again by the client.
    pub exactly_once: bool,
    /// Most proposals carried in one `ProposeBatch` call; 1 sends each proposal in
    /// its own `Propose` call instead. Must not exceed the server's
    /// `propose_batch_max`.
    pub propose_batch_max: usize,
    /// Most bytes of proposals (data plus a little framing each) in one
    /// `ProposeBatch` call; a proposal bigger than this goes in a call of its own.
    /// Keep it under the server's `request_bytes_max`, which bounds a whole call.
    pub propose_batch_bytes_max: usize,
    /// Most `ProposeBatch` calls outstanding per node contacted.
    pub propose_batches_in_flight_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            retry_deadline_ms: 30_000,
            retry_pause_ms: 100,
            redirects_max: 3,
            response_bytes_max: 16 * 1024 * 1024,
            exactly_once: true,
            propose_batch_max: 256,
            propose_batch_bytes_max: 1024 * 1024,
            propose_batches_in_flight_max: 4,
        }
    }
}

/// A client of a cluster's `concord.api.v1.Raft` service. Cheap to clone; clones share
/// connections, sessions and what they learned about leaders.
#[derive(Clone)]
pub struct RaftClient {
    inner: Arc<ClientInner>,
}

/// One group's exactly-once session, registered on first use.
type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

struct ClientInner {
    config: ClientConfig,
    /// Every address known to serve the cluster: the seeds, then leaders found.
    addresses: Mutex<Vec<String>>,
    /// One channel per address contacted (a channel reconnects by itself).
    channels: Mutex<HashMap<String, Channel>>,
    /// Per group, the address of the node that last answered a call successfully.
    leaders: Mutex<HashMap<GroupId, String>>,
    /// Per group, the addresses of the nodes that host it, when the caller said
    /// ([`RaftClient::set_route`]): calls go only there.
    routes: Mutex<HashMap<GroupId, Vec<String>>>,
    /// Per address, the queue of its proposal batcher task.
    batchers: Batchers<Proposals>,
    /// Per address, the queue of its read batcher task.
    read_batchers: Batchers<Reads>,
    /// Per group, the exactly-once session.
    sessions: Mutex<HashMap<GroupId, SessionSlot>>,
}

impl RaftClient {
    /// Connects to the node at `address` (host:port) with the default config.
    pub async fn connect(address: impl Into<String>) -> Result<Self, ApiError> {
        Self::connect_with(address, ClientConfig::default()).await
    }

    /// Connects to the node at `address` (host:port).
    pub async fn connect_with(
        address: impl Into<String>,
        config: ClientConfig,
    ) -> Result<Self, ApiError> {
        Self::connect_many(vec![address.into()], config).await
    }

    /// Knows the cluster by `addresses` (host:port each) and connects to the first
    /// that answers.
    pub async fn connect_many(
        addresses: Vec<String>,
        config: ClientConfig,
    ) -> Result<Self, ApiError> {
        if addresses.is_empty() {
            return Err(ApiError::InvalidRequest(
                "a client needs at least one address to connect to".into(),
            ));
        }
        if config.propose_batch_max == 0
            || config.propose_batches_in_flight_max == 0
            || config.propose_batch_bytes_max == 0
        {
            return Err(ApiError::InvalidRequest(format!(
                "propose_batch_max ({}), propose_batch_bytes_max ({}) and \
                 propose_batches_in_flight_max ({}) must be at least 1",
                config.propose_batch_max,
                config.propose_batch_bytes_max,
                config.propose_batches_in_flight_max
            )));
        }
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let mut channels = HashMap::new();
        let mut last_error = None;
        let mut ordered = addresses.clone();
        for address in &addresses {
            let endpoint = endpoint(address, &config)?;
            match tokio::time::timeout(timeout, endpoint.connect()).await {
                Ok(Ok(channel)) => {
                    channels.insert(address.clone(), channel);
                    // The one that answered goes first.
                    ordered.retain(|other| other != address);
                    ordered.insert(0, address.clone());
                    break;
                }
                Ok(Err(error)) => {
                    last_error = Some(ApiError::Unavailable(format!(
                        "connecting to {address}: {error}"
                    )))
                }
                Err(_) => {
                    last_error = Some(ApiError::Unavailable(format!(
                        "connecting to {address}: timed out after {}ms",
                        config.connect_timeout_ms
                    )))
                }
            }
        }
        if channels.is_empty() {
            return Err(last_error.expect("at least one address was tried"));
        }
        Ok(RaftClient {
            inner: Arc::new(ClientInner {
                config,
                addresses: Mutex::new(ordered),
                channels: Mutex::new(channels),
                leaders: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
                batchers: Mutex::new(HashMap::new()),
                read_batchers: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The config this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Where calls for `group` go first: the last node that answered for it, else the
    /// first of its route, else the first known address.
    pub fn address_for(&self, group: GroupId) -> String {
        if let Some(address) = lock(&self.inner.leaders).get(&group) {
            return address.clone();
        }
        if let Some(first) = lock(&self.inner.routes).get(&group).and_then(|r| r.first()) {
            return first.clone();
        }
        lock(&self.inner.addresses)[0].clone()
    }

    /// Says which nodes host `group` (their addresses): from now on its calls go only
    /// to them, a node that answers `GroupNotFound` or cannot be reached passes the
    /// call to the next of them, and `NotLeader` redirects are followed as ever. For
    /// clusters where not every node hosts every group (the coordination service's
    /// namespaces). An empty list forgets the route.
    pub fn set_route(&self, group: GroupId, addresses: Vec<String>) {
        for address in &addresses {
            self.learn_address(address);
        }
        let mut leaders = lock(&self.inner.leaders);
        let mut routes = lock(&self.inner.routes);
        if addresses.is_empty() {
            routes.remove(&group);
            return;
        }
        if leaders
            .get(&group)
            .is_some_and(|leader| !addresses.contains(leader))
        {
            leaders.remove(&group);
        }
        routes.insert(group, addresses);
    }

    /// The exactly-once id this client has with `group`, if it registered.
    pub async fn client_id(&self, group: GroupId) -> Option<ClientId> {
        let slot = self.session_slot(group);
        let session = slot.lock().await;
        session.as_ref().map(Session::client)
    }

    // ---------------------------------------------------------------------------------
    // Proposals.

    /// Replicates `data` through `group`'s log; answers once it applied. With
    /// `exactly_once` (the default) it is retried under one request id until answered,
    /// and applies at most once; see the crate docs.
    pub async fn propose(&self, group: GroupId, data: Bytes) -> Result<ProposeResponse, ApiError> {
        if !self.inner.config.exactly_once {
            return self.propose_attempt(group, data, None).await;
        }
        let deadline = self.retry_deadline();
        // An attempt failed in a way that leaves its outcome unknown: from then on the
        // proposal may have applied.
        let mut in_doubt = false;
        loop {
            let slot = self.session_slot(group);
            let (client, sequence) = {
                let mut session = slot.lock().await;
                if session.is_none() {
                    let client = self.register_until(group, deadline).await?;
                    *session = Some(Session::new(client));
                }
                let session = session.as_mut().expect("registered above");
                (session.client(), session.start())
            };
            loop {
                let id = match slot.lock().await.as_ref() {
                    Some(session) if session.client() == client => session.id(sequence),
                    // Another proposal found the session gone; ours is gone too.
                    _ => RequestId {
                        client,
                        sequence,
                        first_unanswered: sequence,
                    },
                };
                let error = match self.propose_attempt(group, data.clone(), Some(id)).await {
                    Ok(response) => {
                        finish(&slot, client, sequence).await;
                        return Ok(response);
                    }
                    Err(error) => error,
                };
                match error {
                    ApiError::ClientUnknown { .. } => {
                        // The group forgot this client: the session ends.
                        let mut session = slot.lock().await;
                        if session.as_ref().is_some_and(|s| s.client() == client) {
                            *session = None;
                        }
                        drop(session);
                        if in_doubt {
                            return Err(ApiError::OutcomeUnknown(format!(
                                "group {group} forgot client {client} (its exactly-once entry \
                                 was evicted or expired) while an earlier attempt of request \
                                 {sequence} was in doubt"
                            )));
                        }
                        // Nothing of this request applied: start over with a new session.
                        break;
                    }
                    // In doubt (an internal error included): retrying under the same
                    // id is safe and usually settles it from the table.
                    error if error.outcome_unknown() || error.is_retryable() => {
                        in_doubt |= error.outcome_unknown();
                        if Instant::now() + self.retry_pause() >= deadline {
                            finish(&slot, client, sequence).await;
                            return Err(if in_doubt {
                                ApiError::OutcomeUnknown(format!(
                                    "request {sequence} of client {client} was not answered \
                                     within {}ms (last error: {error}); it may have applied",
                                    self.inner.config.retry_deadline_ms
                                ))
                            } else {
                                error
                            });
                        }
                        tracing::debug!(group, client, sequence, %error, "retrying the proposal");
                        tokio::time::sleep(self.retry_pause()).await;
                    }
                    error => {
                        finish(&slot, client, sequence).await;
                        // A refusal is definite only if no attempt may have applied.
                        return Err(if in_doubt {
                            ApiError::OutcomeUnknown(format!(
                                "request {sequence} of client {client} failed ({error}) \
                                 after an attempt whose outcome is unknown; it may have applied"
                            ))
                        } else {
                            error
                        });
                    }
                }
            }
        }
    }

    /// Registers a new client with `group`'s exactly-once table and returns its id,
    /// for callers that number their own requests ([`RaftClient::propose_as`]).
    /// [`RaftClient::propose`] keeps a session of its own and needs none of this.
    pub async fn register_client(&self, group: GroupId) -> Result<ClientId, ApiError> {
        self.register_until(group, self.retry_deadline()).await
    }

    /// One attempt (with redirects) of proposal `data` as request `id` of a client
    /// the caller registered and numbers itself. Sending it again with the same id is
    /// always safe.
    pub async fn propose_as(
        &self,
        group: GroupId,
        id: RequestId,
        data: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        if !id.is_valid() {
            return Err(ApiError::InvalidRequest(format!(
                "request id {id:?} is invalid: the client must not be 0, and \
                 1 <= first_unanswered <= sequence"
            )));
        }
        self.propose_attempt(group, data, Some(id)).await
    }

    /// Registers, retrying what is safe to retry (a repeated registration only uses
    /// a slot of the table) until `deadline`.
    async fn register_until(
        &self,
        group: GroupId,
        deadline: Instant,
    ) -> Result<ClientId, ApiError> {
        loop {
            let result = self
                .call(
                    group,
                    proto::RegisterClientRequest { group },
                    |mut client, request| async move { client.register_client(request).await },
                )
                .await;
            match result {
                Ok(response) if response.client_id != 0 => return Ok(response.client_id),
                Ok(_) => return Err(convert::malformed("client id 0".into())),
                Err(error)
                    if (error.outcome_unknown() || error.is_retryable())
                        && Instant::now() + self.retry_pause() < deadline =>
                {
                    tokio::time::sleep(self.retry_pause()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn session_slot(&self, group: GroupId) -> SessionSlot {
        lock(&self.inner.sessions).entry(group).or_default().clone()
    }

    /// One attempt of a proposal (with redirects).
    async fn propose_attempt(
        &self,
        group: GroupId,
        data: Bytes,
        request: Option<RequestId>,
    ) -> Result<ProposeResponse, ApiError> {
        let request = proto::ProposeRequest {
            group,
            data,
            request: request.map(convert::request_id_to_proto),
        };
        let response = if self.inner.config.propose_batch_max == 1 {
            self.call(group, request, |mut client, request| async move {
                client.propose(request).await
            })
            .await?
        } else {
            self.batched(&self.inner.batchers, group, request).await?
        };
        Ok(ProposeResponse {
            response: response.response,
            index: response.index,
            term: response.term,
        })
    }

    /// Hands `request` to the `K` batcher of the node `group`'s calls go to,
    /// following `NotLeader` redirects as [`RaftClient::call`] does.
    async fn batched<K: Kind>(
        &self,
        batchers: &Batchers<K>,
        group: GroupId,
        request: K::Request,
    ) -> Result<K::Response, ApiError> {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let mut address = self.address_for(group);
        let mut redirects = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                request: request.clone(),
                reply,
            };
            self.batcher_for(batchers, &address)?
                .send(queued)
                .map_err(|_| ApiError::Unavailable("the client's batcher stopped".into()))?;
            // The batch call has the same deadline; this bounds the wait for a slot.
            let error = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Ok(response))) => {
                    lock(&self.inner.leaders).insert(group, address);
                    return Ok(response);
                }
                Ok(Ok(Err(error))) => error,
                Ok(Err(_)) => ApiError::Unavailable("the client's batcher stopped".into()),
                Err(_) => ApiError::Timeout,
            };
            address = self.redirect(group, error, &address, &mut redirects)?;
        }
    }

    /// The queue of the `K` batcher task for `address`, started on first use.
    fn batcher_for<K: Kind>(
        &self,
        batchers: &Batchers<K>,
        address: &str,
    ) -> Result<mpsc::UnboundedSender<Queued<K>>, ApiError> {
        let mut batchers = lock(batchers);
        if let Some(queue) = batchers.get(address).filter(|queue| !queue.is_closed()) {
            return Ok(queue.clone());
        }
        let client = self.client_for(address)?;
        // Unbounded: each queued request has a caller awaiting it, so the queue is
        // bounded by the callers' own concurrency.
        let (queue, queued) = mpsc::unbounded_channel();
        let config = &self.inner.config;
        tokio::spawn(batch::run::<K>(
            client,
            queued,
            batch::Limits {
                batch_max: config.propose_batch_max,
                batch_bytes_max: config.propose_batch_bytes_max,
                in_flight_max: config.propose_batches_in_flight_max,
                timeout: Duration::from_millis(config.request_timeout_ms),
            },
        ));
        batchers.insert(address.to_string(), queue.clone());
        Ok(queue)
    }

    // ---------------------------------------------------------------------------------
    // Reads and admin.

    /// Runs `query` against `group`'s state machine. A read changes nothing, so it is
    /// retried (until `retry_deadline_ms`) on any failure but a refusal.
    pub async fn read(
        &self,
        group: GroupId,
        query: Bytes,
        mode: ReadMode,
    ) -> Result<ReadResponse, ApiError> {
        let request = proto::ReadRequest {
            group,
            query,
            mode: convert::read_mode_to_proto(mode) as i32,
        };
        let deadline = self.retry_deadline();
        loop {
            let result = if self.inner.config.propose_batch_max == 1 {
                self.call(group, request.clone(), |mut client, request| async move {
                    client.read(request).await
                })
                .await
            } else {
                self.batched(&self.inner.read_batchers, group, request.clone())
                    .await
            };
            match result {
                Ok(response) => {
                    return Ok(ReadResponse {
                        response: response.response,
                        index: response.index,
                        term: response.term,
                    })
                }
                Err(error)
                    if (error.outcome_unknown() || error.is_retryable())
                        && Instant::now() + self.retry_pause() < deadline =>
                {
                    tokio::time::sleep(self.retry_pause()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The contacted node's view of `group` (the leader's, once one was found).
    pub async fn status(&self, group: GroupId) -> Result<GroupStatus, ApiError> {
        let response = self
            .call(
                group,
                proto::StatusRequest { group },
                |mut client, request| async move { client.status(request).await },
            )
            .await?;
        convert::status_from_proto(response).map_err(convert::malformed)
    }

    /// `group`'s status as its leader sees it: asks the node calls go to, then the
    /// leader it names. `NotLeader` when no leader is known or it moved meanwhile.
    pub async fn leader_status(&self, group: GroupId) -> Result<GroupStatus, ApiError> {
        let status = self.status(group).await?;
        if status.role == concord_types::Role::Leader {
            return Ok(status);
        }
        let not_leader = |status: &GroupStatus| ApiError::NotLeader {
            leader: status.leader.as_ref().map(|member| member.id),
            address: status.leader.as_ref().map(|member| member.address.clone()),
        };
        let Some(leader) = status.leader.as_ref().filter(|l| !l.address.is_empty()) else {
            return Err(not_leader(&status));
        };
        self.learn_address(&leader.address);
        lock(&self.inner.leaders).insert(group, leader.address.clone());
        let again = self.status(group).await?;
        if again.role == concord_types::Role::Leader {
            Ok(again)
        } else {
            Err(not_leader(&again))
        }
    }

    /// `group`'s members with their addresses.
    pub async fn members(&self, group: GroupId) -> Result<Vec<Member>, ApiError> {
        let response = self
            .call(
                group,
                proto::MembersRequest { group },
                |mut client, request| async move { client.members(request).await },
            )
            .await?;
        convert::members_from_proto(response.members).map_err(convert::malformed)
    }

    /// Asks `group` to admit `node_id` listening at `address`; returns the ticket the
    /// new node joins with.
    pub async fn request_join(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: impl Into<String>,
    ) -> Result<JoinTicket, ApiError> {
        let request = proto::RequestJoinRequest {
            group,
            node_id,
            address: address.into(),
        };
        let response = self
            .call(group, request, |mut client, request| async move {
                client.request_join(request).await
            })
            .await?;
        convert::ticket_from_proto(response).map_err(convert::malformed)
    }

    /// Takes `node_id` out of `group` at its own request.
    pub async fn leave(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::LeaveRequest { group, node_id },
            |mut client, request| async move { client.leave(request).await },
        )
        .await
        .map(drop)
    }

    /// Adds `node_id` listening at `address` to `group` as a learner.
    pub async fn add_learner(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: impl Into<String>,
    ) -> Result<(), ApiError> {
        let request = proto::AddLearnerRequest {
            group,
            node_id,
            address: address.into(),
        };
        self.call(group, request, |mut client, request| async move {
            client.add_learner(request).await
        })
        .await
        .map(drop)
    }

    /// Makes learner `node_id` of `group` a voter.
    pub async fn promote(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::PromoteRequest { group, node_id },
            |mut client, request| async move { client.promote(request).await },
        )
        .await
        .map(drop)
    }

    /// Removes `node_id` from `group`.
    pub async fn remove(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::RemoveRequest { group, node_id },
            |mut client, request| async move { client.remove(request).await },
        )
        .await
        .map(drop)
    }

    /// Hands leadership of `group` to `target`; returns once the node asked sees
    /// `target` lead.
    pub async fn transfer_leader(&self, group: GroupId, target: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::TransferLeaderRequest { group, target },
            |mut client, request| async move { client.transfer_leader(request).await },
        )
        .await
        .map(drop)
    }

    // ---------------------------------------------------------------------------------
    // Plumbing.

    /// Sends `message` for `group`, following `NotLeader` redirects.
    async fn call<M, T, F, Fut>(
        &self,
        group: GroupId,
        message: M,
        mut attempt: F,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        F: FnMut(ProtoClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let mut address = self.address_for(group);
        let mut redirects = 0;
        loop {
            let client = self.client_for(&address)?;
            let mut request = Request::new(message.clone());
            request.set_timeout(timeout);
            let error = match tokio::time::timeout(timeout, attempt(client, request)).await {
                Ok(Ok(response)) => {
                    lock(&self.inner.leaders).insert(group, address);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => convert::error_from_status(&status),
                Err(_) => ApiError::Timeout,
            };
            address = self.redirect(group, error, &address, &mut redirects)?;
        }
    }

    /// Where to try next after `error` from `address`: the leader it names, when a
    /// redirect is left; else the error. A node that could not be reached, or knew no
    /// leader, sends the group's next call to the next known address.
    fn redirect(
        &self,
        group: GroupId,
        error: ApiError,
        address: &str,
        redirects: &mut u32,
    ) -> Result<String, ApiError> {
        match error {
            ApiError::NotLeader {
                address: Some(leader_address),
                ..
            } if *redirects < self.inner.config.redirects_max && leader_address != address => {
                tracing::debug!(group, from = %address, to = %leader_address, "following NotLeader redirect");
                *redirects += 1;
                self.learn_address(&leader_address);
                Ok(leader_address)
            }
            // A node outside the group's route: another host knows more.
            ApiError::GroupNotFound { .. } if *redirects < self.inner.config.redirects_max => {
                match self.next_in_route(group, address) {
                    Some(next) => {
                        *redirects += 1;
                        Ok(next)
                    }
                    None => Err(error),
                }
            }
            error => {
                if matches!(
                    error,
                    ApiError::NotLeader { .. } | ApiError::Unavailable(_) | ApiError::Timeout
                ) {
                    // What we knew about the leader is stale: try elsewhere next time.
                    // A routed group stays on its route.
                    let routed = lock(&self.inner.routes).contains_key(&group);
                    let next = if routed {
                        self.next_in_route(group, address)
                    } else {
                        self.next_address(address)
                    };
                    let mut leaders = lock(&self.inner.leaders);
                    leaders.remove(&group);
                    if let Some(next) = next {
                        leaders.insert(group, next);
                    }
                }
                Err(error)
            }
        }
    }

    /// The host of `group` after `address` in its route, round the list; `None`
    /// without a route of two hosts or more.
    fn next_in_route(&self, group: GroupId, address: &str) -> Option<String> {
        let routes = lock(&self.inner.routes);
        let route = routes.get(&group).filter(|route| route.len() >= 2)?;
        let position = route.iter().position(|known| known == address);
        let next = position.map_or(0, |position| (position + 1) % route.len());
        Some(route[next].clone())
    }

    /// The known address after `address`, round the list; `None` when it is the only
    /// one.
    fn next_address(&self, address: &str) -> Option<String> {
        let addresses = lock(&self.inner.addresses);
        if addresses.len() < 2 {
            return None;
        }
        let position = addresses.iter().position(|known| known == address);
        let next = position.map_or(0, |position| (position + 1) % addresses.len());
        Some(addresses[next].clone())
    }

    fn learn_address(&self, address: &str) {
        let mut addresses = lock(&self.inner.addresses);
        if !addresses.iter().any(|known| known == address) {
            addresses.push(address.to_string());
        }
    }

    fn retry_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.config.retry_deadline_ms)
    }

    fn retry_pause(&self) -> Duration {
        Duration::from_millis(self.inner.config.retry_pause_ms)
    }

    /// A client over the (possibly new, lazily connected) channel to `address`.
    fn client_for(&self, address: &str) -> Result<ProtoClient<Channel>, ApiError> {
        let config = &self.inner.config;
        let mut channels = lock(&self.inner.channels);
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = endpoint(address, config)?.connect_lazy();
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(ProtoClient::new(channel)
            .max_decoding_message_size(config.response_bytes_max)
            .max_encoding_message_size(usize::MAX))
    }
}

/// Ends request `sequence` of `client` in the session, if the session is still that
/// client's.
async fn finish(slot: &SessionSlot, client: ClientId, sequence: u64) {
    if let Some(session) = slot.lock().await.as_mut() {
        if session.client() == client {
            session.finish(sequence);
        }
    }
}

fn endpoint(address: &str, config: &ClientConfig) -> Result<Endpoint, ApiError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|error| ApiError::InvalidRequest(format!("invalid address {address:?}: {error}")))?
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .tcp_nodelay(true))
}
