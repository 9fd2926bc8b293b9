//! A client's exactly-once session with one group: its registered id and the
//! numbering of its requests (Raft thesis §6.3).
//!
//! Each proposal takes the next request number and keeps it for every retry. The
//! lowest number still in flight is sent with each request as `first_unanswered`, so
//! the group forgets results the client will never ask for again, and refuses any
//! late copy of them.

use std::collections::BTreeSet;

use concord_types::{ClientId, RequestId};

/// One group's session. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    client: ClientId,
    // Invariant: every number in `in_flight` is below `next_sequence`.
    next_sequence: u64,
    /// Requests sent and not yet finished (answered, or given up on).
    in_flight: BTreeSet<u64>,
}

impl Session {
    /// A session of the newly registered `client`.
    pub(crate) fn new(client: ClientId) -> Session {
        Session {
            client,
            next_sequence: 1,
            in_flight: BTreeSet::new(),
        }
    }

    /// The client's id.
    pub(crate) fn client(&self) -> ClientId {
        self.client
    }

    /// Numbers a new request.
    pub(crate) fn start(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.in_flight.insert(sequence);
        sequence
    }

    /// The id to send request `sequence` with now (first or again).
    pub(crate) fn id(&self, sequence: u64) -> RequestId {
        let first_unanswered = self
            .in_flight
            .first()
            .copied()
            .unwrap_or(sequence)
            .min(sequence);
        RequestId {
            client: self.client,
            sequence,
            first_unanswered,
        }
    }

    /// Request `sequence` is done with: answered, or given up on (it will never be
    /// sent again).
    pub(crate) fn finish(&mut self, sequence: u64) {
        self.in_flight.remove(&sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries keep their number; `first_unanswered` is the oldest request in flight
    /// and never above the request itself.
    #[test]
    fn numbers_requests_and_acknowledges_the_oldest_unfinished() {
        let mut session = Session::new(7);
        let one = session.start();
        let two = session.start();
        assert_eq!((one, two), (1, 2));
        assert_eq!(
            session.id(two),
            RequestId {
                client: 7,
                sequence: 2,
                first_unanswered: 1
            }
        );
        session.finish(one);
        assert_eq!(session.id(two).first_unanswered, 2);
        let three = session.start();
        session.finish(two);
        assert_eq!(session.id(three).first_unanswered, 3);
        session.finish(three);
        let four = session.start();
        assert!(session.id(four).is_valid());
        assert_eq!(session.id(four).first_unanswered, 4);
    }
}
