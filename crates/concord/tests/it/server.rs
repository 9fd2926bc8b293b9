//! `concord server` as users meet it: real processes on loopback, driven through
//! `concord-client`'s `ServiceClient`.

use bytes::Bytes;
use concord_client::service::Error;
use concord_service::command::{Guard, Op, OpResult, ReadOp, ReadResult, Txn};
use concord_service::meta::MetaError;
use concord_service::{Limit, Limits, NodeKind, NodeValue, ServiceError};

use crate::cluster::Cluster;

fn path(text: &str) -> concord_service::Path {
    concord_client::ServiceClient::path(text).unwrap()
}

// A three-node cluster: a namespace created at runtime lands on three nodes, serves
// the tree's operations with their metadata, refuses bad requests with typed errors
// that change nothing, and survives a restart of every node with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_serve_the_tree_and_survive_a_full_restart() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;

    let created = client
        .create_namespace("orders", vec![], 3, Limits::default())
        .await
        .unwrap();
    assert_eq!(created.members.len(), 3);
    let names: Vec<String> = client
        .namespaces()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.name)
        .collect();
    assert_eq!(names, ["meta", "default", "orders"]);
    // Each node's metrics name the namespaces it hosts.
    let page = cluster.servers[0].metrics_page();
    assert!(
        page.contains(&format!(
            "concord_group_applied_index{{node=\"1\",group=\"{}\",namespace=\"orders\"}}",
            created.group
        )),
        "{page}"
    );

    // Writes: one revision per transaction, a version per node.
    let stat = client
        .put("orders", "/a", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!((stat.version, stat.modify_revision), (1, 1));
    let txn = Txn {
        guards: vec![Guard::VersionEquals {
            path: path("/a"),
            version: 1,
        }],
        then: vec![
            Op::BlobPut {
                path: path("/a"),
                value: Bytes::from_static(b"two"),
            },
            Op::Create {
                path: path("/dir/c"),
                value: NodeValue::Counter(5),
                parents: true,
            },
            Op::CounterAdd {
                path: path("/dir/c"),
                delta: 2,
            },
        ],
        otherwise: vec![],
    };
    let response = client.txn("orders", txn.clone()).await.unwrap();
    assert!(response.succeeded);
    assert_eq!(response.revision, 2);
    assert!(response.term >= 1 && response.index > 1);
    assert!(matches!(
        response.results[2],
        OpResult::Counter { value: 7, .. }
    ));
    // The same transaction again: its guard fails now, nothing changes. Each reply
    // names the request number it answered.
    let again = client.txn("orders", txn).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.revision, 2);
    assert!(response.request >= 1 && again.request == response.request + 1);
    let (value, stat) = client.get("orders", "/a").await.unwrap();
    assert_eq!(value, NodeValue::Blob(Bytes::from_static(b"two")));
    assert_eq!((stat.version, stat.create_revision), (2, 1));

    // Refusals, each typed, none changing anything.
    assert!(matches!(
        client.get("orders", "/missing").await,
        Err(Error::Service(ServiceError::NotFound { .. }))
    ));
    assert!(matches!(
        client.get("nowhere", "/a").await,
        Err(Error::NoSuchNamespace(name)) if name == "nowhere"
    ));
    let wrong_type = client
        .txn(
            "orders",
            Txn::single(Op::CounterAdd {
                path: path("/a"),
                delta: 1,
            }),
        )
        .await;
    assert!(
        matches!(
            &wrong_type,
            Err(Error::Service(ServiceError::WrongType {
                actual: NodeKind::Blob,
                ..
            }))
        ),
        "{wrong_type:?}"
    );
    let too_big = client
        .put("orders", "/big", Bytes::from(vec![0u8; 1024 * 1024 + 1]))
        .await;
    assert!(
        matches!(
            &too_big,
            Err(Error::Service(ServiceError::LimitExceeded {
                limit: Limit::ValueBytes,
                ..
            }))
        ),
        "{too_big:?}"
    );
    assert!(matches!(
        concord_client::ServiceClient::path("no-slash"),
        Err(Error::Service(ServiceError::InvalidPath { .. }))
    ));
    assert_eq!(
        client
            .create_namespace("orders", vec![], 3, Limits::default())
            .await,
        Err(Error::Meta(MetaError::NamespaceExists("orders".into())))
    );
    assert_eq!(
        client
            .create_namespace("elsewhere", vec![9], 1, Limits::default())
            .await,
        Err(Error::Meta(MetaError::NoSuchNode(9)))
    );
    assert_eq!(
        client.delete_namespace("meta").await,
        Err(Error::Meta(MetaError::Meta))
    );
    let query = concord_service::command::Query {
        revision: None,
        ops: vec![ReadOp::List {
            path: path("/"),
            after: None,
            limit: 10,
        }],
    };
    let listed = client
        .query(
            "orders",
            query.clone(),
            concord_client::ReadMode::Linearizable,
        )
        .await
        .unwrap();
    let ReadResult::List { children, more } = &listed.results[0] else {
        panic!("{listed:?}")
    };
    let names: Vec<&str> = children.iter().map(|child| child.name.as_str()).collect();
    assert_eq!((names, *more), (vec!["a", "dir"], false));
    assert_eq!(listed.revision, 2, "the refusals changed nothing");

    // A full restart keeps the namespace and its data.
    drop(client);
    for server in &mut cluster.servers {
        server.terminate();
    }
    for server in &mut cluster.servers {
        assert_eq!(server.restart(), "resumed");
    }
    let client = cluster.client().await;
    let (value, _) = client.get("orders", "/a").await.unwrap();
    assert_eq!(value, NodeValue::Blob(Bytes::from_static(b"two")));
    let after = client
        .query("orders", query, concord_client::ReadMode::Linearizable)
        .await
        .unwrap();
    assert_eq!(after, listed);

    // Deleting a namespace removes it; its name is then unknown. A client that
    // still routes to it (it read just before) is refused, never acknowledged by
    // the group about to be dropped.
    let stale = cluster.client().await;
    stale.get("orders", "/a").await.unwrap();
    client.delete_namespace("orders").await.unwrap();
    let late = stale.put("orders", "/late", Bytes::from_static(b"x")).await;
    assert!(
        matches!(
            late,
            Err(Error::Service(ServiceError::NamespaceDeleted)) | Err(Error::NoSuchNamespace(_))
        ),
        "{late:?}"
    );
    assert!(matches!(
        client.get("orders", "/a").await,
        Err(Error::NoSuchNamespace(_))
    ));
}
