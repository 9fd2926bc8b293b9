//! [`ServiceClient`]: the coordination service's client. It speaks to namespaces by
//! name: the `meta` namespace says which raft group holds each and which nodes host
//! it, and every call then goes through [`RaftClient`] to those nodes, so it inherits
//! its leader discovery, retries under one request id (a transaction applies exactly
//! once however often it is sent), and batching of concurrent writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use concord_service::command::{
    decode, encode, Command, OpResult, Query, QueryResponse, ReadOp, ReadResult, Txn, TxnResponse,
};
use concord_service::meta::{
    Meta, MetaCommand, MetaError, NamespaceRecord, NodeRecord, META, META_GROUP,
};
use concord_service::{Limits, NodeValue, Path, ServiceError, Stat};
use concord_types::sync::lock;
use concord_types::{ApiError, GroupId, NodeId, ReadMode};
use tokio::time::Instant;

use crate::{ClientConfig, RaftClient};

/// Why a service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The cluster could not carry the call out (unreachable, no leader in time,
    /// outcome unknown, ...).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The namespace refused it (not found, wrong type, a limit, ...); nothing
    /// changed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The cluster refused a namespace change (name taken, unknown node, ...).
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// No namespace of that name.
    #[error("no namespace {0:?} (list them with `namespaces`)")]
    NoSuchNamespace(String),
}

/// A namespace and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Its raft group.
    pub group: GroupId,
    /// The nodes hosting it, with their addresses.
    pub members: Vec<(NodeId, String)>,
    /// Its limits.
    pub limits: Limits,
}

/// A client of the coordination service. Cheap to clone; clones share connections,
/// sessions and what they learned.
#[derive(Clone)]
pub struct ServiceClient {
    raft: RaftClient,
    /// Namespace name to raft group, as `meta` last said.
    groups: Arc<Mutex<HashMap<String, GroupId>>>,
}

impl ServiceClient {
    /// Knows the cluster by `addresses` (host:port of any of its nodes) and connects
    /// to the first that answers.
    pub async fn connect(addresses: Vec<String>, config: ClientConfig) -> Result<Self, Error> {
        let raft = RaftClient::connect_many(addresses, config).await?;
        Ok(ServiceClient {
            raft,
            groups: Arc::default(),
        })
    }

    /// The raft-level client underneath (status, membership of groups).
    pub fn raft(&self) -> &RaftClient {
        &self.raft
    }

    // ---------------------------------------------------------------------------------
    // Namespaces.

    /// Every namespace, `meta` first, as the `meta` namespace says now.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, Error> {
        let meta = self.refresh().await?;
        let meta_members = self
            .raft
            .members(META_GROUP)
            .await?
            .into_iter()
            .map(|member| (member.id, member.address))
            .collect();
        let mut all = vec![NamespaceInfo {
            name: META.to_string(),
            group: META_GROUP,
            members: meta_members,
            limits: Limits::default(),
        }];
        all.extend(
            meta.namespaces()
                .iter()
                .map(|(name, record)| info(&meta, name, record)),
        );
        Ok(all)
    }

    /// Creates namespace `name` on `nodes` (empty: `replicas` nodes the cluster
    /// chooses, 3 by default when 0) with `limits`, and returns once it has a leader.
    pub async fn create_namespace(
        &self,
        name: &str,
        nodes: Vec<NodeId>,
        replicas: u32,
        limits: Limits,
    ) -> Result<NamespaceInfo, Error> {
        let command = MetaCommand::CreateNamespace {
            name: name.to_string(),
            nodes,
            replicas: if replicas == 0 { 3 } else { replicas },
            limits,
        };
        let record = self.meta_command(&command).await?.ok_or_else(|| {
            ApiError::Internal("the meta group created a namespace but did not say where".into())
        })?;
        let meta = self.refresh().await?;
        let namespace = info(&meta, name, &record);
        self.wait_for_leader(namespace.group).await?;
        Ok(namespace)
    }

    /// Deletes namespace `name` and everything in it (`meta` cannot be deleted).
    /// The namespace is sealed through its own log first, so a client still routing
    /// to it afterwards is refused ([`ServiceError::NamespaceDeleted`]), never
    /// acknowledged by a group about to be dropped; then `meta` forgets it.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), Error> {
        if name == META {
            return Err(Error::Meta(MetaError::Meta));
        }
        let meta = self.refresh().await?;
        let record = meta
            .namespaces()
            .get(name)
            .ok_or_else(|| Error::Meta(MetaError::NoSuchNamespace(name.to_string())))?;
        let sealed = self
            .raft
            .propose(record.group, encode(&Command::Seal))
            .await?;
        let sealed: Result<TxnResponse, ServiceError> =
            decode(&sealed.response).map_err(malformed)?;
        match sealed {
            // Sealed now, or by an earlier attempt of this delete.
            Ok(_) | Err(ServiceError::NamespaceDeleted) => {}
            Err(error) => return Err(error.into()),
        }
        self.meta_command(&MetaCommand::DeleteNamespace {
            name: name.to_string(),
        })
        .await?;
        lock(&self.groups).remove(name);
        Ok(())
    }

    /// The cluster's nodes as `meta` records them: name, address, health.
    pub async fn nodes(&self) -> Result<BTreeMap<NodeId, NodeRecord>, Error> {
        Ok(self.refresh().await?.nodes().clone())
    }

    /// Takes node `id` out of the cluster's records for good: nothing is placed on
    /// it any more, and each namespace it hosted gets a replacement at once (as for
    /// a node down past `replica_down_after_ms`). The node's process is the
    /// operator's to stop.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), Error> {
        self.meta_command(&MetaCommand::RemoveNode { id }).await?;
        Ok(())
    }

    async fn meta_command(&self, command: &MetaCommand) -> Result<Option<NamespaceRecord>, Error> {
        let answer = self.raft.propose(META_GROUP, encode(command)).await?;
        let result: Result<Option<NamespaceRecord>, MetaError> =
            decode(&answer.response).map_err(malformed)?;
        Ok(result?)
    }

    /// Reads `meta` (linearizably) and routes every namespace's group to its hosts.
    async fn refresh(&self) -> Result<Meta, Error> {
        let read = self
            .raft
            .read(META_GROUP, Bytes::new(), ReadMode::Linearizable)
            .await?;
        let meta: Meta = decode(&read.response).map_err(malformed)?;
        let mut groups = lock(&self.groups);
        groups.clear();
        for (name, record) in meta.namespaces() {
            groups.insert(name.clone(), record.group);
            let addresses = record
                .members
                .iter()
                .filter_map(|id| meta.nodes().get(id).map(|node| node.address.clone()))
                .collect();
            self.raft.set_route(record.group, addresses);
        }
        Ok(meta)
    }

    /// The raft group of `namespace`, from what `meta` said (asked again when not
    /// known).
    async fn group(&self, namespace: &str) -> Result<GroupId, Error> {
        if namespace == META {
            return Err(Error::Service(ServiceError::InvalidRequest(
                "the meta namespace holds the cluster's state, not a tree; use the \
                 namespace calls"
                    .into(),
            )));
        }
        if let Some(&group) = lock(&self.groups).get(namespace) {
            return Ok(group);
        }
        self.refresh().await?;
        lock(&self.groups)
            .get(namespace)
            .copied()
            .ok_or_else(|| Error::NoSuchNamespace(namespace.to_string()))
    }

    /// Waits until `group` has a leader that answers, within the retry deadline.
    async fn wait_for_leader(&self, group: GroupId) -> Result<(), Error> {
        let config = self.raft.config();
        let deadline = Instant::now() + std::time::Duration::from_millis(config.retry_deadline_ms);
        loop {
            let error = match self.raft.status(group).await {
                Ok(status) if status.leader.is_some() => return Ok(()),
                Ok(_) => ApiError::NotLeader {
                    leader: None,
                    address: None,
                },
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(error.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(config.retry_pause_ms)).await;
        }
    }

    // ---------------------------------------------------------------------------------
    // The tree.

    /// Runs `txn` in `namespace`: once, however often it is sent (see the crate
    /// docs). A refusal (`Error::Service`) changed nothing.
    pub async fn txn(&self, namespace: &str, txn: Txn) -> Result<TxnResponse, Error> {
        let command = encode(&Command::Txn(txn));
        self.on_group(namespace, |group| {
            let command = command.clone();
            async move { Ok(self.raft.propose(group, command).await?.response) }
        })
        .await
    }

    /// Runs `query` in `namespace`: linearizable, or from the contacted node's state
    /// as it is (`ReadMode::Stale`).
    pub async fn query(
        &self,
        namespace: &str,
        query: Query,
        mode: ReadMode,
    ) -> Result<QueryResponse, Error> {
        let query = encode(&query);
        self.on_group(namespace, |group| {
            let query = query.clone();
            async move { Ok(self.raft.read(group, query, mode).await?.response) }
        })
        .await
    }

    /// Runs `call` on `namespace`'s group and decodes the service's answer. A group
    /// not found (the namespace was deleted and made again, or moved) has `meta`
    /// asked once more.
    async fn on_group<T, F, Fut>(&self, namespace: &str, mut call: F) -> Result<T, Error>
    where
        T: serde::de::DeserializeOwned,
        F: FnMut(GroupId) -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, ApiError>>,
    {
        let mut refreshed = false;
        loop {
            let group = self.group(namespace).await?;
            match call(group).await {
                Ok(answer) => {
                    let result: Result<T, ServiceError> = decode(&answer).map_err(malformed)?;
                    return Ok(result?);
                }
                Err(ApiError::GroupNotFound { .. }) if !refreshed => {
                    refreshed = true;
                    lock(&self.groups).remove(namespace);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// A path for this client's calls (checked against the default path limit; the
    /// namespace checks its own).
    pub fn path(text: &str) -> Result<Path, Error> {
        Ok(Path::parse(text, Limits::default().path_bytes_max)?)
    }

    /// Sets blob `path` to `value` (creating it); the blob's stat after.
    pub async fn put(&self, namespace: &str, path: &str, value: Bytes) -> Result<Stat, Error> {
        let op = concord_service::command::Op::BlobPut {
            path: Self::path(path)?,
            value,
        };
        let response = self.txn(namespace, Txn::single(op)).await?;
        match response.results.into_iter().next() {
            Some(OpResult::Written(stat)) => Ok(stat),
            other => Err(unexpected("a blob put", &other)),
        }
    }

    /// The value and stat of the node at `path`, linearizably.
    pub async fn get(&self, namespace: &str, path: &str) -> Result<(NodeValue, Stat), Error> {
        self.get_with(namespace, path, ReadMode::Linearizable).await
    }

    /// The value and stat of the node at `path`, read as `mode` says.
    pub async fn get_with(
        &self,
        namespace: &str,
        path: &str,
        mode: ReadMode,
    ) -> Result<(NodeValue, Stat), Error> {
        let query = Query {
            revision: None,
            ops: vec![ReadOp::Get {
                path: Self::path(path)?,
            }],
        };
        let response = self.query(namespace, query, mode).await?;
        match response.results.into_iter().next() {
            Some(ReadResult::Node { value, stat }) => Ok((value, stat)),
            other => Err(unexpected("a get", &other)),
        }
    }
}

fn info(meta: &Meta, name: &str, record: &NamespaceRecord) -> NamespaceInfo {
    NamespaceInfo {
        name: name.to_string(),
        group: record.group,
        members: record
            .members
            .iter()
            .map(|id| {
                let address = meta
                    .nodes()
                    .get(id)
                    .map_or_else(String::new, |node| node.address.clone());
                (*id, address)
            })
            .collect(),
        limits: record.limits,
    }
}

fn malformed(error: ServiceError) -> ApiError {
    ApiError::Internal(format!("a reply that does not decode: {error}"))
}

fn unexpected<T: std::fmt::Debug>(what: &str, answer: &T) -> Error {
    Error::Api(ApiError::Internal(format!(
        "{what} answered {answer:?}, not what it answers"
    )))
}
