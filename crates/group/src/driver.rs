//! The [`GroupDriver`]: one raft group's Ready loop without IO, run unchanged by the
//! runtime's raft loop and by the simulator.
//!
//! The driver owns the group's [`RawNode`] and everything between it and the callers:
//! proposals queued in a turn and proposed as one batch, the proposers waiting for
//! their entries, linearizable reads (one ReadIndex request per turn, asked again when
//! the leader changes or no answer comes), membership changes, timeouts counted in
//! ticks, and the order in which a Ready's parts may leave. Its owner does only the
//! IO, in this order (crates/raft/README.md, the driver contract):
//!
//! 1. Feed inputs: [`GroupDriver::step`], [`GroupDriver::tick`],
//!    [`GroupDriver::propose`], [`GroupDriver::read`], [`GroupDriver::admin`].
//! 2. [`GroupDriver::take_ready`]: send the [`DriverOutput::messages`] it gave at once;
//!    if it returned a [`DurableWrite`], make it durable (several groups' writes may go
//!    in one batch), then call [`GroupDriver::finish_ready`]. Without a write the Ready
//!    was finished already.
//! 3. After finishing: send the new messages (responses and votes that promise the
//!    write), hand [`DriverOutput::apply`] to the group's [`crate::Applier`] in order,
//!    and deliver [`DriverOutput::answers`].
//!
//! Two rules only the driver knows:
//!
//! - **A hard state that changes only the commit index is not written on its own.**
//!   The commit index is not needed for safety (a restarted node learns it again from
//!   the leader, and restart never needs it above the latest snapshot, where `applied`
//!   restarts). It rides along with the group's next durable write; a Ready with
//!   nothing else durable is finished at once. This halves a leader's syncs with one
//!   proposal at a time.
//! - **Leadership notices travel with the entries.** A node that wins a term hears
//!   [`LeaderNotice::Elected`] right after the term's first entry (its no-op) is
//!   applied, never before: it acts only on state at least as new as its own term.
//!
//! In debug and test builds the driver asserts its invariants: what it hands out to
//! apply never goes back, a snapshot handed out is newer than everything applied,
//! responses never leave before the write they promise, and a Ready is finished
//! before the next is taken.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, LogPosition, Message, NodeId,
    RawNode, ReadState, Role, Snapshot, Status, Storage, Term, NO_NODE,
};
use concord_types::{ApiError, GroupId};

use crate::apply::{Answer, ApplyItem, Callers, CommittedEntry, EntryPayload, PendingRead};
use crate::framing::{self, Addresses, Payload, SnapshotHeader};
use crate::state_machine::LeaderNotice;

/// A deliberate driver bug, for the simulator's checker tests. Only the
/// `planted-bugs` feature can switch one on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriverBug {
    /// Send a Ready's `persisted_messages` with its other messages, before its write
    /// is durable (breaking step 4 of the contract): a vote or an acknowledged entry
    /// can be lost in a crash after the peer counted it.
    SendPersistedEarly,
    /// Hand confirmed reads to the applier to serve at once, without waiting for the
    /// state machine to apply up to their read index (thesis §6.4 step 4): a follower
    /// behind its leader answers stale values.
    ServeReadsBeforeApply,
}

/// How a driver behaves. Times are in ticks of the group's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// The group.
    pub group: GroupId,
    /// A linearizable read the leader has not confirmed within this many ticks of
    /// being asked fails with [`ApiError::Timeout`].
    pub read_timeout_ticks: u64,
    /// A read unanswered this many ticks after it was asked (the request or its
    /// answer was lost) is asked again.
    pub read_retry_ticks: u64,
    /// A proposal whose entry was not handed out within this many ticks of being
    /// proposed fails with [`ApiError::Timeout`].
    pub proposal_timeout_ticks: u64,
    /// The context of this driver's first read; later reads count up from it. It
    /// must differ between the lives of a node (restarts), so that a leader's late
    /// answer to a read asked before a restart cannot be taken for the answer to one
    /// asked after it, and serve that read at an older index. [`DriverConfig::new`]
    /// draws it at random; a deterministic caller (the simulator) sets it from its
    /// seed and the node's incarnation.
    pub read_context_start: u64,
    /// A planted bug, for checker tests only.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<DriverBug>,
}

/// 64 random bits from the standard library's `RandomState`, which seeds itself from
/// the operating system.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64)
}

impl DriverConfig {
    /// Reasonable times for an election timeout of `election_timeout_ticks`: reads
    /// asked again after two election timeouts and given up after twenty, proposals
    /// given up after twenty.
    pub fn new(group: GroupId, election_timeout_ticks: u32) -> DriverConfig {
        let election = u64::from(election_timeout_ticks.max(1));
        DriverConfig {
            group,
            read_timeout_ticks: 20 * election,
            read_retry_ticks: 2 * election,
            proposal_timeout_ticks: 20 * election,
            read_context_start: random_u64(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    #[inline(always)]
    fn has_bug(&self, bug: DriverBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted_bug == Some(bug);
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}

/// A membership or leadership request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Add `node`, listening at `address`, as a learner.
    AddLearner {
        /// The node.
        node: NodeId,
        /// Where it listens.
        address: String,
    },
    /// Make learner `node` a voter.
    Promote {
        /// The node.
        node: NodeId,
    },
    /// Take `node` out of the group.
    Remove {
        /// The node.
        node: NodeId,
    },
    /// Hand leadership to `target`.
    TransferLeader {
        /// The new leader.
        target: NodeId,
    },
    /// Campaign now.
    Campaign,
}

/// What a Ready asks to make durable, together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableWrite {
    /// The hard state, when its term or vote changed (or it rides with other data).
    pub hard_state: Option<HardState>,
    /// Entries to append, replacing any at the same indexes.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to install.
    pub snapshot: Option<Snapshot>,
    /// Compact the log up to this index (a snapshot of it was stored).
    pub compact: Option<Index>,
}

/// What the driver has for its owner after an input or a Ready.
pub struct DriverOutput<C: Callers> {
    /// Messages to send.
    pub messages: Vec<Message>,
    /// Work for the group's applier, in order.
    pub apply: Vec<ApplyItem<C>>,
    /// Callers to answer now (refusals, timeouts, lost proposals).
    pub answers: Vec<Answer<C>>,
    /// Members' addresses learned (from the log, a snapshot, or an admin request).
    pub learned_addresses: Vec<(NodeId, String)>,
    /// An applied membership change removed a member.
    pub members_removed: bool,
    /// This node's role or known leader changed to these.
    pub soft_state: Option<(Role, NodeId)>,
}

impl<C: Callers> Default for DriverOutput<C> {
    fn default() -> Self {
        DriverOutput {
            messages: Vec::new(),
            apply: Vec::new(),
            answers: Vec::new(),
            learned_addresses: Vec::new(),
            members_removed: false,
            soft_state: None,
        }
    }
}

/// Counts of what the driver did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Proposals accepted by the core.
    pub proposals: u64,
    /// Proposals refused, lost or timed out.
    pub dropped_proposals: u64,
    /// Snapshots from the leader installed.
    pub snapshots_installed: u64,
    /// Times the known leader changed.
    pub leader_changes: u64,
}

struct Waiter<C: Callers> {
    index: Index,
    term: Term,
    proposer: C::Proposal,
    proposed_tick: u64,
}

/// Reads asked of the core as one ReadIndex request.
struct PendingReads<C: Callers> {
    /// The tick the reads were first asked at: their timeout counts from here.
    first_asked: u64,
    /// The tick they were last asked at.
    asked: u64,
    reads: Vec<PendingRead<C>>,
}

struct AdminWaiter<C: Callers> {
    index: Index,
    term: Term,
    caller: C::Admin,
}

/// What is left of a Ready once its durable part is out with the owner.
struct Held {
    /// A Ready was taken (false: only a compaction is being written).
    ready: bool,
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    snapshot: Option<Snapshot>,
}

/// One raft group's driver. See the module docs.
pub struct GroupDriver<S: Storage, C: Callers> {
    config: DriverConfig,
    raw: RawNode<S>,
    /// Proposals queued since the last Ready, proposed together.
    queued_proposals: Vec<(Bytes, C::Proposal)>,
    /// Proposals in the log, until their entry is handed out.
    // Invariant: indexes strictly increase front to back.
    waiters: VecDeque<Waiter<C>>,
    admin_waiters: Vec<AdminWaiter<C>>,
    /// Reads queued since the last Ready.
    queued_reads: Vec<PendingRead<C>>,
    /// Reads asked of the core, by context.
    pending_reads: BTreeMap<u64, PendingReads<C>>,
    /// Reads to ask again: the leader changed, or the request or its answer was lost.
    reads_to_retry: Vec<PendingReads<C>>,
    next_read_context: u64,
    addresses: Addresses,
    conf_state: ConfState,
    role: Role,
    leader: NodeId,
    held: Option<Held>,
    /// Compact the log to this index with the next write.
    pending_compact: Option<Index>,
    /// Term and vote of the last hard state handed out to be written.
    synced_term_vote: (Term, NodeId),
    /// A hard state that changed only the commit index, not yet written.
    unsynced_hard_state: Option<HardState>,
    /// The term this node leads and has not yet announced (its no-op not applied).
    unannounced_term: Option<Term>,
    /// The term whose leadership was announced or may be, for the step-down notice.
    led_term: Option<Term>,
    /// A step-down notice to hand out after the entries of the current Ready.
    step_down: Option<LeaderNotice>,
    // Invariant: never decreases. The last index handed out to apply (entries or a
    // snapshot), or where the state machine started.
    handed_index: Index,
    ticks: u64,
    stats: DriverStats,
}

impl<S: Storage, C: Callers> GroupDriver<S, C> {
    /// A driver for `raw`, whose state machine holds the state as of `applied` with
    /// membership `conf_state` and members' `addresses`.
    pub fn new(
        config: DriverConfig,
        raw: RawNode<S>,
        applied: Index,
        conf_state: ConfState,
        addresses: Addresses,
    ) -> Self {
        let synced_term_vote = (raw.term(), raw.status().vote);
        let next_read_context = config.read_context_start;
        GroupDriver {
            config,
            role: raw.role(),
            leader: raw.leader(),
            raw,
            queued_proposals: Vec::new(),
            waiters: VecDeque::new(),
            admin_waiters: Vec::new(),
            queued_reads: Vec::new(),
            pending_reads: BTreeMap::new(),
            reads_to_retry: Vec::new(),
            next_read_context,
            addresses,
            conf_state,
            held: None,
            pending_compact: None,
            synced_term_vote,
            unsynced_hard_state: None,
            unannounced_term: None,
            led_term: None,
            step_down: None,
            handed_index: applied,
            ticks: 0,
            stats: DriverStats::default(),
        }
    }

    // ---------------------------------------------------------------------------------
    // Observing.

    /// The group.
    pub fn group(&self) -> GroupId {
        self.config.group
    }

    /// The driver's configuration.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The raft node.
    pub fn raw(&self) -> &RawNode<S> {
        &self.raw
    }

    /// The group's state machine stopped on this node: the node never seeks
    /// leadership again and a leader steps down, so a voter whose state machine works
    /// is elected (see [`RawNode::stand_down`]). It still votes and stores entries.
    pub fn stand_down(&mut self) {
        self.raw.stand_down();
    }

    /// The raft node's storage, to write a [`DurableWrite`] to it when it is memory.
    pub fn storage_mut(&mut self) -> &mut S {
        self.raw.storage_mut()
    }

    /// Takes the raft node out (the group is unloaded). Call [`GroupDriver::fail_all`]
    /// first.
    pub fn into_raw(self) -> RawNode<S> {
        self.raw
    }

    /// The core's status.
    pub fn status(&self) -> Status {
        self.raw.status()
    }

    /// Members' addresses, as far as the log has been handed out.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The membership, as far as the log has been handed out.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Counts so far.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The last index handed out to apply.
    pub fn handed_index(&self) -> Index {
        self.handed_index
    }

    /// True when a Ready's write is out with the owner.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// True when [`GroupDriver::take_ready`] has something to do. (Reads waiting for
    /// a leader to be known are not work until one is.)
    pub fn has_work(&self) -> bool {
        let leader_known = self.raw.role() == Role::Leader || self.raw.leader() != NO_NODE;
        self.held.is_none()
            && (self.raw.has_ready()
                || self.pending_compact.is_some()
                || !self.queued_proposals.is_empty()
                || !self.queued_reads.is_empty()
                || (leader_known && !self.reads_to_retry.is_empty()))
    }

    /// The `NotLeader` error for this node, with the leader's address when known.
    pub fn not_leader(&self) -> ApiError {
        let leader = self.raw.leader();
        ApiError::NotLeader {
            leader: (leader != NO_NODE).then_some(leader),
            address: self.addresses.get(&leader).cloned(),
        }
    }

    fn with_address(&self, error: ApiError) -> ApiError {
        match error {
            ApiError::NotLeader {
                leader: Some(leader),
                address: None,
            } => ApiError::NotLeader {
                leader: Some(leader),
                address: self.addresses.get(&leader).cloned(),
            },
            other => other,
        }
    }

    // ---------------------------------------------------------------------------------
    // Inputs.

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), concord_raft::Error> {
        self.raw.step(message)
    }

    /// The transport could not reach `node`: stop pipelining to it until it answers.
    pub fn report_unreachable(&mut self, node: NodeId) {
        self.raw.report_unreachable(node);
    }

    /// Advances the group's clock one tick: the core's timers, then reads and
    /// proposals that waited too long.
    pub fn tick(&mut self, out: &mut DriverOutput<C>) {
        self.ticks += 1;
        let now = self.ticks;
        self.raw.tick();
        let (timeout, retry) = (self.config.read_timeout_ticks, self.config.read_retry_ticks);
        let expired = |pending: &PendingReads<C>| now >= pending.first_asked + timeout;
        for pending in std::mem::take(&mut self.reads_to_retry) {
            if expired(&pending) {
                fail_reads(pending.reads, &ApiError::Timeout, out);
            } else {
                self.reads_to_retry.push(pending);
            }
        }
        let unanswered: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, pending)| expired(pending) || now >= pending.asked + retry)
            .map(|(&context, _)| context)
            .collect();
        for context in unanswered {
            let pending = self.pending_reads.remove(&context).expect("listed");
            if expired(&pending) {
                fail_reads(pending.reads, &ApiError::Timeout, out);
            } else {
                // The request or its answer was lost: ask again.
                self.reads_to_retry.push(pending);
            }
        }
        let proposal_timeout = self.config.proposal_timeout_ticks;
        while self
            .waiters
            .front()
            .is_some_and(|waiter| now >= waiter.proposed_tick + proposal_timeout)
        {
            let waiter = self.waiters.pop_front().expect("checked");
            self.stats.dropped_proposals += 1;
            out.answers
                .push(Answer::Proposal(waiter.proposer, Err(ApiError::Timeout)));
        }
    }

    /// Queues `data` (an entry framed by [`crate::framing`]) to be proposed with the
    /// next Ready; `proposer` hears the outcome.
    pub fn propose(&mut self, data: Bytes, proposer: C::Proposal) {
        self.queued_proposals.push((data, proposer));
    }

    /// Proposes `data` now, with nobody waiting for it (an address entry, a command a
    /// state machine asked for).
    pub fn propose_untracked(&mut self, data: Bytes) -> Result<LogPosition, ApiError> {
        self.raw
            .propose(data)
            .map_err(|error| self.with_address(error.into()))
    }

    /// Proposes a membership change now, with nobody waiting for it (any shape the core
    /// accepts: joint changes included).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<LogPosition, ApiError> {
        self.raw
            .propose_conf_change(change)
            .map_err(|error| self.with_address(error.into()))
    }

    /// Queues a linearizable read of `query`; `caller` hears the answer.
    pub fn read(&mut self, query: Bytes, caller: C::Read) {
        self.queued_reads.push(PendingRead { query, caller });
    }

    /// Starts a membership or leadership change. `caller` hears the outcome: at once,
    /// or once the change's entry is handed out.
    pub fn admin(&mut self, op: AdminOp, caller: C::Admin, out: &mut DriverOutput<C>) {
        match self.start_admin(op, out) {
            Ok(Some(position)) => self.admin_waiters.push(AdminWaiter {
                index: position.index,
                term: position.term,
                caller,
            }),
            Ok(None) => out.answers.push(Answer::Admin(caller, Ok(()))),
            Err(error) => out.answers.push(Answer::Admin(caller, Err(error))),
        }
    }

    fn start_admin(
        &mut self,
        op: AdminOp,
        out: &mut DriverOutput<C>,
    ) -> Result<Option<LogPosition>, ApiError> {
        let group = self.config.group;
        let change = match op {
            AdminOp::Campaign => {
                self.raw.campaign();
                return Ok(None);
            }
            AdminOp::TransferLeader { target } => {
                if !self.conf_state.voters.contains(&target) {
                    return Err(ApiError::InvalidRequest(format!(
                        "node {target} is not a voter of group {group}"
                    )));
                }
                if target == self.raw.id() && self.raw.leader() == NO_NODE {
                    // Asked to lead with no leader to hand over: campaign.
                    self.raw.campaign();
                } else {
                    // A follower asks the leader (for itself too); a leader asked to
                    // lead already does.
                    self.raw.transfer_leader(target);
                }
                return Ok(None);
            }
            _ if self.raw.role() != Role::Leader => return Err(self.not_leader()),
            AdminOp::AddLearner { node, address } => {
                if self.conf_state.all_nodes().contains(&node) {
                    return Ok(None);
                }
                if address.is_empty() || address.len() > framing::ADDRESS_BYTES_MAX {
                    return Err(ApiError::InvalidRequest(format!(
                        "a member's address must be 1 to {} bytes, not {}",
                        framing::ADDRESS_BYTES_MAX,
                        address.len()
                    )));
                }
                out.learned_addresses.push((node, address.clone()));
                self.propose_untracked(framing::encode_address(node, &address))?;
                ConfChange::add_learner(node)
            }
            AdminOp::Promote { node } => {
                if self.conf_state.voters.contains(&node) {
                    return Ok(None);
                }
                if !self.conf_state.learners.contains(&node) {
                    return Err(ApiError::InvalidRequest(format!(
                        "node {node} is not a learner of group {group}"
                    )));
                }
                ConfChange::add_voter(node)
            }
            AdminOp::Remove { node } => {
                if !self.conf_state.all_nodes().contains(&node) {
                    return Ok(None);
                }
                ConfChange::remove(node)
            }
        };
        let position = self
            .raw
            .propose_conf_change(&change)
            .map_err(|error| self.with_address(error.into()))?;
        Ok(Some(position))
    }

    /// A snapshot at `index` was stored: compact the log to `compact_to` with the
    /// next write (the owner keeps what trailing entries it wants, and never passes a
    /// durable state machine's index).
    pub fn compact(&mut self, compact_to: Index) {
        let first_index = self.raw.storage().first_index().unwrap_or(0);
        if compact_to >= first_index {
            self.pending_compact = Some(compact_to.max(self.pending_compact.unwrap_or(0)));
        }
    }

    // ---------------------------------------------------------------------------------
    // The Ready.

    /// Proposes what was queued, then takes the Ready, if any: queues its messages
    /// that may leave now in `out` and returns what must be made durable before
    /// [`GroupDriver::finish_ready`]. Returns `None` when there is nothing to write: a
    /// Ready without a durable part is finished at once.
    pub fn take_ready(&mut self, out: &mut DriverOutput<C>) -> Option<DurableWrite> {
        assert!(
            self.held.is_none(),
            "group {}: a Ready was taken before the previous one was finished",
            self.config.group
        );
        self.flush_queued(out);
        let compact = self.pending_compact.take();
        if !self.raw.has_ready() {
            let compact = compact?;
            self.held = Some(Held {
                ready: false,
                persisted_messages: Vec::new(),
                committed_entries: Vec::new(),
                read_states: Vec::new(),
                snapshot: None,
            });
            return Some(DurableWrite {
                compact: Some(compact),
                ..DurableWrite::default()
            });
        }
        let mut ready = self.raw.ready();
        if let Some(soft_state) = ready.soft_state {
            self.observe_soft_state(soft_state.role, soft_state.leader, out);
        } else if self.raw.role() == Role::Leader && self.led_term != Some(self.raw.term()) {
            // Deposed and elected again since the last Ready: role and leader look
            // unchanged, the term does not.
            self.observe_soft_state(Role::Leader, self.raw.leader(), out);
        }
        debug_assert!(
            ready
                .messages
                .iter()
                .all(|message| !message.kind.is_response()),
            "group {}: a response among the messages that may leave before the write",
            self.config.group
        );
        out.messages.append(&mut ready.messages);
        if self.config.has_bug(DriverBug::SendPersistedEarly) {
            out.messages.append(&mut ready.persisted_messages);
        }
        let votes_changed = ready
            .hard_state
            .is_some_and(|hard_state| (hard_state.term, hard_state.vote) != self.synced_term_vote);
        let write = if ready.entries.is_empty()
            && ready.snapshot.is_none()
            && compact.is_none()
            && !votes_changed
        {
            if ready.hard_state.is_some() {
                self.unsynced_hard_state = ready.hard_state;
            }
            None
        } else {
            let hard_state = ready.hard_state.or(self.unsynced_hard_state.take());
            self.unsynced_hard_state = None;
            if let Some(hard_state) = hard_state {
                self.synced_term_vote = (hard_state.term, hard_state.vote);
            }
            Some(DurableWrite {
                hard_state,
                entries: std::mem::take(&mut ready.entries),
                snapshot: ready.snapshot.clone(),
                compact,
            })
        };
        self.held = Some(Held {
            ready: true,
            persisted_messages: std::mem::take(&mut ready.persisted_messages),
            committed_entries: std::mem::take(&mut ready.committed_entries),
            read_states: std::mem::take(&mut ready.read_states),
            snapshot: ready.snapshot.take(),
        });
        if write.is_none() {
            self.finish_ready(out);
        }
        write
    }

    /// The write [`GroupDriver::take_ready`] returned is durable: hands out the rest
    /// of the Ready (responses and votes, committed entries, an installed snapshot,
    /// confirmed reads) and advances the core.
    pub fn finish_ready(&mut self, out: &mut DriverOutput<C>) {
        let held = self.held.take().unwrap_or_else(|| {
            panic!(
                "group {}: finish_ready without a Ready taken",
                self.config.group
            )
        });
        out.messages.extend(held.persisted_messages);
        if let Some(snapshot) = held.snapshot {
            self.install_snapshot(snapshot, out);
        }
        if !held.committed_entries.is_empty() {
            self.hand_out(held.committed_entries, out);
        }
        if let Some(notice) = self.step_down.take() {
            out.apply.push(ApplyItem::Notice(notice));
        }
        let term = self.raw.term();
        for read_state in held.read_states {
            let Ok(context) = <[u8; 8]>::try_from(&read_state.context[..]) else {
                continue;
            };
            if let Some(pending) = self.pending_reads.remove(&u64::from_be_bytes(context)) {
                let index = if self.config.has_bug(DriverBug::ServeReadsBeforeApply) {
                    0
                } else {
                    read_state.index
                };
                out.apply.push(ApplyItem::Reads {
                    index,
                    term,
                    reads: pending.reads,
                });
            }
        }
        if held.ready {
            self.raw.advance();
        }
        if cfg!(debug_assertions) {
            self.raw.check_invariants();
        }
    }

    /// Proposes the queued proposals as one batch and asks one read index for the
    /// queued reads.
    fn flush_queued(&mut self, out: &mut DriverOutput<C>) {
        if !self.queued_proposals.is_empty() {
            let proposals = std::mem::take(&mut self.queued_proposals);
            let (data, proposers): (Vec<Bytes>, Vec<C::Proposal>) = proposals.into_iter().unzip();
            let count = data.len() as u64;
            match self.raw.propose_batch(data) {
                Ok(position) => {
                    self.stats.proposals += count;
                    // A new leader may reuse indexes where our lost proposals were.
                    while self
                        .waiters
                        .back()
                        .is_some_and(|waiter| waiter.index >= position.index)
                    {
                        let lost = self.waiters.pop_back().expect("checked");
                        self.stats.dropped_proposals += 1;
                        out.answers.push(Answer::Proposal(
                            lost.proposer,
                            Err(ApiError::ProposalDropped),
                        ));
                    }
                    for (offset, proposer) in proposers.into_iter().enumerate() {
                        self.waiters.push_back(Waiter {
                            index: position.index + offset as u64,
                            term: position.term,
                            proposer,
                            proposed_tick: self.ticks,
                        });
                    }
                }
                Err(error) => {
                    self.stats.dropped_proposals += count;
                    let error = self.with_address(error.into());
                    for proposer in proposers {
                        out.answers
                            .push(Answer::Proposal(proposer, Err(error.clone())));
                    }
                }
            }
        }
        if !self.queued_reads.is_empty() {
            self.reads_to_retry.push(PendingReads {
                first_asked: self.ticks,
                asked: self.ticks,
                reads: std::mem::take(&mut self.queued_reads),
            });
        }
        // Reads wait for a known leader (or their timeout); then each batch is asked
        // as one ReadIndex request.
        let leader_known = self.raw.role() == Role::Leader || self.raw.leader() != NO_NODE;
        if leader_known && !self.reads_to_retry.is_empty() {
            for mut pending in std::mem::take(&mut self.reads_to_retry) {
                let context = self.next_read_context;
                self.next_read_context = self.next_read_context.wrapping_add(1);
                match self
                    .raw
                    .read_index(Bytes::copy_from_slice(&context.to_be_bytes()))
                {
                    Ok(()) => {
                        pending.asked = self.ticks;
                        self.pending_reads.insert(context, pending);
                    }
                    Err(error) => {
                        let error = self.with_address(error.into());
                        fail_reads(pending.reads, &error, out);
                    }
                }
            }
        }
    }

    fn observe_soft_state(&mut self, role: Role, leader: NodeId, out: &mut DriverOutput<C>) {
        if leader != self.leader {
            self.stats.leader_changes += 1;
        }
        let term = self.raw.term();
        if let Some(led) = self.led_term {
            if role != Role::Leader || led != term {
                self.unannounced_term = None;
                self.led_term = None;
                self.step_down = Some(LeaderNotice::SteppedDown { term: led });
            }
        }
        if role == Role::Leader && self.led_term.is_none() {
            self.unannounced_term = Some(term);
            self.led_term = Some(term);
        }
        self.role = role;
        self.leader = leader;
        out.soft_state = Some((role, leader));
        // Reads asked of the old leader may never be answered (it lost leadership or
        // died): ask the new one.
        let pending = std::mem::take(&mut self.pending_reads);
        self.reads_to_retry.extend(pending.into_values());
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, out: &mut DriverOutput<C>) {
        let index = snapshot.metadata.index;
        assert!(
            index > self.handed_index,
            "group {}: a snapshot at {index} would take the state machine back from {}",
            self.config.group,
            self.handed_index
        );
        self.handed_index = index;
        // An unreadable header stops the group in the applier, which decodes it too.
        if let Ok((header, _)) = SnapshotHeader::decode(&snapshot.data) {
            for (&node, address) in &header.addresses {
                out.learned_addresses.push((node, address.clone()));
            }
            self.addresses.extend(header.addresses);
        }
        self.conf_state = snapshot.metadata.conf_state.clone();
        // Proposals at or below the snapshot were replaced by it: their outcome is
        // unknown here.
        while self
            .waiters
            .front()
            .is_some_and(|waiter| waiter.index <= index)
        {
            let waiter = self.waiters.pop_front().expect("checked");
            out.answers.push(Answer::Proposal(
                waiter.proposer,
                Err(ApiError::OutcomeUnknown(
                    "a snapshot from the leader replaced this node's log".into(),
                )),
            ));
        }
        self.settle_admin_waiters(index, 0, EntryKind::Normal, out);
        self.stats.snapshots_installed += 1;
        out.apply.push(ApplyItem::Restore(snapshot));
    }

    /// Hands committed entries to the applier, applying membership changes to the
    /// core first, in log order, and matching proposals to their entries.
    fn hand_out(&mut self, entries: Vec<Entry>, out: &mut DriverOutput<C>) {
        let mut committed = Vec::with_capacity(entries.len());
        let mut notice = None;
        for entry in entries {
            assert_eq!(
                entry.index,
                self.handed_index + 1,
                "group {}: entry {} handed out after {}",
                self.config.group,
                entry.index,
                self.handed_index
            );
            self.handed_index = entry.index;
            let payload = match entry.kind {
                EntryKind::Normal => {
                    let payload = framing::decode_payload(&entry.data);
                    match &payload {
                        // The term's first entry: everything committed before the term
                        // began is applied once it is.
                        Payload::Noop if self.unannounced_term == Some(entry.term) => {
                            self.unannounced_term = None;
                            notice = Some((
                                committed.len() + 1,
                                LeaderNotice::Elected { term: entry.term },
                            ));
                        }
                        Payload::Address { node, address } => {
                            out.learned_addresses.push((*node, address.clone()));
                            self.addresses.insert(*node, address.clone());
                        }
                        _ => {}
                    }
                    EntryPayload::from(payload)
                }
                EntryKind::ConfChange => self.apply_conf_change(&entry, out),
            };
            let proposer =
                self.take_waiter(entry.index, entry.term, payload_is_answered(&payload), out);
            if !self.admin_waiters.is_empty() {
                self.settle_admin_waiters(entry.index, entry.term, entry.kind, out);
            }
            committed.push(CommittedEntry {
                index: entry.index,
                term: entry.term,
                payload,
                data: entry.data,
                proposer,
            });
        }
        match notice {
            Some((split, notice)) => {
                let rest = committed.split_off(split);
                out.apply.push(ApplyItem::Entries(committed));
                // A term it led before ends before the new one is announced.
                if let Some(step_down) = self.step_down.take() {
                    out.apply.push(ApplyItem::Notice(step_down));
                }
                out.apply.push(ApplyItem::Notice(notice));
                if !rest.is_empty() {
                    out.apply.push(ApplyItem::Entries(rest));
                }
            }
            None => out.apply.push(ApplyItem::Entries(committed)),
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry, out: &mut DriverOutput<C>) -> EntryPayload {
        let change = match ConfChange::decode(&entry.data) {
            Ok(change) => change,
            Err(error) => {
                return EntryPayload::Unreadable(format!("a membership change: {error}"));
            }
        };
        match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => {
                let kept = conf_state.all_nodes();
                if self
                    .conf_state
                    .all_nodes()
                    .iter()
                    .any(|node| !kept.contains(node))
                {
                    out.members_removed = true;
                }
                // Members whose links a removal dropped in between get them back.
                for node in &kept {
                    if let Some(address) = self.addresses.get(node) {
                        out.learned_addresses.push((*node, address.clone()));
                    }
                }
                self.conf_state = conf_state.clone();
                EntryPayload::Membership(conf_state)
            }
            // Every node ignores an invalid change alike.
            Err(_) => EntryPayload::Noop,
        }
    }

    fn take_waiter(
        &mut self,
        index: Index,
        term: Term,
        answered: bool,
        out: &mut DriverOutput<C>,
    ) -> Option<C::Proposal> {
        while let Some(front) = self.waiters.front() {
            if front.index > index {
                return None;
            }
            let waiter = self.waiters.pop_front().expect("checked");
            if waiter.index == index && waiter.term == term && answered {
                return Some(waiter.proposer);
            }
            self.stats.dropped_proposals += 1;
            out.answers.push(Answer::Proposal(
                waiter.proposer,
                Err(ApiError::ProposalDropped),
            ));
        }
        None
    }

    /// Answers membership changes waiting on the entry at `index` (or, with term 0,
    /// on any entry up to `index`, replaced by a snapshot).
    fn settle_admin_waiters(
        &mut self,
        index: Index,
        term: Term,
        kind: EntryKind,
        out: &mut DriverOutput<C>,
    ) {
        let mut index_waiters = Vec::new();
        let mut kept = Vec::new();
        for waiter in self.admin_waiters.drain(..) {
            if waiter.index > index {
                kept.push(waiter);
            } else {
                index_waiters.push(waiter);
            }
        }
        self.admin_waiters = kept;
        for waiter in index_waiters {
            let outcome =
                if waiter.index == index && waiter.term == term && kind == EntryKind::ConfChange {
                    Ok(())
                } else if term == 0 {
                    Err(ApiError::OutcomeUnknown(
                        "a snapshot from the leader replaced this node's log".into(),
                    ))
                } else {
                    Err(ApiError::ProposalDropped)
                };
            out.answers.push(Answer::Admin(waiter.caller, outcome));
        }
    }

    /// Answers every caller still waiting (the group is unloaded or the node stops):
    /// queued work with [`ApiError::Unavailable`], proposals in the log with
    /// [`ApiError::OutcomeUnknown`].
    pub fn fail_all(&mut self, reason: &str, out: &mut DriverOutput<C>) {
        let unavailable = ApiError::Unavailable(reason.to_string());
        let unknown = ApiError::OutcomeUnknown(reason.to_string());
        for (_, proposer) in self.queued_proposals.drain(..) {
            out.answers
                .push(Answer::Proposal(proposer, Err(unavailable.clone())));
        }
        for waiter in self.waiters.drain(..) {
            out.answers
                .push(Answer::Proposal(waiter.proposer, Err(unknown.clone())));
        }
        for waiter in self.admin_waiters.drain(..) {
            out.answers
                .push(Answer::Admin(waiter.caller, Err(unknown.clone())));
        }
        fail_reads(std::mem::take(&mut self.queued_reads), &unavailable, out);
        for (_, pending) in std::mem::take(&mut self.pending_reads) {
            fail_reads(pending.reads, &unavailable, out);
        }
        for pending in std::mem::take(&mut self.reads_to_retry) {
            fail_reads(pending.reads, &unavailable, out);
        }
    }
}

fn payload_is_answered(payload: &EntryPayload) -> bool {
    matches!(
        payload,
        EntryPayload::Command(_) | EntryPayload::Request { .. } | EntryPayload::Register
    )
}

fn fail_reads<C: Callers>(reads: Vec<PendingRead<C>>, error: &ApiError, out: &mut DriverOutput<C>) {
    for read in reads {
        out.answers
            .push(Answer::Read(read.caller, Err(error.clone())));
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
