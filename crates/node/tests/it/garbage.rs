//! A peer that sends garbage: raw bytes, undecodable protobuf, well-formed protobuf
//! with impossible contents. The receiver refuses it, counts it, and keeps serving.

use std::time::Duration;

use concord_node::transport::convert::message_to_proto;
use concord_node::transport::{Transport, TransportConfig, PROTOCOL_VERSION};
use concord_proto::transport::peer_transport_client::PeerTransportClient;
use concord_proto::transport::{self as proto, MessageBatch, StreamAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::support::{heartbeat, within, Endpoint};

fn config() -> TransportConfig {
    TransportConfig {
        reconnect_backoff_min_ms: 10,
        reconnect_backoff_max_ms: 100,
        ..TransportConfig::default()
    }
}

/// A stream's first batch from `from_node`, of this build's cluster and protocol.
fn batch(from_node: u64, messages: Vec<proto::GroupMessage>) -> MessageBatch {
    MessageBatch {
        from_node,
        messages,
        from_address: String::new(),
        cluster_id: TransportConfig::default().cluster_id,
        protocol_version: PROTOCOL_VERSION,
    }
}

/// Proves the endpoint still works: a fresh sender's message reaches it.
async fn assert_still_serving(receiver: &mut Endpoint) {
    let sender = Endpoint::start(50, config()).await;
    sender.learn(receiver);
    sender
        .transport
        .send(receiver.id, vec![(1, heartbeat(50, receiver.id, 77))]);
    loop {
        let inbound = receiver.next().await;
        if inbound.from == 50 {
            assert_eq!(inbound.message.commit, 77);
            break;
        }
    }
    sender.shutdown().await;
}

/// Writes `bytes` on a raw TCP connection and waits for the server to hang up.
async fn send_raw(address: std::net::SocketAddr, bytes: &[u8]) {
    let mut stream = within("raw connect", TcpStream::connect(address))
        .await
        .expect("connect");
    // The server may hang up before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut sink = Vec::new();
    let _ = within("server hangs up", stream.read_to_end(&mut sink)).await;
}

/// Raw garbage on the socket (not HTTP at all, and an HTTP/2 preface followed by
/// nonsense frames) makes the server drop that connection and nothing else.
#[tokio::test]
async fn raw_garbage_bytes_are_refused_and_the_server_survives() {
    let mut receiver = Endpoint::start(2, config()).await;
    send_raw(receiver.address, &[0xde, 0xad, 0xbe, 0xef].repeat(1000)).await;
    let mut http2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    http2.extend_from_slice(&[0xff; 4096]);
    send_raw(receiver.address, &http2).await;
    assert_still_serving(&mut receiver).await;
    receiver.shutdown().await;
}

/// Shaped like a `MessageBatch` on the wire, but field 2 holds bytes that are not a
/// valid `GroupMessage`.
#[derive(Clone, PartialEq, prost::Message)]
struct EvilBatch {
    #[prost(uint64, tag = "1")]
    from_node: u64,
    #[prost(bytes = "vec", tag = "2")]
    messages: Vec<u8>,
}

/// A gRPC frame that does not decode as a `MessageBatch` ends that stream with an
/// error to the sender, is counted as garbage, and leaves the server serving.
#[tokio::test]
async fn undecodable_protobuf_is_refused() {
    let mut receiver = Endpoint::start(2, config()).await;
    let channel = within(
        "connect",
        Channel::from_shared(format!("http://{}", receiver.address))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    within("ready", grpc.ready()).await.unwrap();
    let evil = EvilBatch {
        from_node: 1,
        // A truncated varint where a GroupMessage's first tag should be.
        messages: vec![0x08, 0xff, 0xff],
    };
    let request = tonic::Request::new(tokio_stream::iter(vec![evil]));
    let codec = tonic_prost::ProstCodec::<EvilBatch, StreamAck>::default();
    let path = PathAndQuery::from_static("/concord.transport.v1.PeerTransport/Stream");
    let response = within("open stream", grpc.streaming(request, path, codec))
        .await
        .expect("stream opens");
    let mut acks = response.into_inner();
    let ack = within("stream ends", acks.message()).await;
    assert!(ack.is_err(), "the stream ends with an error: {ack:?}");
    assert_eq!(receiver.counters().refused_garbage, 1);
    assert_eq!(receiver.counters().received, 0);
    assert_still_serving(&mut receiver).await;
    receiver.shutdown().await;
}

/// Well-formed protobuf with impossible contents: each bad message is refused and
/// counted on its own while the good ones in the same batch are delivered, and the
/// receiver's ack reports the refusals. A batch without a sender ends the stream.
#[tokio::test]
async fn malformed_messages_are_refused_one_by_one() {
    let mut receiver = Endpoint::start(2, config()).await;
    let good = |tag| proto::GroupMessage {
        group: 1,
        message: Some(message_to_proto(heartbeat(1, 2, tag))),
    };
    let with = |change: fn(&mut proto::RaftMessage)| {
        let mut message = good(0);
        change(message.message.as_mut().unwrap());
        message
    };
    let mixed = batch(
        1,
        vec![
            good(1),
            with(|message| message.kind = 99),
            with(|message| message.kind = 0),
            proto::GroupMessage {
                group: 1,
                message: None,
            },
            with(|message| message.to = 3),
            with(|message| message.from = 4),
            with(|message| message.kind = proto::MessageKind::Snapshot as i32),
            good(2),
        ],
    );
    let mut client = within(
        "connect",
        PeerTransportClient::connect(format!("http://{}", receiver.address)),
    )
    .await
    .unwrap();
    let response = within("stream", client.stream(tokio_stream::iter(vec![mixed])))
        .await
        .unwrap();
    let mut acks = response.into_inner();
    let ack = within("ack", acks.message())
        .await
        .unwrap()
        .expect("an ack");
    assert_eq!(
        ack,
        StreamAck {
            batches_received: 1,
            messages_accepted: 2,
            messages_refused: 6,
            messages_dropped: 0,
        }
    );
    assert_eq!(receiver.next().await.message.commit, 1);
    assert_eq!(receiver.next().await.message.commit, 2);
    assert_eq!(receiver.counters().refused_garbage, 6);

    // from_node 0: the whole stream is refused.
    let anonymous = batch(0, vec![good(3)]);
    let response = within("stream", client.stream(tokio_stream::iter(vec![anonymous])))
        .await
        .unwrap();
    let ended = within("stream ends", response.into_inner().message()).await;
    assert_eq!(ended.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(receiver.counters().refused_garbage, 7);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        receiver.inbox.try_recv().is_err(),
        "nothing from the refused stream"
    );
    assert_still_serving(&mut receiver).await;
    receiver.shutdown().await;
}

/// The receiver acks a busy stream sparingly: once after its first batch, and again
/// as soon as a message is refused, not after every batch.
#[tokio::test]
async fn acks_come_after_the_first_batch_and_after_refusals() {
    let mut receiver = Endpoint::start(2, config()).await;
    let good = |tag| proto::GroupMessage {
        group: 1,
        message: Some(message_to_proto(heartbeat(1, 2, tag))),
    };
    let (batches, queued) = tokio::sync::mpsc::channel(64);
    let mut client = within(
        "connect",
        PeerTransportClient::connect(format!("http://{}", receiver.address)),
    )
    .await
    .unwrap();
    let response = within(
        "stream",
        client.stream(tokio_stream::wrappers::ReceiverStream::new(queued)),
    )
    .await
    .unwrap();
    let mut acks = response.into_inner();
    for tag in 1..=20 {
        batches.send(batch(1, vec![good(tag)])).await.unwrap();
        assert_eq!(receiver.next().await.message.commit, tag);
    }
    let first = within("first ack", acks.message()).await.unwrap().unwrap();
    assert_eq!(first.batches_received, 1);
    let quiet = tokio::time::timeout(Duration::from_millis(300), acks.message()).await;
    assert!(quiet.is_err(), "no ack per batch: {quiet:?}");

    let mut refused = good(21);
    refused.message.as_mut().unwrap().to = 3;
    batches.send(batch(1, vec![refused])).await.unwrap();
    let ack = within("ack after a refusal", acks.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            ack.batches_received,
            ack.messages_accepted,
            ack.messages_refused
        ),
        (21, 20, 1)
    );
    drop(batches);
    receiver.shutdown().await;
}

/// A stream from a node of another cluster, or speaking a protocol version this
/// build does not, is refused whole with FAILED_PRECONDITION naming what differs;
/// nothing it carried is delivered, its messages are counted, and the receiver keeps
/// serving its own cluster.
#[tokio::test]
async fn peers_of_another_cluster_or_protocol_are_refused() {
    let mut receiver = Endpoint::start(2, config()).await;
    let good = proto::GroupMessage {
        group: 1,
        message: Some(message_to_proto(heartbeat(1, 2, 5))),
    };
    let mut client = within(
        "connect",
        PeerTransportClient::connect(format!("http://{}", receiver.address)),
    )
    .await
    .unwrap();
    let mut foreign = batch(1, vec![good.clone(), good.clone()]);
    foreign.cluster_id = "elsewhere".into();
    let mut future = batch(1, vec![good]);
    future.protocol_version = PROTOCOL_VERSION + 1;
    for (refused, names) in [(foreign, "\"elsewhere\""), (future, "version")] {
        let response = within("stream", client.stream(tokio_stream::iter(vec![refused])))
            .await
            .unwrap();
        let ended = within("stream ends", response.into_inner().message())
            .await
            .unwrap_err();
        assert_eq!(ended.code(), tonic::Code::FailedPrecondition);
        assert!(ended.message().contains(names), "{}", ended.message());
    }
    assert_eq!(receiver.counters().refused_peer_streams, 3);
    assert_eq!(receiver.counters().received, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(receiver.inbox.try_recv().is_err(), "nothing delivered");
    assert_still_serving(&mut receiver).await;

    // A transport of another cluster never gets a message through.
    let outsider = Endpoint::start(
        60,
        TransportConfig {
            cluster_id: "elsewhere".into(),
            ..config()
        },
    )
    .await;
    outsider.learn(&receiver);
    for tag in 0..5 {
        outsider
            .transport
            .send(receiver.id, vec![(1, heartbeat(60, receiver.id, tag))]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while receiver.counters().refused_peer_streams < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outsider not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        receiver.inbox.try_recv().is_err(),
        "nothing from the outsider"
    );
    outsider.shutdown().await;
    receiver.shutdown().await;
}
