//! The `concord.v1` gRPC services a server offers: `Tree` (transactions and queries
//! on a namespace) and `Namespaces` (create, delete, list). A namespace this node
//! hosts is served here (a write on a follower is forwarded to its leader); one it
//! does not host is answered `NotLeader` naming a node that does, which clients follow.

use std::sync::Arc;

use concord_client::service::Error as ClientError;
use concord_node::{ApiError, GroupId, ReadMode};
use concord_proto::api as raft_proto;
use concord_proto::convert::{error_to_status, member_to_proto, request_id_from_proto};
use concord_proto::service as proto;
use concord_proto::service::namespaces_server::{Namespaces, NamespacesServer};
use concord_proto::service::tree_server::{Tree, TreeServer};
use concord_proto::service_convert::{
    limits_from_proto, limits_to_proto, query_from_proto, query_reply_to_proto, txn_from_proto,
    txn_reply_to_proto,
};
use concord_service::command::{decode, encode, Command, QueryResponse, TxnResponse};
use concord_service::meta::{MetaError, META};
use concord_service::ServiceError;
use concord_types::Member;
use tonic::{Request, Response, Status};

use super::cluster::Cluster;

/// The `Tree` and `Namespaces` services over `cluster`, with `request_bytes_max` on
/// each call.
pub fn routes(cluster: Arc<Cluster>, request_bytes_max: usize) -> tonic::service::Routes {
    let tree = TreeServer::new(TreeApi {
        cluster: cluster.clone(),
    })
    .max_decoding_message_size(request_bytes_max);
    let namespaces = NamespacesServer::new(NamespacesApi { cluster })
        .max_decoding_message_size(request_bytes_max);
    tonic::service::Routes::new(tree).add_service(namespaces)
}

struct TreeApi {
    cluster: Arc<Cluster>,
}

impl TreeApi {
    /// The group of `namespace` when this node hosts it; else `NotLeader` naming a
    /// node that does.
    async fn local_group(&self, namespace: &str) -> Result<GroupId, Status> {
        if namespace == META {
            return Err(Status::invalid_argument(
                "the meta namespace holds the cluster's state, not a tree: use the \
                 Namespaces service",
            ));
        }
        let record = self
            .cluster
            .namespace(namespace)
            .await
            .map_err(|error| error_to_status(&error))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no namespace {namespace:?} (Namespaces.List lists them)"
                ))
            })?;
        let node = self.cluster.node();
        if node.groups().contains(&record.group) {
            return Ok(record.group);
        }
        let meta = self
            .cluster
            .cached_meta()
            .await
            .map_err(|error| error_to_status(&error))?;
        // An up member (the group's leader, when it answers, redirects further).
        let host = record.members.iter().find_map(|id| {
            meta.nodes()
                .get(id)
                .filter(|node| node.health == concord_service::meta::Health::Up)
                .map(|node| (*id, node.address.clone()))
        });
        Err(error_to_status(&ApiError::NotLeader {
            leader: host.as_ref().map(|(id, _)| *id),
            address: host.map(|(_, address)| address),
        }))
    }

    async fn run_txn(&self, request: proto::TxnRequest) -> Result<proto::TxnReply, Status> {
        let group = self.local_group(&request.namespace).await?;
        let id = request
            .id
            .map(request_id_from_proto)
            .transpose()
            .map_err(|error| error_to_status(&error))?;
        let txn = match txn_from_proto(request) {
            Ok(txn) => txn,
            Err(error) => return Ok(txn_reply_to_proto(&Err(error))),
        };
        let command = encode(&Command::Txn(txn));
        let node = self.cluster.node();
        let applied = match id {
            Some(id) => node.propose_request(group, id, command).await,
            None => node.propose(group, command).await,
        }
        .map_err(|error| error_to_status(&error))?;
        let answer: Result<TxnResponse, ServiceError> =
            decode(&applied.response).unwrap_or_else(Err);
        Ok(txn_reply_to_proto(&answer))
    }
}

#[tonic::async_trait]
impl Tree for TreeApi {
    async fn register_client(
        &self,
        request: Request<proto::RegisterClientRequest>,
    ) -> Result<Response<proto::RegisterClientResponse>, Status> {
        let group = self.local_group(&request.into_inner().namespace).await?;
        let client_id = self
            .cluster
            .node()
            .register_client(group)
            .await
            .map_err(|error| error_to_status(&error))?;
        Ok(Response::new(proto::RegisterClientResponse { client_id }))
    }

    async fn txn(
        &self,
        request: Request<proto::TxnRequest>,
    ) -> Result<Response<proto::TxnReply>, Status> {
        self.run_txn(request.into_inner()).await.map(Response::new)
    }

    async fn txn_batch(
        &self,
        request: Request<proto::TxnBatchRequest>,
    ) -> Result<Response<proto::TxnBatchReply>, Status> {
        let requests = request.into_inner().requests;
        let replies = futures_util::future::join_all(
            requests.into_iter().map(|request| self.run_txn(request)),
        )
        .await;
        let replies = replies
            .into_iter()
            .map(|reply| proto::TxnBatchItem {
                outcome: Some(match reply {
                    Ok(reply) => proto::txn_batch_item::Outcome::Reply(reply),
                    Err(status) => proto::txn_batch_item::Outcome::Failure(
                        concord_proto::convert::error_to_detail(
                            &concord_proto::convert::error_from_status(&status),
                        ),
                    ),
                }),
            })
            .collect();
        Ok(Response::new(proto::TxnBatchReply { replies }))
    }

    async fn query(
        &self,
        request: Request<proto::QueryRequest>,
    ) -> Result<Response<proto::QueryReply>, Status> {
        let request = request.into_inner();
        let group = self.local_group(&request.namespace).await?;
        let mode = if request.stale {
            ReadMode::Stale
        } else {
            ReadMode::Linearizable
        };
        let query = match query_from_proto(request) {
            Ok(query) => query,
            Err(error) => return Ok(Response::new(query_reply_to_proto(&Err(error)))),
        };
        let node = self.cluster.node();
        let read = match mode {
            ReadMode::Linearizable => node.read(group, encode(&query)).await,
            ReadMode::Stale => node.read_stale(group, encode(&query)).await,
        }
        .map_err(|error| error_to_status(&error))?;
        let answer: Result<QueryResponse, ServiceError> =
            decode(&read.response).unwrap_or_else(Err);
        let mut reply = query_reply_to_proto(&answer);
        if let Some(header) = reply.header.as_mut() {
            header.term = read.term;
            header.index = read.index;
        }
        Ok(Response::new(reply))
    }
}

struct NamespacesApi {
    cluster: Arc<Cluster>,
}

fn client_error_status(error: ClientError) -> Status {
    match error {
        ClientError::Api(error) => error_to_status(&error),
        ClientError::Service(error) => Status::invalid_argument(error.to_string()),
        ClientError::NoSuchNamespace(name) => Status::not_found(format!("no namespace {name:?}")),
        ClientError::Meta(error) => {
            let message = error.to_string();
            match error {
                MetaError::NamespaceExists(_) => Status::already_exists(message),
                MetaError::NoSuchNamespace(_) => Status::not_found(message),
                MetaError::NodeDown(_) | MetaError::NotEnoughNodes { .. } => {
                    Status::failed_precondition(message)
                }
                MetaError::Meta => Status::permission_denied(message),
                _ => Status::invalid_argument(message),
            }
        }
    }
}

fn info_to_proto(info: concord_client::service::NamespaceInfo) -> proto::NamespaceInfo {
    proto::NamespaceInfo {
        name: info.name,
        group: info.group,
        members: info
            .members
            .into_iter()
            .map(|(id, address)| {
                member_to_proto(Member {
                    id,
                    address,
                    role: concord_types::MemberRole::Voter,
                })
            })
            .collect::<Vec<raft_proto::Member>>(),
        limits: Some(limits_to_proto(&info.limits)),
    }
}

#[tonic::async_trait]
impl Namespaces for NamespacesApi {
    async fn create(
        &self,
        request: Request<proto::CreateNamespaceRequest>,
    ) -> Result<Response<proto::CreateNamespaceReply>, Status> {
        let request = request.into_inner();
        let limits = match request.limits {
            Some(limits) => limits_from_proto(Some(limits)),
            None => self.cluster.config().limits,
        };
        let info = self
            .cluster
            .client()
            .await
            .map_err(|error| error_to_status(&error))?
            .create_namespace(
                &request.name,
                request.nodes,
                self.cluster.config().namespace_replicas,
                limits,
            )
            .await
            .map_err(client_error_status)?;
        Ok(Response::new(proto::CreateNamespaceReply {
            namespace: Some(info_to_proto(info)),
        }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteNamespaceRequest>,
    ) -> Result<Response<proto::DeleteNamespaceReply>, Status> {
        self.cluster
            .client()
            .await
            .map_err(|error| error_to_status(&error))?
            .delete_namespace(&request.into_inner().name)
            .await
            .map_err(client_error_status)?;
        Ok(Response::new(proto::DeleteNamespaceReply {}))
    }

    async fn list(
        &self,
        _request: Request<proto::ListNamespacesRequest>,
    ) -> Result<Response<proto::ListNamespacesReply>, Status> {
        let namespaces = self
            .cluster
            .client()
            .await
            .map_err(|error| error_to_status(&error))?
            .namespaces()
            .await
            .map_err(client_error_status)?;
        Ok(Response::new(proto::ListNamespacesReply {
            namespaces: namespaces.into_iter().map(info_to_proto).collect(),
        }))
    }
}
