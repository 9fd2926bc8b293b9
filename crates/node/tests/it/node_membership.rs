//! Membership and requests over real gRPC on loopback: joining by ticket, leaving,
//! replacing a member, proposals on followers, reads, and forced recovery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_node::client::RaftClient;
use concord_node::{ApiError, MemberRole, ReadMode};
use concord_raft::{NodeId, Role};

use crate::node_support::{bounded, set, Network, TestCluster};

const GROUP: u64 = 3;
const BOUND: Duration = Duration::from_secs(15);

async fn voters(cluster: &TestCluster, on: NodeId) -> Vec<NodeId> {
    let mut voters: Vec<NodeId> = cluster
        .node(on)
        .members(GROUP)
        .await
        .unwrap()
        .into_iter()
        .filter(|member| member.role == MemberRole::Voter)
        .map(|member| member.id)
        .collect();
    voters.sort_unstable();
    voters
}

/// One node bootstraps a group alone; two more join with tickets asked of a member
/// (the second asks a follower, whose client follows the redirect to the leader);
/// one leaves; one is replaced by a fresh node. After each step the group commits
/// and every member has every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_one_join_two_remove_one_replace_one() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.start_group(&[1], &[GROUP]).await;
        cluster.put(GROUP, "a", "1", BOUND).await;

        for (joiner, contact) in [(2, 1), (3, 2)] {
            let node = cluster.start(joiner).await;
            let ticket = node
                .request_join(&cluster.address(contact), GROUP)
                .await
                .expect("ticket");
            assert_eq!(ticket.node_id, joiner);
            assert!(ticket
                .members
                .iter()
                .any(|member| member.id == joiner && member.role == MemberRole::Learner));
            node.join(ticket).await.expect("join");
        }
        assert_eq!(voters(&cluster, 1).await, vec![1, 2, 3]);
        let index = cluster.put(GROUP, "b", "2", BOUND).await;
        cluster.applied_everywhere(GROUP, index, BOUND).await;
        for id in [1, 2, 3] {
            assert_eq!(cluster.value_on(id, GROUP, "a").await, "1");
            assert_eq!(cluster.value_on(id, GROUP, "b").await, "2");
        }

        // Node 3 leaves: it is removed and drops the group.
        cluster.node(3).leave(GROUP).await.expect("leave");
        assert!(!cluster.node(3).groups().contains(&GROUP));
        cluster.stop(3).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        assert_eq!(voters(&cluster, leader).await, vec![1, 2]);

        // Node 4 replaces node 2.
        let node = cluster.start(4).await;
        let ticket = node
            .request_join(&cluster.address(1), GROUP)
            .await
            .expect("ticket");
        node.join(ticket).await.expect("join");
        let leader = cluster.leader(GROUP, BOUND).await;
        cluster
            .node(leader)
            .remove(GROUP, 2)
            .await
            .expect("remove 2");
        cluster.stop(2).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        assert_eq!(voters(&cluster, leader).await, vec![1, 4]);
        let index = cluster.put(GROUP, "c", "3", BOUND).await;
        cluster.applied_everywhere(GROUP, index, BOUND).await;
        for id in [1, 4] {
            for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
                assert_eq!(cluster.value_on(id, GROUP, key).await, value);
            }
        }
        // The remaining members dropped their links to the stopped, removed nodes:
        // nothing keeps trying to reach them (reconnects back off to 200 ms here).
        let failures = |cluster: &TestCluster| {
            [1, 4].map(|id| cluster.transport_metrics[&id].snapshot().connect_failures)
        };
        let before = failures(&cluster);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(failures(&cluster), before, "still dialing removed nodes");
        cluster.shutdown().await;
    })
    .await;
}

/// A proposal on a follower is forwarded to the leader when `forward_proposals` is
/// on, and refused with the leader's id and address when it is off. A linearizable
/// read on a follower right after a write sees it; a stale read serves the local
/// state; the remote client reaches the same paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_proposals_forward_or_redirect_and_reads_see_writes() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.tweak = Arc::new(|config| {
            if config.node_id == 3 {
                config.forward_proposals = false;
            }
        });
        for id in [1, 2, 3] {
            cluster.start(id).await;
        }
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        if leader != 1 {
            cluster
                .node(leader)
                .transfer_leader(GROUP, 1)
                .await
                .expect("transfer");
        }
        assert_eq!(cluster.leader(GROUP, BOUND).await, 1);

        // Forwarded from node 2.
        let response = cluster
            .node(2)
            .propose(GROUP, set("x", "1"))
            .await
            .expect("forwarded");
        assert_eq!(response.response, Bytes::new());
        // Refused on node 3, with where to go.
        match cluster.node(3).propose(GROUP, set("x", "2")).await {
            Err(ApiError::NotLeader { leader, address }) => {
                assert_eq!(leader, Some(1));
                assert_eq!(address.as_deref(), Some(cluster.address(1).as_str()));
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        // Linearizable reads on followers see the acknowledged write at once.
        for id in [2, 3] {
            let value = cluster
                .node(id)
                .read(GROUP, Bytes::from_static(b"x"))
                .await
                .expect("read");
            assert_eq!(value.response, Bytes::from_static(b"1"), "node {id}");
        }
        let response = cluster
            .node(2)
            .propose(GROUP, set("x", "3"))
            .await
            .expect("write");
        assert_eq!(response.response, Bytes::from_static(b"1"));
        let value = cluster
            .node(3)
            .read(GROUP, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(value.response, Bytes::from_static(b"3"));
        // A stale read answers from the local state machine.
        let value = cluster
            .node(1)
            .read_stale(GROUP, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(value.response, Bytes::from_static(b"3"));

        // The remote client: a proposal sent to node 3 follows the redirect.
        let client = RaftClient::connect(cluster.address(3)).await.unwrap();
        let response = client
            .propose(GROUP, set("y", "9"))
            .await
            .expect("client propose");
        assert!(response.index > 0);
        let value = client
            .read(GROUP, Bytes::from_static(b"y"), ReadMode::Linearizable)
            .await
            .unwrap();
        assert_eq!(value.response, Bytes::from_static(b"9"));
        let status = client.status(GROUP).await.unwrap();
        assert_eq!(status.members.len(), 3);
        assert!(status
            .members
            .iter()
            .all(|member| !member.address.is_empty()));
        match client.status(999).await {
            Err(ApiError::GroupNotFound { group: 999 }) => {}
            other => panic!("expected GroupNotFound, got {other:?}"),
        }

        // Membership and leadership through the remote client (sent to a follower,
        // redirected to the leader).
        client
            .add_learner(GROUP, 9, "127.0.0.1:9")
            .await
            .expect("add learner");
        let members = client.members(GROUP).await.unwrap();
        assert!(members.iter().any(|member| member.id == 9
            && member.role == MemberRole::Learner
            && member.address == "127.0.0.1:9"));
        client.remove(GROUP, 9).await.expect("remove learner");
        client
            .leave(GROUP, 9)
            .await
            .expect("leaving twice is a no-op");
        client.transfer_leader(GROUP, 2).await.expect("transfer");
        assert_eq!(cluster.leader(GROUP, BOUND).await, 2);
        let leader = cluster.node(1).status(GROUP).await.unwrap().leader;
        assert!(leader.is_none_or(|leader| leader.id == 2));
        assert_eq!(client.members(GROUP).await.unwrap().len(), 3);
        cluster.shutdown().await;
    })
    .await;
}

/// Two of three nodes are destroyed for good; the survivor cannot commit. After
/// `force_new_cluster` it leads alone, keeps every committed write, accepts new ones,
/// and a fresh node joins it by ticket and receives everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_recovers_a_survivor_that_others_can_join() {
    bounded(async {
        let mut cluster = TestCluster::new(Network::Grpc);
        cluster.tweak = Arc::new(|config| {
            config.snapshot_interval_entries = 8;
            config.snapshot_trailing_entries = 2;
        });
        for id in [1, 2, 3] {
            cluster.start(id).await;
        }
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let mut last = 0;
        for key in 0..20 {
            last = cluster.put(GROUP, &format!("k{key}"), "v", BOUND).await;
        }
        cluster.applied_everywhere(GROUP, last, BOUND).await;
        cluster.destroy(2).await;
        cluster.destroy(3).await;
        let survivor = cluster.node(1).clone();
        let attempt = tokio::time::timeout(
            Duration::from_millis(800),
            survivor.propose(GROUP, set("lost", "?")),
        )
        .await;
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "a lone survivor of three must not commit"
        );

        survivor
            .force_new_cluster(GROUP)
            .await
            .expect("force_new_cluster");
        let status = survivor.status(GROUP).await.unwrap();
        assert_eq!(status.role, Role::Leader);
        assert_eq!(status.members.len(), 1);
        for key in 0..20 {
            assert_eq!(cluster.value_on(1, GROUP, &format!("k{key}")).await, "v");
        }
        let index = cluster.put(GROUP, "after", "force", BOUND).await;

        let fresh = cluster.start(4).await;
        let ticket = fresh
            .request_join(&cluster.address(1), GROUP)
            .await
            .expect("ticket");
        fresh.join(ticket).await.expect("join");
        cluster.applied_everywhere(GROUP, index, BOUND).await;
        assert_eq!(cluster.value_on(4, GROUP, "after").await, "force");
        assert_eq!(cluster.value_on(4, GROUP, "k7").await, "v");
        assert_eq!(voters(&cluster, 1).await, vec![1, 4]);
        cluster.shutdown().await;
    })
    .await;
}
