//! A namespace's tree of typed nodes, its revisions and its history: the pure,
//! deterministic core of the coordination service.
//!
//! Every node has a version (1 when created, +1 per operation that changes it) and
//! the revisions that created and last changed it. The namespace revision grows by
//! one per transaction that changes anything; every node a transaction changes gets
//! that revision as its modify revision. An operation that changes nothing (inserting
//! members a set has, removing members it lacks, pushing no items, popping an empty
//! queue) is not a change; a blob put or a counter add always is, as etcd counts a
//! put of the same value.
//!
//! History: for each of the last `history_revisions_max` revisions, the value every
//! node it changed had before it. A read at a past revision takes, per path, the
//! value before the first change after that revision, or the current value if there
//! is none; reads at a revision older than the history kept are refused
//! (`Compacted`). The same record, in revision order, is what watches from a
//! revision replay.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::ops::Bound;

use bytes::Bytes;
use concord_group::StateMachineError;
use imbl::{OrdSet, Vector};
use serde::{Deserialize, Serialize};

use crate::command::{
    ChildEntry, Guard, Op, OpResult, Query, QueryResponse, ReadOp, ReadResult, SetAlgebra,
    SetOperand, SetRelation, Txn,
};
use crate::error::ServiceError;
use crate::limits::{Limit, Limits};
use crate::path::Path;

/// A node's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeKind {
    /// Holds children, nothing else.
    Dir,
    /// Bytes.
    Blob,
    /// A set of distinct byte strings, ordered.
    Set,
    /// A FIFO queue of byte strings.
    Queue,
    /// A signed 64-bit integer.
    Counter,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Dir => "dir",
            NodeKind::Blob => "blob",
            NodeKind::Set => "set",
            NodeKind::Queue => "queue",
            NodeKind::Counter => "counter",
        })
    }
}

/// What a node holds. Sets and queues are persistent structures: a copy (kept in
/// history, say) shares its members with the original.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeValue {
    /// A dir.
    Dir,
    /// A blob's bytes.
    Blob(Bytes),
    /// A set's members.
    Set(OrdSet<Bytes>),
    /// A queue's items, front first.
    Queue(Vector<Bytes>),
    /// A counter's value.
    Counter(i64),
}

impl NodeValue {
    /// The value's type.
    pub fn kind(&self) -> NodeKind {
        match self {
            NodeValue::Dir => NodeKind::Dir,
            NodeValue::Blob(_) => NodeKind::Blob,
            NodeValue::Set(_) => NodeKind::Set,
            NodeValue::Queue(_) => NodeKind::Queue,
            NodeValue::Counter(_) => NodeKind::Counter,
        }
    }

    /// Bytes it holds (counted against the quota).
    fn bytes(&self) -> u64 {
        match self {
            NodeValue::Dir => 0,
            NodeValue::Blob(value) => value.len() as u64,
            NodeValue::Set(members) => members.iter().map(|m| m.len() as u64 + 8).sum(),
            NodeValue::Queue(items) => items.iter().map(|i| i.len() as u64 + 8).sum(),
            NodeValue::Counter(_) => 8,
        }
    }

    /// Its size as a stat gives it: bytes of a blob, members of a set, items of a
    /// queue, 0 for a dir or counter.
    fn size(&self) -> u64 {
        match self {
            NodeValue::Dir | NodeValue::Counter(_) => 0,
            NodeValue::Blob(value) => value.len() as u64,
            NodeValue::Set(members) => members.len() as u64,
            NodeValue::Queue(items) => items.len() as u64,
        }
    }
}

/// A node: its value and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// What it holds.
    pub value: NodeValue,
    /// 1 when created, +1 per operation that changed it.
    pub version: u64,
    /// The revision that created it.
    pub create_revision: u64,
    /// The revision that last changed it.
    // Invariant: create_revision <= modify_revision.
    pub modify_revision: u64,
    /// Children (a dir's; 0 for the rest).
    pub children: u64,
}

impl Node {
    fn stat(&self) -> Stat {
        Stat {
            kind: self.value.kind(),
            version: self.version,
            create_revision: self.create_revision,
            modify_revision: self.modify_revision,
            children: self.children,
            size: self.value.size(),
        }
    }
}

/// What a node is, without its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// Its type.
    pub kind: NodeKind,
    /// 1 when created, +1 per operation that changed it.
    pub version: u64,
    /// The revision that created it.
    pub create_revision: u64,
    /// The revision that last changed it.
    pub modify_revision: u64,
    /// Children of a dir (0 for other types).
    pub children: u64,
    /// Bytes of a blob, members of a set, items of a queue; 0 for a dir or counter.
    pub size: u64,
}

/// `Ok` when the node at `path` is a `kind`.
fn expect_kind(path: &Path, node: &Node, kind: NodeKind) -> Result<(), ServiceError> {
    if node.value.kind() != kind {
        return Err(ServiceError::WrongType {
            path: path.to_string(),
            expected: kind,
            actual: node.value.kind(),
        });
    }
    Ok(())
}

/// Bytes a node counts for against the quota besides its path and value.
const NODE_OVERHEAD_BYTES: u64 = 64;

fn node_bytes(path: &Path, node: &Node) -> u64 {
    path.as_str().len() as u64 + node.value.bytes() + NODE_OVERHEAD_BYTES
}

/// A namespace's tree, revision and history. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    limits: Limits,
    /// Every node, the root included, by path (children of a dir are contiguous).
    nodes: BTreeMap<Path, Node>,
    /// Incremented by every transaction that changes something.
    revision: u64,
    /// What the nodes count for against the quota.
    // Invariant: bytes == sum of node_bytes over nodes.
    bytes: u64,
    history: History,
}

/// Per path and revision: the node's value before the first change at that
/// revision (`None`: it did not exist).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct History {
    before: BTreeMap<(Path, u64), Option<Node>>,
    /// The same records in revision order.
    // Invariant: holds exactly the keys of `before`, ordered by revision.
    order: VecDeque<(u64, Path)>,
    /// Reads at revisions from this one on are answered.
    // Invariant: every record's revision > oldest.
    oldest: u64,
}

impl History {
    /// The node at `path` as of revision `revision`, given its current value: the
    /// value before the first change after `revision`, if any.
    fn at(&self, path: &Path, revision: u64, current: Option<&Node>) -> Option<Node> {
        let from = (path.clone(), revision + 1);
        let to = (path.clone(), u64::MAX);
        match self.before.range(from..=to).next() {
            Some((_, before)) => before.clone(),
            None => current.cloned(),
        }
    }

    /// Forgets records until at most `keep` revisions below `current` are readable.
    fn compact(&mut self, current: u64, keep: u64) {
        let oldest = current.saturating_sub(keep);
        while let Some((revision, _)) = self.order.front() {
            if *revision > oldest {
                break;
            }
            let (revision, path) = self.order.pop_front().expect("front exists");
            self.before.remove(&(path, revision));
        }
        self.oldest = self.oldest.max(oldest);
    }
}

/// The state of the tree before a transaction, kept while it runs so a failed
/// operation undoes the rest.
struct Undo {
    revision: u64,
    bytes: u64,
    /// Each changed path's node before the transaction, first change only.
    before: BTreeMap<Path, Option<Node>>,
}

/// A state of the tree that reads see: now, or at a past revision.
trait View {
    fn node(&self, path: &Path) -> Option<Node>;
    /// Up to `limit` children of `dir` named after `after`, and whether more follow.
    fn children(&self, dir: &Path, after: Option<&str>, limit: usize) -> (Vec<ChildEntry>, bool);
}

/// The range of paths of the children of `dir` named after `after`.
fn children_range(dir: &Path, after: Option<&str>) -> (Bound<Path>, String) {
    let prefix = dir.descendant_prefix();
    let start = match after {
        Some(name) => Bound::Excluded(Path::range_start(
            dir.depth() + 1,
            &format!("{prefix}{name}"),
        )),
        None => Bound::Included(Path::range_start(dir.depth() + 1, &prefix)),
    };
    (start, prefix)
}

struct Current<'a>(&'a Tree);

impl View for Current<'_> {
    fn node(&self, path: &Path) -> Option<Node> {
        self.0.nodes.get(path).cloned()
    }

    fn children(&self, dir: &Path, after: Option<&str>, limit: usize) -> (Vec<ChildEntry>, bool) {
        let (start, prefix) = children_range(dir, after);
        let mut entries = Vec::new();
        let mut iter = self
            .0
            .nodes
            .range((start, Bound::Unbounded))
            .take_while(|(path, _)| {
                path.depth() == dir.depth() + 1 && path.as_str().starts_with(&prefix)
            });
        for (path, node) in iter.by_ref().take(limit) {
            entries.push(ChildEntry {
                name: path.name().to_string(),
                kind: node.value.kind(),
            });
        }
        (entries, iter.next().is_some())
    }
}

struct AtRevision<'a> {
    tree: &'a Tree,
    revision: u64,
}

impl View for AtRevision<'_> {
    fn node(&self, path: &Path) -> Option<Node> {
        self.tree
            .history
            .at(path, self.revision, self.tree.nodes.get(path))
    }

    fn children(&self, dir: &Path, after: Option<&str>, limit: usize) -> (Vec<ChildEntry>, bool) {
        // Candidates: children now, and children changed since (which may have
        // existed then); each judged as of the revision.
        let (start, prefix) = children_range(dir, after);
        let in_dir =
            |path: &Path| path.depth() == dir.depth() + 1 && path.as_str().starts_with(&prefix);
        let mut names: BTreeSet<Path> = BTreeSet::new();
        for (path, _) in self
            .tree
            .nodes
            .range((start.clone(), Bound::Unbounded))
            .take_while(|(path, _)| in_dir(path))
        {
            names.insert(path.clone());
        }
        let history_start = match &start {
            Bound::Included(path) => Bound::Included((path.clone(), 0)),
            Bound::Excluded(path) => Bound::Excluded((path.clone(), u64::MAX)),
            Bound::Unbounded => Bound::Unbounded,
        };
        for ((path, revision), _) in self
            .tree
            .history
            .before
            .range((history_start, Bound::Unbounded))
            .take_while(|((path, _), _)| in_dir(path))
        {
            if *revision > self.revision {
                names.insert(path.clone());
            }
        }
        let mut entries = Vec::new();
        let mut more = false;
        for path in names {
            let Some(node) = self.node(&path) else {
                continue;
            };
            if entries.len() == limit {
                more = true;
                break;
            }
            entries.push(ChildEntry {
                name: path.name().to_string(),
                kind: node.value.kind(),
            });
        }
        (entries, more)
    }
}

impl Tree {
    /// An empty namespace (the root dir only, at revision 0) with these limits.
    pub fn new(limits: Limits) -> Tree {
        let root = Node {
            value: NodeValue::Dir,
            version: 0,
            create_revision: 0,
            modify_revision: 0,
            children: 0,
        };
        let bytes = node_bytes(&Path::root(), &root);
        Tree {
            limits,
            nodes: BTreeMap::from([(Path::root(), root)]),
            revision: 0,
            bytes,
            history: History::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The namespace revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The oldest revision reads can be made at.
    pub fn oldest_revision(&self) -> u64 {
        self.history.oldest
    }

    /// Bytes the namespace counts for against its quota.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when only the root is there.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The node at `path` now.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, by path (children of a dir contiguous, by name).
    pub fn nodes(&self) -> impl Iterator<Item = (&Path, &Node)> {
        self.nodes.iter()
    }

    /// Runs a transaction: guards, then one branch, all or nothing.
    pub fn apply(&mut self, txn: &Txn) -> Result<(bool, Vec<OpResult>), ServiceError> {
        let ops = txn.guards.len() + txn.then.len() + txn.otherwise.len();
        Limit::TxnOps.check(u64::from(self.limits.txn_ops_max), ops as u64)?;
        let succeeded = txn.guards.iter().all(|guard| self.holds(guard));
        let branch = if succeeded { &txn.then } else { &txn.otherwise };
        let mut undo = Undo {
            revision: self.revision,
            bytes: self.bytes,
            before: BTreeMap::new(),
        };
        let new_revision = self.revision + 1;
        let mut results = Vec::with_capacity(branch.len());
        for (position, op) in branch.iter().enumerate() {
            match self.apply_op(op, new_revision, &mut undo) {
                Ok(result) => results.push(result),
                Err(error) => {
                    self.roll_back(undo);
                    return Err(if branch.len() == 1 {
                        error
                    } else {
                        ServiceError::InTransaction {
                            op: position as u32,
                            error: Box::new(error),
                        }
                    });
                }
            }
        }
        if self.bytes > self.limits.namespace_bytes_max && self.bytes > undo.bytes {
            let would_be = self.bytes;
            self.roll_back(undo);
            return Err(ServiceError::QuotaExceeded {
                max: self.limits.namespace_bytes_max,
                would_be,
            });
        }
        if !undo.before.is_empty() {
            self.revision = new_revision;
            for (path, before) in undo.before {
                self.history
                    .before
                    .insert((path.clone(), new_revision), before);
                self.history.order.push_back((new_revision, path));
            }
            self.history
                .compact(self.revision, self.limits.history_revisions_max);
        }
        Ok((succeeded, results))
    }

    /// Answers reads, now or at a past revision.
    pub fn query(&self, query: &Query) -> Result<QueryResponse, ServiceError> {
        Limit::TxnOps.check(u64::from(self.limits.txn_ops_max), query.ops.len() as u64)?;
        let mut results = Vec::with_capacity(query.ops.len());
        match query.revision {
            None => {
                let view = Current(self);
                for op in &query.ops {
                    results.push(self.read(&view, op)?);
                }
            }
            Some(revision) => {
                if revision > self.revision {
                    return Err(ServiceError::FutureRevision {
                        requested: revision,
                        current: self.revision,
                    });
                }
                if revision < self.history.oldest {
                    return Err(ServiceError::Compacted {
                        requested: revision,
                        oldest: self.history.oldest,
                    });
                }
                let view = AtRevision {
                    tree: self,
                    revision,
                };
                for op in &query.ops {
                    results.push(self.read(&view, op)?);
                }
            }
        }
        Ok(QueryResponse {
            revision: query.revision.unwrap_or(self.revision),
            results,
        })
    }

    fn holds(&self, guard: &Guard) -> bool {
        match guard {
            Guard::VersionEquals { path, version } => {
                self.nodes.get(path).map_or(0, |node| node.version) == *version
            }
            Guard::Exists { path } => self.nodes.contains_key(path),
            Guard::Missing { path } => !self.nodes.contains_key(path),
            Guard::ValueEquals { path, value } => self
                .nodes
                .get(path)
                .is_some_and(|node| node.value == *value),
            Guard::TypeIs { path, kind } => self
                .nodes
                .get(path)
                .is_some_and(|node| node.value.kind() == *kind),
        }
    }

    fn check_path(&self, path: &Path) -> Result<(), ServiceError> {
        Limit::PathBytes.check(
            u64::from(self.limits.path_bytes_max),
            path.as_str().len() as u64,
        )
    }

    fn check_values<'a>(
        &self,
        values: impl IntoIterator<Item = &'a Bytes>,
    ) -> Result<(), ServiceError> {
        for value in values {
            Limit::ValueBytes.check(u64::from(self.limits.value_bytes_max), value.len() as u64)?;
        }
        Ok(())
    }

    fn check_value(&self, value: &NodeValue) -> Result<(), ServiceError> {
        match value {
            NodeValue::Dir | NodeValue::Counter(_) => Ok(()),
            NodeValue::Blob(bytes) => self.check_values([bytes]),
            NodeValue::Set(members) => self.check_values(members),
            NodeValue::Queue(items) => self.check_values(items),
        }
    }

    /// The node at `path`, which must exist and be a `kind`.
    fn existing(&self, path: &Path, kind: NodeKind) -> Result<&Node, ServiceError> {
        let node = self.nodes.get(path).ok_or_else(|| ServiceError::NotFound {
            path: path.to_string(),
        })?;
        expect_kind(path, node, kind)?;
        Ok(node)
    }

    /// Replaces (or removes, with `None`) the node at `path`, keeping the quota's
    /// count and the undo record.
    fn put_node(&mut self, path: &Path, node: Option<Node>, undo: &mut Undo) {
        let before = match node {
            Some(node) => {
                self.bytes += node_bytes(path, &node);
                self.nodes.insert(path.clone(), node)
            }
            None => self.nodes.remove(path),
        };
        if let Some(before) = &before {
            self.bytes -= node_bytes(path, before);
        }
        undo.before.entry(path.clone()).or_insert(before);
    }

    /// Changes the value of the node at `path` (which exists), as one change of it.
    fn change(&mut self, path: &Path, value: NodeValue, revision: u64, undo: &mut Undo) -> Stat {
        let mut node = self.nodes[path].clone();
        node.value = value;
        node.version += 1;
        node.modify_revision = revision;
        let stat = node.stat();
        self.put_node(path, Some(node), undo);
        stat
    }

    /// Adjusts the children count of `dir` (not a change of the dir itself).
    fn count_child(&mut self, dir: &Path, added: bool, undo: &mut Undo) {
        let mut node = self.nodes[dir].clone();
        if added {
            node.children += 1;
        } else {
            node.children -= 1;
        }
        self.put_node(dir, Some(node), undo);
    }

    fn create(
        &mut self,
        path: &Path,
        value: NodeValue,
        parents: bool,
        revision: u64,
        undo: &mut Undo,
    ) -> Result<Stat, ServiceError> {
        let Some(parent) = path.parent() else {
            return Err(ServiceError::Root);
        };
        self.check_path(path)?;
        self.check_value(&value)?;
        if self.nodes.contains_key(path) {
            return Err(ServiceError::AlreadyExists {
                path: path.to_string(),
            });
        }
        match self.nodes.get(&parent) {
            None if parents => {
                self.create(&parent, NodeValue::Dir, true, revision, undo)?;
            }
            None => {
                return Err(ServiceError::NotFound {
                    path: parent.to_string(),
                })
            }
            Some(node) if node.value.kind() != NodeKind::Dir => {
                return Err(ServiceError::NotADirectory {
                    path: parent.to_string(),
                    actual: node.value.kind(),
                })
            }
            Some(node) => Limit::ChildrenPerDir.check(
                u64::from(self.limits.children_per_dir_max),
                node.children + 1,
            )?,
        }
        let node = Node {
            value,
            version: 1,
            create_revision: revision,
            modify_revision: revision,
            children: 0,
        };
        let stat = node.stat();
        self.put_node(path, Some(node), undo);
        self.count_child(&parent, true, undo);
        Ok(stat)
    }

    fn delete(
        &mut self,
        path: &Path,
        recursive: bool,
        undo: &mut Undo,
    ) -> Result<u64, ServiceError> {
        let Some(parent) = path.parent() else {
            return Err(ServiceError::Root);
        };
        let node = self.nodes.get(path).ok_or_else(|| ServiceError::NotFound {
            path: path.to_string(),
        })?;
        if node.children > 0 && !recursive {
            return Err(ServiceError::NotEmpty {
                path: path.to_string(),
                children: node.children,
            });
        }
        // The subtree, depth by depth: a depth with no descendant ends it.
        let prefix = path.descendant_prefix();
        let mut doomed = vec![path.clone()];
        let mut depth = path.depth() + 1;
        loop {
            let start = Path::range_start(depth, &prefix);
            let before = doomed.len();
            doomed.extend(
                self.nodes
                    .range(start..)
                    .take_while(|(descendant, _)| {
                        descendant.depth() == depth && descendant.as_str().starts_with(&prefix)
                    })
                    .map(|(descendant, _)| descendant.clone()),
            );
            if doomed.len() == before {
                break;
            }
            depth += 1;
        }
        let deleted = doomed.len() as u64;
        for doomed in doomed {
            self.put_node(&doomed, None, undo);
        }
        self.count_child(&parent, false, undo);
        Ok(deleted)
    }

    fn apply_op(
        &mut self,
        op: &Op,
        revision: u64,
        undo: &mut Undo,
    ) -> Result<OpResult, ServiceError> {
        match op {
            Op::Create {
                path,
                value,
                parents,
            } => Ok(OpResult::Written(self.create(
                path,
                value.clone(),
                *parents,
                revision,
                undo,
            )?)),
            Op::Delete { path, recursive } => Ok(OpResult::Deleted {
                nodes: self.delete(path, *recursive, undo)?,
            }),
            Op::BlobPut { path, value }
            | Op::BlobAppend {
                path,
                suffix: value,
            } => {
                if !self.nodes.contains_key(path) {
                    return Ok(OpResult::Written(self.create(
                        path,
                        NodeValue::Blob(value.clone()),
                        false,
                        revision,
                        undo,
                    )?));
                }
                let NodeValue::Blob(old) = &self.existing(path, NodeKind::Blob)?.value else {
                    unreachable!("existing checked the type")
                };
                let new = if matches!(op, Op::BlobAppend { .. }) {
                    let mut joined = Vec::with_capacity(old.len() + value.len());
                    joined.extend_from_slice(old);
                    joined.extend_from_slice(value);
                    Bytes::from(joined)
                } else {
                    value.clone()
                };
                self.check_values([&new])?;
                Ok(OpResult::Written(self.change(
                    path,
                    NodeValue::Blob(new),
                    revision,
                    undo,
                )))
            }
            Op::SetInsert { path, members } | Op::SetRemove { path, members } => {
                let insert = matches!(op, Op::SetInsert { .. });
                let NodeValue::Set(mut set) = self.existing(path, NodeKind::Set)?.value.clone()
                else {
                    unreachable!("existing checked the type")
                };
                if insert {
                    self.check_values(members)?;
                }
                let mut count = 0;
                for member in members {
                    let changed = if insert {
                        set.insert(member.clone()).is_none()
                    } else {
                        set.remove(member).is_some()
                    };
                    count += u64::from(changed);
                }
                let stat = if count == 0 {
                    self.nodes[path].stat()
                } else {
                    self.change(path, NodeValue::Set(set), revision, undo)
                };
                Ok(OpResult::Changed { count, stat })
            }
            Op::QueuePush { path, items } => {
                let NodeValue::Queue(mut queue) =
                    self.existing(path, NodeKind::Queue)?.value.clone()
                else {
                    unreachable!("existing checked the type")
                };
                self.check_values(items)?;
                if items.is_empty() {
                    return Ok(OpResult::Written(self.nodes[path].stat()));
                }
                queue.extend(items.iter().cloned());
                let stat = self.change(path, NodeValue::Queue(queue), revision, undo);
                Ok(OpResult::Written(stat))
            }
            Op::QueuePop { path } => {
                let NodeValue::Queue(mut queue) =
                    self.existing(path, NodeKind::Queue)?.value.clone()
                else {
                    unreachable!("existing checked the type")
                };
                let Some(item) = queue.pop_front() else {
                    return Ok(OpResult::Popped {
                        item: None,
                        stat: self.nodes[path].stat(),
                    });
                };
                let stat = self.change(path, NodeValue::Queue(queue), revision, undo);
                Ok(OpResult::Popped {
                    item: Some(item),
                    stat,
                })
            }
            Op::CounterAdd { path, delta } => {
                let NodeValue::Counter(value) = self.existing(path, NodeKind::Counter)?.value
                else {
                    unreachable!("existing checked the type")
                };
                let sum =
                    value
                        .checked_add(*delta)
                        .ok_or_else(|| ServiceError::CounterOverflow {
                            path: path.to_string(),
                            value,
                            delta: *delta,
                        })?;
                let stat = self.change(path, NodeValue::Counter(sum), revision, undo);
                Ok(OpResult::Counter { value: sum, stat })
            }
            Op::Read(read) => Ok(OpResult::Read(self.read(&Current(self), read)?)),
        }
    }

    fn roll_back(&mut self, undo: Undo) {
        for (path, before) in undo.before {
            match before {
                Some(node) => self.nodes.insert(path, node),
                None => self.nodes.remove(&path),
            };
        }
        self.revision = undo.revision;
        self.bytes = undo.bytes;
    }

    fn read(&self, view: &dyn View, op: &ReadOp) -> Result<ReadResult, ServiceError> {
        let found = |path: &Path| {
            view.node(path).ok_or_else(|| ServiceError::NotFound {
                path: path.to_string(),
            })
        };
        let typed = |path: &Path, kind: NodeKind| {
            let node = found(path)?;
            expect_kind(path, &node, kind)?;
            Ok(node)
        };
        let operand = |operand: &SetOperand| -> Result<OrdSet<Bytes>, ServiceError> {
            match operand {
                SetOperand::Path(path) => match typed(path, NodeKind::Set)?.value {
                    NodeValue::Set(set) => Ok(set),
                    _ => unreachable!("typed checked the type"),
                },
                SetOperand::Literal(members) => Ok(members.iter().cloned().collect()),
            }
        };
        match op {
            ReadOp::Get { path } => {
                let node = found(path)?;
                let stat = node.stat();
                if let NodeValue::Set(members) = &node.value {
                    self.check_members(members.len())?;
                }
                Ok(ReadResult::Node {
                    value: node.value,
                    stat,
                })
            }
            ReadOp::Stat { path } => Ok(ReadResult::Stat(found(path)?.stat())),
            ReadOp::List { path, after, limit } => {
                if *limit == 0 {
                    return Err(ServiceError::InvalidRequest(
                        "a list page holds at least 1 entry, not 0".into(),
                    ));
                }
                Limit::ListPageEntries.check(
                    u64::from(self.limits.list_page_entries_max),
                    u64::from(*limit),
                )?;
                let node = found(path)?;
                if node.value.kind() != NodeKind::Dir {
                    return Err(ServiceError::NotADirectory {
                        path: path.to_string(),
                        actual: node.value.kind(),
                    });
                }
                let (children, more) = view.children(path, after.as_deref(), *limit as usize);
                Ok(ReadResult::List { children, more })
            }
            ReadOp::SetContains { path, member } => match typed(path, NodeKind::Set)?.value {
                NodeValue::Set(set) => Ok(ReadResult::Bool(set.contains(member))),
                _ => unreachable!("typed checked the type"),
            },
            ReadOp::SetAlgebra { op, left, right } => {
                let (left, right) = (operand(left)?, operand(right)?);
                let result = match op {
                    SetAlgebra::Union => left.union(right),
                    SetAlgebra::Intersection => left.intersection(right),
                    SetAlgebra::Difference => left.relative_complement(right),
                    SetAlgebra::SymmetricDifference => left.symmetric_difference(right),
                };
                self.check_members(result.len())?;
                Ok(ReadResult::Members(result.into_iter().collect()))
            }
            ReadOp::SetCompare {
                relation,
                left,
                right,
            } => {
                let (left, right) = (operand(left)?, operand(right)?);
                Ok(ReadResult::Bool(match relation {
                    SetRelation::Subset => left.is_subset(&right),
                    SetRelation::Superset => right.is_subset(&left),
                }))
            }
            ReadOp::QueueFront { path } | ReadOp::QueueBack { path } => {
                match typed(path, NodeKind::Queue)?.value {
                    NodeValue::Queue(queue) => Ok(ReadResult::Item(
                        if matches!(op, ReadOp::QueueFront { .. }) {
                            queue.front().cloned()
                        } else {
                            queue.back().cloned()
                        },
                    )),
                    _ => unreachable!("typed checked the type"),
                }
            }
        }
    }

    fn check_members(&self, count: usize) -> Result<(), ServiceError> {
        Limit::Members.check(u64::from(self.limits.members_max), count as u64)
    }

    /// Checks every invariant of the tree; panics on the first broken (tests).
    pub fn check_invariants(&self) {
        if let Err(broken) = self.validate() {
            panic!("tree invariant broken: {broken}");
        }
    }

    /// Checks every invariant of the tree (a snapshot read back, tests).
    fn validate(&self) -> Result<(), String> {
        let root = self.nodes.get(&Path::root()).ok_or("no root")?;
        if root.value != NodeValue::Dir {
            return Err("the root is not a dir".into());
        }
        let mut bytes = 0;
        let mut children = BTreeMap::<Path, u64>::new();
        for (path, node) in &self.nodes {
            bytes += node_bytes(path, node);
            if node.create_revision > node.modify_revision || node.modify_revision > self.revision {
                return Err(format!("{path}: revisions out of order"));
            }
            if let Some(parent) = path.parent() {
                match self.nodes.get(&parent) {
                    Some(parent_node) if parent_node.value == NodeValue::Dir => {}
                    _ => return Err(format!("{path}: its parent is not a dir")),
                }
                *children.entry(parent).or_default() += 1;
            }
        }
        for (path, node) in &self.nodes {
            if children.get(path).copied().unwrap_or(0) != node.children {
                return Err(format!("{path}: children count {} is wrong", node.children));
            }
        }
        if bytes != self.bytes {
            return Err(format!("size {} counted as {}", bytes, self.bytes));
        }
        if self.history.before.len() != self.history.order.len() {
            return Err("history order and records differ".into());
        }
        let mut last = 0;
        for (revision, path) in &self.history.order {
            if *revision < last || *revision <= self.history.oldest || *revision > self.revision {
                return Err(format!("history record {revision} of {path} out of order"));
            }
            if !self.history.before.contains_key(&(path.clone(), *revision)) {
                return Err(format!("history record {revision} of {path} missing"));
            }
            last = *revision;
        }
        Ok(())
    }

    /// Writes the tree, its revision and its history to `out`.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            limits: &'a Limits,
            revision: u64,
            oldest: u64,
            nodes: &'a BTreeMap<Path, Node>,
            history: &'a BTreeMap<(Path, u64), Option<Node>>,
        }
        out.write_all(&[SNAPSHOT_FORMAT_VERSION])?;
        postcard::to_io(
            &Snapshot {
                limits: &self.limits,
                revision: self.revision,
                oldest: self.history.oldest,
                nodes: &self.nodes,
                history: &self.history.before,
            },
            out,
        )
        .map_err(|error| StateMachineError(format!("writing the tree: {error}")))?;
        Ok(())
    }

    /// Reads back what [`Tree::write_to`] wrote, to the end of `input`, checking it.
    pub fn read_from(input: &mut dyn Read) -> Result<Tree, StateMachineError> {
        #[derive(Deserialize)]
        struct Snapshot {
            limits: Limits,
            revision: u64,
            oldest: u64,
            nodes: BTreeMap<Path, Node>,
            history: BTreeMap<(Path, u64), Option<Node>>,
        }
        let broken = |why: String| StateMachineError(format!("reading the tree: {why}"));
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(broken("empty".into()));
        };
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(broken(format!(
                "format version {version}; this build reads {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let snapshot: Snapshot = postcard::from_bytes(rest).map_err(|e| broken(e.to_string()))?;
        let mut order: Vec<(u64, Path)> = snapshot
            .history
            .keys()
            .map(|(path, revision)| (*revision, path.clone()))
            .collect();
        order.sort();
        let tree = Tree {
            limits: snapshot.limits,
            bytes: snapshot
                .nodes
                .iter()
                .map(|(path, node)| node_bytes(path, node))
                .sum(),
            nodes: snapshot.nodes,
            revision: snapshot.revision,
            history: History {
                before: snapshot.history,
                order: order.into(),
                oldest: snapshot.oldest,
            },
        };
        tree.validate().map_err(broken)?;
        Ok(tree)
    }
}

/// The version of [`Tree::write_to`]'s format.
const SNAPSHOT_FORMAT_VERSION: u8 = 1;
