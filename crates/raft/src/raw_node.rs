//! The driver-facing handle: feed inputs, collect a [`Ready`], do what it says, then
//! [`RawNode::advance`].

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::conf_change::ConfChange;
use crate::config::Config;
use crate::errors::{Error, ProposeError};
use crate::progress::ProgressState;
use crate::raft::{LogPosition, Raft};
use crate::storage::Storage;
use crate::types::{
    ConfState, Entry, EntryKind, HardState, Index, Message, NodeId, ReadState, Role, Snapshot,
    SoftState, Term,
};

/// Work for the driver, in the order of the contract in the crate docs.
#[derive(Debug, Default)]
pub struct Ready {
    /// Leader or role changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Persist this hard state (step 1).
    pub hard_state: Option<HardState>,
    /// Persist this snapshot and install it in the state machine (steps 1 and 3).
    pub snapshot: Option<Snapshot>,
    /// Append these entries to the log, replacing any at the same indexes (step 1).
    pub entries: Vec<Entry>,
    /// Send these now, before or while persisting (step 2). Empty when `hard_state`
    /// changes the term or vote: then every message waits in `persisted_messages`.
    pub messages: Vec<Message>,
    /// Send these only once step 1 is durable (step 2).
    pub persisted_messages: Vec<Message>,
    /// Apply these to the state machine, in order, after step 1 (step 3).
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed: serve each once the state machine has applied its index.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when step 1 has something to make durable.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// What was handed out in the last Ready, acknowledged by `advance`.
#[derive(Clone, Copy, Debug, Default)]
struct Handed {
    last_entry: Option<(Index, Term)>,
    snapshot_index: Option<Index>,
    last_committed: Option<Index>,
    committed_payload_bytes: u64,
}

/// A follower's progress, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Highest index known replicated on the node.
    pub matched: Index,
    /// Next index to send.
    pub next_index: Index,
    /// How the leader is sending.
    pub state: ProgressState,
    /// A learner.
    pub is_learner: bool,
}

/// A snapshot of a node's state, for observability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: NodeId,
    /// Known leader.
    pub leader: NodeId,
    /// Role.
    pub role: Role,
    /// Commit index.
    pub commit: Index,
    /// Applied index.
    pub applied: Index,
    /// Last log index.
    pub last_index: Index,
    /// Membership.
    pub conf_state: ConfState,
    /// Progress of every member (leader only).
    pub progress: BTreeMap<NodeId, ProgressStatus>,
    /// A snapshot being received from the leader, in chunks (follower only).
    pub incoming_snapshot: Option<IncomingSnapshotStatus>,
}

/// How far a follower has received a snapshot the leader streams in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncomingSnapshotStatus {
    /// The snapshot's index.
    pub index: Index,
    /// Bytes received so far.
    pub received_bytes: u64,
    /// The snapshot's size in bytes.
    pub total_bytes: u64,
}

/// A raft node driven by its owner.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    handed: Option<Handed>,
}

impl<S: Storage> RawNode<S> {
    /// Starts a node over `storage`, which holds its hard state, membership and log.
    pub fn new(config: &Config, storage: S) -> Result<Self, Error> {
        let raft = Raft::new(config, storage)?;
        let previous_soft_state = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        let previous_hard_state = HardState {
            term: raft.term,
            vote: raft.vote,
            commit: raft.log.committed(),
        };
        Ok(RawNode {
            raft,
            previous_soft_state,
            previous_hard_state,
            handed: None,
        })
    }

    /// Advances the logical clock one tick (heartbeats, election timeouts).
    pub fn tick(&mut self) {
        self.raft.tick();
        self.check_invariants();
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        let result = self.raft.step(message);
        self.check_invariants();
        result
    }

    /// Starts an election now (with pre-vote if configured).
    pub fn campaign(&mut self) {
        self.raft.campaign_now();
        self.check_invariants();
    }

    /// Proposes one command. Returns where it went in the log.
    pub fn propose(&mut self, data: Bytes) -> Result<LogPosition, ProposeError> {
        let result = self.raft.propose(std::iter::once(data), EntryKind::Normal);
        self.check_invariants();
        result
    }

    /// Proposes a batch of commands as consecutive entries in one append. Returns the
    /// position of the first; the rest follow at consecutive indexes.
    pub fn propose_batch(
        &mut self,
        batch: impl IntoIterator<Item = Bytes>,
    ) -> Result<LogPosition, ProposeError> {
        let result = self.raft.propose(batch, EntryKind::Normal);
        self.check_invariants();
        result
    }

    /// Proposes a membership change.
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<LogPosition, ProposeError> {
        let result = self.raft.propose_conf_change(change);
        self.check_invariants();
        result
    }

    /// Applies a committed membership change entry; the driver calls it while applying.
    /// Returns the new membership to record in storage, or why the change was ignored.
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, String> {
        let result = self.raft.apply_conf_change(change);
        self.check_invariants();
        result
    }

    /// Requests a linearizable read point; answered by a [`ReadState`] with `context`.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), ProposeError> {
        let result = self.raft.read_index(context);
        self.check_invariants();
        result
    }

    /// Hands leadership to `target` (forwarded to the leader from a follower).
    pub fn transfer_leader(&mut self, target: NodeId) {
        self.raft.transfer_leader(target);
        self.check_invariants();
    }

    /// This node stops seeking leadership for good: see [`Raft::stand_down`].
    pub fn stand_down(&mut self) {
        self.raft.stand_down();
        self.check_invariants();
    }

    /// Tells the leader that `node` could not be reached: pipelining to it stops until
    /// it answers again.
    pub fn report_unreachable(&mut self, node: NodeId) {
        if let Some(progress) = self.raft.tracker.progress.get_mut(&node) {
            if progress.state == ProgressState::Replicate {
                progress.become_probe();
            }
        }
    }

    /// True when [`RawNode::ready`] has something to hand out.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        if self.handed.is_some() {
            return false;
        }
        SoftState {
            leader: raft.leader,
            role: raft.role,
        } != self.previous_soft_state
            || self.current_hard_state() != self.previous_hard_state
            || raft.log.unstable_snapshot().is_some()
            || !raft.log.unstable_entries().is_empty()
            || !raft.messages.is_empty()
            || !raft.messages_after_persist.is_empty()
            || !raft.read_states.is_empty()
            || raft.log.has_next_committed_entries()
    }

    fn current_hard_state(&self) -> HardState {
        HardState {
            term: self.raft.term,
            vote: self.raft.vote,
            commit: self.raft.log.committed(),
        }
    }

    /// Collects the work to do. Call [`RawNode::advance`] once it is done, before the
    /// next `ready`.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.handed.is_none(),
            "ready() called twice without advance()"
        );
        let raft = &mut self.raft;
        let mut ready = Ready::default();
        let mut handed = Handed::default();

        let soft_state = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        if soft_state != self.previous_soft_state {
            ready.soft_state = Some(soft_state);
            self.previous_soft_state = soft_state;
        }
        let hard_state = HardState {
            term: raft.term,
            vote: raft.vote,
            commit: raft.log.committed(),
        };
        // The term and vote this Ready makes durable, if they changed.
        let new_term_or_vote = hard_state.term != self.previous_hard_state.term
            || hard_state.vote != self.previous_hard_state.vote;
        if hard_state != self.previous_hard_state {
            #[allow(unused_mut)]
            let mut persisted = hard_state;
            if raft.config.has_bug(crate::config::PlantedBug::ForgetVote) {
                persisted.vote = self.previous_hard_state.vote;
                if persisted.term != self.previous_hard_state.term {
                    persisted.vote = crate::types::NO_NODE;
                }
            }
            ready.hard_state = Some(persisted);
            self.previous_hard_state = hard_state;
        }
        if let Some(snapshot) = raft.log.unstable_snapshot() {
            handed.snapshot_index = Some(snapshot.metadata.index);
            ready.snapshot = Some(snapshot.clone());
        }
        let unstable = raft.log.unstable_entries();
        if let Some(last) = unstable.last() {
            handed.last_entry = Some((last.index, last.term));
            ready.entries = unstable.to_vec();
            raft.log.persisting_to(last.index);
        }
        // Entries after a snapshot wait until the snapshot is installed.
        if ready.snapshot.is_none() && raft.log.has_next_committed_entries() {
            let committed = raft
                .log
                .next_committed_entries(raft.config.apply_batch_bytes_max);
            if let Some(last) = committed.last() {
                handed.last_committed = Some(last.index);
                handed.committed_payload_bytes = committed.iter().map(Entry::payload_bytes).sum();
                raft.log.applying_to(last.index);
            }
            ready.committed_entries = committed;
        }
        ready.messages = std::mem::take(&mut raft.messages);
        ready.persisted_messages = std::mem::take(&mut raft.messages_after_persist);
        if new_term_or_vote && !ready.messages.is_empty() {
            // Every message carries its sender's term; one sent before that term (and
            // the vote that won it) is durable can outlive it. A crash that loses the
            // write lets the node take the same term again with another log: a sole
            // voter becomes leader with no round trip, and its first appends would
            // reach learners in a term it then wins a second time with different
            // entries at the same indexes (log matching broken; simulator seed
            // 36320623670). So, as etcd's Ready contract says, nothing leaves before
            // the new hard state is durable.
            let mut after = std::mem::take(&mut ready.messages);
            after.append(&mut ready.persisted_messages);
            ready.persisted_messages = after;
        }
        ready.read_states = std::mem::take(&mut raft.read_states);
        self.handed = Some(handed);
        ready
    }

    /// Acknowledges the last Ready: its hard state, snapshot and entries are durable,
    /// its messages sent, its committed entries (and snapshot) applied.
    pub fn advance(&mut self) {
        let handed = self.handed.take().expect("advance() without a ready()");
        let raft = &mut self.raft;
        if let Some(index) = handed.snapshot_index {
            raft.log.stable_snapshot_to(index);
            raft.log.applied_to(index);
        }
        if let Some((index, term)) = handed.last_entry {
            raft.log.stable_to(index, term);
        }
        if let Some(index) = handed.last_committed {
            raft.log.applied_to(index);
            raft.on_applied(handed.committed_payload_bytes);
        }
        raft.on_persisted();
        raft.on_advanced();
        self.check_invariants();
    }

    /// The node's state.
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        let progress = if raft.role == Role::Leader {
            raft.tracker
                .progress
                .iter()
                .map(|(&id, progress)| {
                    (
                        id,
                        ProgressStatus {
                            matched: progress.matched,
                            next_index: progress.next_index,
                            state: progress.state,
                            is_learner: progress.is_learner,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: raft.id,
            term: raft.term,
            vote: raft.vote,
            leader: raft.leader,
            role: raft.role,
            commit: raft.log.committed(),
            applied: raft.log.applied(),
            last_index: raft.log.last_index(),
            conf_state: raft.tracker.conf_state(),
            incoming_snapshot: raft.incoming_snapshot_status(),
            progress,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The known leader, or [`crate::NO_NODE`].
    pub fn leader(&self) -> NodeId {
        self.raft.leader
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// The storage, for reading.
    pub fn storage(&self) -> &S {
        &self.raft.log.store
    }

    /// The storage, for the driver to persist a Ready and compact.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.store
    }

    /// Consumes the node and returns its storage (what survives a crash).
    pub fn into_storage(self) -> S {
        self.raft.log.store
    }

    /// The state machine, for tests and the simulator's checkers.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// Checks every invariant (debug and test builds; a no-op in release).
    pub fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.raft.check_invariants();
        }
    }
}
