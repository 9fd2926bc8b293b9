//! Whole clusters in one process over the memory transport: failover, catch-up
//! through a snapshot, faults, and many groups.

use std::sync::Arc;
use std::time::Duration;

use concord_node::metrics::NodeMetrics;
use concord_node::transport::faults::Faults;
use concord_raft::Role;
use tokio::time::Instant;

use crate::node_support::{bounded, Network, TestCluster};

const GROUP: u64 = 7;
const BOUND: Duration = Duration::from_secs(10);

/// Three nodes bootstrap, elect and replicate; when the leader stops another is
/// elected within 3 s and no acknowledged write is lost; the old leader restarts from
/// its data directory alone and catches up — through a snapshot, since the others
/// compacted their logs past it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_loses_nothing_and_the_old_leader_catches_up_by_snapshot() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.tweak = Arc::new(|config| {
            config.snapshot_interval_entries = 20;
            config.snapshot_trailing_entries = 5;
        });
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let bound = Duration::from_secs(10);
        let mut last = 0;
        for key in 0..30 {
            last = cluster
                .put(GROUP, &format!("k{key}"), &format!("v{key}"), bound)
                .await;
        }
        cluster.applied_everywhere(GROUP, last, bound).await;

        let old_leader = cluster.leader(GROUP, bound).await;
        cluster.stop(old_leader).await;
        let stopped_at = Instant::now();
        let new_leader = cluster.leader(GROUP, Duration::from_secs(3)).await;
        assert_ne!(new_leader, old_leader);
        assert!(
            stopped_at.elapsed() < Duration::from_secs(3),
            "election took {:?}",
            stopped_at.elapsed()
        );

        for key in 30..130 {
            last = cluster
                .put(GROUP, &format!("k{key}"), &format!("v{key}"), bound)
                .await;
        }
        let restarted = cluster.start(old_leader).await;
        cluster.applied_everywhere(GROUP, last, bound).await;
        for id in [1, 2, 3] {
            for key in (0..130).step_by(7) {
                assert_eq!(
                    cluster.value_on(id, GROUP, &format!("k{key}")).await,
                    format!("v{key}"),
                    "node {id} lost k{key}"
                );
            }
        }
        let installed = NodeMetrics::read(&restarted.metrics().group(GROUP).snapshots_installed);
        assert!(
            installed >= 1,
            "the restarted node should have caught up through a snapshot"
        );
        let taken = NodeMetrics::read(
            &cluster
                .node(new_leader)
                .metrics()
                .group(GROUP)
                .snapshots_taken,
        );
        assert!(taken >= 1);
        cluster.shutdown().await;
    })
    .await;
}

/// The simulator's liveness phase against real nodes: writes go on while the
/// transport drops and delays messages and partitions the leader away; once every
/// fault heals there is a leader within a bound, a new write commits and applies on
/// every node, and every write acknowledged during the faults is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_faults_heal_a_new_write_commits_everywhere() {
    bounded(async {
        let faults = Faults::new(0x5eed);
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.faults = Some(faults.clone());
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let bound = Duration::from_secs(10);
        cluster.leader(GROUP, bound).await;

        let mut acknowledged = Vec::new();
        faults.set_drop_probability(0.2);
        faults.set_delay(Duration::from_millis(1)..=Duration::from_millis(30));
        for round in 0..3u32 {
            let leader = cluster.leader(GROUP, bound).await;
            let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
            if round == 1 {
                faults.partition_sides(&[leader], &others);
            }
            for key in 0..10 {
                let key = format!("r{round}k{key}");
                let node = cluster.node(others[key.len() % 2]).clone();
                // Short attempts: during a partition many fail, which is fine.
                let attempt = tokio::time::timeout(
                    Duration::from_millis(500),
                    node.propose(GROUP, crate::node_support::set(&key, "x")),
                )
                .await;
                if let Ok(Ok(_)) = attempt {
                    acknowledged.push(key);
                }
            }
            faults.heal(leader, others[0]);
            faults.heal(leader, others[1]);
        }
        faults.heal_all();
        let healed_at = Instant::now();
        let liveness_bound = Duration::from_secs(5);
        let index = cluster.put(GROUP, "after", "heal", liveness_bound).await;
        cluster
            .applied_everywhere(GROUP, index, liveness_bound)
            .await;
        assert!(healed_at.elapsed() < liveness_bound);
        for id in [1, 2, 3] {
            assert_eq!(cluster.value_on(id, GROUP, "after").await, "heal");
            for key in &acknowledged {
                assert_eq!(
                    cluster.value_on(id, GROUP, key).await,
                    "x",
                    "node {id} lost {key}"
                );
            }
        }
        let stats = faults.stats();
        assert!(stats.dropped_random > 0 && stats.delayed > 0, "{stats:?}");
        cluster.shutdown().await;
    })
    .await;
}

/// A hundred groups on three nodes all elect a leader and commit; once idle, the
/// raft loop turns and messages per second stay within a bound set by the one shared
/// timer and the heartbeat interval, not by the number of groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_groups_stay_healthy_and_idle_ones_stay_cheap() {
    bounded(async {
        const GROUPS: u64 = 100;
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.memory_storage = true;
        cluster.tweak = Arc::new(|config| {
            config.tick_interval_ms = 50;
            config.election_timeout_ticks = 10;
            config.heartbeat_interval_ticks = 3;
        });
        let groups: Vec<u64> = (1..=GROUPS).collect();
        cluster.start_group(&[1, 2, 3], &groups).await;
        let bound = Duration::from_secs(20);
        for &group in &groups {
            let index = cluster.put(group, "k", &format!("g{group}"), bound).await;
            cluster.applied_everywhere(group, index, bound).await;
        }
        for &group in groups.iter().step_by(9) {
            for id in [1, 2, 3] {
                assert_eq!(cluster.value_on(id, group, "k").await, format!("g{group}"));
            }
        }
        let leaders: usize = cluster.nodes.values().map(|node| node.groups().len()).sum();
        assert_eq!(leaders, 3 * GROUPS as usize);

        // Idle: measure what the nodes do over two seconds.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = |cluster: &TestCluster| -> Vec<(u64, u64, u64)> {
            cluster
                .nodes
                .values()
                .map(|node| {
                    let metrics = node.metrics();
                    (
                        NodeMetrics::read(&metrics.turns),
                        NodeMetrics::read(&metrics.messages_sent),
                        NodeMetrics::read(&metrics.messages_received),
                    )
                })
                .collect()
        };
        let before = read(&cluster);
        let window = Duration::from_secs(2);
        tokio::time::sleep(window).await;
        let after = read(&cluster);
        let seconds = window.as_secs_f64();
        let ticks_per_second = 1000.0 / 50.0;
        // Heartbeats every 3 ticks to 2 followers, and their answers: per group and
        // second, 2 * 2 * 20 / 3 messages over the cluster. Nothing else when idle.
        let messages_bound = GROUPS as f64 * 4.0 * ticks_per_second / 3.0 * 1.5;
        let mut total_messages = 0.0;
        let mut turns_per_node = 0.0;
        for (before, after) in before.iter().zip(&after) {
            let turns = (after.0 - before.0) as f64 / seconds;
            let received = (after.2 - before.2) as f64 / seconds;
            total_messages += (after.1 - before.1) as f64 / seconds;
            turns_per_node += turns / 3.0;
            // A node wakes for its tick and for its peers' batches: turns follow the
            // one timer, not the number of groups (each turn steps many groups).
            assert!(
                turns <= ticks_per_second * 20.0,
                "an idle node took {turns:.0} turns/s with {GROUPS} groups"
            );
            assert!(
                received >= 3.0 * turns,
                "an idle node stepped only {received:.0} messages/s in {turns:.0} turns/s"
            );
        }
        assert!(
            total_messages <= messages_bound,
            "idle groups sent {total_messages:.0} messages/s (bound {messages_bound:.0})"
        );
        println!(
            "idle: {GROUPS} groups on 3 nodes: {turns_per_node:.0} raft loop turns/s per node, \
             {total_messages:.0} messages/s in all"
        );
        for &group in groups.iter().step_by(10) {
            let mut roles = Vec::new();
            for node in cluster.nodes.values() {
                roles.push(node.status(group).await.unwrap().role);
            }
            assert_eq!(
                roles.iter().filter(|&&role| role == Role::Leader).count(),
                1,
                "group {group}: {roles:?}"
            );
        }
        cluster.shutdown().await;
    })
    .await;
}

/// A follower's linearizable read whose ReadIndex request to the leader is lost is
/// asked again (after two election timeouts) and answers once the link heals, long
/// before `read_timeout_ms`; the leader never changed, so nothing else re-sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_follower_read_request_is_asked_again() {
    bounded(async {
        let faults = Faults::new(7);
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.faults = Some(faults.clone());
        cluster.tweak = Arc::new(|config| config.read_timeout_ms = 30_000);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let bound = Duration::from_secs(10);
        cluster.put(GROUP, "k", "v", bound).await;
        let leader = cluster.leader(GROUP, bound).await;
        let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
        // Only the follower's messages to the leader are lost: the leader keeps
        // leading (the other follower answers its heartbeats).
        faults.cut(follower, leader);
        let node = cluster.node(follower).clone();
        let read = tokio::spawn(async move {
            let asked = Instant::now();
            let value = node
                .read(GROUP, bytes::Bytes::from_static(b"k"))
                .await
                .expect("the read answers");
            (value, asked.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        faults.heal_all();
        let (value, took) = read.await.unwrap();
        assert_eq!(&value.response[..], b"v");
        assert!(took < Duration::from_secs(5), "the read took {took:?}");
        assert_eq!(
            cluster.leader(GROUP, bound).await,
            leader,
            "the leader changed"
        );
        cluster.shutdown().await;
    })
    .await;
}

/// A hard state that changes only the commit index is not synced on its own: one
/// proposal at a time costs the leader one fsync (its entries), not two (entries,
/// then the new commit index). Restarting every node afterwards still finds every
/// write: the commit index is learned again from the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_proposals_cost_the_leader_one_fsync_each() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let bound = Duration::from_secs(10);
        cluster.put(GROUP, "warm", "up", bound).await;
        let leader = cluster.leader(GROUP, bound).await;
        let fsyncs = |cluster: &TestCluster| cluster.node(leader).metrics().fsync_latency.count();
        let before = fsyncs(&cluster);
        const PROPOSALS: u64 = 40;
        let mut last = 0;
        for key in 0..PROPOSALS {
            last = cluster.put(GROUP, &format!("k{key}"), "v", bound).await;
        }
        let synced = fsyncs(&cluster) - before;
        assert!(
            (PROPOSALS..PROPOSALS + PROPOSALS / 4).contains(&synced),
            "{synced} leader fsyncs for {PROPOSALS} sequential proposals"
        );
        cluster.applied_everywhere(GROUP, last, bound).await;
        for id in [1, 2, 3] {
            cluster.stop(id).await;
        }
        for id in [1, 2, 3] {
            cluster.start(id).await;
        }
        cluster.applied_everywhere(GROUP, last, bound).await;
        for id in [1, 2, 3] {
            assert_eq!(
                cluster
                    .value_on(id, GROUP, &format!("k{}", PROPOSALS - 1))
                    .await,
                "v"
            );
        }
        cluster.shutdown().await;
    })
    .await;
}

/// A follower asked to lead (as `memstore transfer --peer <follower> <follower>` does)
/// asks the leader to hand over, and leads within the bound; asked again once it
/// leads, it does nothing and says so by succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asked_to_lead_takes_over() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Memory);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        cluster.put(GROUP, "a", "1", BOUND).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
        cluster
            .node(follower)
            .transfer_leader(GROUP, follower)
            .await
            .expect("transfer accepted");
        let deadline = Instant::now() + BOUND;
        loop {
            let status = cluster.node(follower).status(GROUP).await.unwrap();
            if status.role == Role::Leader {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {follower} did not take over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
            .node(follower)
            .transfer_leader(GROUP, follower)
            .await
            .expect("a leader asked to lead");
        cluster.put(GROUP, "b", "2", BOUND).await;
        cluster.shutdown().await;
    })
    .await;
}
