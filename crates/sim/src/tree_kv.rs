//! The coordination service's namespace (concord-service's `Namespace`, the code
//! the server runs) as the simulator's key-value map: each key is a blob at `/key`.
//! Its clients, histories and checkers stay the key-value ones; only the translation
//! between the two lives here:
//!
//! - put: a blob put; append: a blob append; append to two keys: a transaction of
//!   two blob appends;
//! - compare-and-swap: a transaction guarded by the blob's value (or its absence)
//!   that puts the new value, the guard's outcome being whether it swapped;
//! - get: a query of the blob (absent: no value); through the log, a transaction
//!   guarded by the blob's existence that reads it.
//!
//! The running digest is kept as [`crate::kv::Kv`] keeps it, beside the namespace,
//! and travels in the snapshot before the namespace's own.

use std::io::{Read, Write};

use bytes::Bytes;
use concord_group::{
    ApplyContext, ClientTable, ClientTableLimits, StateMachine, StateMachineError,
};
use concord_service::command::{
    decode, encode, Command, Guard, Op as TreeOp, Query, QueryResponse, ReadOp, ReadResult, Txn,
    TxnResponse,
};
use concord_service::{Limits, Namespace, NodeValue, Path, ServiceError};

use crate::history::{Op, Response};
use crate::kv::{encode_response, fold_and_decode, QUERY_DIGEST, QUERY_GET};

/// A namespace serving the simulator's key-value operations. See the module docs.
pub struct TreeKv {
    namespace: Namespace,
    digest: u64,
    /// The planted fault `SimFault::HalfTransactions`.
    half_transactions: bool,
}

/// The blob holding `key`.
fn path_of(key: &[u8]) -> Result<Path, StateMachineError> {
    let key = std::str::from_utf8(key)
        .map_err(|_| StateMachineError(format!("key {key:?} is not UTF-8")))?;
    Path::parse(&format!("/{key}"), u32::MAX)
        .map_err(|error| StateMachineError(format!("key {key:?}: {error}")))
}

impl TreeKv {
    /// An empty namespace with default limits and a table bounded by `limits`;
    /// with `half_transactions`, the planted fault of that name.
    pub fn new(limits: ClientTableLimits, half_transactions: bool) -> TreeKv {
        TreeKv {
            namespace: Namespace::new(Limits::default(), limits),
            digest: 0,
            half_transactions,
        }
    }

    /// The transaction that carries out `op`.
    fn txn(op: &Op) -> Result<Txn, StateMachineError> {
        let path = path_of(op.key())?;
        Ok(match op {
            Op::Put { value, .. } => Txn::single(TreeOp::BlobPut {
                path,
                value: value.clone(),
            }),
            Op::Append { suffix, .. } => Txn::single(TreeOp::BlobAppend {
                path,
                suffix: suffix.clone(),
            }),
            Op::AppendBoth { other, suffix, .. } => Txn {
                guards: Vec::new(),
                then: vec![
                    TreeOp::BlobAppend {
                        path,
                        suffix: suffix.clone(),
                    },
                    TreeOp::BlobAppend {
                        path: path_of(other)?,
                        suffix: suffix.clone(),
                    },
                ],
                otherwise: Vec::new(),
            },
            Op::Cas { expected, new, .. } => Txn {
                guards: vec![match expected {
                    Some(value) => Guard::ValueEquals {
                        path: path.clone(),
                        value: NodeValue::Blob(value.clone()),
                    },
                    None => Guard::Missing { path: path.clone() },
                }],
                then: vec![TreeOp::BlobPut {
                    path,
                    value: new.clone(),
                }],
                otherwise: Vec::new(),
            },
            // Absent: the guard fails and nothing is read.
            Op::Get { .. } => Txn {
                guards: vec![Guard::Exists { path: path.clone() }],
                then: vec![TreeOp::Read(ReadOp::Get { path })],
                otherwise: Vec::new(),
            },
        })
    }

    /// The key-value answer to `op` from the namespace's answer.
    fn response(
        op: &Op,
        answer: Result<TxnResponse, ServiceError>,
    ) -> Result<Response, StateMachineError> {
        let answer = answer
            .map_err(|error| StateMachineError(format!("the namespace refused {op}: {error}")))?;
        Ok(match op {
            Op::Put { .. } | Op::Append { .. } | Op::AppendBoth { .. } => Response::Ok,
            Op::Cas { .. } => Response::Cas(answer.succeeded),
            Op::Get { .. } if !answer.succeeded => Response::Value(None),
            Op::Get { .. } => match answer.results.first() {
                Some(concord_service::command::OpResult::Read(read)) => Self::value(read)?,
                other => return Err(StateMachineError(format!("get answered {other:?}"))),
            },
        })
    }

    fn value(read: &ReadResult) -> Result<Response, StateMachineError> {
        match read {
            ReadResult::Node {
                value: NodeValue::Blob(value),
                ..
            } => Ok(Response::Value(Some(value.clone()))),
            other => Err(StateMachineError(format!("a key read as {other:?}"))),
        }
    }
}

impl StateMachine for TreeKv {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let Some(op) = fold_and_decode(&mut self.digest, context, &command) else {
            return Ok(Bytes::new());
        };
        let mut txn = Self::txn(&op)?;
        if self.half_transactions && matches!(op, Op::AppendBoth { .. }) && context.index() % 5 == 0
        {
            txn.then.truncate(1);
        }
        let txn = encode(&Command::Txn(txn));
        let answer = self.namespace.apply(context, txn)?;
        let answer = decode::<Result<TxnResponse, ServiceError>>(&answer)
            .map_err(|error| StateMachineError(format!("the namespace's answer: {error}")))?;
        Ok(encode_response(&Self::response(&op, answer)?))
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        match query.first() {
            Some(&QUERY_GET) => {
                let path = path_of(&query[1..])?;
                let read = Query {
                    revision: None,
                    ops: vec![ReadOp::Get { path }],
                };
                let answer = self.namespace.query(encode(&read))?;
                let response = match decode::<Result<QueryResponse, ServiceError>>(&answer)
                    .map_err(|error| {
                        StateMachineError(format!("the namespace's answer: {error}"))
                    })? {
                    Ok(response) => Self::value(&response.results[0])?,
                    Err(ServiceError::NotFound { .. }) => Response::Value(None),
                    Err(error) => return Err(StateMachineError(error.to_string())),
                };
                Ok(encode_response(&response))
            }
            Some(&QUERY_DIGEST) => Ok(Bytes::copy_from_slice(&self.digest.to_be_bytes())),
            _ => Err(StateMachineError(format!("unknown query {query:?}"))),
        }
    }

    /// The digest, then the namespace's snapshot.
    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        sink.write_all(&self.digest.to_be_bytes())?;
        self.namespace.snapshot(sink)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut digest = [0; 8];
        source.read_exact(&mut digest)?;
        self.namespace.restore(source)?;
        self.digest = u64::from_be_bytes(digest);
        Ok(())
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        self.namespace.client_table()
    }
}
