//! The raft loop: one per node, on its own thread, owning every group's
//! [`GroupDriver`] (concord-group, the same driver the simulator runs).
//!
//! A turn: wait for an input (a request, a peer message, a tick, a stored snapshot,
//! something from an apply task), drain every other input already queued (up to
//! `turn_inputs_max` of each), then take the Ready of every group touched, send what
//! may leave at once, and write every durable part as one `WriteBatch`, waiting for
//! it on this thread. Once the batch is durable each group finishes its Ready:
//! responses leave, committed entries, snapshots and confirmed reads go to the
//! group's apply task, callers whose requests failed hear so. Outgoing messages are
//! collected per peer and sent once per turn.
//!
//! The loop does only IO and scheduling; every rule about a group's Ready lives in
//! the driver. The loop runs on a thread of its own (a current-thread tokio runtime)
//! so nothing else in the process — state machines, gRPC handlers, user tasks — can
//! delay heartbeats and elections.
//!
//! - `inputs.rs`: requests, peer messages, ticks, what apply tasks report.
//! - `ready.rs`: taking, writing and finishing the Readies of a turn.
//! - `groups.rs`: loading and unloading groups, and the transport's peer list.

mod groups;
mod inputs;
mod ready;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_group::{Addresses, AdminOp, GroupDriver, GroupEvent, GroupSpec, StateMachine};
use concord_raft::{ConfState, HardState, Index, NodeId, Status, Term};
use concord_storage::Log;
use concord_types::sync::lock;
use concord_types::ApiError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::apply::{
    AdminReply, ApplyEvent, ApplyWork, NodeCallers, ProposeReply, ReadReply, SharedHealth,
};
use crate::config::NodeConfig;
use crate::metrics::{GroupMetrics, NodeMetrics};
use crate::storage::GroupStore;
use crate::transport::{GroupMessage, Inbound, Transport};
use crate::GroupId;

/// Most distinct unknown groups the loop remembers having warned about (one warning
/// each; then only the metric counts).
const UNKNOWN_GROUP_WARNINGS_MAX: usize = 1024;
/// Most Ready rounds `drain_group` runs to hand out every committed entry.
const DRAIN_ROUNDS_MAX: usize = 10_000;
/// Most rounds of Readies in one turn: finishing a Ready can make another ready at
/// once (a lone voter commits when its own write is durable).
const READY_ROUNDS_MAX: usize = 4;

/// A group ready to be run by the loop: its storage, and its state machine restored to
/// `applied`.
pub(crate) struct LoadedGroup {
    pub group: GroupId,
    pub spec: GroupSpec,
    pub store: GroupStore,
    pub state_machine: Box<dyn StateMachine>,
    pub applied: Index,
    pub applied_term: Term,
    pub conf_state: ConfState,
    pub addresses: Addresses,
}

/// A group taken out of the loop (force_new_cluster): everything committed was handed
/// to its apply task.
pub(crate) struct DetachedGroup {
    pub store: GroupStore,
    pub apply: mpsc::UnboundedSender<ApplyWork>,
    pub apply_task: Option<JoinHandle<()>>,
    pub hard_state: HardState,
}

/// One node's view of a group, for status and the admin paths.
pub(crate) struct RaftView {
    pub status: Status,
    pub addresses: Addresses,
}

/// What the loop is asked to do.
pub(crate) enum Request {
    /// Propose `data`, an entry framed by `concord_group::framing`.
    Propose {
        group: GroupId,
        data: Bytes,
        reply: ProposeReply,
    },
    Read {
        group: GroupId,
        query: Bytes,
        reply: ReadReply,
    },
    Admin {
        group: GroupId,
        op: AdminOp,
        reply: AdminReply,
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

/// What the handle may reach without the loop: a group's apply task (stale reads),
/// metrics, health and event subscribers.
pub(crate) struct GroupEntry {
    pub apply: mpsc::UnboundedSender<ApplyWork>,
    pub metrics: Arc<GroupMetrics>,
    pub health: SharedHealth,
}

/// The groups the node hosts, shared with the handle.
pub(crate) type Registry = Mutex<HashMap<GroupId, GroupEntry>>;

/// Every group's local event channel. A group keeps its channel for the node's life,
/// across snapshot installs and reloads, so subscribers need not subscribe again.
pub(crate) type Subscribers = Mutex<HashMap<GroupId, broadcast::Sender<GroupEvent>>>;

/// One hosted group.
pub(super) struct Group {
    pub(super) id: GroupId,
    pub(super) driver: GroupDriver<GroupStore, NodeCallers>,
    /// Unbounded: it carries committed entries, snapshots and confirmed reads, which
    /// the core bounds (`uncommitted_bytes_max` of log ahead of the commit index,
    /// `apply_batch_bytes_max` per Ready); a state machine slower than the log grows
    /// it, as it would grow the log.
    pub(super) apply: mpsc::UnboundedSender<ApplyWork>,
    pub(super) apply_task: Option<JoinHandle<()>>,
    pub(super) metrics: Arc<GroupMetrics>,
    /// Queued in the loop's dirty list.
    pub(super) dirty: bool,
    /// Why the group's state machine stopped, once it did: requests are refused.
    pub(super) stopped: Option<String>,
}

impl Group {
    /// Puts the group, once, in the loop's list of groups to take a Ready from.
    pub(super) fn touch(&mut self, dirty: &mut Vec<GroupId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(self.id);
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
        durable_index: Option<Index>,
        result: Result<(), String>,
    },
    Tick,
}

/// A snapshot written to the log by a blocking task, reported back.
type Stored = (GroupId, Index, Option<Index>, Result<(), String>);

/// Everything the loop starts with.
pub(crate) struct LoopStart {
    pub config: NodeConfig,
    pub requests: mpsc::Receiver<Request>,
    pub inbox: mpsc::Receiver<Inbound>,
    pub transport: Arc<dyn Transport>,
    pub log: Option<Log>,
    pub metrics: Arc<NodeMetrics>,
    pub registry: Arc<Registry>,
    pub subscribers: Arc<Subscribers>,
    pub factory: Arc<dyn concord_group::StateMachineFactory>,
    pub runtime: tokio::runtime::Handle,
    pub groups: Vec<LoadedGroup>,
    pub seed: u64,
    /// Addresses peers say their servers listen at (from the transport). Unbounded:
    /// one per peer stream opened.
    pub peer_addresses: mpsc::UnboundedReceiver<(NodeId, String)>,
}

pub(crate) struct RaftLoop {
    node_id: NodeId,
    config: NodeConfig,
    groups: HashMap<GroupId, Group>,
    requests: mpsc::Receiver<Request>,
    inbox: mpsc::Receiver<Inbound>,
    apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
    /// Unbounded: apply tasks report at most a snapshot, a stop and one list of
    /// commands per item the loop handed them.
    apply_events_sender: mpsc::UnboundedSender<ApplyEvent>,
    stored: mpsc::UnboundedReceiver<Stored>,
    /// Unbounded: one report per snapshot store the loop started.
    stored_sender: mpsc::UnboundedSender<Stored>,
    peer_addresses: mpsc::UnboundedReceiver<(NodeId, String)>,
    transport: Arc<dyn Transport>,
    log: Option<Log>,
    metrics: Arc<NodeMetrics>,
    registry: Arc<Registry>,
    subscribers: Arc<Subscribers>,
    factory: Arc<dyn concord_group::StateMachineFactory>,
    runtime: tokio::runtime::Handle,
    outbox: HashMap<NodeId, Vec<GroupMessage>>,
    /// Addresses handed to the transport.
    peers: HashMap<NodeId, String>,
    dirty: Vec<GroupId>,
    seed: u64,
    /// Snapshots being written by blocking tasks; shutdown waits for them (they hold
    /// the log).
    storing_snapshots: usize,
    /// When the current turn began: the proposal time of the requests it takes (one
    /// clock read per turn, not per proposal).
    turn_started: Instant,
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
        // Unbounded, bounded by their senders: an apply task sends one event per
        // snapshot it takes (one at a time, each only after `snapshot_interval_*` more
        // entries), one per leader notice whose commands it proposes, and one when its
        // group stops; a store task sends one completion per snapshot stored.
        let (apply_events_sender, apply_events) = mpsc::unbounded_channel();
        let (stored_sender, stored) = mpsc::unbounded_channel();
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
            peer_addresses: start.peer_addresses,
            transport: start.transport,
            log: start.log,
            metrics: start.metrics,
            registry: start.registry,
            subscribers: start.subscribers,
            factory: start.factory,
            runtime: start.runtime,
            outbox: HashMap::new(),
            peers: HashMap::new(),
            dirty: Vec::new(),
            seed: start.seed,
            storing_snapshots: 0,
            turn_started: Instant::now(),
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
                    Some((group, index, durable_index, result)) => {
                        Event::SnapshotStored { group, index, durable_index, result }
                    }
                    None => continue,
                },
                request = self.requests.recv(), if !self.shutting_down => Event::Request(request),
                Some((node, address)) = self.peer_addresses.recv() => Event::PeerAddress(node, address),
                inbound = self.inbox.recv(), if self.inbox_open => Event::Inbound(inbound),
                event = self.apply_events.recv() => Event::Apply(event),
                _ = ticker.tick() => Event::Tick,
            };
            self.metrics.turns.fetch_add(1, Ordering::Relaxed);
            self.turn_started = Instant::now();
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
                    durable_index,
                    result,
                } => self.snapshot_stored(group, index, durable_index, result),
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
            for _ in 0..READY_ROUNDS_MAX {
                if self.dirty.is_empty() || self.fatal.is_some() {
                    break;
                }
                self.run_ready();
            }
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
                self.fail_group(&mut group, &reason);
                apply_tasks.extend(group.apply_task.take());
            }
        }
        lock(&self.registry).clear();
        apply_tasks
    }

    fn mark_dirty(&mut self, id: GroupId) {
        if let Some(group) = self.groups.get_mut(&id) {
            group.touch(&mut self.dirty);
        }
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
            let _ = reply.reply.send(Err(error));
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
