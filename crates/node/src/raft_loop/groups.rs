//! Groups coming and going: loading a group into the loop (its driver and its apply
//! task), unloading one (everything committed handed out first), answering every
//! caller when a group goes, and keeping the transport's peer list to the members of
//! hosted groups.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use concord_group::{
    Applier, ApplierStart, DriverConfig, DriverOutput, GroupDriver, SnapshotPolicy,
};
use concord_raft::{HardState, NodeId, RawNode};
use concord_storage::WriteBatch;
use concord_types::sync::lock;
use concord_types::{ApiError, GroupHealth};
use tokio::sync::{broadcast, mpsc};

use super::{DetachedGroup, Group, GroupEntry, LoadedGroup, RaftLoop, DRAIN_ROUNDS_MAX};
use crate::apply::{self, ApplyStart, NodeCallers};
use crate::GroupId;

impl RaftLoop {
    pub(super) fn load(&mut self, loaded: LoadedGroup) -> Result<(), ApiError> {
        let LoadedGroup {
            group: id,
            spec,
            store,
            state_machine,
            applied,
            applied_term,
            conf_state,
            addresses,
        } = loaded;
        if self.groups.contains_key(&id) {
            return Err(ApiError::InvalidRequest(format!(
                "group {id} already runs on this node"
            )));
        }
        let seed = self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let raw = RawNode::new(&self.config.raft_config(applied, seed), store)
            .map_err(|error| ApiError::Internal(format!("starting group {id}: {error}")))?;
        let metrics = self.metrics.group(id);
        metrics.term.store(raw.term(), Ordering::Relaxed);
        metrics.commit.store(raw.status().commit, Ordering::Relaxed);
        metrics.stopped.store(0, Ordering::Relaxed);
        metrics.set_role(raw.role());
        let driver = GroupDriver::new(
            self.driver_config(id),
            raw,
            applied,
            conf_state.clone(),
            addresses.clone(),
        );
        let applier = Applier::new(ApplierStart {
            group: id,
            spec,
            state_machine,
            applied,
            applied_term,
            conf_state: conf_state.clone(),
            addresses: addresses.clone(),
            policy: SnapshotPolicy {
                interval_entries: self.config.snapshot_interval_entries,
                interval_bytes: self.config.snapshot_interval_bytes,
            },
            factory: self.factory.clone(),
        });
        let subscribers = lock(&self.subscribers)
            .entry(id)
            .or_insert_with(|| broadcast::channel(self.config.group_events_max as usize).0)
            .clone();
        let health = Arc::new(Mutex::new(GroupHealth::Running));
        // Unbounded: it holds what the group committed and its state machine has not
        // yet applied (each Ready hands out at most `apply_batch_bytes_max` of it),
        // plus reads waiting on it. The loop does not slow the group down for a slow
        // state machine (replication must not stall on it), so a state machine slower
        // than the group's write rate for long lets this grow; see docs/design.md.
        let (apply_sender, apply_receiver) = mpsc::unbounded_channel();
        let start = ApplyStart {
            group: id,
            node_id: self.node_id,
            applier,
            group_metrics: metrics.clone(),
            node_metrics: self.metrics.clone(),
            events: self.apply_events_sender.clone(),
            subscribers,
            health: health.clone(),
        };
        let apply_task = self.runtime.spawn(apply::run(start, apply_receiver));
        lock(&self.registry).insert(
            id,
            GroupEntry {
                apply: apply_sender.clone(),
                metrics: metrics.clone(),
                health,
            },
        );
        tracing::info!(
            node = self.node_id,
            group = id,
            term = driver.raw().term(),
            applied,
            voters = ?conf_state.voters,
            learners = ?conf_state.learners,
            "group started"
        );
        for (&node, address) in &addresses {
            self.learn_peer(node, address);
        }
        let mut group = Group {
            id,
            driver,
            apply: apply_sender,
            apply_task: Some(apply_task),
            metrics,
            dirty: false,
            stopped: None,
        };
        group.touch(&mut self.dirty);
        self.groups.insert(id, group);
        Ok(())
    }

    /// The driver's timings, from the node's (milliseconds to ticks).
    fn driver_config(&self, group: GroupId) -> DriverConfig {
        let tick = self.config.tick_interval_ms.max(1);
        let election = u64::from(self.config.election_timeout_ticks);
        DriverConfig {
            read_timeout_ticks: self.config.read_timeout_ms.div_ceil(tick),
            read_retry_ticks: 2 * election,
            proposal_timeout_ticks: self.config.proposal_timeout_ms.div_ceil(tick),
            ..DriverConfig::new(group, self.config.election_timeout_ticks)
        }
    }

    /// Takes a group out of the loop: everything committed is handed to its apply task
    /// first, every caller still waiting is answered, and the group's storage and
    /// apply task are returned.
    pub(super) fn unload(&mut self, id: GroupId) -> Result<DetachedGroup, ApiError> {
        let mut group = self
            .groups
            .remove(&id)
            .ok_or(ApiError::GroupNotFound { group: id })?;
        lock(&self.registry).remove(&id);
        self.metrics.remove_group(id);
        self.prune_peers = true;
        let drained = self.drain_group(&mut group);
        self.fail_group(&mut group, "group unloaded");
        drained?;
        tracing::warn!(
            node = self.node_id,
            group = id,
            term = group.driver.raw().term(),
            "group unloaded"
        );
        let status = group.driver.status();
        let hard_state = HardState {
            term: status.term,
            vote: status.vote,
            commit: status.commit,
        };
        Ok(DetachedGroup {
            apply: group.apply.clone(),
            apply_task: group.apply_task.take(),
            store: group.driver.into_raw().into_storage(),
            hard_state,
        })
    }

    /// Persists and hands out every Ready of `group` synchronously until none is left
    /// (for unloading: whatever is committed reaches the apply task).
    fn drain_group(&mut self, group: &mut Group) -> Result<(), ApiError> {
        for _ in 0..DRAIN_ROUNDS_MAX {
            if !group.driver.raw().has_ready() {
                return Ok(());
            }
            let mut out = DriverOutput::default();
            if let Some(write) = group.driver.take_ready(&mut out) {
                let persisted = match group.driver.storage_mut().memory_mut() {
                    Some(memory) => {
                        crate::storage::persist_in_memory(memory, &write).map_err(|e| e.to_string())
                    }
                    None => {
                        let mut batch = WriteBatch::new();
                        batch.persist_ready(
                            group.id,
                            write.hard_state,
                            write.snapshot,
                            write.entries,
                        );
                        if write.compact.is_some() {
                            batch.group(group.id).compact = write.compact;
                        }
                        match &self.log {
                            Some(log) => log.write(batch).map_err(|error| error.to_string()),
                            None => Ok(()),
                        }
                    }
                };
                persisted.map_err(|reason| ApiError::Internal(format!("persisting: {reason}")))?;
                group.driver.finish_ready(&mut out);
            }
            self.forward_drained(group, out);
        }
        Err(ApiError::Internal("group did not settle".into()))
    }

    /// What draining a group (out of the loop's map) produced: messages to the outbox,
    /// work to its apply task, answers to callers.
    fn forward_drained(&mut self, group: &Group, out: DriverOutput<NodeCallers>) {
        for message in out.messages {
            self.outbox
                .entry(message.to)
                .or_default()
                .push((group.id, message));
        }
        for item in out.apply {
            let _ = group.apply.send(apply::ApplyWork::Item(item));
        }
        out.answers.into_iter().for_each(apply::deliver);
    }

    /// Answers every caller still waiting on `group`.
    pub(super) fn fail_group(&mut self, group: &mut Group, reason: &str) {
        let mut out = DriverOutput::default();
        group.driver.fail_all(reason, &mut out);
        out.answers.into_iter().for_each(apply::deliver);
    }

    /// Hands `address` for `node` to the transport, unless it knows it already.
    pub(super) fn learn_peer(&mut self, node: NodeId, address: &str) {
        if node == self.node_id || address.is_empty() {
            return;
        }
        if self.peers.get(&node).map(String::as_str) != Some(address) {
            self.peers.insert(node, address.to_string());
            self.transport.set_peer(node, address.to_string());
        }
    }

    /// Stops talking to nodes that are members of no group hosted here (removed, or
    /// replaced): their streams would otherwise reconnect forever.
    pub(super) fn prune_peers(&mut self) {
        let members: HashSet<NodeId> = self
            .groups
            .values()
            .flat_map(|group| group.driver.conf_state().all_nodes())
            .collect();
        let node_id = self.node_id;
        let transport = &self.transport;
        self.peers.retain(|&node, address| {
            if members.contains(&node) {
                return true;
            }
            tracing::info!(node = node_id, peer = node, %address, "member of no hosted group: dropping its peer link");
            transport.remove_peer(node);
            false
        });
    }
}
