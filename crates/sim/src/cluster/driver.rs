//! A node's turn, as the runtime's raft loop runs it: every group with work takes its
//! Ready through its `GroupDriver`, what may leave at once is sent, the durable parts
//! of all groups are written as one batch (at once or after a simulated disk delay),
//! then each group finishes its Ready and its `Applier` applies what was handed out
//! and answers the callers. The checkers watch every step: each input, each write,
//! each entry applied and each snapshot installed.

use bytes::BytesMut;
use concord_group::{
    Answer as GroupAnswer, ApplyItem, ApplyOutput, DriverOutput, DurableWrite, EntryPayload,
    StateMachine,
};
use concord_raft::{
    ConfState, Entry, EntryKind, Index, Message, MessageKind, NodeId, Role, NO_NODE,
};
use concord_storage::{GroupId, GroupStore, WriteBatch};
use concord_types::ApiError;

use super::{
    Answer, AppliedAt, BeforeWrite, Cluster, ClusterEvent, NodeState, SimCallers, SimFault,
    TurnWrites, UpNode, MESSAGES_IN_FLIGHT_MAX,
};
use crate::checkers::{CheckerKind, Violation};
use crate::network::SendOutcome;
use crate::rng::hash_words;
use crate::storage::{DiskFault, NodeDisk, StorageFailure, StorageMode};
use crate::trace::TraceLevel;

/// What a write to storage came to: `Ok(true)` durable; `Ok(false)` a disk fault
/// injected into it stopped the node's storage, so the node must crash; `Err` the run
/// failed (storage refused the write, or did not behave as the fault said it would).
pub(super) type StorageWrite = Result<bool, (CheckerKind, String)>;

impl Cluster {
    pub(super) fn take_up(&mut self, id: NodeId) -> Option<Box<UpNode>> {
        let node = self.nodes.get_mut(&id)?;
        if !matches!(node.state, NodeState::Up(_)) {
            return None;
        }
        match std::mem::replace(&mut node.state, NodeState::Taken) {
            NodeState::Up(up) => Some(up),
            _ => unreachable!(),
        }
    }

    pub(super) fn put_up(&mut self, id: NodeId, up: Box<UpNode>) {
        self.nodes.get_mut(&id).expect("known node").state = NodeState::Up(up);
    }

    // -------------------------------------------------------------------------------
    // Messages and ticks.

    pub(super) fn deliver(&mut self, group: GroupId, message: Message) {
        let (from, to) = (message.from, message.to);
        let up = self.is_up(to);
        let cut = self.network.is_cut(from, to);
        self.network.record_delivery(up && !cut);
        let words = message_words(40, group, &message, u64::from(up && !cut));
        self.trace
            .record(self.now, TraceLevel::Messages, &words, || {
                let fate = if !up {
                    "dropped (node down)"
                } else if cut {
                    "dropped (link cut)"
                } else {
                    "delivered"
                };
                format!("net: {fate}: {}", describe_message(group, &message))
            });
        if cut && message.kind == MessageKind::Append && self.is_up(from) {
            // A transport notices the link is down and tells the sender, which stops
            // pipelining to that follower until it answers again.
            self.with_group(group, from, |driver, _| driver.report_unreachable(to));
        }
        if !up || cut {
            return;
        }
        if let Some(Err(error)) = self.with_group(group, to, |driver, _| driver.step(message)) {
            self.fail(
                CheckerKind::DriverContract,
                format!("node {to}: group {group} stopped: step failed: {error}"),
            );
        }
    }

    fn send(&mut self, group: GroupId, message: Message) {
        let words = message_words(41, group, &message, 0);
        if !self.nodes.contains_key(&message.to) {
            self.trace
                .record(self.now, TraceLevel::Messages, &words, || {
                    format!(
                        "net: not sent (no such node): {}",
                        describe_message(group, &message)
                    )
                });
            return;
        }
        let description = self
            .trace
            .shows(TraceLevel::Messages)
            .then(|| describe_message(group, &message));
        if self.network.in_flight_count() >= MESSAGES_IN_FLIGHT_MAX {
            return self.fail(
                CheckerKind::Runaway,
                format!(
                    "{MESSAGES_IN_FLIGHT_MAX} messages in flight: a message storm (last sent: {})",
                    describe_message(group, &message)
                ),
            );
        }
        let outcome = self.network.send(self.now, group, message);
        let code = match outcome {
            SendOutcome::Lost => 0,
            SendOutcome::Queued(at, None) => at,
            SendOutcome::Queued(at, Some(again)) => at ^ (again << 20),
        };
        let mut words = words;
        words[12] = code;
        self.trace
            .record(self.now, TraceLevel::Messages, &words, || {
                let description = description.unwrap_or_default();
                match outcome {
                    SendOutcome::Lost => format!("net: lost: {description}"),
                    SendOutcome::Queued(at, None) => {
                        format!("net: sent (due t={at}): {description}")
                    }
                    SendOutcome::Queued(at, Some(again)) => {
                        format!("net: sent twice (due t={at} and t={again}): {description}")
                    }
                }
            });
    }

    /// One tick of node `id`'s clock: every group ticks.
    pub(super) fn tick_node(&mut self, id: NodeId) {
        if self.failure.is_some() {
            return;
        }
        let Some(mut up) = self.take_up(id) else {
            return;
        };
        let groups: Vec<GroupId> = up.groups.keys().copied().collect();
        for group in groups {
            let mut out = DriverOutput::default();
            up.groups
                .get_mut(&group)
                .expect("listed")
                .driver
                .tick(&mut out);
            self.handle_output(id, &mut up, group, out);
        }
        self.put_up(id, up);
        self.after_input(id);
    }

    /// After any input to `id`: check it, then run its turn.
    pub(super) fn after_input(&mut self, id: NodeId) {
        self.observe(id, None);
        self.drive(id);
    }

    /// After an input to `group` on `id`: check that group, then run the node's turn.
    pub(super) fn after_group_input(&mut self, id: NodeId, group: GroupId) {
        self.observe(id, Some(group));
        self.drive(id);
    }

    /// Checks node `id`'s groups (or only `only`) after something changed them.
    fn observe(&mut self, id: NodeId, only: Option<GroupId>) {
        if self.failure.is_some() {
            return;
        }
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let NodeState::Up(up) = &mut node.state else {
            return;
        };
        for (&group, running) in up.groups.iter_mut() {
            if only.is_some_and(|only| only != group) {
                continue;
            }
            let raft = running.driver.raw().raft();
            if self.options.check_core_invariants {
                raft.check_invariants();
            }
            let seen = (raft.role, raft.term, raft.leader);
            if seen != running.last_seen {
                let (role, term, leader) = seen;
                let (old_role, old_term, _) = running.last_seen;
                running.last_seen = seen;
                let words = [50, id, role_code(role), term, leader, group];
                self.trace.record(now, TraceLevel::Events, &words, || {
                    if role == old_role && term == old_term {
                        format!("node {id}: group {group}: {role:?} in term {term}, leader now {leader}")
                    } else {
                        format!("node {id}: group {group}: {old_role:?} (term {old_term}) -> {role:?} (term {term}), leader {leader}")
                    }
                });
            }
            let checkers = &mut self.groups.get_mut(&group).expect("known group").checkers;
            if let Err(violation) = checkers.after_step(raft, now) {
                self.failure.get_or_insert(violation);
                return;
            }
        }
    }

    // -------------------------------------------------------------------------------
    // The turn.

    /// Node `id`'s turn: while no write is in progress and a group has work, take
    /// every such group's Ready, write their durable parts as one batch, finish them.
    fn drive(&mut self, id: NodeId) {
        let mut round = 0;
        loop {
            if self.failure.is_some() {
                return;
            }
            // What the last round changed (advancing can commit) is checked before the
            // next round hands it out; the input before the first was checked already.
            if round > 0 {
                self.observe(id, None);
            }
            round += 1;
            let Some(mut up) = self.take_up(id) else {
                return;
            };
            if up.in_flight.is_some() || !up.groups.values().any(|g| g.driver.has_work()) {
                self.put_up(id, up);
                return;
            }
            let mut writes: TurnWrites = Vec::new();
            let groups: Vec<GroupId> = up.groups.keys().copied().collect();
            for group in groups {
                let running = up.groups.get_mut(&group).expect("listed");
                if !running.driver.has_work() {
                    continue;
                }
                let mut out = DriverOutput::default();
                let write = running.driver.take_ready(&mut out);
                self.stats.readies += 1;
                self.trace_ready(id, group, write.as_ref());
                // Sent before the write; a Ready with nothing durable was finished.
                self.handle_output(id, &mut up, group, out);
                if self.failure.is_some() {
                    self.put_up(id, up);
                    return;
                }
                if let Some(write) = write {
                    writes.push((group, write));
                }
            }
            if writes.is_empty() {
                self.put_up(id, up);
                continue;
            }
            let delay = if self.options.persist_delay_max_instants == 0 {
                0
            } else {
                self.disk_rng
                    .between(0, self.options.persist_delay_max_instants)
            };
            if delay == 0 {
                self.complete_writes(id, up, writes);
                continue;
            }
            up.in_flight = Some(writes);
            let incarnation = self.incarnation(id);
            self.persists
                .insert((self.now + delay, self.persist_sequence), (id, incarnation));
            self.persist_sequence += 1;
            self.put_up(id, up);
            return;
        }
    }

    pub(super) fn finish_write(&mut self, id: NodeId, incarnation: u64) {
        if self.incarnation(id) != incarnation {
            // The node crashed while writing: the write is lost.
            return;
        }
        let Some(mut up) = self.take_up(id) else {
            return;
        };
        let Some(writes) = up.in_flight.take() else {
            self.put_up(id, up);
            return;
        };
        self.complete_writes(id, up, writes);
        self.drive(id);
    }

    /// Makes a turn's writes durable as one batch, then finishes each group's Ready.
    /// Puts `up` back (or crashes the node when a disk fault stopped the write).
    fn complete_writes(&mut self, id: NodeId, mut up: Box<UpNode>, mut writes: TurnWrites) {
        let now = self.now;
        self.stats.writes += 1;
        if writes.len() > 1 {
            self.stats.group_commits += 1;
        }
        if self.options.sim_fault == Some(SimFault::CrashLosesLastWrite) {
            let before = match &up.disk {
                NodeDisk::Mem { .. } => Some(BeforeWrite::Mem(
                    up.groups
                        .iter()
                        .map(|(&group, running)| (group, running.driver.raw().storage().clone()))
                        .collect(),
                )),
                disk => match disk.fork() {
                    Ok(fork) => fork.map(BeforeWrite::Disk),
                    Err(error) => {
                        self.put_up(id, up);
                        return self.fail(
                            CheckerKind::Storage,
                            format!("node {id}: copying its disk: {error}"),
                        );
                    }
                },
            };
            up.before_last_write = before;
        }
        if self.options.sim_fault == Some(SimFault::CorruptPersistedEntry)
            && id == 1
            && self.disk_rng.chance(200_000)
        {
            corrupt_a_command(&mut writes);
        }
        let written = match up.disk.mode() {
            StorageMode::Mem => {
                let mut result = Ok(true);
                for (group, write) in &writes {
                    let running = up.groups.get_mut(group).expect("wrote for a running group");
                    let memory = running
                        .driver
                        .storage_mut()
                        .memory_mut()
                        .expect("memory mode keeps groups in memory");
                    if let Err(error) = GroupStore::persist_in_memory(
                        memory,
                        write.hard_state,
                        write.snapshot.clone(),
                        &write.entries,
                        write.compact,
                    ) {
                        result = Err((
                            CheckerKind::DriverContract,
                            format!(
                                "node {id}: group {group}: writing {}: {error}",
                                describe_write(write)
                            ),
                        ));
                        break;
                    }
                }
                result
            }
            StorageMode::Disk => {
                let disk = &up.disk;
                self.storage_write(
                    id,
                    disk,
                    || describe_writes(&writes),
                    |disk| write_batch(disk, &writes),
                )
            }
        };
        if !matches!(written, Ok(true)) {
            self.after_storage_write(id, up, written);
            return;
        }
        // Every group written: its durable log against every other ever seen.
        for (group, write) in &writes {
            let snapshot_index = write.snapshot.as_ref().map(|s| s.metadata.index);
            let entries_from = write.entries.first().map(|entry| entry.index);
            let dirty_from = match (snapshot_index, entries_from) {
                (Some(snapshot), Some(first)) => Some((snapshot + 1).min(first)),
                (Some(snapshot), None) => Some(snapshot + 1),
                (None, first) => first,
            };
            if let Some(from) = dirty_from {
                let storage = up.groups[group].driver.raw().storage();
                let checkers = &mut self.groups.get_mut(group).expect("known group").checkers;
                if let Err(violation) = checkers.on_persist(id, storage, from, now) {
                    self.put_up(id, up);
                    return self.set_failure(violation);
                }
            }
        }
        let voted = writes.iter().any(|(_, write)| {
            write
                .hard_state
                .is_some_and(|hard_state| hard_state.vote != NO_NODE)
        });
        let mut leader_committed = false;
        for (group, _) in &writes {
            let running = up.groups.get_mut(group).expect("wrote for a running group");
            let commit_before = running.driver.raw().raft().log.committed();
            let mut out = DriverOutput::default();
            running.driver.finish_ready(&mut out);
            let raft = running.driver.raw().raft();
            leader_committed |= raft.role == Role::Leader && raft.log.committed() > commit_before;
            self.handle_output(id, &mut up, *group, out);
            if self.failure.is_some() {
                self.put_up(id, up);
                return;
            }
        }
        self.put_up(id, up);
        self.observe(id, None);
        let crash_point = voted || leader_committed;
        if crash_point
            && self.failure.is_none()
            && self.crash_point_rng.chance(self.options.crash_point_ppm)
        {
            let what = if voted {
                "persisting a vote"
            } else {
                "committing as leader"
            };
            self.trace_event(&[22, id, u64::from(voted)], || {
                format!("node {id}: crash point after {what}")
            });
            self.crash(id);
        }
    }

    // -------------------------------------------------------------------------------
    // What the driver and the applier produce.

    /// Acts on what `group`'s driver on `id` produced: messages to the network, work
    /// to the group's applier (entry by entry, each checked), answers to the callers.
    pub(super) fn handle_output(
        &mut self,
        id: NodeId,
        up: &mut UpNode,
        group: GroupId,
        out: DriverOutput<SimCallers>,
    ) {
        let DriverOutput {
            messages,
            apply,
            answers,
            ..
        } = out;
        for message in messages {
            self.send(group, message);
        }
        for answer in answers {
            self.emit_answer(group, id, answer);
        }
        for item in apply {
            if self.failure.is_some() {
                return;
            }
            self.apply_item(id, up, group, item);
        }
    }

    fn apply_item(
        &mut self,
        id: NodeId,
        up: &mut UpNode,
        group: GroupId,
        item: ApplyItem<SimCallers>,
    ) {
        let now = self.now;
        match item {
            ApplyItem::Entries(entries) => {
                for entry in entries {
                    let record = Entry {
                        term: entry.term,
                        index: entry.index,
                        kind: match entry.payload {
                            EntryPayload::Membership(_) => EntryKind::ConfChange,
                            _ => EntryKind::Normal,
                        },
                        data: entry.data.clone(),
                    };
                    let conf_state = match &entry.payload {
                        EntryPayload::Membership(conf_state) => Some(conf_state.clone()),
                        _ => None,
                    };
                    let command = match &entry.payload {
                        EntryPayload::Command(command) => Some(command.clone()),
                        EntryPayload::Request { command, .. } => Some(command.clone()),
                        _ => None,
                    };
                    let running = up.groups.get_mut(&group).expect("running group");
                    let mut out = ApplyOutput::default();
                    running
                        .applier
                        .handle(ApplyItem::Entries(vec![entry]), &mut out);
                    if let Some(reason) = running.applier.stopped() {
                        return self.fail(
                            CheckerKind::DriverContract,
                            format!("node {id}: group {group} stopped applying: {reason}"),
                        );
                    }
                    running.digest = digest_of(running.applier.state_machine());
                    let digest = running.digest;
                    self.stats.entries_applied += 1;
                    if let Some(conf_state) = conf_state {
                        self.record_membership(id, group, record.index, &conf_state);
                    }
                    let record_group = self.groups.get_mut(&group).expect("known group");
                    if let Err(violation) = record_group.checkers.on_apply(id, &record, digest, now)
                    {
                        return self.set_failure(violation);
                    }
                    let at =
                        record_group
                            .applied
                            .entry(record.index)
                            .or_insert_with(|| AppliedAt {
                                term: record.term,
                                data: command.unwrap_or_else(|| record.data.clone()),
                                nodes: Default::default(),
                            });
                    at.nodes.insert(id);
                    self.deliver_apply_output(group, id, out);
                }
            }
            ApplyItem::Restore(snapshot) => {
                let (index, term) = (snapshot.metadata.index, snapshot.metadata.term);
                let running = up.groups.get_mut(&group).expect("running group");
                let mut out = ApplyOutput::default();
                running
                    .applier
                    .handle(ApplyItem::Restore(snapshot), &mut out);
                if let Some(reason) = running.applier.stopped() {
                    return self.fail(
                        CheckerKind::DriverContract,
                        format!("node {id}: group {group}: installing a snapshot: {reason}"),
                    );
                }
                running.digest = digest_of(running.applier.state_machine());
                running.snapshot_index = index;
                let digest = running.digest;
                self.stats.snapshots_installed += 1;
                let checkers = &mut self.groups.get_mut(&group).expect("known group").checkers;
                if let Err(violation) = checkers.on_restore(id, index, term, digest, now) {
                    return self.set_failure(violation);
                }
                self.trace_event(&[61, id, index, term, group], || {
                    format!("node {id}: group {group}: installed snapshot at {index} (term {term})")
                });
                self.deliver_apply_output(group, id, out);
            }
            item => {
                let running = up.groups.get_mut(&group).expect("running group");
                let mut out = ApplyOutput::default();
                running.applier.handle(item, &mut out);
                for command in std::mem::take(&mut out.proposals) {
                    let _ = running
                        .driver
                        .propose_untracked(concord_group::framing::encode_command(&command));
                }
                self.deliver_apply_output(group, id, out);
            }
        }
    }

    fn deliver_apply_output(&mut self, group: GroupId, id: NodeId, out: ApplyOutput<SimCallers>) {
        for answer in out.answers {
            self.emit_answer(group, id, answer);
        }
    }

    fn record_membership(
        &mut self,
        id: NodeId,
        group: GroupId,
        index: Index,
        conf_state: &ConfState,
    ) {
        let record = self.groups.get_mut(&group).expect("known group");
        if index > record.latest_conf.0 {
            record.latest_conf = (index, conf_state.clone());
            self.stats.conf_changes_applied += 1;
        }
        let outcome = conf_state_hash(conf_state);
        self.trace_event(&[62, id, index, outcome, group], || {
            format!("node {id}: group {group}: applied membership change {index} -> {conf_state:?}")
        });
    }

    fn emit_answer(&mut self, group: GroupId, id: NodeId, answer: GroupAnswer<SimCallers>) {
        let (tag, answer) = match answer {
            GroupAnswer::Proposal(tag, result) => (tag, Answer::Proposal(result)),
            GroupAnswer::Read(tag, result) => (tag, Answer::Read(result)),
            GroupAnswer::Admin(tag, result) => (tag, Answer::Admin(result)),
        };
        let incarnation = self.incarnation(id);
        let time = self.now;
        self.trace
            .record(time, TraceLevel::Messages, &[64, id, tag, group], || {
                format!("node {id}: group {group} answers tag {tag}: {answer:?}")
            });
        if self.options.collect_events {
            self.events.push(ClusterEvent::Answered {
                group,
                node: id,
                incarnation,
                time,
                tag,
                answer,
            });
        }
    }

    /// A request to a node that is down: the caller finds it unreachable.
    pub(super) fn answer_unreachable(&mut self, group: GroupId, id: NodeId, tag: u64, read: bool) {
        let error = ApiError::Unavailable(format!("node {id} is down"));
        let answer = if read {
            GroupAnswer::Read(tag, Err(error))
        } else {
            GroupAnswer::Proposal(tag, Err(error))
        };
        self.emit_answer(group, id, answer);
    }

    // -------------------------------------------------------------------------------
    // Storage.

    /// Runs `write` (described by `what`) on node `id`'s `disk`, with the disk fault
    /// armed for the node or drawn with `disk_fault_ppm` injected into it. See
    /// [`StorageWrite`].
    pub(super) fn storage_write(
        &mut self,
        id: NodeId,
        disk: &NodeDisk,
        what: impl FnOnce() -> String,
        write: impl FnOnce(&NodeDisk) -> Result<(), StorageFailure>,
    ) -> StorageWrite {
        let fault = self.draw_disk_fault(id, disk.mode());
        if let Some(fault) = fault {
            disk.arm(fault);
        }
        match (write(disk), fault) {
            (Ok(()), None) => Ok(true),
            (Err(StorageFailure::Stopped(why)), Some(fault)) => {
                self.stats.disk_faults += 1;
                let code = match fault {
                    DiskFault::PowerLoss { torn, syncs_before } => {
                        u64::from(torn) | u64::from(syncs_before) << 1
                    }
                    DiskFault::SyncFailure => u64::MAX,
                };
                self.trace_event(&[23, id, code], || {
                    format!("node {id}: {fault} while writing {}: {why}; the node stops", what())
                });
                Ok(false)
            }
            (
                Ok(()),
                Some(
                    fault @ DiskFault::PowerLoss {
                        syncs_before: 1.., ..
                    },
                ),
            ) => {
                // The write synced fewer times than the fault waited for.
                disk.disarm_power_loss();
                self.trace_event(&[27, id], || {
                    format!("node {id}: {fault} missed the write of {}", what())
                });
                Ok(true)
            }
            (Ok(()), Some(fault)) => Err((
                CheckerKind::Storage,
                format!(
                    "node {id}: the disk injected {fault} into the write of {}, yet the write succeeded",
                    what()
                ),
            )),
            (Err(error @ StorageFailure::Stopped(_)), None) => Err((
                CheckerKind::Storage,
                format!("node {id}: writing {}: {error} (no fault was injected)", what()),
            )),
            (Err(error), _) => Err((
                CheckerKind::DriverContract,
                format!("node {id}: writing {}: {error}", what()),
            )),
        }
    }

    /// The disk fault to inject into node `id`'s next write, if any: the one armed,
    /// else one drawn.
    fn draw_disk_fault(&mut self, id: NodeId, mode: StorageMode) -> Option<DiskFault> {
        if mode != StorageMode::Disk {
            return None;
        }
        let armed = self
            .nodes
            .get_mut(&id)
            .and_then(|node| node.armed_fault.take());
        if armed.is_some() {
            return armed;
        }
        if !self.disk_fault_rng.chance(self.options.disk_fault_ppm) {
            return None;
        }
        if self.disk_fault_rng.below(3) == 0 {
            return Some(DiskFault::SyncFailure);
        }
        // Mostly at the write's first sync; now and then at a later one, which only
        // writes that start a segment, install a snapshot or delete segments reach.
        let syncs_before = if self.disk_fault_rng.chance(crate::rng::PPM / 4) {
            self.disk_fault_rng.between(1, 3) as u32
        } else {
            0
        };
        Some(DiskFault::PowerLoss {
            torn: self.disk_fault_rng.coin(),
            syncs_before,
        })
    }

    /// Puts `up` back after a storage write, then acts on what the write came to:
    /// returns true if it is durable; crashes the node if a disk fault stopped it;
    /// records the failure otherwise.
    pub(super) fn after_storage_write(
        &mut self,
        id: NodeId,
        up: Box<UpNode>,
        written: StorageWrite,
    ) -> bool {
        self.put_up(id, up);
        match written {
            Ok(true) => true,
            Ok(false) => {
                self.crash(id);
                false
            }
            Err((checker, message)) => {
                self.fail(checker, message);
                false
            }
        }
    }

    // -------------------------------------------------------------------------------
    // Failures and tracing.

    pub(super) fn fail(&mut self, checker: CheckerKind, message: String) {
        let now = self.now;
        self.set_failure(Violation {
            checker,
            time: now,
            message,
        });
    }

    /// Records `violation` as the cluster's failure (the first one wins) and stops.
    pub fn set_failure(&mut self, violation: Violation) {
        if self.failure.is_none() {
            let line = violation.to_string();
            self.trace.record(
                self.now,
                TraceLevel::Events,
                &[99, violation.checker as u64],
                || format!("FAILED {line}"),
            );
            self.failure = Some(violation);
        }
    }

    pub(super) fn trace_event(&mut self, words: &[u64], describe: impl FnOnce() -> String) {
        self.trace
            .record(self.now, TraceLevel::Events, words, describe);
    }

    fn trace_ready(&mut self, id: NodeId, group: GroupId, write: Option<&DurableWrite>) {
        let (entry_count, first_entry, hard_words, snapshot_index) = match write {
            Some(write) => {
                let hard = write
                    .hard_state
                    .map(|state| (state.term, state.vote, state.commit))
                    .unwrap_or((0, 0, 0));
                (
                    write.entries.len() as u64,
                    write.entries.first().map(|entry| entry.index).unwrap_or(0),
                    hard,
                    write
                        .snapshot
                        .as_ref()
                        .map(|snapshot| snapshot.metadata.index)
                        .unwrap_or(0),
                )
            }
            None => (0, 0, (0, 0, 0), 0),
        };
        self.trace.record(
            self.now,
            TraceLevel::Messages,
            &[
                60,
                id,
                group,
                entry_count,
                first_entry,
                hard_words.0,
                hard_words.1,
                hard_words.2,
                snapshot_index,
            ],
            || match write {
                Some(write) => format!(
                    "node {id}: group {group}: ready to write {}",
                    describe_write(write)
                ),
                None => format!("node {id}: group {group}: ready with nothing to write"),
            },
        );
    }
}

/// Writes a turn's durable parts to the node's log as one batch: after a crash all of
/// it is on disk or none of it.
pub(super) fn write_batch(disk: &NodeDisk, writes: &TurnWrites) -> Result<(), StorageFailure> {
    let log = disk
        .log()
        .ok_or_else(|| StorageFailure::Refused("no durable log to write to".into()))?;
    let mut batch = WriteBatch::new();
    for (group, write) in writes {
        batch.persist_ready(
            *group,
            write.hard_state,
            write.snapshot.clone(),
            write.entries.clone(),
        );
        if write.compact.is_some() {
            batch.group(*group).compact = write.compact;
        }
    }
    Ok(log.write(batch)?)
}

/// The digest of a simulator state machine (the key-value map), read as a query.
pub(super) fn digest_of(state_machine: &dyn StateMachine) -> u64 {
    state_machine
        .query(crate::kv::digest_query())
        .ok()
        .and_then(|answer| <[u8; 8]>::try_from(&answer[..]).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Flips the last byte of the last command entry among `writes` (no checksums).
fn corrupt_a_command(writes: &mut TurnWrites) {
    for (_, write) in writes.iter_mut().rev() {
        if let Some(entry) = write.entries.iter_mut().rev().find(|entry| {
            entry.kind == EntryKind::Normal
                && entry.data.first() == Some(&concord_group::framing::TAG_REQUEST)
        }) {
            let mut data = BytesMut::from(&entry.data[..]);
            let last = data.len() - 1;
            data[last] ^= 0x01;
            entry.data = data.freeze();
            return;
        }
    }
}

/// What a write makes durable, for messages.
fn describe_write(write: &DurableWrite) -> String {
    let mut parts = Vec::new();
    if let Some(snapshot) = &write.snapshot {
        parts.push(format!("snapshot at {}", snapshot.metadata.index));
    }
    if let (Some(first), Some(last)) = (write.entries.first(), write.entries.last()) {
        parts.push(format!("entries {}..={}", first.index, last.index));
    }
    if let Some(hard_state) = write.hard_state {
        parts.push(format!("hard state {hard_state:?}"));
    }
    if let Some(index) = write.compact {
        parts.push(format!("compaction to {index}"));
    }
    parts.join(", ")
}

fn describe_writes(writes: &TurnWrites) -> String {
    writes
        .iter()
        .map(|(group, write)| format!("group {group}: {}", describe_write(write)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn conf_state_hash(conf_state: &ConfState) -> u64 {
    let mut hash = 2;
    for list in [
        &conf_state.voters,
        &conf_state.learners,
        &conf_state.voters_outgoing,
        &conf_state.learners_next,
    ] {
        hash = hash_words(hash, list);
        hash = hash_words(hash, &[u64::MAX]);
    }
    hash_words(hash, &[u64::from(conf_state.auto_leave)])
}

fn role_code(role: Role) -> u64 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
    }
}

fn message_words(tag: u64, group: GroupId, message: &Message, extra: u64) -> [u64; 13] {
    [
        tag,
        message.kind as u64,
        message.from,
        message.to,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.entries.len() as u64,
        u64::from(message.reject),
        message
            .snapshot
            .as_ref()
            .map(|chunk| chunk.offset + 1)
            .unwrap_or(0),
        group,
        extra,
    ]
}

/// One line for a message: group, kind, route, term, and the fields its kind uses.
pub fn describe_message(group: GroupId, message: &Message) -> String {
    let mut text = format!(
        "g{group} {:?} {}->{} term {}",
        message.kind, message.from, message.to, message.term
    );
    if message.index != 0 || message.log_term != 0 {
        text.push_str(&format!(
            " index {} log_term {}",
            message.index, message.log_term
        ));
    }
    if let (Some(first), Some(last)) = (message.entries.first(), message.entries.last()) {
        text.push_str(&format!(" entries {}..={}", first.index, last.index));
    }
    if message.commit != 0 {
        text.push_str(&format!(" commit {}", message.commit));
    }
    if message.reject {
        text.push_str(&format!(" REJECT hint {}", message.reject_hint));
    }
    if let Some(chunk) = &message.snapshot {
        text.push_str(&format!(
            " snapshot {}@{} bytes {}+{}/{}",
            chunk.metadata.index,
            chunk.metadata.term,
            chunk.offset,
            chunk.data.len(),
            chunk.total_bytes
        ));
    }
    text
}
