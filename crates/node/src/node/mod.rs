//! [`Node`]: starting a node, and [`NodeHandle`], the cheap handle everything goes
//! through — groups, proposals, reads, membership, status, shutdown.
//!
//! - `mod.rs`: [`Node`], [`NodeBuilder`] and starting a node.
//! - `loading.rs`: preparing a group's storage and state machine before the raft loop
//!   takes it (restart, bootstrap, join).
//! - `handle.rs`: [`NodeHandle`]'s own calls.
//! - `forward.rs`: a follower passing requests on to the leader.
//! - `api.rs`: the node as the gRPC service sees it ([`crate::service::RaftApi`]).
//! - `group_handle.rs`: [`GroupHandle`] and [`TypedGroup`], one group bound.

mod api;
mod forward;
mod group_handle;
mod handle;
mod loading;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use concord_client::RaftClient;
use concord_group::{
    ClientTableLimits, ExactlyOnce, StateMachine, StateMachineError, StateMachineFactory,
};
use concord_storage::Log;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use group_handle::{GroupHandle, TypedGroup};
pub use handle::NodeHandle;

use crate::config::{ConfigError, NodeConfig};
use crate::lock;
use crate::metrics::{serve_metrics, NodeMetrics};
use crate::raft_loop::{LoopStart, RaftLoop, Registry, Request, Subscribers};
use crate::service::{serve, RaftService};
use crate::storage::StorageBackend;
use crate::transport::grpc::{GrpcTransport, TransportServer};
use crate::transport::{inbox, Inbound, Transport, TransportMetrics};
use crate::GroupId;

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
    /// Another process (a running node) holds the data directory's lock.
    #[error("data directory {path} is in use by another process (its LOCK is held): stop that node or use another directory")]
    DataDirInUse {
        /// The data directory.
        path: String,
    },
    /// The data directory belongs to another cluster or node, or to a newer format.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The data directory.
        path: String,
        /// What differs, and what to do.
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

/// Faults a test can plant in a node's client service, to make a failure that a real
/// network produces by chance happen every time.
#[derive(Debug, Default)]
pub struct FaultHooks {
    /// The next this many proposals served over gRPC apply, but their answers are
    /// lost: the client gets `Unavailable` ("connection reset") instead.
    pub lose_replies: std::sync::atomic::AtomicU64,
    /// How long a lost answer is held before the client hears of it, in milliseconds.
    pub lost_reply_delay_ms: u64,
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

    /// A builder for a node with a non-default storage, transport or state machine
    /// wrapping.
    pub fn builder(config: NodeConfig, state_machines: impl StateMachineFactory) -> NodeBuilder {
        NodeBuilder {
            config,
            factory: Arc::new(state_machines),
            storage: None,
            transport: None,
            transport_metrics: None,
            serve: true,
            loop_on_runtime: false,
            exactly_once: true,
            fault_hooks: None,
            services: None,
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
    exactly_once: bool,
    fault_hooks: Option<Arc<FaultHooks>>,
    services: Option<MakeServices>,
}

/// Makes the further gRPC services a node serves beside its own, from its handle.
pub type MakeServices = Box<dyn FnOnce(&NodeHandle) -> tonic::service::Routes + Send>;

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

    /// Runs state machines as the factory makes them. By default a state machine
    /// that keeps no exactly-once table of its own is wrapped in
    /// [`ExactlyOnce`] (with the config's `exactly_once_*` limits), so clients' retries
    /// apply once; without the table, requests carrying a request id apply every
    /// time and registering a client fails.
    pub fn without_exactly_once(mut self) -> Self {
        self.exactly_once = false;
        self
    }

    /// Plants `hooks` in the node's client service (tests only).
    pub fn fault_hooks(mut self, hooks: Arc<FaultHooks>) -> Self {
        self.fault_hooks = Some(hooks);
        self
    }

    /// Serves the gRPC services `make` returns on the node's port too, beside the
    /// peer transport and the `Raft` client service (an application's own API, say).
    /// `make` runs once the node's handle exists, before the port accepts calls.
    pub fn services(
        mut self,
        make: impl FnOnce(&NodeHandle) -> tonic::service::Routes + Send + 'static,
    ) -> Self {
        self.services = Some(Box::new(make));
        self
    }

    /// Starts the node.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let config = self.config;
        config.validate()?;
        let node_id = config.node_id;
        let runtime = tokio::runtime::Handle::current();
        let metrics = Arc::new(NodeMetrics::new(node_id));
        let factory: Arc<dyn StateMachineFactory> = if self.exactly_once {
            Arc::new(ExactlyOnceFactory {
                inner: self.factory,
                limits: ClientTableLimits {
                    clients_max: config.exactly_once_clients_max,
                    unanswered_per_client_max: config.exactly_once_unanswered_max,
                },
            })
        } else {
            self.factory
        };
        let storage = match self.storage {
            Some(storage) => storage,
            None => {
                let path = config.data_dir.clone();
                let log_config = config.log_config();
                // Refused before the log is opened: recovery never touches a directory
                // of another cluster or node.
                crate::data_dir::verify_identity(&config.data_dir, &config.cluster_id, node_id)
                    .map_err(|message| NodeError::DataDir {
                        path: config.data_dir.display().to_string(),
                        message,
                    })?;
                let log = tokio::task::spawn_blocking(move || Log::open(&path, log_config))
                    .await
                    .map_err(|error| NodeError::Thread(error.to_string()))?
                    .map_err(|error| match error {
                        concord_storage::Error::Locked { .. } => NodeError::DataDirInUse {
                            path: config.data_dir.display().to_string(),
                        },
                        other => NodeError::Storage {
                            path: config.data_dir.display().to_string(),
                            message: other.to_string(),
                        },
                    })?;
                crate::data_dir::check_identity(&config.data_dir, &config.cluster_id, node_id)
                    .map_err(|message| NodeError::DataDir {
                        path: config.data_dir.display().to_string(),
                        message,
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
                if !concord_group::framing::is_unspecified_address(&address) {
                    transport.advertise(address.clone());
                }
                Arc::new(transport)
            }
        };
        // Unbounded: the transport reports one address per peer stream opened.
        let (peer_addresses, peer_addresses_receiver) = mpsc::unbounded_channel();

        // Every group in the log, restored from its latest snapshot.
        let groups = match &storage {
            StorageBackend::Durable(log) => {
                let log = log.clone();
                let factory = factory.clone();
                tokio::task::spawn_blocking(move || {
                    log.groups()
                        .into_iter()
                        .map(|group| {
                            loading::prepare_durable(
                                &log,
                                &*factory,
                                group,
                                loading::Origin::Existing,
                            )
                            .map_err(|error| NodeError::Group {
                                group,
                                message: error.to_string(),
                            })
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
        let subscribers: Arc<Subscribers> = Arc::new(Mutex::new(HashMap::new()));
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
            subscribers: subscribers.clone(),
            factory: factory.clone(),
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
                subscribers,
                storage: Mutex::new(Some(storage)),
                factory,
                metrics: metrics.clone(),
                clients: Mutex::new(HashMap::new()),
                shutdown,
                tasks: Mutex::new(Vec::new()),
                loop_stopped: tokio::sync::Mutex::new(Some(stopped)),
                fault_hooks: self.fault_hooks.unwrap_or_default(),
            }),
        };
        if let Some(listener) = listener {
            let server =
                TransportServer::new(node_id, transport_config, inbox_sender, transport_metrics)
                    .report_peer_addresses(peer_addresses);
            let api = RaftService::from_arc(Arc::new(handle.clone()))
                .request_bytes_max(config.request_bytes_max as usize)
                .propose_batch_max(config.propose_batch_max as usize);
            let extra = self.services.map(|make| make(&handle)).unwrap_or_default();
            let mut signal = shutdown_signal.clone();
            let task = runtime.spawn(async move {
                let stop = async move {
                    let _ = signal.wait_for(|stop| *stop).await;
                };
                if let Err(error) = serve(listener, server, api, extra, stop).await {
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

/// Wraps each state machine that keeps no exactly-once table in [`ExactlyOnce`].
struct ExactlyOnceFactory {
    inner: Arc<dyn StateMachineFactory>,
    limits: ClientTableLimits,
}

impl StateMachineFactory for ExactlyOnceFactory {
    fn create(
        &self,
        group: GroupId,
        spec: &concord_group::GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        let mut state_machine = self.inner.create(group, spec)?;
        // A durable state machine keeps its own table with its data (or none): one
        // kept here would live only in snapshots, which it does not restart from.
        if state_machine.client_table().is_some() || state_machine.durable_index().is_some() {
            return Ok(state_machine);
        }
        Ok(Box::new(ExactlyOnce::new(state_machine, self.limits)))
    }
}

struct NodeInner {
    config: NodeConfig,
    node_id: u64,
    address: String,
    local_address: Option<SocketAddr>,
    metrics_address: Option<SocketAddr>,
    requests: mpsc::Sender<Request>,
    registry: Arc<Registry>,
    subscribers: Arc<Subscribers>,
    storage: Mutex<Option<StorageBackend>>,
    factory: Arc<dyn StateMachineFactory>,
    metrics: Arc<NodeMetrics>,
    /// Clients of other nodes (forwarding, joining), by address.
    clients: Mutex<HashMap<String, RaftClient>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Answers with the apply tasks once the raft loop has stopped.
    loop_stopped: tokio::sync::Mutex<Option<oneshot::Receiver<Vec<JoinHandle<()>>>>>,
    fault_hooks: Arc<FaultHooks>,
}
