//! A group's apply task: runs the group's [`Applier`] (concord-group) on the node's
//! tokio runtime, apart from the raft loop, so a slow state machine delays only its
//! own group's answers and reads, never replication.
//!
//! The task takes what the raft loop hands out, in order, and does the applier's IO:
//! answers callers, publishes events to the group's local subscribers, passes
//! commands the state machine asks for and snapshots it takes back to the loop, and
//! records a failure that stops the group where status and metrics see it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use concord_group::{Answer, Applier, ApplyItem, ApplyOutput, Callers, GroupEvent};
use concord_raft::{ConfState, Index};
use concord_types::sync::lock;
use concord_types::{ApiError, GroupHealth, ProposeResponse, ReadResponse};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::{GroupMetrics, NodeMetrics};
use crate::GroupId;

/// How the runtime names the callers waiting on a group.
pub(crate) struct NodeCallers;

impl Callers for NodeCallers {
    type Proposal = ProposeReply;
    type Read = ReadReply;
    type Admin = AdminReply;
}

/// A proposer waiting for its outcome, and when the raft loop took its proposal
/// (set by the loop, from the turn's clock).
pub(crate) struct ProposeReply {
    pub reply: oneshot::Sender<Result<ProposeResponse, ApiError>>,
    pub proposed_at: Option<Instant>,
}

impl ProposeReply {
    pub(crate) fn new(reply: oneshot::Sender<Result<ProposeResponse, ApiError>>) -> Self {
        ProposeReply {
            reply,
            proposed_at: None,
        }
    }
}

/// Where a read's answer goes.
pub(crate) type ReadReply = oneshot::Sender<Result<ReadResponse, ApiError>>;
/// Where a membership change's outcome goes.
pub(crate) type AdminReply = oneshot::Sender<Result<(), ApiError>>;

/// Answers `answer`'s caller.
pub(crate) fn deliver(answer: Answer<NodeCallers>) {
    match answer {
        Answer::Proposal(proposer, result) => {
            let _ = proposer.reply.send(result);
        }
        Answer::Read(reply, result) => {
            let _ = reply.send(result);
        }
        Answer::Admin(reply, result) => {
            let _ = reply.send(result);
        }
    }
}

/// Work for an apply task, in log order.
pub(crate) enum ApplyWork {
    /// What the driver handed out.
    Item(ApplyItem<NodeCallers>),
    /// Write a snapshot now and hand it back (force_new_cluster).
    TakeSnapshot(oneshot::Sender<Result<TakenSnapshot, ApiError>>),
}

/// A snapshot of the state machine with where it stands.
pub(crate) struct TakenSnapshot {
    pub index: Index,
    pub conf_state: ConfState,
    /// Framed: header, then the state machine's bytes.
    pub data: Bytes,
}

/// What the apply task tells the raft loop.
pub(crate) enum ApplyEvent {
    /// A snapshot of `group` at `index` to store, and how far the state machine's
    /// own state is durable (compaction never passes it).
    SnapshotTaken {
        group: GroupId,
        snapshot: TakenSnapshot,
        durable_index: Option<Index>,
    },
    /// Commands the state machine asked to propose.
    Propose {
        group: GroupId,
        commands: Vec<Bytes>,
    },
    /// The group stopped on this node.
    Stopped { group: GroupId, reason: String },
}

/// Whether a group works, shared by its apply task (which stops it) and status.
pub(crate) type SharedHealth = Arc<Mutex<GroupHealth>>;

/// What a group's apply task starts from.
pub(crate) struct ApplyStart {
    pub group: GroupId,
    pub node_id: u64,
    pub applier: Applier<NodeCallers>,
    pub group_metrics: Arc<GroupMetrics>,
    pub node_metrics: Arc<NodeMetrics>,
    pub events: mpsc::UnboundedSender<ApplyEvent>,
    pub subscribers: broadcast::Sender<GroupEvent>,
    pub health: SharedHealth,
}

/// Runs until the raft loop drops the sending side of `work`.
pub(crate) async fn run(start: ApplyStart, mut work: mpsc::UnboundedReceiver<ApplyWork>) {
    let ApplyStart {
        group,
        node_id,
        mut applier,
        group_metrics,
        node_metrics,
        events,
        subscribers,
        health,
    } = start;
    group_metrics
        .applied
        .store(applier.applied(), Ordering::Relaxed);
    while let Some(item) = work.recv().await {
        let started = Instant::now();
        let mut out = ApplyOutput::default();
        match item {
            ApplyWork::Item(item) => applier.handle(item, &mut out),
            ApplyWork::TakeSnapshot(reply) => {
                let _ = reply.send(take_snapshot(&mut applier, &mut out));
            }
        }
        let now = Instant::now();
        node_metrics.apply_latency.observe(now - started);
        for answer in out.answers {
            if let Answer::Proposal(proposer, Ok(_)) = &answer {
                if let Some(proposed_at) = proposer.proposed_at {
                    node_metrics
                        .commit_latency
                        .observe(now.saturating_duration_since(proposed_at));
                }
            }
            deliver(answer);
        }
        for event in out.events {
            // No subscriber is not an error: events are delivery only.
            let _ = subscribers.send(event);
        }
        if !out.proposals.is_empty() {
            let _ = events.send(ApplyEvent::Propose {
                group,
                commands: out.proposals,
            });
        }
        group_metrics
            .applied
            .store(applier.applied(), Ordering::Relaxed);
        if applier.stopped().is_none() && applier.snapshot_due() {
            let mut out = ApplyOutput::default();
            let taken = take_snapshot(&mut applier, &mut out);
            out.answers.into_iter().for_each(deliver);
            match taken {
                Ok(snapshot) => {
                    tracing::info!(
                        node = node_id,
                        group,
                        term = group_metrics.term.load(Ordering::Relaxed),
                        index = snapshot.index,
                        bytes = snapshot.data.len(),
                        "snapshot taken"
                    );
                    group_metrics
                        .snapshots_taken
                        .fetch_add(1, Ordering::Relaxed);
                    let durable_index = applier.state_machine().durable_index();
                    let _ = events.send(ApplyEvent::SnapshotTaken {
                        group,
                        snapshot,
                        durable_index,
                    });
                }
                // A failed snapshot stopped the group: reported just below.
                Err(error) => {
                    tracing::error!(node = node_id, group, %error, "snapshot failed");
                }
            }
        }
        if let Some(reason) = applier.stopped() {
            let mut health = lock(&health);
            if *health == GroupHealth::Running {
                tracing::error!(node = node_id, group, %reason, "the group's state machine failed; the group stops on this node");
                *health = GroupHealth::Stopped {
                    reason: reason.to_string(),
                };
                group_metrics.stopped.store(1, Ordering::Relaxed);
                let _ = events.send(ApplyEvent::Stopped {
                    group,
                    reason: reason.to_string(),
                });
            }
        }
    }
}

/// Writes the applier's snapshot into memory: the state machine streams into one
/// buffer that becomes the snapshot's data without another copy.
fn take_snapshot(
    applier: &mut Applier<NodeCallers>,
    out: &mut ApplyOutput<NodeCallers>,
) -> Result<TakenSnapshot, ApiError> {
    let mut data = Vec::new();
    let taken = applier
        .write_snapshot(&mut data, out)
        .map_err(|error| ApiError::Internal(format!("taking a snapshot: {error}")))?;
    Ok(TakenSnapshot {
        index: taken.index,
        conf_state: taken.conf_state,
        data: Bytes::from(data),
    })
}
