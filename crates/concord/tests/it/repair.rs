//! A node that stays down past `replica_down_after_ms`: the namespaces it hosted get
//! a replacement replica on another node (it joins as a learner, catches up, is
//! promoted; the lost member is removed), with the data, so each keeps its
//! replication factor; the lost node, back, drops its stale replica.

use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_client::{ApiError, RaftClient, ReadMode};
use concord_service::command::{decode, encode, Query, QueryResponse, ReadOp, ReadResult};
use concord_service::{Limits, NodeValue, ServiceError};

use crate::cluster::Cluster;

/// Fast health checks and a short grace, so the test takes seconds.
const CONFIG: &str = "replica_down_after_ms = 1500\nhealth_check_interval_ms = 200\n\
                      health_check_timeout_ms = 1000\n";

/// The group's members, by id, as the node asked sees them (a route's first host,
/// usually the leader); `None` while a learner remains (a join under way).
async fn voters(client: &concord_client::ServiceClient, group: u64) -> Option<Vec<u64>> {
    let members = client.raft().members(group).await.ok()?;
    if members
        .iter()
        .any(|member| member.role != concord_client::MemberRole::Voter)
    {
        return None;
    }
    let mut ids: Vec<u64> = members.into_iter().map(|member| member.id).collect();
    ids.sort_unstable();
    Some(ids)
}

/// Polls `check` every 100 ms until it answers `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// See the module docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_is_replaced_and_the_namespace_keeps_its_data() {
    let mut cluster = Cluster::start_with(4, CONFIG);
    let client = cluster.client().await;
    let created = client
        .create_namespace("r", vec![1, 2, 3], 3, Limits::default())
        .await
        .unwrap();
    let group = created.group;
    for index in 0..20 {
        client
            .put("r", &format!("/k{index}"), Bytes::from(format!("v{index}")))
            .await
            .unwrap();
    }

    // Node 2 goes away for good (as far as the grace period knows).
    let lost = 2;
    cluster.servers[1].kill();
    let started = Instant::now();
    let members = eventually(Duration::from_secs(30), "a replacement is recorded", || {
        let client = client.clone();
        async move {
            let info = client.namespaces().await.ok()?;
            let record = info.into_iter().find(|info| info.name == "r")?;
            let ids: Vec<u64> = record.members.iter().map(|(id, _)| *id).collect();
            (!ids.contains(&lost)).then_some(ids)
        }
    })
    .await;
    assert_eq!(
        members,
        [1, 4, 3],
        "node 4, the only other up node, replaces node 2"
    );
    // The group converges: node 4 votes, node 2 is removed.
    eventually(
        Duration::from_secs(30),
        "the group's voters are 1, 3, 4",
        || {
            let client = client.clone();
            async move { (voters(&client, group).await? == [1, 3, 4]).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "repair: node {lost} killed; replaced and removed after {:.1} s (grace 1.5 s)",
        started.elapsed().as_secs_f64()
    );

    // Node 4 holds every write, read from its own replica.
    let node4 = RaftClient::connect(cluster.servers[3].address.clone())
        .await
        .unwrap();
    let query = Query {
        revision: None,
        ops: (0..20)
            .map(|index| ReadOp::Get {
                path: concord_client::ServiceClient::path(&format!("/k{index}")).unwrap(),
            })
            .collect(),
    };
    let answer = eventually(
        Duration::from_secs(10),
        "node 4 has applied the writes",
        || {
            let node4 = node4.clone();
            let query = encode(&query);
            async move {
                let read = node4.read(group, query, ReadMode::Stale).await.ok()?;
                let answer: Result<QueryResponse, ServiceError> = decode(&read.response).ok()?;
                answer.ok()
            }
        },
    )
    .await;
    for (index, result) in answer.results.iter().enumerate() {
        let ReadResult::Node { value, .. } = result else {
            panic!("{result:?}")
        };
        assert_eq!(*value, NodeValue::Blob(Bytes::from(format!("v{index}"))));
    }
    // The namespace serves writes with its new member.
    client
        .put("r", "/after", Bytes::from_static(b"ok"))
        .await
        .unwrap();

    // Node 2 comes back: it is no longer a member and drops its replica.
    assert_eq!(cluster.servers[1].restart(), "resumed");
    let node2 = RaftClient::connect(cluster.servers[1].address.clone())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "node 2 drops its stale replica",
        || {
            let node2 = node2.clone();
            async move {
                matches!(
                    node2.status(group).await,
                    Err(ApiError::GroupNotFound { .. })
                )
                .then_some(())
            }
        },
    )
    .await;

    // Node 3 leaves the cluster for good: its namespaces get a replacement at once,
    // no grace period. Node 2, up again and no member, is the one chosen: it joins
    // afresh (the namespace's membership changed, so nobody founds it again).
    eventually(Duration::from_secs(10), "node 2 is recorded up", || {
        let client = client.clone();
        async move {
            let nodes = client.nodes().await.ok()?;
            (nodes[&lost].health == concord_service::meta::Health::Up).then_some(())
        }
    })
    .await;
    client.remove_node(3).await.unwrap();
    assert!(!client.nodes().await.unwrap().contains_key(&3));
    eventually(
        Duration::from_secs(30),
        "node 3 is replaced by node 2",
        || {
            let client = client.clone();
            async move { (voters(&client, group).await? == [1, 2, 4]).then_some(()) }
        },
    )
    .await;
    let (value, _) = client.get("r", "/after").await.unwrap();
    assert_eq!(value, NodeValue::Blob(Bytes::from_static(b"ok")));
    let read = node2
        .read(group, encode(&query), ReadMode::Stale)
        .await
        .unwrap();
    let answer: Result<QueryResponse, ServiceError> = decode(&read.response).unwrap();
    assert_eq!(
        answer.unwrap().results.len(),
        20,
        "node 2 holds the data again"
    );
}

// The founder the others joined through (the first meta leader) dies: the new meta
// leader records it down and replaces its replicas; namespaces are still created
// through the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_founder_and_meta_leader_is_repaired_too() {
    let mut cluster = Cluster::start_with(4, CONFIG);
    let client = cluster.client().await;
    let created = client
        .create_namespace("f", vec![1, 2, 3], 3, Limits::default())
        .await
        .unwrap();
    client
        .put("f", "/kept", Bytes::from_static(b"yes"))
        .await
        .unwrap();
    cluster.servers[0].kill();
    eventually(
        Duration::from_secs(30),
        "node 1 is replaced by node 4",
        || {
            let client = client.clone();
            async move { (voters(&client, created.group).await? == [2, 3, 4]).then_some(()) }
        },
    )
    .await;
    let (value, _) = client.get("f", "/kept").await.unwrap();
    assert_eq!(value, NodeValue::Blob(Bytes::from_static(b"yes")));
    // Admin through a survivor's typed API works without node 1.
    let mut namespaces = concord_proto::service::namespaces_client::NamespacesClient::connect(
        format!("http://{}", cluster.servers[1].address),
    )
    .await
    .unwrap();
    let made = namespaces
        .create(concord_proto::service::CreateNamespaceRequest {
            name: "later".into(),
            nodes: vec![],
            limits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.namespace.unwrap().members.len(), 3);
}
