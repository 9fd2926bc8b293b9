//! Regression tests for concord-node behaviours this example ran into, each
//! asserting what should happen.

use std::time::{Duration, Instant};

use concord_memstore::store::{Command, Query};
use concord_node::client::{ClientConfig, RaftClient};
use concord_node::{LogEntry, ReadMode, DEFAULT_GROUP};
use concord_raft::Role;

use crate::support::{test_dir, Server};

/// Three nodes, started and joined; the runtime to drive clients on.
fn cluster(dir: &std::path::Path) -> (Vec<Server>, tokio::runtime::Runtime) {
    let mut nodes = vec![Server::start(dir, 1, "127.0.0.1:0", &["--bootstrap"])];
    let first = nodes[0].address.clone();
    for id in [2, 3] {
        nodes.push(Server::start(dir, id, "127.0.0.1:0", &["--join", &first]));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (nodes, runtime)
}

/// A linearizable read sent to a follower right after the leader dies answers soon
/// after a new leader is elected, whether or not that follower is the new leader:
/// the raft loop asks pending reads again when the leader changes. (It used to keep
/// the ReadIndex forwarded to the dead leader until `read_timeout_ms`, 10 s, and fail
/// with `Timeout`.)
#[test]
fn follower_read_right_after_leader_loss_answers_soon() {
    let dir = test_dir();
    let (mut nodes, runtime) = cluster(dir.path());
    runtime.block_on(async {
        let mut leader = 0;
        for (position, node) in nodes.iter().enumerate() {
            let client = RaftClient::connect(node.address.clone()).await.unwrap();
            if client.status(DEFAULT_GROUP).await.unwrap().role == Role::Leader {
                leader = position;
            }
        }
        let follower = nodes[(leader + 1) % 3].address.clone();
        let config = ClientConfig {
            request_timeout_ms: 20_000,
            redirects_max: 0,
            ..ClientConfig::default()
        };
        let client = RaftClient::connect_with(follower, config).await.unwrap();
        let query = Query::Get { key: "k".into() }.encode();
        client
            .read(DEFAULT_GROUP, query.clone(), ReadMode::Linearizable)
            .await
            .expect("a read before the kill");
        nodes[leader].kill();
        let sent = Instant::now();
        let answer = client
            .read(DEFAULT_GROUP, query, ReadMode::Linearizable)
            .await;
        let took = sent.elapsed();
        assert!(
            answer.is_ok() && took < Duration::from_secs(5),
            "the read answered {answer:?} after {took:?}"
        );
    });
}

/// One client proposing one write at a time to the leader sees about the latency of
/// two fsyncs and a loopback round trip (a few ms at most on a slow disk), not ~40 ms
/// more: the node's gRPC servers set `TCP_NODELAY` on accepted sockets, so no part of
/// a response waits for the client's delayed ACK (Nagle's algorithm). Without it this
/// debug build answered each proposal about 40 ms late.
#[test]
fn one_proposer_is_not_delayed_by_nagle() {
    let dir = test_dir();
    let (nodes, runtime) = cluster(dir.path());
    runtime.block_on(async {
        let mut latencies = Vec::new();
        for node in &nodes {
            let client = RaftClient::connect(node.address.clone()).await.unwrap();
            if client.status(DEFAULT_GROUP).await.unwrap().role != Role::Leader {
                continue;
            }
            for sequence in 0..20 {
                // 256 B values, as the benchmark's (each answer carries the previous).
                let command = Command::Put {
                    key: "k".into(),
                    value: format!("{sequence:0>256}"),
                }
                .encode();
                let sent = Instant::now();
                client.propose(DEFAULT_GROUP, command).await.unwrap();
                latencies.push(sent.elapsed());
            }
        }
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        assert!(
            median < Duration::from_millis(20),
            "median proposal latency {median:?} (all: {latencies:?})"
        );
    });
}
