//! The tree against a naive model: a `BTreeMap` of path strings, every revision's
//! whole state kept, children counted by scanning, transactions run on a copy. Random
//! transactions and queries (at random revisions, past and future) must answer the
//! same and leave the same state; a snapshot taken at random points must read back
//! equal and carry on the same.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use concord_service::command::{
    ChildEntry, Guard, Op, OpResult, Query, QueryResponse, ReadOp, ReadResult, SetAlgebra,
    SetOperand, SetRelation, Txn,
};
use concord_service::{Limit, Limits, NodeKind, NodeValue, Path, ServiceError, Stat, Tree};
use imbl::{OrdSet, Vector};
use proptest::prelude::*;

/// Small limits, so that every limit is reached by the generated requests.
pub fn small_limits() -> Limits {
    Limits {
        value_bytes_max: 8,
        path_bytes_max: 7,
        request_bytes_max: 4096,
        children_per_dir_max: 5,
        txn_ops_max: 6,
        list_page_entries_max: 3,
        members_max: 5,
        namespace_bytes_max: 1500,
        history_revisions_max: 6,
    }
}

#[derive(Clone, Debug, PartialEq)]
struct ModelNode {
    value: NodeValue,
    version: u64,
    create_revision: u64,
    modify_revision: u64,
}

type State = BTreeMap<String, ModelNode>;

/// The naive tree.
pub struct Model {
    limits: Limits,
    /// Every revision's state, by revision.
    states: Vec<State>,
}

fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/').unwrap();
    Some(if cut == 0 {
        "/".into()
    } else {
        path[..cut].into()
    })
}

fn children_of(state: &State, dir: &str) -> Vec<String> {
    state
        .keys()
        .filter(|path| parent_of(path).as_deref() == Some(dir))
        .cloned()
        .collect()
}

fn value_bytes(value: &NodeValue) -> u64 {
    match value {
        NodeValue::Dir => 0,
        NodeValue::Blob(bytes) => bytes.len() as u64,
        NodeValue::Set(members) => members.iter().map(|m| m.len() as u64 + 8).sum(),
        NodeValue::Queue(items) => items.iter().map(|i| i.len() as u64 + 8).sum(),
        NodeValue::Counter(_) => 8,
    }
}

fn state_bytes(state: &State) -> u64 {
    state
        .iter()
        .map(|(path, node)| path.len() as u64 + value_bytes(&node.value) + 64)
        .sum()
}

fn stat_of(state: &State, path: &str) -> Stat {
    let node = &state[path];
    Stat {
        kind: node.value.kind(),
        version: node.version,
        create_revision: node.create_revision,
        modify_revision: node.modify_revision,
        children: children_of(state, path).len() as u64,
        size: match &node.value {
            NodeValue::Dir | NodeValue::Counter(_) => 0,
            NodeValue::Blob(bytes) => bytes.len() as u64,
            NodeValue::Set(members) => members.len() as u64,
            NodeValue::Queue(items) => items.len() as u64,
        },
    }
}

fn not_found(path: &str) -> ServiceError {
    ServiceError::NotFound {
        path: path.to_string(),
    }
}

impl Model {
    pub fn new(limits: Limits) -> Model {
        let root = ModelNode {
            value: NodeValue::Dir,
            version: 0,
            create_revision: 0,
            modify_revision: 0,
        };
        Model {
            limits,
            states: vec![State::from([("/".to_string(), root)])],
        }
    }

    fn revision(&self) -> u64 {
        self.states.len() as u64 - 1
    }

    fn current(&self) -> &State {
        self.states.last().unwrap()
    }

    fn oldest(&self) -> u64 {
        self.revision()
            .saturating_sub(self.limits.history_revisions_max)
    }

    fn typed<'a>(
        state: &'a State,
        path: &str,
        kind: NodeKind,
    ) -> Result<&'a ModelNode, ServiceError> {
        let node = state.get(path).ok_or_else(|| not_found(path))?;
        if node.value.kind() != kind {
            return Err(ServiceError::WrongType {
                path: path.into(),
                expected: kind,
                actual: node.value.kind(),
            });
        }
        Ok(node)
    }

    fn check_values<'a>(
        &self,
        values: impl IntoIterator<Item = &'a Bytes>,
    ) -> Result<(), ServiceError> {
        for value in values {
            if value.len() > self.limits.value_bytes_max as usize {
                return Err(ServiceError::LimitExceeded {
                    limit: Limit::ValueBytes,
                    max: u64::from(self.limits.value_bytes_max),
                    actual: value.len() as u64,
                });
            }
        }
        Ok(())
    }

    fn change(state: &mut State, path: &str, value: NodeValue, revision: u64) -> Stat {
        let node = state.get_mut(path).unwrap();
        node.value = value;
        node.version += 1;
        node.modify_revision = revision;
        stat_of(state, path)
    }

    fn create(
        &self,
        state: &mut State,
        path: &str,
        value: NodeValue,
        parents: bool,
        revision: u64,
    ) -> Result<Stat, ServiceError> {
        let Some(parent) = parent_of(path) else {
            return Err(ServiceError::Root);
        };
        if path.len() > self.limits.path_bytes_max as usize {
            return Err(ServiceError::LimitExceeded {
                limit: Limit::PathBytes,
                max: u64::from(self.limits.path_bytes_max),
                actual: path.len() as u64,
            });
        }
        match &value {
            NodeValue::Blob(bytes) => self.check_values([bytes])?,
            NodeValue::Set(members) => self.check_values(members)?,
            NodeValue::Queue(items) => self.check_values(items)?,
            NodeValue::Dir | NodeValue::Counter(_) => {}
        }
        if state.contains_key(path) {
            return Err(ServiceError::AlreadyExists { path: path.into() });
        }
        match state.get(&parent) {
            None if parents => {
                self.create(state, &parent, NodeValue::Dir, true, revision)?;
            }
            None => return Err(not_found(&parent)),
            Some(node) if node.value.kind() != NodeKind::Dir => {
                return Err(ServiceError::NotADirectory {
                    path: parent,
                    actual: node.value.kind(),
                })
            }
            Some(_) => {
                let children = children_of(state, &parent).len() as u64;
                if children >= u64::from(self.limits.children_per_dir_max) {
                    return Err(ServiceError::LimitExceeded {
                        limit: Limit::ChildrenPerDir,
                        max: u64::from(self.limits.children_per_dir_max),
                        actual: children + 1,
                    });
                }
            }
        }
        state.insert(
            path.to_string(),
            ModelNode {
                value,
                version: 1,
                create_revision: revision,
                modify_revision: revision,
            },
        );
        Ok(stat_of(state, path))
    }

    /// Runs an operation on `state`; answers whether it changed anything too.
    fn op(
        &self,
        state: &mut State,
        op: &Op,
        revision: u64,
    ) -> Result<(OpResult, bool), ServiceError> {
        match op {
            Op::Create {
                path,
                value,
                parents,
            } => Ok((
                OpResult::Written(self.create(
                    state,
                    path.as_str(),
                    value.clone(),
                    *parents,
                    revision,
                )?),
                true,
            )),
            Op::Delete { path, recursive } => {
                let path = path.as_str();
                if path == "/" {
                    return Err(ServiceError::Root);
                }
                if !state.contains_key(path) {
                    return Err(not_found(path));
                }
                let children = children_of(state, path).len() as u64;
                if children > 0 && !recursive {
                    return Err(ServiceError::NotEmpty {
                        path: path.into(),
                        children,
                    });
                }
                let prefix = format!("{path}/");
                let doomed: Vec<String> = state
                    .keys()
                    .filter(|key| key.as_str() == path || key.starts_with(&prefix))
                    .cloned()
                    .collect();
                for key in &doomed {
                    state.remove(key);
                }
                Ok((
                    OpResult::Deleted {
                        nodes: doomed.len() as u64,
                    },
                    true,
                ))
            }
            Op::BlobPut { path, value }
            | Op::BlobAppend {
                path,
                suffix: value,
            } => {
                let path = path.as_str();
                if !state.contains_key(path) {
                    let stat =
                        self.create(state, path, NodeValue::Blob(value.clone()), false, revision)?;
                    return Ok((OpResult::Written(stat), true));
                }
                let NodeValue::Blob(old) = &Self::typed(state, path, NodeKind::Blob)?.value else {
                    unreachable!()
                };
                let new = match op {
                    Op::BlobAppend { .. } => Bytes::from([old.as_ref(), value.as_ref()].concat()),
                    _ => value.clone(),
                };
                self.check_values([&new])?;
                Ok((
                    OpResult::Written(Self::change(state, path, NodeValue::Blob(new), revision)),
                    true,
                ))
            }
            Op::SetInsert { path, members } | Op::SetRemove { path, members } => {
                let insert = matches!(op, Op::SetInsert { .. });
                let path = path.as_str();
                let NodeValue::Set(set) = &Self::typed(state, path, NodeKind::Set)?.value else {
                    unreachable!()
                };
                let mut set: BTreeSet<Bytes> = set.iter().cloned().collect();
                if insert {
                    self.check_values(members)?;
                }
                let before = set.len();
                for member in members {
                    if insert {
                        set.insert(member.clone());
                    } else {
                        set.remove(member);
                    }
                }
                let count = set.len().abs_diff(before) as u64;
                if count == 0 {
                    return Ok((
                        OpResult::Changed {
                            count,
                            stat: stat_of(state, path),
                        },
                        false,
                    ));
                }
                let stat = Self::change(
                    state,
                    path,
                    NodeValue::Set(set.into_iter().collect()),
                    revision,
                );
                Ok((OpResult::Changed { count, stat }, true))
            }
            Op::QueuePush { path, items } => {
                let path = path.as_str();
                let NodeValue::Queue(queue) = &Self::typed(state, path, NodeKind::Queue)?.value
                else {
                    unreachable!()
                };
                let mut queue: Vec<Bytes> = queue.iter().cloned().collect();
                self.check_values(items)?;
                if items.is_empty() {
                    return Ok((OpResult::Written(stat_of(state, path)), false));
                }
                queue.extend(items.iter().cloned());
                let stat = Self::change(
                    state,
                    path,
                    NodeValue::Queue(queue.into_iter().collect()),
                    revision,
                );
                Ok((OpResult::Written(stat), true))
            }
            Op::QueuePop { path } => {
                let path = path.as_str();
                let NodeValue::Queue(queue) = &Self::typed(state, path, NodeKind::Queue)?.value
                else {
                    unreachable!()
                };
                let mut queue: Vec<Bytes> = queue.iter().cloned().collect();
                if queue.is_empty() {
                    return Ok((
                        OpResult::Popped {
                            item: None,
                            stat: stat_of(state, path),
                        },
                        false,
                    ));
                }
                let item = queue.remove(0);
                let stat = Self::change(
                    state,
                    path,
                    NodeValue::Queue(queue.into_iter().collect()),
                    revision,
                );
                Ok((
                    OpResult::Popped {
                        item: Some(item),
                        stat,
                    },
                    true,
                ))
            }
            Op::CounterAdd { path, delta } => {
                let path = path.as_str();
                let NodeValue::Counter(value) = Self::typed(state, path, NodeKind::Counter)?.value
                else {
                    unreachable!()
                };
                let Some(sum) = value.checked_add(*delta) else {
                    return Err(ServiceError::CounterOverflow {
                        path: path.into(),
                        value,
                        delta: *delta,
                    });
                };
                let stat = Self::change(state, path, NodeValue::Counter(sum), revision);
                Ok((OpResult::Counter { value: sum, stat }, true))
            }
            Op::Read(read) => Ok((OpResult::Read(self.read(state, read)?), false)),
        }
    }

    fn holds(state: &State, guard: &Guard) -> bool {
        match guard {
            Guard::VersionEquals { path, version } => {
                state.get(path.as_str()).map_or(0, |node| node.version) == *version
            }
            Guard::Exists { path } => state.contains_key(path.as_str()),
            Guard::Missing { path } => !state.contains_key(path.as_str()),
            Guard::ValueEquals { path, value } => state
                .get(path.as_str())
                .is_some_and(|node| node.value == *value),
            Guard::TypeIs { path, kind } => state
                .get(path.as_str())
                .is_some_and(|node| node.value.kind() == *kind),
        }
    }

    pub fn apply(&mut self, txn: &Txn) -> Result<(bool, Vec<OpResult>), ServiceError> {
        let ops = txn.guards.len() + txn.then.len() + txn.otherwise.len();
        if ops > self.limits.txn_ops_max as usize {
            return Err(ServiceError::LimitExceeded {
                limit: Limit::TxnOps,
                max: u64::from(self.limits.txn_ops_max),
                actual: ops as u64,
            });
        }
        let succeeded = txn
            .guards
            .iter()
            .all(|guard| Self::holds(self.current(), guard));
        let branch = if succeeded { &txn.then } else { &txn.otherwise };
        let mut work = self.current().clone();
        let revision = self.revision() + 1;
        let mut changed = false;
        let mut results = Vec::new();
        for (position, op) in branch.iter().enumerate() {
            match self.op(&mut work, op, revision) {
                Ok((result, op_changed)) => {
                    results.push(result);
                    changed |= op_changed;
                }
                Err(error) if branch.len() == 1 => return Err(error),
                Err(error) => {
                    return Err(ServiceError::InTransaction {
                        op: position as u32,
                        error: Box::new(error),
                    })
                }
            }
        }
        let (now, before) = (state_bytes(&work), state_bytes(self.current()));
        if now > self.limits.namespace_bytes_max && now > before {
            return Err(ServiceError::QuotaExceeded {
                max: self.limits.namespace_bytes_max,
                would_be: now,
            });
        }
        if changed {
            self.states.push(work);
        }
        Ok((succeeded, results))
    }

    fn set_operand(
        &self,
        state: &State,
        operand: &SetOperand,
    ) -> Result<BTreeSet<Bytes>, ServiceError> {
        match operand {
            SetOperand::Path(path) => {
                match &Self::typed(state, path.as_str(), NodeKind::Set)?.value {
                    NodeValue::Set(set) => Ok(set.iter().cloned().collect()),
                    _ => unreachable!(),
                }
            }
            SetOperand::Literal(members) => Ok(members.iter().cloned().collect()),
        }
    }

    fn check_members(&self, count: usize) -> Result<(), ServiceError> {
        if count > self.limits.members_max as usize {
            return Err(ServiceError::LimitExceeded {
                limit: Limit::Members,
                max: u64::from(self.limits.members_max),
                actual: count as u64,
            });
        }
        Ok(())
    }

    fn read(&self, state: &State, op: &ReadOp) -> Result<ReadResult, ServiceError> {
        match op {
            ReadOp::Get { path } => {
                let node = state
                    .get(path.as_str())
                    .ok_or_else(|| not_found(path.as_str()))?;
                if let NodeValue::Set(members) = &node.value {
                    self.check_members(members.len())?;
                }
                Ok(ReadResult::Node {
                    value: node.value.clone(),
                    stat: stat_of(state, path.as_str()),
                })
            }
            ReadOp::Stat { path } => {
                if !state.contains_key(path.as_str()) {
                    return Err(not_found(path.as_str()));
                }
                Ok(ReadResult::Stat(stat_of(state, path.as_str())))
            }
            ReadOp::List { path, after, limit } => {
                if *limit == 0 {
                    return Err(ServiceError::InvalidRequest(String::new()));
                }
                if *limit > self.limits.list_page_entries_max {
                    return Err(ServiceError::LimitExceeded {
                        limit: Limit::ListPageEntries,
                        max: u64::from(self.limits.list_page_entries_max),
                        actual: u64::from(*limit),
                    });
                }
                let node = state
                    .get(path.as_str())
                    .ok_or_else(|| not_found(path.as_str()))?;
                if node.value.kind() != NodeKind::Dir {
                    return Err(ServiceError::NotADirectory {
                        path: path.to_string(),
                        actual: node.value.kind(),
                    });
                }
                let mut children: Vec<ChildEntry> = children_of(state, path.as_str())
                    .into_iter()
                    .map(|child| ChildEntry {
                        name: child.rsplit('/').next().unwrap().to_string(),
                        kind: state[&child].value.kind(),
                    })
                    .filter(|entry| after.as_ref().is_none_or(|after| entry.name > *after))
                    .collect();
                children.sort_by(|a, b| a.name.cmp(&b.name));
                let more = children.len() > *limit as usize;
                children.truncate(*limit as usize);
                Ok(ReadResult::List { children, more })
            }
            ReadOp::SetContains { path, member } => {
                match &Self::typed(state, path.as_str(), NodeKind::Set)?.value {
                    NodeValue::Set(set) => Ok(ReadResult::Bool(set.contains(member))),
                    _ => unreachable!(),
                }
            }
            ReadOp::SetAlgebra { op, left, right } => {
                let left = self.set_operand(state, left)?;
                let right = self.set_operand(state, right)?;
                let result: Vec<Bytes> = match op {
                    SetAlgebra::Union => left.union(&right).cloned().collect(),
                    SetAlgebra::Intersection => left.intersection(&right).cloned().collect(),
                    SetAlgebra::Difference => left.difference(&right).cloned().collect(),
                    SetAlgebra::SymmetricDifference => {
                        left.symmetric_difference(&right).cloned().collect()
                    }
                };
                self.check_members(result.len())?;
                Ok(ReadResult::Members(result))
            }
            ReadOp::SetCompare {
                relation,
                left,
                right,
            } => {
                let left = self.set_operand(state, left)?;
                let right = self.set_operand(state, right)?;
                Ok(ReadResult::Bool(match relation {
                    SetRelation::Subset => left.is_subset(&right),
                    SetRelation::Superset => left.is_superset(&right),
                }))
            }
            ReadOp::QueueFront { path } | ReadOp::QueueBack { path } => {
                match &Self::typed(state, path.as_str(), NodeKind::Queue)?.value {
                    NodeValue::Queue(queue) => Ok(ReadResult::Item(
                        if matches!(op, ReadOp::QueueFront { .. }) {
                            queue.front().cloned()
                        } else {
                            queue.back().cloned()
                        },
                    )),
                    _ => unreachable!(),
                }
            }
        }
    }

    pub fn query(&self, query: &Query) -> Result<QueryResponse, ServiceError> {
        if query.ops.len() > self.limits.txn_ops_max as usize {
            return Err(ServiceError::LimitExceeded {
                limit: Limit::TxnOps,
                max: u64::from(self.limits.txn_ops_max),
                actual: query.ops.len() as u64,
            });
        }
        let revision = query.revision.unwrap_or(self.revision());
        if revision > self.revision() {
            return Err(ServiceError::FutureRevision {
                requested: revision,
                current: self.revision(),
            });
        }
        if revision < self.oldest() {
            return Err(ServiceError::Compacted {
                requested: revision,
                oldest: self.oldest(),
            });
        }
        let state = &self.states[revision as usize];
        let results = query
            .ops
            .iter()
            .map(|op| self.read(state, op))
            .collect::<Result<_, _>>()?;
        Ok(QueryResponse { revision, results })
    }

    /// Asserts the tree holds exactly the model's current state.
    pub fn assert_same(&self, tree: &Tree) {
        tree.check_invariants();
        assert_eq!(tree.revision(), self.revision());
        assert_eq!(tree.bytes(), state_bytes(self.current()));
        let tree_nodes: BTreeMap<String, Stat> = tree
            .nodes()
            .map(|(path, node)| (path.to_string(), node_stat(node)))
            .collect();
        let model_nodes: BTreeMap<String, Stat> = self
            .current()
            .keys()
            .map(|path| (path.clone(), stat_of(self.current(), path)))
            .collect();
        assert_eq!(tree_nodes, model_nodes);
        for (path, node) in tree.nodes() {
            assert_eq!(node.value, self.current()[path.as_str()].value, "{path}");
        }
    }
}

fn node_stat(node: &concord_service::Node) -> Stat {
    Stat {
        kind: node.value.kind(),
        version: node.version,
        create_revision: node.create_revision,
        modify_revision: node.modify_revision,
        children: node.children,
        size: match &node.value {
            NodeValue::Dir | NodeValue::Counter(_) => 0,
            NodeValue::Blob(bytes) => bytes.len() as u64,
            NodeValue::Set(members) => members.len() as u64,
            NodeValue::Queue(items) => items.len() as u64,
        },
    }
}

/// Results compared with the text of `InvalidRequest` left out (the model does not
/// word it).
pub fn normalized<T>(result: Result<T, ServiceError>) -> Result<T, ServiceError> {
    fn normalize(error: ServiceError) -> ServiceError {
        match error {
            ServiceError::InvalidRequest(_) => ServiceError::InvalidRequest(String::new()),
            ServiceError::InTransaction { op, error } => ServiceError::InTransaction {
                op,
                error: Box::new(normalize(*error)),
            },
            other => other,
        }
    }
    result.map_err(normalize)
}

// Generators: few names and values, so that paths collide, dirs fill up, values
// repeat and every limit is reached. Dirs are named `a` and `c`; other leaves are
// named for the type their operations want (`b` blob, `s` set, `q` queue, `n`
// counter), and an operation mostly targets its type's name.

fn dirs() -> BoxedStrategy<String> {
    prop_oneof![
        5 => Just(String::new()),
        4 => Just("/a".to_string()),
        1 => Just("/c".to_string()),
        2 => prop::sample::select(vec!["/a/a", "/a/c", "/c/a"]).prop_map(String::from),
    ]
    .boxed()
}

fn make_path(dirs: String, leaf: &str) -> Path {
    Path::parse(&format!("{dirs}/{leaf}"), u32::MAX).unwrap()
}

pub fn path() -> BoxedStrategy<Path> {
    prop_oneof![
        1 => Just(Path::root()),
        12 => (dirs(), prop::sample::select(vec!["a", "c", "b", "s", "q", "n"]))
            .prop_map(|(dirs, leaf)| make_path(dirs, leaf)),
    ]
    .boxed()
}

fn typed_path(leaf: &'static str) -> BoxedStrategy<Path> {
    prop_oneof![
        4 => dirs().prop_map(move |dirs| make_path(dirs, leaf)),
        1 => path(),
    ]
    .boxed()
}

fn bytes() -> BoxedStrategy<Bytes> {
    prop::sample::select(vec!["", "x", "yy", "m1", "m2", "m3", "m4", "zzzzzzzzz"])
        .prop_map(Bytes::from)
        .boxed()
}

fn members() -> BoxedStrategy<Vec<Bytes>> {
    prop::collection::vec(bytes(), 0..4).boxed()
}

fn value() -> BoxedStrategy<NodeValue> {
    prop_oneof![
        3 => Just(NodeValue::Dir),
        2 => bytes().prop_map(NodeValue::Blob),
        2 => members().prop_map(|m| NodeValue::Set(m.into_iter().collect::<OrdSet<_>>())),
        2 => members().prop_map(|m| NodeValue::Queue(m.into_iter().collect::<Vector<_>>())),
        2 => prop_oneof![Just(0i64), Just(5), Just(i64::MAX - 1), Just(i64::MIN)].prop_map(NodeValue::Counter),
    ]
    .boxed()
}

fn kind() -> BoxedStrategy<NodeKind> {
    prop::sample::select(vec![
        NodeKind::Dir,
        NodeKind::Blob,
        NodeKind::Set,
        NodeKind::Queue,
        NodeKind::Counter,
    ])
    .boxed()
}

fn operand() -> BoxedStrategy<SetOperand> {
    prop_oneof![
        typed_path("s").prop_map(SetOperand::Path),
        members().prop_map(SetOperand::Literal),
    ]
    .boxed()
}

pub fn read_op() -> BoxedStrategy<ReadOp> {
    prop_oneof![
        path().prop_map(|path| ReadOp::Get { path }),
        path().prop_map(|path| ReadOp::Stat { path }),
        (
            typed_path("a"),
            prop::option::of(prop::sample::select(vec!["a", "b", "c", "n"])),
            prop_oneof![1 => Just(0u32), 8 => 1u32..=3, 1 => Just(4u32)]
        )
            .prop_map(|(path, after, limit)| ReadOp::List {
                path,
                after: after.map(String::from),
                limit,
            }),
        (typed_path("s"), bytes()).prop_map(|(path, member)| ReadOp::SetContains { path, member }),
        (
            prop::sample::select(vec![
                SetAlgebra::Union,
                SetAlgebra::Intersection,
                SetAlgebra::Difference,
                SetAlgebra::SymmetricDifference
            ]),
            operand(),
            operand()
        )
            .prop_map(|(op, left, right)| ReadOp::SetAlgebra { op, left, right }),
        (
            prop::sample::select(vec![SetRelation::Subset, SetRelation::Superset]),
            operand(),
            operand()
        )
            .prop_map(|(relation, left, right)| ReadOp::SetCompare {
                relation,
                left,
                right
            }),
        typed_path("q").prop_map(|path| ReadOp::QueueFront { path }),
        typed_path("q").prop_map(|path| ReadOp::QueueBack { path }),
    ]
    .boxed()
}

fn op() -> BoxedStrategy<Op> {
    prop_oneof![
        8 => (value(), dirs(), prop::bool::weighted(0.2), path(), prop::bool::weighted(0.7)).prop_map(
            |(value, dirs, anywhere, path, parents)| {
                let leaf = match value.kind() {
                    NodeKind::Dir => "a",
                    NodeKind::Blob => "b",
                    NodeKind::Set => "s",
                    NodeKind::Queue => "q",
                    NodeKind::Counter => "n",
                };
                let path = if anywhere { path } else { make_path(dirs, leaf) };
                Op::Create { path, value, parents }
            }
        ),
        2 => (path(), any::<bool>()).prop_map(|(path, recursive)| Op::Delete { path, recursive }),
        3 => (typed_path("b"), bytes()).prop_map(|(path, value)| Op::BlobPut { path, value }),
        2 => (typed_path("b"), bytes()).prop_map(|(path, suffix)| Op::BlobAppend { path, suffix }),
        2 => (typed_path("s"), members()).prop_map(|(path, members)| Op::SetInsert { path, members }),
        1 => (typed_path("s"), members()).prop_map(|(path, members)| Op::SetRemove { path, members }),
        2 => (typed_path("q"), members()).prop_map(|(path, items)| Op::QueuePush { path, items }),
        1 => typed_path("q").prop_map(|path| Op::QueuePop { path }),
        2 => (typed_path("n"), prop_oneof![Just(1i64), Just(-3), Just(i64::MAX)]).prop_map(|(path, delta)| Op::CounterAdd { path, delta }),
        1 => read_op().prop_map(Op::Read),
    ]
    .boxed()
}

fn guard() -> BoxedStrategy<Guard> {
    prop_oneof![
        (path(), 0u64..3).prop_map(|(path, version)| Guard::VersionEquals { path, version }),
        path().prop_map(|path| Guard::Exists { path }),
        path().prop_map(|path| Guard::Missing { path }),
        (path(), value()).prop_map(|(path, value)| Guard::ValueEquals { path, value }),
        (path(), kind()).prop_map(|(path, kind)| Guard::TypeIs { path, kind }),
    ]
    .boxed()
}

pub fn txn() -> BoxedStrategy<Txn> {
    (
        prop::collection::vec(guard(), 0..3),
        prop::collection::vec(op(), 0..5),
        prop::collection::vec(op(), 0..3),
    )
        .prop_map(|(guards, then, otherwise)| Txn {
            guards,
            then,
            otherwise,
        })
        .boxed()
}

/// A step of a run: a write, a read at a revision (as an offset back from the
/// current one; negative: in the future), or a snapshot round trip.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Txn),
    Read(Option<i64>, Vec<ReadOp>),
    Snapshot,
}

pub fn step() -> BoxedStrategy<Step> {
    prop_oneof![
        8 => op().prop_map(|op| Step::Write(Txn::single(op))),
        3 => txn().prop_map(Step::Write),
        4 => (prop::option::of(-1i64..9), read_op()).prop_map(|(back, op)| Step::Read(back, vec![op])),
        1 => (prop::option::of(-1i64..9), prop::collection::vec(read_op(), 2..4)).prop_map(|(back, ops)| Step::Read(back, ops)),
        1 => Just(Step::Snapshot),
    ]
    .boxed()
}

pub fn revision_back(current: u64, back: Option<i64>) -> Option<u64> {
    back.map(|back| (current as i64 - back).max(0) as u64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Proves the tree answers every request as the naive model does and keeps the
    // same state, history and size, through snapshots.
    #[test]
    fn the_tree_behaves_as_the_model(steps in prop::collection::vec(step(), 1..100)) {
        let mut tree = Tree::new(small_limits());
        let mut model = Model::new(small_limits());
        for step in steps {
            match step {
                Step::Write(txn) => {
                    let got = normalized(tree.apply(&txn));
                    let want = normalized(model.apply(&txn));
                    prop_assert_eq!(got, want, "{:?}", txn);
                }
                Step::Read(back, ops) => {
                    let query = Query { revision: revision_back(model.revision(), back), ops };
                    let got = normalized(tree.query(&query));
                    let want = normalized(model.query(&query));
                    prop_assert_eq!(got, want, "{:?}", query);
                }
                Step::Snapshot => {
                    let mut bytes = Vec::new();
                    tree.write_to(&mut bytes).unwrap();
                    let restored = Tree::read_from(&mut bytes.as_slice()).unwrap();
                    prop_assert_eq!(&restored, &tree);
                    tree = restored;
                }
            }
            model.assert_same(&tree);
        }
    }
}
