//! Preparing a group before the raft loop takes it: writing it if it is new
//! (bootstrapped by its founders, or empty for a node admitted to it), then building
//! its state machine from its latest snapshot. Blocking (the durable log reads and
//! writes files); the handle runs it on a blocking task.

use concord_group::{Addresses, GroupSpec, SnapshotHeader, StateMachineFactory};
use concord_raft::{ConfState, LogStore, MemStorage, Snapshot, Storage as _};
use concord_storage::{Log, WriteBatch};
use concord_types::ApiError;

use crate::raft_loop::LoadedGroup;
use crate::storage::{bootstrap_hard_state, bootstrap_snapshot, GroupStore};
use crate::GroupId;

/// Where a group being loaded comes from.
pub(super) enum Origin {
    /// Already in the log (restart).
    Existing,
    /// A new group of `spec`, founded by `conf_state`'s voters.
    Bootstrap(ConfState, Addresses, GroupSpec),
    /// A new, empty group this node was admitted to; its leader sends the rest.
    Empty(Addresses),
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{context}: {error}"))
}

/// The bootstrap snapshot's data: what the group is and where its founders listen.
fn bootstrap_data(addresses: Addresses, spec: GroupSpec) -> bytes::Bytes {
    SnapshotHeader {
        spec,
        addresses,
        has_state: false,
    }
    .encode()
}

/// Prepares a group in the durable log: writes it if new, then restores its state
/// machine from its latest snapshot.
pub(super) fn prepare_durable(
    log: &Log,
    factory: &dyn StateMachineFactory,
    group: GroupId,
    origin: Origin,
) -> Result<LoadedGroup, ApiError> {
    let exists = log.groups().contains(&group);
    let mut extra_addresses = Addresses::new();
    match origin {
        Origin::Existing => {}
        Origin::Bootstrap(conf_state, addresses, spec) => {
            if exists {
                return Err(ApiError::InvalidRequest(format!(
                    "group {group} already exists on this node"
                )));
            }
            let mut batch = WriteBatch::new();
            let write = batch.group(group);
            write.snapshot = Some(bootstrap_snapshot(
                conf_state,
                bootstrap_data(addresses, spec),
            ));
            write.hard_state = Some(bootstrap_hard_state());
            log.write(batch)
                .map_err(|error| internal("bootstrapping the group", error))?;
        }
        Origin::Empty(addresses) => {
            if exists {
                return Err(ApiError::InvalidRequest(format!(
                    "group {group} already exists on this node"
                )));
            }
            extra_addresses = addresses;
        }
    }
    let storage = log.group(group);
    let snapshot = storage
        .snapshot(0)
        .map_err(|error| internal("reading the snapshot", error))?;
    let restart_conf_state =
        (snapshot.metadata.index > 0).then(|| snapshot.metadata.conf_state.clone());
    restore(
        factory,
        group,
        GroupStore::durable(storage, restart_conf_state),
        snapshot,
        extra_addresses,
    )
}

/// Prepares a group in memory (in `existing` when the group is being reloaded).
pub(super) fn prepare_memory(
    factory: &dyn StateMachineFactory,
    group: GroupId,
    origin: Origin,
    existing: Option<MemStorage>,
) -> Result<LoadedGroup, ApiError> {
    let mut storage = existing.unwrap_or_default();
    let mut extra_addresses = Addresses::new();
    match origin {
        Origin::Existing => {}
        Origin::Bootstrap(conf_state, addresses, spec) => {
            storage
                .apply_snapshot(bootstrap_snapshot(
                    conf_state,
                    bootstrap_data(addresses, spec),
                ))
                .map_err(|error| internal("bootstrapping the group", error))?;
            storage
                .set_hard_state(bootstrap_hard_state())
                .map_err(|error| internal("bootstrapping the group", error))?;
        }
        Origin::Empty(addresses) => extra_addresses = addresses,
    }
    let snapshot = storage
        .snapshot(0)
        .map_err(|error| internal("reading the snapshot", error))?;
    restore(
        factory,
        group,
        GroupStore::memory(storage, None),
        snapshot,
        extra_addresses,
    )
}

/// Builds the group's state machine of the snapshot's kind and restores it from the
/// snapshot (a joining node has none yet: its state machine starts empty, of no
/// kind, and the leader's snapshot replaces it).
fn restore(
    factory: &dyn StateMachineFactory,
    group: GroupId,
    store: GroupStore,
    snapshot: Snapshot,
    extra_addresses: Addresses,
) -> Result<LoadedGroup, ApiError> {
    let (header, state) = SnapshotHeader::decode(&snapshot.data)
        .map_err(|reason| internal("reading the snapshot", reason))?;
    let mut addresses = header.addresses;
    for (node, address) in extra_addresses {
        addresses.entry(node).or_insert(address);
    }
    let mut state_machine = factory
        .create(group, &header.spec)
        .map_err(|error| internal("creating the state machine", error))?;
    if let Some(state) = state {
        state_machine
            .restore(&mut &state[..])
            .map_err(|error| internal("restoring the state machine", error))?;
    }
    Ok(LoadedGroup {
        group,
        spec: header.spec,
        store,
        state_machine,
        applied: snapshot.metadata.index,
        applied_term: snapshot.metadata.term,
        conf_state: snapshot.metadata.conf_state,
        addresses,
    })
}
