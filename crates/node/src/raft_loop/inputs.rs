//! The raft loop's inputs: requests from the node's handle, messages from peers,
//! ticks, and what apply tasks and snapshot stores report back.

use std::sync::atomic::Ordering;

use concord_group::{framing, DriverOutput};
use concord_raft::{Index, NodeId, Role};
use concord_types::ApiError;

use super::{Group, RaftLoop, RaftView, Request, UNKNOWN_GROUP_WARNINGS_MAX};
use crate::apply::{ApplyEvent, NodeCallers};
use crate::transport::Inbound;
use crate::GroupId;

impl RaftLoop {
    pub(super) fn handle_request(&mut self, request: Request) {
        match request {
            Request::Propose { group, data, reply } => match self.groups.get_mut(&group) {
                Some(state) if state.stopped.is_some() => {
                    let _ = reply.reply.send(Err(stopped_error(state)));
                }
                Some(state) => {
                    let mut reply = reply;
                    reply.proposed_at = Some(self.turn_started);
                    state.driver.propose(data, reply);
                    state.touch(&mut self.dirty);
                }
                None => {
                    let _ = reply.reply.send(Err(ApiError::GroupNotFound { group }));
                }
            },
            Request::Read {
                group,
                query,
                reply,
            } => match self.groups.get_mut(&group) {
                Some(state) if state.stopped.is_some() => {
                    let _ = reply.send(Err(stopped_error(state)));
                }
                Some(state) => {
                    state.driver.read(query, reply);
                    state.touch(&mut self.dirty);
                }
                None => {
                    let _ = reply.send(Err(ApiError::GroupNotFound { group }));
                }
            },
            Request::Admin { group, op, reply } => match self.groups.get_mut(&group) {
                Some(state) => {
                    let mut out = DriverOutput::default();
                    state.driver.admin(op, reply, &mut out);
                    state.touch(&mut self.dirty);
                    self.handle_output(group, out);
                }
                None => {
                    let _ = reply.send(Err(ApiError::GroupNotFound { group }));
                }
            },
            Request::View { group, reply } => {
                let view = self
                    .groups
                    .get(&group)
                    .map(|state| RaftView {
                        status: state.driver.status(),
                        addresses: state.driver.addresses().clone(),
                    })
                    .ok_or(ApiError::GroupNotFound { group });
                let _ = reply.send(view);
            }
            Request::Load { loaded, reply } => {
                let _ = reply.send(self.load(*loaded));
            }
            Request::Unload { group, reply } => {
                let _ = reply.send(self.unload(group).map(Some));
            }
            Request::Shutdown => self.shutting_down = true,
        }
    }

    pub(super) fn step(&mut self, inbound: Inbound) {
        let Some(group) = self.groups.get_mut(&inbound.group) else {
            self.metrics
                .unknown_group_messages
                .fetch_add(1, Ordering::Relaxed);
            if self.warned_unknown_groups.len() < UNKNOWN_GROUP_WARNINGS_MAX
                && self.warned_unknown_groups.insert(inbound.group)
            {
                tracing::warn!(
                    node = self.node_id,
                    group = inbound.group,
                    from = inbound.from,
                    kind = ?inbound.message.kind,
                    "dropping message for a group this node does not host"
                );
            }
            return;
        };
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        if inbound.message.from != inbound.from {
            self.metrics
                .refused_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                node = self.node_id,
                group = inbound.group,
                from = inbound.from,
                claimed = inbound.message.from,
                "dropping message whose sender does not match its stream"
            );
            return;
        }
        if let Err(error) = group.driver.step(inbound.message) {
            self.metrics
                .refused_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = self.node_id, group = inbound.group, term = group.driver.raw().term(), %error, "raft refused a message");
        }
        group.touch(&mut self.dirty);
    }

    pub(super) fn tick(&mut self) {
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let mut out = DriverOutput::default();
            group.driver.tick(&mut out);
            group.touch(&mut self.dirty);
            if !out.answers.is_empty() {
                self.handle_output(id, out);
            }
        }
    }

    pub(super) fn handle_apply_event(&mut self, event: ApplyEvent) {
        match event {
            ApplyEvent::SnapshotTaken {
                group,
                snapshot,
                durable_index,
            } => self.store_snapshot(group, snapshot, durable_index),
            ApplyEvent::Propose { group, commands } => {
                let Some(state) = self.groups.get_mut(&group) else {
                    return;
                };
                for command in commands {
                    // Asked on a leadership notice; if leadership is gone already the
                    // next leader's state machine asks again.
                    if let Err(error) = state
                        .driver
                        .propose_untracked(framing::encode_command(&command))
                    {
                        tracing::debug!(node = self.node_id, group, %error, "state machine's proposal refused");
                    }
                }
                state.touch(&mut self.dirty);
            }
            ApplyEvent::Stopped { group, reason } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.stopped = Some(reason);
                    // Its state machine cannot answer: a working voter must lead.
                    state.driver.stand_down();
                    state.touch(&mut self.dirty);
                }
            }
        }
    }

    /// Stores a snapshot the apply task took: in memory at once, in the durable log on
    /// a blocking task (a file write and fsyncs), reported back as `SnapshotStored`.
    fn store_snapshot(
        &mut self,
        id: GroupId,
        snapshot: crate::apply::TakenSnapshot,
        durable_index: Option<Index>,
    ) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        let term = group.driver.raw().term();
        if group.driver.storage_mut().memory_mut().is_some() {
            let result = group
                .driver
                .storage_mut()
                .create_snapshot(id, snapshot.index, snapshot.conf_state, snapshot.data)
                .map_err(|error| error.to_string());
            self.snapshot_stored(id, snapshot.index, durable_index, result);
            return;
        }
        let mut store = group.driver.raw().storage().clone();
        let stored = self.stored_sender.clone();
        self.storing_snapshots += 1;
        let index = snapshot.index;
        self.runtime.spawn_blocking(move || {
            let result = store
                .create_snapshot(id, index, snapshot.conf_state, snapshot.data)
                .map_err(|error| error.to_string());
            // The log goes before the report: once the last report is in, a stopping
            // node holds the data directory no longer.
            drop(store);
            let _ = stored.send((id, index, durable_index, result));
        });
        tracing::debug!(
            node = self.node_id,
            group = id,
            term,
            index,
            "storing snapshot"
        );
    }

    /// A snapshot is stored: compact the log behind it, keeping
    /// `snapshot_trailing_entries`, never past a durable state machine's own index.
    pub(super) fn snapshot_stored(
        &mut self,
        id: GroupId,
        index: Index,
        durable_index: Option<Index>,
        result: Result<(), String>,
    ) {
        if self.log.is_some() {
            self.storing_snapshots = self.storing_snapshots.saturating_sub(1);
        }
        let trailing = self.config.snapshot_trailing_entries;
        let node_id = self.node_id;
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        if let Err(reason) = result {
            // A newer snapshot (installed from the leader) may have overtaken this one.
            tracing::warn!(node = node_id, group = id, term = group.driver.raw().term(), index, %reason, "snapshot not stored");
            return;
        }
        let mut compact_to = index.saturating_sub(trailing);
        if let Some(durable) = durable_index {
            compact_to = compact_to.min(durable);
        }
        group.driver.compact(compact_to);
        group.touch(&mut self.dirty);
    }

    /// A member says its server listens at `address` (a stream from it started): a
    /// node restarted at a new address. The link follows at once; each group this
    /// node leads records the address in its log, so every member (and every later
    /// snapshot) learns it.
    pub(super) fn peer_address(&mut self, node: NodeId, address: String) {
        if node == self.node_id
            || address.is_empty()
            || address.len() > framing::ADDRESS_BYTES_MAX
            || framing::is_unspecified_address(&address)
        {
            return;
        }
        let member = |group: &Group| group.driver.conf_state().all_nodes().contains(&node);
        if !self.groups.values().any(member) {
            return;
        }
        if self.peers.get(&node) != Some(&address) {
            tracing::info!(
                node = self.node_id,
                peer = node,
                old = self.peers.get(&node).map_or("", String::as_str),
                new = %address,
                "peer listens at a new address"
            );
            self.learn_peer(node, &address);
        }
        let mut proposed = Vec::new();
        for group in self.groups.values_mut() {
            if group.driver.raw().role() == Role::Leader
                && member(group)
                && group.driver.addresses().get(&node) != Some(&address)
                && group
                    .driver
                    .propose_untracked(framing::encode_address(node, &address))
                    .is_ok()
            {
                proposed.push(group.id);
            }
        }
        for id in proposed {
            self.mark_dirty(id);
        }
    }

    /// Answers and acts on what a driver produced outside a Ready (admin refusals,
    /// timeouts).
    pub(super) fn handle_output(&mut self, id: GroupId, out: DriverOutput<NodeCallers>) {
        self.apply_output(id, out);
    }
}

fn stopped_error(group: &Group) -> ApiError {
    ApiError::GroupStopped {
        group: group.id,
        reason: group.stopped.clone().unwrap_or_default(),
    }
}
