//! The raft loop: one per node, on its own thread, owning every group's `RawNode`.
//!
//! A turn: wait for an input (a request, a peer message, a tick, a stored snapshot,
//! a snapshot from an apply task), drain every other input already queued (up to
//! `turn_inputs_max` of each), propose each group's queued proposals as one
//! `propose_batch` and its queued reads as one `read_index`, then take the `Ready` of
//! every group touched, send its `messages` at once, and write every durable part as
//! one `WriteBatch`, waiting for it on this thread. Once the batch is durable the loop
//! sends the `persisted_messages`, hands committed entries, snapshots and confirmed
//! reads to the apply tasks, and calls `advance` on each group in the batch
//! (crates/raft/README.md, steps 3 to 6). Outgoing messages are collected per peer
//! and sent once per turn.
//!
//! The loop runs on a thread of its own (a current-thread tokio runtime) so nothing
//! else in the process — state machines, gRPC handlers, user tasks — can delay
//! heartbeats and elections.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, LogStore, Message, MessageKind,
    NodeId, RawNode, ReadState, Role, Snapshot, Term, NO_NODE,
};
use concord_storage::{Log, WriteBatch};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::apply::{self, ApplyEvent, ApplyItem, ApplyOp, ApplyStart, ProposeReply, ReadRequest};
use crate::config::NodeConfig;
use crate::framing::{self, Addresses, Payload};
use crate::metrics::{GroupMetrics, NodeMetrics};
use crate::service::{ApiError, MemberRole};
use crate::state_machine::{StateMachine, StateMachineFactory};
use crate::storage::GroupStore;
use crate::transport::{GroupMessage, Inbound, Transport};
use crate::GroupId;

/// Most distinct unknown groups the loop remembers having warned about (one warning
/// each; then only the metric counts).
const UNKNOWN_GROUP_WARNINGS_MAX: usize = 1024;
/// Most Ready rounds `drain_group` runs to hand out every committed entry.
const DRAIN_ROUNDS_MAX: usize = 10_000;

/// A membership or leadership request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AdminOp {
    AddLearner { node: NodeId, address: String },
    Promote { node: NodeId },
    Remove { node: NodeId },
    TransferLeader { target: NodeId },
    Campaign,
}

/// A group ready to be run by the loop: storage, state machine restored to `applied`.
pub(crate) struct LoadedGroup {
    pub group: GroupId,
    pub store: GroupStore,
    pub state_machine: Box<dyn StateMachine>,
    pub applied: Index,
    pub conf_state: ConfState,
    pub addresses: Addresses,
}

/// A group taken out of the loop (force_new_cluster): everything committed was handed
/// to its apply task.
pub(crate) struct DetachedGroup {
    pub store: GroupStore,
    pub apply: mpsc::UnboundedSender<ApplyItem>,
    pub apply_task: Option<JoinHandle<()>>,
    pub hard_state: HardState,
}

/// One node's view of a group, for status and the admin paths.
pub(crate) struct RaftView {
    pub status: concord_raft::Status,
    pub addresses: Addresses,
}

/// What the loop is asked to do.
pub(crate) enum Request {
    Propose {
        group: GroupId,
        data: Bytes,
        reply: ProposeReply,
    },
    Read {
        group: GroupId,
        query: Bytes,
        reply: apply::ReadReply,
    },
    Admin {
        group: GroupId,
        op: AdminOp,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    View {
        group: GroupId,
        reply: oneshot::Sender<Result<RaftView, ApiError>>,
    },
    Load {
        loaded: Box<LoadedGroup>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Unload {
        group: GroupId,
        reply: oneshot::Sender<Result<Option<DetachedGroup>, ApiError>>,
    },
    Shutdown,
}

/// Entries a group's apply task can reach directly (stale reads), kept by the loop.
pub(crate) struct GroupEntry {
    pub apply: mpsc::UnboundedSender<ApplyItem>,
    pub metrics: Arc<GroupMetrics>,
}

/// The groups the node hosts, shared with the handle.
pub(crate) type Registry = Mutex<HashMap<GroupId, GroupEntry>>;

/// A proposal waiting for its entry to be handed out.
struct Waiter {
    index: Index,
    term: Term,
    reply: ProposeReply,
    proposed_at: Instant,
}

/// Reads asked of the core as one ReadIndex request.
struct PendingReads {
    /// The tick the reads were first asked at: their timeout counts from here.
    first_asked: u64,
    /// The tick they were last asked at.
    asked: u64,
    reads: Vec<ReadRequest>,
}

/// A membership change waiting to be applied.
struct AdminWaiter {
    index: Index,
    term: Term,
    reply: oneshot::Sender<Result<(), ApiError>>,
}

/// What is left of a Ready once its durable part is submitted.
struct Held {
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    snapshot: Option<Snapshot>,
}

struct Group {
    id: GroupId,
    raw: RawNode<GroupStore>,
    apply: mpsc::UnboundedSender<ApplyItem>,
    apply_task: Option<JoinHandle<()>>,
    metrics: Arc<GroupMetrics>,
    /// Proposals queued this turn.
    proposals: Vec<(Bytes, ProposeReply)>,
    /// Proposals in the log, in index order, until their entry is handed out.
    // Invariant: indexes strictly increase front to back.
    waiters: VecDeque<Waiter>,
    admin_waiters: Vec<AdminWaiter>,
    /// Reads queued this turn.
    reads: Vec<ReadRequest>,
    /// Reads asked of the core, by context.
    pending_reads: HashMap<u64, PendingReads>,
    /// Reads to ask again: the leader changed, or the request or its answer was lost.
    reads_to_retry: Vec<PendingReads>,
    addresses: Addresses,
    conf_state: ConfState,
    role: Role,
    leader: NodeId,
    /// Queued in the loop's dirty list.
    dirty: bool,
    /// Queued in the loop's list of groups with proposals or reads.
    queued: bool,
    held: Option<Held>,
    /// Compact the log to this index with the next write.
    pending_compact: Option<Index>,
    /// Term and vote of the last hard state written to the log.
    synced_term_vote: (Term, NodeId),
    /// A hard state that changed only the commit index, not yet written: it goes
    /// with the group's next durable write.
    unsynced_hard_state: Option<HardState>,
}

impl Group {
    /// Puts the group, once, in the loop's list of groups to take a Ready from.
    fn touch(&mut self, dirty: &mut Vec<GroupId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(self.id);
        }
    }

    /// Puts the group, once, in the loop's list of groups with proposals or reads.
    fn enqueue(&mut self, queued: &mut Vec<GroupId>) {
        if !self.queued {
            self.queued = true;
            queued.push(self.id);
        }
    }
}

/// Why the loop woke.
enum Event {
    Request(Option<Request>),
    Inbound(Option<Inbound>),
    Apply(Option<ApplyEvent>),
    PeerAddress(NodeId, String),
    SnapshotStored {
        group: GroupId,
        index: Index,
        result: Result<(), String>,
    },
    Tick,
}

/// Everything the loop starts with.
pub(crate) struct LoopStart {
    pub config: NodeConfig,
    pub requests: mpsc::Receiver<Request>,
    pub inbox: mpsc::Receiver<Inbound>,
    pub transport: Arc<dyn Transport>,
    pub log: Option<Log>,
    pub metrics: Arc<NodeMetrics>,
    pub registry: Arc<Registry>,
    pub factory: Arc<dyn StateMachineFactory>,
    pub runtime: tokio::runtime::Handle,
    pub groups: Vec<LoadedGroup>,
    pub seed: u64,
    /// Addresses peers say their servers listen at (from the transport).
    pub peer_addresses: mpsc::UnboundedReceiver<(NodeId, String)>,
}

pub(crate) struct RaftLoop {
    node_id: NodeId,
    config: NodeConfig,
    groups: HashMap<GroupId, Group>,
    requests: mpsc::Receiver<Request>,
    inbox: mpsc::Receiver<Inbound>,
    apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
    apply_events_sender: mpsc::UnboundedSender<ApplyEvent>,
    stored: mpsc::UnboundedReceiver<(GroupId, Index, Result<(), String>)>,
    peer_addresses: mpsc::UnboundedReceiver<(NodeId, String)>,
    stored_sender: mpsc::UnboundedSender<(GroupId, Index, Result<(), String>)>,
    transport: Arc<dyn Transport>,
    log: Option<Log>,
    metrics: Arc<NodeMetrics>,
    registry: Arc<Registry>,
    factory: Arc<dyn StateMachineFactory>,
    runtime: tokio::runtime::Handle,
    outbox: HashMap<NodeId, Vec<GroupMessage>>,
    /// Addresses handed to the transport.
    peers: HashMap<NodeId, String>,
    dirty: Vec<GroupId>,
    queued: Vec<GroupId>,
    next_read_context: u64,
    ticks: u64,
    read_timeout_ticks: u64,
    seed: u64,
    /// Snapshots being written by blocking tasks; shutdown waits for them (they hold
    /// the log).
    storing_snapshots: usize,
    shutting_down: bool,
    /// False once every sender of the inbox is gone.
    inbox_open: bool,
    /// Set when storage failed: the node stops.
    fatal: Option<String>,
    warned_unknown_groups: HashSet<GroupId>,
    /// A node was removed from a group (or a group unloaded): drop transport peers no
    /// hosted group has as a member.
    prune_peers: bool,
}

impl RaftLoop {
    pub(crate) fn new(start: LoopStart) -> Self {
        let (apply_events_sender, apply_events) = mpsc::unbounded_channel();
        let (stored_sender, stored) = mpsc::unbounded_channel();
        let read_timeout_ticks = start.config.read_timeout_ms / start.config.tick_interval_ms + 1;
        let mut raft_loop = RaftLoop {
            node_id: start.config.node_id,
            config: start.config,
            groups: HashMap::new(),
            requests: start.requests,
            inbox: start.inbox,
            apply_events,
            apply_events_sender,
            stored,
            stored_sender,
            transport: start.transport,
            log: start.log,
            metrics: start.metrics,
            registry: start.registry,
            factory: start.factory,
            runtime: start.runtime,
            outbox: HashMap::new(),
            peers: HashMap::new(),
            dirty: Vec::new(),
            queued: Vec::new(),
            next_read_context: 1,
            ticks: 0,
            read_timeout_ticks,
            seed: start.seed,
            peer_addresses: start.peer_addresses,
            storing_snapshots: 0,
            shutting_down: false,
            inbox_open: true,
            fatal: None,
            warned_unknown_groups: HashSet::new(),
            prune_peers: false,
        };
        for loaded in start.groups {
            let group = loaded.group;
            if let Err(error) = raft_loop.load(loaded) {
                tracing::error!(node = raft_loop.node_id, group, %error, "cannot start group");
            }
        }
        raft_loop
    }

    /// Runs the loop until shutdown (or a storage failure). Returns the apply tasks,
    /// which finish what they were handed once the loop is gone.
    pub(crate) async fn run(mut self) -> Vec<JoinHandle<()>> {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let turn_inputs_max = self.config.turn_inputs_max as usize;
        loop {
            let event = tokio::select! {
                biased;
                stored = self.stored.recv() => match stored {
                    Some((group, index, result)) => Event::SnapshotStored { group, index, result },
                    None => continue,
                },
                request = self.requests.recv(), if !self.shutting_down => Event::Request(request),
                Some((node, address)) = self.peer_addresses.recv() => Event::PeerAddress(node, address),
                inbound = self.inbox.recv(), if self.inbox_open => Event::Inbound(inbound),
                event = self.apply_events.recv() => Event::Apply(event),
                _ = ticker.tick() => Event::Tick,
            };
            self.metrics.turns.fetch_add(1, Ordering::Relaxed);
            match event {
                Event::Request(Some(request)) => self.handle_request(request),
                Event::Request(None) => self.shutting_down = true,
                Event::Inbound(Some(inbound)) => self.step(inbound),
                // Every transport dropped its side (an in-process node disconnected).
                Event::Inbound(None) => self.inbox_open = false,
                Event::Apply(Some(event)) => self.handle_apply_event(event),
                Event::Apply(None) => {}
                Event::SnapshotStored {
                    group,
                    index,
                    result,
                } => self.snapshot_stored(group, index, result),
                Event::PeerAddress(node, address) => self.peer_address(node, address),
                Event::Tick => self.tick(),
            }
            if !self.shutting_down {
                for _ in 0..turn_inputs_max {
                    match self.requests.try_recv() {
                        Ok(request) => self.handle_request(request),
                        Err(_) => break,
                    }
                }
            }
            for _ in 0..turn_inputs_max {
                match self.inbox.try_recv() {
                    Ok(inbound) => self.step(inbound),
                    Err(_) => break,
                }
            }
            self.flush_queued();
            self.run_ready();
            self.flush_outbox();
            if std::mem::take(&mut self.prune_peers) {
                self.prune_peers();
            }
            if self.fatal.is_some() || (self.shutting_down && self.storing_snapshots == 0) {
                break;
            }
        }
        self.stop()
    }

    fn stop(&mut self) -> Vec<JoinHandle<()>> {
        let reason = match &self.fatal {
            Some(reason) => format!("node stopped: {reason}"),
            None => "node shutting down".to_string(),
        };
        while let Ok(request) = self.requests.try_recv() {
            fail_request(request, ApiError::Unavailable(reason.clone()));
        }
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        let mut apply_tasks = Vec::new();
        for id in ids {
            if let Some(mut group) = self.groups.remove(&id) {
                fail_group_requests(&mut group, &reason);
                apply_tasks.extend(group.apply_task.take());
            }
        }
        crate::lock(&self.registry).clear();
        apply_tasks
    }

    // ---------------------------------------------------------------------------------
    // Groups.

    fn load(&mut self, loaded: LoadedGroup) -> Result<(), ApiError> {
        let LoadedGroup {
            group: id,
            store,
            state_machine,
            applied,
            conf_state,
            addresses,
        } = loaded;
        if self.groups.contains_key(&id) {
            return Err(ApiError::InvalidRequest(format!(
                "group {id} already runs on this node"
            )));
        }
        let seed = self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let raw = RawNode::new(&self.config.raft_config(applied, seed), store)
            .map_err(|error| ApiError::Internal(format!("starting group {id}: {error}")))?;
        let metrics = self.metrics.group(id);
        metrics.term.store(raw.term(), Ordering::Relaxed);
        metrics.commit.store(raw.status().commit, Ordering::Relaxed);
        metrics.set_role(raw.role());
        let (apply_sender, apply_receiver) = mpsc::unbounded_channel();
        let start = ApplyStart {
            group: id,
            node_id: self.node_id,
            state_machine,
            applied,
            conf_state: conf_state.clone(),
            addresses: addresses.clone(),
            snapshot_interval_entries: self.config.snapshot_interval_entries,
            factory: self.factory.clone(),
            group_metrics: metrics.clone(),
            node_metrics: self.metrics.clone(),
            events: self.apply_events_sender.clone(),
        };
        let apply_task = self.runtime.spawn(apply::run(start, apply_receiver));
        crate::lock(&self.registry).insert(
            id,
            GroupEntry {
                apply: apply_sender.clone(),
                metrics: metrics.clone(),
            },
        );
        tracing::info!(
            node = self.node_id,
            group = id,
            term = raw.term(),
            applied,
            voters = ?conf_state.voters,
            learners = ?conf_state.learners,
            "group started"
        );
        let synced_term_vote = (raw.term(), raw.status().vote);
        let group = Group {
            id,
            role: raw.role(),
            leader: raw.leader(),
            raw,
            apply: apply_sender,
            apply_task: Some(apply_task),
            metrics,
            proposals: Vec::new(),
            waiters: VecDeque::new(),
            admin_waiters: Vec::new(),
            reads: Vec::new(),
            pending_reads: HashMap::new(),
            reads_to_retry: Vec::new(),
            addresses,
            conf_state,
            dirty: false,
            queued: false,
            held: None,
            pending_compact: None,
            synced_term_vote,
            unsynced_hard_state: None,
        };
        for (&node, address) in &group.addresses {
            learn_peer(
                &mut self.peers,
                &*self.transport,
                self.node_id,
                node,
                address,
            );
        }
        self.groups.insert(id, group);
        self.mark_dirty(id);
        Ok(())
    }

    /// Takes a group out of the loop. With `keep`, everything committed is handed to
    /// its apply task first and the group's storage and apply task are returned.
    fn unload(&mut self, id: GroupId) -> Result<DetachedGroup, ApiError> {
        let mut group = self
            .groups
            .remove(&id)
            .ok_or(ApiError::GroupNotFound { group: id })?;
        crate::lock(&self.registry).remove(&id);
        self.metrics.remove_group(id);
        self.prune_peers = true;
        let drained = self.drain_group(&mut group);
        fail_group_requests(&mut group, "group unloaded");
        drained?;
        tracing::warn!(
            node = self.node_id,
            group = id,
            term = group.raw.term(),
            "group unloaded"
        );
        let hard_state = HardState {
            term: group.raw.term(),
            vote: group.raw.status().vote,
            commit: group.raw.status().commit,
        };
        Ok(DetachedGroup {
            apply: group.apply.clone(),
            apply_task: group.apply_task.take(),
            store: group.raw.into_storage(),
            hard_state,
        })
    }

    /// Persists and hands out every Ready of `group` synchronously until none is left
    /// (for unloading: whatever is committed reaches the apply task).
    fn drain_group(&mut self, group: &mut Group) -> Result<(), ApiError> {
        for _ in 0..DRAIN_ROUNDS_MAX {
            if !group.raw.has_ready() {
                return Ok(());
            }
            let mut ready = group.raw.ready();
            let messages = std::mem::take(&mut ready.messages);
            queue_messages(&mut self.outbox, group.id, messages);
            let snapshot = ready.snapshot.clone();
            let entries = std::mem::take(&mut ready.entries);
            let persisted = match group.raw.storage_mut().memory_mut() {
                Some(memory) => GroupStore::persist_in_memory(
                    memory,
                    ready.hard_state,
                    snapshot,
                    &entries,
                    None,
                )
                .map_err(|error| error.to_string()),
                None => {
                    let mut batch = WriteBatch::new();
                    batch.persist_ready(group.id, ready.hard_state, snapshot, entries);
                    match &self.log {
                        Some(log) => log.write(batch).map_err(|error| error.to_string()),
                        None => Ok(()),
                    }
                }
            };
            persisted.map_err(|reason| ApiError::Internal(format!("persisting: {reason}")))?;
            group.held = Some(Held {
                persisted_messages: std::mem::take(&mut ready.persisted_messages),
                committed_entries: std::mem::take(&mut ready.committed_entries),
                read_states: std::mem::take(&mut ready.read_states),
                snapshot: ready.snapshot.take(),
            });
            self.finish_group(group);
        }
        Err(ApiError::Internal("group did not settle".into()))
    }

    fn mark_dirty(&mut self, id: GroupId) {
        if let Some(group) = self.groups.get_mut(&id) {
            group.touch(&mut self.dirty);
        }
    }

    fn mark_queued(&mut self, id: GroupId) {
        if let Some(group) = self.groups.get_mut(&id) {
            group.enqueue(&mut self.queued);
        }
    }

    // ---------------------------------------------------------------------------------
    // Inputs.

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::Propose { group, data, reply } => match self.groups.get_mut(&group) {
                Some(state) => {
                    state.proposals.push((data, reply));
                    self.mark_queued(group);
                }
                None => {
                    let _ = reply.send(Err(ApiError::GroupNotFound { group }));
                }
            },
            Request::Read {
                group,
                query,
                reply,
            } => match self.groups.get_mut(&group) {
                Some(state) => {
                    state.reads.push(ReadRequest { query, reply });
                    self.mark_queued(group);
                }
                None => {
                    let _ = reply.send(Err(ApiError::GroupNotFound { group }));
                }
            },
            Request::Admin { group, op, reply } => {
                let result = self.admin(group, op);
                match result {
                    Ok(Some(waiter)) => {
                        if let Some(state) = self.groups.get_mut(&group) {
                            state.admin_waiters.push(AdminWaiter {
                                index: waiter.index,
                                term: waiter.term,
                                reply,
                            });
                        }
                    }
                    Ok(None) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
                self.mark_dirty(group);
            }
            Request::View { group, reply } => {
                let view = self
                    .groups
                    .get(&group)
                    .map(|state| RaftView {
                        status: state.raw.status(),
                        addresses: state.addresses.clone(),
                    })
                    .ok_or(ApiError::GroupNotFound { group });
                let _ = reply.send(view);
            }
            Request::Load { loaded, reply } => {
                let _ = reply.send(self.load(*loaded));
            }
            Request::Unload { group, reply } => {
                let _ = reply.send(self.unload(group).map(Some));
            }
            Request::Shutdown => self.shutting_down = true,
        }
    }

    /// Starts a membership or leadership change; returns the position of the conf
    /// change entry to wait for, if any.
    fn admin(
        &mut self,
        id: GroupId,
        op: AdminOp,
    ) -> Result<Option<concord_raft::LogPosition>, ApiError> {
        let node_id = self.node_id;
        let group = self
            .groups
            .get_mut(&id)
            .ok_or(ApiError::GroupNotFound { group: id })?;
        let is_leader = group.raw.role() == Role::Leader;
        let not_leader = |group: &Group| ApiError::NotLeader {
            leader: (group.raw.leader() != NO_NODE).then_some(group.raw.leader()),
            address: group.addresses.get(&group.raw.leader()).cloned(),
        };
        let change = match op {
            AdminOp::Campaign => {
                group.raw.campaign();
                return Ok(None);
            }
            AdminOp::TransferLeader { target } => {
                if !group.conf_state.voters.contains(&target) {
                    return Err(ApiError::InvalidRequest(format!(
                        "node {target} is not a voter of group {id}"
                    )));
                }
                if target != node_id {
                    group.raw.transfer_leader(target);
                }
                return Ok(None);
            }
            _ if !is_leader => return Err(not_leader(group)),
            AdminOp::AddLearner { node, address } => {
                if group.conf_state.learners.contains(&node)
                    || group.conf_state.voters.contains(&node)
                {
                    return Ok(None);
                }
                if address.len() > framing::ADDRESS_BYTES_MAX {
                    return Err(ApiError::InvalidRequest("address too long".into()));
                }
                learn_peer(&mut self.peers, &*self.transport, node_id, node, &address);
                group
                    .raw
                    .propose(framing::encode_address(node, &address))
                    .map_err(|error| with_address(error.into(), &group.addresses))?;
                ConfChange::add_learner(node)
            }
            AdminOp::Promote { node } => {
                if group.conf_state.voters.contains(&node) {
                    return Ok(None);
                }
                if !group.conf_state.learners.contains(&node) {
                    return Err(ApiError::InvalidRequest(format!(
                        "node {node} is not a learner of group {id}"
                    )));
                }
                ConfChange::add_voter(node)
            }
            AdminOp::Remove { node } => {
                if !group.conf_state.all_nodes().contains(&node) {
                    return Ok(None);
                }
                ConfChange::remove(node)
            }
        };
        let position = group
            .raw
            .propose_conf_change(&change)
            .map_err(|error| with_address(error.into(), &group.addresses))?;
        Ok(Some(position))
    }

    fn step(&mut self, inbound: Inbound) {
        let Some(group) = self.groups.get_mut(&inbound.group) else {
            self.metrics
                .unknown_group_messages
                .fetch_add(1, Ordering::Relaxed);
            if self.warned_unknown_groups.len() < UNKNOWN_GROUP_WARNINGS_MAX
                && self.warned_unknown_groups.insert(inbound.group)
            {
                tracing::warn!(
                    node = self.node_id,
                    group = inbound.group,
                    from = inbound.from,
                    kind = ?inbound.message.kind,
                    "dropping message for a group this node does not host"
                );
            }
            return;
        };
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        if inbound.message.from != inbound.from {
            self.metrics
                .refused_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                node = self.node_id,
                group = inbound.group,
                from = inbound.from,
                claimed = inbound.message.from,
                "dropping message whose sender does not match its stream"
            );
            return;
        }
        if let Err(error) = group.raw.step(inbound.message) {
            self.metrics
                .refused_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = self.node_id, group = inbound.group, term = group.raw.term(), %error, "raft refused a message");
        }
        let id = group.id;
        self.mark_dirty(id);
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let now = self.ticks;
        let read_timeout_ticks = self.read_timeout_ticks;
        let read_retry_ticks = 2 * u64::from(self.config.election_timeout_ticks);
        let proposal_timeout = Duration::from_millis(self.config.proposal_timeout_ms);
        let clock = Instant::now();
        for group in self.groups.values_mut() {
            group.raw.tick();
            if !group.pending_reads.is_empty() || !group.reads_to_retry.is_empty() {
                // Reads the core never answered (leader lost, message lost) time out;
                // those unanswered for a while are asked again.
                let expired =
                    |pending: &PendingReads| now >= pending.first_asked + read_timeout_ticks;
                group.reads_to_retry.retain_mut(|pending| {
                    if expired(pending) {
                        fail_reads(std::mem::take(&mut pending.reads), &ApiError::Timeout);
                    }
                    !pending.reads.is_empty()
                });
                let unanswered: Vec<u64> = group
                    .pending_reads
                    .iter()
                    .filter(|(_, pending)| {
                        expired(pending) || now >= pending.asked + read_retry_ticks
                    })
                    .map(|(&context, _)| context)
                    .collect();
                for context in unanswered {
                    let pending = group.pending_reads.remove(&context).expect("listed");
                    if expired(&pending) {
                        fail_reads(pending.reads, &ApiError::Timeout);
                    } else {
                        group.reads_to_retry.push(pending);
                    }
                }
                if !group.reads_to_retry.is_empty() {
                    group.enqueue(&mut self.queued);
                }
            }
            // Proposals whose entry was not handed out in time (leadership lost, no
            // quorum). The waiters are in proposal order, so the oldest are in front.
            while group
                .waiters
                .front()
                .is_some_and(|waiter| clock.duration_since(waiter.proposed_at) >= proposal_timeout)
            {
                let waiter = group.waiters.pop_front().expect("checked");
                group
                    .metrics
                    .dropped_proposals
                    .fetch_add(1, Ordering::Relaxed);
                let _ = waiter.reply.send(Err(ApiError::Timeout));
            }
            group.touch(&mut self.dirty);
        }
    }

    fn handle_apply_event(&mut self, event: ApplyEvent) {
        let ApplyEvent::SnapshotTaken {
            group,
            index,
            conf_state,
            data,
        } = event;
        let Some(state) = self.groups.get_mut(&group) else {
            return;
        };
        let term = state.raw.term();
        match state.raw.storage_mut().memory_mut() {
            Some(memory) => {
                let result = memory
                    .create_snapshot(index, conf_state, data)
                    .map(drop)
                    .map_err(|error| error.to_string());
                let _ = state;
                self.snapshot_stored(group, index, result);
            }
            None => {
                let Some(log) = self.log.clone() else { return };
                let stored = self.stored_sender.clone();
                self.storing_snapshots += 1;
                self.runtime.spawn_blocking(move || {
                    let result = log
                        .create_snapshot(group, index, conf_state, data)
                        .map(drop)
                        .map_err(|error| error.to_string());
                    let _ = stored.send((group, index, result));
                });
                tracing::debug!(node = self.node_id, group, term, index, "storing snapshot");
            }
        }
    }

    fn snapshot_stored(&mut self, id: GroupId, index: Index, result: Result<(), String>) {
        if self.log.is_some() {
            self.storing_snapshots = self.storing_snapshots.saturating_sub(1);
        }
        let trailing = self.config.snapshot_trailing_entries;
        let node_id = self.node_id;
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        if let Err(reason) = result {
            // A newer snapshot (installed from the leader) may have overtaken this one.
            tracing::warn!(node = node_id, group = id, term = group.raw.term(), index, %reason, "snapshot not stored");
            return;
        }
        let compact = index.saturating_sub(trailing);
        let first_index = concord_raft::Storage::first_index(group.raw.storage()).unwrap_or(0);
        if compact >= first_index {
            group.pending_compact = Some(compact);
            self.mark_dirty(id);
        }
    }

    /// Proposes each group's queued proposals as one batch and asks one read index
    /// for its queued reads.
    fn flush_queued(&mut self) {
        let ticks = self.ticks;
        for id in std::mem::take(&mut self.queued) {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group.queued = false;
            if !group.proposals.is_empty() {
                let proposals = std::mem::take(&mut group.proposals);
                let (data, replies): (Vec<Bytes>, Vec<ProposeReply>) =
                    proposals.into_iter().unzip();
                let count = data.len() as u64;
                match group.raw.propose_batch(data) {
                    Ok(position) => {
                        group.metrics.proposals.fetch_add(count, Ordering::Relaxed);
                        let now = Instant::now();
                        // A new leader may reuse indexes where our lost proposals were.
                        while group
                            .waiters
                            .back()
                            .is_some_and(|waiter| waiter.index >= position.index)
                        {
                            let lost = group.waiters.pop_back().expect("checked");
                            group
                                .metrics
                                .dropped_proposals
                                .fetch_add(1, Ordering::Relaxed);
                            let _ = lost.reply.send(Err(ApiError::ProposalDropped));
                        }
                        for (offset, reply) in replies.into_iter().enumerate() {
                            group.waiters.push_back(Waiter {
                                index: position.index + offset as u64,
                                term: position.term,
                                reply,
                                proposed_at: now,
                            });
                        }
                    }
                    Err(error) => {
                        group
                            .metrics
                            .dropped_proposals
                            .fetch_add(count, Ordering::Relaxed);
                        let error = with_address(error.into(), &group.addresses);
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
            if !group.reads.is_empty() {
                group.reads_to_retry.push(PendingReads {
                    first_asked: ticks,
                    asked: ticks,
                    reads: std::mem::take(&mut group.reads),
                });
            }
            // Reads wait for a known leader (or their timeout); then each batch is
            // asked as one ReadIndex request.
            let leader_known = group.raw.role() == Role::Leader || group.raw.leader() != NO_NODE;
            if leader_known {
                for mut pending in std::mem::take(&mut group.reads_to_retry) {
                    let context = self.next_read_context;
                    self.next_read_context += 1;
                    match group
                        .raw
                        .read_index(Bytes::copy_from_slice(&context.to_be_bytes()))
                    {
                        Ok(()) => {
                            pending.asked = ticks;
                            group.pending_reads.insert(context, pending);
                        }
                        Err(error) => {
                            fail_reads(
                                pending.reads,
                                &with_address(error.into(), &group.addresses),
                            );
                        }
                    }
                }
            }
            group.touch(&mut self.dirty);
        }
    }

    // ---------------------------------------------------------------------------------
    // Ready: collect, persist, finish.

    /// Takes the Ready of every group touched, sends its messages, and persists the
    /// durable parts in one batch (or, in memory, at once).
    fn run_ready(&mut self) {
        let mut batch = WriteBatch::new();
        // Groups whose Ready waits for the batch, and those with nothing durable.
        let mut members = Vec::new();
        let mut settled = Vec::new();
        let mut failure = None;
        for id in std::mem::take(&mut self.dirty) {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group.dirty = false;
            let compact = group.pending_compact.take();
            if !group.raw.has_ready() {
                if let Some(index) = compact {
                    match group.raw.storage_mut().memory_mut() {
                        Some(memory) => {
                            if let Err(error) = memory.compact(index) {
                                tracing::warn!(node = self.node_id, group = id, index, %error, "compaction refused");
                            }
                        }
                        None => batch.group(id).compact = Some(index),
                    }
                }
                continue;
            }
            let mut ready = group.raw.ready();
            if let Some(soft_state) = ready.soft_state {
                observe_soft_state(self.node_id, group, soft_state.role, soft_state.leader);
                // The leader changed: reads asked of the old one may never be answered
                // (it lost leadership or died); ask the new one.
                if !group.pending_reads.is_empty() {
                    let pending = group.pending_reads.drain().map(|(_, pending)| pending);
                    group.reads_to_retry.extend(pending);
                }
                if !group.reads_to_retry.is_empty() {
                    group.enqueue(&mut self.queued);
                }
            }
            if let Some(hard_state) = ready.hard_state {
                group.metrics.term.store(hard_state.term, Ordering::Relaxed);
                group
                    .metrics
                    .commit
                    .store(hard_state.commit, Ordering::Relaxed);
            }
            let messages = std::mem::take(&mut ready.messages);
            for message in &messages {
                if message.kind == MessageKind::Snapshot {
                    if let Some(chunk) = &message.snapshot {
                        if chunk.offset == 0 {
                            tracing::info!(
                                node = self.node_id,
                                group = id,
                                term = message.term,
                                to = message.to,
                                index = chunk.metadata.index,
                                bytes = chunk.total_bytes,
                                "sending snapshot"
                            );
                        }
                    }
                }
            }
            queue_messages(&mut self.outbox, id, messages);
            let entries = std::mem::take(&mut ready.entries);
            let mut durable_part = true;
            match group.raw.storage_mut().memory_mut() {
                Some(memory) => {
                    if let Err(error) = GroupStore::persist_in_memory(
                        memory,
                        ready.hard_state,
                        ready.snapshot.clone(),
                        &entries,
                        compact,
                    ) {
                        failure = Some(format!("group {id}: {error}"));
                    }
                }
                None => {
                    // A hard state that changes only the commit index is not worth a
                    // sync of its own (the commit index is not needed for safety: a
                    // restarted node learns it again from the leader). It rides along
                    // with the group's next durable write.
                    let votes_changed = ready.hard_state.is_some_and(|hard_state| {
                        (hard_state.term, hard_state.vote) != group.synced_term_vote
                    });
                    if entries.is_empty()
                        && ready.snapshot.is_none()
                        && compact.is_none()
                        && !votes_changed
                    {
                        if ready.hard_state.is_some() {
                            group.unsynced_hard_state = ready.hard_state;
                        }
                        durable_part = false;
                    } else {
                        let hard_state = ready.hard_state.or(group.unsynced_hard_state);
                        group.unsynced_hard_state = None;
                        if let Some(hard_state) = hard_state {
                            group.synced_term_vote = (hard_state.term, hard_state.vote);
                        }
                        batch.persist_ready(id, hard_state, ready.snapshot.clone(), entries);
                        if compact.is_some() {
                            batch.group(id).compact = compact;
                        }
                    }
                }
            }
            group.held = Some(Held {
                persisted_messages: std::mem::take(&mut ready.persisted_messages),
                committed_entries: std::mem::take(&mut ready.committed_entries),
                read_states: std::mem::take(&mut ready.read_states),
                snapshot: ready.snapshot.take(),
            });
            if durable_part {
                members.push(id);
            } else {
                settled.push(id);
            }
        }
        if let Some(reason) = failure {
            self.fail(reason);
            return;
        }
        // Nothing of theirs to wait for.
        for id in settled {
            self.finish_id(id);
        }
        let log = match (&self.log, batch.is_empty()) {
            (Some(log), false) => log.clone(),
            _ => {
                // Persisted in memory, at once.
                if !members.is_empty() {
                    self.metrics
                        .batches_persisted
                        .fetch_add(1, Ordering::Relaxed);
                }
                for id in members {
                    self.finish_id(id);
                }
                return;
            }
        };
        // Messages that need not wait for this write go first, so followers write
        // in parallel with us. Then the loop waits for the write: nothing more
        // could be handed out until it is durable anyway, and waiting here saves two
        // thread hand-offs per write on the commit path.
        self.flush_outbox();
        let submitted_at = Instant::now();
        if let Err(error) = log.write(batch) {
            self.fail(format!("making a write batch durable: {error}"));
            return;
        }
        self.metrics.fsync_latency.observe(submitted_at.elapsed());
        self.metrics
            .batches_persisted
            .fetch_add(1, Ordering::Relaxed);
        for id in members {
            self.finish_id(id);
        }
    }

    fn finish_id(&mut self, id: GroupId) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        self.finish_group(&mut group);
        self.groups.insert(id, group);
        self.mark_dirty(id);
    }

    /// The rest of a group's Ready once its durable part is durable: steps 4 to 6.
    fn finish_group(&mut self, group: &mut Group) {
        let Some(held) = group.held.take() else {
            return;
        };
        queue_messages(&mut self.outbox, group.id, held.persisted_messages);
        if let Some(snapshot) = held.snapshot {
            self.install_snapshot(group, snapshot);
        }
        if !held.committed_entries.is_empty() {
            self.hand_out(group, held.committed_entries);
        }
        for read_state in held.read_states {
            let Ok(context) = <[u8; 8]>::try_from(&read_state.context[..]) else {
                continue;
            };
            if let Some(pending) = group.pending_reads.remove(&u64::from_be_bytes(context)) {
                let _ = group.apply.send(ApplyItem::Read {
                    index: read_state.index,
                    requests: pending.reads,
                });
            }
        }
        group.raw.advance();
        group
            .metrics
            .commit
            .store(group.raw.raft().log.committed(), Ordering::Relaxed);
    }

    fn install_snapshot(&mut self, group: &mut Group, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        match framing::decode_snapshot(&snapshot.data) {
            Ok((addresses, _)) => {
                for (&node, address) in &addresses {
                    learn_peer(
                        &mut self.peers,
                        &*self.transport,
                        self.node_id,
                        node,
                        address,
                    );
                }
                group.addresses.extend(addresses);
            }
            Err(reason) => {
                tracing::error!(node = self.node_id, group = group.id, index, %reason, "installed snapshot has unreadable addresses");
            }
        }
        group.conf_state = snapshot.metadata.conf_state.clone();
        // Proposals at or below the snapshot were replaced by it: their outcome is
        // unknown here.
        while group
            .waiters
            .front()
            .is_some_and(|waiter| waiter.index <= index)
        {
            let waiter = group.waiters.pop_front().expect("checked");
            let _ = waiter.reply.send(Err(ApiError::Unavailable(
                "a snapshot from the leader replaced the log; the proposal's outcome is unknown"
                    .into(),
            )));
        }
        group
            .metrics
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = self.node_id,
            group = group.id,
            term = group.raw.term(),
            index,
            bytes = snapshot.data.len(),
            voters = ?group.conf_state.voters,
            learners = ?group.conf_state.learners,
            "snapshot installed"
        );
        let _ = group.apply.send(ApplyItem::Restore(snapshot));
    }

    /// Hands committed entries to the apply task, applying membership changes and
    /// addresses here first, in log order, and matching proposals to their entries.
    fn hand_out(&mut self, group: &mut Group, entries: Vec<Entry>) {
        let now = Instant::now();
        let last_index = entries.last().map_or(0, |entry| entry.index);
        let mut ops = Vec::with_capacity(entries.len());
        for entry in entries {
            let is_command = entry.kind == EntryKind::Normal
                && entry.data.first() == Some(&framing::TAG_COMMAND);
            let reply = self.take_waiter(group, entry.index, entry.term, is_command, now);
            if !group.admin_waiters.is_empty() {
                settle_admin_waiters(group, entry.index, entry.term, entry.kind);
            }
            match entry.kind {
                EntryKind::Normal => match framing::decode_payload(&entry.data) {
                    Payload::Command(data) => ops.push(ApplyOp::Command {
                        index: entry.index,
                        term: entry.term,
                        data,
                        reply,
                    }),
                    Payload::Address { node, address } => {
                        learn_peer(
                            &mut self.peers,
                            &*self.transport,
                            self.node_id,
                            node,
                            &address,
                        );
                        group.addresses.insert(node, address.clone());
                        ops.push(ApplyOp::Address { node, address });
                    }
                    Payload::Noop | Payload::Unknown => {}
                },
                EntryKind::ConfChange => match ConfChange::decode(&entry.data) {
                    Ok(change) => match group.raw.apply_conf_change(&change) {
                        Ok(conf_state) => {
                            tracing::info!(
                                node = self.node_id,
                                group = group.id,
                                term = group.raw.term(),
                                index = entry.index,
                                change = ?change.changes,
                                voters = ?conf_state.voters,
                                learners = ?conf_state.learners,
                                joint = conf_state.is_joint(),
                                "membership changed"
                            );
                            // A node removed for good (ids are never reused) needs no
                            // link. Only removals prune: a node catching up through
                            // an old snapshot has not yet seen later members join.
                            let kept = conf_state.all_nodes();
                            if group
                                .conf_state
                                .all_nodes()
                                .iter()
                                .any(|node| !kept.contains(node))
                            {
                                self.prune_peers = true;
                            }
                            // A member whose link a prune dropped between its address
                            // entry and this change gets it back.
                            for node in &kept {
                                if !self.peers.contains_key(node) {
                                    if let Some(address) = group.addresses.get(node) {
                                        learn_peer(
                                            &mut self.peers,
                                            &*self.transport,
                                            self.node_id,
                                            *node,
                                            address,
                                        );
                                    }
                                }
                            }
                            group.conf_state = conf_state.clone();
                            ops.push(ApplyOp::Membership { conf_state });
                        }
                        Err(reason) => {
                            tracing::warn!(node = self.node_id, group = group.id, term = group.raw.term(), index = entry.index, %reason, "membership change ignored");
                        }
                    },
                    Err(error) => {
                        tracing::error!(node = self.node_id, group = group.id, index = entry.index, %error, "undecodable membership change entry ignored");
                    }
                },
            }
        }
        let _ = group.apply.send(ApplyItem::Entries { ops, last_index });
    }

    fn take_waiter(
        &self,
        group: &mut Group,
        index: Index,
        term: Term,
        is_command: bool,
        now: Instant,
    ) -> Option<ProposeReply> {
        while let Some(front) = group.waiters.front() {
            if front.index > index {
                return None;
            }
            let waiter = group.waiters.pop_front().expect("checked");
            if waiter.index == index && waiter.term == term && is_command {
                self.metrics
                    .commit_latency
                    .observe(now.duration_since(waiter.proposed_at));
                return Some(waiter.reply);
            }
            group
                .metrics
                .dropped_proposals
                .fetch_add(1, Ordering::Relaxed);
            let _ = waiter.reply.send(Err(ApiError::ProposalDropped));
        }
        None
    }

    /// A member says its server listens at `address` (a stream from it started): a
    /// node restarted at a new address. The link follows at once; each group this
    /// node leads records the address in its log, so every member (and every later
    /// snapshot) learns it.
    fn peer_address(&mut self, node: NodeId, address: String) {
        if node == self.node_id
            || address.is_empty()
            || address.len() > framing::ADDRESS_BYTES_MAX
            || framing::is_unspecified_address(&address)
        {
            return;
        }
        let member = |group: &Group| group.conf_state.all_nodes().contains(&node);
        if !self.groups.values().any(member) {
            return;
        }
        if self.peers.get(&node) != Some(&address) {
            tracing::info!(
                node = self.node_id,
                peer = node,
                old = self.peers.get(&node).map_or("", String::as_str),
                new = %address,
                "peer listens at a new address"
            );
            learn_peer(
                &mut self.peers,
                &*self.transport,
                self.node_id,
                node,
                &address,
            );
        }
        let mut proposed = Vec::new();
        for group in self.groups.values_mut() {
            if group.raw.role() == Role::Leader
                && member(group)
                && group.addresses.get(&node) != Some(&address)
                && group
                    .raw
                    .propose(framing::encode_address(node, &address))
                    .is_ok()
            {
                proposed.push(group.id);
            }
        }
        for id in proposed {
            self.mark_dirty(id);
        }
    }

    /// Stops talking to nodes that are members of no group hosted here (removed, or
    /// replaced): their streams would otherwise reconnect forever.
    fn prune_peers(&mut self) {
        let members: HashSet<NodeId> = self
            .groups
            .values()
            .flat_map(|group| group.conf_state.all_nodes())
            .collect();
        let node_id = self.node_id;
        let transport = &self.transport;
        self.peers.retain(|&node, address| {
            if members.contains(&node) {
                return true;
            }
            tracing::info!(node = node_id, peer = node, %address, "member of no hosted group: dropping its peer link");
            transport.remove_peer(node);
            false
        });
    }

    fn flush_outbox(&mut self) {
        for (to, messages) in self.outbox.drain() {
            self.metrics
                .messages_sent
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            self.transport.send(to, messages);
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(node = self.node_id, %reason, "storage failed; the node stops");
        self.fatal = Some(reason);
    }
}

fn fail_request(request: Request, error: ApiError) {
    match request {
        Request::Propose { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Read { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Admin { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::View { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Load { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Unload { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Shutdown => {}
    }
}

fn fail_group_requests(group: &mut Group, reason: &str) {
    let error = || ApiError::Unavailable(reason.to_string());
    for (_, reply) in group.proposals.drain(..) {
        let _ = reply.send(Err(error()));
    }
    for waiter in group.waiters.drain(..) {
        let _ = waiter.reply.send(Err(error()));
    }
    for waiter in group.admin_waiters.drain(..) {
        let _ = waiter.reply.send(Err(error()));
    }
    for read in group.reads.drain(..) {
        let _ = read.reply.send(Err(error()));
    }
    for (_, pending) in group.pending_reads.drain() {
        fail_reads(pending.reads, &error());
    }
    for pending in group.reads_to_retry.drain(..) {
        fail_reads(pending.reads, &error());
    }
}

fn fail_reads(reads: Vec<ReadRequest>, error: &ApiError) {
    for read in reads {
        let _ = read.reply.send(Err(error.clone()));
    }
}

/// Answers membership changes waiting on the entry at `index`.
fn settle_admin_waiters(group: &mut Group, index: Index, term: Term, kind: EntryKind) {
    group.admin_waiters.retain_mut(|waiter| {
        if waiter.index > index {
            return true;
        }
        let outcome =
            if waiter.index == index && waiter.term == term && kind == EntryKind::ConfChange {
                Ok(())
            } else {
                Err(ApiError::ProposalDropped)
            };
        // The reply is consumed once; replace it with a closed channel.
        let (closed, _) = oneshot::channel();
        let reply = std::mem::replace(&mut waiter.reply, closed);
        let _ = reply.send(outcome);
        false
    });
}

fn observe_soft_state(node_id: NodeId, group: &mut Group, role: Role, leader: NodeId) {
    if leader != group.leader {
        group.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
    }
    group.metrics.set_role(role);
    group.metrics.leader.store(leader, Ordering::Relaxed);
    group
        .metrics
        .term
        .store(group.raw.term(), Ordering::Relaxed);
    tracing::info!(
        node = node_id,
        group = group.id,
        term = group.raw.term(),
        ?role,
        leader,
        previous_role = ?group.role,
        "role changed"
    );
    group.role = role;
    group.leader = leader;
}

fn queue_messages(
    outbox: &mut HashMap<NodeId, Vec<GroupMessage>>,
    group: GroupId,
    messages: Vec<Message>,
) {
    for message in messages {
        outbox.entry(message.to).or_default().push((group, message));
    }
}

fn learn_peer(
    peers: &mut HashMap<NodeId, String>,
    transport: &dyn Transport,
    node_id: NodeId,
    node: NodeId,
    address: &str,
) {
    if node == node_id || address.is_empty() {
        return;
    }
    if peers.get(&node).map(String::as_str) != Some(address) {
        peers.insert(node, address.to_string());
        transport.set_peer(node, address.to_string());
    }
}

/// Fills in the leader's address of a `NotLeader` error.
fn with_address(error: ApiError, addresses: &Addresses) -> ApiError {
    match error {
        ApiError::NotLeader {
            leader: Some(leader),
            address: None,
        } => ApiError::NotLeader {
            leader: Some(leader),
            address: addresses.get(&leader).cloned(),
        },
        other => other,
    }
}

/// The members of a group with their addresses and roles.
pub(crate) fn members_of(
    conf_state: &ConfState,
    addresses: &Addresses,
) -> Vec<crate::service::Member> {
    let mut members: Vec<crate::service::Member> = Vec::new();
    let mut push = |id: NodeId, role: MemberRole| {
        if !members.iter().any(|member| member.id == id) {
            members.push(crate::service::Member {
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
