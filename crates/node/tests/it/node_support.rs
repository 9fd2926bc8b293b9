//! Shared pieces of the node tests: a key-value state machine, in-process clusters
//! over the memory transport (optionally fault-injecting) or over gRPC on loopback,
//! and bounded waits for leaders, writes and catch-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_node::transport::faults::{Faults, FaultyTransport};
use concord_node::transport::memory::MemoryNetwork;
use concord_node::transport::{Transport, TransportMetrics};
use concord_node::{
    ApiError, ApplyContext, GroupId, GroupSpec, Node, NodeConfig, NodeHandle, StateMachine,
    StateMachineError, StateMachineFactory,
};
use concord_raft::{Index, NodeId, Role};
use tempfile::TempDir;
use tokio::time::Instant;

/// The longest a whole node test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// A replicated map from keys to values. A command is `key \0 value` and answers the
/// previous value; a query is a key and answers its value (empty if none).
#[derive(Default)]
pub struct KvStore {
    map: BTreeMap<Bytes, Bytes>,
    /// The index of the last command applied, to check log order.
    last_index: Index,
}

impl StateMachine for KvStore {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let index = context.index();
        assert!(
            index > self.last_index,
            "applied {index} after {}",
            self.last_index
        );
        self.last_index = index;
        let Some(split) = command.iter().position(|&byte| byte == 0) else {
            return Ok(Bytes::from_static(b"malformed"));
        };
        let key = command.slice(..split);
        let value = command.slice(split + 1..);
        Ok(self.map.insert(key, value).unwrap_or_default())
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(self.map.get(&query).cloned().unwrap_or_default())
    }

    fn snapshot(&self, sink: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        let mut data = BytesMut::new();
        data.put_u64(self.last_index);
        for (key, value) in &self.map {
            data.put_u32(key.len() as u32);
            data.put_slice(key);
            data.put_u32(value.len() as u32);
            data.put_slice(value);
        }
        Ok(sink.write_all(&data)?)
    }

    fn restore(&mut self, source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        let mut data = Vec::new();
        source.read_to_end(&mut data)?;
        let mut snapshot = Bytes::from(data);
        let bad = || StateMachineError("malformed snapshot".into());
        if snapshot.remaining() < 8 {
            return Err(bad());
        }
        self.last_index = snapshot.get_u64();
        self.map.clear();
        while snapshot.has_remaining() {
            let take = |snapshot: &mut Bytes| {
                if snapshot.remaining() < 4 {
                    return Err(bad());
                }
                let length = snapshot.get_u32() as usize;
                if snapshot.remaining() < length {
                    return Err(bad());
                }
                Ok(snapshot.split_to(length))
            };
            let key = take(&mut snapshot)?;
            let value = take(&mut snapshot)?;
            self.map.insert(key, value);
        }
        Ok(())
    }
}

/// A state machine factory making [`KvStore`]s.
pub fn kv_factory() -> impl Fn(GroupId) -> KvStore + Send + Sync + 'static {
    |_| KvStore::default()
}

/// The command that sets `key` to `value`.
pub fn set(key: &str, value: &str) -> Bytes {
    Bytes::from(format!("{key}\0{value}"))
}

/// A configuration with fast timers for tests: 20 ms ticks, elections after 200-400 ms.
pub fn test_config(node_id: NodeId, data_dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        tick_interval_ms: 20,
        election_timeout_ticks: 10,
        heartbeat_interval_ticks: 2,
        proposal_timeout_ms: 3_000,
        read_timeout_ms: 3_000,
        admin_timeout_ms: 15_000,
        listen_address: "127.0.0.1:0".into(),
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 200,
        ..NodeConfig::new(node_id, data_dir)
    }
}

/// How the nodes of a [`TestCluster`] talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// The in-process memory transport (optionally through faults), no gRPC server.
    Memory,
    /// Real gRPC on loopback, with the client service.
    Grpc,
}

/// Nodes in one process, each with its own data directory.
pub struct TestCluster {
    pub network: Network,
    pub memory: MemoryNetwork,
    pub faults: Option<Faults>,
    pub memory_storage: bool,
    pub dirs: HashMap<NodeId, TempDir>,
    pub nodes: BTreeMap<NodeId, NodeHandle>,
    /// Where each node listened last (restarts reuse it).
    pub addresses: HashMap<NodeId, String>,
    /// Each node's transport counters (gRPC network), from its last start.
    pub transport_metrics: HashMap<NodeId, Arc<TransportMetrics>>,
    /// Changes every node's config before it starts.
    pub tweak: Arc<dyn Fn(&mut NodeConfig) + Send + Sync>,
    /// Makes each node's state machine factory, by node id ([`KvStore`]s unless set).
    pub factory: Arc<dyn Fn(NodeId) -> SharedFactory + Send + Sync>,
    /// What `start_group` founds groups as.
    pub spec: GroupSpec,
}

/// A state machine factory several nodes (or lives of one node) can share.
#[derive(Clone)]
pub struct SharedFactory(pub Arc<dyn StateMachineFactory>);

impl StateMachineFactory for SharedFactory {
    fn create(
        &self,
        group: GroupId,
        spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        self.0.create(group, spec)
    }
}

impl TestCluster {
    /// An empty cluster.
    pub fn new(network: Network) -> Self {
        TestCluster {
            network,
            memory: MemoryNetwork::new(),
            faults: None,
            memory_storage: false,
            dirs: HashMap::new(),
            nodes: BTreeMap::new(),
            addresses: HashMap::new(),
            transport_metrics: HashMap::new(),
            tweak: Arc::new(|_| {}),
            factory: Arc::new(|_| SharedFactory(Arc::new(kv_factory()))),
            spec: GroupSpec::default(),
        }
    }

    /// The address node `id` is known by.
    pub fn address(&self, id: NodeId) -> String {
        match self.network {
            Network::Memory => format!("memory-{id}"),
            Network::Grpc => self.addresses[&id].clone(),
        }
    }

    /// Starts (or restarts, from its data directory) node `id`.
    pub async fn start(&mut self, id: NodeId) -> NodeHandle {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().expect("temp dir"));
        let mut config = test_config(id, dir.path());
        match self.network {
            Network::Memory => config.listen_address = format!("memory-{id}"),
            Network::Grpc => {
                if let Some(address) = self.addresses.get(&id) {
                    config.listen_address = address.clone();
                }
            }
        }
        (self.tweak)(&mut config);
        let transport_metrics = Arc::new(TransportMetrics::default());
        self.transport_metrics.insert(id, transport_metrics.clone());
        let mut builder =
            Node::builder(config, (self.factory)(id)).transport_metrics(transport_metrics);
        if self.memory_storage {
            builder = builder.memory_storage();
        }
        if self.network == Network::Memory {
            let memory = self.memory.clone();
            let faults = self.faults.clone();
            builder =
                builder
                    .without_server()
                    .transport(Box::new(move |inbox| -> Arc<dyn Transport> {
                        let transport = memory.register(id, inbox);
                        match faults {
                            Some(faults) => Arc::new(FaultyTransport::new(id, transport, faults)),
                            None => Arc::new(transport),
                        }
                    }));
        }
        let node = builder.start().await.expect("node starts");
        if let Some(address) = node.local_address() {
            self.addresses.insert(id, address.to_string());
        }
        self.nodes.insert(id, node.clone());
        node
    }

    /// Starts nodes `ids` and bootstraps `group` on each with all of them as voters.
    pub async fn start_group(&mut self, ids: &[NodeId], groups: &[GroupId]) {
        for &id in ids {
            if !self.nodes.contains_key(&id) {
                self.start(id).await;
            }
        }
        let members: Vec<(NodeId, String)> = ids.iter().map(|&id| (id, self.address(id))).collect();
        for &group in groups {
            for &id in ids {
                self.nodes[&id]
                    .bootstrap_group(group, self.spec.clone(), &members)
                    .await
                    .expect("bootstrap");
            }
        }
    }

    /// Stops node `id` (gracefully; its data directory stays).
    pub async fn stop(&mut self, id: NodeId) {
        if self.network == Network::Memory {
            self.memory.unregister(id);
        }
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// Stops node `id` and deletes its data.
    pub async fn destroy(&mut self, id: NodeId) {
        self.stop(id).await;
        self.dirs.remove(&id);
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle {
        &self.nodes[&id]
    }

    /// Waits until a running node leads `group` (and says so), within `bound`.
    pub async fn leader(&self, group: GroupId, bound: Duration) -> NodeId {
        let deadline = Instant::now() + bound;
        loop {
            let mut best: Option<(u64, NodeId)> = None;
            for (&id, node) in &self.nodes {
                if let Ok(status) = node.status(group).await {
                    if status.role == Role::Leader
                        && best.is_none_or(|(term, _)| status.term > term)
                    {
                        best = Some((status.term, id));
                    }
                }
            }
            if let Some((_, id)) = best {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "no leader of group {group} within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes `key = value` through whichever node leads, retrying refusals until
    /// `bound`. Returns the index it applied at.
    pub async fn put(&self, group: GroupId, key: &str, value: &str, bound: Duration) -> Index {
        let deadline = Instant::now() + bound;
        loop {
            let leader = self
                .leader(group, deadline.saturating_duration_since(Instant::now()))
                .await;
            match self.nodes[&leader].propose(group, set(key, value)).await {
                Ok(response) => return response.index,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "write {key} not acknowledged within {bound:?}: {error}"
                    );
                    assert!(
                        matches!(
                            error,
                            ApiError::NotLeader { .. }
                                | ApiError::ProposalDropped
                                | ApiError::Timeout
                                | ApiError::Busy(_)
                                | ApiError::Unavailable(_)
                        ),
                        "unexpected error: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Waits until every running node's state machine has applied `index`.
    pub async fn applied_everywhere(&self, group: GroupId, index: Index, bound: Duration) {
        let deadline = Instant::now() + bound;
        for (&id, node) in &self.nodes {
            loop {
                let applied = node
                    .status(group)
                    .await
                    .map(|status| status.applied)
                    .unwrap_or(0);
                if applied >= index {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} applied {applied} of group {group}, not {index}, within {bound:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// The value of `key` in node `id`'s state machine, read locally.
    pub async fn value_on(&self, id: NodeId, group: GroupId, key: &str) -> String {
        let value = self.nodes[&id]
            .read_stale(group, Bytes::copy_from_slice(key.as_bytes()))
            .await
            .expect("stale read");
        String::from_utf8(value.response.to_vec()).expect("utf-8 value")
    }
}

/// Runs `test` with the node test timeout.
pub async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test exceeded its time bound");
}
