//! The smallest driver: bring a transport ([`Cluster`]) and a state machine
//! ([`StateMachine`]), call [`Replica::start`] on a thread of its own, and the replica
//! runs the [driver contract](crate#the-driver-contract) over a [`RawNode`] and a
//! [`MemStorage`].
//!
//! It is the one place in the crate that reads a real clock and blocks: the core counts
//! time in ticks, and the replica ticks it at a quarter of `heartbeat_timeout` or a
//! sixteenth of the election timeout range's width, whichever is shorter
//! ([`HEARTBEAT_INTERVAL_TICKS_MIN`], [`ELECTION_TIMEOUT_SPREAD_TICKS_MIN`]), and not
//! below [`TICK_DURATION_MIN`].
//!
//! # Elections
//!
//! Each election timeout is drawn from `election_timeout_range`, both ends included to
//! the tick (the lower end rounded up, the upper one down). The draws come from a
//! generator seeded from the operating system's randomness, so replicas started
//! together draw different timeouts on every run; [`ReplicaOptions::seed`] fixes the
//! seed for a reproducible run.
//!
//! A replica does not wait a whole timeout before its first election: with pre-vote
//! and check-quorum on (the core's defaults) its first timeout is drawn from
//! `(0, max − min]` (to the tick), as if its timer had started `min` before the replica
//! did. A
//! replica joining a group that has a leader cannot disturb it this way: its pre-vote
//! is refused by every voter that hears from the leader. With either switch off, the
//! first timeout is a whole one.
//!
//! # What the replica does
//!
//! One loop, until [`Cluster::halt`] returns true:
//!
//! 1. Wait until the `recv_msg` channel is notified or the next tick is due.
//! 2. Tick on schedule. Take messages from the cluster when notified, and on every tick
//!    as a fallback (a notification may be lost). Take pending transitions from the
//!    state machine when `recv_transition` was notified (so a transition waits at most
//!    one tick): a leader proposes them as one batch and registers each
//!    [`TransitionState::Queued`]; any other replica registers
//!    `Abandoned(NotLeader)` and drops them.
//! 3. Run every `Ready`: persist it into the [`MemStorage`], send its messages, install
//!    a received snapshot with [`StateMachine::set_snapshot`], apply committed entries
//!    (registering `Committed`, then `apply_transition`, then `Applied`), tell the
//!    cluster of a leader change with [`Cluster::register_leader`], advance.
//! 4. Every [`ReplicaOptions::snapshot_interval_entries`] applied entries, ask the
//!    state machine for a snapshot ([`StateMachine::create_snapshot`]), store it and
//!    compact the log. A follower that needs compacted entries is sent that snapshot
//!    by the core, in chunks of at most `snapshot_chunk_bytes_max` bytes.
//!
//! # What happens to a transition
//!
//! Every replica registers `Committed` then `Applied` for each transition it applies,
//! whoever proposed it. The replica that proposed a transition also tracks it by its
//! log position (index and term, [`LogPosition`]) until its fate is known, even if it
//! loses leadership meanwhile:
//!
//! - the entry applied at that index has the proposal's term: it is the proposal,
//!   reported `Committed` and `Applied` like any other;
//! - that entry has another term, or an entry of a later term is applied at a lower
//!   index (a new leader's first entry, typically): the proposal can never commit
//!   (Raft paper §5.3: one committed entry per index, and terms never decrease along
//!   the log) and is reported `Abandoned(ConflictWithLeader)`. It is safe to submit
//!   again.
//! - the replica installs a snapshot covering that index first: the proposal is
//!   reported `Applied` when the snapshot must include it, `ConflictWithLeader` when it
//!   cannot, and otherwise [`TransitionAbandonedReason::OutcomeUnknown`].
//!
//! Refused proposals are reported at once: `Abandoned(NotLeader)` or
//! `Abandoned(Refused(..))`. Neither was appended; both are safe to submit again.
//!
//! # Entries and the leader's no-op
//!
//! Each transition is stored as a one-byte tag followed by
//! [`StateMachineTransition::encode`]. A new leader's no-op is an empty entry (Raft
//! thesis §6.4), and the replica never hands an empty entry to the state machine; the
//! tag keeps a transition that encodes to nothing from being mistaken for it. So
//! `noop_transition` in [`Replica::new`] is accepted for compatibility with the API
//! this module follows and not used.
//!
//! # Limits
//!
//! - The log, term and vote live in memory. A replica restarted under the same id has
//!   forgotten its vote, which Raft needs durable (§5.2); start it again only as a
//!   fresh member or with a [`StateMachine::get_snapshot`] you accept that risk for.
//! - Election timeouts are measured in whole ticks (see [Elections](#elections)).
//!
//! # Example
//!
//! One replica elects itself and applies a transition.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
//! use std::sync::{mpsc, Arc, Mutex};
//! use std::time::{Duration, Instant};
//!
//! use bytes::Bytes;
//! use concord_raft::replica::{
//!     Cluster, DecodeError, Replica, StateMachine, StateMachineTransition, TransitionState,
//! };
//! use concord_raft::{Message, NodeId, Snapshot, SnapshotMetadata};
//!
//! /// Adds `amount` to a counter.
//! #[derive(Clone, Debug)]
//! struct Add {
//!     id: u64,
//!     amount: i64,
//! }
//!
//! impl StateMachineTransition for Add {
//!     type TransitionId = u64;
//!     fn id(&self) -> u64 {
//!         self.id
//!     }
//!     fn encode(&self) -> Bytes {
//!         [self.id.to_le_bytes(), self.amount.to_le_bytes()].concat().into()
//!     }
//!     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
//!         let bytes: [u8; 16] = bytes.try_into()?;
//!         let (id, amount) = bytes.split_at(8);
//!         Ok(Add { id: u64::from_le_bytes(id.try_into()?), amount: i64::from_le_bytes(amount.try_into()?) })
//!     }
//! }
//!
//! #[derive(Default)]
//! struct Counter {
//!     total: i64,
//!     pending: Vec<Add>,
//!     applied: Vec<u64>,
//! }
//!
//! impl StateMachine<Add> for Counter {
//!     fn register_transition_state(&mut self, id: u64, state: TransitionState) {
//!         if state == TransitionState::Applied {
//!             self.applied.push(id);
//!         }
//!     }
//!     fn apply_transition(&mut self, transition: Add) {
//!         self.total += transition.amount;
//!     }
//!     fn get_pending_transitions(&mut self) -> Vec<Add> {
//!         std::mem::take(&mut self.pending)
//!     }
//!     fn create_snapshot(&mut self, _metadata: &SnapshotMetadata) -> Bytes {
//!         Bytes::copy_from_slice(&self.total.to_le_bytes())
//!     }
//!     fn set_snapshot(&mut self, snapshot: Snapshot) {
//!         self.total = i64::from_le_bytes(snapshot.data[..].try_into().expect("8 bytes"));
//!     }
//! }
//!
//! /// A cluster of one: nobody to talk to.
//! struct Alone {
//!     halt: Arc<AtomicBool>,
//!     leader: Arc<AtomicU64>,
//! }
//!
//! impl Cluster for Alone {
//!     fn send_message(&mut self, _to: NodeId, _message: Message) {}
//!     fn receive_messages(&mut self) -> Vec<Message> {
//!         Vec::new()
//!     }
//!     fn halt(&self) -> bool {
//!         self.halt.load(Ordering::SeqCst)
//!     }
//!     fn register_leader(&mut self, leader: Option<NodeId>) {
//!         self.leader.store(leader.unwrap_or(0), Ordering::SeqCst);
//!     }
//! }
//!
//! let halt = Arc::new(AtomicBool::new(false));
//! let leader = Arc::new(AtomicU64::new(0));
//! let cluster = Arc::new(Mutex::new(Alone { halt: halt.clone(), leader: leader.clone() }));
//! let counter = Arc::new(Mutex::new(Counter::default()));
//! let mut replica = Replica::new(
//!     1,
//!     vec![],
//!     cluster,
//!     counter.clone(),
//!     Add { id: 0, amount: 0 },
//!     Duration::from_millis(10),
//!     (Duration::from_millis(50), Duration::from_millis(100)),
//! )?;
//! let (_notify_message, recv_msg) = mpsc::channel();
//! let (notify_transition, recv_transition) = mpsc::channel();
//! let thread = std::thread::spawn(move || replica.start(recv_msg, recv_transition));
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while leader.load(Ordering::SeqCst) != 1 {
//!     assert!(Instant::now() < deadline, "no leader elected");
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! counter.lock().unwrap().pending.push(Add { id: 7, amount: 5 });
//! notify_transition.send(()).unwrap();
//! while counter.lock().unwrap().applied != [7] {
//!     assert!(Instant::now() < deadline, "transition not applied");
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! halt.store(true, Ordering::SeqCst);
//! thread.join().unwrap()?;
//! assert_eq!(counter.lock().unwrap().total, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::conf_change::ConfChange;
use crate::config::Config;
use crate::errors::{Error, ProposeError, StorageError};
use crate::raft::LogPosition;
use crate::raw_node::{RawNode, Ready};
use crate::storage::{LogStore, MemStorage, Storage};
use crate::types::{
    ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMetadata, Term,
    NO_NODE,
};

/// The fewest ticks per heartbeat interval: a tick is at most a quarter of
/// `heartbeat_timeout`.
pub const HEARTBEAT_INTERVAL_TICKS_MIN: u32 = 4;

/// The fewest distinct election timeouts the replica can draw: a tick is at most a
/// sixteenth of the election timeout range's width, so replicas started together
/// rarely draw the same timeout and split their votes.
pub const ELECTION_TIMEOUT_SPREAD_TICKS_MIN: u32 = 16;

/// The shortest tick the replica runs at, unless the heartbeat itself is shorter than
/// four of them: a finer clock would wake the thread for nothing.
pub const TICK_DURATION_MIN: Duration = Duration::from_millis(1);

/// The smallest `heartbeat_timeout` accepted.
pub const HEARTBEAT_TIMEOUT_MIN: Duration = Duration::from_millis(1);

/// Most `Ready`s handled in one turn of the loop before the replica looks at its
/// channels, the clock and the halt flag again.
const READY_ROUNDS_PER_TURN_MAX: usize = 64;

/// Most notifications drained from a channel in one turn (they carry nothing; this
/// only bounds the loop when a sender floods it).
const NOTIFICATIONS_DRAINED_MAX: usize = 4096;

/// First byte of every entry that carries a transition. Empty entries are the
/// leader's no-op; anything else would be a foreign entry and stops the replica.
const TRANSITION_TAG: u8 = 0x01;

/// Why a transition's bytes could not be read. Any error type converts into it, so
/// `decode` can use `?`.
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// A change to the replicated state machine, as users define it.
pub trait StateMachineTransition: Clone + Send + 'static {
    /// Identifies a transition in [`StateMachine::register_transition_state`]. Make it
    /// unique per submission you want to tell apart.
    type TransitionId: Clone + Eq + Hash + Send + Debug;

    /// This transition's id.
    fn id(&self) -> Self::TransitionId;

    /// The bytes the log carries. May be empty.
    fn encode(&self) -> Bytes;

    /// Reads back what [`StateMachineTransition::encode`] wrote. An error stops every
    /// replica that applies the entry ([`ReplicaError::Decode`]): a committed entry
    /// cannot be skipped on some replicas and not others.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Where a transition stands, as seen by one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransitionState {
    /// Appended to the leader's log; not yet committed.
    Queued,
    /// Committed: it will be applied on every replica.
    Committed,
    /// Applied to this replica's state machine.
    Applied,
    /// Not applied, for the reason given.
    Abandoned(TransitionAbandonedReason),
}

/// Why a transition was abandoned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransitionAbandonedReason {
    /// This replica is not the leader; it dropped the transition without proposing it.
    /// Submit it to the leader named through [`Cluster::register_leader`].
    NotLeader,
    /// A new leader overwrote the proposed entry: its index was applied with another
    /// term, or an entry of a later term was applied below it (Raft paper §5.3). It
    /// will never be applied; safe to submit again.
    ConflictWithLeader,
    /// The core refused the proposal (for example while a leadership transfer is under
    /// way). It was not appended; safe to submit again.
    Refused(ProposeError),
    /// The replica installed a leader's snapshot covering the proposal's index before it
    /// could apply the entry there, and from the snapshot's position alone it cannot
    /// tell whether the proposal is in it. Look in the state machine (it now holds the
    /// snapshot) before submitting again.
    OutcomeUnknown,
}

/// A user-defined state machine, replicated across the cluster.
pub trait StateMachine<T: StateMachineTransition> {
    /// Called each time a transition's state changes on this replica.
    fn register_transition_state(&mut self, id: T::TransitionId, state: TransitionState);

    /// Applies a committed transition. Every replica applies the same transitions in
    /// the same order.
    fn apply_transition(&mut self, transition: T);

    /// Transitions submitted by users since the last call; called after
    /// `recv_transition` is notified. Must not return a transition twice. Only the
    /// leader proposes them; other replicas register them `Abandoned(NotLeader)`.
    fn get_pending_transitions(&mut self) -> Vec<T>;

    /// The snapshot this state machine already holds when the replica is created (for
    /// example one it saved with the data of [`StateMachine::create_snapshot`]). The
    /// replica starts its log after it and does not call `set_snapshot` with it. Its
    /// index must be above 1 (index 1 holds the group's initial membership); an empty
    /// `conf_state` in it means "the replica and its peers". See the module's limits
    /// before using it.
    fn get_snapshot(&mut self) -> Option<Snapshot> {
        None
    }

    /// Serializes the state as of the last applied transition, which is at
    /// `metadata.index`. The replica stores the bytes, compacts its log, and sends them
    /// to followers that need compacted entries.
    fn create_snapshot(&mut self, metadata: &SnapshotMetadata) -> Bytes;

    /// Replaces the state with a snapshot received from the leader (`snapshot.data` is
    /// what some replica's `create_snapshot` returned).
    fn set_snapshot(&mut self, snapshot: Snapshot);
}

/// How a replica talks to the others. Messages are the core's [`crate::Message`];
/// serialize them as you like.
pub trait Cluster {
    /// Sends `message` to replica `to`. Must not block; may drop the message silently
    /// (Raft tolerates loss, duplication and reordering).
    fn send_message(&mut self, to: NodeId, message: crate::Message);

    /// Messages received since the last call. Must not block; must not return a
    /// message twice.
    fn receive_messages(&mut self) -> Vec<crate::Message>;

    /// True when the replica should stop; checked at least once per tick.
    fn halt(&self) -> bool;

    /// Called when the known leader changes (`None` while unknown). Submit transitions
    /// to the leader's replica.
    fn register_leader(&mut self, leader: Option<NodeId>);
}

/// Settings beyond those of [`Replica::new`].
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Applied entries between snapshots; 0 never snapshots (the log then grows without
    /// bound).
    pub snapshot_interval_entries: u64,
    /// Entries kept below each snapshot's index when compacting, so a follower a little
    /// behind is sent entries rather than the whole snapshot.
    pub snapshot_trailing_entries: u64,
    /// Seed of the generator election timeouts are drawn from; `None` (the default)
    /// draws one from the operating system. Fix it only for a reproducible run:
    /// replicas given the same seed draw the same timeouts.
    pub seed: Option<u64>,
    /// The core's configuration. The replica sets `id`, `election_timeout_ticks`,
    /// `election_timeout_max_ticks`, `heartbeat_interval_ticks`, `seed` and `applied`
    /// itself; the rest is used as given.
    pub raft: Config,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            snapshot_interval_entries: 1024,
            snapshot_trailing_entries: 64,
            seed: None,
            raft: Config::default(),
        }
    }
}

/// A fatal error: the replica stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The core or its storage failed.
    #[error(transparent)]
    Raft(#[from] Error),
    /// A committed entry does not decode as a transition. Every replica applying it
    /// stops alike rather than skip it.
    #[error("committed entry at index {index} does not decode as a transition: {reason}")]
    Decode {
        /// The entry's index.
        index: Index,
        /// What the decoder said.
        reason: String,
    },
}

impl From<StorageError> for ReplicaError {
    fn from(error: StorageError) -> Self {
        ReplicaError::Raft(Error::Storage(error))
    }
}

/// A replica of state machine `S`, changed by transitions `T`, talking through `C`.
pub struct Replica<S, T, C>
where
    S: StateMachine<T>,
    T: StateMachineTransition,
    C: Cluster,
{
    node: RawNode<MemStorage>,
    cluster: Arc<Mutex<C>>,
    state_machine: Arc<Mutex<S>>,
    snapshot_interval_entries: u64,
    snapshot_trailing_entries: u64,
    tick_duration: Duration,
    /// Ticks counted before the loop starts, so the first election timeout is shorter
    /// (see [Elections](self#elections)).
    head_start_ticks: u32,
    /// The leader last passed to `register_leader`.
    leader: Option<NodeId>,
    /// Membership as of `applied`; recorded in the snapshots this replica creates.
    conf_state: ConfState,
    // Invariant: between turns, applied == the core's applied index, and the state
    // machine holds exactly the transitions up to it.
    applied: Index,
    proposals: Proposals<T::TransitionId>,
    transition: PhantomData<fn() -> T>,
}

impl<S, T, C> Replica<S, T, C>
where
    S: StateMachine<T>,
    T: StateMachineTransition,
    C: Cluster,
{
    /// Creates replica `id` of a group whose other voters are `peer_ids`, with default
    /// [`ReplicaOptions`].
    ///
    /// `heartbeat_timeout` is how often a leader sends heartbeats; an election starts
    /// when a follower hears nothing for an election timeout drawn from
    /// `election_timeout_range` (see [Elections](self#elections)). Pick the range 2–3
    /// times the heartbeat or more, after your network's latency. Errors name the
    /// argument that is wrong.
    pub fn new(
        id: NodeId,
        peer_ids: Vec<NodeId>,
        cluster: Arc<Mutex<C>>,
        state_machine: Arc<Mutex<S>>,
        noop_transition: T,
        heartbeat_timeout: Duration,
        election_timeout_range: (Duration, Duration),
    ) -> Result<Self, Error> {
        Self::with_options(
            id,
            peer_ids,
            cluster,
            state_machine,
            noop_transition,
            heartbeat_timeout,
            election_timeout_range,
            ReplicaOptions::default(),
        )
    }

    /// As [`Replica::new`], with `options`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_options(
        id: NodeId,
        peer_ids: Vec<NodeId>,
        cluster: Arc<Mutex<C>>,
        state_machine: Arc<Mutex<S>>,
        _noop_transition: T,
        heartbeat_timeout: Duration,
        election_timeout_range: (Duration, Duration),
        options: ReplicaOptions,
    ) -> Result<Self, Error> {
        let voters = voters(id, &peer_ids)?;
        let timing = Timing::from_durations(heartbeat_timeout, election_timeout_range)?;
        let mut config = options.raft;
        config.id = id;
        config.heartbeat_interval_ticks = timing.heartbeat_interval_ticks;
        config.election_timeout_ticks = timing.election_timeout_ticks;
        config.election_timeout_max_ticks = Some(timing.election_timeout_end_ticks);
        config.seed = options.seed.unwrap_or_else(|| seed_from_os(id));
        let head_start_ticks = if config.pre_vote && config.check_quorum {
            timing.election_timeout_ticks - 1
        } else {
            0
        };

        let mut storage = MemStorage::with_conf_state(voters.clone());
        let initial_snapshot = lock(&state_machine, "state machine")
            .get_snapshot()
            .filter(|snapshot| !snapshot.is_empty());
        if let Some(mut snapshot) = initial_snapshot {
            if snapshot.metadata.conf_state.voters.is_empty() {
                snapshot.metadata.conf_state = voters;
            }
            // The log starts after the snapshot, which is committed and applied.
            let hard_state = HardState {
                term: snapshot.metadata.term,
                vote: NO_NODE,
                commit: snapshot.metadata.index,
            };
            storage.apply_snapshot(snapshot)?;
            storage.set_hard_state(hard_state)?;
        }
        // The state machine holds the snapshot's state (the bootstrap snapshot's is the
        // empty initial state), so the core starts with it applied.
        let conf_state = storage.initial_state()?.conf_state;
        let applied = storage.snapshot(0)?.metadata.index;
        config.applied = applied;
        let node = RawNode::new(&config, storage)?;
        Ok(Replica {
            node,
            cluster,
            state_machine,
            snapshot_interval_entries: options.snapshot_interval_entries,
            snapshot_trailing_entries: options.snapshot_trailing_entries,
            tick_duration: timing.tick_duration,
            head_start_ticks,
            leader: None,
            conf_state,
            applied,
            proposals: Proposals::default(),
            transition: PhantomData,
        })
    }

    /// The real time one core tick stands for.
    pub fn tick_duration(&self) -> Duration {
        self.tick_duration
    }

    /// Runs the replica until [`Cluster::halt`] returns true, blocking the calling
    /// thread.
    ///
    /// Notify `recv_msg` whenever the cluster has messages for this replica (they are
    /// also polled once per tick), and `recv_transition` whenever the state machine has
    /// pending transitions (they are polled only when notified). A disconnected
    /// channel is treated as never notified.
    ///
    /// Returns `Ok` once halted, or the error that stopped the replica.
    pub fn start(
        &mut self,
        recv_msg: Receiver<()>,
        recv_transition: Receiver<()>,
    ) -> Result<(), ReplicaError> {
        if self.conf_state.voters == [self.node.id()] && self.conf_state.voters_outgoing.is_empty()
        {
            // The only voter needs no election timeout to win.
            self.node.campaign();
        } else {
            // Ticks short of the lowest timeout: no election can start here.
            for _ in 0..std::mem::take(&mut self.head_start_ticks) {
                self.node.tick();
            }
        }
        let mut next_tick = Instant::now() + self.tick_duration;
        let mut message_channel_open = true;
        loop {
            if lock(&self.cluster, "cluster").halt() {
                return Ok(());
            }
            let now = Instant::now();
            let wait = if self.node.has_ready() {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(now)
            };
            let mut messages_due = false;
            if message_channel_open {
                match recv_msg.recv_timeout(wait) {
                    Ok(()) => messages_due = true,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => message_channel_open = false,
                }
            } else {
                std::thread::sleep(wait);
            }
            messages_due |= drain(&recv_msg);
            let transitions_due = drain(&recv_transition);

            let now = Instant::now();
            let tick_due = now >= next_tick;
            if tick_due {
                self.node.tick();
                next_tick += self.tick_duration;
                if next_tick <= now {
                    // Ticks missed while the thread was not running are dropped, not
                    // replayed in a burst that would fire election timeouts at once.
                    next_tick = now + self.tick_duration;
                }
            }
            if messages_due || tick_due {
                self.step_messages()?;
            }
            if transitions_due {
                self.propose_pending();
            }
            self.handle_readies()?;
        }
    }

    fn step_messages(&mut self) -> Result<(), ReplicaError> {
        let messages = lock(&self.cluster, "cluster").receive_messages();
        for message in messages {
            self.node.step(message)?;
        }
        Ok(())
    }

    /// Proposes the state machine's pending transitions as one batch, registering each
    /// `Queued`, or each `Abandoned` if the core refuses the batch.
    fn propose_pending(&mut self) {
        let transitions = lock(&self.state_machine, "state machine").get_pending_transitions();
        if transitions.is_empty() {
            return;
        }
        let payloads = transitions.iter().map(encode_transition);
        let state = match self.node.propose_batch(payloads) {
            Ok(first) => {
                let ids = transitions.iter().map(StateMachineTransition::id);
                self.proposals.track(first, ids);
                TransitionState::Queued
            }
            Err(ProposeError::NotLeader { .. }) => {
                TransitionState::Abandoned(TransitionAbandonedReason::NotLeader)
            }
            Err(error) => TransitionState::Abandoned(TransitionAbandonedReason::Refused(error)),
        };
        let mut state_machine = lock(&self.state_machine, "state machine");
        for transition in &transitions {
            state_machine.register_transition_state(transition.id(), state.clone());
        }
    }

    fn handle_readies(&mut self) -> Result<(), ReplicaError> {
        for _ in 0..READY_ROUNDS_PER_TURN_MAX {
            if !self.node.has_ready() {
                break;
            }
            let ready = self.node.ready();
            self.handle_ready(ready)?;
            self.node.advance();
            debug_assert_eq!(
                self.applied,
                self.node.raft().log.applied(),
                "the replica and the core disagree on the applied index"
            );
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    /// Steps 3 to 5 of the driver contract for one `Ready`.
    fn handle_ready(&mut self, ready: Ready) -> Result<(), ReplicaError> {
        if let Some(soft_state) = ready.soft_state {
            let leader = (soft_state.leader != NO_NODE).then_some(soft_state.leader);
            if leader != self.leader {
                self.leader = leader;
                lock(&self.cluster, "cluster").register_leader(leader);
            }
        }

        // Persist: MemStorage is "durable" as soon as these return.
        let storage = self.node.storage_mut();
        if let Some(snapshot) = &ready.snapshot {
            storage.apply_snapshot(snapshot.clone())?;
        }
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state)?;
        }
        storage.append(&ready.entries)?;

        // Send, persisted messages last (the persist above is done).
        {
            let mut cluster = lock(&self.cluster, "cluster");
            for message in ready.messages.into_iter().chain(ready.persisted_messages) {
                cluster.send_message(message.to, message);
            }
        }

        // Apply. The replica issues no reads, so `read_states` is always empty.
        if let Some(snapshot) = ready.snapshot {
            self.install_snapshot(snapshot);
        }
        self.apply_entries(ready.committed_entries)
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let SnapshotMetadata {
            index,
            term,
            ref conf_state,
        } = snapshot.metadata;
        assert!(
            index > self.applied,
            "a snapshot at index {index} installed at applied index {}",
            self.applied
        );
        self.conf_state = conf_state.clone();
        self.applied = index;
        let settled = self.proposals.settle_by_snapshot(index, term);
        let mut state_machine = lock(&self.state_machine, "state machine");
        state_machine.set_snapshot(snapshot);
        for (id, outcome) in settled {
            match outcome {
                SnapshotOutcome::Included => {
                    state_machine.register_transition_state(id.clone(), TransitionState::Committed);
                    state_machine.register_transition_state(id, TransitionState::Applied);
                }
                SnapshotOutcome::Lost => state_machine.register_transition_state(
                    id,
                    TransitionState::Abandoned(TransitionAbandonedReason::ConflictWithLeader),
                ),
                SnapshotOutcome::Unknown => state_machine.register_transition_state(
                    id,
                    TransitionState::Abandoned(TransitionAbandonedReason::OutcomeUnknown),
                ),
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ReplicaError> {
        if entries.is_empty() {
            return Ok(());
        }
        let state_machine = Arc::clone(&self.state_machine);
        let mut state_machine = lock(&state_machine, "state machine");
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "committed entries must be applied in order without gaps"
            );
            for lost in self.proposals.settle_applied(entry.index, entry.term) {
                state_machine.register_transition_state(
                    lost,
                    TransitionState::Abandoned(TransitionAbandonedReason::ConflictWithLeader),
                );
            }
            match entry.kind {
                EntryKind::ConfChange => self.apply_conf_change(&entry)?,
                // A leader's no-op.
                EntryKind::Normal if entry.data.is_empty() => {}
                EntryKind::Normal => {
                    let transition: T = decode_transition(&entry)?;
                    let id = transition.id();
                    state_machine.register_transition_state(id.clone(), TransitionState::Committed);
                    state_machine.apply_transition(transition);
                    state_machine.register_transition_state(id, TransitionState::Applied);
                }
            }
            self.applied = entry.index;
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), ReplicaError> {
        let change = ConfChange::decode(&entry.data).map_err(|error| ReplicaError::Decode {
            index: entry.index,
            reason: error.to_string(),
        })?;
        // An invalid change is ignored by every node alike (see `apply_conf_change`).
        if let Ok(conf_state) = self.node.apply_conf_change(&change) {
            self.node.storage_mut().set_conf_state(conf_state.clone());
            self.conf_state = conf_state;
        }
        Ok(())
    }

    /// Takes a snapshot and compacts the log once `snapshot_interval_entries` entries
    /// have been applied since the last snapshot (created or installed).
    fn maybe_snapshot(&mut self) -> Result<(), ReplicaError> {
        if self.snapshot_interval_entries == 0 {
            return Ok(());
        }
        let storage = self.node.storage();
        let snapshot_index = storage.snapshot(0)?.metadata.index;
        if self.applied < snapshot_index + self.snapshot_interval_entries {
            return Ok(());
        }
        let metadata = SnapshotMetadata {
            index: self.applied,
            term: storage.term(self.applied)?,
            conf_state: self.conf_state.clone(),
        };
        let data = lock(&self.state_machine, "state machine").create_snapshot(&metadata);
        let storage = self.node.storage_mut();
        let created = storage.create_snapshot(metadata.index, metadata.conf_state.clone(), data)?;
        debug_assert_eq!(created.metadata, metadata);
        // Only up to the snapshot, never past it: a follower that needs compacted
        // entries must be able to get them from the snapshot.
        storage.compact(
            metadata
                .index
                .saturating_sub(self.snapshot_trailing_entries),
        )?;
        Ok(())
    }
}

/// The group's voters: `id` and `peer_ids`, checked.
fn voters(id: NodeId, peer_ids: &[NodeId]) -> Result<ConfState, Error> {
    if id == NO_NODE {
        return Err(Error::Config(
            "id must be a non-zero node id (0 means \"no node\")".into(),
        ));
    }
    let mut voters = vec![id];
    for &peer in peer_ids {
        if peer == NO_NODE || peer == id || voters.contains(&peer) {
            return Err(Error::Config(format!(
                "peer_ids {peer_ids:?} must be non-zero, distinct, and not contain id {id}"
            )));
        }
        voters.push(peer);
    }
    voters.sort_unstable();
    Ok(ConfState::with_voters(voters))
}

/// The clock: the real time of a tick, and the heartbeat and election timeouts in
/// ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    tick_duration: Duration,
    heartbeat_interval_ticks: u32,
    election_timeout_ticks: u32,
    /// The end (exclusive) of the election timeout range.
    election_timeout_end_ticks: u32,
}

impl Timing {
    fn from_durations(
        heartbeat_timeout: Duration,
        (election_timeout_min, election_timeout_max): (Duration, Duration),
    ) -> Result<Timing, Error> {
        let fail = |message: String| Err(Error::Config(message));
        if heartbeat_timeout < HEARTBEAT_TIMEOUT_MIN {
            return fail(format!(
                "heartbeat_timeout ({heartbeat_timeout:?}) must be at least \
                 {HEARTBEAT_TIMEOUT_MIN:?}"
            ));
        }
        if election_timeout_min <= heartbeat_timeout {
            return fail(format!(
                "election_timeout_range.0 ({election_timeout_min:?}) must be greater than \
                 heartbeat_timeout ({heartbeat_timeout:?}); usually 2 to 10 times it"
            ));
        }
        if election_timeout_max <= election_timeout_min {
            return fail(format!(
                "election_timeout_range.1 ({election_timeout_max:?}) must be greater than \
                 election_timeout_range.0 ({election_timeout_min:?})"
            ));
        }
        let quarter_heartbeat = heartbeat_timeout / HEARTBEAT_INTERVAL_TICKS_MIN;
        let spread_step =
            (election_timeout_max - election_timeout_min) / ELECTION_TIMEOUT_SPREAD_TICKS_MIN;
        let tick_duration = quarter_heartbeat
            .min(spread_step)
            .max(quarter_heartbeat.min(TICK_DURATION_MIN));
        let tick_nanos = tick_duration.as_nanos();
        let too_long = |what: &str, value: Duration| {
            Error::Config(format!(
                "{what} ({value:?}) is too long: over {} ticks of {tick_duration:?}",
                u32::MAX - 1
            ))
        };
        let ticks = |nanos: u128, what: &str, value: Duration| {
            u32::try_from(nanos)
                .ok()
                .filter(|&ticks| ticks < u32::MAX)
                .ok_or_else(|| too_long(what, value))
        };
        let heartbeat_interval_ticks = ticks(
            heartbeat_timeout.as_nanos() / tick_nanos,
            "heartbeat_timeout",
            heartbeat_timeout,
        )?;
        let election_timeout_ticks = ticks(
            election_timeout_min.as_nanos().div_ceil(tick_nanos),
            "election_timeout_range.0",
            election_timeout_min,
        )?;
        // The last whole tick not beyond the range's end is the highest timeout drawn.
        let highest = ticks(
            election_timeout_max.as_nanos() / tick_nanos,
            "election_timeout_range.1",
            election_timeout_max,
        )?;
        Ok(Timing {
            tick_duration,
            heartbeat_interval_ticks,
            election_timeout_ticks,
            election_timeout_end_ticks: highest.max(election_timeout_ticks) + 1,
        })
    }
}

/// A seed for replica `id`'s generator from the operating system's randomness (the
/// standard library seeds `RandomState` from it).
fn seed_from_os(id: NodeId) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(id)
}

/// How a tracked proposal fared, judged from an installed snapshot's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapshotOutcome {
    Included,
    Lost,
    Unknown,
}

/// Proposals this replica made and has not yet seen settled, by log position.
///
/// Settling rests on two facts about the committed log (Raft paper §5.3, §5.4): it
/// holds one entry per index, and its terms never decrease with the index. So once
/// the entry at index `j` with term `u` is known committed, a proposal at `j` with
/// another term is lost, and so is every proposal at an index above `j` with a term
/// below `u` (the committed entry there will have a term of at least `u`). The second
/// rule is what settles, as soon as a new leader's first entry commits, everything a
/// deposed leader had queued, without waiting for the log to grow past it.
#[derive(Debug)]
struct Proposals<Id> {
    /// By term, then index. Several terms may share an index: a replica that leads
    /// again can propose where an earlier, unsettled proposal of its own once was.
    // Invariant: every index is above the applied index.
    by_term: BTreeMap<Term, BTreeMap<Index, Id>>,
}

impl<Id> Default for Proposals<Id> {
    fn default() -> Self {
        Proposals {
            by_term: BTreeMap::new(),
        }
    }
}

impl<Id> Proposals<Id> {
    /// Tracks `ids`, proposed at consecutive indexes from `first`.
    fn track(&mut self, first: LogPosition, ids: impl IntoIterator<Item = Id>) {
        let in_term = self.by_term.entry(first.term).or_default();
        for (offset, id) in ids.into_iter().enumerate() {
            let index = first.index + offset as Index;
            let previous = in_term.insert(index, id);
            assert!(
                previous.is_none(),
                "two proposals at index {index} in term {}",
                first.term
            );
        }
    }

    /// The entry at `index` with `term` was applied. Stops tracking the proposal that
    /// is that entry, if any, and returns those now known lost: at `index` with another
    /// term, and any with a term below `term`.
    fn settle_applied(&mut self, index: Index, term: Term) -> Vec<Id> {
        let later_terms = self.by_term.split_off(&term);
        let mut lost: Vec<Id> = std::mem::replace(&mut self.by_term, later_terms)
            .into_values()
            .flat_map(BTreeMap::into_values)
            .collect();
        for (&proposed_term, in_term) in self.by_term.iter_mut() {
            let proposal = in_term.remove(&index);
            if proposed_term != term {
                lost.extend(proposal);
            }
            debug_assert!(
                in_term.keys().all(|&proposed_index| proposed_index > index),
                "a proposal in term {proposed_term} below applied index {index}"
            );
        }
        self.by_term.retain(|_, in_term| !in_term.is_empty());
        lost
    }

    /// A snapshot ending at (`index`, `term`) was installed. Settles every proposal
    /// at or below `index`, and those above it with an earlier term (lost, as in
    /// `settle_applied`).
    ///
    /// At or below `index`: one of a later term was not committed (terms never
    /// decrease). One of the same term was made by the leader of `term`, this
    /// replica, before that leader's entry at `index`; by log matching (§5.3) the
    /// snapshot includes it. Of an earlier term, the position alone cannot tell.
    fn settle_by_snapshot(&mut self, index: Index, term: Term) -> Vec<(Id, SnapshotOutcome)> {
        let mut settled = Vec::new();
        for (&proposed_term, in_term) in self.by_term.iter_mut() {
            let above = in_term.split_off(&(index + 1));
            let covered = std::mem::replace(in_term, above);
            let outcome = match proposed_term.cmp(&term) {
                std::cmp::Ordering::Equal => SnapshotOutcome::Included,
                std::cmp::Ordering::Greater => SnapshotOutcome::Lost,
                std::cmp::Ordering::Less => SnapshotOutcome::Unknown,
            };
            settled.extend(covered.into_values().map(|id| (id, outcome)));
            if proposed_term < term {
                let above = std::mem::take(in_term);
                settled.extend(above.into_values().map(|id| (id, SnapshotOutcome::Lost)));
            }
        }
        self.by_term.retain(|_, in_term| !in_term.is_empty());
        settled
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_term.values().map(BTreeMap::len).sum()
    }
}

fn encode_transition<T: StateMachineTransition>(transition: &T) -> Bytes {
    let body = transition.encode();
    let mut data = BytesMut::with_capacity(1 + body.len());
    data.put_u8(TRANSITION_TAG);
    data.put_slice(&body);
    data.freeze()
}

fn decode_transition<T: StateMachineTransition>(entry: &Entry) -> Result<T, ReplicaError> {
    let failed = |reason: String| ReplicaError::Decode {
        index: entry.index,
        reason,
    };
    match entry.data.split_first() {
        Some((&TRANSITION_TAG, body)) => T::decode(body).map_err(|error| failed(error.to_string())),
        _ => Err(failed(format!(
            "it does not start with the transition tag byte {TRANSITION_TAG:#04x}"
        ))),
    }
}

/// True if `receiver` held at least one notification; takes them all (up to a bound).
fn drain(receiver: &Receiver<()>) -> bool {
    receiver.try_iter().take(NOTIFICATIONS_DRAINED_MAX).count() > 0
}

fn lock<'a, X>(mutex: &'a Mutex<X>, what: &str) -> MutexGuard<'a, X> {
    mutex
        .lock()
        .unwrap_or_else(|_| panic!("the {what} mutex is poisoned: a thread panicked holding it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(index: Index, term: Term) -> LogPosition {
        LogPosition { index, term }
    }

    // Each invalid timing is rejected with a message naming the argument; a valid one
    // maps to a tick fine enough for the heartbeat and the range, the lower end rounded
    // up to ticks and the upper one down.
    #[test]
    fn timing_validates_and_rounds_up() {
        let ms = Duration::from_millis;
        // A quarter heartbeat is finer than a sixteenth of the range.
        assert_eq!(
            Timing::from_durations(ms(20), (ms(101), ms(200))),
            Ok(Timing {
                tick_duration: ms(5),
                heartbeat_interval_ticks: 4,
                election_timeout_ticks: 21,
                election_timeout_end_ticks: 41,
            })
        );
        // little_raft's own settings: a sixteenth of 200 ms, so 17 timeouts from
        // 750 ms to 950 ms, both ends included.
        assert_eq!(
            Timing::from_durations(ms(500), (ms(750), ms(950))),
            Ok(Timing {
                tick_duration: Duration::from_micros(12_500),
                heartbeat_interval_ticks: 40,
                election_timeout_ticks: 60,
                election_timeout_end_ticks: 77,
            })
        );
        // A narrow range does not tick faster than TICK_DURATION_MIN...
        assert_eq!(
            Timing::from_durations(ms(100), (ms(300), ms(301))),
            Ok(Timing {
                tick_duration: ms(1),
                heartbeat_interval_ticks: 100,
                election_timeout_ticks: 300,
                election_timeout_end_ticks: 302,
            })
        );
        // ...unless the heartbeat is shorter than four of it.
        assert_eq!(
            Timing::from_durations(ms(2), (ms(3), ms(4))),
            Ok(Timing {
                tick_duration: Duration::from_micros(500),
                heartbeat_interval_ticks: 4,
                election_timeout_ticks: 6,
                election_timeout_end_ticks: 9,
            })
        );
        let cases = [
            (
                Duration::from_micros(999),
                (ms(100), ms(200)),
                "heartbeat_timeout",
            ),
            (ms(20), (ms(20), ms(200)), "election_timeout_range.0"),
            (ms(20), (ms(100), ms(100)), "election_timeout_range.1"),
            (
                ms(1),
                (Duration::from_secs(u64::MAX / 4), Duration::MAX),
                "too long",
            ),
        ];
        for (heartbeat, range, named) in cases {
            let message = Timing::from_durations(heartbeat, range)
                .unwrap_err()
                .to_string();
            assert!(message.contains(named), "{message:?} should name {named}");
        }
    }

    // Bad ids are refused with a message naming the argument.
    #[test]
    fn voters_rejects_bad_ids() {
        assert_eq!(voters(2, &[3, 1]), Ok(ConfState::with_voters([1, 2, 3])));
        for (id, peers, named) in [
            (0, vec![1], "id"),
            (1, vec![0], "peer_ids"),
            (1, vec![1], "peer_ids"),
            (1, vec![2, 2], "peer_ids"),
        ] {
            let message = voters(id, &peers).unwrap_err().to_string();
            assert!(message.contains(named), "{message:?} should name {named}");
        }
    }

    // Applying an index settles the proposal that is that entry, the proposals there
    // of other terms, and every proposal of an earlier term above it.
    #[test]
    fn proposals_settle_on_apply() {
        let mut proposals = Proposals::default();
        proposals.track(position(5, 2), ["a", "b", "c", "d"]);
        // Re-elected in term 4, the replica proposes again at index 6.
        proposals.track(position(6, 4), ["e", "f"]);
        assert_eq!(proposals.settle_applied(4, 2), Vec::<&str>::new());
        assert_eq!(proposals.settle_applied(5, 2), Vec::<&str>::new());
        assert_eq!(proposals.len(), 5);
        // "e" is the entry applied at 6; "b" was overwritten there, and term 4 being
        // committed at 6 means no term-2 entry can commit above it.
        assert_eq!(proposals.settle_applied(6, 4), vec!["b", "c", "d"]);
        assert_eq!(proposals.settle_applied(7, 5), vec!["f"]);
        assert_eq!(proposals.len(), 0);
    }

    // A proposal of a later term than the applied entry above it stays tracked: a
    // leader of that term may still commit it.
    #[test]
    fn proposals_of_later_terms_wait_for_their_index() {
        let mut proposals = Proposals::default();
        proposals.track(position(8, 5), ["later"]);
        assert_eq!(proposals.settle_applied(6, 4), Vec::<&str>::new());
        assert_eq!(proposals.settle_applied(7, 4), Vec::<&str>::new());
        assert_eq!(proposals.len(), 1);
        assert_eq!(proposals.settle_applied(8, 5), Vec::<&str>::new());
        assert_eq!(proposals.len(), 0);
    }

    // A snapshot settles what it covers by comparing terms with its own, and what lies
    // above it with an earlier term; later-term proposals above it stay tracked.
    #[test]
    fn proposals_settle_by_snapshot() {
        let mut proposals = Proposals::default();
        proposals.track(position(3, 1), ["older", "older-too"]);
        proposals.track(position(4, 2), ["same", "same-too"]);
        proposals.track(position(4, 3), ["later"]);
        proposals.track(position(9, 2), ["same-above"]);
        proposals.track(position(9, 3), ["later-above"]);
        assert_eq!(
            proposals.settle_by_snapshot(5, 2),
            vec![
                ("older", SnapshotOutcome::Unknown),
                ("older-too", SnapshotOutcome::Unknown),
                ("same", SnapshotOutcome::Included),
                ("same-too", SnapshotOutcome::Included),
                ("later", SnapshotOutcome::Lost),
            ]
        );
        assert_eq!(proposals.len(), 2);
        assert_eq!(proposals.settle_applied(9, 3), vec!["same-above"]);
        assert_eq!(proposals.len(), 0);

        let mut proposals = Proposals::default();
        proposals.track(position(7, 1), ["older-beyond"]);
        assert_eq!(
            proposals.settle_by_snapshot(5, 2),
            vec![("older-beyond", SnapshotOutcome::Lost)]
        );
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Raw(Bytes);

    impl StateMachineTransition for Raw {
        type TransitionId = Bytes;
        fn id(&self) -> Bytes {
            self.0.clone()
        }
        fn encode(&self) -> Bytes {
            self.0.clone()
        }
        fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
            Ok(Raw(Bytes::copy_from_slice(bytes)))
        }
    }

    // A transition that encodes to nothing still round-trips and is never an empty
    // (no-op) entry; an entry without the tag is refused, naming its index.
    #[test]
    fn transition_framing() {
        let empty = encode_transition(&Raw(Bytes::new()));
        assert_eq!(&empty[..], &[TRANSITION_TAG]);
        let entry = |data: Bytes| Entry {
            term: 1,
            index: 9,
            kind: EntryKind::Normal,
            data,
        };
        assert_eq!(
            decode_transition::<Raw>(&entry(empty)),
            Ok(Raw(Bytes::new()))
        );
        let framed = encode_transition(&Raw(Bytes::from_static(b"xy")));
        assert_eq!(
            decode_transition::<Raw>(&entry(framed)),
            Ok(Raw(Bytes::from_static(b"xy")))
        );
        let foreign = decode_transition::<Raw>(&entry(Bytes::from_static(b"xy")));
        assert!(
            matches!(foreign, Err(ReplicaError::Decode { index: 9, .. })),
            "{foreign:?}"
        );
    }
}

/// Three replicas on threads over in-process channels, driven through the public API
/// only, with a transport that can drop, shuffle and partition.
#[cfg(test)]
mod cluster_tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{self, Sender};
    use std::thread::JoinHandle;

    use super::*;
    use crate::Message;

    /// The longest any test may run before it fails.
    const TEST_DURATION_MAX: Duration = Duration::from_secs(9);
    /// Most transitions submitted and not yet settled at once.
    const OUTSTANDING_MAX: usize = 25;
    const HEARTBEAT: Duration = Duration::from_millis(20);
    const ELECTION: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(200));

    /// Appends its id to the state machine's history.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Append(u64);

    impl StateMachineTransition for Append {
        type TransitionId = u64;
        fn id(&self) -> u64 {
            self.0
        }
        fn encode(&self) -> Bytes {
            Bytes::copy_from_slice(&self.0.to_le_bytes())
        }
        fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
            Ok(Append(u64::from_le_bytes(bytes.try_into()?)))
        }
    }

    /// The history of applied ids, and what the replica reported about each.
    #[derive(Default)]
    struct History {
        applied: Vec<u64>,
        pending: Vec<Append>,
        /// Every state registered for each id, in order.
        reports: HashMap<u64, Vec<TransitionState>>,
        /// Every id registered `Applied` here.
        reported_applied: BTreeSet<u64>,
        snapshots_created: u32,
        snapshots_installed: u32,
        /// Returned once by `get_snapshot`.
        initial_snapshot: Option<Snapshot>,
        /// Where each snapshot this machine created stands.
        created_at: Vec<SnapshotMetadata>,
    }

    impl StateMachine<Append> for History {
        fn register_transition_state(&mut self, id: u64, state: TransitionState) {
            if state == TransitionState::Applied {
                self.reported_applied.insert(id);
            }
            self.reports.entry(id).or_default().push(state);
        }
        fn apply_transition(&mut self, transition: Append) {
            self.applied.push(transition.0);
        }
        fn get_pending_transitions(&mut self) -> Vec<Append> {
            std::mem::take(&mut self.pending)
        }
        fn get_snapshot(&mut self) -> Option<Snapshot> {
            self.initial_snapshot.take()
        }
        fn create_snapshot(&mut self, metadata: &SnapshotMetadata) -> Bytes {
            self.snapshots_created += 1;
            self.created_at.push(metadata.clone());
            self.applied
                .iter()
                .flat_map(|id| id.to_le_bytes())
                .collect()
        }
        fn set_snapshot(&mut self, snapshot: Snapshot) {
            assert_eq!(snapshot.data.len() % 8, 0, "snapshot data is whole ids");
            self.snapshots_installed += 1;
            self.applied = snapshot
                .data
                .chunks_exact(8)
                .map(|id| u64::from_le_bytes(id.try_into().expect("8 bytes")))
                .collect();
        }
    }

    /// A small deterministic generator (SplitMix64) for the transport's faults.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % bound
        }
    }

    /// What the transport does to messages.
    #[derive(Clone, Copy, Debug)]
    struct Faults {
        /// Percent of messages dropped at random.
        drop_percent: u64,
        /// Buffer received messages and deliver a random part of them in random order.
        shuffle: bool,
    }

    /// State shared by the test and every replica's transport.
    struct Shared {
        halt: AtomicBool,
        /// A node cut off from the others, or `NO_NODE`.
        isolated: AtomicU64,
        /// Each node's own view of the leader (`NO_NODE` when unknown).
        leaders: BTreeMap<NodeId, AtomicU64>,
    }

    /// One node's transport: an mpsc inbox, and the peers' inboxes and notifiers.
    struct ChannelCluster {
        id: NodeId,
        shared: Arc<Shared>,
        faults: Faults,
        rng: Rng,
        inbox: mpsc::Receiver<Message>,
        /// Received and not yet delivered (shuffling holds some back).
        held: Vec<Message>,
        peers: BTreeMap<NodeId, (Sender<Message>, Sender<()>)>,
    }

    impl Cluster for ChannelCluster {
        fn send_message(&mut self, to: NodeId, message: Message) {
            let isolated = self.shared.isolated.load(Ordering::SeqCst);
            if isolated == self.id || isolated == to {
                return;
            }
            if self.rng.below(100) < self.faults.drop_percent {
                return;
            }
            if let Some((inbox, notify)) = self.peers.get(&to) {
                // The peer may have stopped; a send to it is a loss like any other.
                let _ = inbox.send(message);
                let _ = notify.send(());
            }
        }

        fn receive_messages(&mut self) -> Vec<Message> {
            self.held.extend(self.inbox.try_iter().take(4096));
            if !self.faults.shuffle {
                return std::mem::take(&mut self.held);
            }
            // Fisher-Yates, then deliver the first half (rounded up); the rest waits
            // for a later call, so messages overtake each other across calls too.
            for index in (1..self.held.len()).rev() {
                let other = self.rng.below(index as u64 + 1) as usize;
                self.held.swap(index, other);
            }
            let kept = self.held.split_off(self.held.len().div_ceil(2));
            std::mem::replace(&mut self.held, kept)
        }

        fn halt(&self) -> bool {
            self.shared.halt.load(Ordering::SeqCst)
        }

        fn register_leader(&mut self, leader: Option<NodeId>) {
            self.shared.leaders[&self.id].store(leader.unwrap_or(NO_NODE), Ordering::SeqCst);
        }
    }

    /// A running group of replicas. Dropping it halts and joins every replica thread,
    /// so a failing test does not leave threads behind.
    struct TestGroup {
        shared: Arc<Shared>,
        histories: BTreeMap<NodeId, Arc<Mutex<History>>>,
        notify_transition: BTreeMap<NodeId, Sender<()>>,
        threads: BTreeMap<NodeId, JoinHandle<Result<(), ReplicaError>>>,
        deadline: Instant,
    }

    impl TestGroup {
        fn start(seed: u64, faults: Faults, options: ReplicaOptions) -> TestGroup {
            eprintln!("replica test: seed {seed}, {faults:?}, {options:?}");
            let ids: Vec<NodeId> = vec![1, 2, 3];
            let shared = Arc::new(Shared {
                halt: AtomicBool::new(false),
                isolated: AtomicU64::new(NO_NODE),
                leaders: ids
                    .iter()
                    .map(|&id| (id, AtomicU64::new(NO_NODE)))
                    .collect(),
            });
            let mut inboxes = BTreeMap::new();
            let mut notify_message = BTreeMap::new();
            let mut receivers = BTreeMap::new();
            let mut notify_transition = BTreeMap::new();
            for &id in &ids {
                let (inbox_sender, inbox) = mpsc::channel();
                let (message_sender, recv_msg) = mpsc::channel();
                let (transition_sender, recv_transition) = mpsc::channel();
                inboxes.insert(id, inbox_sender);
                notify_message.insert(id, message_sender);
                notify_transition.insert(id, transition_sender);
                receivers.insert(id, (inbox, recv_msg, recv_transition));
            }
            let mut group = TestGroup {
                shared: shared.clone(),
                histories: BTreeMap::new(),
                notify_transition,
                threads: BTreeMap::new(),
                deadline: Instant::now() + TEST_DURATION_MAX,
            };
            for (id, (inbox, recv_msg, recv_transition)) in receivers {
                let peers = ids
                    .iter()
                    .filter(|&&peer| peer != id)
                    .map(|&peer| {
                        (
                            peer,
                            (inboxes[&peer].clone(), notify_message[&peer].clone()),
                        )
                    })
                    .collect();
                let cluster = ChannelCluster {
                    id,
                    shared: shared.clone(),
                    faults,
                    rng: Rng(seed ^ id),
                    inbox,
                    held: Vec::new(),
                    peers,
                };
                let history = Arc::new(Mutex::new(History::default()));
                let peer_ids = ids.iter().copied().filter(|&peer| peer != id).collect();
                let mut replica = Replica::with_options(
                    id,
                    peer_ids,
                    Arc::new(Mutex::new(cluster)),
                    history.clone(),
                    Append(0),
                    HEARTBEAT,
                    ELECTION,
                    options.clone(),
                )
                .expect("valid replica settings");
                group.histories.insert(id, history);
                let thread = std::thread::Builder::new()
                    .name(format!("replica-{id}"))
                    .spawn(move || replica.start(recv_msg, recv_transition))
                    .expect("spawn a replica thread");
                group.threads.insert(id, thread);
            }
            group
        }

        fn history(&self, id: NodeId) -> MutexGuard<'_, History> {
            self.histories[&id].lock().expect("history lock")
        }

        /// Fails the test if the deadline passed or a replica stopped on its own.
        fn check_alive(&self, waiting_for: &str) {
            assert!(
                Instant::now() < self.deadline,
                "deadline passed waiting for {waiting_for}; {}",
                self.describe()
            );
            for (id, thread) in &self.threads {
                assert!(
                    !thread.is_finished(),
                    "replica {id} stopped while waiting for {waiting_for}"
                );
            }
        }

        /// Each node's view, for failure messages.
        fn describe(&self) -> String {
            let mut out = String::new();
            for (&id, history) in &self.histories {
                let history = history.lock().expect("history lock");
                let leader = self.shared.leaders[&id].load(Ordering::SeqCst);
                out.push_str(&format!(
                    "\n  node {id}: leader {leader}, {} applied (last {:?}), {} snapshots \
                     created, {} installed, {} reported Applied",
                    history.applied.len(),
                    history.applied.last(),
                    history.snapshots_created,
                    history.snapshots_installed,
                    history.reported_applied.len(),
                ));
            }
            out
        }

        /// Polls `done` until it holds, failing at the deadline.
        fn wait_until(&self, waiting_for: &str, mut done: impl FnMut(&TestGroup) -> bool) {
            while !done(self) {
                self.check_alive(waiting_for);
                std::thread::sleep(Duration::from_millis(2));
            }
        }

        /// A node that believes it leads (possibly stale).
        fn leader(&self) -> Option<NodeId> {
            self.shared
                .leaders
                .iter()
                .find(|&(&id, leader)| leader.load(Ordering::SeqCst) == id)
                .map(|(&id, _)| id)
        }

        fn wait_for_leader(&self) -> NodeId {
            let mut leader = None;
            self.wait_until("a leader", |group| {
                leader = group.leader();
                leader.is_some()
            });
            leader.expect("set above")
        }

        /// Submits each of `ids` to whichever node leads, and again whenever the node it
        /// went to reports it was not appended or was lost, until every one is applied
        /// somewhere. At most `OUTSTANDING_MAX` are outstanding at once.
        fn submit_all(&self, ids: impl IntoIterator<Item = u64>) {
            self.submit_all_with(ids, |_, _| {});
        }

        /// As `submit_all`, calling `between_rounds` with the number of transitions
        /// settled so far after each round (to inject faults part-way).
        fn submit_all_with(
            &self,
            ids: impl IntoIterator<Item = u64>,
            mut between_rounds: impl FnMut(&TestGroup, usize),
        ) {
            let mut unsent: Vec<u64> = ids.into_iter().collect();
            unsent.reverse();
            let total = unsent.len();
            // id -> the node it was last submitted to.
            let mut outstanding: BTreeMap<u64, NodeId> = BTreeMap::new();
            while !unsent.is_empty() || !outstanding.is_empty() {
                between_rounds(self, total - unsent.len() - outstanding.len());
                self.check_alive(&format!(
                    "{} transitions to apply",
                    unsent.len() + outstanding.len()
                ));
                let mut retry = Vec::new();
                outstanding.retain(|&id, &mut node| {
                    let history = self.history(node);
                    match history.reports.get(&id).and_then(|reports| reports.last()) {
                        Some(TransitionState::Applied) => false,
                        Some(TransitionState::Abandoned(
                            TransitionAbandonedReason::OutcomeUnknown,
                        )) => {
                            // The node holds the snapshot that covered it: look there.
                            if !history.applied.contains(&id) {
                                retry.push(id);
                            }
                            false
                        }
                        Some(TransitionState::Abandoned(_)) => {
                            retry.push(id);
                            false
                        }
                        _ => true,
                    }
                });
                unsent.extend(retry);
                let Some(leader) = self.leader() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let room = OUTSTANDING_MAX.saturating_sub(outstanding.len());
                let batch: Vec<u64> = (0..room).map_while(|_| unsent.pop()).collect();
                if !batch.is_empty() {
                    let mut history = self.history(leader);
                    for &id in &batch {
                        history.reports.remove(&id);
                        history.pending.push(Append(id));
                        outstanding.insert(id, leader);
                    }
                    drop(history);
                    let _ = self.notify_transition[&leader].send(());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }

        /// Waits until every history equals the others and holds `expected` ids, then
        /// checks each id appears once and every id any node reported `Applied` is in.
        fn wait_converged(&self, expected: usize) -> Vec<u64> {
            self.wait_until("the histories to converge", |group| {
                let histories: Vec<Vec<u64>> = group
                    .histories
                    .keys()
                    .map(|&id| group.history(id).applied.clone())
                    .collect();
                histories[0].len() == expected
                    && histories.iter().all(|history| *history == histories[0])
            });
            let applied = self.history(1).applied.clone();
            let distinct: BTreeSet<u64> = applied.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                applied.len(),
                "an id was applied twice: {applied:?}"
            );
            for &id in self.histories.keys() {
                let reported = self.history(id).reported_applied.clone();
                assert!(
                    reported.is_subset(&distinct),
                    "node {id} reported Applied for ids not in the history: {:?}",
                    reported.difference(&distinct).collect::<Vec<_>>()
                );
            }
            applied
        }

        /// Halts every replica and fails the test if any stopped with an error.
        fn finish(mut self) {
            self.shared.halt.store(true, Ordering::SeqCst);
            for (id, thread) in std::mem::take(&mut self.threads) {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => panic!("replica {id} failed: {error}"),
                    Err(_) => panic!("replica {id} panicked"),
                }
            }
        }
    }

    impl Drop for TestGroup {
        fn drop(&mut self) {
            self.shared.halt.store(true, Ordering::SeqCst);
            for (_, thread) in std::mem::take(&mut self.threads) {
                // Errors are reported by `finish`; here the test is already failing.
                let _ = thread.join();
            }
        }
    }

    /// A cluster of one: nobody to talk to.
    struct Alone(Arc<AtomicBool>);

    impl Cluster for Alone {
        fn send_message(&mut self, _to: NodeId, _message: Message) {}
        fn receive_messages(&mut self) -> Vec<Message> {
            Vec::new()
        }
        fn halt(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn register_leader(&mut self, _leader: Option<NodeId>) {}
    }

    // A replica over a state machine that already holds a snapshot starts its log
    // after it: it does not hand the snapshot back, and the next transition lands in a
    // later term, at a later index, with the snapshot's state kept.
    #[test]
    fn replica_starts_after_the_state_machines_snapshot() {
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index: 10,
                term: 3,
                conf_state: ConfState::default(),
            },
            data: [7u64, 8].iter().flat_map(|id| id.to_le_bytes()).collect(),
        };
        let history = Arc::new(Mutex::new(History {
            applied: vec![7, 8],
            initial_snapshot: Some(snapshot),
            ..History::default()
        }));
        let halt = Arc::new(AtomicBool::new(false));
        let options = ReplicaOptions {
            snapshot_interval_entries: 1,
            ..ReplicaOptions::default()
        };
        let mut replica = Replica::with_options(
            1,
            vec![],
            Arc::new(Mutex::new(Alone(halt.clone()))),
            history.clone(),
            Append(0),
            HEARTBEAT,
            ELECTION,
            options,
        )
        .expect("valid replica settings");
        let (_notify_message, recv_msg) = mpsc::channel();
        let (notify_transition, recv_transition) = mpsc::channel();
        let thread = std::thread::spawn(move || replica.start(recv_msg, recv_transition));
        struct HaltOnDrop(Arc<AtomicBool>);
        impl Drop for HaltOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _halt_on_drop = HaltOnDrop(halt.clone());

        let deadline = Instant::now() + TEST_DURATION_MAX;
        let mut submitted = false;
        loop {
            let mut history = history.lock().expect("history lock");
            if history.reported_applied.contains(&9) {
                break;
            }
            assert!(Instant::now() < deadline, "transition 9 not applied");
            let abandoned = matches!(
                history.reports.get(&9).and_then(|reports| reports.last()),
                Some(TransitionState::Abandoned(_))
            );
            // Submit once, and again only if refused (before the replica led).
            if !submitted || abandoned {
                submitted = true;
                history.reports.remove(&9);
                history.pending.push(Append(9));
                let _ = notify_transition.send(());
            }
            drop(history);
            std::thread::sleep(Duration::from_millis(2));
        }
        halt.store(true, Ordering::SeqCst);
        thread.join().expect("replica thread").expect("replica ran");
        let history = history.lock().expect("history lock");
        assert_eq!(history.applied, vec![7, 8, 9]);
        assert_eq!(history.snapshots_installed, 0);
        let first = &history.created_at[0];
        assert!(
            first.index > 10 && first.term > 3,
            "first snapshot created at {first:?}"
        );
        assert_eq!(first.conf_state, ConfState::with_voters([1]));
    }

    fn reliable() -> Faults {
        Faults {
            drop_percent: 0,
            shuffle: false,
        }
    }

    // Three replicas over a reliable transport apply every submitted transition, once
    // each and in the same order, and every one the leader reported Applied is in.
    #[test]
    fn three_replicas_apply_the_same_transitions_in_order() {
        let group = TestGroup::start(1, reliable(), ReplicaOptions::default());
        let leader = group.wait_for_leader();
        group.submit_all(1..=100);
        let applied = group.wait_converged(100);
        assert_eq!(
            applied.iter().copied().collect::<BTreeSet<u64>>(),
            (1..=100).collect(),
        );
        // Each replica reported each transition Committed then Applied, and the one it
        // was proposed on reported it Queued first.
        let all: BTreeSet<u64> = (1..=100).collect();
        for &id in group.histories.keys() {
            let history = group.history(id);
            assert_eq!(history.reported_applied, all, "node {id}");
            for (transition, reports) in &history.reports {
                assert!(
                    reports.ends_with(&[TransitionState::Committed, TransitionState::Applied]),
                    "node {id}, transition {transition}: {reports:?}"
                );
            }
        }
        let queued = group
            .history(leader)
            .reports
            .values()
            .filter(|reports| reports[0] == TransitionState::Queued)
            .count();
        assert!(queued > 0, "the leader queued nothing");
        group.finish();
    }

    // With a quarter of all messages dropped and the rest delivered out of order, the
    // replicas still converge on one history holding every submitted transition once,
    // including everything any replica reported Applied; snapshots are taken along
    // the way and sent to whoever falls behind.
    #[test]
    fn replicas_converge_despite_loss_and_reordering() {
        let faults = Faults {
            drop_percent: 25,
            shuffle: true,
        };
        let options = ReplicaOptions {
            snapshot_interval_entries: 50,
            snapshot_trailing_entries: 10,
            ..ReplicaOptions::default()
        };
        let group = TestGroup::start(2, faults, options);
        group.wait_for_leader();
        group.submit_all(1..=200);
        let applied = group.wait_converged(200);
        assert_eq!(
            applied.iter().copied().collect::<BTreeSet<u64>>(),
            (1..=200).collect(),
        );
        group.finish();
    }

    // When the leader is cut off with transitions queued on it, another replica takes
    // over; once the old leader rejoins, it reports every transition it had queued and
    // could not commit as abandoned (a new leader overwrote them, or it had stepped
    // down), none of them is applied anywhere, and everything resubmitted is applied
    // exactly once on every replica.
    #[test]
    fn leader_change_abandons_what_the_old_leader_could_not_commit() {
        // No snapshots: the old leader must see the entries that replaced its own, not a
        // snapshot over them (which would leave their outcome unknown to it).
        let options = ReplicaOptions {
            snapshot_interval_entries: 0,
            ..ReplicaOptions::default()
        };
        let group = TestGroup::start(4, reliable(), options);
        let old_leader = group.wait_for_leader();
        let stranded: Vec<u64> = (1001..=1010).collect();
        let mut isolated = false;
        let mut healed = false;
        group.submit_all_with(1..=150, |group, settled| {
            if !isolated && settled >= 50 {
                isolated = true;
                group.shared.isolated.store(old_leader, Ordering::SeqCst);
                let mut history = group.history(old_leader);
                history.pending.extend(stranded.iter().copied().map(Append));
                drop(history);
                let _ = group.notify_transition[&old_leader].send(());
            }
            let new_leader = group
                .shared
                .leaders
                .iter()
                .any(|(&id, leader)| id != old_leader && leader.load(Ordering::SeqCst) == id);
            if isolated && !healed && new_leader {
                healed = true;
                group.shared.isolated.store(NO_NODE, Ordering::SeqCst);
            }
        });
        assert!(healed, "no new leader took over");
        let applied = group.wait_converged(150);
        assert_eq!(
            applied.iter().copied().collect::<BTreeSet<u64>>(),
            (1..=150).collect()
        );
        group.wait_until("the old leader to settle what it had queued", |group| {
            let history = group.history(old_leader);
            stranded.iter().all(|id| {
                matches!(
                    history.reports.get(id).and_then(|reports| reports.last()),
                    Some(TransitionState::Abandoned(_))
                )
            })
        });
        let history = group.history(old_leader);
        for id in &stranded {
            let reports = &history.reports[id];
            let conflict = reports
                == &[
                    TransitionState::Queued,
                    TransitionState::Abandoned(TransitionAbandonedReason::ConflictWithLeader),
                ];
            let not_leader = reports
                == &[TransitionState::Abandoned(
                    TransitionAbandonedReason::NotLeader,
                )];
            assert!(conflict || not_leader, "transition {id}: {reports:?}");
        }
        drop(history);
        group.finish();
    }

    // A follower cut off while hundreds of transitions commit and the others compact
    // their logs past everything it has catches up through a chunked snapshot, then
    // follows the log again. The leader's small in-flight window to it fills with
    // appends lost to the cut, so this also proves replication recovers from that.
    #[test]
    fn lagging_follower_catches_up_through_a_snapshot() {
        let raft = Config {
            snapshot_chunk_bytes_max: 256,
            inflight_messages_max: 4,
            ..Config::default()
        };
        let options = ReplicaOptions {
            snapshot_interval_entries: 20,
            snapshot_trailing_entries: 5,
            raft,
            ..ReplicaOptions::default()
        };
        let group = TestGroup::start(3, reliable(), options);
        let leader = group.wait_for_leader();
        group.submit_all(1..=10);
        group.wait_converged(10);
        let follower = *group
            .histories
            .keys()
            .find(|&&id| id != leader)
            .expect("3 nodes");
        group.shared.isolated.store(follower, Ordering::SeqCst);

        group.submit_all(11..=300);
        let behind = group.history(follower).applied.len();
        assert!(
            behind < 300,
            "the isolated follower applied {behind} transitions"
        );
        for (&id, history) in &group.histories {
            if id != follower {
                let created = history.lock().expect("history lock").snapshots_created;
                assert!(created >= 10, "node {id} created only {created} snapshots");
            }
        }
        assert_eq!(group.history(follower).snapshots_installed, 0);

        group.shared.isolated.store(NO_NODE, Ordering::SeqCst);
        group.wait_converged(300);
        // Then it follows the log again, with no further snapshot needed.
        group.submit_all(301..=310);
        group.wait_converged(310);
        assert!(
            group.history(follower).snapshots_installed >= 1,
            "caught up without a snapshot"
        );
        group.finish();
    }
}
