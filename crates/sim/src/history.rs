//! The history of client operations on a key-value store, as the simulator's client
//! oracle saw it: when each operation was invoked, and when and how it completed.
//!
//! The oracle calls [`History::invoke`] when a client sends an operation and one of
//! [`History::complete`], [`History::fail`] or [`History::unknown`] when the client
//! learns what became of it. An unknown outcome can be settled later, when the
//! simulator learns from the replicas whether the operation was applied:
//! [`History::took_effect`] or [`History::fail`]. Settling is worth it, as every
//! unknown outcome multiplies the checker's work. [`crate::linearizability::check`]
//! then decides whether some order of the operations, each taking effect at one
//! instant inside its interval, explains every response.
//!
//! Times are simulated instants in whatever unit the simulator counts; only their order
//! matters. An operation that completes at the same instant another is invoked counts
//! as concurrent with it, never as before it: the checker must not invent an order the
//! simulator did not observe.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

/// Identifies one client of the store. Operations from one client are sequential.
pub type ClientId = u64;

/// Identifies one operation in a [`History`]: its position in invocation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    /// The position of the operation in [`History::operations`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {}", self.0)
    }
}

/// An operation on one key of the store. A key that was never written is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the value of `key` to `value`. Responds [`Response::Ok`].
    Put {
        /// The key written.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Read the value of `key`. Responds [`Response::Value`].
    Get {
        /// The key read.
        key: Bytes,
    },
    /// Set the value of `key` to its old value (empty if absent) followed by `suffix`.
    /// Responds [`Response::Ok`]. Appends make histories very checkable: a read shows
    /// every append before it, in order.
    Append {
        /// The key written.
        key: Bytes,
        /// The bytes added to the end of the value.
        suffix: Bytes,
    },
    /// Append `suffix` to `key` and to `other` in one transaction. Responds
    /// [`Response::Ok`]. Each key's history sees it as an append; that both took
    /// effect or neither is the atomicity check's.
    AppendBoth {
        /// The first key written.
        key: Bytes,
        /// The second key written.
        other: Bytes,
        /// The bytes added to the end of both values.
        suffix: Bytes,
    },
    /// Compare and swap: if the value of `key` equals `expected` (`None`: the key is
    /// absent), set it to `new`. Responds [`Response::Cas`] with whether it did.
    Cas {
        /// The key compared and maybe written.
        key: Bytes,
        /// The value the key must hold for the swap to happen.
        expected: Option<Bytes>,
        /// The value written if the swap happens.
        new: Bytes,
    },
}

impl Op {
    /// A [`Op::Put`].
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`Op::Get`].
    pub fn get(key: impl Into<Bytes>) -> Op {
        Op::Get { key: key.into() }
    }

    /// A [`Op::Append`].
    pub fn append(key: impl Into<Bytes>, suffix: impl Into<Bytes>) -> Op {
        Op::Append {
            key: key.into(),
            suffix: suffix.into(),
        }
    }

    /// A [`Op::Cas`].
    pub fn cas(
        key: impl Into<Bytes>,
        expected: Option<impl Into<Bytes>>,
        new: impl Into<Bytes>,
    ) -> Op {
        Op::Cas {
            key: key.into(),
            expected: expected.map(Into::into),
            new: new.into(),
        }
    }

    /// The key the operation reads or writes.
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Put { key, .. }
            | Op::Get { key }
            | Op::Append { key, .. }
            | Op::AppendBoth { key, .. }
            | Op::Cas { key, .. } => key,
        }
    }

    /// Every key the operation reads or writes.
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Op::AppendBoth { key, other, .. } => vec![key, other],
            _ => vec![self.key()],
        }
    }

    /// Whether the operation never changes the store.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Whether `response` is the kind of response this operation gives.
    pub fn accepts(&self, response: &Response) -> bool {
        matches!(
            (self, response),
            (
                Op::Put { .. } | Op::Append { .. } | Op::AppendBoth { .. },
                Response::Ok
            ) | (Op::Get { .. }, Response::Value(_))
                | (Op::Cas { .. }, Response::Cas(_))
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put {} {}", ShowBytes(key), ShowBytes(value)),
            Op::Get { key } => write!(f, "get {}", ShowBytes(key)),
            Op::Append { key, suffix } => {
                write!(f, "append {} {}", ShowBytes(key), ShowBytes(suffix))
            }
            Op::AppendBoth { key, other, suffix } => write!(
                f,
                "append-both {} {} {}",
                ShowBytes(key),
                ShowBytes(other),
                ShowBytes(suffix)
            ),
            Op::Cas { key, expected, new } => write!(
                f,
                "cas {} {} => {}",
                ShowBytes(key),
                ShowValue(expected.as_ref()),
                ShowBytes(new)
            ),
        }
    }
}

/// What an operation returned to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A [`Op::Put`], [`Op::Append`] or [`Op::AppendBoth`] took effect.
    Ok,
    /// A [`Op::Get`] read this value (`None`: the key was absent).
    Value(Option<Bytes>),
    /// Whether a [`Op::Cas`] swapped.
    Cas(bool),
}

impl Response {
    /// A [`Response::Value`].
    pub fn value(value: Option<impl Into<Bytes>>) -> Response {
        Response::Value(value.map(Into::into))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Ok => f.write_str("ok"),
            Response::Value(value) => write!(f, "{}", ShowValue(value.as_ref())),
            Response::Cas(swapped) => f.write_str(if *swapped { "swapped" } else { "not swapped" }),
        }
    }
}

/// What became of an operation, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Invoked and not yet answered. The checker treats it as [`Outcome::Unknown`]: a
    /// run that ends leaves it in doubt.
    Pending,
    /// The client got `response` at `time`: the operation took effect exactly once,
    /// between its invocation and `time`.
    Completed {
        /// When the client got the response.
        time: u64,
        /// The response.
        response: Response,
    },
    /// The client learnt at `time` that the operation certainly did not take effect
    /// (the request was rejected before it was proposed, say). The checker ignores it.
    Failed {
        /// When the client learnt it.
        time: u64,
    },
    /// The client will never know (a timeout, a crashed client, a lost leader): the
    /// operation may take effect at any instant after its invocation, or never, and its
    /// response is unknown. The checker drops unknown reads, which constrain nothing.
    Unknown,
    /// The client never learnt the response, but the simulator saw the operation take
    /// effect no later than `by_time` (when a replica first applied it, say). Much
    /// cheaper to check than [`Outcome::Unknown`], which leaves the checker to try every
    /// later instant and never.
    TookEffect {
        /// The latest instant the operation can have taken effect.
        by_time: u64,
    },
}

/// One operation of a [`History`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The operation's id.
    pub id: OpId,
    /// The client that invoked it.
    pub client: ClientId,
    /// What it asked for.
    pub op: Op,
    /// When the client invoked it.
    pub invoke_time: u64,
    /// What became of it.
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    /// One line: `op 3  client 2  [20, 35]  put "k" "v" -> ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  client {}  [{}, ",
            self.id, self.client, self.invoke_time
        )?;
        match &self.outcome {
            Outcome::Pending => write!(f, "?]  {} -> pending", self.op),
            Outcome::Completed { time, response } => {
                write!(f, "{time}]  {} -> {response}", self.op)
            }
            Outcome::Failed { time } => write!(f, "{time}]  {} -> failed, no effect", self.op),
            Outcome::Unknown => write!(f, "?]  {} -> unknown", self.op),
            Outcome::TookEffect { by_time } => {
                write!(
                    f,
                    "{by_time}]  {} -> took effect, response unknown",
                    self.op
                )
            }
        }
    }
}

/// The operations clients invoked on the store, in invocation order, with what became
/// of each. `Display` prints one operation a line, by invocation time.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
    /// Invariant: holds exactly the clients whose last operation is `Outcome::Pending`.
    pending_by_client: BTreeMap<ClientId, OpId>,
    /// When each client last got an answer, so its next invocation can be checked to
    /// come no earlier.
    last_answer_time_by_client: BTreeMap<ClientId, u64>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records that `client` invoked `op` at `time`, and returns the operation's id.
    ///
    /// Panics if the client's previous operation is still pending, or was answered
    /// after `time`: a client's operations are sequential. After [`History::unknown`]
    /// the client may move on while the old operation stays in doubt.
    pub fn invoke(&mut self, client: ClientId, op: Op, time: u64) -> OpId {
        let id = OpId(self.operations.len());
        if let Some(pending) = self.pending_by_client.insert(client, id) {
            panic!("client {client} invoked `{op}` while {pending} is pending");
        }
        if let Some(&answer_time) = self.last_answer_time_by_client.get(&client) {
            assert!(
                answer_time <= time,
                "client {client} invoked `{op}` at {time}, before its last answer at {answer_time}"
            );
        }
        self.operations.push(Operation {
            id,
            client,
            op,
            invoke_time: time,
            outcome: Outcome::Pending,
        });
        id
    }

    /// Records that the client got `response` for `id` at `time`.
    ///
    /// Panics if `id` is not pending, if `time` is before its invocation, or if the
    /// response is not of the operation's kind.
    pub fn complete(&mut self, id: OpId, response: Response, time: u64) {
        let operation = self.take_pending(id, Some(time));
        assert!(
            operation.op.accepts(&response),
            "{id} `{}` cannot respond `{response}`",
            operation.op
        );
        operation.outcome = Outcome::Completed { time, response };
    }

    /// Records that the client (or, for an unknown outcome, the simulator) learnt at
    /// `time` that `id` certainly did not take effect.
    ///
    /// Panics if `id` is neither pending nor unknown, or `time` is before its invocation.
    pub fn fail(&mut self, id: OpId, time: u64) {
        let operation = self.take_unanswered(id, Some(time));
        operation.outcome = Outcome::Failed { time };
    }

    /// Records that the outcome of `id` will never be known.
    ///
    /// Panics if `id` is not pending.
    pub fn unknown(&mut self, id: OpId) {
        let operation = self.take_pending(id, None);
        operation.outcome = Outcome::Unknown;
    }

    /// Records that the simulator saw `id`, whose client never got the response, take
    /// effect no later than `by_time`. The client, if it was still waiting, moves on.
    ///
    /// Panics if `id` is neither pending nor unknown, or `by_time` is before its
    /// invocation.
    pub fn took_effect(&mut self, id: OpId, by_time: u64) {
        let operation = self.take_unanswered(id, None);
        assert!(
            operation.invoke_time <= by_time,
            "{id} took effect by {by_time}, before its invocation at {}",
            operation.invoke_time
        );
        operation.outcome = Outcome::TookEffect { by_time };
    }

    /// All operations, indexed by [`OpId::index`].
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation `id`.
    pub fn operation(&self, id: OpId) -> &Operation {
        &self.operations[id.0]
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether no operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Like `take_pending`, but also accepts an operation whose outcome is unknown.
    fn take_unanswered(&mut self, id: OpId, time: Option<u64>) -> &mut Operation {
        if self.operations[id.0].outcome != Outcome::Unknown {
            return self.take_pending(id, time);
        }
        let operation = &mut self.operations[id.0];
        if let Some(time) = time {
            assert!(
                operation.invoke_time <= time,
                "{id} answered at {time}, before its invocation at {}",
                operation.invoke_time
            );
        }
        operation
    }

    /// Marks pending `id` answered at `time` (`None`: its client will never know) and
    /// hands it back to be filled in.
    fn take_pending(&mut self, id: OpId, time: Option<u64>) -> &mut Operation {
        let operation = &mut self.operations[id.0];
        assert!(
            operation.outcome == Outcome::Pending,
            "{id} was already answered: {operation}"
        );
        let removed = self.pending_by_client.remove(&operation.client);
        assert_eq!(
            removed,
            Some(id),
            "{id} is not its client's pending operation"
        );
        if let Some(time) = time {
            assert!(
                operation.invoke_time <= time,
                "{id} answered at {time}, before its invocation at {}",
                operation.invoke_time
            );
            self.last_answer_time_by_client
                .insert(operation.client, time);
        }
        operation
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_invoke_time: Vec<&Operation> = self.operations.iter().collect();
        by_invoke_time.sort_by_key(|operation| (operation.invoke_time, operation.id));
        for operation in by_invoke_time {
            writeln!(f, "{operation}")?;
        }
        Ok(())
    }
}

/// Prints bytes as a quoted string, escaping anything that is not printable ASCII.
pub(crate) struct ShowBytes<'a>(pub(crate) &'a [u8]);

impl fmt::Display for ShowBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Prints a value that may be absent: `none`, or the quoted bytes.
pub(crate) struct ShowValue<'a>(pub(crate) Option<&'a Bytes>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(value) => write!(f, "{}", ShowBytes(value)),
        }
    }
}
