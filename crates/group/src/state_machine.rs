//! What a group replicates: the [`StateMachine`] every concord group runs (the
//! runtime's apply tasks and the simulator call it the same way), a typed layer
//! ([`TypedStateMachine`]) for code that never wants to see bytes, and
//! [`ExactlyOnce`], which gives a plain state machine the exactly-once table.
//!
//! A state machine is called from one place at a time, in log order. `apply` must be
//! deterministic: every replica applies the same commands in the same order and must
//! reach the same state. No replica may read a clock inside `apply`: time enters only
//! as values inside commands (a leader proposes "expire sessions idle since t").

use std::io::{self, Read, Write};
use std::marker::PhantomData;

use bytes::Bytes;
use concord_raft::{Index, Term};
use concord_types::{GroupId, RequestId};

use crate::exactly_once::{ClientTable, ClientTableLimits};
use crate::framing::GroupSpec;

/// A state machine failure. From `apply`, `snapshot` or `restore` it stops the group
/// on this node (visibly: in its status, its metrics and to every caller); from
/// `query` it is only that query's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateMachineError(pub String);

impl From<io::Error> for StateMachineError {
    fn from(error: io::Error) -> Self {
        StateMachineError(error.to_string())
    }
}

/// What `apply` knows about the entry it applies, and where it puts events.
#[derive(Debug)]
pub struct ApplyContext<'a> {
    index: Index,
    term: Term,
    request: Option<RequestId>,
    events: &'a mut Vec<Bytes>,
}

impl<'a> ApplyContext<'a> {
    /// A context for the entry at `index` of `term`, collecting events into `events`.
    pub fn new(
        index: Index,
        term: Term,
        request: Option<RequestId>,
        events: &'a mut Vec<Bytes>,
    ) -> Self {
        ApplyContext {
            index,
            term,
            request,
            events,
        }
    }

    /// The entry's log index.
    pub fn index(&self) -> Index {
        self.index
    }

    /// The term of the leader that appended it.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The exactly-once id the command came with, if any.
    pub fn request(&self) -> Option<RequestId> {
        self.request
    }

    /// Publishes `event` to this node's local subscribers of the group, in apply
    /// order, once the entry is applied. Delivery only: a subscriber that falls
    /// behind misses events, so history that must survive (a watch resumed from a
    /// revision) is state the state machine keeps.
    pub fn emit(&mut self, event: Bytes) {
        self.events.push(event);
    }
}

/// A change of this node's leadership of the group, delivered to the state machine
/// in apply order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaderNotice {
    /// This node leads `term`, and the first entry of `term` (the leader's no-op) is
    /// applied: the state machine holds everything committed before the term began,
    /// so leader-driven commands may be proposed from it.
    Elected {
        /// The term led.
        term: Term,
    },
    /// This node no longer leads `term` (it may come without `Elected` when the term
    /// ended before its first entry applied).
    SteppedDown {
        /// The term it led.
        term: Term,
    },
}

/// A replicated state machine over bytes. See the module docs.
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `context.index()` and returns the response
    /// its proposer receives. Deterministic. A command the state machine cannot use
    /// is not an error: it must still be applied identically everywhere (as a no-op
    /// with an error response, say). `Err` means the state machine cannot go on (its
    /// storage failed): the group stops on this node.
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError>;

    /// Answers a read-only query from the current state.
    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError>;

    /// Writes the whole state (as of the last applied index) to `sink`.
    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError>;

    /// Replaces the whole state with a snapshot written by
    /// [`StateMachine::snapshot`], read from `source` to its end.
    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError>;

    /// Hears of this node's leadership changes, in apply order; returns commands to
    /// propose now (leader-driven work such as expiring sessions). Nothing by default.
    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        let _ = notice;
        Vec::new()
    }

    /// The exactly-once table this state machine keeps (in its snapshot), if it
    /// keeps one. Without it, registrations and requests carrying a [`RequestId`] are
    /// refused (`InvalidRequest`) by every replica alike, never applied: nothing could
    /// stop a retry applying twice.
    fn client_table(&mut self) -> Option<&mut ClientTable> {
        None
    }

    /// For a state machine that keeps its state durably itself: the highest index
    /// whose effects are durable (with the data, atomically). `None` (the default):
    /// the state lives in memory and is rebuilt from the latest snapshot and the log.
    ///
    /// With `Some`, the log is never compacted past it, and at restart the state
    /// machine the factory makes (reopening its data) is not restored from the
    /// group's snapshot: the log after its durable index is replayed into it, and
    /// entries it already holds are not handed to it again. It is restored from a
    /// snapshot only when its data is behind what the log still has (lost, say) and
    /// when the leader sends one; `restore` must then replace the durable state and
    /// its durable index (the snapshot's bytes are what `snapshot` wrote, so keep the
    /// applied index in them). Keep the exactly-once table with the data too
    /// ([`StateMachine::client_table`]): the runtime does not wrap a durable state
    /// machine in [`ExactlyOnce`].
    fn durable_index(&self) -> Option<Index> {
        None
    }
}

impl<S: StateMachine + ?Sized> StateMachine for Box<S> {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        (**self).apply(context, command)
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        (**self).query(query)
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        (**self).snapshot(sink)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        (**self).restore(source)
    }

    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        (**self).on_leader_change(notice)
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        (**self).client_table()
    }

    fn durable_index(&self) -> Option<Index> {
        (**self).durable_index()
    }
}

/// Makes a fresh state machine (initial state) for a group, when the group is
/// created, joined, or reloaded at restart (then restored from its snapshot).
pub trait StateMachineFactory: Send + Sync + 'static {
    /// A state machine for `group`, of the kind and description `spec` gives.
    fn create(
        &self,
        group: GroupId,
        spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError>;
}

impl<F, S> StateMachineFactory for F
where
    F: Fn(GroupId) -> S + Send + Sync + 'static,
    S: StateMachine,
{
    fn create(
        &self,
        group: GroupId,
        _spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        Ok(Box::new(self(group)))
    }
}

/// Gives a plain state machine exactly-once requests: keeps a [`ClientTable`] next to
/// it and writes both into snapshots (`[table][inner snapshot]`). The runtime wraps
/// every state machine a factory makes in it unless told not to.
pub struct ExactlyOnce<S> {
    table: ClientTable,
    inner: S,
}

impl<S: StateMachine> ExactlyOnce<S> {
    /// `inner` with an empty table bounded by `limits`.
    pub fn new(inner: S, limits: ClientTableLimits) -> Self {
        ExactlyOnce {
            table: ClientTable::new(limits),
            inner,
        }
    }

    /// The wrapped state machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The table.
    pub fn table(&self) -> &ClientTable {
        &self.table
    }
}

impl<S: StateMachine> StateMachine for ExactlyOnce<S> {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        self.inner.apply(context, command)
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        self.inner.query(query)
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        self.table.write_to(sink)?;
        self.inner.snapshot(sink)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        self.table = ClientTable::read_from(source)
            .map_err(|error| StateMachineError(format!("reading the client table: {error}")))?;
        self.inner.restore(source)
    }

    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        self.inner.on_leader_change(notice)
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        Some(&mut self.table)
    }

    fn durable_index(&self) -> Option<Index> {
        self.inner.durable_index()
    }
}

/// Why bytes could not be decoded into a typed value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decoding: {0}")]
pub struct DecodeError(pub String);

/// A value that travels as bytes: commands, queries and responses of a typed state
/// machine.
pub trait LogEntry: Sized + Send + 'static {
    /// The value as bytes.
    fn encode(&self) -> Bytes;
    /// The value from bytes made by [`LogEntry::encode`].
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

impl LogEntry for Bytes {
    fn encode(&self) -> Bytes {
        self.clone()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl LogEntry for () {
    fn encode(&self) -> Bytes {
        Bytes::new()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError(format!(
                "expected no bytes, got {}",
                bytes.len()
            )))
        }
    }
}

/// A state machine with typed commands, queries and responses, kept in memory (no
/// durable index; the runtime gives it an exactly-once table). Wrap it in [`Typed`]
/// to run it in a group.
pub trait TypedStateMachine: Send + 'static {
    /// What a proposal carries.
    type Command: LogEntry;
    /// What applying a command answers.
    type Response: LogEntry;
    /// What a read asks.
    type Query: LogEntry;
    /// What a read answers.
    type QueryResponse: LogEntry;

    /// Applies a committed command (deterministically).
    fn apply(&mut self, context: &mut ApplyContext<'_>, command: Self::Command) -> Self::Response;
    /// Answers a query from the current state.
    fn query(&self, query: Self::Query) -> Self::QueryResponse;
    /// Writes the whole state.
    fn snapshot(&self, sink: &mut dyn Write) -> io::Result<()>;
    /// Replaces the whole state with a snapshot.
    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError>;
    /// The response to a committed command that does not decode (proposed as raw
    /// bytes by someone else). It is applied everywhere alike: no state change.
    fn undecodable_command(&mut self, index: Index, error: DecodeError) -> Option<Self::Response> {
        let _ = (index, error);
        None
    }
    /// This replica's leadership changed (see [`StateMachine::on_leader_change`]);
    /// returns commands to propose. The default proposes none.
    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Self::Command> {
        let _ = notice;
        Vec::new()
    }
}

/// Runs a [`TypedStateMachine`] as a [`StateMachine`]: decodes commands and queries,
/// encodes responses.
pub struct Typed<M>(pub M);

impl<M: TypedStateMachine> StateMachine for Typed<M> {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        Ok(match M::Command::decode(&command) {
            Ok(command) => self.0.apply(context, command).encode(),
            Err(error) => self
                .0
                .undecodable_command(context.index(), error)
                .map(|response| response.encode())
                .unwrap_or_default(),
        })
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        let query =
            M::Query::decode(&query).map_err(|error| StateMachineError(error.to_string()))?;
        Ok(self.0.query(query).encode())
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        Ok(self.0.snapshot(sink)?)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        self.0.restore(source)
    }

    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        let commands = self.0.on_leader_change(notice);
        commands.iter().map(LogEntry::encode).collect()
    }
}

/// Marker tying a typed handle to its state machine type.
pub struct TypeTag<M>(PhantomData<fn() -> M>);

impl<M> Clone for TypeTag<M> {
    fn clone(&self) -> Self {
        TypeTag(PhantomData)
    }
}

impl<M> Default for TypeTag<M> {
    fn default() -> Self {
        TypeTag(PhantomData)
    }
}

impl<M> std::fmt::Debug for TypeTag<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypeTag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proposes `elected <term>` when told it leads.
    struct Greeter;

    impl TypedStateMachine for Greeter {
        type Command = Bytes;
        type Response = Bytes;
        type Query = Bytes;
        type QueryResponse = Bytes;

        fn apply(&mut self, _: &mut ApplyContext<'_>, command: Bytes) -> Bytes {
            command
        }
        fn query(&self, query: Bytes) -> Bytes {
            query
        }
        fn snapshot(&self, _: &mut dyn Write) -> io::Result<()> {
            Ok(())
        }
        fn restore(&mut self, _: &mut dyn Read) -> Result<(), StateMachineError> {
            Ok(())
        }
        fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
            match notice {
                LeaderNotice::Elected { term } => vec![Bytes::from(format!("elected {term}"))],
                LeaderNotice::SteppedDown { .. } => Vec::new(),
            }
        }
    }

    /// `Typed` hands leadership notices to the typed state machine and encodes what it
    /// asks to propose.
    #[test]
    fn typed_forwards_leadership_notices() {
        let mut typed = Typed(Greeter);
        assert_eq!(
            StateMachine::on_leader_change(&mut typed, LeaderNotice::Elected { term: 3 }),
            vec![Bytes::from_static(b"elected 3")]
        );
        assert!(
            StateMachine::on_leader_change(&mut typed, LeaderNotice::SteppedDown { term: 3 })
                .is_empty()
        );
    }
}
