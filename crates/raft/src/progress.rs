//! The leader's view of each follower's log (Raft paper §5.3 nextIndex/matchIndex),
//! with flow control: probe, replicate and snapshot states and a bounded in-flight
//! window.

use crate::types::Index;

/// How the leader is currently sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// One append per heartbeat until we find where the follower's log matches.
    Probe,
    /// Optimistic pipelining: send without waiting, up to the in-flight window.
    Replicate,
    /// A snapshot is being sent; appends wait until it is installed.
    Snapshot,
}

/// A bounded window of in-flight appends, each remembered by its last index and bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    // filled in by the implementation (a ring buffer)
}

impl Inflights {
    /// A window of at most `capacity_messages` messages and `capacity_bytes` bytes
    /// (0 = no byte limit).
    pub fn new(capacity_messages: usize, capacity_bytes: u64) -> Self { let _ = (capacity_messages, capacity_bytes); todo!() }
    /// Records an append whose last entry is `last_index`, carrying `bytes`.
    /// Panics if full or if `last_index` is not above the previous one.
    pub fn add(&mut self, last_index: Index, bytes: u64) { let _ = (last_index, bytes); todo!() }
    /// Frees every in-flight append with last index `<= index`.
    pub fn free_le(&mut self, index: Index) { let _ = index; todo!() }
    /// True when no more may be sent.
    pub fn full(&self) -> bool { todo!() }
    /// Messages in flight.
    pub fn count(&self) -> usize { todo!() }
    /// Forgets everything in flight.
    pub fn reset(&mut self) { todo!() }
}

/// The leader's record of one follower (or learner).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Invariant: matched < next_index. The highest index known to be replicated.
    pub matched: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How we are sending.
    pub state: ProgressState,
    /// In snapshot state: the snapshot's index.
    pub pending_snapshot: Index,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In probe state: an append was sent this heartbeat interval; pause until the next.
    pub probe_sent: bool,
    /// Appends in flight (replicate state).
    pub inflights: Inflights,
    /// A learner: receives the log, does not vote.
    pub is_learner: bool,
}

impl Progress {
    /// A new progress in probe state with `next_index` and matched 0.
    pub fn new(next_index: Index, inflight_messages_max: usize, inflight_bytes_max: u64) -> Self { let _ = (next_index, inflight_messages_max, inflight_bytes_max); todo!() }
    /// Switch to probe: next_index = matched + 1 (or after the pending snapshot when
    /// leaving snapshot state: max(matched + 1, pending_snapshot + 1)).
    pub fn become_probe(&mut self) { todo!() }
    /// Switch to replicate: next_index = matched + 1.
    pub fn become_replicate(&mut self) { todo!() }
    /// Switch to snapshot state for a snapshot at `snapshot_index`.
    pub fn become_snapshot(&mut self, snapshot_index: Index) { todo!() }
    /// On a successful append ack up to `index`: raise matched (and next_index), clear
    /// probe_sent. Returns true if matched moved. Frees the in-flight window up to
    /// `index` as well.
    pub fn maybe_update(&mut self, index: Index) -> bool { let _ = index; todo!() }
    /// After sending entries up to `last_index` (`bytes` total, `count` entries):
    /// in replicate state advance next_index optimistically and record the in-flight;
    /// in probe state set probe_sent. A send of zero entries only sets probe_sent in probe.
    pub fn sent_entries(&mut self, last_index: Index, count: usize, bytes: u64) { let _ = (last_index, count, bytes); todo!() }
    /// On a rejected append for `rejected` (the prev index we sent) with the follower's
    /// hint `match_hint`: step next_index back. Returns false if the rejection is stale
    /// (ignore it). Replicate state: stale if `rejected <= matched`, else next_index =
    /// matched + 1. Probe state: stale unless `rejected == next_index - 1`, else
    /// next_index = max(min(rejected, match_hint + 1), matched + 1), probe_sent = false.
    pub fn maybe_decrease_to(&mut self, rejected: Index, match_hint: Index) -> bool { let _ = (rejected, match_hint); todo!() }
    /// Whether sending is paused: probe with probe_sent, replicate with full window,
    /// snapshot always.
    pub fn is_paused(&self) -> bool { todo!() }
}
