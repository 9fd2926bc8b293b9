//! The values that cross the core's boundary: log entries, messages, hard state,
//! membership and snapshots.

use bytes::Bytes;

/// A node's identity inside one raft group. `0` is reserved for "no node".
pub type NodeId = u64;
/// A raft term (Raft paper §5.1). Terms only grow.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1; index 0 is the
/// empty log's sentinel.
pub type Index = u64;

/// The id meaning "no node" (no leader known, no vote cast).
pub const NO_NODE: NodeId = 0;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command (or the empty no-op a new leader appends).
    Normal,
    /// An encoded [`ConfChange`]; the driver applies it with `apply_conf_change`.
    ConfChange,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// How `data` is to be read.
    pub kind: EntryKind,
    /// The payload. An empty `Normal` entry is a leader's no-op.
    pub data: Bytes,
}

impl Entry {
    /// Bytes the entry counts for in size limits: payload plus a fixed header.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Payload bytes only; what the uncommitted-bytes limit counts.
    pub fn payload_bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Fixed per-entry overhead counted by byte limits (term, index, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// State that must be durable before any message that depends on it is sent
/// (Raft paper Figure 2, "persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// The highest index known to be committed. Persisting it is an optimisation
    /// (it lets a restarted node apply without waiting for a leader), not a safety need.
    pub commit: Index,
}

/// The membership of a group: voters, learners, and during a joint change the
/// outgoing voters (Raft thesis §4.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub voters: Vec<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration; non-empty only while joint.
    pub voters_outgoing: Vec<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: Vec<NodeId>,
    /// Leave the joint configuration automatically once it commits.
    pub auto_leave: bool,
}

impl ConfState {
    /// A configuration with the given voters and nothing else.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    /// True while a joint configuration is in force.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every node that is a voter in either half, or a learner.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .chain(&self.learners_next)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// What a snapshot stands for: the log up to `index` (whose entry has `term`) applied,
/// with membership `conf_state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMetadata {
    /// The last log index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// A state machine snapshot plus the log position it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where in the log the snapshot stands.
    pub metadata: SnapshotMetadata,
    /// The application's serialized state.
    pub data: Bytes,
}

impl Snapshot {
    /// True for the placeholder "no snapshot" value (index 0).
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// One piece of a snapshot in flight from leader to follower (InstallSnapshot,
/// Raft paper §7, sent in bounded chunks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot this chunk belongs to.
    pub metadata: SnapshotMetadata,
    /// Byte offset of `data` within the snapshot's data.
    pub offset: u64,
    /// Total length of the snapshot's data.
    pub total_bytes: u64,
    /// This chunk's bytes.
    pub data: Bytes,
}

impl SnapshotChunk {
    /// True when this chunk ends the snapshot.
    pub fn is_last(&self) -> bool {
        self.offset + self.data.len() as u64 >= self.total_bytes
    }
}

/// The kinds of message raft nodes exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// AppendEntries (Raft paper §5.3): `index`/`log_term` name the entry before
    /// `entries`, `commit` is the leader's commit index.
    Append,
    /// Reply to `Append`: `index` is the follower's last matching index on success;
    /// on rejection `reject_hint`/`log_term` help the leader skip back (§5.3 optimisation).
    AppendResponse,
    /// RequestVote (§5.2): `index`/`log_term` are the candidate's last log position.
    RequestVote,
    /// Reply to `RequestVote`.
    RequestVoteResponse,
    /// Pre-vote (Raft thesis §9.6): as `RequestVote` for `term`, without disturbing anyone.
    RequestPreVote,
    /// Reply to `RequestPreVote`.
    RequestPreVoteResponse,
    /// Leader heartbeat; carries `commit` (at most the follower's match) and an
    /// optional read-index `context`.
    Heartbeat,
    /// Reply to `Heartbeat`, echoing its `context`.
    HeartbeatResponse,
    /// One chunk of InstallSnapshot, in `snapshot`.
    Snapshot,
    /// Acknowledges snapshot bytes up to `index` (an offset) or, when `reject` is
    /// false and `log_term` is set, the whole snapshot installed at `commit`.
    SnapshotResponse,
    /// A follower asks the leader to hand leadership to the message's `from`
    /// (or to `index` when it is non-zero: the transfer target).
    TransferLeader,
    /// Leader tells the transfer target to campaign at once (thesis §3.10).
    TimeoutNow,
    /// A follower asks the leader for a read index for `context`.
    ReadIndex,
    /// The leader's answer to `ReadIndex`: `index` is the read index for `context`;
    /// `reject` is set when the leader could not serve it.
    ReadIndexResponse,
}

impl MessageKind {
    /// Responses that a node sends about its own durable state; they must wait until
    /// the Ready that produced them has been persisted.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageKind::AppendResponse
                | MessageKind::RequestVoteResponse
                | MessageKind::RequestPreVoteResponse
                | MessageKind::HeartbeatResponse
                | MessageKind::SnapshotResponse
                | MessageKind::ReadIndexResponse
        )
    }
}

/// A message between two nodes of one group. Fields not used by a kind are zero/empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What the message is.
    pub kind: MessageKind,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's term (0 for messages that carry no term).
    pub term: Term,
    /// A log term: of the entry at `index` for appends and votes, the hint term for rejections.
    pub log_term: Term,
    /// A log index; meaning depends on `kind`.
    pub index: Index,
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// A commit index.
    pub commit: Index,
    /// True when the request was refused.
    pub reject: bool,
    /// On a rejected append: the index the leader should probe next from.
    pub reject_hint: Index,
    /// Opaque context: read-index request ids, or the campaign-transfer marker.
    pub context: Bytes,
    /// A snapshot chunk, for `Snapshot` messages.
    pub snapshot: Option<Box<SnapshotChunk>>,
}

impl Message {
    /// A message of `kind` from `from` to `to` at `term`, all other fields empty.
    pub fn new(kind: MessageKind, from: NodeId, to: NodeId, term: Term) -> Self {
        Message {
            kind,
            from,
            to,
            term,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            reject: false,
            reject_hint: 0,
            context: Bytes::new(),
            snapshot: None,
        }
    }

    /// Approximate encoded size, for transport limits and simulated bandwidth.
    pub fn size_bytes(&self) -> u64 {
        let entries: u64 = self.entries.iter().map(Entry::size_bytes).sum();
        let snapshot = self
            .snapshot
            .as_ref()
            .map(|chunk| chunk.data.len() as u64 + 64)
            .unwrap_or(0);
        64 + entries + self.context.len() as u64 + snapshot
    }
}

/// A node's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes before starting a real election (thesis §9.6).
    PreCandidate,
    /// Asking for votes (§5.2).
    Candidate,
    /// Replicates the log (§5.3).
    Leader,
}

/// Volatile state a driver may want to observe: who leads and in what role we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader, or [`NO_NODE`].
    pub leader: NodeId,
    /// Our role.
    pub role: Role,
}

/// The answer to a `read_index` request: once the state machine has applied
/// `index`, a read for `context` is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time the read was confirmed.
    pub index: Index,
    /// The caller's context from `read_index`.
    pub context: Bytes,
}
