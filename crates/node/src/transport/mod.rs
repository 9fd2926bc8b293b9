//! Moving raft messages between nodes.
//!
//! A node sends through a [`Transport`] and receives on its inbox: a bounded
//! `tokio::sync::mpsc` channel of [`Inbound`] messages that every transport delivers
//! into with `try_send`, dropping (and counting) when the node falls behind rather
//! than blocking the network. Raft tolerates lost messages; it does not tolerate a
//! transport that stalls every peer because one group is slow.
//!
//! - [`grpc`]: the real transport, one long-lived gRPC stream per peer carrying
//!   batches for all groups ([`grpc::GrpcTransport`] sends, [`grpc::TransportServer`]
//!   receives).
//! - [`memory`]: an in-process transport over channels, for tests.
//! - [`faults`]: a wrapper that drops, delays and partitions, for fault tests.
//! - [`convert`]: raft messages to and from their wire form, strictly checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use concord_raft::{Message, NodeId};
use tokio::sync::mpsc;

pub mod convert;
pub mod faults;
pub mod grpc;
pub mod memory;

/// A raft message and the group it belongs to.
pub type GroupMessage = (u64, Message);

/// A message that arrived from a peer, as the node's inbox receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The node that sent it.
    pub from: NodeId,
    /// The raft group it belongs to. It may be a group this node does not host: the
    /// node decides what to do with those.
    pub group: u64,
    /// The message.
    pub message: Message,
}

/// How a node sends raft messages to its peers.
pub trait Transport: Send + Sync + 'static {
    /// Queues messages for `to`; never blocks; drops (and counts) on overflow.
    fn send(&self, to: NodeId, messages: Vec<GroupMessage>);
    /// Learns or updates where a peer listens.
    fn set_peer(&self, id: NodeId, address: String);
    /// Forgets a peer and closes its stream.
    fn remove_peer(&self, id: NodeId);
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(&self, to: NodeId, messages: Vec<GroupMessage>) {
        (**self).send(to, messages)
    }

    fn set_peer(&self, id: NodeId, address: String) {
        (**self).set_peer(id, address)
    }

    fn remove_peer(&self, id: NodeId) {
        (**self).remove_peer(id)
    }
}

/// The transport's limits and timings. Both ends of a link should use the same
/// values: the receiver refuses what is over its own limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Most messages in one batch sent on a peer stream.
    pub batch_messages_max: usize,
    /// Most encoded bytes of messages in one batch. A single message larger than this
    /// (but within `message_bytes_max`) still goes, alone.
    pub batch_bytes_max: u64,
    /// Most encoded bytes of one raft message. Larger messages are dropped on send and
    /// refused on receipt. Must exceed the raft config's `append_bytes_max` and
    /// `snapshot_chunk_bytes_max` (plus headers), or replication stalls.
    pub message_bytes_max: u64,
    /// Most messages queued for one peer while its stream is busy or down; more are
    /// dropped (and counted).
    pub peer_queue_messages_max: usize,
    /// Capacity of the node's inbox, in messages (see [`inbox`]).
    pub inbox_messages_max: usize,
    /// First wait before reconnecting to a peer, in milliseconds; doubles per failed
    /// attempt up to `reconnect_backoff_max_ms`.
    pub reconnect_backoff_min_ms: u64,
    /// Longest wait between reconnection attempts, in milliseconds.
    pub reconnect_backoff_max_ms: u64,
    /// How long one connection attempt may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Interval of HTTP/2 keep-alive pings on peer connections, in milliseconds.
    pub keepalive_interval_ms: u64,
    /// How long a keep-alive ping may go unanswered before the connection is
    /// considered dead, in milliseconds.
    pub keepalive_timeout_ms: u64,
    /// The cluster this node belongs to; streams from peers of another cluster are
    /// refused.
    pub cluster_id: String,
}

/// The peer protocol version this build speaks, sent at the start of every stream.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest peer protocol version this build accepts.
pub const PROTOCOL_VERSION_MIN: u32 = 1;

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            batch_messages_max: 1024,
            batch_bytes_max: 4 * 1024 * 1024,
            message_bytes_max: 16 * 1024 * 1024,
            peer_queue_messages_max: 8192,
            inbox_messages_max: 65536,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 5_000,
            connect_timeout_ms: 3_000,
            keepalive_interval_ms: 5_000,
            keepalive_timeout_ms: 10_000,
            cluster_id: crate::config::DEFAULT_CLUSTER_ID.into(),
        }
    }
}

impl TransportConfig {
    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("batch_messages_max", self.batch_messages_max as u64),
            ("batch_bytes_max", self.batch_bytes_max),
            ("message_bytes_max", self.message_bytes_max),
            (
                "peer_queue_messages_max",
                self.peer_queue_messages_max as u64,
            ),
            ("inbox_messages_max", self.inbox_messages_max as u64),
            ("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("transport config: {name} must be positive"));
            }
        }
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms {
            return Err(
                "transport config: reconnect_backoff_max_ms must be at least reconnect_backoff_min_ms"
                    .into(),
            );
        }
        if self.message_bytes_max > u32::MAX as u64 / 2 {
            return Err("transport config: message_bytes_max must be below 2 GiB".into());
        }
        if self.batch_bytes_max > u32::MAX as u64 / 2 {
            return Err("transport config: batch_bytes_max must be below 2 GiB".into());
        }
        Ok(())
    }

    /// The largest encoded batch a receiver accepts: a sender stops adding to a batch
    /// once it reaches `batch_bytes_max`, so a batch holds at most that plus one
    /// message of `message_bytes_max`, plus per-message framing. Used as gRPC's
    /// decoding limit, so a bigger frame is refused before it is buffered whole.
    pub fn frame_bytes_max(&self) -> usize {
        // Per message: the GroupMessage and RaftMessage tags and lengths, and the group.
        const FRAMING_BYTES_PER_MESSAGE: u64 = 32;
        const FRAMING_BYTES_PER_BATCH: u64 = 64;
        let payload = self.batch_bytes_max + self.message_bytes_max;
        let framing =
            FRAMING_BYTES_PER_MESSAGE * self.batch_messages_max as u64 + FRAMING_BYTES_PER_BATCH;
        (payload + framing) as usize
    }
}

/// Makes a node's inbox: a channel of `config.inbox_messages_max` messages.
pub fn inbox(config: &TransportConfig) -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
    mpsc::channel(config.inbox_messages_max)
}

/// The transport's counters, shared by its tasks; read them with
/// [`TransportMetrics::snapshot`]. Every count is of raft messages unless it says
/// otherwise.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// Messages handed to a peer's stream.
    pub sent: AtomicU64,
    /// Batches handed to peer streams (`sent / batches_sent` is the mean batch size).
    pub batches_sent: AtomicU64,
    /// Messages dropped because the peer's send queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages dropped on send for exceeding `message_bytes_max`.
    pub dropped_too_large: AtomicU64,
    /// Messages dropped on send because the peer is unknown or was removed.
    pub dropped_no_peer: AtomicU64,
    /// Messages lost because the stream they were written to broke.
    pub dropped_stream_broken: AtomicU64,
    /// Messages received and delivered to the inbox.
    pub received: AtomicU64,
    /// Batches received from peer streams.
    pub batches_received: AtomicU64,
    /// Received messages dropped because the inbox was full (or closed).
    pub dropped_inbox_full: AtomicU64,
    /// Received messages (or whole frames) refused for exceeding `message_bytes_max`
    /// or the frame limit.
    pub refused_too_large: AtomicU64,
    /// Received messages (or whole frames) refused as malformed: undecodable bytes,
    /// unknown enum values, missing fields, wrong sender or receiver.
    pub refused_garbage: AtomicU64,
    /// Received messages refused with their whole stream because the peer is of
    /// another cluster or speaks another protocol version.
    pub refused_peer_streams: AtomicU64,
    /// Streams to peers re-established after one was lost.
    pub reconnects: AtomicU64,
    /// Connection or stream attempts that failed.
    pub connect_failures: AtomicU64,
}

/// A point-in-time copy of [`TransportMetrics`], for printing and assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Each field is the counter of the same name in TransportMetrics.
pub struct TransportMetricsSnapshot {
    pub sent: u64,
    pub batches_sent: u64,
    pub dropped_queue_full: u64,
    pub dropped_too_large: u64,
    pub dropped_no_peer: u64,
    pub dropped_stream_broken: u64,
    pub received: u64,
    pub batches_received: u64,
    pub dropped_inbox_full: u64,
    pub refused_too_large: u64,
    pub refused_garbage: u64,
    pub refused_peer_streams: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
}

impl TransportMetrics {
    /// Reads every counter (each atomically; not all at one instant).
    pub fn snapshot(&self) -> TransportMetricsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportMetricsSnapshot {
            sent: read(&self.sent),
            batches_sent: read(&self.batches_sent),
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_too_large: read(&self.dropped_too_large),
            dropped_no_peer: read(&self.dropped_no_peer),
            dropped_stream_broken: read(&self.dropped_stream_broken),
            received: read(&self.received),
            batches_received: read(&self.batches_received),
            dropped_inbox_full: read(&self.dropped_inbox_full),
            refused_too_large: read(&self.refused_too_large),
            refused_garbage: read(&self.refused_garbage),
            refused_peer_streams: read(&self.refused_peer_streams),
            reconnects: read(&self.reconnects),
            connect_failures: read(&self.connect_failures),
        }
    }
}

impl TransportMetricsSnapshot {
    /// How many counters there are.
    pub const FIELDS: usize = 14;

    /// `(name, value)` for every counter, in declaration order, for a metrics page.
    pub fn fields(&self) -> [(&'static str, u64); Self::FIELDS] {
        [
            ("sent", self.sent),
            ("batches_sent", self.batches_sent),
            ("dropped_queue_full", self.dropped_queue_full),
            ("dropped_too_large", self.dropped_too_large),
            ("dropped_no_peer", self.dropped_no_peer),
            ("dropped_stream_broken", self.dropped_stream_broken),
            ("received", self.received),
            ("batches_received", self.batches_received),
            ("dropped_inbox_full", self.dropped_inbox_full),
            ("refused_too_large", self.refused_too_large),
            ("refused_garbage", self.refused_garbage),
            ("refused_peer_streams", self.refused_peer_streams),
            ("reconnects", self.reconnects),
            ("connect_failures", self.connect_failures),
        ]
    }
}

/// Adds `count` to a counter.
pub(crate) fn count(counter: &AtomicU64, count: u64) {
    counter.fetch_add(count, Ordering::Relaxed);
}

/// Why [`deliver`] did not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliverError {
    /// The inbox was full; the message was dropped.
    Full,
    /// The inbox is closed: the node is gone.
    Closed,
}

/// Puts one message in a node's inbox without waiting, counting the outcome.
pub(crate) fn deliver(
    inbox: &mpsc::Sender<Inbound>,
    metrics: &TransportMetrics,
    inbound: Inbound,
) -> Result<(), DeliverError> {
    match inbox.try_send(inbound) {
        Ok(()) => {
            count(&metrics.received, 1);
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            count(&metrics.dropped_inbox_full, 1);
            Err(DeliverError::Full)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            count(&metrics.dropped_inbox_full, 1);
            Err(DeliverError::Closed)
        }
    }
}
