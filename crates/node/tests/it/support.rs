//! Shared pieces of the integration tests: loopback listeners on port 0, transport
//! endpoints that shut down cleanly, and bounded waits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_node::transport::grpc::{GrpcTransport, TransportServer};
use concord_node::transport::{
    inbox, GroupMessage, Inbound, TransportConfig, TransportMetrics, TransportMetricsSnapshot,
};
use concord_raft::{Entry, EntryKind, Message, MessageKind, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest any single step of a test may wait.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`STEP_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A listener on a free loopback port.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    (listener, address)
}

/// A running server task and the switch that stops it.
pub struct RunningServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Runs `serve(shutdown)` as a task.
    pub fn spawn<F>(serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        RunningServer {
            stop: Some(stop),
            task: tokio::spawn(serve(stopped)),
        }
    }

    /// Signals shutdown and waits until the server has finished.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("server shutdown", &mut self.task)
            .await
            .expect("server task")
            .expect("server result");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // A failing test still frees its port.
        self.task.abort();
    }
}

/// One node's transport: a sender, a receiving server on a loopback port, its inbox.
pub struct Endpoint {
    pub id: NodeId,
    pub address: SocketAddr,
    pub transport: GrpcTransport,
    pub inbox: mpsc::Receiver<Inbound>,
    pub metrics: Arc<TransportMetrics>,
    pub server: Option<RunningServer>,
    config: TransportConfig,
    inbox_sender: mpsc::Sender<Inbound>,
}

impl Endpoint {
    /// Starts node `id` on a fresh port.
    pub async fn start(id: NodeId, config: TransportConfig) -> Endpoint {
        let (listener, address) = bind().await;
        let metrics = Arc::new(TransportMetrics::default());
        let (inbox_sender, inbox) = inbox(&config);
        let mut endpoint = Endpoint {
            id,
            address,
            transport: GrpcTransport::new(id, config.clone(), metrics.clone()),
            inbox,
            metrics,
            server: None,
            config,
            inbox_sender,
        };
        endpoint.serve(listener);
        endpoint
    }

    fn serve(&mut self, listener: TcpListener) {
        let server = TransportServer::new(
            self.id,
            self.config.clone(),
            self.inbox_sender.clone(),
            self.metrics.clone(),
        );
        self.server = Some(RunningServer::spawn(move |stopped| {
            server.run(listener, async move {
                let _ = stopped.await;
            })
        }));
    }

    /// Stops the receiving server (the sender keeps running).
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Starts the receiving server again on the same port.
    pub async fn restart_server(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }

    /// Makes `other` known as a peer.
    pub fn learn(&self, other: &Endpoint) {
        use concord_node::transport::Transport;
        self.transport.set_peer(other.id, other.address.to_string());
    }

    /// Receives the next message, failing the test after [`STEP_TIMEOUT`].
    pub async fn next(&mut self) -> Inbound {
        within("next inbound message", self.inbox.recv())
            .await
            .expect("inbox open")
    }

    /// The counters.
    pub fn counters(&self) -> TransportMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shuts everything down.
    pub async fn shutdown(mut self) {
        self.transport.shutdown();
        self.stop_server().await;
    }
}

/// A heartbeat from `from` to `to` tagged with `tag` in `commit`, so tests can tell
/// messages apart.
pub fn heartbeat(from: NodeId, to: NodeId, tag: u64) -> Message {
    let mut message = Message::new(MessageKind::Heartbeat, from, to, 1);
    message.commit = tag;
    message
}

/// An append from `from` to `to` carrying one entry of `payload_bytes` bytes.
pub fn append(from: NodeId, to: NodeId, payload_bytes: usize) -> Message {
    let mut message = Message::new(MessageKind::Append, from, to, 1);
    message.index = 0;
    message.entries.push(Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![7u8; payload_bytes]),
    });
    message
}

/// `(group, heartbeat)` pairs.
pub fn heartbeats(
    from: NodeId,
    to: NodeId,
    group: u64,
    tags: std::ops::Range<u64>,
) -> Vec<GroupMessage> {
    tags.map(|tag| (group, heartbeat(from, to, tag))).collect()
}

/// Waits until `condition` holds, polling every 10 ms, failing after [`STEP_TIMEOUT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
