//! [`NodeHandle`]: groups, proposals, reads, membership, status and shutdown of a
//! running node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_client::{ClientConfig, RaftClient};
use concord_group::{framing, AdminOp, ApplyItem, GroupEvent, GroupSpec, PendingRead};
use concord_raft::{
    ConfState, HardState, LogStore as _, MemStorage, NodeId, Role, Snapshot, SnapshotMetadata,
};
use concord_storage::WriteBatch;
use concord_types::{
    ApiError, ClientId, GroupHealth, GroupStatus, JoinTicket, Member, MemberRole, ProposeResponse,
    ReadResponse, RequestId,
};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use super::group_handle::{GroupHandle, TypedGroup};
use super::loading::{self, Origin};
use super::{NodeInner, DEFAULT_GROUP};
use crate::apply::{ApplyWork, ProposeReply};
use crate::config::NodeConfig;
use crate::lock;
use crate::metrics::NodeMetrics;
use crate::raft_loop::{DetachedGroup, RaftView, Request};
use crate::storage::StorageBackend;
use crate::GroupId;

/// A running node. Cheap to clone; every clone drives the same node.
///
/// Methods that take a group act on that group; [`NodeHandle::group`] binds one, and
/// [`NodeHandle::default_group`] is the group of single-group programs. Calls fail with
/// [`ApiError`]s a caller can act on (`NotLeader` carries the leader's address).
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) inner: Arc<NodeInner>,
}

impl NodeHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The address other nodes and clients reach this node at.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The address the gRPC server bound (None without a server).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.inner.local_address
    }

    /// The address the metrics endpoint bound (None when off).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.inner.metrics_address
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.inner.metrics
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The groups this node hosts, sorted.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = lock(&self.inner.registry).keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// A handle bound to `group`.
    pub fn group(&self, group: GroupId) -> GroupHandle {
        GroupHandle::new(self.clone(), group)
    }

    /// The handle of [`DEFAULT_GROUP`], for single-group programs.
    pub fn default_group(&self) -> GroupHandle {
        self.group(DEFAULT_GROUP)
    }

    /// A typed handle on `group`, whose state machine is a [`crate::Typed`]`<M>`.
    pub fn typed<M: concord_group::TypedStateMachine>(&self, group: GroupId) -> TypedGroup<M> {
        TypedGroup::new(self.group(group))
    }

    /// Subscribes to `group`'s events on this node: what its state machine emits as
    /// it applies, in apply order, and [`GroupEvent::Restored`] when a snapshot
    /// replaced its state. Delivery only: a subscriber more than `group_events_max`
    /// events behind misses some (`RecvError::Lagged`), and history that must survive
    /// is the state machine's to keep. The channel lives as long as the node, across
    /// snapshot installs and reloads of the group.
    pub fn subscribe(&self, group: GroupId) -> broadcast::Receiver<GroupEvent> {
        lock(&self.inner.subscribers)
            .entry(group)
            .or_insert_with(|| broadcast::channel(self.inner.config.group_events_max as usize).0)
            .subscribe()
    }

    // ---------------------------------------------------------------------------------
    // Groups.

    /// Founds `group` of kind `spec` with `members` (node id and address; this node
    /// must be one of them) as its voters. Every founding member bootstraps with the
    /// same list and spec; an empty list founds a one-member group of this node.
    pub async fn bootstrap_group(
        &self,
        group: GroupId,
        spec: GroupSpec,
        members: &[(NodeId, String)],
    ) -> Result<(), ApiError> {
        spec.validate().map_err(ApiError::InvalidRequest)?;
        let mut members = members.to_vec();
        if members.is_empty() {
            members.push((self.node_id(), self.address().to_string()));
        }
        if !members.iter().any(|(id, _)| *id == self.node_id()) {
            return Err(ApiError::InvalidRequest(format!(
                "bootstrap members must include this node ({})",
                self.node_id()
            )));
        }
        if members.iter().any(|(id, _)| *id == concord_raft::NO_NODE) {
            return Err(ApiError::InvalidRequest(
                "member id 0 is not allowed".into(),
            ));
        }
        let conf_state = ConfState::with_voters(members.iter().map(|(id, _)| *id));
        let addresses = members.into_iter().collect();
        self.load(group, Origin::Bootstrap(conf_state, addresses, spec), None)
            .await?;
        tracing::info!(node = self.node_id(), group, "group bootstrapped");
        Ok(())
    }

    /// [`NodeHandle::bootstrap_group`] of [`DEFAULT_GROUP`], of no particular kind.
    pub async fn bootstrap(&self, members: &[(NodeId, String)]) -> Result<(), ApiError> {
        self.bootstrap_group(DEFAULT_GROUP, GroupSpec::default(), members)
            .await
    }

    /// Creates `group` empty: this node waits to be added by the group's leader (with
    /// `add_learner`), which then sends it a snapshot. `addresses` are members it may
    /// need to answer before the snapshot arrives (the leader at least).
    pub async fn create_group(
        &self,
        group: GroupId,
        addresses: &[(NodeId, String)],
    ) -> Result<(), ApiError> {
        let addresses = addresses.iter().cloned().collect();
        self.load(group, Origin::Empty(addresses), None).await
    }

    pub(super) async fn load(
        &self,
        group: GroupId,
        origin: Origin,
        memory: Option<MemStorage>,
    ) -> Result<(), ApiError> {
        let storage = lock(&self.inner.storage)
            .clone()
            .ok_or_else(|| ApiError::Unavailable("node stopped".into()))?;
        let factory = self.inner.factory.clone();
        let loaded = tokio::task::spawn_blocking(move || match &storage {
            StorageBackend::Durable(log) => loading::prepare_durable(log, &*factory, group, origin),
            StorageBackend::Memory => loading::prepare_memory(&*factory, group, origin, memory),
        })
        .await
        .map_err(|error| internal("loading the group", error))??;
        let (reply, answer) = oneshot::channel();
        self.send(Request::Load {
            loaded: Box::new(loaded),
            reply,
        })
        .await?;
        self.answer(answer, self.admin_timeout()).await
    }

    /// Asks the member at `peer_address` to admit this node to `group` (as a learner,
    /// promoted by [`NodeHandle::join`] once caught up). Returns the ticket to join with.
    pub async fn request_join(
        &self,
        peer_address: &str,
        group: GroupId,
    ) -> Result<JoinTicket, ApiError> {
        let client = self.client(peer_address).await?;
        client
            .request_join(group, self.node_id(), self.address().to_string())
            .await
    }

    /// Starts the group of `ticket` empty (the leader sends a snapshot and the log),
    /// waits until this node has caught up, has it promoted to voter, and returns once
    /// this node sees itself as a voter.
    pub async fn join(&self, ticket: JoinTicket) -> Result<(), ApiError> {
        if ticket.node_id != self.node_id() {
            return Err(ApiError::InvalidRequest(format!(
                "the ticket admits node {}, not this node ({})",
                ticket.node_id,
                self.node_id()
            )));
        }
        let group = ticket.group;
        let addresses: Vec<(NodeId, String)> = ticket
            .members
            .iter()
            .chain(ticket.leader.iter())
            .map(|member| (member.id, member.address.clone()))
            .collect();
        let contact = ticket
            .leader
            .as_ref()
            .or_else(|| {
                ticket
                    .members
                    .iter()
                    .find(|member| member.id != self.node_id())
            })
            .map(|member| member.address.clone())
            .ok_or_else(|| ApiError::InvalidRequest("the ticket names no other member".into()))?;
        self.create_group(group, &addresses).await?;
        let deadline = Instant::now() + self.admin_timeout();
        let client = self.client(&contact).await?;
        let target = within(deadline, client.status(group)).await?.commit;
        // Caught up: a learner that applied what the leader had committed.
        loop {
            let status = self.status(group).await?;
            let member = status
                .members
                .iter()
                .find(|member| member.id == self.node_id());
            if member.is_some_and(|member| member.role == MemberRole::Voter) {
                return Ok(());
            }
            if member.is_some() && status.applied >= target {
                break;
            }
            self.pause_until(deadline).await?;
        }
        within(deadline, async {
            loop {
                match client.promote(group, self.node_id()).await {
                    Err(error) if error.is_retryable() => {}
                    other => return other,
                }
                tokio::time::sleep(self.retry_pause()).await;
            }
        })
        .await?;
        loop {
            let status = self.status(group).await?;
            if status
                .members
                .iter()
                .any(|member| member.id == self.node_id() && member.role == MemberRole::Voter)
            {
                tracing::info!(node = self.node_id(), group, "joined as a voter");
                return Ok(());
            }
            self.pause_until(deadline).await?;
        }
    }

    /// Leaves `group`: has the leader remove this node, then drops the group here
    /// (and its data).
    pub async fn leave(&self, group: GroupId) -> Result<(), ApiError> {
        self.remove(group, self.node_id()).await?;
        self.drop_group(group).await
    }

    /// Stops running `group` here and deletes its data from this node's log.
    pub async fn drop_group(&self, group: GroupId) -> Result<(), ApiError> {
        let detached = self.unload(group).await?;
        drop(detached.apply);
        if let Some(task) = detached.apply_task {
            let _ = task.await;
        }
        drop(detached.store);
        let storage = lock(&self.inner.storage).clone();
        if let Some(StorageBackend::Durable(log)) = storage {
            tokio::task::spawn_blocking(move || log.remove_group(group))
                .await
                .map_err(|error| internal("removing the group", error))?
                .map_err(|error| internal("removing the group", error))?;
        }
        tracing::info!(node = self.node_id(), group, "group dropped from this node");
        Ok(())
    }

    async fn unload(&self, group: GroupId) -> Result<DetachedGroup, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Unload { group, reply }).await?;
        self.answer(answer, self.admin_timeout())
            .await?
            .ok_or(ApiError::GroupNotFound { group })
    }

    /// Rebuilds `group` as a one-member cluster of this node, from what this node
    /// holds: for recovery after a majority of the members are lost for good.
    ///
    /// Everything this node knows to be committed is kept; entries it holds but does
    /// not know committed are discarded. The group starts a new term with this node
    /// as its only voter and leader; others can then join (as new, empty nodes). Never
    /// run it while the old majority could come back: two clusters would then diverge.
    pub async fn force_new_cluster(&self, group: GroupId) -> Result<(), ApiError> {
        tracing::error!(
            node = self.node_id(),
            group,
            "FORCE NEW CLUSTER: rewriting the group's membership to this node alone; \
             entries not known committed here are discarded"
        );
        let detached = self.unload(group).await?;
        let (reply, answer) = oneshot::channel();
        detached
            .apply
            .send(ApplyWork::TakeSnapshot(reply))
            .map_err(|_| ApiError::Internal("the group's apply task stopped".into()))?;
        let taken = answer
            .await
            .map_err(|_| ApiError::Internal("the group's apply task stopped".into()))??;
        drop(detached.apply);
        if let Some(task) = detached.apply_task {
            let _ = task.await;
        }
        let HardState { term, .. } = detached.hard_state;
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index: taken.index + 1,
                term: term + 1,
                conf_state: ConfState::with_voters([self.node_id()]),
            },
            data: taken.data,
        };
        let hard_state = HardState {
            term: term + 1,
            vote: concord_raft::NO_NODE,
            commit: taken.index + 1,
        };
        let mut store = detached.store;
        let memory = match store.memory_mut() {
            Some(memory) => {
                memory
                    .apply_snapshot(snapshot.clone())
                    .map_err(|error| internal("installing the new membership", error))?;
                concord_raft::LogStore::set_hard_state(memory, hard_state)
                    .map_err(|error| internal("installing the new membership", error))?;
                Some(std::mem::take(memory))
            }
            None => {
                let log = store
                    .log()
                    .cloned()
                    .ok_or_else(|| ApiError::Internal("group has no storage".into()))?;
                drop(store);
                tokio::task::spawn_blocking(move || {
                    let mut batch = WriteBatch::new();
                    let write = batch.group(group);
                    write.snapshot = Some(snapshot);
                    write.hard_state = Some(hard_state);
                    log.write(batch)
                })
                .await
                .map_err(|error| internal("installing the new membership", error))?
                .map_err(|error| internal("installing the new membership", error))?;
                None
            }
        };
        self.load(group, Origin::Existing, memory).await?;
        self.campaign(group).await?;
        tracing::warn!(
            node = self.node_id(),
            group,
            term = term + 1,
            index = taken.index + 1,
            "FORCE NEW CLUSTER: group restarted with this node as its only voter"
        );
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Proposals and reads.

    /// Replicates `command` through `group`'s log; returns the state machine's
    /// response once applied here. On a follower it is forwarded to the leader when
    /// `forward_proposals` is set, else it fails with `NotLeader { leader, address }`.
    /// Sent once: a caller that retries after an unknown outcome may apply it twice;
    /// [`NodeHandle::propose_request`] makes retries safe.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        self.propose_or_forward(group, command, None).await
    }

    /// Proposes `command` as request `id` of a client registered with
    /// [`NodeHandle::register_client`]: however often it is sent, it applies at most
    /// once, and a repeat is answered with the first outcome.
    pub async fn propose_request(
        &self,
        group: GroupId,
        id: RequestId,
        command: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        if !id.is_valid() {
            return Err(ApiError::InvalidRequest(format!(
                "request id {id:?} is invalid: the client must not be 0, and \
                 1 <= first_unanswered <= sequence"
            )));
        }
        self.propose_or_forward(group, command, Some(id)).await
    }

    /// Registers a client with `group`'s exactly-once table (through the log) and
    /// returns its id.
    pub async fn register_client(&self, group: GroupId) -> Result<ClientId, ApiError> {
        self.register_or_forward(group).await
    }

    pub(super) async fn propose_here(
        &self,
        group: GroupId,
        data: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Propose {
            group,
            data,
            reply: ProposeReply::new(reply),
        })
        .await?;
        // The raft loop answers `Timeout` itself after `proposal_timeout_ms` (a timer
        // per proposal here would cost more than the rest of the proposal's path).
        self.answer_eventually(answer).await
    }

    /// A registration entry, proposed here.
    pub(super) async fn register_here(&self, group: GroupId) -> Result<ClientId, ApiError> {
        let applied = self.propose_here(group, framing::encode_register()).await?;
        let id: [u8; 8] = applied.response[..].try_into().map_err(|_| {
            ApiError::Internal(format!(
                "a registration answered {} bytes, not a client id",
                applied.response.len()
            ))
        })?;
        Ok(u64::from_be_bytes(id))
    }

    /// A linearizable read: confirmed through ReadIndex (at the leader, from any
    /// member) and served once this node's state machine has applied the read index.
    pub async fn read(&self, group: GroupId, query: Bytes) -> Result<ReadResponse, ApiError> {
        self.read_or_forward(group, query).await
    }

    pub(super) async fn read_here(
        &self,
        group: GroupId,
        query: Bytes,
    ) -> Result<ReadResponse, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Read {
            group,
            query,
            reply,
        })
        .await?;
        // The raft loop answers `Timeout` itself after `read_timeout_ms`.
        self.answer_eventually(answer).await
    }

    /// A read from this node's state machine as it is now: no round trip, possibly
    /// stale.
    pub async fn read_stale(&self, group: GroupId, query: Bytes) -> Result<ReadResponse, ApiError> {
        let apply = lock(&self.inner.registry)
            .get(&group)
            .map(|entry| entry.apply.clone())
            .ok_or(ApiError::GroupNotFound { group })?;
        let (reply, answer) = oneshot::channel();
        apply
            .send(ApplyWork::Item(ApplyItem::Reads {
                index: 0,
                term: 0,
                reads: vec![PendingRead {
                    query,
                    caller: reply,
                }],
            }))
            .map_err(|_| ApiError::Unavailable("the group stopped".into()))?;
        let timeout = Duration::from_millis(self.inner.config.read_timeout_ms);
        self.answer(answer, timeout).await
    }

    // ---------------------------------------------------------------------------------
    // Status and membership.

    pub(super) async fn view(&self, group: GroupId) -> Result<RaftView, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::View { group, reply }).await?;
        self.answer(answer, self.admin_timeout()).await
    }

    /// This node's view of `group`: role, term, leader, commit and applied index,
    /// members with their addresses, and whether the group works here.
    pub async fn status(&self, group: GroupId) -> Result<GroupStatus, ApiError> {
        let view = self.view(group).await?;
        let (applied, health) = lock(&self.inner.registry)
            .get(&group)
            .map(|entry| {
                (
                    NodeMetrics::read(&entry.metrics.applied),
                    lock(&entry.health).clone(),
                )
            })
            .unwrap_or((0, GroupHealth::Running));
        let status = view.status;
        let leader = (status.leader != concord_raft::NO_NODE).then(|| Member {
            id: status.leader,
            address: view
                .addresses
                .get(&status.leader)
                .cloned()
                .unwrap_or_default(),
            role: MemberRole::Voter,
        });
        Ok(GroupStatus {
            group,
            node_id: self.node_id(),
            role: status.role,
            term: status.term,
            leader,
            commit: status.commit,
            applied,
            members: members_of(&status.conf_state, &view.addresses),
            health,
        })
    }

    /// `group`'s members with their addresses, as this node knows them.
    pub async fn members(&self, group: GroupId) -> Result<Vec<Member>, ApiError> {
        Ok(self.status(group).await?.members)
    }

    /// Adds `node` (listening at `address`) to `group` as a learner.
    pub async fn add_learner(
        &self,
        group: GroupId,
        node: NodeId,
        address: &str,
    ) -> Result<(), ApiError> {
        self.admin(
            group,
            AdminOp::AddLearner {
                node,
                address: address.to_string(),
            },
        )
        .await
    }

    /// Makes learner `node` of `group` a voter.
    pub async fn promote(&self, group: GroupId, node: NodeId) -> Result<(), ApiError> {
        self.admin(group, AdminOp::Promote { node }).await
    }

    /// Removes `node` from `group`.
    pub async fn remove(&self, group: GroupId, node: NodeId) -> Result<(), ApiError> {
        self.admin(group, AdminOp::Remove { node }).await
    }

    /// Hands leadership of `group` to `target`; returns once this node sees `target`
    /// lead. Asked of a follower, the follower passes it on to the leader.
    pub async fn transfer_leader(&self, group: GroupId, target: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::TransferLeader { target })
            .await?;
        let deadline = Instant::now() + self.admin_timeout();
        loop {
            let status = self.status(group).await?;
            if status
                .leader
                .as_ref()
                .is_some_and(|leader| leader.id == target)
                && (target != self.node_id() || status.role == Role::Leader)
            {
                return Ok(());
            }
            self.pause_until(deadline).await?;
        }
    }

    /// Makes this node campaign for leadership of `group` now.
    pub async fn campaign(&self, group: GroupId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Campaign).await
    }

    /// A membership change on this node, retried while the group is busy with another
    /// (one change at a time) until `admin_timeout_ms`.
    pub(super) async fn admin_here(&self, group: GroupId, op: AdminOp) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.admin_timeout();
        loop {
            let (reply, answer) = oneshot::channel();
            self.send(Request::Admin {
                group,
                op: op.clone(),
                reply,
            })
            .await?;
            match within(deadline, async {
                answer
                    .await
                    .unwrap_or_else(|_| Err(ApiError::Unavailable("node stopped".into())))
            })
            .await
            {
                Err(ApiError::Busy(_)) | Err(ApiError::ProposalDropped) => {
                    self.pause_until(deadline).await?;
                }
                other => return other,
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Shutdown.

    /// Stops the node gracefully: the raft loop finishes its turn (and its write) and
    /// fails what is still queued, apply tasks finish what they were handed, the
    /// servers stop after their in-flight requests, and the log is closed (its lock
    /// released). Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.inner.requests.send(Request::Shutdown).await;
        if let Some(stopped) = self.inner.loop_stopped.lock().await.take() {
            for apply_task in stopped.await.unwrap_or_default() {
                let _ = apply_task.await;
            }
        }
        self.inner.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
        lock(&self.inner.clients).clear();
        lock(&self.inner.storage).take();
        tracing::info!(node = self.node_id(), "node stopped");
    }

    // ---------------------------------------------------------------------------------
    // Plumbing.

    async fn send(&self, request: Request) -> Result<(), ApiError> {
        self.inner
            .requests
            .send(request)
            .await
            .map_err(|_| ApiError::Unavailable("node stopped".into()))
    }

    async fn answer<T>(
        &self,
        answer: oneshot::Receiver<Result<T, ApiError>>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ApiError::Unavailable(
                "the request was abandoned (node stopping, or leadership lost)".into(),
            )),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// Waits for an answer the raft loop or an apply task always gives (or drops
    /// when the node stops).
    async fn answer_eventually<T>(
        &self,
        answer: oneshot::Receiver<Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::OutcomeUnknown(
                "the request was abandoned (node stopping or group unloaded)".into(),
            ))
        })
    }

    pub(super) fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.admin_timeout_ms)
    }

    fn retry_pause(&self) -> Duration {
        Duration::from_millis(
            self.inner.config.tick_interval_ms * self.inner.config.heartbeat_interval_ticks as u64,
        )
    }

    async fn pause_until(&self, deadline: Instant) -> Result<(), ApiError> {
        if Instant::now() >= deadline {
            return Err(ApiError::Timeout);
        }
        tokio::time::sleep(self.retry_pause().min(deadline - Instant::now())).await;
        Ok(())
    }

    /// A client of the node at `address` (cached). Its calls are single attempts: the
    /// node forwards requests it was given once, and the caller decides on retries.
    pub(super) async fn client(&self, address: &str) -> Result<RaftClient, ApiError> {
        if let Some(client) = lock(&self.inner.clients).get(address) {
            return Ok(client.clone());
        }
        let config = &self.inner.config;
        let client = RaftClient::connect_with(
            address,
            ClientConfig {
                connect_timeout_ms: config.connect_timeout_ms,
                request_timeout_ms: config.proposal_timeout_ms.max(config.admin_timeout_ms),
                retry_deadline_ms: 0,
                exactly_once: false,
                ..ClientConfig::default()
            },
        )
        .await?;
        lock(&self.inner.clients).insert(address.to_string(), client.clone());
        Ok(client)
    }
}

pub(super) async fn within<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .unwrap_or(Err(ApiError::Timeout))
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{context}: {error}"))
}

/// The members of a group with their addresses and roles.
fn members_of(conf_state: &ConfState, addresses: &concord_group::Addresses) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::new();
    let mut push = |id: NodeId, role: MemberRole| {
        if !members.iter().any(|member| member.id == id) {
            members.push(Member {
                id,
                address: addresses.get(&id).cloned().unwrap_or_default(),
                role,
            });
        }
    };
    for &id in conf_state.voters.iter().chain(&conf_state.voters_outgoing) {
        push(id, MemberRole::Voter);
    }
    for &id in conf_state.learners.iter().chain(&conf_state.learners_next) {
        push(id, MemberRole::Learner);
    }
    members.sort_by_key(|member| member.id);
    members
}
