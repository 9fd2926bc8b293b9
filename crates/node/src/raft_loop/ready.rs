//! One turn's Readies: take each touched group's Ready through its driver, send what
//! may leave at once, write every durable part as one batch (group commit across
//! groups), then finish each group and act on what its driver says.

use std::sync::atomic::Ordering;
use std::time::Instant;

use concord_group::{ApplyItem, DriverOutput, DurableWrite};
use concord_raft::MessageKind;
use concord_storage::WriteBatch;

use super::RaftLoop;
use crate::apply::{deliver, ApplyWork, NodeCallers};
use crate::GroupId;

impl RaftLoop {
    /// Takes the Ready of every group touched, sends its messages, and persists the
    /// durable parts in one batch (or, in memory, at once).
    pub(super) fn run_ready(&mut self) {
        let mut batch = WriteBatch::new();
        // Groups whose Ready waits for the batch.
        let mut members = Vec::new();
        let mut failure = None;
        for id in std::mem::take(&mut self.dirty) {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group.dirty = false;
            let mut out = DriverOutput::default();
            let write = group.driver.take_ready(&mut out);
            if let Some(write) = write {
                match group.driver.storage_mut().memory_mut() {
                    Some(memory) => {
                        if let Err(error) = crate::storage::persist_in_memory(memory, &write) {
                            failure = Some(format!("group {id}: {error}"));
                        }
                        group.driver.finish_ready(&mut out);
                        if group.driver.has_work() {
                            group.touch(&mut self.dirty);
                        }
                    }
                    None => {
                        add_to_batch(&mut batch, id, write);
                        members.push(id);
                    }
                }
            }
            self.apply_output(id, out);
        }
        if let Some(reason) = failure {
            self.fail(reason);
            return;
        }
        if batch.is_empty() {
            return;
        }
        let Some(log) = self.log.clone() else {
            self.fail("a durable write without a durable log".into());
            return;
        };
        // Messages that need not wait for this write go first, so followers write in
        // parallel with us. Then the loop waits for the write: nothing more could be
        // handed out until it is durable anyway, and waiting here saves two thread
        // hand-offs per write on the commit path.
        self.flush_outbox();
        let submitted_at = Instant::now();
        if let Err(error) = log.write(batch) {
            self.fail(format!("making a write batch durable: {error}"));
            return;
        }
        self.metrics.fsync_latency.observe(submitted_at.elapsed());
        self.metrics
            .batches_persisted
            .fetch_add(1, Ordering::Relaxed);
        for id in members {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let mut out = DriverOutput::default();
            group.driver.finish_ready(&mut out);
            // Advancing may have made more ready (a lone voter's commit).
            if group.driver.has_work() {
                group.touch(&mut self.dirty);
            }
            self.apply_output(id, out);
        }
    }

    /// Acts on what group `id`'s driver produced: messages to the outbox, work to the
    /// apply task, answers to callers, addresses to the transport, metrics.
    pub(super) fn apply_output(&mut self, id: GroupId, out: DriverOutput<NodeCallers>) {
        let DriverOutput {
            messages,
            apply,
            answers,
            learned_addresses,
            members_removed,
            soft_state,
        } = out;
        answers.into_iter().for_each(deliver);
        for (node, address) in learned_addresses {
            self.learn_peer(node, &address);
        }
        if members_removed {
            self.prune_peers = true;
        }
        let node_id = self.node_id;
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        for message in &messages {
            if message.kind == MessageKind::Snapshot {
                if let Some(chunk) = message.snapshot.as_ref().filter(|chunk| chunk.offset == 0) {
                    tracing::info!(
                        node = node_id,
                        group = id,
                        term = message.term,
                        to = message.to,
                        index = chunk.metadata.index,
                        bytes = chunk.total_bytes,
                        "sending snapshot"
                    );
                }
            }
        }
        for message in messages {
            self.outbox
                .entry(message.to)
                .or_default()
                .push((id, message));
        }
        for item in apply {
            match &item {
                ApplyItem::Restore(snapshot) => tracing::info!(
                    node = node_id,
                    group = id,
                    term = group.driver.raw().term(),
                    index = snapshot.metadata.index,
                    bytes = snapshot.data.len(),
                    voters = ?snapshot.metadata.conf_state.voters,
                    learners = ?snapshot.metadata.conf_state.learners,
                    "snapshot installed"
                ),
                ApplyItem::Entries(entries) => {
                    for entry in entries {
                        if let concord_group::EntryPayload::Membership(conf_state) = &entry.payload
                        {
                            tracing::info!(
                                node = node_id,
                                group = id,
                                term = group.driver.raw().term(),
                                index = entry.index,
                                voters = ?conf_state.voters,
                                learners = ?conf_state.learners,
                                joint = conf_state.is_joint(),
                                "membership changed"
                            );
                        }
                    }
                }
                _ => {}
            }
            // A closed channel means the group is being unloaded; its callers are
            // answered by `fail_all`.
            let _ = group.apply.send(ApplyWork::Item(item));
        }
        if let Some((role, leader)) = soft_state {
            group.metrics.set_role(role);
            group.metrics.leader.store(leader, Ordering::Relaxed);
            tracing::info!(
                node = node_id,
                group = id,
                term = group.driver.raw().term(),
                ?role,
                leader,
                "role changed"
            );
        }
        let status = group.driver.raw();
        group.metrics.term.store(status.term(), Ordering::Relaxed);
        group
            .metrics
            .commit
            .store(status.raft().log.committed(), Ordering::Relaxed);
        let stats = group.driver.stats();
        group
            .metrics
            .proposals
            .store(stats.proposals, Ordering::Relaxed);
        group
            .metrics
            .dropped_proposals
            .store(stats.dropped_proposals, Ordering::Relaxed);
        group
            .metrics
            .snapshots_installed
            .store(stats.snapshots_installed, Ordering::Relaxed);
        group
            .metrics
            .leader_changes
            .store(stats.leader_changes, Ordering::Relaxed);
    }
}

/// Adds a group's durable write to the turn's batch.
fn add_to_batch(batch: &mut WriteBatch, id: GroupId, write: DurableWrite) {
    let DurableWrite {
        hard_state,
        entries,
        snapshot,
        compact,
    } = write;
    batch.persist_ready(id, hard_state, snapshot, entries);
    if compact.is_some() {
        batch.group(id).compact = compact;
    }
}
