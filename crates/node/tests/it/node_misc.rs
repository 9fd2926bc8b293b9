//! What peers and clients can throw at a node (unknown groups, forged senders,
//! oversized requests), the metrics endpoint, config errors at start, and the typed
//! state machine layer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_node::client::RaftClient;
use concord_node::metrics::NodeMetrics;
use concord_node::transport::{inbox, Transport, TransportConfig};
use concord_node::{
    ApiError, ApplyContext, DecodeError, LogEntry, Node, NodeConfig, NodeError, StateMachineError,
    Typed, TypedStateMachine,
};
use concord_raft::{Message, MessageKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::node_support::{bounded, kv_factory, set, test_config, Network, TestCluster};

const GROUP: u64 = 5;
const BOUND: Duration = Duration::from_secs(10);

/// Messages for groups the node does not host, and messages whose sender field
/// disagrees with the link they came on, are dropped and counted; the node keeps
/// committing. A client request over `request_bytes_max` is refused, and the node
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_peers_and_clients_is_dropped_and_counted() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.start_group(&[1], &[GROUP]).await;
        cluster.put(GROUP, "a", "1", BOUND).await;

        let (fake_inbox, _fake_receiver) = inbox(&TransportConfig::default());
        let fake = cluster.memory.register(66, fake_inbox);
        fake.set_peer(1, "memory-1".into());
        let mut stray = Message::new(MessageKind::Heartbeat, 66, 1, 99);
        stray.commit = 1_000_000;
        fake.send(1, (0..50).map(|_| (999, stray.clone())).collect());
        let mut forged = Message::new(MessageKind::RequestVote, 2, 1, 1_000);
        forged.index = 1_000;
        fake.send(1, vec![(GROUP, forged)]);

        let metrics = cluster.node(1).metrics().clone();
        let deadline = tokio::time::Instant::now() + BOUND;
        while NodeMetrics::read(&metrics.unknown_group_messages) < 50
            || NodeMetrics::read(&metrics.refused_messages) < 1
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "garbage not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = cluster.node(1).status(GROUP).await.unwrap();
        assert!(status.term < 1_000, "a forged vote request moved the term");
        cluster.put(GROUP, "b", "2", BOUND).await;
        cluster.shutdown().await;

        // Over gRPC: a request over the size limit.
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.tweak = Arc::new(|config| config.request_bytes_max = 64 * 1024);
        cluster.start_group(&[1], &[GROUP]).await;
        cluster.leader(GROUP, BOUND).await;
        let client = RaftClient::connect(cluster.address(1)).await.unwrap();
        let huge = Bytes::from(vec![b'x'; 200 * 1024]);
        let refused = client.propose(GROUP, huge).await;
        assert!(
            matches!(
                refused,
                Err(ApiError::InvalidRequest(_)) | Err(ApiError::Busy(_))
            ),
            "{refused:?}"
        );
        let response = client
            .propose(GROUP, set("c", "3"))
            .await
            .expect("still serving");
        assert!(response.index > 0);
        cluster.shutdown().await;
    })
    .await;
}

async fn http_get(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// `GET /metrics` answers the Prometheus text format with per-group gauges and
/// counters, latency histograms and the transport's counters; other paths get 404
/// and garbage gets 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.tweak = Arc::new(|config| config.metrics_address = "127.0.0.1:0".into());
        cluster.start_group(&[1], &[GROUP]).await;
        cluster.put(GROUP, "a", "1", BOUND).await;
        let address = cluster.node(1).metrics_address().expect("metrics bound");
        let response = http_get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        for expected in [
            "concord_group_term{node=\"1\",group=\"5\"}",
            "concord_group_role{node=\"1\",group=\"5\"} 3",
            "concord_group_commit_index{node=\"1\",group=\"5\"}",
            "concord_group_applied_index{node=\"1\",group=\"5\"}",
            "concord_group_leader_changes_total{node=\"1\",group=\"5\"}",
            "concord_group_proposals_total{node=\"1\",group=\"5\"} 1",
            "concord_group_dropped_proposals_total{node=\"1\",group=\"5\"}",
            "concord_storage_fsync_seconds_bucket{node=\"1\",le=\"+Inf\"}",
            "concord_raft_commit_seconds_count{node=\"1\"} 1",
            "concord_raft_apply_seconds_bucket",
            "concord_transport_sent_total{node=\"1\"}",
            "concord_transport_refused_garbage_total{node=\"1\"}",
        ] {
            assert!(
                response.contains(expected),
                "missing {expected} in\n{response}"
            );
        }
        let response = http_get(address, "GET /nothing HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        let response = http_get(address, "\u{1}\u{2}garbage\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        cluster.shutdown().await;
    })
    .await;
}

/// A node refuses to start on an invalid config, naming the field and its range.
#[tokio::test]
async fn invalid_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        tick_interval_ms: 0,
        ..test_config(1, dir.path())
    };
    match Node::start(config, kv_factory()).await {
        Err(NodeError::Config(error)) => {
            let message = error.to_string();
            assert!(
                message.contains("tick_interval_ms") && message.contains("1..=60000"),
                "{message}"
            );
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("an invalid config was accepted"),
    }
}

/// A counter with typed commands and answers.
#[derive(Default)]
struct Counter {
    total: i64,
}

/// A typed value: an i64, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Amount(i64);

impl LogEntry for Amount {
    fn encode(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_be_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError(format!("an amount is 8 bytes, not {}", bytes.len())))?;
        Ok(Amount(i64::from_be_bytes(array)))
    }
}

impl TypedStateMachine for Counter {
    type Command = Amount;
    type Response = Amount;
    type Query = ();
    type QueryResponse = Amount;

    fn apply(&mut self, _context: &mut ApplyContext<'_>, command: Amount) -> Amount {
        self.total += command.0;
        Amount(self.total)
    }

    fn query(&self, _query: ()) -> Amount {
        Amount(self.total)
    }

    fn snapshot(&self, sink: &mut dyn std::io::Write) -> std::io::Result<()> {
        sink.write_all(&Amount(self.total).encode())
    }

    fn restore(&mut self, source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        let mut snapshot = Vec::new();
        source.read_to_end(&mut snapshot)?;
        self.total = Amount::decode(&snapshot)
            .map_err(|error| StateMachineError(error.to_string()))?
            .0;
        Ok(())
    }
}

/// User code that defines typed commands, queries and responses never touches bytes:
/// proposals answer the typed response, reads the typed query response, and a raw
/// proposal that does not decode is applied as a no-op everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_state_machines_need_no_bytes() {
    bounded(async {
        let node = Node::builder(NodeConfig::new(1, "unused"), |_| Typed(Counter::default()))
            .memory_storage()
            .without_server()
            .transport(Box::new(|inbox| {
                Arc::new(concord_node::transport::memory::MemoryNetwork::new().register(1, inbox))
            }))
            .start()
            .await
            .unwrap();
        node.bootstrap(&[]).await.unwrap();
        let counter = node.typed::<Counter>(concord_node::DEFAULT_GROUP);
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut first = counter.propose(&Amount(5)).await;
        while first.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            first = counter.propose(&Amount(5)).await;
        }
        assert_eq!(first.unwrap(), Amount(5));
        assert_eq!(counter.propose(&Amount(-2)).await.unwrap(), Amount(3));
        node.default_group()
            .propose(Bytes::from_static(b"not an amount"))
            .await
            .unwrap();
        assert_eq!(counter.read(&()).await.unwrap(), Amount(3));
        assert_eq!(counter.read_stale(&()).await.unwrap(), Amount(3));
        node.shutdown().await;
    })
    .await;
}

/// A state machine that takes 30 ms per command.
struct Slow;

impl concord_node::StateMachine for Slow {
    fn apply(
        &mut self,
        _context: &mut ApplyContext<'_>,
        _command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        std::thread::sleep(Duration::from_millis(30));
        Ok(Bytes::new())
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::new())
    }

    fn snapshot(&self, _sink: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        Ok(())
    }

    fn restore(&mut self, _source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// Applying runs apart from replication: while a slow state machine works through a
/// backlog, its group's commit index runs ahead of what it applied, and another group
/// on the same node commits and answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_state_machine_does_not_stall_replication() {
    bounded(async {
        const SLOW: u64 = 1;
        const FAST: u64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let node = Node::builder(
            test_config(1, dir.path()),
            |group| -> Box<dyn concord_node::StateMachine> {
                if group == SLOW {
                    Box::new(Slow)
                } else {
                    Box::new(crate::node_support::KvStore::default())
                }
            },
        )
        .start()
        .await
        .unwrap();
        for group in [SLOW, FAST] {
            node.bootstrap_group(group, Default::default(), &[])
                .await
                .unwrap();
            node.campaign(group).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + BOUND;
        while node.status(FAST).await.unwrap().role != concord_raft::Role::Leader
            || node.status(SLOW).await.unwrap().role != concord_raft::Role::Leader
        {
            assert!(tokio::time::Instant::now() < deadline, "no leaders");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let base = node.status(SLOW).await.unwrap().commit;
        let backlog: Vec<_> = (0..20)
            .map(|_| {
                let node = node.clone();
                tokio::spawn(async move { node.propose(SLOW, Bytes::from_static(b"x")).await })
            })
            .collect();
        // The slow group commits everything long before it has applied it.
        loop {
            let status = node.status(SLOW).await.unwrap();
            if status.commit >= base + 20 {
                assert!(
                    status.applied + 5 < status.commit,
                    "applied {} of {} committed: applying held back commits?",
                    status.applied,
                    status.commit
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slow group did not commit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = tokio::time::Instant::now();
        node.propose(FAST, set("k", "v"))
            .await
            .expect("fast group write");
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "the fast group waited {:?} behind the slow one",
            started.elapsed()
        );
        for proposal in backlog {
            proposal
                .await
                .unwrap()
                .expect("slow proposal applies eventually");
        }
        node.shutdown().await;
    })
    .await;
}
