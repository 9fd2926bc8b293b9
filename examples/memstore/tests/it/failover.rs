//! Losing the leader to SIGKILL: how fast a new one is elected, that no acknowledged
//! write is lost, and how the old leader catches up when it comes back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_memstore::store::{Command, Query, QueryResponse};
use concord_node::client::{ClientConfig, RaftClient};
use concord_node::{LogEntry, ReadMode, DEFAULT_GROUP};
use concord_raft::Role;

use crate::support::{eventually, test_dir, Server};

/// The bound on electing a new leader after the old one is killed.
const ELECTION_BOUND: Duration = Duration::from_secs(3);
/// Concurrent writers running through the failover.
const WRITERS: usize = 4;
/// Writes made while the old leader is down: many snapshot intervals, so the log it
/// needs is compacted away on the others.
const WRITES_WHILE_DOWN: usize = 400;
/// Small snapshots, so that the node that was down must catch up through one.
const CONFIG: &str = "snapshot_interval_entries = 50\nsnapshot_trailing_entries = 10\n";

/// Writes `key = value` through the first node in `addresses` that takes it, trying
/// the others in turn; Ok once a node acknowledged it.
async fn put(addresses: &[String], key: &str, value: &str) -> Result<(), String> {
    let command = Command::Put {
        key: key.to_string(),
        value: value.to_string(),
    }
    .encode();
    let mut last_error = String::new();
    for address in addresses {
        let config = ClientConfig {
            connect_timeout_ms: 500,
            request_timeout_ms: 2_000,
            ..ClientConfig::default()
        };
        let client = match RaftClient::connect_with(address.clone(), config).await {
            Ok(client) => client,
            Err(error) => {
                last_error = error.to_string();
                continue;
            }
        };
        match client.propose(DEFAULT_GROUP, command.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(last_error)
}

/// Every key and value through `address`, linearizable or as the node has them.
async fn entries(address: &str, mode: ReadMode) -> BTreeMap<String, String> {
    let client = RaftClient::connect(address.to_string()).await.unwrap();
    let query = Query::List {
        prefix: String::new(),
        limit: u32::MAX,
    };
    let answer = client
        .read(DEFAULT_GROUP, query.encode(), mode)
        .await
        .unwrap();
    match QueryResponse::decode(&answer.response).unwrap() {
        QueryResponse::Entries(entries) => entries.into_iter().collect(),
        other => panic!("a list answered {other:?}"),
    }
}

/// The leader's id and term as `address` sees them, if it leads.
async fn leads(address: &str) -> Option<u64> {
    let config = ClientConfig {
        connect_timeout_ms: 200,
        request_timeout_ms: 200,
        ..ClientConfig::default()
    };
    let client = RaftClient::connect_with(address.to_string(), config)
        .await
        .ok()?;
    let status = client.status(DEFAULT_GROUP).await.ok()?;
    (status.role == Role::Leader).then_some(status.term)
}

/// Three nodes take writes from four concurrent writers; the leader is killed with
/// SIGKILL mid-stream. One of the two others leads within 3 s (timed from the kill
/// to a survivor reporting itself leader in a later term). Writers carry on against
/// the survivors, then many more writes go in while the old leader is down. Every
/// write a node acknowledged is in a linearizable read of the whole map afterwards.
/// The old leader restarts from its data directory and catches up to the leader's
/// commit index through a snapshot (its snapshot-installed counter), and then holds
/// exactly the same map.
#[test]
fn killed_leader_is_replaced_in_time_loses_nothing_and_catches_up_by_snapshot() {
    let dir = test_dir();
    let config_path = dir.path().join("memstore.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let config = config_path.to_str().unwrap();
    let mut nodes = vec![Server::start(
        dir.path(),
        1,
        "127.0.0.1:0",
        &["--bootstrap", "--config", config],
    )];
    let first = nodes[0].address.clone();
    for id in [2, 3] {
        nodes.push(Server::start(
            dir.path(),
            id,
            "127.0.0.1:0",
            &["--join", &first, "--config", config],
        ));
    }
    let addresses: Vec<String> = nodes.iter().map(|node| node.address.clone()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (leader, old_term) = runtime.block_on(async {
        for (position, address) in addresses.iter().enumerate() {
            if let Some(term) = leads(address).await {
                return (position, term);
            }
        }
        panic!("no leader among {addresses:?}");
    });
    let survivors: Vec<String> = addresses
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != leader)
        .map(|(_, address)| address.clone())
        .collect();

    // Writers: each puts w<writer>-<n> = <n> in turn, through every node in some
    // order (a dead one fails fast), and keeps what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let stop = stop.clone();
            let mut order = addresses.clone();
            order.rotate_left(writer % addresses.len());
            runtime.spawn(async move {
                let mut acknowledged = Vec::new();
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{writer}-{sequence}");
                    let value = sequence.to_string();
                    if put(&order, &key, &value).await.is_ok() {
                        acknowledged.push((key, value));
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    sequence += 1;
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    nodes[leader].kill();
    let killed = Instant::now();
    let new_leader = runtime.block_on(async {
        loop {
            for address in &survivors {
                if leads(address).await.is_some_and(|term| term > old_term) {
                    return address.clone();
                }
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "no new leader at all"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let election = killed.elapsed();
    eprintln!("new leader {new_leader} {election:?} after the kill");
    assert!(
        election < ELECTION_BOUND,
        "new leader after {election:?}, bound {ELECTION_BOUND:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    for writer in writers {
        acknowledged.extend(runtime.block_on(writer).unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "too few writes: {}",
        acknowledged.len()
    );

    // Many more writes while the old leader is down.
    runtime.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let survivors = survivors.clone();
                tokio::spawn(async move {
                    let mut written = Vec::new();
                    for sequence in (task..WRITES_WHILE_DOWN).step_by(16) {
                        let key = format!("down-{sequence}");
                        put(&survivors, &key, "x").await.expect("write while down");
                        written.push((key, "x".to_string()));
                    }
                    written
                })
            })
            .collect();
        for task in tasks {
            acknowledged.extend(task.await.unwrap());
        }
    });

    // No acknowledged write lost: all of them in one linearizable read.
    let after_failover = runtime.block_on(entries(&new_leader, ReadMode::Linearizable));
    for (key, value) in &acknowledged {
        assert_eq!(
            after_failover.get(key),
            Some(value),
            "acknowledged write {key} = {value} lost"
        );
    }

    // The old leader restarts and catches up through a snapshot.
    let old = &mut nodes[leader];
    old.restart();
    let old_address = old.address.clone();
    let commit = runtime.block_on(async {
        let client = RaftClient::connect(new_leader.clone()).await.unwrap();
        client.status(DEFAULT_GROUP).await.unwrap().commit
    });
    eventually(Duration::from_secs(15), "the old leader catches up", || {
        runtime.block_on(async {
            let client = RaftClient::connect(old_address.clone()).await.unwrap();
            client.status(DEFAULT_GROUP).await.unwrap().applied >= commit
        })
    });
    let installed = old.group_metric("concord_group_snapshots_installed_total");
    assert!(installed >= 1, "caught up without a snapshot");
    let on_old = runtime.block_on(entries(&old_address, ReadMode::Stale));
    assert_eq!(on_old, after_failover);
    assert_eq!(
        runtime.block_on(entries(&old_address, ReadMode::Linearizable)),
        after_failover
    );
}
