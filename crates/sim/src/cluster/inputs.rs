//! Inputs to a node's groups, as the runtime's callers give them: campaigns, leader
//! transfers, proposals (plain, exactly-once, registrations), membership changes,
//! linearizable reads, and snapshots.

use bytes::Bytes;
use concord_group::{framing, AdminOp, DriverOutput};
use concord_raft::{ConfChange, LogPosition, NodeId};
use concord_storage::GroupId;
use concord_types::{ApiError, RequestId};

use super::{Cluster, SimCallers, PRIMARY_GROUP};
use crate::checkers::CheckerKind;
use crate::rng::hash_bytes;
use crate::trace::TraceLevel;

impl Cluster {
    /// Makes node `id` campaign now in the primary group.
    pub fn campaign(&mut self, id: NodeId) {
        self.campaign_in(PRIMARY_GROUP, id);
    }

    /// Makes node `id` campaign now in `group`.
    pub fn campaign_in(&mut self, group: GroupId, id: NodeId) {
        self.trace_event(&[30, id, group], || {
            format!("node {id}: told to campaign in group {group}")
        });
        self.with_group(group, id, |driver, out| {
            driver.admin(AdminOp::Campaign, 0, out)
        });
    }

    /// Asks node `id` to hand leadership of the primary group to `target`.
    pub fn transfer_leader(&mut self, id: NodeId, target: NodeId) {
        self.transfer_leader_in(PRIMARY_GROUP, id, target);
    }

    /// Asks node `id` to hand leadership of `group` to `target`.
    pub fn transfer_leader_in(&mut self, group: GroupId, id: NodeId, target: NodeId) {
        self.trace_event(&[31, id, target, group], || {
            format!("node {id}: asked to transfer leadership of group {group} to {target}")
        });
        self.with_group(group, id, |driver, out| {
            driver.admin(AdminOp::TransferLeader { target }, 0, out)
        });
    }

    /// Proposes the command `data` on node `id` in the primary group (6.824 `Start`),
    /// with nobody waiting for its outcome; returns where it went. A crashed node
    /// answers `NotLeader`.
    pub fn propose_on(&mut self, id: NodeId, data: Bytes) -> Result<LogPosition, ApiError> {
        self.propose_on_in(PRIMARY_GROUP, id, data)
    }

    /// [`Cluster::propose_on`] in `group`.
    pub fn propose_on_in(
        &mut self,
        group: GroupId,
        id: NodeId,
        data: Bytes,
    ) -> Result<LogPosition, ApiError> {
        let words = [32, id, hash_bytes(&data), group];
        let framed = framing::encode_command(&data);
        let result = self
            .with_group(group, id, |driver, _| driver.propose_untracked(framed))
            .unwrap_or(Err(ApiError::NotLeader {
                leader: None,
                address: None,
            }));
        let code = match &result {
            Ok(position) => position.index,
            Err(_) => u64::MAX,
        };
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[words[0], words[1], words[2], words[3], code],
            || format!("node {id}: propose in group {group} -> {result:?}"),
        );
        result
    }

    /// Proposes `data` on the primary group's current [`Cluster::leader`] (connected),
    /// returning the leader and the position, or `None` if there is no leader or it
    /// refused.
    pub fn propose(&mut self, data: Bytes) -> Option<(NodeId, LogPosition)> {
        let leader = self.leader()?;
        self.propose_on(leader, data)
            .ok()
            .map(|position| (leader, position))
    }

    /// Proposes a membership change of the primary group on node `id`.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        change: &ConfChange,
    ) -> Result<LogPosition, ApiError> {
        self.propose_conf_change_in(PRIMARY_GROUP, id, change)
    }

    /// Proposes a membership change of `group` on node `id`.
    pub fn propose_conf_change_in(
        &mut self,
        group: GroupId,
        id: NodeId,
        change: &ConfChange,
    ) -> Result<LogPosition, ApiError> {
        let result = self
            .with_group(group, id, |driver, _| driver.propose_conf_change(change))
            .unwrap_or(Err(ApiError::NotLeader {
                leader: None,
                address: None,
            }));
        let code = result
            .as_ref()
            .map(|position| position.index)
            .unwrap_or(u64::MAX);
        self.trace_event(&[33, id, code, group], || {
            format!("node {id}: propose in group {group} {change:?} -> {result:?}")
        });
        result
    }

    /// Registers a client with `group`'s exactly-once table through node `id`; the
    /// caller `tag` hears the client id as the proposal's response (8 bytes).
    pub fn register_client(&mut self, group: GroupId, id: NodeId, tag: u64) {
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[36, id, tag, group],
            || format!("node {id}: register a client in group {group} (tag {tag})"),
        );
        self.request(group, id, tag, false, |driver| {
            driver.propose(framing::encode_register(), tag)
        });
    }

    /// Proposes `command` as request `request` of a registered client on node `id`;
    /// the caller `tag` hears the outcome.
    pub fn propose_request(
        &mut self,
        group: GroupId,
        id: NodeId,
        tag: u64,
        request: RequestId,
        command: Bytes,
    ) {
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[37, id, tag, group, request.client, request.sequence],
            || {
                format!(
                    "node {id}: request {}.{} in group {group} (tag {tag})",
                    request.client, request.sequence
                )
            },
        );
        let data = framing::encode_request(request, &command);
        self.request(group, id, tag, false, |driver| driver.propose(data, tag));
    }

    /// Asks node `id` for a linearizable read of `query` in `group`; the caller `tag`
    /// hears the answer.
    pub fn read(&mut self, group: GroupId, id: NodeId, tag: u64, query: Bytes) {
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[34, id, tag, group],
            || format!("node {id}: read in group {group} (tag {tag})"),
        );
        self.request(group, id, tag, true, |driver| driver.read(query, tag));
    }

    /// Hands a request to `group`'s driver on `id`, or answers it `Unavailable` at once
    /// when the node is down (as a client finds a dead node).
    fn request(
        &mut self,
        group: GroupId,
        id: NodeId,
        tag: u64,
        read: bool,
        queue: impl FnOnce(&mut concord_group::GroupDriver<concord_storage::GroupStore, SimCallers>),
    ) {
        let queued = self.with_group(group, id, |driver, _| queue(driver));
        if queued.is_none() && self.failure.is_none() {
            self.answer_unreachable(group, id, tag, read);
        }
    }

    /// Node `id` snapshots its primary group's state machine at its applied index and
    /// compacts the log up to `keep_entries` entries before it. Returns true if it
    /// took a snapshot (it does not while a write is in progress or with nothing new
    /// applied, nor when a disk fault stops it).
    pub fn snapshot(&mut self, id: NodeId, keep_entries: u64) -> bool {
        self.snapshot_in(PRIMARY_GROUP, id, keep_entries)
    }

    /// [`Cluster::snapshot`] of `group`.
    pub fn snapshot_in(&mut self, group: GroupId, id: NodeId, keep_entries: u64) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let Some(mut up) = self.take_up(id) else {
            return false;
        };
        let due = up.in_flight.is_none()
            && up.groups.get(&group).is_some_and(|running| {
                running.applier.can_snapshot() && running.applier.applied() > running.snapshot_index
            });
        if !due {
            self.put_up(id, up);
            return false;
        }
        let running = up.groups.get_mut(&group).expect("checked");
        let mut data = Vec::new();
        let mut out = concord_group::ApplyOutput::default();
        let taken = match running.applier.write_snapshot(&mut data, &mut out) {
            Ok(taken) => taken,
            Err(error) => {
                self.put_up(id, up);
                self.fail(
                    CheckerKind::DriverContract,
                    format!("node {id}: group {group}'s state machine failed to snapshot: {error}"),
                );
                return false;
            }
        };
        let bytes = data.len();
        let applied = taken.index;
        let disk = &up.disk;
        let driver = &mut up.groups.get_mut(&group).expect("checked").driver;
        let written = self.storage_write(
            id,
            disk,
            || format!("a snapshot of group {group} at applied index {applied}"),
            |_| {
                driver
                    .storage_mut()
                    .create_snapshot(group, applied, taken.conf_state, Bytes::from(data))
                    .map_err(crate::storage::StorageFailure::from)
            },
        );
        if let Some(running) = up.groups.get_mut(&group) {
            running.snapshot_index = applied;
        }
        if !self.after_storage_write(id, up, written) {
            return false;
        }
        let compact_to = applied.saturating_sub(keep_entries);
        self.with_group(group, id, |driver, _| driver.compact(compact_to));
        self.stats.snapshots_created += 1;
        self.trace_event(&[35, id, applied, compact_to, group], || {
            format!(
                "node {id}: snapshot of group {group} at {applied} ({bytes} bytes), compacting to {compact_to}"
            )
        });
        true
    }

    /// Runs `input` on `group`'s driver on node `id`, then the node's turn; `None` when
    /// the node or the group is not running.
    pub(super) fn with_group<R>(
        &mut self,
        group: GroupId,
        id: NodeId,
        input: impl FnOnce(
            &mut concord_group::GroupDriver<concord_storage::GroupStore, SimCallers>,
            &mut DriverOutput<SimCallers>,
        ) -> R,
    ) -> Option<R> {
        if self.failure.is_some() {
            return None;
        }
        let mut up = self.take_up(id)?;
        let Some(running) = up.groups.get_mut(&group) else {
            self.put_up(id, up);
            return None;
        };
        let mut out = DriverOutput::default();
        let result = input(&mut running.driver, &mut out);
        self.handle_output(id, &mut up, group, out);
        self.put_up(id, up);
        self.after_group_input(id, group);
        Some(result)
    }
}
