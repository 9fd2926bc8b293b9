//! Bad input on a server's port: malformed requests through the typed `concord.v1`
//! API, bytes that are not a command through the Raft API, random and truncated
//! bytes on the TCP port, and a client that opens hundreds of connections. Each gets
//! a clear error or is dropped; the server keeps serving and nothing stored changes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use concord_client::ReadMode;
use concord_proto::service as proto;
use concord_proto::service::tree_client::TreeClient;
use concord_service::command::{Query, ReadOp};
use concord_service::Limits;
use tonic::Code;

use crate::cluster::Cluster;

/// The namespace's revision, read linearizably.
async fn revision(client: &concord_client::ServiceClient) -> u64 {
    let query = Query {
        revision: None,
        ops: vec![ReadOp::Stat {
            path: concord_client::ServiceClient::path("/").unwrap(),
        }],
    };
    client
        .query("bad", query, ReadMode::Linearizable)
        .await
        .unwrap()
        .revision
}

// See the module docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let cluster = Cluster::start(1);
    let address = cluster.servers[0].address.clone();
    let client = cluster.client().await;
    client
        .create_namespace("bad", vec![], 1, Limits::default())
        .await
        .unwrap();
    client
        .put("bad", "/kept", Bytes::from_static(b"value"))
        .await
        .unwrap();
    let before = revision(&client).await;

    // The typed API: each malformed request named for what is wrong.
    let mut tree = TreeClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let txn = |namespace: &str, op: proto::op::Op| proto::TxnRequest {
        namespace: namespace.to_string(),
        id: None,
        guards: vec![],
        then: vec![proto::Op { op: Some(op) }],
        otherwise: vec![],
    };
    let bad_path = tree
        .txn(txn(
            "bad",
            proto::op::Op::BlobPut(proto::BlobWrite {
                path: "no/leading/slash".into(),
                value: b"x".to_vec().into(),
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    let error = bad_path.error.expect("a bad path is refused");
    assert!(
        matches!(error.kind, Some(proto::service_error::Kind::InvalidPath(_))),
        "{error:?}"
    );
    assert!(
        error.message.contains("no/leading/slash"),
        "{}",
        error.message
    );
    let empty_op = tree
        .txn(proto::TxnRequest {
            then: vec![proto::Op { op: None }],
            ..txn("bad", proto::op::Op::QueuePop("/q".into()))
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            empty_op.error.and_then(|e| e.kind),
            Some(proto::service_error::Kind::InvalidRequest(_))
        ),
        "an operation with nothing set is an invalid request"
    );
    let unknown = tree
        .txn(txn("nowhere", proto::op::Op::QueuePop("/q".into())))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("nowhere"),
        "{}",
        unknown.message()
    );
    let meta = tree
        .query(proto::QueryRequest {
            namespace: "meta".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(meta.code(), Code::InvalidArgument);

    // Bytes that are not a command, through the Raft API: refused, not applied.
    let raft = client.raft();
    let group = client
        .namespaces()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.name == "bad")
        .unwrap()
        .group;
    let answer = raft
        .propose(group, Bytes::from_static(b"\xff\x00garbage"))
        .await
        .unwrap();
    let refused: Result<concord_service::command::TxnResponse, concord_service::ServiceError> =
        concord_service::command::decode(&answer.response).unwrap();
    assert!(refused.is_err(), "{refused:?}");

    // Random and truncated bytes on the port, and hundreds of connections held open.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for length in [1usize, 9, 24, 100, 4096] {
        let mut garbage = vec![0u8; length];
        for byte in &mut garbage {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&garbage);
        let mut answer = Vec::new();
        // The server answers with an HTTP/2 GOAWAY or closes: either way it ends.
        let _ = stream.read_to_end(&mut answer);
    }
    // A valid HTTP/2 preface, then a gRPC request cut off in the middle.
    let mut stream = TcpStream::connect(&address).unwrap();
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00");
    drop(stream);
    let held: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    assert_eq!(
        client.get("bad", "/kept").await.unwrap().0,
        concord_service::NodeValue::Blob(Bytes::from_static(b"value"))
    );
    drop(held);

    // Nothing stored changed; the server serves on.
    assert_eq!(revision(&client).await, before);
    client
        .put("bad", "/after", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(revision(&client).await, before + 1);
}
