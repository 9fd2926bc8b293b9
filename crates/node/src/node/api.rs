//! The node as the gRPC client service sees it. Requests arriving here are never
//! forwarded (the remote client follows `NotLeader` itself), so a request cannot
//! bounce between nodes.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use concord_group::{framing, AdminOp};
use concord_raft::NodeId;
use concord_types::{
    ApiError, ClientId, GroupId, GroupStatus, JoinTicket, Member, MemberRole, ProposeResponse,
    ReadMode, ReadResponse, RequestId,
};

use super::NodeHandle;
use crate::service::RaftApi;

impl RaftApi for NodeHandle {
    async fn propose(
        &self,
        group: GroupId,
        data: Bytes,
        request: Option<RequestId>,
    ) -> Result<ProposeResponse, ApiError> {
        let data = match request {
            Some(id) => framing::encode_request(id, &data),
            None => framing::encode_command(&data),
        };
        let result = self.propose_here(group, data).await;
        let hooks = &self.inner.fault_hooks;
        if result.is_ok()
            && hooks
                .lose_replies
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        {
            tracing::warn!(
                node = self.node_id(),
                group,
                "fault hook: the answer to an applied proposal is lost"
            );
            tokio::time::sleep(std::time::Duration::from_millis(hooks.lost_reply_delay_ms)).await;
            return Err(ApiError::Unavailable(
                "connection reset by peer (fault hook: the answer was lost)".into(),
            ));
        }
        result
    }

    async fn register_client(&self, group: GroupId) -> Result<ClientId, ApiError> {
        self.register_here(group).await
    }

    async fn read(
        &self,
        group: GroupId,
        query: Bytes,
        mode: ReadMode,
    ) -> Result<ReadResponse, ApiError> {
        match mode {
            ReadMode::Linearizable => self.read_here(group, query).await,
            ReadMode::Stale => self.read_stale(group, query).await,
        }
    }

    async fn status(&self, group: GroupId) -> Result<GroupStatus, ApiError> {
        NodeHandle::status(self, group).await
    }

    async fn request_join(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: String,
    ) -> Result<JoinTicket, ApiError> {
        self.admin_here(
            group,
            AdminOp::AddLearner {
                node: node_id,
                address: address.clone(),
            },
        )
        .await?;
        let status = NodeHandle::status(self, group).await?;
        let mut members = status.members;
        if let Some(member) = members.iter_mut().find(|member| member.id == node_id) {
            member.address = address;
        }
        Ok(JoinTicket {
            group,
            node_id,
            members,
            leader: Some(Member {
                id: self.node_id(),
                address: self.address().to_string(),
                role: MemberRole::Voter,
            }),
        })
    }

    async fn leave(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Remove { node: node_id })
            .await
    }

    async fn add_learner(
        &self,
        group: GroupId,
        node_id: NodeId,
        address: String,
    ) -> Result<(), ApiError> {
        self.admin_here(
            group,
            AdminOp::AddLearner {
                node: node_id,
                address,
            },
        )
        .await
    }

    async fn promote(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Promote { node: node_id })
            .await
    }

    async fn remove(&self, group: GroupId, node_id: NodeId) -> Result<(), ApiError> {
        self.admin_here(group, AdminOp::Remove { node: node_id })
            .await
    }

    async fn transfer_leader(&self, group: GroupId, target: NodeId) -> Result<(), ApiError> {
        // Returns once this node sees `target` lead (never forwarded).
        NodeHandle::transfer_leader(self, group, target).await
    }
}
