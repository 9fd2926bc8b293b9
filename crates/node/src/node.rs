//! [`Node`]: starting a node, and [`NodeHandle`], the cheap handle everything goes
//! through — groups, proposals, reads, membership, status, shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_raft::{
    ConfState, HardState, LogStore, MemStorage, NodeId, Role, Snapshot, SnapshotMetadata,
    Storage as _,
};
use concord_storage::{Log, WriteBatch};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{ApplyItem, ReadRequest};
use crate::client::{ClientConfig, RaftClient};
use crate::config::{ConfigError, NodeConfig};
use crate::framing::{self, Addresses};
use crate::metrics::{serve_metrics, NodeMetrics};
use crate::raft_loop::{
    members_of, AdminOp, LoadedGroup, LoopStart, RaftLoop, RaftView, Registry, Request,
};
use crate::service::{
    serve, ApiError, GroupStatus, JoinTicket, Member, MemberRole, ProposeResponse, RaftApi,
    RaftService, ReadMode,
};
use crate::state_machine::{LogEntry, StateMachineFactory, TypeTag, TypedStateMachine};
use crate::storage::{bootstrap_hard_state, bootstrap_snapshot, GroupStore, StorageBackend};
use crate::transport::grpc::{GrpcTransport, TransportServer};
use crate::transport::{inbox, Inbound, Transport, TransportMetrics};
use crate::{lock, GroupId};

/// The group the single-group conveniences ([`NodeHandle::bootstrap`],
/// [`NodeHandle::default_group`]) use.
pub const DEFAULT_GROUP: GroupId = 1;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory's log could not be opened.
    #[error("opening the log in {path}: {message}")]
    Storage {
        /// The data directory.
        path: String,
        /// Why.
        message: String,
    },
    /// An address could not be bound.
    #[error("binding {address}: {message}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        message: String,
    },
    /// A group in the log could not be loaded.
    #[error("loading group {group}: {message}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        message: String,
    },
    /// The raft loop's thread could not be started.
    #[error("starting the raft loop: {0}")]
    Thread(String),
}

/// Makes the transport of a node, given the sender of the node's inbox (where
/// messages from peers must be delivered).
pub type TransportMaker = Box<dyn FnOnce(mpsc::Sender<Inbound>) -> Arc<dyn Transport> + Send>;

/// Starts nodes.
pub struct Node;

impl Node {
    /// Starts a node from `config`: opens (and locks) the log in `config.data_dir`,
    /// reloads every group in it (each state machine restored from its latest
    /// snapshot, then re-applying the log after it), serves peers and clients on
    /// `config.listen_address`, and metrics on `config.metrics_address` if set.
    pub async fn start(
        config: NodeConfig,
        state_machines: impl StateMachineFactory,
    ) -> Result<NodeHandle, NodeError> {
        Node::builder(config, state_machines).start().await
    }

    /// A builder for a node with a non-default storage or transport.
    pub fn builder(config: NodeConfig, state_machines: impl StateMachineFactory) -> NodeBuilder {
        NodeBuilder {
            config,
            factory: Arc::new(state_machines),
            storage: None,
            transport: None,
            transport_metrics: None,
            serve: true,
            loop_on_runtime: false,
        }
    }
}

/// A node's options beyond its config.
pub struct NodeBuilder {
    config: NodeConfig,
    factory: Arc<dyn StateMachineFactory>,
    storage: Option<StorageBackend>,
    transport: Option<TransportMaker>,
    transport_metrics: Option<Arc<TransportMetrics>>,
    serve: bool,
    loop_on_runtime: bool,
}

impl NodeBuilder {
    /// Uses `storage` instead of opening the log in `config.data_dir`.
    pub fn storage(mut self, storage: StorageBackend) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Keeps everything in memory (nothing survives a restart).
    pub fn memory_storage(self) -> Self {
        self.storage(StorageBackend::Memory)
    }

    /// Sends raft messages through the transport `make` returns instead of gRPC.
    pub fn transport(mut self, make: TransportMaker) -> Self {
        self.transport = Some(make);
        self
    }

    /// Counters of a custom transport, to show on the metrics page.
    pub fn transport_metrics(mut self, metrics: Arc<TransportMetrics>) -> Self {
        self.transport_metrics = Some(metrics);
        self
    }

    /// Serves no gRPC at all (with a custom transport: an in-process node).
    pub fn without_server(mut self) -> Self {
        self.serve = false;
        self
    }

    /// Runs the raft loop as a task on the caller's tokio runtime instead of on a
    /// thread of its own. Saves a thread per node and the context switches between
    /// them when many nodes share a process (tests, benchmarks); but then a state
    /// machine or task that blocks a runtime worker can delay heartbeats.
    pub fn raft_loop_on_runtime(mut self) -> Self {
        self.loop_on_runtime = true;
        self
    }

    /// Starts the node.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let config = self.config;
        config.validate()?;
        let node_id = config.node_id;
        let runtime = tokio::runtime::Handle::current();
        let metrics = Arc::new(NodeMetrics::new(node_id));
        let storage = match self.storage {
            Some(storage) => storage,
            None => {
                let path = config.data_dir.clone();
                let log_config = config.log_config();
                let log = tokio::task::spawn_blocking(move || Log::open(&path, log_config))
                    .await
                    .map_err(|error| NodeError::Thread(error.to_string()))?
                    .map_err(|error| NodeError::Storage {
                        path: config.data_dir.display().to_string(),
                        message: error.to_string(),
                    })?;
                StorageBackend::Durable(log)
            }
        };
        let listener = if self.serve {
            let listener = TcpListener::bind(&config.listen_address)
                .await
                .map_err(|error| NodeError::Bind {
                    address: config.listen_address.clone(),
                    message: error.to_string(),
                })?;
            Some(listener)
        } else {
            None
        };
        let local_address = listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let address = if !config.advertise_address.is_empty() {
            config.advertise_address.clone()
        } else if let Some(local) = local_address {
            local.to_string()
        } else {
            config.listen_address.clone()
        };
        let metrics_listener = if config.metrics_address.is_empty() {
            None
        } else {
            Some(
                TcpListener::bind(&config.metrics_address)
                    .await
                    .map_err(|error| NodeError::Bind {
                        address: config.metrics_address.clone(),
                        message: error.to_string(),
                    })?,
            )
        };
        let metrics_address = metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());

        let transport_config = config.transport_config();
        let transport_metrics = self.transport_metrics.unwrap_or_default();
        metrics.add_transport(transport_metrics.clone());
        let (inbox_sender, inbox_receiver) = inbox(&transport_config);
        let transport: Arc<dyn Transport> = match self.transport {
            Some(make) => make(inbox_sender.clone()),
            None => {
                let transport = GrpcTransport::new(
                    node_id,
                    transport_config.clone(),
                    transport_metrics.clone(),
                );
                // An unspecified host (0.0.0.0, [::]) names no reachable place:
                // peers keep the address they were given.
                if !crate::framing::is_unspecified_address(&address) {
                    transport.advertise(address.clone());
                }
                Arc::new(transport)
            }
        };
        let (peer_addresses, peer_addresses_receiver) = mpsc::unbounded_channel();

        // Every group in the log, restored from its latest snapshot.
        let groups = match &storage {
            StorageBackend::Durable(log) => {
                let log = log.clone();
                let factory = self.factory.clone();
                tokio::task::spawn_blocking(move || {
                    log.groups()
                        .into_iter()
                        .map(|group| {
                            prepare_durable(&log, &*factory, group, Origin::Existing).map_err(
                                |error| NodeError::Group {
                                    group,
                                    message: error.to_string(),
                                },
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(|error| NodeError::Thread(error.to_string()))??
            }
            StorageBackend::Memory => Vec::new(),
        };

        let (requests, requests_receiver) = mpsc::channel(config.request_queue_max as usize);
        let registry: Arc<Registry> = Arc::new(Mutex::new(HashMap::new()));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64)
            ^ node_id.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let start = LoopStart {
            config: config.clone(),
            requests: requests_receiver,
            inbox: inbox_receiver,
            transport,
            log: match &storage {
                StorageBackend::Durable(log) => Some(log.clone()),
                StorageBackend::Memory => None,
            },
            metrics: metrics.clone(),
            registry: registry.clone(),
            factory: self.factory.clone(),
            runtime: runtime.clone(),
            groups,
            seed,
            peer_addresses: peer_addresses_receiver,
        };
        // Built here, so every group in the log is registered before `start` returns.
        let raft_loop = RaftLoop::new(start);
        let (stopped_sender, stopped) = oneshot::channel();
        if self.loop_on_runtime {
            runtime.spawn(async move {
                let _ = stopped_sender.send(raft_loop.run().await);
            });
        } else {
            std::thread::Builder::new()
                .name(format!("concord-raft-{node_id}"))
                .spawn(move || {
                    let loop_runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("building the raft loop's runtime");
                    let apply_tasks = loop_runtime.block_on(raft_loop.run());
                    // The loop waited for its writes and snapshot stores: nothing
                    // holds the log now.
                    drop(loop_runtime);
                    let _ = stopped_sender.send(apply_tasks);
                })
                .map_err(|error| NodeError::Thread(error.to_string()))?;
        }

        let (shutdown, shutdown_signal) = watch::channel(false);
        let handle = NodeHandle {
            inner: Arc::new(NodeInner {
                config: config.clone(),
                node_id,
                address,
                local_address,
                metrics_address,
                requests,
                registry,
                storage: Mutex::new(Some(storage)),
                factory: self.factory,
                metrics: metrics.clone(),
                clients: Mutex::new(HashMap::new()),
                shutdown,
                tasks: Mutex::new(Vec::new()),
                loop_stopped: tokio::sync::Mutex::new(Some(stopped)),
            }),
        };
        if let Some(listener) = listener {
            let server =
                TransportServer::new(node_id, transport_config, inbox_sender, transport_metrics)
                    .report_peer_addresses(peer_addresses);
            let api = RaftService::from_arc(Arc::new(handle.clone()))
                .request_bytes_max(config.request_bytes_max as usize)
                .propose_batch_max(config.propose_batch_max as usize);
            let mut signal = shutdown_signal.clone();
            let task = runtime.spawn(async move {
                let stop = async move {
                    let _ = signal.wait_for(|stop| *stop).await;
                };
                if let Err(error) = serve(listener, server, api, stop).await {
                    tracing::error!(node = node_id, %error, "gRPC server failed");
                }
            });
            lock(&handle.inner.tasks).push(task);
        }
        if let Some(listener) = metrics_listener {
            let task = runtime.spawn(serve_metrics(listener, metrics, shutdown_signal));
            lock(&handle.inner.tasks).push(task);
        }
        tracing::info!(node = node_id, address = %handle.address(), data_dir = %config.data_dir.display(), "node started");
        Ok(handle)
    }
}

struct NodeInner {
    config: NodeConfig,
    node_id: NodeId,
    address: String,
    local_address: Option<SocketAddr>,
    metrics_address: Option<SocketAddr>,
    requests: mpsc::Sender<Request>,
    registry: Arc<Registry>,
    storage: Mutex<Option<StorageBackend>>,
    factory: Arc<dyn StateMachineFactory>,
    metrics: Arc<NodeMetrics>,
    /// Clients of other nodes (forwarding, joining), by address.
    clients: Mutex<HashMap<String, RaftClient>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Answers with the apply tasks once the raft loop has stopped.
    loop_stopped: tokio::sync::Mutex<Option<oneshot::Receiver<Vec<JoinHandle<()>>>>>,
}

/// A running node. Cheap to clone; every clone drives the same node.
///
/// Methods that take a group act on that group; [`NodeHandle::group`] binds one, and
/// [`NodeHandle::default_group`] is the group of single-group programs. Calls fail with
/// [`ApiError`]s a caller can act on (`NotLeader` carries the leader's address).
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<NodeInner>,
}

/// Where a group being loaded comes from.
enum Origin {
    /// Already in the log (restart).
    Existing,
    /// A new group founded by `conf_state`'s voters.
    Bootstrap(ConfState, Addresses),
    /// A new, empty group this node was admitted to; its leader sends the rest.
    Empty(Addresses),
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{context}: {error}"))
}

/// Prepares a group in the durable log: writes it if new, then restores its state
/// machine from its latest snapshot. Blocking.
fn prepare_durable(
    log: &Log,
    factory: &dyn StateMachineFactory,
    group: GroupId,
    origin: Origin,
) -> Result<LoadedGroup, ApiError> {
    let exists = log.groups().contains(&group);
    let mut extra_addresses = Addresses::new();
    match origin {
        Origin::Existing => {}
        Origin::Bootstrap(conf_state, addresses) => {
            if exists {
                return Err(ApiError::InvalidRequest(format!(
                    "group {group} already exists on this node"
                )));
            }
            let mut batch = WriteBatch::new();
            let write = batch.group(group);
            write.snapshot = Some(bootstrap_snapshot(
                conf_state,
                framing::encode_snapshot(&addresses, None),
            ));
            write.hard_state = Some(bootstrap_hard_state());
            log.write(batch)
                .map_err(|error| internal("bootstrapping the group", error))?;
        }
        Origin::Empty(addresses) => {
            if exists {
                return Err(ApiError::InvalidRequest(format!(
                    "group {group} already exists on this node"
                )));
            }
            extra_addresses = addresses;
        }
    }
    let storage = log.group(group);
    let snapshot = storage
        .snapshot(0)
        .map_err(|error| internal("reading the snapshot", error))?;
    let restart_conf_state =
        (snapshot.metadata.index > 0).then(|| snapshot.metadata.conf_state.clone());
    restore(
        factory,
        group,
        GroupStore::durable(storage, restart_conf_state),
        snapshot,
        extra_addresses,
    )
}

/// Prepares a group in memory.
fn prepare_memory(
    factory: &dyn StateMachineFactory,
    group: GroupId,
    origin: Origin,
    existing: Option<MemStorage>,
) -> Result<LoadedGroup, ApiError> {
    let mut storage = existing.unwrap_or_default();
    let mut extra_addresses = Addresses::new();
    match origin {
        Origin::Existing => {}
        Origin::Bootstrap(conf_state, addresses) => {
            storage
                .apply_snapshot(bootstrap_snapshot(
                    conf_state,
                    framing::encode_snapshot(&addresses, None),
                ))
                .map_err(|error| internal("bootstrapping the group", error))?;
            storage
                .set_hard_state(bootstrap_hard_state())
                .map_err(|error| internal("bootstrapping the group", error))?;
        }
        Origin::Empty(addresses) => extra_addresses = addresses,
    }
    let snapshot = storage
        .snapshot(0)
        .map_err(|error| internal("reading the snapshot", error))?;
    restore(
        factory,
        group,
        GroupStore::memory(storage),
        snapshot,
        extra_addresses,
    )
}

fn restore(
    factory: &dyn StateMachineFactory,
    group: GroupId,
    store: GroupStore,
    snapshot: Snapshot,
    extra_addresses: Addresses,
) -> Result<LoadedGroup, ApiError> {
    let (mut addresses, state) = framing::decode_snapshot(&snapshot.data)
        .map_err(|reason| internal("reading the snapshot", reason))?;
    for (node, address) in extra_addresses {
        addresses.entry(node).or_insert(address);
    }
    let mut state_machine = factory.create(group);
    if let Some(state) = state {
        state_machine
            .restore(state)
            .map_err(|error| internal("restoring the state machine", error))?;
    }
    Ok(LoadedGroup {
        group,
        store,
        state_machine,
        applied: snapshot.metadata.index,
        conf_state: snapshot.metadata.conf_state,
        addresses,
    })
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
        GroupHandle {
            node: self.clone(),
            group,
        }
    }

    /// The handle of [`DEFAULT_GROUP`], for single-group programs.
    pub fn default_group(&self) -> GroupHandle {
        self.group(DEFAULT_GROUP)
    }

    /// A typed handle on `group`, whose state machine is a [`crate::Typed`]`<M>`.
    pub fn typed<M: TypedStateMachine>(&self, group: GroupId) -> TypedGroup<M> {
        TypedGroup {
            group: self.group(group),
            _type: TypeTag::new(),
        }
    }

    // ---------------------------------------------------------------------------------
    // Groups.

    /// Founds `group` with `members` (node id and address; this node must be one of
    /// them) as its voters. Every founding member bootstraps with the same list; an
    /// empty list founds a one-member group of this node.
    pub async fn bootstrap_group(
        &self,
        group: GroupId,
        members: &[(NodeId, String)],
    ) -> Result<(), ApiError> {
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
        let addresses: Addresses = members.into_iter().collect();
        self.load(group, Origin::Bootstrap(conf_state, addresses), None)
            .await?;
        tracing::info!(node = self.node_id(), group, "group bootstrapped");
        Ok(())
    }

    /// [`NodeHandle::bootstrap_group`] of [`DEFAULT_GROUP`].
    pub async fn bootstrap(&self, members: &[(NodeId, String)]) -> Result<(), ApiError> {
        self.bootstrap_group(DEFAULT_GROUP, members).await
    }

    /// Creates `group` empty: this node waits to be added by the group's leader (with
    /// `add_learner`), which then sends it a snapshot. `addresses` are members it may
    /// need to answer before the snapshot arrives (the leader at least).
    pub async fn create_group(
        &self,
        group: GroupId,
        addresses: &[(NodeId, String)],
    ) -> Result<(), ApiError> {
        let addresses: Addresses = addresses.iter().cloned().collect();
        self.load(group, Origin::Empty(addresses), None).await
    }

    async fn load(
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
            StorageBackend::Durable(log) => prepare_durable(log, &*factory, group, origin),
            StorageBackend::Memory => prepare_memory(&*factory, group, origin, memory),
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

    async fn unload(&self, group: GroupId) -> Result<crate::raft_loop::DetachedGroup, ApiError> {
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
            .send(ApplyItem::TakeSnapshot(reply))
            .map_err(|_| ApiError::Internal("the group's apply task stopped".into()))?;
        let taken = answer
            .await
            .map_err(|_| ApiError::Internal("the group's apply task stopped".into()))?;
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
            data: framing::encode_snapshot(&taken.addresses, Some(&taken.state)),
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
                memory
                    .set_hard_state(hard_state)
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
    pub async fn propose(
        &self,
        group: GroupId,
        command: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        match self.propose_here(group, &command).await {
            Err(ApiError::NotLeader {
                leader: Some(leader),
                address: Some(address),
            }) if self.inner.config.forward_proposals && leader != self.node_id() => {
                self.client(&address).await?.propose(group, command).await
            }
            other => other,
        }
    }

    async fn propose_here(
        &self,
        group: GroupId,
        command: &[u8],
    ) -> Result<ProposeResponse, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Propose {
            group,
            data: framing::encode_command(command),
            reply,
        })
        .await?;
        // The raft loop answers `Timeout` itself after `proposal_timeout_ms` (a timer
        // per proposal here would cost more than the rest of the proposal's path).
        self.answer_eventually(answer).await
    }

    /// A linearizable read: confirmed through ReadIndex (at the leader, from any
    /// member) and served once this node's state machine has applied the read index.
    pub async fn read(&self, group: GroupId, query: Bytes) -> Result<Bytes, ApiError> {
        match self.read_here(group, query.clone()).await {
            Err(ApiError::NotLeader {
                leader: Some(leader),
                address: Some(address),
            }) if self.inner.config.forward_proposals && leader != self.node_id() => {
                self.client(&address)
                    .await?
                    .read(group, query, ReadMode::Linearizable)
                    .await
            }
            other => other,
        }
    }

    async fn read_here(&self, group: GroupId, query: Bytes) -> Result<Bytes, ApiError> {
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
    pub async fn read_stale(&self, group: GroupId, query: Bytes) -> Result<Bytes, ApiError> {
        let apply = lock(&self.inner.registry)
            .get(&group)
            .map(|entry| entry.apply.clone())
            .ok_or(ApiError::GroupNotFound { group })?;
        let (reply, answer) = oneshot::channel();
        apply
            .send(ApplyItem::Read {
                index: 0,
                requests: vec![ReadRequest { query, reply }],
            })
            .map_err(|_| ApiError::Unavailable("the group stopped".into()))?;
        let timeout = Duration::from_millis(self.inner.config.read_timeout_ms);
        self.answer(answer, timeout).await
    }

    // ---------------------------------------------------------------------------------
    // Status and membership.

    async fn view(&self, group: GroupId) -> Result<RaftView, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::View { group, reply }).await?;
        self.answer(answer, self.admin_timeout()).await
    }

    /// This node's view of `group`: role, term, leader, commit and applied index,
    /// members with their addresses.
    pub async fn status(&self, group: GroupId) -> Result<GroupStatus, ApiError> {
        let view = self.view(group).await?;
        let applied = lock(&self.inner.registry)
            .get(&group)
            .map_or(0, |entry| NodeMetrics::read(&entry.metrics.applied));
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
    /// lead.
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

    /// A membership change here, or at the leader (forwarded) when allowed.
    async fn admin(&self, group: GroupId, op: AdminOp) -> Result<(), ApiError> {
        match self.admin_here(group, op.clone()).await {
            Err(ApiError::NotLeader {
                leader: Some(leader),
                address: Some(address),
            }) if self.inner.config.forward_proposals && leader != self.node_id() => {
                let client = self.client(&address).await?;
                match op {
                    AdminOp::AddLearner { node, address } => {
                        client.add_learner(group, node, address).await
                    }
                    AdminOp::Promote { node } => client.promote(group, node).await,
                    AdminOp::Remove { node } => client.remove(group, node).await,
                    AdminOp::TransferLeader { target } => {
                        client.transfer_leader(group, target).await
                    }
                    AdminOp::Campaign => Ok(()),
                }
            }
            other => other,
        }
    }

    /// A membership change on this node, retried while the group is busy with another
    /// (one change at a time) until `admin_timeout_ms`.
    async fn admin_here(&self, group: GroupId, op: AdminOp) -> Result<(), ApiError> {
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
                "the request was abandoned (node stopping, or leadership lost); retry".into(),
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
            Err(ApiError::Unavailable(
                "the request was abandoned (node stopping or group unloaded); retry".into(),
            ))
        })
    }

    fn admin_timeout(&self) -> Duration {
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

    /// A client of the node at `address` (cached).
    async fn client(&self, address: &str) -> Result<RaftClient, ApiError> {
        if let Some(client) = lock(&self.inner.clients).get(address) {
            return Ok(client.clone());
        }
        let config = &self.inner.config;
        let client = RaftClient::connect_with(
            address,
            ClientConfig {
                connect_timeout_ms: config.connect_timeout_ms,
                request_timeout_ms: config.proposal_timeout_ms.max(config.admin_timeout_ms),
                ..ClientConfig::default()
            },
        )
        .await?;
        lock(&self.inner.clients).insert(address.to_string(), client.clone());
        Ok(client)
    }
}

async fn within<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .unwrap_or(Err(ApiError::Timeout))
}

/// The node as the gRPC client service sees it. Requests arriving here are never
/// forwarded (the remote client follows `NotLeader` itself), so a request cannot
/// bounce between nodes.
impl RaftApi for NodeHandle {
    async fn propose(&self, group: u64, data: Bytes) -> Result<ProposeResponse, ApiError> {
        self.propose_here(group, &data).await
    }

    async fn read(&self, group: u64, query: Bytes, mode: ReadMode) -> Result<Bytes, ApiError> {
        match mode {
            ReadMode::Linearizable => self.read_here(group, query).await,
            ReadMode::Stale => self.read_stale(group, query).await,
        }
    }

    async fn status(&self, group: u64) -> Result<GroupStatus, ApiError> {
        NodeHandle::status(self, group).await
    }

    async fn request_join(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> Result<JoinTicket, ApiError> {
        self.admin_here(
            group,
            AdminOp::AddLearner {
                node: node_id,
                address: address.clone(),
            },
        )
        .await?;
        let status = NodeHandle::status(self, group).await?;
        let mut members = status.members;
        if let Some(member) = members.iter_mut().find(|member| member.id == node_id) {
            member.address = address;
        }
        Ok(JoinTicket {
            group,
            node_id,
            members,
            leader: Some(Member {
                id: self.node_id(),
                address: self.address().to_string(),
                role: MemberRole::Voter,
            }),
        })
    }

    async fn leave(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Remove { node: node_id })
            .await
    }

    async fn add_learner(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> Result<(), ApiError> {
        self.admin_here(
            group,
            AdminOp::AddLearner {
                node: node_id,
                address,
            },
        )
        .await
    }

    async fn promote(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Promote { node: node_id })
            .await
    }

    async fn remove(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Remove { node: node_id })
            .await
    }

    async fn transfer_leader(&self, group: u64, target: NodeId) -> Result<(), ApiError> {
        // Returns once this node sees `target` lead (never forwarded).
        NodeHandle::transfer_leader(self, group, target).await
    }
}

/// A [`NodeHandle`] bound to one group: the same calls without the group argument.
#[derive(Clone)]
pub struct GroupHandle {
    node: NodeHandle,
    group: GroupId,
}

impl GroupHandle {
    /// The group.
    pub fn id(&self) -> GroupId {
        self.group
    }

    /// The node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// See [`NodeHandle::propose`].
    pub async fn propose(&self, command: Bytes) -> Result<ProposeResponse, ApiError> {
        self.node.propose(self.group, command).await
    }

    /// See [`NodeHandle::read`].
    pub async fn read(&self, query: Bytes) -> Result<Bytes, ApiError> {
        self.node.read(self.group, query).await
    }

    /// See [`NodeHandle::read_stale`].
    pub async fn read_stale(&self, query: Bytes) -> Result<Bytes, ApiError> {
        self.node.read_stale(self.group, query).await
    }

    /// See [`NodeHandle::status`].
    pub async fn status(&self) -> Result<GroupStatus, ApiError> {
        self.node.status(self.group).await
    }

    /// See [`NodeHandle::members`].
    pub async fn members(&self) -> Result<Vec<Member>, ApiError> {
        self.node.members(self.group).await
    }

    /// See [`NodeHandle::request_join`].
    pub async fn request_join(&self, peer_address: &str) -> Result<JoinTicket, ApiError> {
        self.node.request_join(peer_address, self.group).await
    }

    /// See [`NodeHandle::leave`].
    pub async fn leave(&self) -> Result<(), ApiError> {
        self.node.leave(self.group).await
    }

    /// See [`NodeHandle::add_learner`].
    pub async fn add_learner(&self, node: NodeId, address: &str) -> Result<(), ApiError> {
        self.node.add_learner(self.group, node, address).await
    }

    /// See [`NodeHandle::promote`].
    pub async fn promote(&self, node: NodeId) -> Result<(), ApiError> {
        self.node.promote(self.group, node).await
    }

    /// See [`NodeHandle::remove`].
    pub async fn remove(&self, node: NodeId) -> Result<(), ApiError> {
        self.node.remove(self.group, node).await
    }

    /// See [`NodeHandle::transfer_leader`].
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ApiError> {
        self.node.transfer_leader(self.group, target).await
    }

    /// See [`NodeHandle::campaign`].
    pub async fn campaign(&self) -> Result<(), ApiError> {
        self.node.campaign(self.group).await
    }

    /// See [`NodeHandle::force_new_cluster`].
    pub async fn force_new_cluster(&self) -> Result<(), ApiError> {
        self.node.force_new_cluster(self.group).await
    }
}

/// A typed handle on a group run by a [`crate::Typed`]`<M>`: commands, queries and
/// responses are `M`'s types, never bytes.
pub struct TypedGroup<M> {
    group: GroupHandle,
    _type: TypeTag<M>,
}

impl<M> Clone for TypedGroup<M> {
    fn clone(&self) -> Self {
        TypedGroup {
            group: self.group.clone(),
            _type: self._type.clone(),
        }
    }
}

fn undecodable(error: crate::state_machine::DecodeError) -> ApiError {
    ApiError::Internal(format!("undecodable response: {error}"))
}

impl<M: TypedStateMachine> TypedGroup<M> {
    /// The untyped handle.
    pub fn untyped(&self) -> &GroupHandle {
        &self.group
    }

    /// Proposes `command`; returns the state machine's response once applied.
    pub async fn propose(&self, command: &M::Command) -> Result<M::Response, ApiError> {
        let applied = self.group.propose(command.encode()).await?;
        M::Response::decode(&applied.response).map_err(undecodable)
    }

    /// A linearizable read.
    pub async fn read(&self, query: &M::Query) -> Result<M::QueryResponse, ApiError> {
        let answer = self.group.read(query.encode()).await?;
        M::QueryResponse::decode(&answer).map_err(undecodable)
    }

    /// A read from this node's state machine as it is now (possibly stale).
    pub async fn read_stale(&self, query: &M::Query) -> Result<M::QueryResponse, ApiError> {
        let answer = self.group.read_stale(query.encode()).await?;
        M::QueryResponse::decode(&answer).map_err(undecodable)
    }
}
