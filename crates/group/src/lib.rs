//! One raft group without IO, as concord runs it: the per-group driver, the state
//! machine API, and the exactly-once table. `concord-node` (the runtime) and
//! `concord-sim` (the simulator) both run this code, so what the simulator checks is
//! what ships.
//!
//! - [`GroupDriver`] — the Ready loop of one group: batching proposals, matching
//!   entries to proposers, reads, membership changes, timeouts, and the rules for
//!   what may be sent before a write is durable.
//! - [`Applier`] — the state machine's side: applies what the driver hands out, in
//!   order, and answers the callers.
//! - [`StateMachine`] — what a group replicates, with [`TypedStateMachine`] for typed
//!   commands and [`ExactlyOnce`] for a plain state machine that wants exactly-once
//!   requests.
//! - [`ClientTable`] — the exactly-once table (Raft thesis §6.3).
//! - [`framing`] — how entries and snapshots are laid out.
#![deny(missing_docs)]

mod apply;
mod driver;
pub mod exactly_once;
pub mod framing;
mod state_machine;

pub use apply::{
    apply_payload, replay_log, Answer, Applier, ApplierStart, ApplyItem, ApplyOutput, Callers,
    CommittedEntry, EntryPayload, GroupEvent, PendingRead, SnapshotPolicy, TakenSnapshot,
};
pub use driver::{
    AdminOp, DriverBug, DriverConfig, DriverOutput, DriverStats, DurableWrite, GroupDriver,
};
pub use exactly_once::{Admission, ClientTable, ClientTableLimits, Refusal};
pub use framing::{Addresses, GroupSpec, Payload, SnapshotHeader};
pub use state_machine::{
    ApplyContext, DecodeError, ExactlyOnce, LeaderNotice, LogEntry, StateMachine,
    StateMachineError, StateMachineFactory, TypeTag, Typed, TypedStateMachine,
};
