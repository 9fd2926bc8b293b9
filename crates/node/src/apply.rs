//! A group's apply task: owns the group's state machine, applies committed entries
//! in log order, answers proposers, serves reads once its own applied index reaches
//! their read index, and snapshots the state machine every
//! `snapshot_interval_entries`.
//!
//! It runs on the node's tokio runtime, apart from the raft loop, so a slow state
//! machine delays only its own group's responses and reads, never replication.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use concord_raft::{ConfState, Index, NodeId, Snapshot, Term};
use tokio::sync::{mpsc, oneshot};

use crate::framing::{self, Addresses};
use crate::metrics::{GroupMetrics, NodeMetrics};
use crate::service::{ApiError, ProposeResponse};
use crate::state_machine::{StateMachine, StateMachineFactory};
use crate::GroupId;

/// Where a proposal's outcome goes.
pub(crate) type ProposeReply = oneshot::Sender<Result<ProposeResponse, ApiError>>;
/// Where a read's answer goes.
pub(crate) type ReadReply = oneshot::Sender<Result<Bytes, ApiError>>;

/// One read waiting to be served.
pub(crate) struct ReadRequest {
    pub query: Bytes,
    pub reply: ReadReply,
}

/// One committed entry, as the apply task sees it.
pub(crate) enum ApplyOp {
    /// A user command, and its proposer when this node proposed it in that term.
    Command {
        index: Index,
        term: Term,
        data: Bytes,
        reply: Option<ProposeReply>,
    },
    /// A member's address (already recorded by the raft loop).
    Address { node: NodeId, address: String },
    /// A membership change applied by the raft loop: the membership after it.
    Membership { conf_state: ConfState },
}

/// Work for an apply task, in log order.
pub(crate) enum ApplyItem {
    /// Committed entries up to `last_index` (no-ops are not listed).
    Entries {
        ops: Vec<ApplyOp>,
        last_index: Index,
    },
    /// A snapshot received from the leader and made durable: replace the state.
    Restore(Snapshot),
    /// Reads confirmed at `index`: serve once applied reaches it (`index` 0: at once).
    Read {
        index: Index,
        requests: Vec<ReadRequest>,
    },
    /// Take a snapshot now and hand it back (force_new_cluster).
    TakeSnapshot(oneshot::Sender<TakenSnapshot>),
}

/// A snapshot of the state machine with where it stands.
pub(crate) struct TakenSnapshot {
    pub index: Index,
    pub addresses: Addresses,
    pub state: Bytes,
}

/// What the apply task tells the raft loop.
pub(crate) enum ApplyEvent {
    /// A snapshot of `group` at `index` to store; `data` is framed (addresses + state).
    SnapshotTaken {
        group: GroupId,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    },
}

/// What a group's apply task starts from (its state machine restored to `applied`).
pub(crate) struct ApplyStart {
    pub group: GroupId,
    pub node_id: NodeId,
    pub state_machine: Box<dyn StateMachine>,
    pub applied: Index,
    pub conf_state: ConfState,
    pub addresses: Addresses,
    pub snapshot_interval_entries: u64,
    pub factory: Arc<dyn StateMachineFactory>,
    pub group_metrics: Arc<GroupMetrics>,
    pub node_metrics: Arc<NodeMetrics>,
    pub events: mpsc::UnboundedSender<ApplyEvent>,
}

/// Runs until the raft loop drops the sending side of `items`.
pub(crate) async fn run(start: ApplyStart, mut items: mpsc::UnboundedReceiver<ApplyItem>) {
    let ApplyStart {
        group,
        node_id,
        mut state_machine,
        mut applied,
        mut conf_state,
        mut addresses,
        snapshot_interval_entries,
        factory,
        group_metrics,
        node_metrics,
        events,
    } = start;
    let mut last_snapshot_index = applied;
    // Reads waiting for the state machine to reach their index.
    let mut waiting_reads: BTreeMap<Index, Vec<ReadRequest>> = BTreeMap::new();
    group_metrics.applied.store(applied, Ordering::Relaxed);
    while let Some(item) = items.recv().await {
        match item {
            ApplyItem::Entries { ops, last_index } => {
                let started = Instant::now();
                for op in ops {
                    match op {
                        ApplyOp::Command {
                            index,
                            term,
                            data,
                            reply,
                        } => {
                            let response = state_machine.apply(index, data);
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(ProposeResponse {
                                    response,
                                    index,
                                    term,
                                }));
                            }
                        }
                        ApplyOp::Address { node, address } => {
                            addresses.insert(node, address);
                        }
                        ApplyOp::Membership { conf_state: next } => conf_state = next,
                    }
                }
                applied = applied.max(last_index);
                node_metrics.apply_latency.observe(started.elapsed());
            }
            ApplyItem::Restore(snapshot) => {
                let (snapshot_addresses, state) = match framing::decode_snapshot(&snapshot.data) {
                    Ok(decoded) => decoded,
                    Err(reason) => {
                        tracing::error!(node = node_id, group, index = snapshot.metadata.index, %reason, "cannot read installed snapshot; group stops applying");
                        return;
                    }
                };
                state_machine = factory.create(group);
                if let Some(state) = state {
                    if let Err(error) = state_machine.restore(state) {
                        tracing::error!(node = node_id, group, index = snapshot.metadata.index, %error, "state machine refused the installed snapshot; group stops applying");
                        return;
                    }
                }
                addresses = snapshot_addresses;
                conf_state = snapshot.metadata.conf_state.clone();
                applied = snapshot.metadata.index;
                last_snapshot_index = applied;
            }
            ApplyItem::Read { index, requests } => {
                if index <= applied {
                    serve_reads(&*state_machine, requests);
                } else {
                    waiting_reads.entry(index).or_default().extend(requests);
                }
            }
            ApplyItem::TakeSnapshot(reply) => {
                let _ = reply.send(TakenSnapshot {
                    index: applied,
                    addresses: addresses.clone(),
                    state: state_machine.snapshot(),
                });
            }
        }
        group_metrics.applied.store(applied, Ordering::Relaxed);
        while let Some(entry) = waiting_reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            serve_reads(&*state_machine, entry.remove());
        }
        if applied >= last_snapshot_index + snapshot_interval_entries {
            let state = state_machine.snapshot();
            let data = framing::encode_snapshot(&addresses, Some(&state));
            tracing::info!(
                node = node_id,
                group,
                term = group_metrics.term.load(Ordering::Relaxed),
                index = applied,
                bytes = data.len(),
                "snapshot taken"
            );
            group_metrics
                .snapshots_taken
                .fetch_add(1, Ordering::Relaxed);
            last_snapshot_index = applied;
            let _ = events.send(ApplyEvent::SnapshotTaken {
                group,
                index: applied,
                conf_state: conf_state.clone(),
                data,
            });
        }
    }
}

fn serve_reads(state_machine: &dyn StateMachine, requests: Vec<ReadRequest>) {
    for request in requests {
        let answer = state_machine
            .query(request.query)
            .map_err(|error| ApiError::InvalidRequest(error.to_string()));
        let _ = request.reply.send(answer);
    }
}
