//! The gRPC transport between real endpoints on loopback ports.

use std::collections::BTreeMap;

use concord_node::transport::{Transport, TransportConfig};

use crate::support::{append, bind, heartbeat, heartbeats, within, Endpoint};

/// Limits small enough to exercise batching, and fast reconnection.
fn test_config() -> TransportConfig {
    TransportConfig {
        batch_messages_max: 8,
        reconnect_backoff_min_ms: 10,
        reconnect_backoff_max_ms: 200,
        ..TransportConfig::default()
    }
}

/// Two endpoints exchange messages for several groups both ways over one stream
/// each: every message arrives once, unchanged, attributed to its sender and group,
/// in the order sent, though they travel in batches of at most 8.
#[tokio::test]
async fn endpoints_exchange_batches_for_several_groups() {
    let mut one = Endpoint::start(1, test_config()).await;
    let mut two = Endpoint::start(2, test_config()).await;
    one.learn(&two);
    two.learn(&one);

    let groups = [1u64, 7, 42, 1 << 40];
    let per_group = 25u64;
    for &group in &groups {
        // One send per group, each more than a batch's worth.
        one.transport.send(2, heartbeats(1, 2, group, 0..per_group));
        two.transport.send(1, heartbeats(2, 1, group, 0..per_group));
    }
    for (receiver, sender) in [(&mut two, 1), (&mut one, 2)] {
        let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for _ in 0..groups.len() as u64 * per_group {
            let inbound = receiver.next().await;
            assert_eq!(inbound.from, sender);
            assert_eq!(
                inbound.message,
                heartbeat(sender, receiver.id, inbound.message.commit)
            );
            seen.entry(inbound.group)
                .or_default()
                .push(inbound.message.commit);
        }
        for &group in &groups {
            assert_eq!(
                seen[&group],
                (0..per_group).collect::<Vec<_>>(),
                "group {group}"
            );
        }
        assert!(receiver.inbox.try_recv().is_err(), "no extra messages");
    }
    let total = groups.len() as u64 * per_group;
    for endpoint in [&one, &two] {
        let counters = endpoint.counters();
        assert_eq!(counters.sent, total);
        assert_eq!(counters.received, total);
        // At most 8 messages a batch; batches are formed from whatever was queued.
        assert!(counters.batches_sent >= total / 8 && counters.batches_sent <= total);
        assert_eq!(counters.refused_garbage + counters.refused_too_large, 0);
    }
    assert_eq!(one.counters().batches_sent, two.counters().batches_received);
    assert_eq!(two.counters().batches_sent, one.counters().batches_received);
    one.shutdown().await;
    two.shutdown().await;
}

/// When a peer's server goes away and comes back on the same port, the sender
/// reconnects (with backoff, counted) and messages flow again without any call from
/// the node.
#[tokio::test]
async fn reconnects_after_peer_restart() {
    let one = Endpoint::start(1, test_config()).await;
    let mut two = Endpoint::start(2, test_config()).await;
    one.learn(&two);

    one.transport.send(2, vec![(1, heartbeat(1, 2, 1))]);
    assert_eq!(two.next().await.message.commit, 1);

    two.stop_server().await;
    // Sent while the peer is down: queued or lost, never an error for the caller.
    one.transport.send(2, vec![(1, heartbeat(1, 2, 2))]);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    two.restart_server().await;

    // Keep sending until a message sent after the restart arrives.
    within("a message after the restart", async {
        let mut tag = 100;
        loop {
            one.transport.send(2, vec![(1, heartbeat(1, 2, tag))]);
            tag += 1;
            if let Ok(Some(inbound)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), two.inbox.recv()).await
            {
                if inbound.message.commit >= 100 {
                    break;
                }
            }
        }
    })
    .await;
    assert!(one.counters().reconnects >= 1, "{:?}", one.counters());
    one.shutdown().await;
    two.shutdown().await;
}

/// A message over `message_bytes_max` is dropped by the sender (counted, never
/// written) while the messages around it still go through.
#[tokio::test]
async fn oversized_message_is_dropped_on_send() {
    let small_messages = TransportConfig {
        message_bytes_max: 1_000,
        ..test_config()
    };
    let one = Endpoint::start(1, small_messages).await;
    let mut two = Endpoint::start(2, test_config()).await;
    one.learn(&two);

    one.transport.send(
        2,
        vec![
            (1, heartbeat(1, 2, 1)),
            (1, append(1, 2, 5_000)),
            (1, heartbeat(1, 2, 2)),
        ],
    );
    assert_eq!(two.next().await.message.commit, 1);
    assert_eq!(two.next().await.message.commit, 2);
    let counters = one.counters();
    assert_eq!(counters.dropped_too_large, 1);
    assert_eq!(counters.sent, 2);
    assert_eq!(two.counters().refused_too_large, 0);
    one.shutdown().await;
    two.shutdown().await;
}

/// A receiver refuses what is over its own limits even when the sender allowed it: a
/// message over `message_bytes_max` inside an acceptable frame is refused alone; a
/// frame over gRPC's decoding limit ends the stream, after which the sender
/// reconnects and later messages arrive.
#[tokio::test]
async fn oversized_message_is_refused_on_receive() {
    let strict = TransportConfig {
        message_bytes_max: 1_000,
        batch_bytes_max: 16 * 1024,
        ..test_config()
    };
    let frame_bytes_max = strict.frame_bytes_max();
    let one = Endpoint::start(1, test_config()).await;
    let mut two = Endpoint::start(2, strict).await;
    one.learn(&two);

    // Within the frame limit, over the message limit: refused alone.
    one.transport.send(
        2,
        vec![
            (3, heartbeat(1, 2, 1)),
            (3, append(1, 2, 5_000)),
            (3, heartbeat(1, 2, 2)),
        ],
    );
    assert_eq!(two.next().await.message.commit, 1);
    assert_eq!(two.next().await.message.commit, 2);
    assert_eq!(two.counters().refused_too_large, 1);

    // Over the frame limit: the frame is refused and the stream ends.
    one.transport
        .send(2, vec![(3, append(1, 2, frame_bytes_max + 1))]);
    crate::support::eventually("the big frame refused", || {
        two.counters().refused_too_large == 2
    })
    .await;
    within("a message after the refused frame", async {
        let mut tag = 100;
        loop {
            one.transport.send(2, vec![(3, heartbeat(1, 2, tag))]);
            tag += 1;
            if let Ok(Some(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), two.inbox.recv()).await
            {
                break;
            }
        }
    })
    .await;
    assert!(one.counters().reconnects >= 1);
    assert_eq!(two.counters().refused_garbage, 0);
    one.shutdown().await;
    two.shutdown().await;
}

/// While a peer is unreachable its queue fills to `peer_queue_messages_max` and then
/// drops, counted; sending to a peer never set, or removed, drops and counts too.
/// None of it blocks the caller.
#[tokio::test]
async fn full_queue_and_unknown_peer_drop_and_count() {
    let config = TransportConfig {
        peer_queue_messages_max: 16,
        ..test_config()
    };
    let one = Endpoint::start(1, config).await;
    // A port with nothing listening: bind, note the address, close.
    let (listener, dead_address) = bind().await;
    drop(listener);
    one.transport.set_peer(9, dead_address.to_string());
    one.transport.send(9, heartbeats(1, 9, 1, 0..26));
    let counters = one.counters();
    assert_eq!(counters.dropped_queue_full, 10);
    assert_eq!(counters.sent, 0);

    crate::support::eventually("connection attempts counted", || {
        one.counters().connect_failures >= 1
    })
    .await;
    assert_eq!(one.counters().sent, 0);

    one.transport.send(5, heartbeats(1, 5, 1, 0..3));
    assert_eq!(one.counters().dropped_no_peer, 3);
    one.transport.remove_peer(9);
    one.transport.send(9, heartbeats(1, 9, 1, 0..2));
    assert_eq!(one.counters().dropped_no_peer, 5);
    assert!(one.transport.peers().is_empty());
    one.shutdown().await;
}

/// Messages for a group the receiver does not know are delivered all the same: the
/// transport does not filter by group, the node decides.
#[tokio::test]
async fn unknown_groups_are_delivered() {
    let one = Endpoint::start(1, test_config()).await;
    let mut two = Endpoint::start(2, test_config()).await;
    one.learn(&two);
    one.transport.send(2, vec![(u64::MAX, heartbeat(1, 2, 5))]);
    let inbound = two.next().await;
    assert_eq!((inbound.group, inbound.message.commit), (u64::MAX, 5));
    one.shutdown().await;
    two.shutdown().await;
}

/// A full-size InstallSnapshot chunk (1 MiB, the core's default chunk size) crosses
/// the default limits intact, membership and all, between ordinary messages.
#[tokio::test]
async fn snapshot_chunks_travel_intact() {
    use concord_raft::{ConfState, Message, MessageKind, SnapshotChunk, SnapshotMetadata};
    let one = Endpoint::start(1, TransportConfig::default()).await;
    let mut two = Endpoint::start(2, TransportConfig::default()).await;
    one.learn(&two);
    let mut snapshot = Message::new(MessageKind::Snapshot, 1, 2, 4);
    snapshot.snapshot = Some(Box::new(SnapshotChunk {
        metadata: SnapshotMetadata {
            index: 1_000,
            term: 3,
            conf_state: ConfState {
                voters: vec![1, 2],
                learners: vec![3],
                ..ConfState::default()
            },
        },
        offset: 1 << 20,
        total_bytes: 3 << 20,
        data: bytes::Bytes::from((0..1 << 20).map(|i| i as u8).collect::<Vec<u8>>()),
    }));
    one.transport.send(
        2,
        vec![
            (5, heartbeat(1, 2, 1)),
            (5, snapshot.clone()),
            (5, heartbeat(1, 2, 2)),
        ],
    );
    assert_eq!(two.next().await.message.commit, 1);
    assert_eq!(two.next().await.message, snapshot);
    assert_eq!(two.next().await.message.commit, 2);
    one.shutdown().await;
    two.shutdown().await;
}
