//! A follower passing a request on to its group's leader, when `forward_proposals` is
//! set: proposals, registrations, linearizable reads with no leader known here, and
//! membership changes. Only the node's own handle forwards; requests that arrived over
//! gRPC are answered `NotLeader` (the remote client follows it), so a request never
//! bounces between nodes that disagree about the leader. A forwarded request is sent
//! once: the caller decides whether sending it again is safe.

use bytes::Bytes;
use concord_group::{framing, AdminOp};
use concord_types::{ApiError, ClientId, ProposeResponse, ReadMode, ReadResponse, RequestId};

use super::NodeHandle;
use crate::GroupId;

impl NodeHandle {
    /// The leader's address when `error` says another node leads and this node may
    /// forward to it.
    fn forward_to(&self, error: &ApiError) -> Option<String> {
        match error {
            ApiError::NotLeader {
                leader: Some(leader),
                address: Some(address),
            } if self.inner.config.forward_proposals && *leader != self.node_id() => {
                Some(address.clone())
            }
            _ => None,
        }
    }

    pub(super) async fn propose_or_forward(
        &self,
        group: GroupId,
        command: Bytes,
        id: Option<RequestId>,
    ) -> Result<ProposeResponse, ApiError> {
        let data = match id {
            Some(id) => framing::encode_request(id, &command),
            None => framing::encode_command(&command),
        };
        match self.propose_here(group, data).await {
            Err(error) => match self.forward_to(&error) {
                Some(address) => {
                    let client = self.client(&address).await?;
                    match id {
                        Some(id) => client.propose_as(group, id, command).await,
                        None => client.propose(group, command).await,
                    }
                }
                None => Err(error),
            },
            ok => ok,
        }
    }

    pub(super) async fn register_or_forward(&self, group: GroupId) -> Result<ClientId, ApiError> {
        match self.register_here(group).await {
            Err(error) => match self.forward_to(&error) {
                Some(address) => self.client(&address).await?.register_client(group).await,
                None => Err(error),
            },
            ok => ok,
        }
    }

    pub(super) async fn read_or_forward(
        &self,
        group: GroupId,
        query: Bytes,
    ) -> Result<ReadResponse, ApiError> {
        match self.read_here(group, query.clone()).await {
            Err(error) => match self.forward_to(&error) {
                Some(address) => {
                    self.client(&address)
                        .await?
                        .read(group, query, ReadMode::Linearizable)
                        .await
                }
                None => Err(error),
            },
            ok => ok,
        }
    }

    /// A membership change here, or at the leader (forwarded) when allowed.
    pub(super) async fn admin(&self, group: GroupId, op: AdminOp) -> Result<(), ApiError> {
        match self.admin_here(group, op.clone()).await {
            Err(error) => match self.forward_to(&error) {
                Some(address) => {
                    let client = self.client(&address).await?;
                    match op {
                        AdminOp::AddLearner { node, address } => {
                            client.add_learner(group, node, address).await
                        }
                        AdminOp::Promote { node } => client.promote(group, node).await,
                        AdminOp::Remove { node } => client.remove(group, node).await,
                        AdminOp::TransferLeader { target } => {
                            client.transfer_leader(group, target).await
                        }
                        AdminOp::Campaign => Ok(()),
                    }
                }
                None => Err(error),
            },
            ok => ok,
        }
    }
}
