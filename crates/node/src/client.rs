//! [`RaftClient`]: a remote client for a node's client and admin service.
//!
//! It talks to one node at a time and follows `NotLeader` answers to the leader's
//! address, at most `redirects_max` times per call, remembering per group where the
//! leader was last found. Every attempt is bounded by `request_timeout_ms` (sent to
//! the server as the gRPC deadline too). It never retries on its own otherwise: a
//! proposal that timed out may still apply, and only the caller knows whether
//! sending it again is safe.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use concord_proto::api::{self as proto, raft_client::RaftClient as ProtoClient};
use concord_raft::NodeId;
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            redirects_max: 3,
            response_bytes_max: 16 * 1024 * 1024,
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
        let response = self
            .call(
                group,
                proto::ProposeRequest { group, data },
                |mut client, request| async move { client.propose(request).await },
            )
            .await?;
        Ok(ProposeResponse {
            response: response.response,
            index: response.index,
            term: response.term,
        })
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
        let config = &self.inner.config;
        let timeout = Duration::from_millis(config.request_timeout_ms);
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
            match error {
                ApiError::NotLeader {
                    address: Some(leader_address),
                    ..
                } if redirects < config.redirects_max && leader_address != address => {
                    tracing::debug!(group, from = %address, to = %leader_address, "following NotLeader redirect");
                    redirects += 1;
                    address = leader_address;
                }
                error => {
                    if matches!(error, ApiError::NotLeader { .. } | ApiError::Unavailable(_)) {
                        // What we knew about the leader is stale: start from the seed next time.
                        lock(&self.inner.leaders).remove(&group);
                    }
                    return Err(error);
                }
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
