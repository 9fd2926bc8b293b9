//! The [`Applier`]: the state machine's side of a group. It takes what the
//! [`crate::GroupDriver`] hands out, in log order — committed entries, snapshots to
//! restore, leadership notices, confirmed reads — applies it to the group's
//! [`StateMachine`], and says what came of it: answers for the callers, events for
//! local subscribers, commands the state machine wants proposed, and when a snapshot
//! is due.
//!
//! It does no IO. The runtime runs one per group on an apply task (so a slow state
//! machine delays only its own group, never replication); the simulator calls it
//! directly. Both run this same code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term};
use concord_types::{ApiError, GroupId, ProposeResponse, ReadResponse, RequestId};

use crate::exactly_once::Admission;
use crate::framing::{self, Addresses, GroupSpec, Payload, SnapshotHeader};
use crate::state_machine::{
    ApplyContext, LeaderNotice, StateMachine, StateMachineError, StateMachineFactory,
};

/// How a group's driver and applier name the callers waiting on them: the runtime
/// uses reply channels, the simulator plain tags.
pub trait Callers: 'static {
    /// A proposer waiting for its entry's outcome.
    type Proposal: Send + 'static;
    /// A reader waiting for its answer.
    type Read: Send + 'static;
    /// A caller waiting for a membership change to apply.
    type Admin: Send + 'static;
}

/// What a committed normal or membership entry is, as the applier sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// A leader's no-op (and a membership change that was ignored).
    Noop,
    /// A command.
    Command(Bytes),
    /// An exactly-once command.
    Request {
        /// Its id.
        id: RequestId,
        /// The command.
        command: Bytes,
    },
    /// A client registering.
    Register,
    /// A member's address.
    Address {
        /// The member.
        node: NodeId,
        /// Where it listens.
        address: String,
    },
    /// A membership change, applied by the driver: the membership after it.
    Membership(ConfState),
    /// Data this version cannot read: the group stops rather than diverge.
    Unreadable(String),
}

impl From<Payload> for EntryPayload {
    fn from(payload: Payload) -> Self {
        match payload {
            Payload::Noop => EntryPayload::Noop,
            Payload::Command(command) => EntryPayload::Command(command),
            Payload::Request { id, command } => EntryPayload::Request { id, command },
            Payload::Register => EntryPayload::Register,
            Payload::Address { node, address } => EntryPayload::Address { node, address },
            Payload::Unreadable(reason) => EntryPayload::Unreadable(reason),
        }
    }
}

/// One committed entry handed to the applier, with its proposer when this node
/// proposed it in that term.
pub struct CommittedEntry<C: Callers> {
    /// The entry's index.
    pub index: Index,
    /// The entry's term.
    pub term: Term,
    /// What it holds.
    pub payload: EntryPayload,
    /// The entry's data as it is in the log (`payload` is read from it).
    pub data: Bytes,
    /// Who waits for its outcome here.
    pub proposer: Option<C::Proposal>,
}

/// A read waiting to be served.
pub struct PendingRead<C: Callers> {
    /// The query for the state machine.
    pub query: Bytes,
    /// Who waits for the answer.
    pub caller: C::Read,
}

/// Work for the applier, in the order the driver hands it out.
pub enum ApplyItem<C: Callers> {
    /// Committed entries, in index order, continuing from the applied index.
    Entries(Vec<CommittedEntry<C>>),
    /// This node's leadership changed.
    Notice(LeaderNotice),
    /// A snapshot from the leader, durable: replace the state with it.
    Restore(Snapshot),
    /// Reads confirmed at `index` (by the leader of `term`): serve them once the
    /// applied index reaches it. Index 0 serves them at once (stale reads).
    Reads {
        /// The read index.
        index: Index,
        /// The term it was confirmed in.
        term: Term,
        /// The reads.
        reads: Vec<PendingRead<C>>,
    },
}

/// An answer for a caller.
pub enum Answer<C: Callers> {
    /// A proposal's outcome.
    Proposal(C::Proposal, Result<ProposeResponse, ApiError>),
    /// A read's answer.
    Read(C::Read, Result<ReadResponse, ApiError>),
    /// A membership change's outcome.
    Admin(C::Admin, Result<(), ApiError>),
}

impl<C: Callers> std::fmt::Debug for Answer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Proposal(_, result) => write!(f, "Proposal({result:?})"),
            Answer::Read(_, result) => write!(f, "Read({result:?})"),
            Answer::Admin(_, result) => write!(f, "Admin({result:?})"),
        }
    }
}

/// Something local subscribers of a group hear, in apply order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// The state machine emitted `event` applying the entry at `index`.
    Applied {
        /// The entry's index.
        index: Index,
        /// The entry's term.
        term: Term,
        /// What the state machine emitted.
        event: Bytes,
    },
    /// The state was replaced by a snapshot at `index`: events between the last one
    /// heard and `index` were never emitted here.
    Restored {
        /// The snapshot's index.
        index: Index,
    },
}

/// What handling an item came to.
pub struct ApplyOutput<C: Callers> {
    /// Answers for callers.
    pub answers: Vec<Answer<C>>,
    /// Events for local subscribers.
    pub events: Vec<GroupEvent>,
    /// Commands the state machine asked to propose (after a leadership notice).
    pub proposals: Vec<Bytes>,
}

impl<C: Callers> Default for ApplyOutput<C> {
    fn default() -> Self {
        ApplyOutput {
            answers: Vec::new(),
            events: Vec::new(),
            proposals: Vec::new(),
        }
    }
}

impl<C: Callers> ApplyOutput<C> {
    /// True when there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.events.is_empty() && self.proposals.is_empty()
    }
}

/// When the applier asks for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot once this many entries were applied since the last snapshot (0:
    /// never by count).
    pub interval_entries: u64,
    /// Snapshot once this many bytes of entries were applied since the last snapshot
    /// (0: never by size).
    pub interval_bytes: u64,
}

/// A snapshot the applier wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenSnapshot {
    /// The index it holds the state at.
    pub index: Index,
    /// The membership as of that index.
    pub conf_state: ConfState,
    /// Bytes written.
    pub bytes: u64,
}

/// Where a group's applier starts.
pub struct ApplierStart {
    /// The group.
    pub group: GroupId,
    /// What the group is.
    pub spec: GroupSpec,
    /// The state machine, holding the state as of `applied`.
    pub state_machine: Box<dyn StateMachine>,
    /// The index the state machine holds.
    pub applied: Index,
    /// The term of that entry (0 when unknown).
    pub applied_term: Term,
    /// The membership as of `applied`.
    pub conf_state: ConfState,
    /// Members' addresses as of `applied`.
    pub addresses: Addresses,
    /// When to snapshot.
    pub policy: SnapshotPolicy,
    /// Makes fresh state machines to restore snapshots into.
    pub factory: Arc<dyn StateMachineFactory>,
}

/// A group's state machine side. See the module docs.
pub struct Applier<C: Callers> {
    group: GroupId,
    spec: GroupSpec,
    state_machine: Box<dyn StateMachine>,
    // Invariant: never decreases, except that nothing moves once stopped.
    applied: Index,
    applied_term: Term,
    conf_state: ConfState,
    addresses: Addresses,
    policy: SnapshotPolicy,
    factory: Arc<dyn StateMachineFactory>,
    // Invariant: last_snapshot_index <= applied.
    last_snapshot_index: Index,
    bytes_since_snapshot: u64,
    /// Reads waiting for the applied index to reach theirs, by read index.
    waiting_reads: BTreeMap<Index, Vec<(Term, PendingRead<C>)>>,
    /// Why the group stopped, once it did.
    stopped: Option<String>,
    /// The highest index the state machine already holds: above `applied` only for a
    /// durable state machine restarted ahead of the group's snapshot. Entries up to
    /// it are followed (index, membership, addresses) but not applied again.
    state_machine_holds: Index,
}

impl<C: Callers> Applier<C> {
    /// An applier starting from `start`.
    pub fn new(start: ApplierStart) -> Self {
        let state_machine_holds = start
            .state_machine
            .durable_index()
            .unwrap_or(0)
            .max(start.applied);
        Applier {
            group: start.group,
            spec: start.spec,
            state_machine: start.state_machine,
            applied: start.applied,
            applied_term: start.applied_term,
            conf_state: start.conf_state,
            addresses: start.addresses,
            policy: start.policy,
            factory: start.factory,
            last_snapshot_index: start.applied,
            bytes_since_snapshot: 0,
            waiting_reads: BTreeMap::new(),
            stopped: None,
            state_machine_holds,
        }
    }

    /// The index the state machine has applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Members' addresses as of the applied index.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// What the group is.
    pub fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    /// The state machine.
    pub fn state_machine(&self) -> &dyn StateMachine {
        &*self.state_machine
    }

    /// Why the group stopped on this node, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// True when a snapshot may be written now: the group runs and the state
    /// machine holds exactly the applied index. A durable state machine restarted
    /// ahead of the group holds more until the applier has followed the log up to
    /// its durable index; its state then would be labelled with an index it is past.
    pub fn can_snapshot(&self) -> bool {
        self.stopped.is_none() && self.applied >= self.state_machine_holds
    }

    /// True when the policy asks for a snapshot now (and one may be written).
    pub fn snapshot_due(&self) -> bool {
        if !self.can_snapshot() || self.applied <= self.last_snapshot_index {
            return false;
        }
        let by_count = self.policy.interval_entries > 0
            && self.applied >= self.last_snapshot_index + self.policy.interval_entries;
        let by_size = self.policy.interval_bytes > 0
            && self.bytes_since_snapshot >= self.policy.interval_bytes;
        by_count || by_size
    }

    /// Writes a snapshot of the state as of the applied index to `sink`: the header
    /// (kind, description, addresses), then the state machine's bytes. A state
    /// machine that fails to write its snapshot stops the group (callers waiting on
    /// it hear so in `out`).
    pub fn write_snapshot(
        &mut self,
        sink: &mut dyn Write,
        out: &mut ApplyOutput<C>,
    ) -> Result<TakenSnapshot, StateMachineError> {
        if let Some(reason) = &self.stopped {
            return Err(StateMachineError(format!("the group stopped: {reason}")));
        }
        if self.applied < self.state_machine_holds {
            return Err(StateMachineError(format!(
                "the state machine holds entries up to {} and the group has followed the \
                 log only to {}: a snapshot now would label its state with the lower index",
                self.state_machine_holds, self.applied
            )));
        }
        let header = SnapshotHeader {
            spec: self.spec.clone(),
            addresses: self.addresses.clone(),
            has_state: true,
        }
        .encode();
        let mut counting = CountingWriter {
            inner: sink,
            bytes: 0,
        };
        counting.write_all(&header)?;
        if let Err(error) = self.state_machine.snapshot(&mut counting) {
            let reason = format!("snapshotting at {}: {error}", self.applied);
            self.stop(reason, out);
            return Err(error);
        }
        self.last_snapshot_index = self.applied;
        self.bytes_since_snapshot = 0;
        Ok(TakenSnapshot {
            index: self.applied,
            conf_state: self.conf_state.clone(),
            bytes: counting.bytes,
        })
    }

    /// Handles one item, adding what came of it to `out`.
    pub fn handle(&mut self, item: ApplyItem<C>, out: &mut ApplyOutput<C>) {
        match item {
            ApplyItem::Entries(entries) => {
                for entry in entries {
                    self.apply_entry(entry, out);
                }
            }
            ApplyItem::Notice(notice) => {
                if self.stopped.is_none() {
                    out.proposals
                        .extend(self.state_machine.on_leader_change(notice));
                }
            }
            ApplyItem::Restore(snapshot) => self.restore(snapshot, out),
            ApplyItem::Reads { index, term, reads } => {
                if index == 0 || index <= self.applied || self.stopped.is_some() {
                    let term = if index == 0 { self.applied_term } else { term };
                    for read in reads {
                        self.serve(term, read, out);
                    }
                } else {
                    let waiting = self.waiting_reads.entry(index).or_default();
                    waiting.extend(reads.into_iter().map(|read| (term, read)));
                }
            }
        }
        self.serve_waiting_reads(out);
    }

    /// Answers every waiting read with `error` (the group is being unloaded).
    pub fn fail_waiting(&mut self, error: &ApiError, out: &mut ApplyOutput<C>) {
        for (_, reads) in std::mem::take(&mut self.waiting_reads) {
            for (_, read) in reads {
                out.answers
                    .push(Answer::Read(read.caller, Err(error.clone())));
            }
        }
    }

    fn stopped_error(&self) -> ApiError {
        ApiError::GroupStopped {
            group: self.group,
            reason: self.stopped.clone().unwrap_or_default(),
        }
    }

    fn stop(&mut self, reason: String, out: &mut ApplyOutput<C>) {
        self.stopped = Some(reason);
        let error = self.stopped_error();
        self.fail_waiting(&error, out);
    }

    /// What the proposer of a committed entry hears when this node's state machine
    /// stopped before or while applying it: the entry is in the log for good, and
    /// the other replicas apply it, so whether it took effect is not known here.
    fn stopped_before(&self, index: Index) -> ApiError {
        ApiError::OutcomeUnknown(format!(
            "entry {index} is committed, but group {}'s state machine stopped on this node \
             ({}); other replicas apply it",
            self.group,
            self.stopped.as_deref().unwrap_or_default()
        ))
    }

    fn apply_entry(&mut self, entry: CommittedEntry<C>, out: &mut ApplyOutput<C>) {
        if self.stopped.is_some() {
            if let Some(proposer) = entry.proposer {
                let error = self.stopped_before(entry.index);
                out.answers.push(Answer::Proposal(proposer, Err(error)));
            }
            return;
        }
        assert_eq!(
            entry.index,
            self.applied + 1,
            "group {}: entry {} handed to the applier at applied index {}",
            self.group,
            entry.index,
            self.applied
        );
        let (index, term) = (entry.index, entry.term);
        let mut events = Vec::new();
        match &entry.payload {
            EntryPayload::Address { node, address } => {
                self.addresses.insert(*node, address.clone());
            }
            EntryPayload::Membership(conf_state) => self.conf_state = conf_state.clone(),
            _ => {}
        }
        let outcome = if index <= self.state_machine_holds && sees(&entry.payload) {
            // A durable state machine restarted ahead of the group: it has this entry.
            Ok(Some(Err(ApiError::OutcomeUnknown(format!(
                "entry {index} was applied before this node restarted"
            )))))
        } else {
            apply_payload(
                self.state_machine.as_mut(),
                self.group,
                (index, term),
                entry.payload,
                &mut events,
            )
        };
        match outcome {
            Ok(answer) => {
                self.applied = index;
                self.applied_term = term;
                self.bytes_since_snapshot += entry.data.len() as u64;
                out.events
                    .extend(events.into_iter().map(|event| GroupEvent::Applied {
                        index,
                        term,
                        event,
                    }));
                if let Some(proposer) = entry.proposer {
                    let result = match answer {
                        Some(Ok(response)) => Ok(ProposeResponse {
                            response,
                            index,
                            term,
                        }),
                        Some(Err(error)) => Err(error),
                        // A proposer waits only on answered entries.
                        None => Ok(ProposeResponse {
                            response: Bytes::new(),
                            index,
                            term,
                        }),
                    };
                    out.answers.push(Answer::Proposal(proposer, result));
                }
            }
            Err(reason) => {
                self.stop(reason, out);
                if let Some(proposer) = entry.proposer {
                    let error = self.stopped_before(index);
                    out.answers.push(Answer::Proposal(proposer, Err(error)));
                }
            }
        }
    }

    fn restore(&mut self, snapshot: Snapshot, out: &mut ApplyOutput<C>) {
        if self.stopped.is_some() {
            return;
        }
        let index = snapshot.metadata.index;
        assert!(
            index > self.applied,
            "group {}: snapshot at {index} handed to the applier at applied index {}",
            self.group,
            self.applied
        );
        // The old state machine goes first: a durable one may hold files or locks its
        // successor opens. If the new one cannot be made, the group stops.
        drop(std::mem::replace(&mut self.state_machine, Box::new(Vacant)));
        let restored = (|| -> Result<(SnapshotHeader, Box<dyn StateMachine>), String> {
            let (header, state) = SnapshotHeader::decode(&snapshot.data)?;
            let mut state_machine = self
                .factory
                .create(self.group, &header.spec)
                .map_err(|error| format!("creating the state machine: {error}"))?;
            if let Some(state) = state {
                state_machine
                    .restore(&mut &state[..])
                    .map_err(|error| format!("the state machine refused it: {error}"))?;
            }
            Ok((header, state_machine))
        })();
        match restored {
            Ok((header, state_machine)) => {
                self.state_machine = state_machine;
                if header.spec != GroupSpec::default() {
                    self.spec = header.spec;
                }
                self.addresses = header.addresses;
                self.conf_state = snapshot.metadata.conf_state.clone();
                self.applied = index;
                self.applied_term = snapshot.metadata.term;
                self.state_machine_holds = index;
                self.last_snapshot_index = index;
                self.bytes_since_snapshot = 0;
                out.events.push(GroupEvent::Restored { index });
            }
            Err(reason) => self.stop(format!("restoring the snapshot at {index}: {reason}"), out),
        }
    }

    fn serve(&self, term: Term, read: PendingRead<C>, out: &mut ApplyOutput<C>) {
        let result = if self.stopped.is_some() {
            Err(self.stopped_error())
        } else {
            self.state_machine
                .query(read.query)
                .map(|response| ReadResponse {
                    response,
                    index: self.applied,
                    term,
                })
                .map_err(|error| ApiError::InvalidRequest(error.to_string()))
        };
        out.answers.push(Answer::Read(read.caller, result));
    }

    fn serve_waiting_reads(&mut self, out: &mut ApplyOutput<C>) {
        while let Some(entry) = self.waiting_reads.first_entry() {
            if *entry.key() > self.applied && self.stopped.is_none() {
                break;
            }
            for (term, read) in entry.remove() {
                self.serve(term, read, out);
            }
        }
    }
}

/// Stands in for a state machine while its successor is made from a snapshot; never
/// used once the group stops, which is the only way it stays.
struct Vacant;

impl StateMachine for Vacant {
    fn apply(&mut self, _: &mut ApplyContext<'_>, _: Bytes) -> Result<Bytes, StateMachineError> {
        Err(StateMachineError(
            "no state machine: restoring a snapshot failed".into(),
        ))
    }

    fn query(&self, _: Bytes) -> Result<Bytes, StateMachineError> {
        Err(StateMachineError(
            "no state machine: restoring a snapshot failed".into(),
        ))
    }

    fn snapshot(&self, _: &mut dyn Write) -> Result<(), StateMachineError> {
        Err(StateMachineError(
            "no state machine: restoring a snapshot failed".into(),
        ))
    }

    fn restore(&mut self, _: &mut dyn Read) -> Result<(), StateMachineError> {
        Err(StateMachineError(
            "no state machine: restoring a snapshot failed".into(),
        ))
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// True for the payloads the state machine sees.
fn sees(payload: &EntryPayload) -> bool {
    matches!(
        payload,
        EntryPayload::Command(_) | EntryPayload::Request { .. } | EntryPayload::Register
    )
}

/// Applies a command, an exactly-once request or a registration at `(index, term)`
/// to `state_machine`, adding its events to `events`: the answer for its proposer
/// (`None` for a payload the state machine does not see), or why the state machine
/// cannot go on. The [`Applier`] applies every entry through it; state machine tests
/// use it to apply exactly as a group does, the exactly-once table included.
pub fn apply_payload(
    state_machine: &mut dyn StateMachine,
    group: GroupId,
    (index, term): (Index, Term),
    payload: EntryPayload,
    events: &mut Vec<Bytes>,
) -> Result<Option<Result<Bytes, ApiError>>, String> {
    match payload {
        EntryPayload::Noop | EntryPayload::Address { .. } | EntryPayload::Membership(_) => Ok(None),
        EntryPayload::Unreadable(reason) => Err(format!("entry {index} (term {term}): {reason}")),
        EntryPayload::Command(command) => {
            let mut context = ApplyContext::new(index, term, None, events);
            state_machine
                .apply(&mut context, command)
                .map(|response| Some(Ok(response)))
                .map_err(|error| format!("applying entry {index}: {error}"))
        }
        EntryPayload::Request { id, command } => {
            let admission = state_machine
                .client_table()
                .map(|table| table.admit(&id, index));
            match admission {
                Some(Admission::Answered(response)) => Ok(Some(Ok(response))),
                Some(Admission::Refused(refusal)) => Ok(Some(Err(refusal.to_api_error(&id)))),
                // Without a table nothing could stop a retry applying twice.
                None => Ok(Some(Err(ApiError::InvalidRequest(format!(
                    "group {group} keeps no exactly-once table: a request with a client id \
                     cannot be applied exactly once; propose it without one"
                ))))),
                Some(Admission::Apply) => {
                    let mut context = ApplyContext::new(index, term, Some(id), events);
                    match state_machine.apply(&mut context, command) {
                        Ok(response) => {
                            if let Some(table) = state_machine.client_table() {
                                table.record(&id, response.clone());
                            }
                            Ok(Some(Ok(response)))
                        }
                        Err(error) => Err(format!("applying entry {index}: {error}")),
                    }
                }
            }
        }
        EntryPayload::Register => Ok(Some(match state_machine.client_table() {
            Some(table) => {
                let (client, _evicted) = table.register(index);
                Ok(Bytes::copy_from_slice(&client.to_be_bytes()))
            }
            None => Err(ApiError::InvalidRequest(format!(
                "group {group} keeps no exactly-once table: requests cannot be registered"
            ))),
        })),
    }
}

/// Brings a durable state machine from its durable index forward through `entries`
/// (the log's entries after it, in order, up to the snapshot the group restarts
/// from), as the applier would have applied them. Membership changes and addresses
/// are skipped: the snapshot the group restarts from holds them. Events and answers
/// go nowhere: nobody waits on a restarting node.
pub fn replay_log(
    state_machine: &mut dyn StateMachine,
    group: GroupId,
    entries: &[Entry],
) -> Result<(), String> {
    let mut events = Vec::new();
    for entry in entries {
        if entry.kind != EntryKind::Normal {
            continue;
        }
        let payload = EntryPayload::from(framing::decode_payload(&entry.data));
        apply_payload(
            state_machine,
            group,
            (entry.index, entry.term),
            payload,
            &mut events,
        )?;
        events.clear();
    }
    Ok(())
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
