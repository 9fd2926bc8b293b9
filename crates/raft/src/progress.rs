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

/// One append in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Inflight {
    /// The index of the append's last entry.
    last_index: Index,
    /// The entry bytes the append carried.
    bytes: u64,
}

/// A bounded window of in-flight appends, each remembered by its last index and bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// Ring storage, grown on demand (doubling) so a follower that never pipelines
    /// costs no memory.
    // Invariant: buffer.len() <= capacity_messages.
    buffer: Vec<Inflight>,
    /// Slot of the oldest append in flight.
    // Invariant: start < buffer.len(), or start == 0 when buffer is empty.
    start: usize,
    /// Appends in flight, in slots start, start + 1, ... (mod buffer.len()).
    // Invariant: count <= buffer.len(); their last indexes strictly increase.
    count: usize,
    /// Entry bytes in flight.
    // Invariant: bytes == the sum of the in-flight appends' bytes.
    bytes: u64,
    /// Most appends in flight, in messages.
    capacity_messages: usize,
    /// Most entry bytes in flight; 0 means no byte limit.
    capacity_bytes: u64,
}

impl Inflights {
    /// A window of at most `capacity_messages` messages and `capacity_bytes` bytes
    /// (0 = no byte limit).
    pub fn new(capacity_messages: usize, capacity_bytes: u64) -> Self {
        Inflights {
            buffer: Vec::new(),
            start: 0,
            count: 0,
            bytes: 0,
            capacity_messages,
            capacity_bytes,
        }
    }

    /// Records an append whose last entry is `last_index`, carrying `bytes`.
    /// Panics if full or if `last_index` is not above the previous one.
    pub fn add(&mut self, last_index: Index, bytes: u64) {
        assert!(
            !self.full(),
            "in-flight window is full: {} of {} messages, {} of {} bytes (0 = no limit)",
            self.count,
            self.capacity_messages,
            self.bytes,
            self.capacity_bytes
        );
        if let Some(newest) = self.newest() {
            assert!(
                last_index > newest.last_index,
                "in-flight appends must have increasing last indexes: {last_index} after {}",
                newest.last_index
            );
        }
        if self.count == self.buffer.len() {
            self.grow();
        }
        let slot = (self.start + self.count) % self.buffer.len();
        self.buffer[slot] = Inflight { last_index, bytes };
        self.count += 1;
        self.bytes += bytes;
    }

    /// Frees every in-flight append with last index `<= index`.
    pub fn free_le(&mut self, index: Index) {
        while self.count > 0 {
            let oldest = self.buffer[self.start];
            if oldest.last_index > index {
                break;
            }
            self.bytes -= oldest.bytes;
            self.count -= 1;
            self.start = (self.start + 1) % self.buffer.len();
        }
        if self.count == 0 {
            self.start = 0;
        }
    }

    /// True when no more may be sent.
    pub fn full(&self) -> bool {
        self.count >= self.capacity_messages
            || (self.capacity_bytes != 0 && self.bytes >= self.capacity_bytes)
    }

    /// Messages in flight.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Frees the oldest append in flight, if any. A leader does this when a
    /// heartbeat answer shows the follower alive while the window is full: the
    /// appends may have been lost, and one more send provokes a reply that resolves it.
    pub fn free_first_one(&mut self) {
        if let Some(oldest) = (self.count > 0).then(|| self.buffer[self.start]) {
            self.free_le(oldest.last_index);
        }
    }

    /// Forgets everything in flight.
    pub fn reset(&mut self) {
        self.start = 0;
        self.count = 0;
        self.bytes = 0;
    }

    /// The most recently added append still in flight.
    fn newest(&self) -> Option<Inflight> {
        if self.count == 0 {
            return None;
        }
        Some(self.buffer[(self.start + self.count - 1) % self.buffer.len()])
    }

    /// The in-flight appends, oldest first.
    fn iter(&self) -> impl Iterator<Item = Inflight> + '_ {
        (0..self.count).map(move |offset| self.buffer[(self.start + offset) % self.buffer.len()])
    }

    /// Doubles the ring (at most to `capacity_messages`), unrolling it so that the
    /// oldest append sits in slot 0. Only called when the ring is full.
    fn grow(&mut self) {
        debug_assert_eq!(self.count, self.buffer.len());
        let len = (self.buffer.len() * 2).clamp(1, self.capacity_messages);
        self.buffer.rotate_left(self.start);
        self.start = 0;
        self.buffer.resize(len, Inflight::default());
    }

    /// Panics, with details, if the window's invariants do not hold.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.buffer.len() <= self.capacity_messages,
            "in-flight ring of {} slots exceeds its capacity of {} messages",
            self.buffer.len(),
            self.capacity_messages
        );
        assert!(
            self.start < self.buffer.len() || (self.start == 0 && self.buffer.is_empty()),
            "in-flight ring start {} outside {} slots",
            self.start,
            self.buffer.len()
        );
        assert!(
            self.count <= self.buffer.len(),
            "in-flight count {} exceeds {} slots",
            self.count,
            self.buffer.len()
        );
        let bytes: u64 = self.iter().map(|inflight| inflight.bytes).sum();
        assert_eq!(
            self.bytes, bytes,
            "in-flight byte total disagrees with the appends"
        );
        let last_indexes: Vec<Index> = self.iter().map(|inflight| inflight.last_index).collect();
        assert!(
            last_indexes.windows(2).all(|pair| pair[0] < pair[1]),
            "in-flight last indexes not increasing: {last_indexes:?}"
        );
    }
}

/// The leader's record of one follower (or learner).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated.
    // Invariant: matched < next_index.
    pub matched: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How we are sending.
    pub state: ProgressState,
    /// In snapshot state: the snapshot's index.
    // Invariant: pending_snapshot == 0 unless state == Snapshot.
    pub pending_snapshot: Index,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In probe state: an append was sent this heartbeat interval; pause until the next.
    pub probe_sent: bool,
    /// Appends in flight (replicate state).
    // Invariant: empty unless state == Replicate; every last index is above matched.
    pub inflights: Inflights,
    /// A learner: receives the log, does not vote.
    pub is_learner: bool,
    /// The highest commit index sent to the node (in an append or heartbeat). Lets the
    /// leader skip commit-only appends the node does not need.
    pub commit_sent: Index,
}

impl Progress {
    /// A new progress in probe state with `next_index` and matched 0.
    pub fn new(next_index: Index, inflight_messages_max: usize, inflight_bytes_max: u64) -> Self {
        assert!(
            next_index > 0,
            "next_index must be at least 1 (matched 0 < next_index)"
        );
        Progress {
            matched: 0,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(inflight_messages_max, inflight_bytes_max),
            is_learner: false,
            commit_sent: 0,
        }
    }

    /// Switch to probe: next_index = matched + 1 (or after the pending snapshot when
    /// leaving snapshot state: max(matched + 1, pending_snapshot + 1)).
    pub fn become_probe(&mut self) {
        // A follower leaving snapshot state most likely installed the snapshot even if
        // we have not heard so; probing after it avoids sending it again.
        let next_index = if self.state == ProgressState::Snapshot {
            (self.matched + 1).max(self.pending_snapshot + 1)
        } else {
            self.matched + 1
        };
        self.reset_state(ProgressState::Probe);
        self.next_index = next_index;
    }

    /// Switch to replicate: next_index = matched + 1.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.matched + 1;
    }

    /// Switch to snapshot state for a snapshot at `snapshot_index`. next_index moves
    /// just after the snapshot (never to or below matched).
    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
        self.next_index = self.matched.max(snapshot_index) + 1;
    }

    /// On a successful append ack up to `index`: raise matched (and next_index), clear
    /// probe_sent. Returns true if matched moved. Frees the in-flight window up to
    /// `index` as well.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        self.inflights.free_le(index);
        if index <= self.matched {
            // A stale or duplicate acknowledgement: it says nothing new.
            return false;
        }
        self.matched = index;
        self.next_index = self.next_index.max(index + 1);
        self.probe_sent = false;
        true
    }

    /// After sending entries up to `last_index` (`bytes` total, `count` entries):
    /// in replicate state advance next_index optimistically and record the in-flight;
    /// in probe state set probe_sent. A send of zero entries only sets probe_sent in probe.
    pub fn sent_entries(&mut self, last_index: Index, count: usize, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count == 0 {
                    return;
                }
                // Replicate state sends contiguously from next_index (Raft paper §5.3).
                assert_eq!(
                    last_index + 1,
                    self.next_index + count as Index,
                    "in replicate state the {count} entries sent must start at next_index {}",
                    self.next_index
                );
                self.next_index = last_index + 1;
                self.inflights.add(last_index, bytes);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// On a rejected append for `rejected` (the prev index we sent) with the follower's
    /// hint `match_hint`: step next_index back. Returns false if the rejection is stale
    /// (ignore it). Replicate state: stale if `rejected <= matched`, else next_index =
    /// matched + 1. Probe state: stale unless `rejected == next_index - 1`, else
    /// next_index = max(min(rejected, match_hint + 1), matched + 1), probe_sent = false.
    /// Snapshot state is treated as probe state.
    pub fn maybe_decrease_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // Entries up to matched are known to be in the follower's log, so a
            // rejection at or below it comes from an older, reordered append.
            if rejected <= self.matched {
                return false;
            }
            self.next_index = self.matched + 1;
            return true;
        }
        // Outside replicate state one append is out at a time, always for the entry
        // just before next_index; any other rejection is about an older append.
        if rejected != self.next_index - 1 {
            return false;
        }
        self.next_index = rejected
            .min(match_hint.saturating_add(1))
            .max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Whether sending is paused: probe with probe_sent, replicate with full window,
    /// snapshot always.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Clears everything that belongs to the old state and enters `state`.
    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.inflights.reset();
    }

    /// Panics, with details, if this progress's invariants do not hold.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.matched < self.next_index,
            "progress breaks matched < next_index: matched {}, next_index {}",
            self.matched,
            self.next_index
        );
        assert!(
            self.state == ProgressState::Snapshot || self.pending_snapshot == 0,
            "progress in {:?} state keeps pending_snapshot {}",
            self.state,
            self.pending_snapshot
        );
        assert!(
            self.state == ProgressState::Replicate || self.inflights.count() == 0,
            "progress in {:?} state has {} appends in flight",
            self.state,
            self.inflights.count()
        );
        if let Some(oldest) = self.inflights.iter().next() {
            assert!(
                oldest.last_index > self.matched,
                "in-flight append up to {} is already matched ({})",
                oldest.last_index,
                self.matched
            );
        }
        self.inflights.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn in_flight(inflights: &Inflights) -> Vec<(Index, u64)> {
        inflights
            .iter()
            .map(|inflight| (inflight.last_index, inflight.bytes))
            .collect()
    }

    fn replicating(matched: Index, next_index: Index) -> Progress {
        let mut progress = Progress::new(next_index, 4, 0);
        progress.matched = matched;
        progress.state = ProgressState::Replicate;
        progress
    }

    #[test]
    fn inflights_fill_to_the_message_limit_and_free_in_order() {
        // Raft paper §5.3 pipelining: the window holds at most its capacity and an ack
        // frees every append it covers, oldest first.
        let mut inflights = Inflights::new(3, 0);
        inflights.add(2, 10);
        inflights.add(5, 20);
        assert!(!inflights.full());
        inflights.add(9, 30);
        assert!(inflights.full());
        assert_eq!(in_flight(&inflights), [(2, 10), (5, 20), (9, 30)]);

        inflights.free_le(6);
        assert_eq!(in_flight(&inflights), [(9, 30)]);
        assert_eq!(
            (inflights.count(), inflights.bytes, inflights.full()),
            (1, 30, false)
        );

        inflights.free_le(8);
        assert_eq!(
            inflights.count(),
            1,
            "an ack below the oldest frees nothing"
        );
        inflights.free_le(9);
        assert_eq!(
            (inflights.count(), inflights.bytes, inflights.start),
            (0, 0, 0)
        );
        inflights.check_invariants();
    }

    #[test]
    fn inflights_wrap_around_the_ring() {
        // Raft paper §5.3 pipelining: a long run of sends and acks reuses the ring's
        // slots without losing order.
        let mut inflights = Inflights::new(4, 0);
        for index in 1..=4 {
            inflights.add(index, 1);
        }
        inflights.free_le(2);
        inflights.add(5, 1);
        inflights.add(6, 1);
        assert_eq!(inflights.buffer.len(), 4);
        assert_eq!(in_flight(&inflights), [(3, 1), (4, 1), (5, 1), (6, 1)]);
        assert!(inflights.full());
        inflights.free_le(5);
        assert_eq!(in_flight(&inflights), [(6, 1)]);
        inflights.check_invariants();
    }

    #[test]
    fn inflights_grow_lazily_up_to_capacity() {
        // Raft paper §5.3 pipelining: the window's memory follows use, never its limit
        // in advance.
        let mut inflights = Inflights::new(256, 0);
        assert!(inflights.buffer.is_empty());
        inflights.add(1, 1);
        assert_eq!(inflights.buffer.len(), 1);
        inflights.add(2, 1);
        inflights.add(3, 1);
        assert_eq!(inflights.buffer.len(), 4);
        for index in 4..=256 {
            inflights.add(index, 1);
        }
        assert_eq!(inflights.buffer.len(), 256);
        assert!(inflights.full());
        inflights.check_invariants();
    }

    #[test]
    fn inflights_byte_limit_fills_the_window() {
        // Raft paper §5.3 pipelining with a byte bound: the window is full once the
        // bytes in flight reach the limit, whatever the message count.
        let mut inflights = Inflights::new(10, 100);
        inflights.add(1, 60);
        assert!(!inflights.full());
        inflights.add(2, 50);
        assert!(
            inflights.full(),
            "110 bytes in flight reach the 100-byte limit"
        );
        inflights.free_le(1);
        assert!(!inflights.full());
        inflights.reset();
        assert_eq!((inflights.count(), inflights.bytes), (0, 0));
    }

    #[test]
    #[should_panic(expected = "in-flight window is full")]
    fn inflights_add_when_full_panics() {
        // Raft paper §5.3 pipelining: sending past the window is a caller bug.
        let mut inflights = Inflights::new(1, 0);
        inflights.add(1, 1);
        inflights.add(2, 1);
    }

    #[test]
    #[should_panic(expected = "increasing last indexes")]
    fn inflights_add_out_of_order_panics() {
        // Raft paper §5.3 pipelining: appends go out in log order, so their last
        // indexes must increase.
        let mut inflights = Inflights::new(4, 0);
        inflights.add(5, 1);
        inflights.add(5, 1);
    }

    #[test]
    fn new_progress_probes_from_next_index() {
        // Raft paper §5.3: a new leader starts each follower at nextIndex with
        // matchIndex 0.
        let progress = Progress::new(7, 4, 0);
        assert_eq!(
            (progress.matched, progress.next_index, progress.state),
            (0, 7, ProgressState::Probe)
        );
        assert!(!progress.is_paused());
        progress.check_invariants();
    }

    #[test]
    fn become_probe_after_snapshot_resumes_after_it() {
        // Raft paper §7: after a snapshot the follower most likely holds everything up
        // to it, so probing continues just past the snapshot.
        let mut progress = Progress::new(5, 4, 0);
        progress.matched = 3;
        progress.become_snapshot(20);
        assert_eq!(
            (
                progress.state,
                progress.pending_snapshot,
                progress.next_index
            ),
            (ProgressState::Snapshot, 20, 21)
        );
        assert!(progress.is_paused());
        progress.become_probe();
        assert_eq!(
            (
                progress.state,
                progress.pending_snapshot,
                progress.next_index
            ),
            (ProgressState::Probe, 0, 21)
        );

        let mut progress = Progress::new(5, 4, 0);
        progress.matched = 30;
        progress.next_index = 31;
        progress.become_snapshot(20);
        assert_eq!(progress.next_index, 31, "next_index never falls to matched");
        progress.become_probe();
        assert_eq!(progress.next_index, 31);
        progress.check_invariants();
    }

    #[test]
    fn become_probe_and_replicate_restart_after_matched() {
        // Raft paper §5.3: without a snapshot, sending resumes after the last entry
        // known to match, and the old window is forgotten.
        let mut progress = replicating(4, 5);
        progress.sent_entries(8, 4, 40);
        assert_eq!((progress.next_index, progress.inflights.count()), (9, 1));
        progress.become_probe();
        assert_eq!(
            (
                progress.state,
                progress.next_index,
                progress.inflights.count()
            ),
            (ProgressState::Probe, 5, 0)
        );
        progress.probe_sent = true;
        progress.become_replicate();
        assert_eq!(
            (progress.state, progress.next_index, progress.probe_sent),
            (ProgressState::Replicate, 5, false)
        );
        progress.check_invariants();
    }

    #[test]
    fn maybe_update_raises_matched_once() {
        // Raft paper §5.3: a successful AppendEntries reply raises matchIndex and
        // nextIndex; a repeated or older reply changes nothing.
        let mut progress = replicating(2, 3);
        progress.sent_entries(4, 2, 20);
        progress.sent_entries(6, 2, 20);
        assert!(progress.maybe_update(4));
        assert_eq!(
            (
                progress.matched,
                progress.next_index,
                progress.inflights.count()
            ),
            (4, 7, 1)
        );
        assert!(!progress.maybe_update(4));
        assert!(!progress.maybe_update(3));
        assert!(progress.maybe_update(10));
        assert_eq!(
            (
                progress.matched,
                progress.next_index,
                progress.inflights.count()
            ),
            (10, 11, 0)
        );
        progress.check_invariants();

        let mut progress = Progress::new(5, 4, 0);
        progress.probe_sent = true;
        assert!(progress.maybe_update(2));
        assert_eq!(
            (progress.matched, progress.next_index, progress.probe_sent),
            (2, 5, false)
        );
    }

    #[test]
    fn sent_entries_pipelines_in_replicate_and_pauses_in_probe() {
        // Raft paper §5.3: a replicating follower gets appends back to back until the
        // window fills; a probed one gets one per heartbeat.
        let mut progress = replicating(0, 1);
        for (last_index, count) in [(2, 2), (3, 1), (6, 3), (7, 1)] {
            assert!(!progress.is_paused());
            progress.sent_entries(last_index, count, 8);
        }
        assert_eq!((progress.next_index, progress.inflights.count()), (8, 4));
        assert!(progress.is_paused(), "window of 4 messages is full");
        progress.sent_entries(7, 0, 0);
        assert_eq!(progress.next_index, 8, "an empty send moves nothing");

        let mut progress = Progress::new(3, 4, 0);
        progress.sent_entries(2, 0, 0);
        assert!(progress.probe_sent && progress.is_paused());
        assert_eq!((progress.next_index, progress.inflights.count()), (3, 0));
    }

    #[test]
    fn maybe_decrease_to_in_replicate_falls_back_to_matched() {
        // Raft paper §5.3: a rejection above matchIndex means the pipeline went wrong,
        // so sending restarts after matchIndex; one at or below is stale.
        let mut progress = replicating(5, 10);
        assert!(!progress.maybe_decrease_to(5, 5));
        assert!(!progress.maybe_decrease_to(4, 4));
        assert_eq!(progress.next_index, 10);
        assert!(progress.maybe_decrease_to(9, 9));
        assert_eq!(progress.next_index, 6);
    }

    #[test]
    fn maybe_decrease_to_in_probe_uses_the_hint() {
        // Raft paper §5.3 (the optimisation at the end): the follower's hint lets the
        // leader skip back several entries in one round trip, never below matchIndex.
        let mut progress = Progress::new(10, 4, 0);
        progress.probe_sent = true;
        assert!(
            !progress.maybe_decrease_to(5, 1),
            "rejects only the probe at next_index - 1"
        );
        assert!(progress.maybe_decrease_to(9, 3));
        assert_eq!((progress.next_index, progress.probe_sent), (4, false));
        assert!(
            progress.maybe_decrease_to(3, 7),
            "hint above rejected: step to rejected"
        );
        assert_eq!(progress.next_index, 3);

        let mut progress = Progress::new(10, 4, 0);
        progress.matched = 5;
        assert!(progress.maybe_decrease_to(9, 0));
        assert_eq!(progress.next_index, 6, "never below matched + 1");
        progress.check_invariants();
    }

    #[derive(Clone, Debug)]
    enum InflightsOp {
        Add { gap: Index, bytes: u64 },
        FreeLe { back: Index },
        Reset,
    }

    fn inflights_op() -> impl Strategy<Value = InflightsOp> {
        prop_oneof![
            4 => (1..4u64, 0..50u64).prop_map(|(gap, bytes)| InflightsOp::Add { gap, bytes }),
            3 => (0..8u64).prop_map(|back| InflightsOp::FreeLe { back }),
            1 => Just(InflightsOp::Reset),
        ]
    }

    proptest! {
        /// Under random sends, acks and resets the ring buffer holds exactly what a
        /// VecDeque model holds and reports full exactly when the model's limits are
        /// reached (Raft paper §5.3 pipelining).
        #[test]
        fn inflights_match_vecdeque_model(
            capacity_messages in 1..9usize,
            capacity_bytes in prop_oneof![Just(0u64), 1..200u64],
            ops in proptest::collection::vec(inflights_op(), 0..200),
        ) {
            let mut inflights = Inflights::new(capacity_messages, capacity_bytes);
            let mut model: VecDeque<(Index, u64)> = VecDeque::new();
            let mut last_index: Index = 0;
            for op in ops {
                let model_bytes: u64 = model.iter().map(|&(_, bytes)| bytes).sum();
                let model_full = model.len() >= capacity_messages
                    || (capacity_bytes != 0 && model_bytes >= capacity_bytes);
                prop_assert_eq!(inflights.full(), model_full);
                match op {
                    InflightsOp::Add { gap, bytes } => {
                        if model_full {
                            continue;
                        }
                        last_index += gap;
                        inflights.add(last_index, bytes);
                        model.push_back((last_index, bytes));
                    }
                    InflightsOp::FreeLe { back } => {
                        let index = last_index.saturating_sub(back);
                        inflights.free_le(index);
                        while model.front().is_some_and(|&(last, _)| last <= index) {
                            model.pop_front();
                        }
                    }
                    InflightsOp::Reset => {
                        inflights.reset();
                        model.clear();
                    }
                }
                inflights.check_invariants();
                prop_assert_eq!(inflights.count(), model.len());
                prop_assert_eq!(in_flight(&inflights), model.iter().copied().collect::<Vec<_>>());
            }
        }
    }
}
