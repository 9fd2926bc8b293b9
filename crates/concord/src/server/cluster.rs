//! What a server knows and does about the cluster: it founds or joins it, reads the
//! `meta` namespace (from its own replica when it hosts one, else through the client),
//! and keeps the namespaces it hosts in step with `meta`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_client::service::ServiceClient;
use concord_client::{ClientConfig, RaftClient};
use concord_node::{retry_until, ApiError, ClientTableLimits, GroupId, MemberRole, NodeHandle};
use concord_service::command::decode;
use concord_service::factory::{meta_spec, namespace_spec};
use concord_service::meta::{
    Health, Meta, MetaCommand, MetaError, NamespaceRecord, META, META_GROUP,
};
use concord_types::sync::lock;
use concord_types::Role;
use tokio::time::Instant;

use super::config::{ServerConfig, META_VOTERS_MAX};

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
    /// Groups this node is joining (a task admits it, catches it up, promotes it).
    joining: Arc<Mutex<HashSet<GroupId>>>,
    /// When the `meta` leader here last checked the nodes' health.
    last_health_check: Mutex<Option<Instant>>,
    /// The clients the health checks use, by address.
    probes: Mutex<HashMap<String, RaftClient>>,
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
            joining: Arc::default(),
            last_health_check: Mutex::new(None),
            probes: Mutex::new(HashMap::new()),
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

    /// Brings this node in step with `meta`: starts the groups of namespaces placed
    /// on it (founding them together while their members are the founders, else
    /// joining), drops its replica of a namespace deleted or moved away, and, as a
    /// namespace's raft leader, removes from the group the members `meta` replaced.
    /// As `meta`'s leader it also checks the nodes' health and plans replacements.
    ///
    /// It acts only on `meta` read linearizably: a replica's own state may lag
    /// (after a restart it holds its snapshot until the log replays), and a lagging
    /// view would drop a live namespace's data and found it again empty.
    pub async fn reconcile(&self) -> Result<(), ApiError> {
        let _one_at_a_time = self.reconciling.lock().await;
        self.route_meta().await;
        let meta = self.meta().await?;
        let me = self.node.node_id();
        let hosted = self.node.groups();
        for (name, record) in meta.namespaces() {
            if !record.members.contains(&me) || hosted.contains(&record.group) {
                continue;
            }
            if record.changes == 0 {
                self.found_namespace(&meta, name, record).await;
            } else {
                self.start_joining(&meta, name, record);
            }
        }
        for group in hosted {
            let metrics = self.node.metrics().group(group);
            match meta.namespace_of_group(group) {
                Some((name, _)) => metrics.set_name(name),
                None if group == META_GROUP => metrics.set_name(META),
                None => {}
            }
            if group == META_GROUP {
                continue;
            }
            match meta.namespace_of_group(group) {
                // Only groups `meta` made and no longer lists: a group it never made
                // (above its counter) is not this reconciler's to drop.
                None if group < meta.next_group() => self.drop_group(group, "deleted").await,
                None => {}
                Some((_, record)) if !record.members.contains(&me) => {
                    self.drop_if_removed(group, record).await
                }
                Some((name, record)) => self.converge(name, record).await,
            }
        }
        if self.leads(META_GROUP).await {
            self.check_health(&meta).await;
            self.plan_repairs(&meta).await;
        }
        Ok(())
    }

    async fn found_namespace(&self, meta: &Meta, name: &str, record: &NamespaceRecord) {
        let members: Vec<(u64, String)> = record
            .members
            .iter()
            .filter_map(|id| meta.nodes().get(id).map(|node| (*id, node.address.clone())))
            .collect();
        // Every founder must found with the same voters: never with a list missing
        // a member `meta` no longer knows the address of.
        if members.len() != record.members.len() {
            tracing::warn!(namespace = %name, group = record.group, "not founding: a member is no longer in meta");
            return;
        }
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

    /// Joins `record`'s group in a task of its own (a learner, caught up, promoted),
    /// through another member.
    fn start_joining(&self, meta: &Meta, name: &str, record: &NamespaceRecord) {
        let group = record.group;
        if !lock(&self.joining).insert(group) {
            return;
        }
        let contacts: Vec<String> = record
            .members
            .iter()
            .filter(|id| **id != self.node.node_id())
            .filter_map(|id| meta.nodes().get(id))
            .filter(|node| node.health == Health::Up)
            .map(|node| node.address.clone())
            .collect();
        let node = self.node.clone();
        let joining = self.joining.clone();
        let name = name.to_string();
        let deadline = Instant::now() + Duration::from_millis(self.config.node.admin_timeout_ms);
        tokio::spawn(async move {
            let mut outcome = Err(ApiError::Unavailable(
                "no member of the namespace is up".into(),
            ));
            for contact in &contacts {
                outcome = match retry_until(deadline, || node.request_join(contact, group)).await {
                    Ok(ticket) => node.join(ticket).await,
                    Err(error) => Err(error),
                };
                if outcome.is_ok() {
                    break;
                }
            }
            match outcome {
                Ok(()) => {
                    tracing::info!(namespace = %name, group, "joined the namespace as a replacement replica")
                }
                Err(error) => {
                    tracing::warn!(namespace = %name, group, %error, "joining the namespace failed; trying again")
                }
            }
            lock(&joining).remove(&group);
        });
    }

    /// Drops this node's replica of a namespace `meta` moved elsewhere, once the
    /// group's leader no longer counts this node (so the group never loses a voter
    /// it still needs to a hasty drop).
    async fn drop_if_removed(&self, group: GroupId, record: &NamespaceRecord) {
        // Leading a group it no longer belongs to, it hands the lead to a member
        // `meta` lists (whose leader then removes this node).
        if let Ok(status) = self.node.status(group).await {
            if status.role == Role::Leader {
                let heir = status.members.iter().find(|member| {
                    member.role == MemberRole::Voter && record.members.contains(&member.id)
                });
                if let Some(heir) = heir {
                    if let Err(error) = self.node.transfer_leader(group, heir.id).await {
                        tracing::info!(group, %error, "handing the lead to a listed member: not yet");
                    }
                }
                return;
            }
        }
        let Ok(client) = self.client().await else {
            return;
        };
        if let Ok(meta) = self.cached_meta().await {
            let hosts = record
                .members
                .iter()
                .filter_map(|id| meta.nodes().get(id).map(|node| node.address.clone()))
                .collect();
            client.raft().set_route(group, hosts);
        }
        // Only the leader's word counts: a member still catching up (an empty
        // joiner) knows a leader before it knows the configuration.
        match client.raft().leader_status(group).await {
            Ok(status) if !status.members.iter().any(|m| m.id == self.node.node_id()) => {
                self.drop_group(group, "moved to another node").await
            }
            _ => {}
        }
    }

    /// As the namespace's raft leader: once every member `meta` lists votes, removes
    /// the members it no longer lists. As a member left a learner (its join was cut
    /// short): asks to be promoted.
    async fn converge(&self, name: &str, record: &NamespaceRecord) {
        let group = record.group;
        let Ok(status) = self.node.status(group).await else {
            return;
        };
        let me = self.node.node_id();
        if status.role == Role::Leader {
            let votes = |id: u64| {
                status
                    .members
                    .iter()
                    .any(|member| member.id == id && member.role == MemberRole::Voter)
            };
            if record.members.iter().all(|id| votes(*id)) {
                for extra in status
                    .members
                    .iter()
                    .filter(|m| !record.members.contains(&m.id))
                {
                    match self.node.remove(group, extra.id).await {
                        Ok(()) => {
                            tracing::info!(namespace = %name, group, node = extra.id, "removed a replaced member from the group")
                        }
                        Err(error) => {
                            tracing::info!(namespace = %name, group, node = extra.id, %error, "removing a replaced member: not yet")
                        }
                    }
                }
            }
        } else if status
            .members
            .iter()
            .any(|member| member.id == me && member.role == MemberRole::Learner)
            && !lock(&self.joining).contains(&group)
        {
            if let Err(error) = self.node.promote(group, me).await {
                tracing::debug!(namespace = %name, group, %error, "asking to be promoted: not yet");
            }
        }
    }

    /// Whether this node leads `group` now.
    async fn leads(&self, group: GroupId) -> bool {
        self.node.groups().contains(&group)
            && self
                .node
                .status(group)
                .await
                .is_ok_and(|status| status.role == Role::Leader)
    }

    /// As `meta`'s leader, every `health_check_interval_ms`: asks every node for
    /// its status and records in `meta` those that stopped or started answering.
    async fn check_health(&self, meta: &Meta) {
        let interval = Duration::from_millis(self.config.health_check_interval_ms);
        {
            let mut last = lock(&self.last_health_check);
            if last.is_some_and(|last| last.elapsed() < interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        for (&id, record) in meta.nodes() {
            let up = id == self.node.node_id() || self.answers(&record.address).await;
            let change = match (up, record.health) {
                (true, Health::DownSince(_)) => Some(Health::Up),
                (false, Health::Up) => Some(Health::DownSince(now_ms())),
                _ => None,
            };
            if let Some(health) = change {
                tracing::info!(node = id, ?health, "a node's health changed");
                self.propose_meta(&MetaCommand::SetHealth { id, health })
                    .await;
            }
        }
    }

    /// Whether the node at `address` answers a status call in time (any answer,
    /// even "no such group", means it is up).
    async fn answers(&self, address: &str) -> bool {
        let timeout = self.config.health_check_timeout_ms;
        let probe = lock(&self.probes).get(address).cloned();
        let probe = match probe {
            Some(probe) => probe,
            None => {
                let config = ClientConfig {
                    connect_timeout_ms: timeout,
                    request_timeout_ms: timeout,
                    retry_deadline_ms: 0,
                    ..ClientConfig::default()
                };
                match RaftClient::connect_with(address.to_string(), config).await {
                    Ok(probe) => {
                        lock(&self.probes).insert(address.to_string(), probe.clone());
                        probe
                    }
                    Err(_) => return false,
                }
            }
        };
        match probe.status(META_GROUP).await {
            Ok(_) => true,
            Err(error) => !matches!(error, ApiError::Unavailable(_) | ApiError::Timeout),
        }
    }

    /// As `meta`'s leader: records a replacement for every member lost (left, or
    /// down past `replica_down_after_ms`). The new member then joins by itself and
    /// the group's leader removes the lost one (see [`Cluster::reconcile`]).
    async fn plan_repairs(&self, meta: &Meta) {
        for repair in meta.plan_repairs(now_ms(), self.config.replica_down_after_ms) {
            let Some(record) = meta.namespaces().get(&repair.namespace) else {
                continue;
            };
            if !self.carried_out(meta, record).await {
                tracing::info!(namespace = %repair.namespace, group = repair.group, "a replica is lost but the last change is not carried out yet");
                continue;
            }
            let members = record
                .members
                .iter()
                .map(|&id| {
                    if id == repair.lost {
                        repair.replacement
                    } else {
                        id
                    }
                })
                .collect();
            tracing::info!(namespace = %repair.namespace, group = repair.group, lost = repair.lost, replacement = repair.replacement, "replacing a lost replica");
            self.propose_meta(&MetaCommand::SetMembers {
                name: repair.namespace.clone(),
                group: repair.group,
                from: record.members.clone(),
                members,
            })
            .await;
        }
    }

    /// Whether `record`'s group votes with exactly the members `meta` lists (its
    /// last change carried out), as its leader says.
    async fn carried_out(&self, meta: &Meta, record: &NamespaceRecord) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let hosts = record
            .members
            .iter()
            .filter_map(|id| meta.nodes().get(id).map(|node| node.address.clone()))
            .collect();
        client.raft().set_route(record.group, hosts);
        let Ok(status) = client.raft().leader_status(record.group).await else {
            return false;
        };
        let mut voters: Vec<u64> = status
            .members
            .iter()
            .filter(|member| member.role == MemberRole::Voter)
            .map(|member| member.id)
            .collect();
        voters.sort_unstable();
        let mut listed = record.members.clone();
        listed.sort_unstable();
        voters == listed && status.members.len() == listed.len()
    }

    /// Proposes `command` to `meta`, logging a refusal (the next round decides
    /// again). A node hosting `meta` proposes through its own replica (forwarded to
    /// the leader, wherever it is now); others through the client.
    async fn propose_meta(&self, command: &MetaCommand) {
        let data = concord_service::command::encode(command);
        let answer = if self.hosts_meta() {
            self.node.propose(META_GROUP, data).await
        } else {
            match self.client().await {
                Ok(client) => client.raft().propose(META_GROUP, data).await,
                Err(error) => Err(error),
            }
        };
        match answer {
            Ok(answer) => {
                let result: Result<Result<Option<NamespaceRecord>, MetaError>, _> =
                    decode(&answer.response);
                if let Ok(Err(error)) = result {
                    tracing::info!(%error, ?command, "meta refused a change");
                }
            }
            Err(error) => tracing::info!(%error, ?command, "proposing to meta failed"),
        }
    }

    /// Points the client's `meta` calls at `meta`'s members as this node's replica
    /// knows them, so they never stay on a node that left (the join address).
    async fn route_meta(&self) {
        if !self.hosts_meta() {
            return;
        }
        let (Some(client), Ok(status)) = (self.client.get(), self.node.status(META_GROUP).await)
        else {
            return;
        };
        let hosts: Vec<String> = status
            .members
            .into_iter()
            .map(|member| member.address)
            .filter(|address| !address.is_empty())
            .collect();
        if !hosts.is_empty() {
            client.raft().set_route(META_GROUP, hosts);
        }
    }

    async fn drop_group(&self, group: GroupId, why: &str) {
        match self.node.drop_group(group).await {
            Ok(()) => tracing::info!(group, why, "the namespace's group is dropped here"),
            Err(error) => tracing::warn!(group, %error, "dropping a namespace's group"),
        }
    }
}

/// Milliseconds since the Unix epoch, by this node's clock (health records carry it
/// as a value: no replica reads a clock while applying).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
