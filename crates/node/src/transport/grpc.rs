//! The gRPC transport: one long-lived `PeerTransport.Stream` per peer, carrying
//! batches of raft messages for every group.
//!
//! Sending ([`GrpcTransport`]): each peer has a bounded queue and a task. The task
//! connects, opens the stream, and then repeatedly takes whatever is queued (up to
//! `batch_messages_max` messages or `batch_bytes_max` bytes), encodes it as one
//! `MessageBatch` and writes it. When the connection or stream fails it reconnects
//! with exponential backoff (`reconnect_backoff_min_ms` doubling to
//! `reconnect_backoff_max_ms`, with jitter). Messages over `message_bytes_max` are
//! dropped, counted and logged; messages that do not fit in the queue are dropped and
//! counted. Nothing in `send` blocks or awaits.
//!
//! Receiving ([`TransportServer`]): each incoming stream gets a task that decodes
//! batches, checks every message (size, well-formedness, sender and receiver) and
//! delivers it to the node's inbox with `try_send`. Frames over the limit are refused
//! by gRPC's decoding limit before they are buffered; malformed messages are refused,
//! counted and logged; nothing a peer sends can panic the node. Messages for groups
//! this node does not host are delivered anyway: the node decides.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use concord_proto::transport::peer_transport_client::PeerTransportClient;
use concord_proto::transport::peer_transport_server::{PeerTransport, PeerTransportServer};
use concord_proto::transport::{self as proto, MessageBatch, StreamAck};
use concord_raft::NodeId;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, ConvertError};
use super::{
    count, deliver, DeliverError, GroupMessage, Inbound, Transport, TransportConfig,
    TransportMetrics, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};

/// Acks a receiving stream may have queued for the sender. Acks are informational;
/// when the sender is slow to read them, newer ones are dropped (they are cumulative)
/// rather than stalling the receive loop.
const ACKS_QUEUED_MAX: usize = 4;
/// Longest a receiver goes without acking a busy stream (see `receive_stream`).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Batches handed to the gRPC stream and not yet written. One: the next batch is
/// built while the previous one is being written.
const BATCHES_QUEUED_MAX: usize = 1;

/// Largest ack frame a sender accepts from a receiver, in bytes.
const ACK_BYTES_MAX: usize = 1024;

/// Sends raft messages to peers over gRPC. Cheap to clone; clones share the peers.
/// Dropping the last clone stops every peer task and closes their streams.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<SenderInner>,
}

struct SenderInner {
    node_id: NodeId,
    /// Our server's address, told to each peer at the start of every stream.
    advertised: Mutex<String>,
    config: TransportConfig,
    metrics: Arc<TransportMetrics>,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<NodeId, Peer>>,
}

/// One peer: its address, its send queue, and the task that drains the queue.
struct Peer {
    address: String,
    queue: mpsc::Sender<GroupMessage>,
    task: JoinHandle<()>,
}

impl Drop for SenderInner {
    fn drop(&mut self) {
        let peers = self
            .peers
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner());
        for (_, peer) in peers.drain() {
            peer.task.abort();
        }
    }
}

impl GrpcTransport {
    /// A transport sending as `node_id`. Must be called within a tokio runtime: peer
    /// tasks are spawned on it.
    pub fn new(node_id: NodeId, config: TransportConfig, metrics: Arc<TransportMetrics>) -> Self {
        GrpcTransport {
            inner: Arc::new(SenderInner {
                node_id,
                advertised: Mutex::new(String::new()),
                config,
                metrics,
                runtime: tokio::runtime::Handle::current(),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The counters this transport adds to.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        &self.inner.metrics
    }

    /// Tells every peer, at the start of each stream, that our server listens at
    /// `address` (streams opened from now on).
    pub fn advertise(&self, address: impl Into<String>) {
        *crate::lock(&self.inner.advertised) = address.into();
    }

    /// The peers this transport knows, with their addresses, sorted by id.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let mut peers: Vec<_> = self
            .inner
            .lock_peers()
            .iter()
            .map(|(id, peer)| (*id, peer.address.clone()))
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Stops every peer task and closes every stream. Queued messages are dropped.
    pub fn shutdown(&self) {
        for (_, peer) in self.inner.lock_peers().drain() {
            peer.task.abort();
        }
    }
}

impl SenderInner {
    fn lock_peers(&self) -> MutexGuard<'_, HashMap<NodeId, Peer>> {
        crate::lock(&self.peers)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: NodeId, messages: Vec<GroupMessage>) {
        let metrics = &self.inner.metrics;
        let queue = match self.inner.lock_peers().get(&to) {
            Some(peer) => peer.queue.clone(),
            None => {
                count(&metrics.dropped_no_peer, messages.len() as u64);
                tracing::debug!(
                    peer = to,
                    count = messages.len(),
                    "no address for peer; dropping messages"
                );
                return;
            }
        };
        for message in messages {
            match queue.try_send(message) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => count(&metrics.dropped_queue_full, 1),
                Err(mpsc::error::TrySendError::Closed(_)) => count(&metrics.dropped_no_peer, 1),
            }
        }
    }

    fn set_peer(&self, id: NodeId, address: String) {
        let mut peers = self.inner.lock_peers();
        if peers.get(&id).is_some_and(|peer| peer.address == address) {
            return;
        }
        let (queue, receiver) = mpsc::channel(self.inner.config.peer_queue_messages_max);
        let task = self.inner.runtime.spawn(run_peer(PeerLink {
            node_id: self.inner.node_id,
            advertised: crate::lock(&self.inner.advertised).clone(),
            peer_id: id,
            address: address.clone(),
            config: self.inner.config.clone(),
            metrics: self.inner.metrics.clone(),
            queue: receiver,
        }));
        if let Some(old) = peers.insert(
            id,
            Peer {
                address,
                queue,
                task,
            },
        ) {
            old.task.abort();
        }
    }

    fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = self.inner.lock_peers().remove(&id) {
            peer.task.abort();
        }
    }
}

/// Everything a peer task owns.
struct PeerLink {
    node_id: NodeId,
    advertised: String,
    peer_id: NodeId,
    address: String,
    config: TransportConfig,
    metrics: Arc<TransportMetrics>,
    queue: mpsc::Receiver<GroupMessage>,
}

/// Why a stream to a peer ended.
enum StreamEnd {
    /// The peer was removed: the queue's sender is gone.
    PeerRemoved,
    /// The stream failed or was closed by the peer; reconnect.
    Lost(String),
    /// The peer refused this node (another cluster, a protocol it does not speak);
    /// reconnect, in case it is being reconfigured, but say so loudly.
    Refused(String),
}

/// A peer task: connect, pump batches until the stream fails, back off, repeat.
async fn run_peer(mut link: PeerLink) {
    let mut backoff = Backoff::new(
        Duration::from_millis(link.config.reconnect_backoff_min_ms),
        Duration::from_millis(link.config.reconnect_backoff_max_ms),
    );
    let mut streams_opened: u64 = 0;
    loop {
        match open_stream(&link).await {
            Ok((batches, acks)) => {
                if streams_opened > 0 {
                    count(&link.metrics.reconnects, 1);
                    tracing::info!(peer = link.peer_id, address = %link.address, "reconnected to peer");
                }
                streams_opened += 1;
                match pump(&mut link, batches, acks, &mut backoff).await {
                    StreamEnd::PeerRemoved => return,
                    StreamEnd::Lost(reason) => {
                        tracing::info!(peer = link.peer_id, address = %link.address, %reason, "stream to peer lost");
                    }
                    StreamEnd::Refused(reason) => {
                        tracing::error!(peer = link.peer_id, address = %link.address, %reason, "peer refused this node");
                    }
                }
            }
            Err(reason) => {
                count(&link.metrics.connect_failures, 1);
                tracing::debug!(peer = link.peer_id, address = %link.address, %reason, "cannot reach peer");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Connects and opens the stream: the batch sender and the ack stream.
async fn open_stream(
    link: &PeerLink,
) -> Result<(mpsc::Sender<MessageBatch>, Streaming<StreamAck>), String> {
    let config = &link.config;
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    let uri = if link.address.contains("://") {
        link.address.clone()
    } else {
        format!("http://{}", link.address)
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|error| format!("invalid address: {error}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(config.keepalive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(config.keepalive_timeout_ms))
        .keep_alive_while_idle(true)
        // Size HTTP/2 flow-control windows to the link (BDP estimate), so appends and
        // snapshot chunks of a megabyte are not throttled by the 64 KiB default.
        .http2_adaptive_window(true);
    let channel: Channel = tokio::time::timeout(connect_timeout, endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|error| format!("connect failed: {error}"))?;
    let mut client = PeerTransportClient::new(channel)
        .max_decoding_message_size(ACK_BYTES_MAX)
        .max_encoding_message_size(usize::MAX);
    let (batches, receiver) = mpsc::channel(BATCHES_QUEUED_MAX);
    let response = tokio::time::timeout(
        connect_timeout,
        client.stream(ReceiverStream::new(receiver)),
    )
    .await
    .map_err(|_| "opening the stream timed out".to_string())?
    .map_err(|status| format!("peer refused the stream: {status}"))?;
    Ok((batches, response.into_inner()))
}

/// Moves queued messages onto an open stream until it fails or the peer is removed.
async fn pump(
    link: &mut PeerLink,
    batches: mpsc::Sender<MessageBatch>,
    mut acks: Streaming<StreamAck>,
    backoff: &mut Backoff,
) -> StreamEnd {
    let mut refused_seen = 0;
    let mut stream_start = true;
    loop {
        tokio::select! {
            ack = acks.next() => match ack {
                Some(Ok(ack)) => {
                    // The peer is up and reading: the next loss starts backing off afresh.
                    backoff.reset();
                    if ack.messages_refused > refused_seen {
                        tracing::warn!(
                            peer = link.peer_id,
                            refused = ack.messages_refused - refused_seen,
                            "peer refused messages; check that both ends run the same version and limits"
                        );
                        refused_seen = ack.messages_refused;
                    }
                }
                Some(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                    return StreamEnd::Refused(status.message().to_string());
                }
                Some(Err(status)) => return StreamEnd::Lost(status.to_string()),
                None => return StreamEnd::Lost("peer closed the stream".into()),
            },
            first = link.queue.recv() => {
                let Some(first) = first else {
                    return StreamEnd::PeerRemoved;
                };
                let mut batch = take_batch(link, first);
                let messages = batch.messages.len() as u64;
                if messages == 0 {
                    continue;
                }
                if std::mem::take(&mut stream_start) {
                    batch.from_address = link.advertised.clone();
                    batch.cluster_id = link.config.cluster_id.clone();
                    batch.protocol_version = PROTOCOL_VERSION;
                }
                if batches.send(batch).await.is_err() {
                    count(&link.metrics.dropped_stream_broken, messages);
                    return StreamEnd::Lost("stream closed while sending".into());
                }
                count(&link.metrics.sent, messages);
                count(&link.metrics.batches_sent, 1);
            }
        }
    }
}

/// Builds one batch from `first` and whatever else is queued, within the batch limits,
/// dropping (and counting, and logging) messages over `message_bytes_max`.
fn take_batch(link: &mut PeerLink, first: GroupMessage) -> MessageBatch {
    let config = &link.config;
    let mut batch = MessageBatch {
        from_node: link.node_id,
        messages: Vec::new(),
        from_address: String::new(),
        cluster_id: String::new(),
        protocol_version: 0,
    };
    let mut batch_bytes: u64 = 0;
    let mut next = Some(first);
    while let Some((group, message)) = next.take() {
        let kind = message.kind;
        let wire = convert::message_to_proto(message);
        let message_bytes = wire.encoded_len() as u64;
        if message_bytes > config.message_bytes_max {
            count(&link.metrics.dropped_too_large, 1);
            tracing::warn!(
                peer = link.peer_id,
                group,
                ?kind,
                message_bytes,
                message_bytes_max = config.message_bytes_max,
                "dropping raft message over message_bytes_max"
            );
        } else {
            batch.messages.push(proto::GroupMessage {
                group,
                message: Some(wire),
            });
            batch_bytes += message_bytes;
        }
        // A batch may overshoot batch_bytes_max by its last message; the receiver's
        // frame limit allows for that (TransportConfig::frame_bytes_max).
        if batch.messages.len() < config.batch_messages_max && batch_bytes < config.batch_bytes_max
        {
            next = link.queue.try_recv().ok();
        }
    }
    batch
}

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]` where `d`
/// doubles from the minimum to the maximum, so peers that lost a node together do not
/// all knock on its door in step.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        self.draws += 1;
        // Any fresh u64 will do; RandomState is seeded per process from the OS.
        let random = self.random.hash_one(self.draws);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_micros() as u64;
        half + Duration::from_micros(if spread == 0 {
            0
        } else {
            random % (spread + 1)
        })
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// Receives raft messages from peers: the `PeerTransport` service. Mount it with
/// [`TransportServer::into_service`] in the node's tonic server, or run it alone with
/// [`TransportServer::run`]. Cheap to clone.
///
/// gRPC's graceful shutdown waits for open streams, and peer streams never end on
/// their own: call [`TransportServer::close_streams`] when shutting down (`run` and
/// [`crate::service::serve`] do).
#[derive(Clone)]
pub struct TransportServer {
    inner: Arc<ReceiverInner>,
}

struct ReceiverInner {
    node_id: NodeId,
    config: TransportConfig,
    inbox: mpsc::Sender<Inbound>,
    /// Where to report the address a peer says it listens at.
    peer_addresses: Option<mpsc::UnboundedSender<(NodeId, String)>>,
    metrics: Arc<TransportMetrics>,
    /// Set once: every stream ends and new ones are refused.
    closing: watch::Sender<bool>,
}

impl TransportServer {
    /// A server delivering messages addressed to `node_id` into `inbox`.
    pub fn new(
        node_id: NodeId,
        config: TransportConfig,
        inbox: mpsc::Sender<Inbound>,
        metrics: Arc<TransportMetrics>,
    ) -> Self {
        TransportServer {
            inner: Arc::new(ReceiverInner {
                node_id,
                config,
                inbox,
                peer_addresses: None,
                metrics,
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// Reports `(peer, address)` to `sender` whenever a stream starts with the
    /// address its sender's server listens at. Call before serving.
    pub fn report_peer_addresses(
        mut self,
        sender: mpsc::UnboundedSender<(NodeId, String)>,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.peer_addresses = Some(sender);
        }
        self
    }

    /// The counters this server adds to.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        &self.inner.metrics
    }

    /// The limits and timings this server applies.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// The tonic service, with gRPC's decoding limit set to the largest frame the
    /// config allows.
    pub fn into_service(self) -> PeerTransportServer<TransportServer> {
        let frame_bytes_max = self.inner.config.frame_bytes_max();
        PeerTransportServer::new(self).max_decoding_message_size(frame_bytes_max)
    }

    /// Ends every open peer stream and refuses new ones. Peers see their stream end
    /// and start reconnecting.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Serves only the peer transport on `listener` until `shutdown` completes, then
    /// closes the streams and waits for in-flight work to finish.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let closer = self.clone();
        server_builder(&self.inner.config)
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(accepted_without_delay(listener), async move {
                shutdown.await;
                closer.close_streams();
            })
            .await
    }
}

/// A tonic server builder with the transport's settings (TCP_NODELAY, HTTP/2
/// keep-alive, adaptive flow-control windows), for a node's one server hosting both
/// the peer transport and the client service.
pub fn server_builder(config: &TransportConfig) -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
}

#[tonic::async_trait]
impl PeerTransport for TransportServer {
    type StreamStream = ReceiverStream<Result<StreamAck, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        if *self.inner.closing.borrow() {
            return Err(Status::unavailable("node is shutting down"));
        }
        let remote = request.remote_addr();
        let incoming = request.into_inner();
        let (acks, receiver) = mpsc::channel(ACKS_QUEUED_MAX);
        tokio::spawn(receive_stream(self.inner.clone(), incoming, acks, remote));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Why one received message was refused.
#[derive(Debug)]
enum Refusal {
    TooLarge { message_bytes: usize },
    Garbage(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge { message_bytes } => {
                write!(f, "message of {message_bytes} bytes over message_bytes_max")
            }
            Refusal::Garbage(reason) => write!(f, "malformed message: {reason}"),
        }
    }
}

impl From<ConvertError> for Refusal {
    fn from(error: ConvertError) -> Self {
        Refusal::Garbage(error.to_string())
    }
}

/// Reads one peer stream until it ends, fails, or the server closes.
async fn receive_stream(
    inner: Arc<ReceiverInner>,
    mut incoming: Streaming<MessageBatch>,
    acks: mpsc::Sender<Result<StreamAck, Status>>,
    remote: Option<SocketAddr>,
) {
    let remote = remote.map_or_else(|| "unknown".to_string(), |address| address.to_string());
    let mut closing = inner.closing.subscribe();
    let mut totals = StreamAck::default();
    let mut last_ack: Option<Instant> = None;
    let mut acked_losses = (0, 0);
    let mut peer: Option<NodeId> = None;
    loop {
        let next = tokio::select! {
            _ = closing.wait_for(|closing| *closing) => break,
            next = incoming.message() => next,
        };
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(status) => {
                // The frame could not be decoded (or was over the frame limit): the
                // stream's framing can no longer be trusted, so end it.
                let counter = if status.code() == tonic::Code::OutOfRange {
                    &inner.metrics.refused_too_large
                } else {
                    &inner.metrics.refused_garbage
                };
                count(counter, 1);
                tracing::warn!(%remote, ?peer, %status, "refusing peer stream: undecodable frame");
                let _ = acks.try_send(Err(status));
                break;
            }
        };
        totals.batches_received += 1;
        count(&inner.metrics.batches_received, 1);
        let sender_changed = peer.is_some_and(|peer| peer != batch.from_node);
        if batch.from_node == 0 || sender_changed {
            count(
                &inner.metrics.refused_garbage,
                batch.messages.len().max(1) as u64,
            );
            tracing::warn!(%remote, ?peer, from_node = batch.from_node, "refusing peer stream: invalid from_node");
            let _ = acks.try_send(Err(Status::invalid_argument(
                "from_node must be non-zero and constant over a stream",
            )));
            break;
        }
        let from = batch.from_node;
        if peer.is_none() {
            if let Err(reason) = check_stream_start(&inner.config, from, &batch) {
                count(
                    &inner.metrics.refused_peer_streams,
                    batch.messages.len().max(1) as u64,
                );
                tracing::error!(%remote, peer = from, %reason, "refusing peer stream");
                let _ = acks.try_send(Err(Status::failed_precondition(reason)));
                break;
            }
        }
        if peer.is_none() && !batch.from_address.is_empty() {
            if let Some(report) = &inner.peer_addresses {
                let _ = report.send((from, batch.from_address.clone()));
            }
        }
        peer = Some(from);
        for group_message in batch.messages {
            match check_message(&inner, from, group_message) {
                Ok(inbound) => match deliver(&inner.inbox, &inner.metrics, inbound) {
                    Ok(()) => totals.messages_accepted += 1,
                    Err(DeliverError::Full) => totals.messages_dropped += 1,
                    Err(DeliverError::Closed) => {
                        // The node is gone; nothing more to deliver to.
                        let _ = acks.try_send(Err(Status::unavailable("node is shutting down")));
                        return;
                    }
                },
                Err(refusal) => {
                    let counter = match refusal {
                        Refusal::TooLarge { .. } => &inner.metrics.refused_too_large,
                        Refusal::Garbage(_) => &inner.metrics.refused_garbage,
                    };
                    count(counter, 1);
                    // One line per stream at warn: a broken peer must not flood the log.
                    if totals.messages_refused == 0 {
                        tracing::warn!(%remote, peer = from, %refusal, "refusing message from peer");
                    } else {
                        tracing::debug!(%remote, peer = from, %refusal, "refusing message from peer");
                    }
                    totals.messages_refused += 1;
                }
            }
        }
        // Cumulative, so a dropped ack loses nothing the next one does not carry.
        // Sent after the first batch (the sender knows the stream works), whenever
        // something was refused or dropped, and otherwise at most once per
        // ACK_INTERVAL: an ack per batch would double the wake-ups on both ends.
        let news = (totals.messages_refused, totals.messages_dropped) != acked_losses;
        if last_ack.is_none_or(|at| news || at.elapsed() >= ACK_INTERVAL)
            && acks.try_send(Ok(totals)).is_ok()
        {
            last_ack = Some(Instant::now());
            acked_losses = (totals.messages_refused, totals.messages_dropped);
        }
    }
    if totals.messages_refused > 0 {
        tracing::warn!(%remote, ?peer, refused = totals.messages_refused, "peer stream ended with refused messages");
    }
}

/// Checks a stream's first batch: the sender is of this node's cluster and speaks a
/// protocol version this build does.
fn check_stream_start(
    config: &TransportConfig,
    from: NodeId,
    batch: &MessageBatch,
) -> Result<(), String> {
    if batch.cluster_id != config.cluster_id {
        return Err(format!(
            "node {from} is in cluster {:?}, and this node is in cluster {:?}",
            batch.cluster_id, config.cluster_id
        ));
    }
    if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&batch.protocol_version) {
        return Err(format!(
            "node {from} speaks peer protocol version {}; this node speaks \
             {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}",
            batch.protocol_version
        ));
    }
    Ok(())
}

/// Checks one received message: present, within `message_bytes_max`, well-formed, from
/// the stream's sender and addressed to this node.
fn check_message(
    inner: &ReceiverInner,
    from: NodeId,
    group_message: proto::GroupMessage,
) -> Result<Inbound, Refusal> {
    let wire = group_message
        .message
        .ok_or_else(|| Refusal::Garbage("missing required field `message`".into()))?;
    let message_bytes = wire.encoded_len();
    if message_bytes as u64 > inner.config.message_bytes_max {
        return Err(Refusal::TooLarge { message_bytes });
    }
    let message = convert::message_from_proto(wire)?;
    if message.from != from {
        return Err(Refusal::Garbage(format!(
            "message from node {} on a stream from node {from}",
            message.from
        )));
    }
    if message.to != inner.node_id {
        return Err(Refusal::Garbage(format!(
            "message for node {} delivered to node {}",
            message.to, inner.node_id
        )));
    }
    Ok(Inbound {
        from,
        group: group_message.group,
        message,
    })
}

/// The listener's accepted connections with `TCP_NODELAY` set. Without it a small
/// response can wait for the peer's delayed ACK (about 40 ms on Linux): the server
/// builder's own `tcp_nodelay` does not apply to connections passed in this way.
pub(crate) fn accepted_without_delay(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::{Entry, EntryKind, Message, MessageKind};

    fn link(config: TransportConfig) -> (PeerLink, mpsc::Sender<GroupMessage>) {
        let (sender, queue) = mpsc::channel(1000);
        let link = PeerLink {
            node_id: 1,
            advertised: String::new(),
            peer_id: 2,
            address: "unused".into(),
            config,
            metrics: Arc::new(TransportMetrics::default()),
            queue,
        };
        (link, sender)
    }

    fn append(payload_bytes: usize) -> GroupMessage {
        let mut message = Message::new(MessageKind::Append, 1, 2, 1);
        message.entries.push(Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![0u8; payload_bytes]),
        });
        (1, message)
    }

    /// Batches take what is queued up to `batch_messages_max` messages, or until they
    /// reach `batch_bytes_max` bytes (overshooting by at most the last message, which
    /// the receiver's frame limit allows for); messages over `message_bytes_max` are
    /// dropped and counted without ending the batch.
    #[test]
    fn batches_respect_the_limits() {
        let config = TransportConfig {
            batch_messages_max: 4,
            batch_bytes_max: 2_500,
            message_bytes_max: 5_000,
            ..TransportConfig::default()
        };
        let frame_bytes_max = config.frame_bytes_max();
        let (mut link, queue) = link(config);

        for _ in 0..9 {
            queue.try_send(append(10)).unwrap();
        }
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                let first = link.queue.try_recv().unwrap();
                take_batch(&mut link, first).messages.len()
            })
            .collect();
        assert_eq!(sizes, vec![4, 4, 1], "by message count");

        for payload_bytes in [1_000, 1_000, 1_000, 1_000] {
            queue.try_send(append(payload_bytes)).unwrap();
        }
        let first = link.queue.try_recv().unwrap();
        let batch = take_batch(&mut link, first);
        assert_eq!(
            batch.messages.len(),
            3,
            "by bytes: stops once 2500 are reached"
        );
        assert!(batch.encoded_len() <= frame_bytes_max);
        link.queue.try_recv().unwrap();

        queue.try_send(append(10)).unwrap();
        queue.try_send(append(6_000)).unwrap();
        queue.try_send(append(10)).unwrap();
        let first = link.queue.try_recv().unwrap();
        let batch = take_batch(&mut link, first);
        assert_eq!(batch.messages.len(), 2, "the oversized message is left out");
        assert_eq!(batch.from_node, 1);
        assert_eq!(link.metrics.snapshot().dropped_too_large, 1);
        assert!(link.queue.try_recv().is_err());
    }

    /// Backoff delays stay within [d/2, d], double up to the maximum, and start over
    /// after a reset.
    #[test]
    fn backoff_doubles_within_bounds_and_resets() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut backoff = Backoff::new(min, max);
        let ceilings = [10, 20, 40, 80, 80, 80];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
