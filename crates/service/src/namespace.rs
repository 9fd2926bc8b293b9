//! A namespace as a raft group's state machine: the [`Tree`] and the exactly-once
//! table, applied in log order, snapshotted together.

use std::io::{Read, Write};

use bytes::Bytes;
use concord_group::exactly_once::{ClientTable, ClientTableLimits};
use concord_group::{ApplyContext, StateMachine, StateMachineError};

use crate::command::{decode, encode, Command, Query, QueryResponse, TxnResponse};
use crate::error::ServiceError;
use crate::limits::{Limit, Limits};
use crate::tree::Tree;

/// One namespace's replicated state. Commands are encoded [`Command`]s and answer an
/// encoded `Result<TxnResponse, ServiceError>`; queries are encoded [`Query`]s and
/// answer an encoded `Result<QueryResponse, ServiceError>`. A command that does not
/// decode is answered with an error on every replica alike, never applied.
#[derive(Debug)]
pub struct Namespace {
    tree: Tree,
    table: ClientTable,
    /// Sealed for deletion ([`Command::Seal`]).
    sealed: bool,
}

impl Namespace {
    /// An empty namespace.
    pub fn new(limits: Limits, table_limits: ClientTableLimits) -> Namespace {
        Namespace {
            tree: Tree::new(limits),
            table: ClientTable::new(table_limits),
            sealed: false,
        }
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The exactly-once table.
    pub fn table(&self) -> &ClientTable {
        &self.table
    }

    fn run(
        &mut self,
        context: &ApplyContext<'_>,
        command: &[u8],
    ) -> Result<TxnResponse, ServiceError> {
        let limits = self.tree.limits();
        Limit::RequestBytes.check(u64::from(limits.request_bytes_max), command.len() as u64)?;
        if self.sealed {
            return Err(ServiceError::NamespaceDeleted);
        }
        let (succeeded, results) = match decode(command)? {
            Command::Txn(txn) => self.tree.apply(&txn)?,
            Command::Seal => {
                self.sealed = true;
                (true, Vec::new())
            }
        };
        Ok(TxnResponse {
            index: context.index(),
            term: context.term(),
            revision: self.tree.revision(),
            request: context.request().map_or(0, |id| id.sequence),
            succeeded,
            results,
        })
    }
}

impl StateMachine for Namespace {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        Ok(encode(&self.run(context, &command)))
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        let result: Result<QueryResponse, ServiceError> = if self.sealed {
            Err(ServiceError::NamespaceDeleted)
        } else {
            decode::<Query>(&query).and_then(|query| self.tree.query(&query))
        };
        Ok(encode(&result))
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        self.table.write_to(sink)?;
        sink.write_all(&[u8::from(self.sealed)])?;
        self.tree.write_to(sink)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let table = ClientTable::read_from(source)
            .map_err(|error| StateMachineError(format!("reading the client table: {error}")))?;
        let mut sealed = [0u8];
        source.read_exact(&mut sealed)?;
        let sealed = match sealed[0] {
            0 => false,
            1 => true,
            other => {
                return Err(StateMachineError(format!(
                    "reading the namespace: sealed flag {other}, not 0 or 1"
                )))
            }
        };
        let tree = Tree::read_from(source)?;
        self.table = table;
        self.tree = tree;
        self.sealed = sealed;
        Ok(())
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        Some(&mut self.table)
    }
}
