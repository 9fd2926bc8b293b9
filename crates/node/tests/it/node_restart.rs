//! A node restarts from its data directory alone; the directory is locked while a
//! node has it open.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_node::{Node, NodeError};

use crate::node_support::{bounded, kv_factory, test_config, Network, TestCluster};

const GROUP: u64 = 11;
const BOUND: Duration = Duration::from_secs(10);

/// A single-node group takes writes (and snapshots every 16 entries), stops, and
/// starts again from the data directory alone: its state machine is restored from
/// the latest snapshot plus the log after it, every acknowledged write is readable
/// (linearizably), and it keeps taking writes. Several groups restart together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_the_data_directory_restores_state() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.tweak = Arc::new(|config| {
            config.snapshot_interval_entries = 16;
            config.snapshot_trailing_entries = 4;
        });
        cluster.start_group(&[1], &[GROUP, GROUP + 1]).await;
        for key in 0..50 {
            cluster
                .put(GROUP, &format!("k{key}"), &format!("v{key}"), BOUND)
                .await;
        }
        cluster.put(GROUP + 1, "other", "group", BOUND).await;
        cluster.stop(1).await;

        let node = cluster.start(1).await;
        assert_eq!(node.groups(), vec![GROUP, GROUP + 1]);
        cluster.leader(GROUP, BOUND).await;
        for key in 0..50 {
            let value = node
                .read(GROUP, Bytes::from(format!("k{key}")))
                .await
                .expect("read after restart");
            assert_eq!(value.response, Bytes::from(format!("v{key}")));
        }
        cluster.leader(GROUP + 1, BOUND).await;
        let value = node
            .read(GROUP + 1, Bytes::from_static(b"other"))
            .await
            .unwrap();
        assert_eq!(value.response, Bytes::from_static(b"group"));
        let response = node
            .propose(GROUP, crate::node_support::set("k0", "new"))
            .await
            .unwrap();
        assert_eq!(response.response, Bytes::from_static(b"v0"));
        cluster.shutdown().await;
    })
    .await;
}

/// A second copy of a node cannot open its data directory while the first runs: it
/// fails to start with an error naming the directory, and the first node is
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_in_use_is_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let first = Node::start(test_config(1, dir.path()), kv_factory())
            .await
            .expect("first node");
        let second = Node::start(test_config(1, dir.path()), kv_factory()).await;
        match second {
            Err(NodeError::DataDirInUse { path }) => {
                assert!(path.contains(dir.path().to_str().unwrap()))
            }
            Err(other) => panic!("expected a storage error, got {other}"),
            Ok(_) => panic!("a locked data directory was opened twice"),
        }
        first.bootstrap(&[]).await.unwrap();
        first.shutdown().await;
        // Once shut down, the directory can be opened again.
        let again = Node::start(test_config(1, dir.path()), kv_factory())
            .await
            .expect("reopen");
        assert_eq!(again.groups(), vec![concord_node::DEFAULT_GROUP]);
        again.shutdown().await;
    })
    .await;
}

/// A member restarted from its data directory at a new address (another port) is
/// found again: its first stream to each peer tells them where it listens, the leader
/// records the address in the log, and the node catches up on what it missed and
/// serves again — its address in the membership is the new one everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_at_a_new_address_is_found_again() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        cluster.put(GROUP, "before", "1", BOUND).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        let moved = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
        cluster.stop(moved).await;
        let old_address = cluster.addresses.remove(&moved).unwrap();
        let index = cluster.put(GROUP, "during", "2", BOUND).await;

        let node = cluster.start(moved).await;
        let new_address = cluster.address(moved);
        assert_ne!(
            new_address, old_address,
            "the node should listen elsewhere now"
        );
        cluster.applied_everywhere(GROUP, index, BOUND).await;
        assert_eq!(cluster.value_on(moved, GROUP, "during").await, "2");
        let index = cluster.put(GROUP, "after", "3", BOUND).await;
        cluster.applied_everywhere(GROUP, index, BOUND).await;
        for id in [1, 2, 3] {
            let members = cluster.node(id).status(GROUP).await.unwrap().members;
            let address = &members
                .iter()
                .find(|member| member.id == moved)
                .unwrap()
                .address;
            assert_eq!(address, &new_address, "node {id}'s view of node {moved}");
        }
        drop(node);
        cluster.shutdown().await;
    })
    .await;
}

/// A data directory remembers its cluster and node: a node configured for another
/// cluster, or with another node id, refuses to start on it and says what differs,
/// before it opens the log: the directory is byte for byte as it was, and works for
/// its own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_or_node_is_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let config = |node_id, cluster_id: &str| {
            let mut config = test_config(node_id, dir.path());
            config.cluster_id = cluster_id.into();
            config
        };
        let node = Node::start(config(1, "alpha"), kv_factory()).await.unwrap();
        node.bootstrap(&[]).await.unwrap();
        until_ok(|| {
            node.propose(
                concord_node::DEFAULT_GROUP,
                crate::node_support::set("k", "v"),
            )
        })
        .await;
        node.shutdown().await;

        // Every file under the directory, by path, with its bytes.
        let contents = || {
            let mut files = std::collections::BTreeMap::new();
            let mut pending = vec![dir.path().to_path_buf()];
            while let Some(next) = pending.pop() {
                for entry in std::fs::read_dir(&next).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        pending.push(path);
                    } else {
                        let bytes = std::fs::read(&path).unwrap();
                        files.insert(path, bytes);
                    }
                }
            }
            files
        };
        let before = contents();
        for (config, differs) in [
            (config(1, "beta"), ["\"alpha\"", "\"beta\""]),
            (config(2, "alpha"), ["node 1", "node 2"]),
        ] {
            let refused = Node::start(config, kv_factory()).await;
            assert!(
                contents() == before,
                "a refused start changed the directory"
            );
            match refused {
                Err(error @ NodeError::DataDir { .. }) => {
                    let message = error.to_string();
                    assert!(
                        differs.iter().all(|part| message.contains(part)),
                        "{message}"
                    );
                }
                Err(other) => panic!("expected a data directory error, got {other}"),
                Ok(_) => panic!("a data directory of another cluster or node was used"),
            }
        }

        let node = Node::start(config(1, "alpha"), kv_factory()).await.unwrap();
        let value =
            until_ok(|| node.read(concord_node::DEFAULT_GROUP, Bytes::from_static(b"k"))).await;
        assert_eq!(value.response, Bytes::from_static(b"v"));
        node.shutdown().await;
    })
    .await;
}

/// Calls `call` until it succeeds (a new node elects itself first), within the bound.
async fn until_ok<T, F>(mut call: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, concord_node::ApiError>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => assert!(tokio::time::Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
