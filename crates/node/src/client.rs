//! [`RaftClient`]: a remote client for a node's client and admin service.
//!
//! It talks to one node at a time and follows `NotLeader` answers to the leader's
//! address, at most `redirects_max` times per call, remembering per group where the
//! leader was last found. Every attempt is bounded by `request_timeout_ms` (sent to
//! the server as the gRPC deadline too). It never retries on its own otherwise: a
//! proposal that timed out may still apply, and only the caller knows whether
//! sending it again is safe.
//!
//! Concurrent proposals travel together: each address has a batcher task that sends
//! whatever proposals are queued as one `ProposeBatch` call, with at most
//! `propose_batches_in_flight_max` calls outstanding. A lone proposal goes out at
//! once, alone; under load, proposals queue while the calls in flight finish and the
//! next call carries them all (up to `propose_batch_max`). A gRPC call costs far more
//! CPU than the proposal in it, so this is what lets many proposers through one
//! client scale.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use concord_proto::api::{self as proto, raft_client::RaftClient as ProtoClient};
use concord_raft::NodeId;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::service::{
    members_from_proto, read_mode_to_proto, status_from_proto, ticket_from_proto, ApiError,
    GroupStatus, JoinTicket, Member, ProposeResponse, ReadMode,
};

/// A [`RaftClient`]'s limits and timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long connecting to a node may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one attempt of a call may take, in milliseconds (each redirect is a
    /// new attempt).
    pub request_timeout_ms: u64,
    /// Most `NotLeader` redirects followed in one call.
    pub redirects_max: u32,
    /// Largest encoded response accepted, in bytes.
    pub response_bytes_max: usize,
    /// Most proposals carried in one `ProposeBatch` call; 1 sends each proposal in
    /// its own `Propose` call instead. Must not exceed the server's
    /// `propose_batch_max`.
    pub propose_batch_max: usize,
    /// Most bytes of proposals (data plus a little framing each) in one
    /// `ProposeBatch` call; a proposal bigger than this goes in a call of its own.
    /// Keep it under the server's `request_bytes_max`, which bounds a whole call.
    pub propose_batch_bytes_max: usize,
    /// Most `ProposeBatch` calls outstanding per node contacted.
    pub propose_batches_in_flight_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            redirects_max: 3,
            response_bytes_max: 16 * 1024 * 1024,
            propose_batch_max: 256,
            propose_batch_bytes_max: 1024 * 1024,
            propose_batches_in_flight_max: 4,
        }
    }
}

/// A client of a node's `concord.api.v1.Raft` service. Cheap to clone; clones share
/// connections and what they learned about leaders.
#[derive(Clone)]
pub struct RaftClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    config: ClientConfig,
    /// The address given to `connect`: where calls go for groups with no known leader.
    seed_address: String,
    /// One channel per address contacted (a channel reconnects by itself).
    channels: Mutex<HashMap<String, Channel>>,
    /// Per group, the address of the node that last answered a call successfully.
    leaders: Mutex<HashMap<u64, String>>,
    /// Per address, the queue of its proposal batcher task.
    batchers: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
}

/// A proposal waiting for its batch.
struct Queued {
    request: proto::ProposeRequest,
    reply: oneshot::Sender<Result<proto::ProposeResponse, ApiError>>,
}

impl RaftClient {
    /// Connects to the node at `address` (host:port) with the default config.
    pub async fn connect(address: impl Into<String>) -> Result<Self, ApiError> {
        Self::connect_with(address, ClientConfig::default()).await
    }

    /// Connects to the node at `address` (host:port).
    pub async fn connect_with(
        address: impl Into<String>,
        config: ClientConfig,
    ) -> Result<Self, ApiError> {
        let address = address.into();
        if config.propose_batch_max == 0
            || config.propose_batches_in_flight_max == 0
            || config.propose_batch_bytes_max == 0
        {
            return Err(ApiError::InvalidRequest(format!(
                "propose_batch_max ({}), propose_batch_bytes_max ({}) and \
                 propose_batches_in_flight_max ({}) must be at least 1",
                config.propose_batch_max,
                config.propose_batch_bytes_max,
                config.propose_batches_in_flight_max
            )));
        }
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let endpoint = endpoint(&address, &config)?;
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| ApiError::Unavailable(format!("connecting to {address}: timed out")))?
            .map_err(|error| ApiError::Unavailable(format!("connecting to {address}: {error}")))?;
        let inner = ClientInner {
            config,
            seed_address: address.clone(),
            channels: Mutex::new(HashMap::from([(address, channel)])),
            leaders: Mutex::new(HashMap::new()),
            batchers: Mutex::new(HashMap::new()),
        };
        Ok(RaftClient {
            inner: Arc::new(inner),
        })
    }

    /// The config this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Where calls for `group` go first: the last node that answered for it, else the
    /// address given to `connect`.
    pub fn address_for(&self, group: u64) -> String {
        lock(&self.inner.leaders)
            .get(&group)
            .cloned()
            .unwrap_or_else(|| self.inner.seed_address.clone())
    }

    /// Replicates `data` through `group`'s log; answers once it applied.
    pub async fn propose(&self, group: u64, data: Bytes) -> Result<ProposeResponse, ApiError> {
        let request = proto::ProposeRequest { group, data };
        let response = if self.inner.config.propose_batch_max == 1 {
            self.call(group, request, |mut client, request| async move {
                client.propose(request).await
            })
            .await?
        } else {
            self.propose_batched(group, request).await?
        };
        Ok(ProposeResponse {
            response: response.response,
            index: response.index,
            term: response.term,
        })
    }

    /// Hands `request` to the batcher of the node `group`'s calls go to, following
    /// `NotLeader` redirects as [`RaftClient::call`] does.
    async fn propose_batched(
        &self,
        group: u64,
        request: proto::ProposeRequest,
    ) -> Result<proto::ProposeResponse, ApiError> {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let mut address = self.address_for(group);
        let mut redirects = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                request: request.clone(),
                reply,
            };
            self.batcher_for(&address)?
                .send(queued)
                .map_err(|_| ApiError::Unavailable("the client's batcher stopped".into()))?;
            // The batch call has the same deadline; this bounds the wait for a slot.
            let error = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Ok(response))) => {
                    lock(&self.inner.leaders).insert(group, address);
                    return Ok(response);
                }
                Ok(Ok(Err(error))) => error,
                Ok(Err(_)) => ApiError::Unavailable("the client's batcher stopped".into()),
                Err(_) => ApiError::Timeout,
            };
            address = self.redirect(group, error, &address, &mut redirects)?;
        }
    }

    /// The queue of the batcher task for `address`, started on first use.
    fn batcher_for(&self, address: &str) -> Result<mpsc::UnboundedSender<Queued>, ApiError> {
        let mut batchers = lock(&self.inner.batchers);
        if let Some(queue) = batchers.get(address).filter(|queue| !queue.is_closed()) {
            return Ok(queue.clone());
        }
        let client = self.client_for(address)?;
        let (queue, queued) = mpsc::unbounded_channel();
        let config = &self.inner.config;
        tokio::spawn(run_batcher(
            client,
            queued,
            config.propose_batch_max,
            config.propose_batch_bytes_max,
            config.propose_batches_in_flight_max,
            Duration::from_millis(config.request_timeout_ms),
        ));
        batchers.insert(address.to_string(), queue.clone());
        Ok(queue)
    }

    /// Runs `query` against `group`'s state machine.
    pub async fn read(&self, group: u64, query: Bytes, mode: ReadMode) -> Result<Bytes, ApiError> {
        let request = proto::ReadRequest {
            group,
            query,
            mode: read_mode_to_proto(mode) as i32,
        };
        let response = self
            .call(group, request, |mut client, request| async move {
                client.read(request).await
            })
            .await?;
        Ok(response.response)
    }

    /// The contacted node's view of `group` (the leader's, once one was found).
    pub async fn status(&self, group: u64) -> Result<GroupStatus, ApiError> {
        let response = self
            .call(
                group,
                proto::StatusRequest { group },
                |mut client, request| async move { client.status(request).await },
            )
            .await?;
        status_from_proto(response).map_err(malformed)
    }

    /// `group`'s members with their addresses.
    pub async fn members(&self, group: u64) -> Result<Vec<Member>, ApiError> {
        let response = self
            .call(
                group,
                proto::MembersRequest { group },
                |mut client, request| async move { client.members(request).await },
            )
            .await?;
        members_from_proto(response.members).map_err(malformed)
    }

    /// Asks `group` to admit `node_id` listening at `address`; returns the ticket the
    /// new node joins with.
    pub async fn request_join(
        &self,
        group: u64,
        node_id: NodeId,
        address: impl Into<String>,
    ) -> Result<JoinTicket, ApiError> {
        let request = proto::RequestJoinRequest {
            group,
            node_id,
            address: address.into(),
        };
        let response = self
            .call(group, request, |mut client, request| async move {
                client.request_join(request).await
            })
            .await?;
        ticket_from_proto(response).map_err(malformed)
    }

    /// Takes `node_id` out of `group` at its own request.
    pub async fn leave(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::LeaveRequest { group, node_id },
            |mut client, request| async move { client.leave(request).await },
        )
        .await
        .map(drop)
    }

    /// Adds `node_id` listening at `address` to `group` as a learner.
    pub async fn add_learner(
        &self,
        group: u64,
        node_id: NodeId,
        address: impl Into<String>,
    ) -> Result<(), ApiError> {
        let request = proto::AddLearnerRequest {
            group,
            node_id,
            address: address.into(),
        };
        self.call(group, request, |mut client, request| async move {
            client.add_learner(request).await
        })
        .await
        .map(drop)
    }

    /// Makes learner `node_id` of `group` a voter.
    pub async fn promote(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::PromoteRequest { group, node_id },
            |mut client, request| async move { client.promote(request).await },
        )
        .await
        .map(drop)
    }

    /// Removes `node_id` from `group`.
    pub async fn remove(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::RemoveRequest { group, node_id },
            |mut client, request| async move { client.remove(request).await },
        )
        .await
        .map(drop)
    }

    /// Hands leadership of `group` to `target`.
    pub async fn transfer_leader(&self, group: u64, target: NodeId) -> Result<(), ApiError> {
        self.call(
            group,
            proto::TransferLeaderRequest { group, target },
            |mut client, request| async move { client.transfer_leader(request).await },
        )
        .await
        .map(drop)
    }

    /// Sends `message` for `group`, following `NotLeader` redirects.
    async fn call<M, T, F, Fut>(
        &self,
        group: u64,
        message: M,
        mut attempt: F,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        F: FnMut(ProtoClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let mut address = self.address_for(group);
        let mut redirects = 0;
        loop {
            let client = self.client_for(&address)?;
            let mut request = Request::new(message.clone());
            request.set_timeout(timeout);
            let error = match tokio::time::timeout(timeout, attempt(client, request)).await {
                Ok(Ok(response)) => {
                    lock(&self.inner.leaders).insert(group, address);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => ApiError::from_status(&status),
                Err(_) => ApiError::Timeout,
            };
            address = self.redirect(group, error, &address, &mut redirects)?;
        }
    }

    /// Where to try next after `error` from `address`: the leader it names, when a
    /// redirect is left; else the error.
    fn redirect(
        &self,
        group: u64,
        error: ApiError,
        address: &str,
        redirects: &mut u32,
    ) -> Result<String, ApiError> {
        match error {
            ApiError::NotLeader {
                address: Some(leader_address),
                ..
            } if *redirects < self.inner.config.redirects_max && leader_address != address => {
                tracing::debug!(group, from = %address, to = %leader_address, "following NotLeader redirect");
                *redirects += 1;
                Ok(leader_address)
            }
            error => {
                if matches!(error, ApiError::NotLeader { .. } | ApiError::Unavailable(_)) {
                    // What we knew about the leader is stale: start from the seed next time.
                    lock(&self.inner.leaders).remove(&group);
                }
                Err(error)
            }
        }
    }

    /// A client over the (possibly new, lazily connected) channel to `address`.
    fn client_for(&self, address: &str) -> Result<ProtoClient<Channel>, ApiError> {
        let config = &self.inner.config;
        let mut channels = lock(&self.inner.channels);
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = endpoint(address, config)?.connect_lazy();
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(ProtoClient::new(channel)
            .max_decoding_message_size(config.response_bytes_max)
            .max_encoding_message_size(usize::MAX))
    }
}

/// Sends the proposals queued for one node as `ProposeBatch` calls: waits for a
/// proposal and a free call slot, takes every proposal queued by then (up to
/// `batch_max`) and sends them in one call. Ends when the client is dropped.
async fn run_batcher(
    client: ProtoClient<Channel>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    batch_max: usize,
    batch_bytes_max: usize,
    in_flight_max: usize,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(in_flight_max));
    // A proposal taken from the queue that did not fit the last batch.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Proposals whose caller gave up (timed out, dropped) while they waited for a
        // slot are not sent: the caller may already be retrying them.
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut next = Some(first);
        while let Some(proposal) = next.take() {
            if !proposal.reply.is_closed() {
                let bytes = proposal.request.data.len() + PROPOSAL_OVERHEAD_BYTES;
                // One call stays under the byte limit; a proposal over it goes alone.
                if !batch.is_empty() && batch_bytes + bytes > batch_bytes_max {
                    carried = Some(proposal);
                    break;
                }
                batch_bytes += bytes;
                batch.push(proposal);
            }
            if batch.len() < batch_max {
                next = queued.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let client = client.clone();
        tokio::spawn(async move {
            send_batch(client, batch, timeout).await;
            drop(slot);
        });
    }
}

/// Bytes a proposal adds to a `ProposeBatch` call besides its data (group, tags and
/// lengths), counted against `propose_batch_bytes_max`.
const PROPOSAL_OVERHEAD_BYTES: usize = 24;

/// One `ProposeBatch` call; answers every proposal in `batch`.
async fn send_batch(mut client: ProtoClient<Channel>, batch: Vec<Queued>, timeout: Duration) {
    let (proposals, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.request, queued.reply))
        .unzip();
    let mut request = Request::new(proto::ProposeBatchRequest { proposals });
    request.set_timeout(timeout);
    let results = match tokio::time::timeout(timeout, client.propose_batch(request)).await {
        Ok(Ok(response)) => response.into_inner().results,
        Ok(Err(status)) => {
            let error = ApiError::from_status(&status);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Err(ApiError::Timeout));
            }
            return;
        }
    };
    if results.len() != replies.len() {
        let error = malformed(format!(
            "{} results for a batch of {} proposals",
            results.len(),
            replies.len()
        ));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
        return;
    }
    use proto::propose_result::Outcome;
    for (result, reply) in results.into_iter().zip(replies) {
        let outcome = match result.outcome {
            Some(Outcome::Applied(response)) => Ok(response),
            Some(Outcome::Error(detail)) => Err(ApiError::from_detail(detail)
                .unwrap_or_else(|| malformed("a result with an empty error".into()))),
            None => Err(malformed("a result with no outcome".into())),
        };
        let _ = reply.send(outcome);
    }
}

fn endpoint(address: &str, config: &ClientConfig) -> Result<Endpoint, ApiError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|error| ApiError::InvalidRequest(format!("invalid address {address:?}: {error}")))?
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .tcp_nodelay(true))
}

fn malformed(reason: String) -> ApiError {
    ApiError::Internal(format!("malformed response: {reason}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
