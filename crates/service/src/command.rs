//! What clients ask of a namespace: writes as transactions (a single write is a
//! transaction without guards) that go through the log, reads as queries answered
//! from the state, and what each answers. Encoded with a leading format version.

use bytes::Bytes;
use concord_raft::{Index, Term};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::ServiceError;
use crate::path::Path;
use crate::tree::{NodeKind, NodeValue, Stat};

/// The version of the command, query and response encodings.
pub const FORMAT_VERSION: u8 = 1;

/// A write to a namespace: it goes through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A transaction.
    Txn(Txn),
    /// Seals the namespace before it is deleted: every later command and query is
    /// answered [`crate::ServiceError::NamespaceDeleted`], so no write can be
    /// acknowledged by a namespace after its deletion (a client that still routes to
    /// it is refused until its replicas are dropped). Answers an empty
    /// transaction's response.
    Seal,
}

/// Guards, then the `then` operations if every guard holds, else the `otherwise`
/// operations; all or nothing: if an operation fails, nothing of the transaction
/// applies. The namespace revision grows by one if it changed anything. A read in a
/// branch fails like any operation (a `Get` of a missing node fails the transaction,
/// where etcd answers an empty range): guard it with `Exists` to read what may be
/// missing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Conditions on the state before the transaction.
    pub guards: Vec<Guard>,
    /// Run, in order, when every guard holds.
    pub then: Vec<Op>,
    /// Run, in order, when a guard does not hold.
    pub otherwise: Vec<Op>,
}

impl Txn {
    /// A transaction of one operation and no guards.
    pub fn single(op: Op) -> Txn {
        Txn {
            guards: Vec::new(),
            then: vec![op],
            otherwise: Vec::new(),
        }
    }
}

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// The node's version is `version` (0: the node does not exist).
    VersionEquals {
        /// The node.
        path: Path,
        /// The version.
        version: u64,
    },
    /// A node exists at the path.
    Exists {
        /// The path.
        path: Path,
    },
    /// No node exists at the path.
    Missing {
        /// The path.
        path: Path,
    },
    /// The node exists and holds exactly `value` (of the same type).
    ValueEquals {
        /// The node.
        path: Path,
        /// The value.
        value: NodeValue,
    },
    /// The node exists and is a `kind`.
    TypeIs {
        /// The node.
        path: Path,
        /// The type.
        kind: NodeKind,
    },
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Creates a node holding `value` (its type is the value's). The parent must be
    /// a dir; with `parents`, missing ancestors are created as dirs.
    Create {
        /// Where.
        path: Path,
        /// What it holds at first.
        value: NodeValue,
        /// Create missing ancestors.
        parents: bool,
    },
    /// Deletes a node; a dir with children only with `recursive` (then its whole
    /// subtree).
    Delete {
        /// The node.
        path: Path,
        /// Delete a dir's subtree too.
        recursive: bool,
    },
    /// Sets a blob's value, creating the blob if nothing is there (its parent must
    /// exist).
    BlobPut {
        /// The blob.
        path: Path,
        /// The value.
        value: Bytes,
    },
    /// Appends bytes to a blob's value, creating the blob if nothing is there (its
    /// parent must exist).
    BlobAppend {
        /// The blob.
        path: Path,
        /// The bytes added at the end.
        suffix: Bytes,
    },
    /// Adds members to a set.
    SetInsert {
        /// The set.
        path: Path,
        /// The members.
        members: Vec<Bytes>,
    },
    /// Removes members from a set.
    SetRemove {
        /// The set.
        path: Path,
        /// The members.
        members: Vec<Bytes>,
    },
    /// Appends items to the back of a queue.
    QueuePush {
        /// The queue.
        path: Path,
        /// The items, first pushed first.
        items: Vec<Bytes>,
    },
    /// Takes the item at the front of a queue (nothing if it is empty).
    QueuePop {
        /// The queue.
        path: Path,
    },
    /// Adds `delta` to a counter.
    CounterAdd {
        /// The counter.
        path: Path,
        /// What to add (negative subtracts).
        delta: i64,
    },
    /// A read, seeing the transaction's earlier operations.
    Read(ReadOp),
}

/// How two sets combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetAlgebra {
    /// Members of either.
    Union,
    /// Members of both.
    Intersection,
    /// Members of the left not in the right.
    Difference,
    /// Members of exactly one.
    SymmetricDifference,
}

/// How two sets compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetRelation {
    /// Every member of the left is in the right.
    Subset,
    /// Every member of the right is in the left.
    Superset,
}

/// A set in set algebra: a set node or a literal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetOperand {
    /// The members of the set at this path.
    Path(Path),
    /// These members.
    Literal(Vec<Bytes>),
}

/// A read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    /// The node's value and stat.
    Get {
        /// The node.
        path: Path,
    },
    /// The node's stat.
    Stat {
        /// The node.
        path: Path,
    },
    /// A page of a dir's children, by name: those after `after` (from the first
    /// without), at most `limit`.
    List {
        /// The dir.
        path: Path,
        /// The last name of the previous page.
        after: Option<String>,
        /// Most entries (at most `list_page_entries_max`).
        limit: u32,
    },
    /// Whether a set holds `member`.
    SetContains {
        /// The set.
        path: Path,
        /// The member.
        member: Bytes,
    },
    /// A set combined with another.
    SetAlgebra {
        /// How.
        op: SetAlgebra,
        /// The left set.
        left: SetOperand,
        /// The right set.
        right: SetOperand,
    },
    /// How a set relates to another.
    SetCompare {
        /// Which relation.
        relation: SetRelation,
        /// The left set.
        left: SetOperand,
        /// The right set.
        right: SetOperand,
    },
    /// The item at the front of a queue.
    QueueFront {
        /// The queue.
        path: Path,
    },
    /// The item at the back of a queue.
    QueueBack {
        /// The queue.
        path: Path,
    },
}

/// Reads answered from one state of the namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Read the namespace as it was at this revision (within the history kept);
    /// `None`: as it is.
    pub revision: Option<u64>,
    /// The reads.
    pub ops: Vec<ReadOp>,
}

/// What a dir's child is, in a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEntry {
    /// Its name (the last segment of its path).
    pub name: String,
    /// Its type.
    pub kind: NodeKind,
}

/// What a read answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadResult {
    /// A node.
    Node {
        /// Its value.
        value: NodeValue,
        /// Its stat.
        stat: Stat,
    },
    /// A node's stat.
    Stat(Stat),
    /// A page of children.
    List {
        /// The children, by name.
        children: Vec<ChildEntry>,
        /// More children follow the last.
        more: bool,
    },
    /// A yes or no.
    Bool(bool),
    /// Members, in order.
    Members(Vec<Bytes>),
    /// An item, if there is one.
    Item(Option<Bytes>),
}

/// What an operation of a transaction answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The node created (or the node written, for a blob put, an insert, ...): its
    /// stat after the operation.
    Written(Stat),
    /// Nodes deleted (the node and its subtree).
    Deleted {
        /// How many.
        nodes: u64,
    },
    /// Members of a set that were not there (insert) or were (remove).
    Changed {
        /// How many.
        count: u64,
        /// The set's stat after the operation.
        stat: Stat,
    },
    /// The item a pop took, if the queue had one.
    Popped {
        /// The item.
        item: Option<Bytes>,
        /// The queue's stat after the operation.
        stat: Stat,
    },
    /// A counter's value after an add.
    Counter {
        /// The value.
        value: i64,
        /// Its stat.
        stat: Stat,
    },
    /// A read's answer.
    Read(ReadResult),
}

/// What a transaction answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// The log index of the entry that carried it.
    pub index: Index,
    /// The term of that entry.
    pub term: Term,
    /// The namespace revision after it (unchanged if it changed nothing).
    pub revision: u64,
    /// The request number it was sent as (0: sent without one), as the log
    /// carried it: a retry answered from the exactly-once table shows the number
    /// of the request that applied.
    pub request: u64,
    /// Every guard held (the `then` branch ran).
    pub succeeded: bool,
    /// One result per operation of the branch that ran.
    pub results: Vec<OpResult>,
}

/// What a query answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The revision read at.
    pub revision: u64,
    /// One result per read.
    pub results: Vec<ReadResult>,
}

/// Encodes a command, query or response: the format version, then the value.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    let out =
        postcard::to_extend(value, vec![FORMAT_VERSION]).expect("encoding into a Vec cannot fail");
    Bytes::from(out)
}

/// Decodes what [`encode`] made, refusing another format version and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(ServiceError::InvalidRequest("empty message".into()));
    };
    if version != FORMAT_VERSION {
        return Err(ServiceError::InvalidRequest(format!(
            "message format version {version}; this server reads version {FORMAT_VERSION}"
        )));
    }
    let (value, trailing) = postcard::take_from_bytes(rest)
        .map_err(|error| ServiceError::InvalidRequest(format!("malformed message: {error}")))?;
    if !trailing.is_empty() {
        return Err(ServiceError::InvalidRequest(format!(
            "malformed message: {} bytes after its end",
            trailing.len()
        )));
    }
    Ok(value)
}
