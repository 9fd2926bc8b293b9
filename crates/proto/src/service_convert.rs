//! Conversions between the coordination service's wire messages (`concord.v1`) and
//! concord-service's values, used by the server and the client alike. Decoding is
//! strict: an unset oneof, an unknown enum value or a malformed path is an error that
//! says which field, never a default.

use bytes::Bytes;
use concord_service::command::{
    ChildEntry, Guard, Op, OpResult, Query, QueryResponse, ReadOp, ReadResult, SetAlgebra,
    SetOperand, SetRelation, Txn, TxnResponse,
};
use concord_service::{Limit, Limits, NodeKind, NodeValue, Path, ServiceError, Stat};
use imbl::{OrdSet, Vector};

use crate::service as proto;
use proto::{
    guard::Guard as G, node_value::Value as V, op::Op as O, op_result::Result as R,
    read_op::Read as Rd, read_result::Result as RR, service_error::Kind as K,
    set_operand::Operand as SO,
};

/// Why a message could not be decoded.
fn invalid(what: impl Into<String>) -> ServiceError {
    ServiceError::InvalidRequest(what.into())
}

fn path(text: String) -> Result<Path, ServiceError> {
    Path::parse(&text, u32::MAX)
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ServiceError> {
    value.ok_or_else(|| invalid(format!("{field} is required")))
}

/// A node type on the wire.
pub fn kind_to_proto(kind: NodeKind) -> i32 {
    (match kind {
        NodeKind::Dir => proto::NodeKind::Dir,
        NodeKind::Blob => proto::NodeKind::Blob,
        NodeKind::Set => proto::NodeKind::Set,
        NodeKind::Queue => proto::NodeKind::Queue,
        NodeKind::Counter => proto::NodeKind::Counter,
    }) as i32
}

/// A node type from the wire.
pub fn kind_from_proto(value: i32) -> Result<NodeKind, ServiceError> {
    match proto::NodeKind::try_from(value) {
        Ok(proto::NodeKind::Dir) => Ok(NodeKind::Dir),
        Ok(proto::NodeKind::Blob) => Ok(NodeKind::Blob),
        Ok(proto::NodeKind::Set) => Ok(NodeKind::Set),
        Ok(proto::NodeKind::Queue) => Ok(NodeKind::Queue),
        Ok(proto::NodeKind::Counter) => Ok(NodeKind::Counter),
        _ => Err(invalid(format!(
            "node kind {value} is not one of dir (1), blob (2), set (3), queue (4), counter (5)"
        ))),
    }
}

fn members(members: impl IntoIterator<Item = Bytes>) -> proto::Members {
    proto::Members {
        members: members.into_iter().collect(),
    }
}

/// A node's value on the wire.
pub fn value_to_proto(value: &NodeValue) -> proto::NodeValue {
    proto::NodeValue {
        value: Some(match value {
            NodeValue::Dir => V::Dir(proto::Empty {}),
            NodeValue::Blob(bytes) => V::Blob(bytes.clone()),
            NodeValue::Set(set) => V::Set(members(set.iter().cloned())),
            NodeValue::Queue(queue) => V::Queue(members(queue.iter().cloned())),
            NodeValue::Counter(value) => V::Counter(*value),
        }),
    }
}

/// A node's value from the wire.
pub fn value_from_proto(value: Option<proto::NodeValue>) -> Result<NodeValue, ServiceError> {
    Ok(match required(required(value, "value")?.value, "value")? {
        V::Dir(_) => NodeValue::Dir,
        V::Blob(bytes) => NodeValue::Blob(bytes),
        V::Set(set) => NodeValue::Set(set.members.into_iter().collect::<OrdSet<_>>()),
        V::Queue(queue) => NodeValue::Queue(queue.members.into_iter().collect::<Vector<_>>()),
        V::Counter(value) => NodeValue::Counter(value),
    })
}

/// A stat on the wire.
pub fn stat_to_proto(stat: &Stat) -> proto::Stat {
    proto::Stat {
        kind: kind_to_proto(stat.kind),
        version: stat.version,
        create_revision: stat.create_revision,
        modify_revision: stat.modify_revision,
        children: stat.children,
        size: stat.size,
    }
}

/// A stat from the wire.
pub fn stat_from_proto(stat: Option<proto::Stat>) -> Result<Stat, ServiceError> {
    let stat = required(stat, "stat")?;
    Ok(Stat {
        kind: kind_from_proto(stat.kind)?,
        version: stat.version,
        create_revision: stat.create_revision,
        modify_revision: stat.modify_revision,
        children: stat.children,
        size: stat.size,
    })
}

fn guard_to_proto(guard: &Guard) -> proto::Guard {
    proto::Guard {
        guard: Some(match guard {
            Guard::VersionEquals { path, version } => G::VersionEquals(proto::VersionEquals {
                path: path.to_string(),
                version: *version,
            }),
            Guard::Exists { path } => G::Exists(path.to_string()),
            Guard::Missing { path } => G::Missing(path.to_string()),
            Guard::ValueEquals { path, value } => G::ValueEquals(proto::ValueEquals {
                path: path.to_string(),
                value: Some(value_to_proto(value)),
            }),
            Guard::TypeIs { path, kind } => G::TypeIs(proto::TypeIs {
                path: path.to_string(),
                kind: kind_to_proto(*kind),
            }),
        }),
    }
}

fn guard_from_proto(guard: proto::Guard) -> Result<Guard, ServiceError> {
    Ok(match required(guard.guard, "guard")? {
        G::VersionEquals(guard) => Guard::VersionEquals {
            path: path(guard.path)?,
            version: guard.version,
        },
        G::Exists(text) => Guard::Exists { path: path(text)? },
        G::Missing(text) => Guard::Missing { path: path(text)? },
        G::ValueEquals(guard) => Guard::ValueEquals {
            path: path(guard.path)?,
            value: value_from_proto(guard.value)?,
        },
        G::TypeIs(guard) => Guard::TypeIs {
            path: path(guard.path)?,
            kind: kind_from_proto(guard.kind)?,
        },
    })
}

fn operand_to_proto(operand: &SetOperand) -> proto::SetOperand {
    proto::SetOperand {
        operand: Some(match operand {
            SetOperand::Path(path) => SO::Path(path.to_string()),
            SetOperand::Literal(literal) => SO::Literal(members(literal.iter().cloned())),
        }),
    }
}

fn operand_from_proto(operand: Option<proto::SetOperand>) -> Result<SetOperand, ServiceError> {
    Ok(
        match required(required(operand, "set operand")?.operand, "set operand")? {
            SO::Path(text) => SetOperand::Path(path(text)?),
            SO::Literal(literal) => SetOperand::Literal(literal.members),
        },
    )
}

/// A read on the wire.
pub fn read_to_proto(read: &ReadOp) -> proto::ReadOp {
    proto::ReadOp {
        read: Some(match read {
            ReadOp::Get { path } => Rd::Get(path.to_string()),
            ReadOp::Stat { path } => Rd::Stat(path.to_string()),
            ReadOp::List { path, after, limit } => Rd::List(proto::List {
                path: path.to_string(),
                after: after.clone().unwrap_or_default(),
                limit: *limit,
            }),
            ReadOp::SetContains { path, member } => Rd::SetContains(proto::SetContains {
                path: path.to_string(),
                member: member.clone(),
            }),
            ReadOp::SetAlgebra { op, left, right } => Rd::SetAlgebra(proto::SetAlgebra {
                op: (match op {
                    SetAlgebra::Union => proto::SetAlgebraOp::Union,
                    SetAlgebra::Intersection => proto::SetAlgebraOp::Intersection,
                    SetAlgebra::Difference => proto::SetAlgebraOp::Difference,
                    SetAlgebra::SymmetricDifference => proto::SetAlgebraOp::SymmetricDifference,
                }) as i32,
                left: Some(operand_to_proto(left)),
                right: Some(operand_to_proto(right)),
            }),
            ReadOp::SetCompare {
                relation,
                left,
                right,
            } => Rd::SetCompare(proto::SetCompare {
                relation: (match relation {
                    SetRelation::Subset => proto::SetRelation::Subset,
                    SetRelation::Superset => proto::SetRelation::Superset,
                }) as i32,
                left: Some(operand_to_proto(left)),
                right: Some(operand_to_proto(right)),
            }),
            ReadOp::QueueFront { path } => Rd::QueueFront(path.to_string()),
            ReadOp::QueueBack { path } => Rd::QueueBack(path.to_string()),
        }),
    }
}

/// A read from the wire.
pub fn read_from_proto(read: proto::ReadOp) -> Result<ReadOp, ServiceError> {
    Ok(match required(read.read, "read")? {
        Rd::Get(text) => ReadOp::Get { path: path(text)? },
        Rd::Stat(text) => ReadOp::Stat { path: path(text)? },
        Rd::List(list) => ReadOp::List {
            path: path(list.path)?,
            after: (!list.after.is_empty()).then_some(list.after),
            limit: list.limit,
        },
        Rd::SetContains(read) => ReadOp::SetContains {
            path: path(read.path)?,
            member: read.member,
        },
        Rd::SetAlgebra(read) => ReadOp::SetAlgebra {
            op: match proto::SetAlgebraOp::try_from(read.op) {
                Ok(proto::SetAlgebraOp::Union) => SetAlgebra::Union,
                Ok(proto::SetAlgebraOp::Intersection) => SetAlgebra::Intersection,
                Ok(proto::SetAlgebraOp::Difference) => SetAlgebra::Difference,
                Ok(proto::SetAlgebraOp::SymmetricDifference) => SetAlgebra::SymmetricDifference,
                _ => {
                    return Err(invalid(format!(
                        "set algebra op {} is not one of union (1), intersection (2), \
                         difference (3), symmetric difference (4)",
                        read.op
                    )))
                }
            },
            left: operand_from_proto(read.left)?,
            right: operand_from_proto(read.right)?,
        },
        Rd::SetCompare(read) => ReadOp::SetCompare {
            relation: match proto::SetRelation::try_from(read.relation) {
                Ok(proto::SetRelation::Subset) => SetRelation::Subset,
                Ok(proto::SetRelation::Superset) => SetRelation::Superset,
                _ => {
                    return Err(invalid(format!(
                        "set relation {} is not one of subset (1), superset (2)",
                        read.relation
                    )))
                }
            },
            left: operand_from_proto(read.left)?,
            right: operand_from_proto(read.right)?,
        },
        Rd::QueueFront(text) => ReadOp::QueueFront { path: path(text)? },
        Rd::QueueBack(text) => ReadOp::QueueBack { path: path(text)? },
    })
}

fn op_to_proto(op: &Op) -> proto::Op {
    let blob = |path: &Path, value: &Bytes| proto::BlobWrite {
        path: path.to_string(),
        value: value.clone(),
    };
    let set = |path: &Path, members: &[Bytes]| proto::SetWrite {
        path: path.to_string(),
        members: members.to_vec(),
    };
    proto::Op {
        op: Some(match op {
            Op::Create {
                path,
                value,
                parents,
            } => O::Create(proto::Create {
                path: path.to_string(),
                value: Some(value_to_proto(value)),
                parents: *parents,
            }),
            Op::Delete { path, recursive } => O::Delete(proto::Delete {
                path: path.to_string(),
                recursive: *recursive,
            }),
            Op::BlobPut { path, value } => O::BlobPut(blob(path, value)),
            Op::BlobAppend { path, suffix } => O::BlobAppend(blob(path, suffix)),
            Op::SetInsert { path, members } => O::SetInsert(set(path, members)),
            Op::SetRemove { path, members } => O::SetRemove(set(path, members)),
            Op::QueuePush { path, items } => O::QueuePush(set(path, items)),
            Op::QueuePop { path } => O::QueuePop(path.to_string()),
            Op::CounterAdd { path, delta } => O::CounterAdd(proto::CounterAdd {
                path: path.to_string(),
                delta: *delta,
            }),
            Op::Read(read) => O::Read(read_to_proto(read)),
        }),
    }
}

fn op_from_proto(op: proto::Op) -> Result<Op, ServiceError> {
    Ok(match required(op.op, "op")? {
        O::Create(create) => Op::Create {
            path: path(create.path)?,
            value: value_from_proto(create.value)?,
            parents: create.parents,
        },
        O::Delete(delete) => Op::Delete {
            path: path(delete.path)?,
            recursive: delete.recursive,
        },
        O::BlobPut(write) => Op::BlobPut {
            path: path(write.path)?,
            value: write.value,
        },
        O::BlobAppend(write) => Op::BlobAppend {
            path: path(write.path)?,
            suffix: write.value,
        },
        O::SetInsert(write) => Op::SetInsert {
            path: path(write.path)?,
            members: write.members,
        },
        O::SetRemove(write) => Op::SetRemove {
            path: path(write.path)?,
            members: write.members,
        },
        O::QueuePush(write) => Op::QueuePush {
            path: path(write.path)?,
            items: write.members,
        },
        O::QueuePop(text) => Op::QueuePop { path: path(text)? },
        O::CounterAdd(add) => Op::CounterAdd {
            path: path(add.path)?,
            delta: add.delta,
        },
        O::Read(read) => Op::Read(read_from_proto(read)?),
    })
}

/// A transaction's guards and branches on the wire (the caller sets the namespace
/// and request id).
pub fn txn_to_proto(txn: &Txn, namespace: &str) -> proto::TxnRequest {
    proto::TxnRequest {
        namespace: namespace.to_string(),
        id: None,
        guards: txn.guards.iter().map(guard_to_proto).collect(),
        then: txn.then.iter().map(op_to_proto).collect(),
        otherwise: txn.otherwise.iter().map(op_to_proto).collect(),
    }
}

/// A transaction from the wire.
pub fn txn_from_proto(request: proto::TxnRequest) -> Result<Txn, ServiceError> {
    Ok(Txn {
        guards: request
            .guards
            .into_iter()
            .map(guard_from_proto)
            .collect::<Result<_, _>>()?,
        then: request
            .then
            .into_iter()
            .map(op_from_proto)
            .collect::<Result<_, _>>()?,
        otherwise: request
            .otherwise
            .into_iter()
            .map(op_from_proto)
            .collect::<Result<_, _>>()?,
    })
}

/// A query on the wire.
pub fn query_to_proto(query: &Query, namespace: &str, stale: bool) -> proto::QueryRequest {
    proto::QueryRequest {
        namespace: namespace.to_string(),
        stale,
        revision: query.revision.unwrap_or(0),
        reads: query.ops.iter().map(read_to_proto).collect(),
    }
}

/// A query from the wire (its namespace and `stale` are the caller's to read).
pub fn query_from_proto(request: proto::QueryRequest) -> Result<Query, ServiceError> {
    Ok(Query {
        revision: (request.revision != 0).then_some(request.revision),
        ops: request
            .reads
            .into_iter()
            .map(read_from_proto)
            .collect::<Result<_, _>>()?,
    })
}

fn read_result_to_proto(result: &ReadResult) -> proto::ReadResult {
    proto::ReadResult {
        result: Some(match result {
            ReadResult::Node { value, stat } => RR::Node(proto::NodeWithStat {
                value: Some(value_to_proto(value)),
                stat: Some(stat_to_proto(stat)),
            }),
            ReadResult::Stat(stat) => RR::Stat(stat_to_proto(stat)),
            ReadResult::List { children, more } => RR::List(proto::ListPage {
                children: children
                    .iter()
                    .map(|child| proto::ChildEntry {
                        name: child.name.clone(),
                        kind: kind_to_proto(child.kind),
                    })
                    .collect(),
                more: *more,
            }),
            ReadResult::Bool(yes) => RR::Yes(*yes),
            ReadResult::Members(found) => RR::Members(members(found.iter().cloned())),
            ReadResult::Item(item) => RR::Item(proto::Popped {
                item: item.clone(),
                stat: None,
            }),
        }),
    }
}

fn read_result_from_proto(result: proto::ReadResult) -> Result<ReadResult, ServiceError> {
    Ok(match required(result.result, "read result")? {
        RR::Node(node) => ReadResult::Node {
            value: value_from_proto(node.value)?,
            stat: stat_from_proto(node.stat)?,
        },
        RR::Stat(stat) => ReadResult::Stat(stat_from_proto(Some(stat))?),
        RR::List(page) => ReadResult::List {
            children: page
                .children
                .into_iter()
                .map(|child| {
                    Ok(ChildEntry {
                        name: child.name,
                        kind: kind_from_proto(child.kind)?,
                    })
                })
                .collect::<Result<_, ServiceError>>()?,
            more: page.more,
        },
        RR::Yes(yes) => ReadResult::Bool(yes),
        RR::Members(found) => ReadResult::Members(found.members),
        RR::Item(item) => ReadResult::Item(item.item),
    })
}

fn op_result_to_proto(result: &OpResult) -> proto::OpResult {
    proto::OpResult {
        result: Some(match result {
            OpResult::Written(stat) => R::Written(stat_to_proto(stat)),
            OpResult::Deleted { nodes } => R::Deleted(*nodes),
            OpResult::Changed { count, stat } => R::Changed(proto::Changed {
                count: *count,
                stat: Some(stat_to_proto(stat)),
            }),
            OpResult::Popped { item, stat } => R::Popped(proto::Popped {
                item: item.clone(),
                stat: Some(stat_to_proto(stat)),
            }),
            OpResult::Counter { value, stat } => R::Counter(proto::CounterValue {
                value: *value,
                stat: Some(stat_to_proto(stat)),
            }),
            OpResult::Read(read) => R::Read(read_result_to_proto(read)),
        }),
    }
}

fn op_result_from_proto(result: proto::OpResult) -> Result<OpResult, ServiceError> {
    Ok(match required(result.result, "op result")? {
        R::Written(stat) => OpResult::Written(stat_from_proto(Some(stat))?),
        R::Deleted(nodes) => OpResult::Deleted { nodes },
        R::Changed(changed) => OpResult::Changed {
            count: changed.count,
            stat: stat_from_proto(changed.stat)?,
        },
        R::Popped(popped) => OpResult::Popped {
            item: popped.item,
            stat: stat_from_proto(popped.stat)?,
        },
        R::Counter(counter) => OpResult::Counter {
            value: counter.value,
            stat: stat_from_proto(counter.stat)?,
        },
        R::Read(read) => OpResult::Read(read_result_from_proto(read)?),
    })
}

/// A service error on the wire.
pub fn error_to_proto(error: &ServiceError) -> proto::ServiceError {
    let kind = match error {
        ServiceError::InvalidPath { path, why } => K::InvalidPath(proto::InvalidPath {
            path: path.clone(),
            why: why.clone(),
        }),
        ServiceError::NotFound { path } => K::NotFound(path.clone()),
        ServiceError::AlreadyExists { path } => K::AlreadyExists(path.clone()),
        ServiceError::WrongType {
            path,
            expected,
            actual,
        } => K::WrongType(proto::WrongType {
            path: path.clone(),
            expected: kind_to_proto(*expected),
            actual: kind_to_proto(*actual),
        }),
        ServiceError::NotADirectory { path, actual } => K::NotADirectory(proto::NotADirectory {
            path: path.clone(),
            actual: kind_to_proto(*actual),
        }),
        ServiceError::NotEmpty { path, children } => K::NotEmpty(proto::NotEmpty {
            path: path.clone(),
            children: *children,
        }),
        ServiceError::Root => K::Root(proto::Empty {}),
        ServiceError::LimitExceeded { limit, max, actual } => {
            K::LimitExceeded(proto::LimitExceeded {
                limit: limit.to_string(),
                max: *max,
                actual: *actual,
            })
        }
        ServiceError::QuotaExceeded { max, would_be } => K::QuotaExceeded(proto::QuotaExceeded {
            max: *max,
            would_be: *would_be,
        }),
        ServiceError::CounterOverflow { path, value, delta } => {
            K::CounterOverflow(proto::CounterOverflow {
                path: path.clone(),
                value: *value,
                delta: *delta,
            })
        }
        ServiceError::Compacted { requested, oldest } => K::Compacted(proto::Compacted {
            requested: *requested,
            oldest: *oldest,
        }),
        ServiceError::FutureRevision { requested, current } => {
            K::FutureRevision(proto::FutureRevision {
                requested: *requested,
                current: *current,
            })
        }
        ServiceError::InTransaction { op, error } => {
            K::InTransaction(Box::new(proto::InTransaction {
                op: *op,
                error: Some(Box::new(error_to_proto(error))),
            }))
        }
        ServiceError::InvalidRequest(why) => K::InvalidRequest(why.clone()),
        ServiceError::NamespaceDeleted => K::NamespaceDeleted(proto::Empty {}),
    };
    proto::ServiceError {
        message: error.to_string(),
        kind: Some(kind),
    }
}

/// A service error from the wire.
pub fn error_from_proto(error: proto::ServiceError) -> Result<ServiceError, ServiceError> {
    Ok(match required(error.kind, "service error kind")? {
        K::InvalidPath(e) => ServiceError::InvalidPath {
            path: e.path,
            why: e.why,
        },
        K::NotFound(path) => ServiceError::NotFound { path },
        K::AlreadyExists(path) => ServiceError::AlreadyExists { path },
        K::WrongType(e) => ServiceError::WrongType {
            path: e.path,
            expected: kind_from_proto(e.expected)?,
            actual: kind_from_proto(e.actual)?,
        },
        K::NotADirectory(e) => ServiceError::NotADirectory {
            path: e.path,
            actual: kind_from_proto(e.actual)?,
        },
        K::NotEmpty(e) => ServiceError::NotEmpty {
            path: e.path,
            children: e.children,
        },
        K::Root(_) => ServiceError::Root,
        K::LimitExceeded(e) => ServiceError::LimitExceeded {
            limit: Limit::from_name(&e.limit)
                .ok_or_else(|| invalid(format!("unknown limit {:?}", e.limit)))?,
            max: e.max,
            actual: e.actual,
        },
        K::QuotaExceeded(e) => ServiceError::QuotaExceeded {
            max: e.max,
            would_be: e.would_be,
        },
        K::CounterOverflow(e) => ServiceError::CounterOverflow {
            path: e.path,
            value: e.value,
            delta: e.delta,
        },
        K::Compacted(e) => ServiceError::Compacted {
            requested: e.requested,
            oldest: e.oldest,
        },
        K::FutureRevision(e) => ServiceError::FutureRevision {
            requested: e.requested,
            current: e.current,
        },
        K::InTransaction(e) => ServiceError::InTransaction {
            op: e.op,
            error: Box::new(error_from_proto(*required(
                e.error,
                "in_transaction.error",
            )?)?),
        },
        K::InvalidRequest(why) => ServiceError::InvalidRequest(why),
        K::NamespaceDeleted(_) => ServiceError::NamespaceDeleted,
    })
}

/// A transaction's answer on the wire.
pub fn txn_reply_to_proto(answer: &Result<TxnResponse, ServiceError>) -> proto::TxnReply {
    match answer {
        Ok(response) => proto::TxnReply {
            header: Some(proto::ReplyHeader {
                term: response.term,
                index: response.index,
                revision: response.revision,
                sequence: response.request,
            }),
            error: None,
            succeeded: response.succeeded,
            results: response.results.iter().map(op_result_to_proto).collect(),
        },
        Err(error) => proto::TxnReply {
            header: None,
            error: Some(error_to_proto(error)),
            succeeded: false,
            results: Vec::new(),
        },
    }
}

/// A transaction's answer from the wire; `Err` when the reply is malformed.
#[allow(clippy::type_complexity)]
pub fn txn_reply_from_proto(
    reply: proto::TxnReply,
) -> Result<Result<TxnResponse, ServiceError>, ServiceError> {
    if let Some(error) = reply.error {
        return Ok(Err(error_from_proto(error)?));
    }
    let header = required(reply.header, "header")?;
    Ok(Ok(TxnResponse {
        index: header.index,
        term: header.term,
        revision: header.revision,
        request: header.sequence,
        succeeded: reply.succeeded,
        results: reply
            .results
            .into_iter()
            .map(op_result_from_proto)
            .collect::<Result<_, _>>()?,
    }))
}

/// A query's answer on the wire (the caller sets term and index).
pub fn query_reply_to_proto(answer: &Result<QueryResponse, ServiceError>) -> proto::QueryReply {
    match answer {
        Ok(response) => proto::QueryReply {
            header: Some(proto::ReplyHeader {
                term: 0,
                index: 0,
                revision: response.revision,
                sequence: 0,
            }),
            error: None,
            results: response.results.iter().map(read_result_to_proto).collect(),
        },
        Err(error) => proto::QueryReply {
            header: None,
            error: Some(error_to_proto(error)),
            results: Vec::new(),
        },
    }
}

/// A query's answer from the wire; `Err` when the reply is malformed.
#[allow(clippy::type_complexity)]
pub fn query_reply_from_proto(
    reply: proto::QueryReply,
) -> Result<Result<QueryResponse, ServiceError>, ServiceError> {
    if let Some(error) = reply.error {
        return Ok(Err(error_from_proto(error)?));
    }
    let header = required(reply.header, "header")?;
    Ok(Ok(QueryResponse {
        revision: header.revision,
        results: reply
            .results
            .into_iter()
            .map(read_result_from_proto)
            .collect::<Result<_, _>>()?,
    }))
}

/// A namespace's limits on the wire.
pub fn limits_to_proto(limits: &Limits) -> proto::NamespaceLimits {
    proto::NamespaceLimits {
        value_bytes_max: limits.value_bytes_max,
        path_bytes_max: limits.path_bytes_max,
        request_bytes_max: limits.request_bytes_max,
        children_per_dir_max: limits.children_per_dir_max,
        txn_ops_max: limits.txn_ops_max,
        list_page_entries_max: limits.list_page_entries_max,
        members_max: limits.members_max,
        namespace_bytes_max: limits.namespace_bytes_max,
        history_revisions_max: limits.history_revisions_max,
    }
}

/// A namespace's limits from the wire: 0 (or unset) takes the default.
pub fn limits_from_proto(limits: Option<proto::NamespaceLimits>) -> Limits {
    let defaults = Limits::default();
    let Some(limits) = limits else {
        return defaults;
    };
    let or32 = |value: u32, default: u32| if value == 0 { default } else { value };
    let or64 = |value: u64, default: u64| if value == 0 { default } else { value };
    Limits {
        value_bytes_max: or32(limits.value_bytes_max, defaults.value_bytes_max),
        path_bytes_max: or32(limits.path_bytes_max, defaults.path_bytes_max),
        request_bytes_max: or32(limits.request_bytes_max, defaults.request_bytes_max),
        children_per_dir_max: or32(limits.children_per_dir_max, defaults.children_per_dir_max),
        txn_ops_max: or32(limits.txn_ops_max, defaults.txn_ops_max),
        list_page_entries_max: or32(limits.list_page_entries_max, defaults.list_page_entries_max),
        members_max: or32(limits.members_max, defaults.members_max),
        namespace_bytes_max: or64(limits.namespace_bytes_max, defaults.namespace_bytes_max),
        history_revisions_max: or64(limits.history_revisions_max, defaults.history_revisions_max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Path {
        Path::parse(text, u32::MAX).unwrap()
    }

    fn every_read() -> Vec<ReadOp> {
        let set = SetOperand::Path(p("/s"));
        let literal = SetOperand::Literal(vec![Bytes::from("a"), Bytes::from("b")]);
        let mut reads = vec![
            ReadOp::Get { path: p("/a") },
            ReadOp::Stat { path: p("/") },
            ReadOp::List {
                path: p("/d"),
                after: Some("x".into()),
                limit: 5,
            },
            ReadOp::List {
                path: p("/d"),
                after: None,
                limit: 1,
            },
            ReadOp::SetContains {
                path: p("/s"),
                member: Bytes::from("m"),
            },
            ReadOp::QueueFront { path: p("/q") },
            ReadOp::QueueBack { path: p("/q") },
        ];
        for op in [
            SetAlgebra::Union,
            SetAlgebra::Intersection,
            SetAlgebra::Difference,
            SetAlgebra::SymmetricDifference,
        ] {
            reads.push(ReadOp::SetAlgebra {
                op,
                left: set.clone(),
                right: literal.clone(),
            });
        }
        for relation in [SetRelation::Subset, SetRelation::Superset] {
            reads.push(ReadOp::SetCompare {
                relation,
                left: literal.clone(),
                right: set.clone(),
            });
        }
        reads
    }

    fn every_value() -> Vec<NodeValue> {
        vec![
            NodeValue::Dir,
            NodeValue::Blob(Bytes::from("v")),
            NodeValue::Set([Bytes::from("a"), Bytes::from("b")].into_iter().collect()),
            NodeValue::Queue([Bytes::from("b"), Bytes::from("a")].into_iter().collect()),
            NodeValue::Counter(-7),
        ]
    }

    /// Through the wire message and its bytes, and back.
    fn wire<M: prost::Message + Default>(message: M) -> M {
        M::decode(message.encode_to_vec().as_slice()).unwrap()
    }

    // Proves every guard, operation, read and value survives the trip to the wire
    // and back unchanged.
    #[test]
    fn transactions_and_queries_round_trip() {
        let mut then: Vec<Op> = every_value()
            .into_iter()
            .map(|value| Op::Create {
                path: p("/n"),
                value,
                parents: true,
            })
            .collect();
        then.extend([
            Op::Delete {
                path: p("/n"),
                recursive: true,
            },
            Op::BlobPut {
                path: p("/b"),
                value: Bytes::from("v"),
            },
            Op::BlobAppend {
                path: p("/b"),
                suffix: Bytes::from("w"),
            },
            Op::SetInsert {
                path: p("/s"),
                members: vec![Bytes::from("a")],
            },
            Op::SetRemove {
                path: p("/s"),
                members: vec![],
            },
            Op::QueuePush {
                path: p("/q"),
                items: vec![Bytes::from("x"), Bytes::from("y")],
            },
            Op::QueuePop { path: p("/q") },
            Op::CounterAdd {
                path: p("/c"),
                delta: i64::MIN,
            },
        ]);
        then.extend(every_read().into_iter().map(Op::Read));
        let mut guards: Vec<Guard> = every_value()
            .into_iter()
            .map(|value| Guard::ValueEquals {
                path: p("/v"),
                value,
            })
            .collect();
        guards.extend([
            Guard::VersionEquals {
                path: p("/v"),
                version: 3,
            },
            Guard::Exists { path: p("/e") },
            Guard::Missing { path: p("/m") },
            Guard::TypeIs {
                path: p("/t"),
                kind: NodeKind::Queue,
            },
        ]);
        let txn = Txn {
            guards,
            then,
            otherwise: vec![Op::QueuePop { path: p("/other") }],
        };
        let request = wire(txn_to_proto(&txn, "ns"));
        assert_eq!(request.namespace, "ns");
        assert_eq!(txn_from_proto(request).unwrap(), txn);
        for revision in [None, Some(9)] {
            let query = Query {
                revision,
                ops: every_read(),
            };
            let request = wire(query_to_proto(&query, "ns", true));
            assert!(request.stale);
            assert_eq!(query_from_proto(request).unwrap(), query);
        }
    }

    // Proves every answer and every error survives the trip, nested transaction
    // errors included.
    #[test]
    fn answers_and_errors_round_trip() {
        let stat = Stat {
            kind: NodeKind::Set,
            version: 2,
            create_revision: 1,
            modify_revision: 4,
            children: 0,
            size: 3,
        };
        let mut results: Vec<OpResult> = vec![
            OpResult::Written(stat),
            OpResult::Deleted { nodes: 4 },
            OpResult::Changed { count: 1, stat },
            OpResult::Popped { item: None, stat },
            OpResult::Popped {
                item: Some(Bytes::from("i")),
                stat,
            },
            OpResult::Counter { value: -1, stat },
        ];
        let reads = vec![
            ReadResult::Stat(stat),
            ReadResult::List {
                children: vec![ChildEntry {
                    name: "x".into(),
                    kind: NodeKind::Dir,
                }],
                more: true,
            },
            ReadResult::Bool(true),
            ReadResult::Members(vec![Bytes::from("a")]),
            ReadResult::Item(Some(Bytes::from("i"))),
            ReadResult::Item(None),
        ];
        results.extend(reads.iter().cloned().map(OpResult::Read));
        results.extend(
            every_value()
                .into_iter()
                .map(|value| OpResult::Read(ReadResult::Node { value, stat })),
        );
        let answer = Ok(TxnResponse {
            index: 10,
            term: 2,
            revision: 7,
            request: 12,
            succeeded: true,
            results,
        });
        assert_eq!(
            txn_reply_from_proto(wire(txn_reply_to_proto(&answer))).unwrap(),
            answer
        );
        let answer = Ok(QueryResponse {
            revision: 7,
            results: reads,
        });
        assert_eq!(
            query_reply_from_proto(wire(query_reply_to_proto(&answer))).unwrap(),
            answer
        );
        let errors = vec![
            ServiceError::InvalidPath {
                path: "x".into(),
                why: "why".into(),
            },
            ServiceError::NotFound { path: "/a".into() },
            ServiceError::AlreadyExists { path: "/a".into() },
            ServiceError::WrongType {
                path: "/a".into(),
                expected: NodeKind::Counter,
                actual: NodeKind::Blob,
            },
            ServiceError::NotADirectory {
                path: "/a".into(),
                actual: NodeKind::Set,
            },
            ServiceError::NotEmpty {
                path: "/a".into(),
                children: 2,
            },
            ServiceError::Root,
            ServiceError::QuotaExceeded {
                max: 10,
                would_be: 11,
            },
            ServiceError::CounterOverflow {
                path: "/c".into(),
                value: i64::MAX,
                delta: 1,
            },
            ServiceError::Compacted {
                requested: 1,
                oldest: 5,
            },
            ServiceError::FutureRevision {
                requested: 9,
                current: 5,
            },
            ServiceError::InTransaction {
                op: 3,
                error: Box::new(ServiceError::InTransaction {
                    op: 1,
                    error: Box::new(ServiceError::Root),
                }),
            },
            ServiceError::InvalidRequest("bad".into()),
            ServiceError::NamespaceDeleted,
        ]
        .into_iter()
        .chain(
            Limit::ALL
                .into_iter()
                .map(|limit| ServiceError::LimitExceeded {
                    limit,
                    max: 1,
                    actual: 2,
                }),
        );
        for error in errors {
            let answer: Result<TxnResponse, ServiceError> = Err(error.clone());
            let reply = wire(txn_reply_to_proto(&answer));
            assert_eq!(reply.error.as_ref().unwrap().message, error.to_string());
            assert_eq!(txn_reply_from_proto(reply).unwrap(), answer);
        }
    }

    // Proves a message with a field left unset, an unknown enum value or a malformed
    // path is refused, saying which.
    #[test]
    fn malformed_messages_are_refused_by_field() {
        let mut request = txn_to_proto(&Txn::single(Op::QueuePop { path: p("/q") }), "ns");
        request.then[0].op = None;
        assert_eq!(
            txn_from_proto(request).unwrap_err(),
            ServiceError::InvalidRequest("op is required".into())
        );
        let mut request = txn_to_proto(
            &Txn {
                guards: vec![Guard::TypeIs {
                    path: p("/t"),
                    kind: NodeKind::Dir,
                }],
                ..Txn::default()
            },
            "ns",
        );
        if let Some(G::TypeIs(guard)) = &mut request.guards[0].guard {
            guard.kind = 42;
        }
        let error = txn_from_proto(request).unwrap_err().to_string();
        assert!(error.contains("node kind 42 is not one of"), "{error}");
        let request = proto::TxnRequest {
            then: vec![proto::Op {
                op: Some(O::QueuePop("no/slash".into())),
            }],
            ..proto::TxnRequest::default()
        };
        assert!(matches!(
            txn_from_proto(request).unwrap_err(),
            ServiceError::InvalidPath { .. }
        ));
        let reply = proto::TxnReply::default();
        assert_eq!(
            txn_reply_from_proto(reply).unwrap_err(),
            ServiceError::InvalidRequest("header is required".into())
        );
    }
}
