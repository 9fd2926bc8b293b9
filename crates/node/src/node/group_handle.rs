//! [`GroupHandle`] and [`TypedGroup`]: a [`NodeHandle`] bound to one group.

use bytes::Bytes;
use concord_group::{DecodeError, LogEntry, TypeTag, TypedStateMachine};
use concord_raft::NodeId;
use concord_types::{
    ApiError, ClientId, GroupStatus, JoinTicket, Member, ProposeResponse, ReadResponse, RequestId,
};

use super::NodeHandle;
use crate::GroupId;

/// A [`NodeHandle`] bound to one group: the same calls without the group argument.
#[derive(Clone)]
pub struct GroupHandle {
    node: NodeHandle,
    group: GroupId,
}

impl GroupHandle {
    pub(super) fn new(node: NodeHandle, group: GroupId) -> Self {
        GroupHandle { node, group }
    }

    /// The group.
    pub fn id(&self) -> GroupId {
        self.group
    }

    /// The node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// See [`NodeHandle::propose`].
    pub async fn propose(&self, command: Bytes) -> Result<ProposeResponse, ApiError> {
        self.node.propose(self.group, command).await
    }

    /// See [`NodeHandle::propose_request`].
    pub async fn propose_request(
        &self,
        id: RequestId,
        command: Bytes,
    ) -> Result<ProposeResponse, ApiError> {
        self.node.propose_request(self.group, id, command).await
    }

    /// See [`NodeHandle::register_client`].
    pub async fn register_client(&self) -> Result<ClientId, ApiError> {
        self.node.register_client(self.group).await
    }

    /// See [`NodeHandle::read`].
    pub async fn read(&self, query: Bytes) -> Result<ReadResponse, ApiError> {
        self.node.read(self.group, query).await
    }

    /// See [`NodeHandle::read_stale`].
    pub async fn read_stale(&self, query: Bytes) -> Result<ReadResponse, ApiError> {
        self.node.read_stale(self.group, query).await
    }

    /// See [`NodeHandle::status`].
    pub async fn status(&self) -> Result<GroupStatus, ApiError> {
        self.node.status(self.group).await
    }

    /// See [`NodeHandle::members`].
    pub async fn members(&self) -> Result<Vec<Member>, ApiError> {
        self.node.members(self.group).await
    }

    /// See [`NodeHandle::request_join`].
    pub async fn request_join(&self, peer_address: &str) -> Result<JoinTicket, ApiError> {
        self.node.request_join(peer_address, self.group).await
    }

    /// See [`NodeHandle::leave`].
    pub async fn leave(&self) -> Result<(), ApiError> {
        self.node.leave(self.group).await
    }

    /// See [`NodeHandle::add_learner`].
    pub async fn add_learner(&self, node: NodeId, address: &str) -> Result<(), ApiError> {
        self.node.add_learner(self.group, node, address).await
    }

    /// See [`NodeHandle::promote`].
    pub async fn promote(&self, node: NodeId) -> Result<(), ApiError> {
        self.node.promote(self.group, node).await
    }

    /// See [`NodeHandle::remove`].
    pub async fn remove(&self, node: NodeId) -> Result<(), ApiError> {
        self.node.remove(self.group, node).await
    }

    /// See [`NodeHandle::transfer_leader`].
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ApiError> {
        self.node.transfer_leader(self.group, target).await
    }

    /// See [`NodeHandle::campaign`].
    pub async fn campaign(&self) -> Result<(), ApiError> {
        self.node.campaign(self.group).await
    }

    /// See [`NodeHandle::force_new_cluster`].
    pub async fn force_new_cluster(&self) -> Result<(), ApiError> {
        self.node.force_new_cluster(self.group).await
    }
}

/// A typed handle on a group run by a [`crate::Typed`]`<M>`: commands, queries and
/// responses are `M`'s types, never bytes.
pub struct TypedGroup<M> {
    group: GroupHandle,
    _type: TypeTag<M>,
}

impl<M> Clone for TypedGroup<M> {
    fn clone(&self) -> Self {
        TypedGroup {
            group: self.group.clone(),
            _type: self._type.clone(),
        }
    }
}

fn undecodable(error: DecodeError) -> ApiError {
    ApiError::Internal(format!("undecodable response: {error}"))
}

impl<M: TypedStateMachine> TypedGroup<M> {
    pub(super) fn new(group: GroupHandle) -> Self {
        TypedGroup {
            group,
            _type: TypeTag::default(),
        }
    }

    /// The untyped handle.
    pub fn untyped(&self) -> &GroupHandle {
        &self.group
    }

    /// Proposes `command`; returns the state machine's response once applied.
    pub async fn propose(&self, command: &M::Command) -> Result<M::Response, ApiError> {
        let applied = self.group.propose(command.encode()).await?;
        M::Response::decode(&applied.response).map_err(undecodable)
    }

    /// A linearizable read.
    pub async fn read(&self, query: &M::Query) -> Result<M::QueryResponse, ApiError> {
        let answer = self.group.read(query.encode()).await?;
        M::QueryResponse::decode(&answer.response).map_err(undecodable)
    }

    /// A read from this node's state machine as it is now (possibly stale).
    pub async fn read_stale(&self, query: &M::Query) -> Result<M::QueryResponse, ApiError> {
        let answer = self.group.read_stale(query.encode()).await?;
        M::QueryResponse::decode(&answer.response).map_err(undecodable)
    }
}
