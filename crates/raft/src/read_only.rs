//! Pending ReadIndex requests on a leader (Raft thesis §6.4): each waits until a quorum
//! has answered a heartbeat sent after the request arrived, which proves the leader was
//! still the leader when it recorded the read's commit index.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;

use crate::types::{Index, NodeId};

/// Most read requests a leader keeps waiting for a heartbeat quorum at once. Past it,
/// `read_index` is refused rather than queued.
pub const PENDING_READS_MAX: usize = 4096;

/// One read waiting for its heartbeat quorum.
#[derive(Clone, Debug)]
pub struct PendingRead {
    /// The caller's context (unique per request).
    pub context: Bytes,
    /// Who asked: this node, or a follower that forwarded the request.
    pub from: NodeId,
    /// The leader's commit index when the request arrived.
    pub index: Index,
    /// Voters that acknowledged a heartbeat carrying this context (or a later one).
    pub acks: BTreeSet<NodeId>,
}

/// The queue of pending reads, oldest first.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    // Invariant: contexts are unique; `index` never decreases along the queue.
    queue: VecDeque<PendingRead>,
}

impl ReadOnly {
    /// Queues a read; returns false if `context` is already pending (a duplicate).
    pub fn add_request(&mut self, index: Index, context: Bytes, from: NodeId) -> bool {
        if self.queue.iter().any(|read| read.context == context) {
            return false;
        }
        self.queue.push_back(PendingRead {
            context,
            from,
            index,
            acks: BTreeSet::new(),
        });
        true
    }

    /// Records that `from` answered a heartbeat carrying `context`. Because heartbeats
    /// are answered in order, an ack for a context also acks every older request.
    /// Returns the acks of the request for `context`, if it is pending.
    pub fn receive_ack(&mut self, from: NodeId, context: &[u8]) -> Option<&BTreeSet<NodeId>> {
        let position = self.queue.iter().position(|read| read.context == context)?;
        for read in self.queue.iter_mut().take(position + 1) {
            read.acks.insert(from);
        }
        Some(&self.queue[position].acks)
    }

    /// Removes and returns every request up to and including the one for `context`.
    pub fn advance(&mut self, context: &[u8]) -> Vec<PendingRead> {
        match self.queue.iter().position(|read| read.context == context) {
            Some(position) => self.queue.drain(..=position).collect(),
            None => Vec::new(),
        }
    }

    /// The newest pending context, carried by periodic heartbeats so that lost
    /// heartbeat rounds are retried.
    pub fn last_pending_context(&self) -> Option<&Bytes> {
        self.queue.back().map(|read| &read.context)
    }

    /// Number of pending reads.
    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ack for a newer context acknowledges every older pending read too, and
    /// advancing releases them in order (thesis §6.4: reads are served in order).
    #[test]
    fn ack_covers_older_requests_and_advance_releases_in_order() {
        let mut read_only = ReadOnly::default();
        assert!(read_only.add_request(5, Bytes::from_static(b"a"), 1));
        assert!(read_only.add_request(7, Bytes::from_static(b"b"), 2));
        assert!(!read_only.add_request(7, Bytes::from_static(b"b"), 2));
        let acks = read_only.receive_ack(3, b"b").unwrap().clone();
        assert_eq!(acks, BTreeSet::from([3]));
        assert!(read_only.receive_ack(3, b"zz").is_none());
        let released = read_only.advance(b"b");
        let summary: Vec<(Index, NodeId, usize)> = released
            .iter()
            .map(|read| (read.index, read.from, read.acks.len()))
            .collect();
        assert_eq!(summary, vec![(5, 1, 1), (7, 2, 1)]);
        assert_eq!(read_only.pending_count(), 0);
    }
}
