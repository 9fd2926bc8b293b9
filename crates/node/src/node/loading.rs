//! Preparing a group before the raft loop takes it: writing it if it is new
//! (bootstrapped by its founders, or empty for a node admitted to it), then building
//! its state machine from its latest snapshot. Blocking (the durable log reads and
//! writes files); the handle runs it on a blocking task.

use concord_group::{replay_log, Addresses, GroupSpec, SnapshotHeader, StateMachineFactory};
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

/// Builds the group's state machine of the snapshot's kind and brings it to the
/// snapshot's index (a joining node has none yet: its state machine starts empty, of
/// no kind, and the leader's snapshot replaces it).
///
/// A state machine in memory is restored from the snapshot. A durable one holds its
/// state up to its own durable index `d` already: at or past the snapshot it is left
/// as it is (the applier skips what it holds); behind it, the log's entries from `d`
/// are replayed into it (compaction never passes `d`), or, if the log no longer has
/// them (the state machine lost its data, say), it is restored from the snapshot.
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
    let index = snapshot.metadata.index;
    let restore_from_snapshot = match state_machine.durable_index() {
        None => true,
        Some(durable) => {
            let first = store
                .first_index()
                .map_err(|error| internal("reading the log", error))?;
            // Ahead of this node's log is possible (a torn crash lost a tail it had
            // applied): the leader sends those entries again and the applier skips
            // them.
            // Index 1 is the bootstrap snapshot, which holds no command.
            let replay_from = durable.max(1) + 1;
            if durable >= index {
                false
            } else if replay_from >= first {
                let entries = store
                    .entries(replay_from, index + 1, u64::MAX)
                    .map_err(|error| internal("reading the log to replay", error))?;
                replay_log(state_machine.as_mut(), group, &entries)
                    .map_err(|reason| internal("replaying the log", reason))?;
                false
            } else {
                tracing::warn!(
                    group,
                    durable,
                    first,
                    "the state machine is behind the log's first entry; restoring it \
                     from the snapshot"
                );
                true
            }
        }
    };
    if let (true, Some(state)) = (restore_from_snapshot, state) {
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
