//! The raft state machine: roles, elections, replication, commitment, snapshots,
//! membership, leadership transfer and reads. It does no IO: inputs are method calls,
//! outputs are queued messages and log changes that [`crate::RawNode`] hands to the
//! driver as a `Ready`.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use crate::conf_change::ConfChange;
use crate::config::{Config, ReadOnlyOption};
use crate::errors::{Error, ProposeError, StorageError};
use crate::log::RaftLog;
use crate::progress::ProgressState;
use crate::quorum::VoteResult;
use crate::read_only::{ReadOnly, PENDING_READS_MAX};
use crate::storage::Storage;
use crate::tracker::ProgressTracker;
use crate::types::{
    ConfState, Entry, EntryKind, Index, Message, MessageKind, NodeId, ReadState, Role, Snapshot,
    SnapshotChunk, SnapshotMetadata, Term, NO_NODE,
};

use crate::config::PlantedBug;

/// Context marking a vote request as part of a leadership transfer: voters grant it
/// even while they still hear from the current leader (thesis §3.10).
pub const CAMPAIGN_TRANSFER: &[u8] = b"concord-campaign-transfer";

/// Where an accepted proposal went in the log. It is committed as proposed only if the
/// entry applied at `index` has this `term`; any other term there means it was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogPosition {
    /// The entry's index.
    pub index: Index,
    /// The leader's term when it was appended.
    pub term: Term,
}

/// Which kind of election to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// A leader's state for a snapshot being streamed to one follower in chunks.
#[derive(Clone, Debug)]
struct OutgoingSnapshot {
    snapshot: Snapshot,
    // Invariant: acked_offset <= snapshot.data.len(). Bytes the follower has confirmed.
    acked_offset: u64,
    /// The follower acknowledged new bytes since the last heartbeat answer. When it has
    /// not, the chunk in flight is presumed lost and sent again.
    progressed_since_heartbeat: bool,
}

/// A follower's partly received snapshot.
#[derive(Clone, Debug)]
struct IncomingSnapshot {
    metadata: SnapshotMetadata,
    total_bytes: u64,
    // Invariant: data.len() <= total_bytes.
    data: BytesMut,
}

/// A small deterministic generator (SplitMix64). The core owns its randomness so the
/// same inputs always give the same outputs.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The raft state machine of one node.
pub struct Raft<S: Storage> {
    /// This node.
    pub id: NodeId,
    /// Invariant: never decreases. The current term.
    pub term: Term,
    /// The node voted for in `term`, or NO_NODE.
    pub vote: NodeId,
    /// The known leader of `term`, or NO_NODE.
    // Invariant: role == Leader implies leader == id.
    pub leader: NodeId,
    /// Our role.
    pub role: Role,
    /// The log.
    pub log: RaftLog<S>,
    /// Membership, progress of every member, votes.
    pub tracker: ProgressTracker,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this round's hard state and entries are
    /// durable: every response, and vote requests (they carry our own vote).
    pub messages_after_persist: Vec<Message>,
    /// Reads confirmed and ready to hand to the driver.
    pub read_states: Vec<ReadState>,
    pub(crate) config: Config,
    rng: Rng,
    // Invariant: election_elapsed counts ticks since the last reset; for a leader,
    // since the last check-quorum round.
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    // Invariant: election_timeout_ticks <= randomized < election_timeout_end_ticks().
    randomized_election_timeout_ticks: u32,
    /// Ticks since this node started; used for the leader lease.
    now_ticks: u64,
    /// Ticks at which each voter last acknowledged a heartbeat we sent (the send time,
    /// echoed back), for the lease.
    heartbeat_ack_ticks: BTreeMap<NodeId, u64>,
    lead_transferee: NodeId,
    /// Set by [`Raft::stand_down`]: this node never seeks leadership again (it still
    /// votes and stores entries).
    stood_down: bool,
    /// The index of the latest membership change entry; no new change is accepted until
    /// it is applied.
    pending_conf_index: Index,
    /// Payload bytes appended by this leader and not yet applied.
    uncommitted_bytes: u64,
    read_only: ReadOnly,
    /// Reads that arrived before this leader committed an entry of its own term (thesis
    /// §6.4 step 1): they wait, then proceed.
    reads_awaiting_commit: Vec<(Bytes, NodeId)>,
    outgoing_snapshots: BTreeMap<NodeId, OutgoingSnapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,
    /// A complete snapshot waiting for the driver to apply the entries handed out
    /// before it arrived, with the node that sent it.
    deferred_snapshot: Option<(Snapshot, NodeId)>,
}

impl<S: Storage> Raft<S> {
    /// Builds a node from its configuration and storage, restoring hard state and
    /// membership from the storage.
    pub fn new(config: &Config, storage: S) -> Result<Self, Error> {
        config.validate()?;
        let initial = storage.initial_state()?;
        let log = RaftLog::new(storage)?;
        let mut raft = Raft {
            id: config.id,
            term: 0,
            vote: NO_NODE,
            leader: NO_NODE,
            role: Role::Follower,
            log,
            tracker: ProgressTracker::new(config.inflight_messages_max, config.inflight_bytes_max),
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            read_states: Vec::new(),
            config: config.clone(),
            rng: Rng(config.seed ^ config.id.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout_ticks: config.election_timeout_ticks,
            now_ticks: 0,
            heartbeat_ack_ticks: BTreeMap::new(),
            lead_transferee: NO_NODE,
            stood_down: false,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            read_only: ReadOnly::default(),
            reads_awaiting_commit: Vec::new(),
            outgoing_snapshots: BTreeMap::new(),
            incoming_snapshot: None,
            deferred_snapshot: None,
        };
        let next_index = raft.log.last_index() + 1;
        raft.tracker.restore(&initial.conf_state, next_index);
        let hard_state = initial.hard_state;
        if hard_state.commit > raft.log.last_index() {
            return Err(Error::Storage(StorageError::Failed(format!(
                "hard state commit {} is beyond the last log index {}",
                hard_state.commit,
                raft.log.last_index()
            ))));
        }
        if hard_state.commit > raft.log.committed() {
            raft.log.commit_to(hard_state.commit);
        }
        raft.term = hard_state.term;
        raft.vote = hard_state.vote;
        if config.applied > raft.log.committed() {
            // The contract lets a driver write a commit-only hard state lazily and
            // restart at its latest snapshot, which may be ahead of the commit index
            // on disk: a snapshot holds only committed state, so its index is
            // committed (crates/raft/README.md, step 3).
            let snapshot_index = raft.log.store.snapshot(0)?.metadata.index;
            if config.applied > snapshot_index || config.applied > raft.log.last_index() {
                return Err(Error::Config(format!(
                    "applied ({}) is beyond the commit index ({}) and the latest snapshot \
                     ({snapshot_index}) in storage",
                    config.applied,
                    raft.log.committed()
                )));
            }
            raft.log.commit_to(config.applied);
        }
        if config.applied > 0 {
            raft.log.applied_to(config.applied);
        }
        raft.become_follower(raft.term, NO_NODE);
        Ok(raft)
    }

    #[inline(always)]
    fn has_bug(&self, bug: PlantedBug) -> bool {
        self.config.has_bug(bug)
    }

    /// True when this node may campaign: it is a voter in the current configuration
    /// and has not stood down.
    pub fn promotable(&self) -> bool {
        !self.stood_down && self.tracker.is_voter(self.id)
    }

    /// This node stops seeking leadership for good (its state machine stopped, so it
    /// cannot answer as a leader must): it never campaigns again, on its election
    /// timeout or on a leader's `TimeoutNow`, and a leader steps down at once, so a
    /// working voter times out and is elected. It still votes and stores and
    /// acknowledges entries, so the group keeps its quorum.
    pub fn stand_down(&mut self) {
        self.stood_down = true;
        if self.role != Role::Follower {
            self.become_follower(self.term, NO_NODE);
        }
    }

    /// The leader transfer target, or NO_NODE.
    pub fn lead_transferee(&self) -> NodeId {
        self.lead_transferee
    }

    /// How far a snapshot being received in chunks has come, if one is.
    pub fn incoming_snapshot_status(&self) -> Option<crate::raw_node::IncomingSnapshotStatus> {
        self.incoming_snapshot
            .as_ref()
            .map(|incoming| crate::raw_node::IncomingSnapshotStatus {
                index: incoming.metadata.index,
                received_bytes: incoming.data.len() as u64,
                total_bytes: incoming.total_bytes,
            })
    }

    /// The number of pending (unconfirmed) read requests on a leader.
    pub fn pending_read_count(&self) -> usize {
        self.read_only.pending_count() + self.reads_awaiting_commit.len()
    }

    // ---------------------------------------------------------------------------------
    // Sending.

    fn send(&mut self, mut message: Message) {
        message.from = self.id;
        debug_assert_ne!(
            message.to, self.id,
            "a node never sends to itself: {message:?}"
        );
        if message.term == 0
            && !matches!(
                message.kind,
                MessageKind::ReadIndex | MessageKind::TransferLeader
            )
        {
            message.term = self.term;
        }
        // Ordering rule (Raft paper Figure 2 "respond to RPCs only after updating stable
        // storage"): responses and vote requests depend on durable state. A leader's
        // appends may go out before its own write (thesis §10.2.1), unless they carry a
        // term not yet durable (`RawNode::ready` holds them back then).
        let after_persist = message.kind.is_response() || message.kind == MessageKind::RequestVote;
        if after_persist {
            self.messages_after_persist.push(message);
        } else {
            self.messages.push(message);
        }
    }

    // ---------------------------------------------------------------------------------
    // Role changes.

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = NO_NODE;
        self.tracker.reset_votes();
        let last_index = self.log.last_index();
        let persisted = self.log.persisted();
        let id = self.id;
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        for (&node, progress) in self.tracker.progress.iter_mut() {
            let is_learner = progress.is_learner;
            *progress = crate::progress::Progress::new(last_index + 1, messages_max, bytes_max);
            progress.is_learner = is_learner;
            if node == id {
                progress.matched = persisted;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_bytes = 0;
        self.read_only = ReadOnly::default();
        self.reads_awaiting_commit.clear();
        self.heartbeat_ack_ticks.clear();
        self.outgoing_snapshots.clear();
    }

    fn reset_randomized_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        let spread = u64::from(self.config.election_timeout_end_ticks() - base);
        self.randomized_election_timeout_ticks = base + (self.rng.next_u64() % spread) as u32;
    }

    /// Becomes a follower of `leader` (or of nobody yet) in `term`.
    pub fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "a leader cannot become a pre-candidate"
        );
        // Thesis §9.6: a pre-candidate changes neither its term nor its vote.
        self.tracker.reset_votes();
        self.leader = NO_NODE;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "a leader cannot become a candidate"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_ne!(
            self.role,
            Role::Follower,
            "a follower must win an election first"
        );
        let term = self.term;
        self.reset(term);
        self.leader = self.id;
        self.role = Role::Leader;
        let persisted = self.log.persisted();
        if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
            progress.become_replicate();
            progress.matched = persisted;
            progress.next_index = self.log.last_index() + 1;
        }
        // Conservatively treat every entry of earlier leaders as possibly holding a
        // membership change not yet applied.
        self.pending_conf_index = self.log.last_index();
        // Raft paper §8 / thesis §6.4: a new leader commits a no-op of its own term,
        // which commits everything before it and lets it serve reads.
        let no_op = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.log.append(vec![no_op]);
    }

    // ---------------------------------------------------------------------------------
    // Elections.

    /// Starts an election now (the driver's `campaign`), with pre-vote if configured.
    pub fn campaign_now(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        let kind = if self.config.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    fn campaign(&mut self, kind: CampaignKind) {
        if !self.promotable() {
            // A learner or a removed node never campaigns.
            return;
        }
        if self.log.unstable_snapshot().is_some()
            || self.log.applied() < self.log.committed() && self.has_unapplied_conf_change()
        {
            // Thesis §4.1: wait until membership changes we know of are applied, so we
            // campaign in the configuration we will lead.
            return;
        }
        let (vote_kind, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageKind::RequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageKind::RequestVote, self.term)
        };
        self.tracker.record_vote(self.id, true);
        if let (_, _, VoteResult::Won) = self.tracker.tally_votes() {
            // A single voter wins at once.
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let voters: Vec<NodeId> = self.tracker.config.voters.ids().into_iter().collect();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for voter in voters {
            if voter == self.id {
                continue;
            }
            let mut request = Message::new(vote_kind, self.id, voter, term);
            request.index = last_index;
            request.log_term = last_term;
            if kind == CampaignKind::Transfer {
                request.context = Bytes::from_static(CAMPAIGN_TRANSFER);
            }
            self.send(request);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let (applied, committed) = (self.log.applied(), self.log.committed());
        if applied >= committed {
            return false;
        }
        match self.log.slice(applied + 1, committed + 1, u64::MAX) {
            Ok(entries) => entries
                .iter()
                .any(|entry| entry.kind == EntryKind::ConfChange),
            // Compacted: a snapshot is being applied; treat it as pending.
            Err(_) => true,
        }
    }

    fn poll_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.tracker.record_vote(from, granted);
        self.tracker.tally_votes().2
    }

    // ---------------------------------------------------------------------------------
    // Ticks.

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout_ticks {
            self.election_elapsed = 0;
            self.campaign_now();
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                // Thesis §6.2: a leader that has not heard from a quorum for an election
                // timeout steps down, so clients find the real leader.
                if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
                    progress.recent_active = true;
                }
                let active = self.tracker.quorum_active();
                for (&node, progress) in self.tracker.progress.iter_mut() {
                    if node != self.id {
                        progress.recent_active = false;
                    }
                }
                if !active {
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            // Its target may have won votes that ignored our lease, so the lease starts
            // over from heartbeats sent after this point.
            if self.lead_transferee != NO_NODE {
                self.lead_transferee = NO_NODE;
                self.heartbeat_ack_ticks.clear();
            }
            if !self.tracker.is_voter(self.id) {
                // The hand-off did not finish within an election timeout (its target may
                // already lead without telling us: we are not in its configuration).
                // Step down; voters still waiting on our vote learn the commit from our
                // vote rejections.
                self.become_follower(self.term, NO_NODE);
                return;
            }
        }
        if self.role != Role::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            let context = self
                .read_only
                .last_pending_context()
                .cloned()
                .unwrap_or_default();
            self.broadcast_heartbeat(context);
        }
    }

    // ---------------------------------------------------------------------------------
    // Proposals.

    /// Appends `payloads` as one batch of normal entries. Leader only.
    pub fn propose(
        &mut self,
        payloads: impl IntoIterator<Item = Bytes>,
        kind: EntryKind,
    ) -> Result<LogPosition, ProposeError> {
        if self.role != Role::Leader {
            let leader_hint = (self.leader != NO_NODE).then_some(self.leader);
            return Err(ProposeError::NotLeader { leader_hint });
        }
        if !self.tracker.is_voter(self.id) {
            // Removed from the group (or demoted), handing leadership off.
            return Err(ProposeError::NotLeader { leader_hint: None });
        }
        if self.lead_transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress {
                target: self.lead_transferee,
            });
        }
        let first_index = self.log.last_index() + 1;
        let term = self.term;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(offset, data)| Entry {
                term,
                index: first_index + offset as u64,
                kind,
                data,
            })
            .collect();
        if entries.is_empty() {
            return Err(ProposeError::EmptyBatch);
        }
        let payload_bytes: u64 = entries.iter().map(Entry::payload_bytes).sum();
        let limit = self.config.uncommitted_bytes_max;
        // Always admit one batch into an empty tail so a single large entry can progress.
        if limit > 0 && self.uncommitted_bytes > 0 && self.uncommitted_bytes + payload_bytes > limit
        {
            return Err(ProposeError::UncommittedBytesExceeded { limit_bytes: limit });
        }
        self.uncommitted_bytes += payload_bytes;
        if kind == EntryKind::ConfChange {
            self.pending_conf_index = entries.last().map(|entry| entry.index).unwrap_or(0);
        }
        self.log.append(entries);
        self.broadcast_append();
        Ok(LogPosition {
            index: first_index,
            term,
        })
    }

    /// Proposes a membership change after checking it against the current config.
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<LogPosition, ProposeError> {
        if self.role == Role::Leader {
            if self.pending_conf_index > self.log.applied() {
                return Err(ProposeError::ConfChangePending {
                    pending_index: self.pending_conf_index,
                });
            }
            // Validate against a scratch copy of the tracker.
            let mut scratch = self.tracker.clone();
            scratch
                .apply_conf_change(change, self.log.last_index() + 1)
                .map_err(ProposeError::InvalidConfChange)?;
        }
        self.propose(std::iter::once(change.encode()), EntryKind::ConfChange)
    }

    /// Applies a committed membership change (the driver calls this when it applies
    /// a `ConfChange` entry). An invalid change is ignored by every node alike.
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState, String> {
        let next_index = self.log.last_index() + 1;
        let conf_state = self.tracker.apply_conf_change(change, next_index)?;
        if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.promotable() {
            // Removed (or demoted) while campaigning: stop; votes already won must not
            // make a non-voter leader.
            self.become_follower(self.term, NO_NODE);
        }
        if self.role == Role::Leader {
            if !self.tracker.is_voter(self.id) {
                // Removed or demoted. Thesis §4.2.2: the old leader manages the group until
                // the change commits (it has: we apply it). Stepping down at once could
                // strand a voter that has not heard the commit yet in a configuration
                // that still needs our vote; instead hand leadership to the most
                // caught-up voter, who hears everything from us first.
                self.hand_off_leadership();
                return Ok(conf_state);
            }
            if self.lead_transferee != NO_NODE && !self.tracker.is_voter(self.lead_transferee) {
                self.lead_transferee = NO_NODE;
            }
            // Thesis §4.3: a joint configuration with auto-leave is left as soon as it
            // is applied, by the leader proposing the empty change.
            if conf_state.is_joint() && conf_state.auto_leave {
                let leave = ConfChange::leave_joint();
                let _ = self.propose(std::iter::once(leave.encode()), EntryKind::ConfChange);
            }
            if self.maybe_commit() {
                self.broadcast_commit();
            } else {
                self.broadcast_append_if_not_paused();
            }
        }
        Ok(conf_state)
    }

    // ---------------------------------------------------------------------------------
    // Replication (leader side).

    /// Every member but us, in id order.
    fn peer_ids(&self) -> Vec<NodeId> {
        let id = self.id;
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&node| node != id)
            .collect()
    }

    fn broadcast_append(&mut self) {
        for id in self.peer_ids() {
            self.maybe_send_append(id, true);
        }
    }

    /// Tells followers a new commit index. A follower with appends in flight learns it
    /// from the next append or heartbeat; one with nothing in flight gets an append now
    /// (empty if it is up to date), so an idle group applies without waiting for a
    /// heartbeat. Under load this sends nothing extra.
    fn broadcast_commit(&mut self) {
        for id in self.peer_ids() {
            self.maybe_send_commit(id);
        }
    }

    /// Sends `to` what it has not got: entries if any, else — when nothing is in
    /// flight to carry it — the commit index it has not been told.
    fn maybe_send_commit(&mut self, to: NodeId) {
        let Some(progress) = self.tracker.progress.get(&to) else {
            return;
        };
        let needs_commit =
            progress.inflights.count() == 0 && progress.commit_sent < self.log.committed();
        self.maybe_send_append(to, needs_commit);
    }

    fn broadcast_append_if_not_paused(&mut self) {
        for id in self.peer_ids() {
            self.maybe_send_append(id, false);
        }
    }

    /// Sends entries (or a snapshot) to `to` if its progress allows. With
    /// `send_if_empty`, an empty append still goes out to carry the commit index.
    /// Returns true if a message was sent.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.tracker.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let next_index = progress.next_index;
        let previous_index = next_index - 1;
        let previous_term = self.log.term(previous_index);
        let entries = if next_index <= self.log.last_index() {
            self.log.entries(next_index, self.config.append_bytes_max)
        } else {
            Ok(Vec::new())
        };
        let (previous_term, entries) = match (previous_term, entries) {
            (Ok(term), Ok(entries)) => (term, entries),
            (Err(StorageError::Failed(why)), _) | (_, Err(StorageError::Failed(why))) => {
                panic!("storage failed while reading entries for node {to}: {why}")
            }
            _ => return self.maybe_send_snapshot(to),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let count = entries.len();
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_index = entries
            .last()
            .map(|entry| entry.index)
            .unwrap_or(previous_index);
        let mut append = Message::new(MessageKind::Append, self.id, to, self.term);
        append.index = previous_index;
        append.log_term = previous_term;
        append.entries = entries;
        append.commit = self.log.committed();
        if let Some(progress) = self.tracker.progress.get_mut(&to) {
            progress.sent_entries(last_index, count, bytes);
            progress.commit_sent = progress.commit_sent.max(append.commit.min(last_index));
        }
        self.send(append);
        true
    }

    /// Starts streaming a snapshot to `to` (Raft paper §7). Returns true if sent.
    fn maybe_send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(progress) = self.tracker.progress.get(&to) else {
            return false;
        };
        if !progress.recent_active {
            // Do not build and push a snapshot to a node we have not heard from.
            return false;
        }
        let snapshot = match self.log.snapshot(progress.next_index) {
            Ok(snapshot) => snapshot,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(error) => {
                panic!("storage failed while reading the snapshot for node {to}: {error}")
            }
        };
        assert!(
            !snapshot.is_empty(),
            "the log is compacted but the storage has no snapshot"
        );
        let index = snapshot.metadata.index;
        if let Some(progress) = self.tracker.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        self.outgoing_snapshots.insert(
            to,
            OutgoingSnapshot {
                snapshot,
                acked_offset: 0,
                progressed_since_heartbeat: true,
            },
        );
        self.send_snapshot_chunk(to);
        true
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(outgoing) = self.outgoing_snapshots.get(&to) else {
            return;
        };
        let total = outgoing.snapshot.data.len() as u64;
        let start = outgoing.acked_offset.min(total);
        let end = (start + self.config.snapshot_chunk_bytes_max).min(total);
        let chunk = SnapshotChunk {
            metadata: outgoing.snapshot.metadata.clone(),
            offset: start,
            total_bytes: total,
            data: outgoing.snapshot.data.slice(start as usize..end as usize),
        };
        let mut message = Message::new(MessageKind::Snapshot, self.id, to, self.term);
        message.snapshot = Some(Box::new(chunk));
        self.send(message);
    }

    fn broadcast_heartbeat(&mut self, context: Bytes) {
        for id in self.peer_ids() {
            let matched = self.tracker.progress[&id].matched;
            let mut heartbeat = Message::new(MessageKind::Heartbeat, self.id, id, self.term);
            // Never tell a follower to commit past what it is known to have: it may not
            // have those entries yet.
            heartbeat.commit = matched.min(self.log.committed());
            if let Some(progress) = self.tracker.progress.get_mut(&id) {
                progress.commit_sent = progress.commit_sent.max(heartbeat.commit);
            }
            // Our clock at sending, echoed back, so the lease starts no later than this.
            heartbeat.index = self.now_ticks;
            heartbeat.context = context.clone();
            self.send(heartbeat);
        }
    }

    /// Commits the highest index a quorum has matched, if it is of our term.
    fn maybe_commit(&mut self) -> bool {
        let quorum_index = self.tracker.committed();
        if quorum_index <= self.log.committed() || quorum_index == Index::MAX {
            return false;
        }
        if self.has_bug(PlantedBug::CommitOldTermByCount) {
            let last = quorum_index.min(self.log.last_index());
            self.log.commit_to(last);
            self.release_reads_awaiting_commit();
            return true;
        }
        // Raft paper §5.4.2: only an entry of the current term is committed by counting
        // replicas; earlier entries commit with it.
        let committed = self.log.maybe_commit(quorum_index, self.term);
        if committed {
            self.release_reads_awaiting_commit();
        }
        committed
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.log
            .term(self.log.committed())
            .map(|term| term == self.term)
            .unwrap_or(false)
    }

    /// Called after the driver persisted entries: the leader counts its own copy.
    pub fn on_persisted(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted();
        let updated = match self.tracker.progress.get_mut(&self.id) {
            Some(progress) => progress.maybe_update(persisted),
            None => false,
        };
        if updated && self.maybe_commit() {
            self.broadcast_commit();
        }
    }

    /// Reduces the uncommitted byte count once entries are applied.
    pub fn on_applied(&mut self, applied_payload_bytes: u64) {
        if self.role == Role::Leader {
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(applied_payload_bytes);
        }
    }

    // ---------------------------------------------------------------------------------
    // Leadership transfer.

    /// Starts handing leadership to `target` (thesis §3.10); forwarded to the leader
    /// when called on a follower.
    pub fn transfer_leader(&mut self, target: NodeId) {
        if self.role == Role::Leader {
            self.handle_transfer_leader(target);
        } else if self.leader != NO_NODE {
            let mut request = Message::new(MessageKind::TransferLeader, self.id, self.leader, 0);
            request.index = target;
            self.send(request);
        }
    }

    /// A leader that is no longer a voter transfers leadership to the voter with the
    /// longest matched log, or steps down if there is none.
    fn hand_off_leadership(&mut self) {
        let id = self.id;
        let target = self
            .tracker
            .progress
            .iter()
            .filter(|(&node, progress)| {
                node != id && !progress.is_learner && self.tracker.is_voter(node)
            })
            .max_by_key(|(&node, progress)| (progress.matched, std::cmp::Reverse(node)))
            .map(|(&node, _)| node);
        match target {
            Some(target) => self.handle_transfer_leader(target),
            None => self.become_follower(self.term, NO_NODE),
        }
    }

    fn handle_transfer_leader(&mut self, target: NodeId) {
        let Some(progress) = self.tracker.progress.get(&target) else {
            return;
        };
        if progress.is_learner || target == self.id || !self.tracker.is_voter(target) {
            return;
        }
        if self.lead_transferee == target {
            return;
        }
        let matched = progress.matched;
        // The transfer must finish within an election timeout, or it is abandoned.
        self.election_elapsed = 0;
        self.lead_transferee = target;
        if matched == self.log.last_index() {
            self.send_timeout_now(target);
        } else {
            self.maybe_send_append(target, true);
        }
    }

    /// Thesis §3.10: the target holds our whole log; tell it to campaign now. A leader
    /// that is no longer a voter has nothing left to do and steps down.
    fn send_timeout_now(&mut self, target: NodeId) {
        self.send(Message::new(
            MessageKind::TimeoutNow,
            self.id,
            target,
            self.term,
        ));
        if !self.tracker.is_voter(self.id) {
            self.become_follower(self.term, NO_NODE);
        }
    }

    // ---------------------------------------------------------------------------------
    // Reads.

    /// Requests a linearizable read point for `context` (thesis §6.4). The answer comes
    /// back as a [`ReadState`] in a later Ready.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader if !self.tracker.is_voter(self.id) => {
                Err(ProposeError::NotLeader { leader_hint: None })
            }
            Role::Leader => {
                if self.pending_read_count() >= PENDING_READS_MAX {
                    return Err(self.too_many_reads());
                }
                self.handle_read_index(context, self.id);
                Ok(())
            }
            _ if self.leader != NO_NODE => {
                let mut request = Message::new(MessageKind::ReadIndex, self.id, self.leader, 0);
                request.context = context;
                self.send(request);
                Ok(())
            }
            _ => Err(ProposeError::NotLeader { leader_hint: None }),
        }
    }

    fn too_many_reads(&self) -> ProposeError {
        ProposeError::TooManyPendingReads {
            limit: PENDING_READS_MAX,
        }
    }

    fn handle_read_index(&mut self, context: Bytes, from: NodeId) {
        if !self.tracker.is_voter(self.id) {
            // Removed and handing leadership off: another node may already lead. Refuse
            // (a follower's request gets a rejection; our own caller was refused earlier).
            if from != self.id {
                let mut response =
                    Message::new(MessageKind::ReadIndexResponse, self.id, from, self.term);
                response.reject = true;
                response.context = context;
                self.send(response);
            }
            return;
        }
        if !self.committed_entry_in_current_term() {
            // Thesis §6.4 step 1: the commit index is only known once an entry of this
            // term has committed.
            self.reads_awaiting_commit.push((context, from));
            return;
        }
        let index = self.log.committed();
        if self.tracker.is_singleton() && self.tracker.is_voter(self.id) {
            // We are the only voter: our commit index is the group's.
            self.respond_to_read(index, context, from);
            return;
        }
        if self.config.read_only == ReadOnlyOption::LeaseBased
            && self.lead_transferee == NO_NODE
            && (self.lease_valid() || self.has_bug(PlantedBug::LeaseReadWithoutCheckQuorum))
        {
            self.respond_to_read(index, context, from);
            return;
        }
        if self.read_only.add_request(index, context.clone(), from) {
            let id = self.id;
            self.read_only.receive_ack(id, &context);
            self.broadcast_heartbeat(context);
        }
    }

    /// Thesis §6.4.1: the lease holds for an election timeout from the time the latest
    /// heartbeat acknowledged by a quorum was sent; no voter in that quorum grants a
    /// vote to anyone else before then.
    fn lease_valid(&self) -> bool {
        let now = self.now_ticks;
        let id = self.id;
        let quorum_ack_tick = self.tracker.config.voters.committed_index(|node| {
            if node == id {
                Some(now)
            } else {
                self.heartbeat_ack_ticks.get(&node).copied()
            }
        });
        quorum_ack_tick != Index::MAX
            && quorum_ack_tick > 0
            && now < quorum_ack_tick + self.config.election_timeout_ticks as u64
    }

    fn respond_to_read(&mut self, index: Index, context: Bytes, from: NodeId) {
        if from == self.id || from == NO_NODE {
            self.read_states.push(ReadState { index, context });
        } else {
            let mut response =
                Message::new(MessageKind::ReadIndexResponse, self.id, from, self.term);
            response.index = index;
            response.context = context;
            self.send(response);
        }
    }

    fn release_reads_awaiting_commit(&mut self) {
        if self.reads_awaiting_commit.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        for (context, from) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.handle_read_index(context, from);
        }
    }

    // ---------------------------------------------------------------------------------
    // Stepping messages.

    /// Handles one message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        if message.to != self.id || message.from == self.id || message.from == NO_NODE {
            // Misrouted; drop it.
            return Ok(());
        }
        if message.term == 0 {
            // Forwarded requests carry no term.
        } else if message.term > self.term {
            let is_vote_request = matches!(
                message.kind,
                MessageKind::RequestVote | MessageKind::RequestPreVote
            );
            if is_vote_request {
                let force = message.context.as_ref() == CAMPAIGN_TRANSFER;
                // Under lease reads, a node that restarted may have acknowledged a
                // leader's heartbeat just before it crashed: it keeps that promise for
                // one election timeout after starting.
                let just_started = self.config.read_only == ReadOnlyOption::LeaseBased
                    && self.term > crate::storage::BOOTSTRAP_TERM
                    && self.now_ticks < self.config.election_timeout_ticks as u64;
                let in_lease = self.config.check_quorum
                    && (self.leader != NO_NODE || just_started)
                    && self.election_elapsed < self.config.election_timeout_ticks;
                if !force && in_lease {
                    // Thesis §4.2.3: while we hear from a leader, ignore vote requests,
                    // so a removed or partitioned node cannot disrupt the group.
                    return Ok(());
                }
            }
            match message.kind {
                MessageKind::RequestPreVote => {}
                MessageKind::RequestPreVoteResponse if !message.reject => {}
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(message.term, message.from);
                }
                _ => self.become_follower(message.term, NO_NODE),
            }
        } else if message.term < self.term {
            if matches!(message.kind, MessageKind::Heartbeat | MessageKind::Append) {
                // Raft paper Figure 2: every reply carries the current term, so a stale
                // leader (cut off and rejoining, or left leading a configuration that
                // moved on) learns it and steps down. Without this it could lead a group
                // whose other voters ignore it forever.
                let response = Message::new(
                    MessageKind::AppendResponse,
                    self.id,
                    message.from,
                    self.term,
                );
                self.send(response);
            } else if matches!(
                message.kind,
                MessageKind::RequestVote | MessageKind::RequestPreVote
            ) {
                // Raft paper Figure 2, RequestVote: "reply false if term < currentTerm",
                // and the reply carries our term. A candidate whose term fell behind
                // learns it here; without the reply it could campaign forever below a
                // voter that never sends it anything — one that still runs an older
                // configuration without the candidate in it, so its own elections
                // never reach the candidate either.
                self.reject_vote(&message);
            }
            return Ok(());
        }

        if matches!(
            message.kind,
            MessageKind::RequestVoteResponse | MessageKind::RequestPreVoteResponse
        ) {
            self.maybe_learn_commit(&message);
        }
        match message.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                self.handle_vote_request(message);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    fn handle_vote_request(&mut self, request: Message) {
        let pre_vote = request.kind == MessageKind::RequestPreVote;
        // Raft paper §5.2: one vote per term, first come first served; pre-votes for a
        // later term are granted without changing anything (thesis §9.6).
        let can_vote = self.vote == request.from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && request.term > self.term);
        let up_to_date = self.log.is_up_to_date(request.index, request.log_term)
            || self.has_bug(PlantedBug::VoteWithoutLogCheck);
        let response_kind = if pre_vote {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        if can_vote && up_to_date {
            // A granted pre-vote answers in the candidate's future term so the
            // pre-candidate counts it; a granted vote is in our (now equal) term.
            let term = if pre_vote { request.term } else { self.term };
            let response = Message::new(response_kind, self.id, request.from, term);
            self.send(response);
            if !pre_vote {
                self.election_elapsed = 0;
                self.vote = request.from;
            }
        } else {
            self.reject_vote(&request);
        }
    }

    /// Refuses a vote or pre-vote request, in our term.
    fn reject_vote(&mut self, request: &Message) {
        let response_kind = if request.kind == MessageKind::RequestPreVote {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        let mut response = Message::new(response_kind, self.id, request.from, self.term);
        response.reject = true;
        // Tell the candidate what we know is committed (with that entry's term), so a
        // candidate stuck in an old configuration can learn that a newer one has
        // committed — e.g. when the leader that removed itself left before everyone
        // heard the commit.
        let committed = self.log.committed();
        if let Ok(term) = self.log.term(committed) {
            response.commit = committed;
            response.log_term = term;
        }
        self.send(response);
    }

    /// Learns a commit index from a vote rejection. Safe because a commit index is a
    /// fact about the log: if our entry at `commit` has the same term as the sender's,
    /// our logs are identical up to it (Raft paper §5.3, Log Matching), so everything
    /// up to it is committed here too.
    fn maybe_learn_commit(&mut self, response: &Message) {
        if response.reject
            && response.commit > self.log.committed()
            && self.log.match_term(response.commit, response.log_term)
        {
            self.log.commit_to(response.commit);
        }
    }

    fn step_leader(&mut self, message: Message) -> Result<(), Error> {
        let from = message.from;
        match message.kind {
            MessageKind::TransferLeader => {
                let target = if message.index != NO_NODE {
                    message.index
                } else {
                    from
                };
                self.handle_transfer_leader(target);
                return Ok(());
            }
            MessageKind::ReadIndex => {
                if !self.tracker.progress.contains_key(&from) {
                    return Ok(());
                }
                if self.pending_read_count() >= PENDING_READS_MAX {
                    let mut response =
                        Message::new(MessageKind::ReadIndexResponse, self.id, from, self.term);
                    response.reject = true;
                    response.context = message.context;
                    self.send(response);
                    return Ok(());
                }
                self.handle_read_index(message.context, from);
                return Ok(());
            }
            _ => {}
        }
        if !self.tracker.progress.contains_key(&from) {
            // Not a member (removed, or not yet added): ignore.
            return Ok(());
        }
        match message.kind {
            MessageKind::AppendResponse => self.handle_append_response(message),
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(message),
            MessageKind::SnapshotResponse => self.handle_snapshot_response(message),
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(&mut self, response: Message) {
        let from = response.from;
        let last_index = self.log.last_index();
        let progress = self
            .tracker
            .progress
            .get_mut(&from)
            .expect("checked by caller");
        progress.recent_active = true;
        if response.reject {
            // Raft paper §5.3 with the optimisation at its end: the follower's hint
            // (`reject_hint`, `log_term`) lets us skip a whole term of conflicts at once.
            let mut next_probe = response.reject_hint;
            if response.log_term > 0 {
                next_probe = self
                    .log
                    .find_conflict_by_term(response.reject_hint, response.log_term)
                    .0;
            }
            let progress = self.tracker.progress.get_mut(&from).expect("checked");
            if progress.maybe_decrease_to(response.index, next_probe) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        if !progress.maybe_update(response.index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot if progress.matched >= progress.pending_snapshot => {
                // The snapshot is installed: resume appending after it.
                progress.become_probe();
                progress.become_replicate();
                self.outgoing_snapshots.remove(&from);
            }
            _ => {}
        }
        let matched = self.tracker.progress[&from].matched;
        if self.maybe_commit() {
            self.broadcast_commit();
        }
        // Keep the pipeline full; with nothing left in flight, make sure the follower
        // knows the commit index (it may have missed one while its appends were out).
        while self.maybe_send_append(from, false) {}
        self.maybe_send_commit(from);
        if from == self.lead_transferee && matched == last_index {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, response: Message) {
        let from = response.from;
        let progress = self
            .tracker
            .progress
            .get_mut(&from)
            .expect("checked by caller");
        progress.recent_active = true;
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.full() {
            // The follower is alive but the window is full: appends may have been
            // lost. Free one slot so the next append can provoke a reply.
            progress.inflights.free_first_one();
        }
        let behind = progress.matched < self.log.last_index();
        let in_snapshot = progress.state == ProgressState::Snapshot;
        let acked_tick = self.heartbeat_ack_ticks.entry(from).or_insert(0);
        *acked_tick = (*acked_tick).max(response.index);
        if in_snapshot {
            // Stop-and-wait: resend the chunk the follower is waiting for only if no
            // acknowledgement came since the last heartbeat (it was lost).
            let stalled = match self.outgoing_snapshots.get_mut(&from) {
                Some(outgoing) => {
                    !std::mem::replace(&mut outgoing.progressed_since_heartbeat, false)
                }
                None => false,
            };
            if stalled {
                self.send_snapshot_chunk(from);
            }
        } else if behind {
            // Send even if empty: the appends in flight may all have been lost, and an
            // empty append at next_index - 1 provokes the rejection that repairs it.
            self.maybe_send_append(from, true);
        }
        if response.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.receive_ack(from, &response.context) else {
            return;
        };
        if !self.tracker.quorum_reached(acks) {
            return;
        }
        for read in self.read_only.advance(&response.context) {
            self.respond_to_read(read.index, read.context, read.from);
        }
    }

    fn handle_snapshot_response(&mut self, response: Message) {
        let from = response.from;
        if let Some(progress) = self.tracker.progress.get_mut(&from) {
            progress.recent_active = true;
        }
        let Some(outgoing) = self.outgoing_snapshots.get_mut(&from) else {
            return;
        };
        // `index` is the number of bytes the follower holds of this snapshot. An
        // acknowledgement counts only if it moves forward, so duplicated or stale
        // answers never start a second chain of chunks. A refusal reports where the
        // follower really is (it got a chunk out of place, or lost its partial copy):
        // resume from there, even backwards — unless that is where we already are.
        let offset = response.index.min(outgoing.snapshot.data.len() as u64);
        let resume = if response.reject {
            offset != outgoing.acked_offset
        } else {
            offset > outgoing.acked_offset
        };
        if resume {
            outgoing.acked_offset = offset;
            outgoing.progressed_since_heartbeat = true;
            self.send_snapshot_chunk(from);
        }
    }

    fn step_candidate(&mut self, message: Message) -> Result<(), Error> {
        let expected = if self.role == Role::PreCandidate {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        match message.kind {
            MessageKind::Append => {
                self.become_follower(message.term, message.from);
                self.handle_append(message);
            }
            MessageKind::Heartbeat => {
                self.become_follower(message.term, message.from);
                self.handle_heartbeat(message);
            }
            MessageKind::Snapshot => {
                self.become_follower(message.term, message.from);
                self.handle_snapshot(message);
            }
            kind if kind == expected => match self.poll_vote(message.from, !message.reject) {
                VoteResult::Won if !self.promotable() => {
                    self.become_follower(self.term, NO_NODE);
                }
                VoteResult::Won => {
                    if self.role == Role::PreCandidate {
                        self.campaign(CampaignKind::Election);
                    } else {
                        self.become_leader();
                        self.broadcast_append();
                    }
                }
                VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                VoteResult::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, message: Message) -> Result<(), Error> {
        match message.kind {
            MessageKind::Append => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_append(message);
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_heartbeat(message);
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_snapshot(message);
            }
            MessageKind::TransferLeader if self.leader != NO_NODE => {
                let mut forward = message;
                if forward.index == NO_NODE {
                    forward.index = forward.from;
                }
                forward.to = self.leader;
                self.send(forward);
            }
            MessageKind::TimeoutNow => {
                // Thesis §3.10: campaign at once, skipping pre-vote, even in a lease.
                self.campaign(CampaignKind::Transfer);
            }
            // A ReadIndex sent to us by a node that thought we led is dropped: passing it
            // on would route the answer to us. The requester retries at the leader.
            MessageKind::ReadIndexResponse if !message.reject => {
                self.read_states.push(ReadState {
                    index: message.index,
                    context: message.context,
                });
            }
            _ => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Replication (follower side).

    fn handle_append(&mut self, append: Message) {
        let committed = self.log.committed();
        if append.index < committed {
            // Everything up to our commit index matches the leader's log already.
            let mut response =
                Message::new(MessageKind::AppendResponse, self.id, append.from, self.term);
            response.index = committed;
            self.send(response);
            return;
        }
        let (from, index, log_term) = (append.from, append.index, append.log_term);
        match self
            .log
            .maybe_append(index, log_term, append.commit, append.entries)
        {
            Some(last_new_index) => {
                let mut response =
                    Message::new(MessageKind::AppendResponse, self.id, from, self.term);
                response.index = last_new_index;
                self.send(response);
            }
            None => {
                // Raft paper §5.3: reject, and hint the largest index whose term is at
                // most the leader's term at `index`, so the leader can skip back a term
                // at a time rather than an entry at a time.
                let hint_index = index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(hint_index, log_term);
                let mut response =
                    Message::new(MessageKind::AppendResponse, self.id, from, self.term);
                response.index = index;
                response.reject = true;
                response.reject_hint = hint_index;
                response.log_term = hint_term;
                self.send(response);
            }
        }
    }

    fn handle_heartbeat(&mut self, heartbeat: Message) {
        if heartbeat.commit > self.log.committed() {
            self.log
                .commit_to(heartbeat.commit.min(self.log.last_index()));
        }
        let mut response = Message::new(
            MessageKind::HeartbeatResponse,
            self.id,
            heartbeat.from,
            self.term,
        );
        response.index = heartbeat.index;
        response.context = heartbeat.context;
        self.send(response);
    }

    fn handle_snapshot(&mut self, message: Message) {
        let from = message.from;
        let Some(chunk) = message.snapshot else {
            return;
        };
        let chunk = *chunk;
        let metadata = chunk.metadata.clone();
        if metadata.index <= self.log.committed() {
            // Already have everything it covers.
            self.incoming_snapshot = None;
            let mut response = Message::new(MessageKind::AppendResponse, self.id, from, self.term);
            response.index = self.log.committed();
            self.send(response);
            return;
        }
        let same_snapshot = self.incoming_snapshot.as_ref().is_some_and(|incoming| {
            incoming.metadata.index == metadata.index && incoming.metadata.term == metadata.term
        });
        if chunk.offset == 0 && !same_snapshot {
            self.incoming_snapshot = Some(IncomingSnapshot {
                metadata: metadata.clone(),
                total_bytes: chunk.total_bytes,
                data: BytesMut::with_capacity(chunk.total_bytes.min(64 << 20) as usize),
            });
        } else if !same_snapshot {
            // A chunk of a snapshot we are not assembling: ask for it from the start.
            let mut response =
                Message::new(MessageKind::SnapshotResponse, self.id, from, self.term);
            response.index = 0;
            response.reject = true;
            self.send(response);
            return;
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        if chunk.offset != incoming.data.len() as u64 {
            // Out of order or duplicate (a copy of the same snapshot is never restarted):
            // refuse it and say how many bytes we hold, so the leader resumes there.
            let mut response =
                Message::new(MessageKind::SnapshotResponse, self.id, from, self.term);
            response.index = incoming.data.len() as u64;
            response.reject = true;
            self.send(response);
            return;
        }
        incoming.data.extend_from_slice(&chunk.data);
        if (incoming.data.len() as u64) < incoming.total_bytes {
            let mut response =
                Message::new(MessageKind::SnapshotResponse, self.id, from, self.term);
            response.index = incoming.data.len() as u64;
            self.send(response);
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        let snapshot = Snapshot {
            metadata: incoming.metadata,
            data: incoming.data.freeze(),
        };
        if self.log.applying() > self.log.applied() {
            // Committed entries are out with the driver, not yet applied. Installing now
            // would move membership past changes the driver is about to apply against
            // it; install once `advance` confirms they are applied.
            self.deferred_snapshot = Some((snapshot, from));
            return;
        }
        self.install_snapshot(snapshot, from);
    }

    /// Restores a complete snapshot from `from` and tells it how far our log now goes.
    fn install_snapshot(&mut self, snapshot: Snapshot, from: NodeId) {
        let mut response = Message::new(MessageKind::AppendResponse, self.id, from, self.term);
        response.index = if self.restore(snapshot) {
            self.log.last_index()
        } else {
            self.log.committed()
        };
        self.send(response);
    }

    /// Called after the driver acknowledged a Ready: installs a snapshot that waited for
    /// the entries handed out before it to be applied.
    pub fn on_advanced(&mut self) {
        if self.log.applying() > self.log.applied() {
            return;
        }
        if let Some((snapshot, from)) = self.deferred_snapshot.take() {
            self.install_snapshot(snapshot, from);
        }
    }

    /// Installs a snapshot from the leader (Raft paper §7). Returns false if it is not
    /// newer than what we have.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let metadata = &snapshot.metadata;
        if metadata.index <= self.log.committed() {
            return false;
        }
        // The snapshot's configuration may not include us yet: a node being added is
        // sent the latest snapshot, which can predate the change that adds it; it then
        // replays that change from the log like everyone else.
        if self.log.match_term(metadata.index, metadata.term) {
            // We already have the entry: just commit up to it.
            self.log.commit_to(metadata.index);
            return false;
        }
        let conf_state = metadata.conf_state.clone();
        self.log.restore(snapshot);
        self.tracker.restore(&conf_state, self.log.last_index() + 1);
        true
    }

    // ---------------------------------------------------------------------------------
    // Invariants.

    /// Checks the node's invariants, panicking with the state on a breach.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        self.tracker.check_invariants();
        if self.role == Role::Leader {
            assert_eq!(
                self.leader, self.id,
                "node {}: a leader must name itself leader",
                self.id
            );
            // A leader is a voter, or it was removed and is handing leadership off.
            assert!(
                self.tracker.is_voter(self.id) || self.lead_transferee != NO_NODE,
                "node {}: a leader that is not a voter must be handing off leadership",
                self.id
            );
        }
        if self.role == Role::Candidate {
            assert_eq!(
                self.vote, self.id,
                "node {}: a candidate votes for itself",
                self.id
            );
        }
        assert!(
            self.randomized_election_timeout_ticks >= self.config.election_timeout_ticks
                && self.randomized_election_timeout_ticks
                    < self.config.election_timeout_end_ticks(),
            "node {}: randomized election timeout {} out of range",
            self.id,
            self.randomized_election_timeout_ticks
        );
    }
}

#[cfg(test)]
#[path = "raft_tests.rs"]
mod tests;
