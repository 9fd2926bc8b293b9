//! What the user replicates: a [`StateMachine`] over raw bytes, and a typed layer
//! ([`TypedStateMachine`] with [`LogEntry`] commands, queries and responses) for code
//! that never wants to see bytes.
//!
//! A state machine lives on its group's apply task: it is called from one task at a
//! time, in log order, and never concurrently with itself. `apply` must be
//! deterministic: every replica applies the same commands in the same order and must
//! reach the same state.

use std::marker::PhantomData;

use bytes::Bytes;
use concord_raft::Index;

use crate::GroupId;

/// A state machine error: a query it cannot answer or a snapshot it cannot restore.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateMachineError(pub String);

/// A replicated state machine over raw bytes.
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at log `index` and returns the response the
    /// proposer receives. Deterministic; it cannot fail (a command it cannot use must
    /// still be applied identically everywhere, e.g. as a no-op with an error response).
    fn apply(&mut self, index: Index, command: Bytes) -> Bytes;

    /// Answers a read-only query from the current state.
    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError>;

    /// Serializes the whole state (as of the last applied index).
    fn snapshot(&self) -> Bytes;

    /// Replaces the whole state with a snapshot taken by [`StateMachine::snapshot`].
    fn restore(&mut self, snapshot: Bytes) -> Result<(), StateMachineError>;
}

impl<S: StateMachine + ?Sized> StateMachine for Box<S> {
    fn apply(&mut self, index: Index, command: Bytes) -> Bytes {
        (**self).apply(index, command)
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        (**self).query(query)
    }

    fn snapshot(&self) -> Bytes {
        (**self).snapshot()
    }

    fn restore(&mut self, snapshot: Bytes) -> Result<(), StateMachineError> {
        (**self).restore(snapshot)
    }
}

/// Makes a fresh state machine (empty state) for a group, when the group is created,
/// joined, or reloaded at restart (then restored from its snapshot).
pub trait StateMachineFactory: Send + Sync + 'static {
    /// A state machine for `group` in its initial state.
    fn create(&self, group: GroupId) -> Box<dyn StateMachine>;
}

impl<F, S> StateMachineFactory for F
where
    F: Fn(GroupId) -> S + Send + Sync + 'static,
    S: StateMachine,
{
    fn create(&self, group: GroupId) -> Box<dyn StateMachine> {
        Box::new(self(group))
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

/// A state machine with typed commands, queries and responses. Wrap it in [`Typed`]
/// to run it in a node, and talk to it through [`crate::TypedGroup`].
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
    fn apply(&mut self, index: Index, command: Self::Command) -> Self::Response;
    /// Answers a query from the current state.
    fn query(&self, query: Self::Query) -> Self::QueryResponse;
    /// Serializes the whole state.
    fn snapshot(&self) -> Bytes;
    /// Replaces the whole state with a snapshot.
    fn restore(&mut self, snapshot: Bytes) -> Result<(), StateMachineError>;
    /// The response to a committed command that does not decode (proposed as raw
    /// bytes by someone else). It is applied everywhere alike: no state change.
    fn undecodable_command(&mut self, index: Index, error: DecodeError) -> Option<Self::Response> {
        let _ = (index, error);
        None
    }
}

/// Runs a [`TypedStateMachine`] as a [`StateMachine`]: decodes commands and queries,
/// encodes responses.
pub struct Typed<M>(pub M);

impl<M: TypedStateMachine> StateMachine for Typed<M> {
    fn apply(&mut self, index: Index, command: Bytes) -> Bytes {
        match M::Command::decode(&command) {
            Ok(command) => self.0.apply(index, command).encode(),
            Err(error) => self
                .0
                .undecodable_command(index, error)
                .map(|response| response.encode())
                .unwrap_or_default(),
        }
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        let query =
            M::Query::decode(&query).map_err(|error| StateMachineError(error.to_string()))?;
        Ok(self.0.query(query).encode())
    }

    fn snapshot(&self) -> Bytes {
        self.0.snapshot()
    }

    fn restore(&mut self, snapshot: Bytes) -> Result<(), StateMachineError> {
        self.0.restore(snapshot)
    }
}

/// Marker tying a [`crate::TypedGroup`] to its state machine type.
pub(crate) struct TypeTag<M>(PhantomData<fn() -> M>);

impl<M> Clone for TypeTag<M> {
    fn clone(&self) -> Self {
        TypeTag(PhantomData)
    }
}

impl<M> TypeTag<M> {
    pub(crate) fn new() -> Self {
        TypeTag(PhantomData)
    }
}
