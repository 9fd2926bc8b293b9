//! What a server knows and does about the cluster: it founds or joins it, reads the
//! `meta` namespace (from its own replica when it hosts one, else through the client),
//! and keeps the namespaces it hosts in step with `meta`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_client::service::ServiceClient;
use concord_client::ClientConfig;
use concord_node::{ApiError, ClientTableLimits, GroupId, MemberRole, NodeHandle};
use concord_service::command::decode;
use concord_service::factory::{meta_spec, namespace_spec};
use concord_service::meta::{Meta, MetaCommand, MetaError, NamespaceRecord, META_GROUP};
use concord_types::sync::lock;
use tokio::time::Instant;

use super::config::{ServerConfig, META_VOTERS_MAX};

/// Pause between attempts while a peer cannot say yes yet.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How the node became a member this time.
#[derive(Debug, PartialEq, Eq)]
pub enum Membership {
    /// It founded the cluster with the other founders.
    Founded,
    /// It joined through a member.
    Joined,
    /// Its data directory held the cluster already.
    Resumed,
}

/// The server's view of the cluster, shared by its API and its reconciler.
pub struct Cluster {
    node: NodeHandle,
    config: ServerConfig,
    /// The client this server uses for what it does not host (`meta` on a node
    /// that is not one of its voters, namespace creation's wait for a leader);
    /// connected on first use.
    client: tokio::sync::OnceCell<ServiceClient>,
    /// `meta` as last read here.
    meta: Mutex<Option<Arc<Meta>>>,
    /// Held by the round of reconciling under way: one at a time, so a group is
    /// never founded or dropped twice at once.
    reconciling: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// A cluster view for `node`, reaching others at the addresses `config` names
    /// (the founders or the join address) besides this node's own.
    pub fn new(node: NodeHandle, config: ServerConfig) -> Cluster {
        Cluster {
            node,
            config,
            client: tokio::sync::OnceCell::new(),
            meta: Mutex::new(None),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    /// The node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The client this server uses for the cluster.
    pub async fn client(&self) -> Result<&ServiceClient, ApiError> {
        self.client
            .get_or_try_init(|| async {
                // `meta`'s hosts as far as the config says: the first five founders,
                // or the member joined through. This node last: it may host nothing.
                let mut founders = self.config.initial_cluster.clone();
                founders.sort_by_key(|founder| founder.id);
                let mut meta_hosts: Vec<String> = founders
                    .iter()
                    .take(META_VOTERS_MAX as usize)
                    .filter(|founder| founder.id != self.node.node_id())
                    .map(|founder| founder.address.clone())
                    .collect();
                if !self.config.join.is_empty() {
                    meta_hosts.push(self.config.join.clone());
                }
                let mut addresses = meta_hosts.clone();
                addresses.push(self.node.address().to_string());
                let config = ClientConfig {
                    retry_deadline_ms: self.config.node.admin_timeout_ms,
                    ..ClientConfig::default()
                };
                let client = ServiceClient::connect(addresses, config)
                    .await
                    .map_err(|error| ApiError::Unavailable(error.to_string()))?;
                if !meta_hosts.is_empty() && !self.hosts_meta() {
                    client.raft().set_route(META_GROUP, meta_hosts);
                }
                Ok(client)
            })
            .await
    }

    /// The server's config.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn table_limits(&self) -> ClientTableLimits {
        ClientTableLimits {
            clients_max: self.config.node.exactly_once_clients_max,
            unanswered_per_client_max: self.config.node.exactly_once_unanswered_max,
        }
    }

    fn hosts_meta(&self) -> bool {
        self.node.groups().contains(&META_GROUP)
    }

    // ---------------------------------------------------------------------------------
    // Founding and joining.

    /// Resumes the cluster in the data directory, or founds it with the other
    /// founders, or joins it through `join`.
    pub async fn become_member(&self) -> Result<Membership, String> {
        if !self.node.groups().is_empty() {
            return Ok(Membership::Resumed);
        }
        if !self.config.initial_cluster.is_empty() {
            self.found().await?;
            return Ok(Membership::Founded);
        }
        if !self.config.join.is_empty() {
            self.join().await?;
            return Ok(Membership::Joined);
        }
        Err(format!(
            "{} holds no cluster: give initial_cluster (--initial-cluster) to found one \
             or join (--join ADDRESS) to join one",
            self.config.node.data_dir.display()
        ))
    }

    /// Bootstraps `meta` with the founders (the first five by id vote); the
    /// reconciler then creates `default` where `meta` placed it.
    async fn found(&self) -> Result<(), String> {
        let mut founders = self.config.initial_cluster.clone();
        founders.sort_by_key(|founder| founder.id);
        // A founder listening on a port of the OS's choosing (port 0) is known by
        // the address it got.
        for founder in &mut founders {
            if founder.id == self.node.node_id() && founder.address.ends_with(":0") {
                founder.address = self.node.address().to_string();
            }
        }
        let meta = Meta::bootstrap(
            founders
                .iter()
                .map(|f| (f.id, f.name.clone(), f.address.clone()))
                .collect(),
            self.config.namespace_replicas,
        );
        let voters: Vec<(u64, String)> = founders
            .iter()
            .take(META_VOTERS_MAX as usize)
            .map(|founder| (founder.id, founder.address.clone()))
            .collect();
        if voters.iter().any(|(id, _)| *id == self.node.node_id()) {
            self.node
                .bootstrap_group(META_GROUP, meta_spec(meta, self.table_limits()), &voters)
                .await
                .map_err(|error| format!("founding the meta namespace: {error}"))?;
        }
        Ok(())
    }

    /// Records this node in `meta` through the join address, then, while `meta` has
    /// fewer than five voters, becomes one.
    async fn join(&self) -> Result<(), String> {
        let what = |error: &dyn std::fmt::Display| {
            format!("joining the cluster through {}: {error}", self.config.join)
        };
        let deadline = Instant::now() + Duration::from_millis(self.config.node.admin_timeout_ms);
        let command = MetaCommand::AddNode {
            id: self.node.node_id(),
            name: self.config.node_name(),
            address: self.node.address().to_string(),
        };
        let client = self.client().await.map_err(|error| what(&error))?;
        let answer = retry_until(deadline, || {
            client
                .raft()
                .propose(META_GROUP, concord_service::command::encode(&command))
        })
        .await
        .map_err(|error| what(&error))?;
        let result: Result<Option<NamespaceRecord>, MetaError> =
            decode(&answer.response).map_err(|error| what(&error))?;
        result.map_err(|error| what(&error))?;
        let members = client
            .raft()
            .members(META_GROUP)
            .await
            .map_err(|error| what(&error))?;
        let voters = members
            .iter()
            .filter(|member| member.role == MemberRole::Voter)
            .count();
        if voters < META_VOTERS_MAX as usize {
            let ticket = retry_until(deadline, || {
                self.node.request_join(&self.config.join, META_GROUP)
            })
            .await
            .map_err(|error| what(&error))?;
            self.node.join(ticket).await.map_err(|error| what(&error))?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Reading meta.

    /// `meta` as the cluster has it now (a linearizable read: through this node's
    /// replica when it hosts one, else through the client).
    pub async fn meta(&self) -> Result<Arc<Meta>, ApiError> {
        let bytes = if self.hosts_meta() {
            self.node.read(META_GROUP, Bytes::new()).await?.response
        } else {
            self.client()
                .await?
                .raft()
                .read(
                    META_GROUP,
                    Bytes::new(),
                    concord_node::ReadMode::Linearizable,
                )
                .await?
                .response
        };
        let meta: Meta = decode(&bytes).map_err(|error| {
            ApiError::Internal(format!("the meta state does not decode: {error}"))
        })?;
        let meta = Arc::new(meta);
        *lock(&self.meta) = Some(meta.clone());
        Ok(meta)
    }

    /// `meta` as last read, or read now.
    pub async fn cached_meta(&self) -> Result<Arc<Meta>, ApiError> {
        if let Some(meta) = lock(&self.meta).clone() {
            return Ok(meta);
        }
        self.meta().await
    }

    /// The record of namespace `name`, from `meta` as last read; read again when the
    /// name is not there (it may be new).
    pub async fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>, ApiError> {
        let meta = self.cached_meta().await?;
        if let Some(record) = meta.namespaces().get(name) {
            return Ok(Some(record.clone()));
        }
        let meta = self.meta().await?;
        Ok(meta.namespaces().get(name).cloned())
    }

    // ---------------------------------------------------------------------------------
    // Reconciling.

    /// Runs [`Cluster::reconcile`] every `reconcile_interval_ms` until the node stops.
    pub async fn run_reconciler(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.reconcile_interval_ms);
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.reconcile().await {
                tracing::debug!(%error, "reconciling with meta: not this time");
            }
        }
    }

    /// Creates here the groups of namespaces `meta` places on this node, and drops
    /// the groups of namespaces deleted. It acts only on `meta` read linearizably:
    /// a replica's own state may lag (after a restart it holds its snapshot until the
    /// log replays), and a lagging view would drop a live namespace's data and found
    /// it again empty.
    pub async fn reconcile(&self) -> Result<(), ApiError> {
        let _one_at_a_time = self.reconciling.lock().await;
        let meta = self.meta().await?;
        let me = self.node.node_id();
        let hosted = self.node.groups();
        for (name, record) in meta.namespaces() {
            if !record.members.contains(&me) || hosted.contains(&record.group) {
                continue;
            }
            let members: Vec<(u64, String)> = record
                .members
                .iter()
                .filter_map(|id| meta.nodes().get(id).map(|node| (*id, node.address.clone())))
                .collect();
            let spec = namespace_spec(record.limits, self.table_limits());
            match self
                .node
                .bootstrap_group(record.group, spec, &members)
                .await
            {
                Ok(()) => {
                    tracing::info!(namespace = %name, group = record.group, "hosting the namespace")
                }
                Err(error) => {
                    tracing::warn!(namespace = %name, group = record.group, %error, "could not start the namespace here")
                }
            }
        }
        for group in hosted {
            // Only groups `meta` made and no longer lists: a group it never made
            // (above its counter) is not this reconciler's to drop.
            if group == META_GROUP
                || group >= meta.next_group()
                || meta.namespace_of_group(group).is_some()
            {
                continue;
            }
            self.drop_deleted(group).await;
        }
        Ok(())
    }

    async fn drop_deleted(&self, group: GroupId) {
        match self.node.drop_group(group).await {
            Ok(()) => tracing::info!(
                group,
                "the namespace was deleted: its group is dropped here"
            ),
            Err(error) => tracing::warn!(group, %error, "dropping a deleted namespace's group"),
        }
    }
}

/// Calls `attempt` until it succeeds, fails for good, or `deadline` passes. Retries
/// the answers that mean "not yet": no leader, busy, unreachable, not founded yet.
pub async fn retry_until<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    loop {
        match attempt().await {
            Err(error)
                if (error.is_retryable()
                    || matches!(
                        error,
                        ApiError::Unavailable(_)
                            | ApiError::GroupNotFound { .. }
                            | ApiError::Timeout
                    ))
                    && Instant::now() + RETRY_PAUSE < deadline =>
            {
                tracing::debug!(%error, "not yet; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}
