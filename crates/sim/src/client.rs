//! The client oracle: simulated clients of the key-value store, each with one
//! operation in flight, whose every invocation and response goes into a
//! [`History`] for the linearizability checker.
//!
//! A write is a [`Command`] proposed on the node the client believes leads. It
//! completes when *that node* applies an entry at the proposal's [`LogPosition`] with
//! the same term: that entry is the proposal, and the response is what applying it
//! returned (for a retried request, the first application's response, from the
//! session table). A different term at that index means the proposal was lost, and
//! the client proposes the same request again. A refusal (`NotLeader`) sends the client
//! to the hinted leader, or to a random node. An attempt that hears nothing for
//! `client_attempt_timeout_ticks` is retried elsewhere with the same request number,
//! which the session table makes safe. After `client_timeout_ticks` the client gives
//! up: the operation's outcome is unknown (it may still take effect, at most once),
//! and the client goes on with a new request number.
//!
//! A read asks a node for a read index (the leader, or a random node for follower
//! reads) and completes when that node's state machine has applied up to it.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_raft::{LogPosition, NodeId, ProposeError};

use crate::cluster::{Cluster, ClusterEvent};
use crate::history::{ClientId, History, Op, OpId, Response};
use crate::kv::{Applied, Command};
use crate::network::{Time, TICK_INSTANTS};
use crate::params::Params;
use crate::rng::Rng;
use crate::trace::{Trace, TraceLevel};

/// How the clients behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// Number of clients.
    pub clients: usize,
    /// Number of keys.
    pub keys: usize,
    /// Share of reads, in ppm.
    pub read_ppm: u32,
    /// Share of reads sent to a random node, in ppm.
    pub follower_read_ppm: u32,
    /// Most ticks between operations.
    pub think_ticks_max: u64,
    /// Ticks before retrying a silent attempt.
    pub attempt_timeout_ticks: u64,
    /// Ticks before giving up on an operation.
    pub timeout_ticks: u64,
}

impl ClientSettings {
    /// The settings `params` describe.
    pub fn from_params(params: &Params) -> ClientSettings {
        ClientSettings {
            clients: params.clients,
            keys: params.keys,
            read_ppm: params.read_ppm,
            follower_read_ppm: params.follower_read_ppm,
            think_ticks_max: params.client_think_ticks_max,
            attempt_timeout_ticks: params.client_attempt_timeout_ticks,
            timeout_ticks: params.client_timeout_ticks,
        }
    }
}

/// Counts of what the clients did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Operations invoked.
    pub invoked: u64,
    /// Operations completed with a response.
    pub completed: u64,
    /// Operations given up on (outcome unknown).
    pub unknown: u64,
    /// Attempts sent (proposals and read-index requests).
    pub attempts: u64,
    /// Attempts refused at once.
    pub refused: u64,
}

/// A proposal accepted by a node, which may yet be applied.
#[derive(Clone, Copy, Debug)]
struct WriteAttempt {
    node: NodeId,
    incarnation: u64,
    position: LogPosition,
}

#[derive(Clone, Debug)]
enum Attempt {
    /// Nothing in flight; send the next attempt at `retry_at`.
    Idle { retry_at: Time },
    /// A proposal is in flight (see `Current::writes`); retry at `until`.
    Write { until: Time },
    /// A read is in flight on `node` under `tag`; retry at `until`.
    Read {
        node: NodeId,
        incarnation: u64,
        tag: u64,
        until: Time,
    },
}

#[derive(Clone, Debug)]
struct Current {
    op_id: OpId,
    op: Op,
    request: u64,
    deadline: Time,
    attempt: Attempt,
    /// Every accepted proposal of this request, any of which may complete it.
    writes: Vec<WriteAttempt>,
}

#[derive(Clone, Debug)]
struct Client {
    id: ClientId,
    next_request: u64,
    /// The node believed to lead (0: none known).
    target: NodeId,
    idle_until: Time,
    current: Option<Current>,
    /// The last value this client saw for each key, for compare-and-swap guesses.
    last_seen: BTreeMap<Bytes, Option<Bytes>>,
}

/// The clients and their history.
#[derive(Debug)]
pub struct ClientOracle {
    settings: ClientSettings,
    clients: Vec<Client>,
    keys: Vec<Bytes>,
    history: History,
    rng: Rng,
    next_tag: u64,
    accepting_new: bool,
    stats: ClientStats,
}

impl ClientOracle {
    /// Clients behaving as `settings` says, drawing from `rng`.
    pub fn new(settings: ClientSettings, rng: Rng) -> ClientOracle {
        let clients = (1..=settings.clients as ClientId)
            .map(|id| Client {
                id,
                next_request: 1,
                target: 0,
                idle_until: 0,
                current: None,
                last_seen: BTreeMap::new(),
            })
            .collect();
        let keys = (0..settings.keys.max(1))
            .map(|key| Bytes::from(format!("k{key}")))
            .collect();
        ClientOracle {
            settings,
            clients,
            keys,
            history: History::new(),
            rng,
            next_tag: 1,
            accepting_new: true,
            stats: ClientStats::default(),
        }
    }

    /// The history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Counts so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Stops invoking new operations; those in flight go on.
    pub fn stop_new_operations(&mut self) {
        self.accepting_new = false;
    }

    /// True while some client waits on an operation.
    pub fn has_operations_in_flight(&self) -> bool {
        self.clients.iter().any(|client| client.current.is_some())
    }

    /// Takes the cluster's events and completes what they complete.
    pub fn on_events(&mut self, cluster: &mut Cluster) {
        for event in cluster.take_events() {
            let trace = cluster.trace_mut();
            match event {
                ClusterEvent::Applied {
                    node,
                    incarnation,
                    time,
                    index,
                    term,
                    applied,
                } => self.on_applied(trace, node, incarnation, time, index, term, applied),
                ClusterEvent::ReadServed {
                    node,
                    incarnation,
                    time,
                    tag,
                    value,
                    ..
                } => self.on_read_served(trace, node, incarnation, time, tag, value),
                ClusterEvent::Crashed { node, time } => self.on_crashed(node, time),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_applied(
        &mut self,
        trace: &mut Trace,
        node: NodeId,
        incarnation: u64,
        time: Time,
        index: u64,
        term: u64,
        applied: Applied,
    ) {
        let mut completed = Vec::new();
        for client in &mut self.clients {
            let Some(current) = &mut client.current else {
                continue;
            };
            let Some(position) = current.writes.iter().position(|write| {
                write.node == node
                    && write.incarnation == incarnation
                    && write.position.index == index
            }) else {
                continue;
            };
            let write = current.writes[position];
            let ours = write.position.term == term
                && matches!(&applied, Applied::Command { client: id, request, .. }
                    if *id == client.id && *request == current.request);
            if !ours {
                // Another entry took that index: this proposal is lost for good.
                current.writes.swap_remove(position);
                if current.writes.is_empty() && matches!(current.attempt, Attempt::Write { .. }) {
                    current.attempt = Attempt::Idle { retry_at: time };
                }
                continue;
            }
            let Applied::Command {
                response: Some(response),
                ..
            } = applied.clone()
            else {
                panic!(
                    "client {}: own entry at {index} applied without a response: {applied:?}",
                    client.id
                );
            };
            let op_id = current.op_id;
            if let (Op::Cas { key, new, .. }, Response::Cas(true)) = (&current.op, &response) {
                client.last_seen.insert(key.clone(), Some(new.clone()));
            }
            self.history.complete(op_id, response, time);
            self.stats.completed += 1;
            completed.push((op_id, time));
            client.current = None;
            client.target = node;
            client.idle_until =
                time + self.rng.between(0, self.settings.think_ticks_max) * TICK_INSTANTS;
        }
        for (op_id, time) in completed {
            self.trace_completion(trace, op_id, time);
        }
    }

    fn trace_completion(&self, trace: &mut Trace, op_id: OpId, time: Time) {
        let operation = self.history.operation(op_id);
        trace.record(
            time,
            TraceLevel::Events,
            &[70, operation.client, op_id.index() as u64],
            || format!("client {}: {operation}", operation.client),
        );
    }

    fn on_read_served(
        &mut self,
        trace: &mut Trace,
        node: NodeId,
        incarnation: u64,
        time: Time,
        tag: u64,
        value: Option<Bytes>,
    ) {
        for client in &mut self.clients {
            let Some(current) = &client.current else {
                continue;
            };
            let Attempt::Read {
                node: read_node,
                incarnation: read_incarnation,
                tag: read_tag,
                ..
            } = current.attempt
            else {
                continue;
            };
            if read_tag != tag || read_node != node || read_incarnation != incarnation {
                continue;
            }
            if let Op::Get { key } = &current.op {
                client.last_seen.insert(key.clone(), value.clone());
            }
            let op_id = current.op_id;
            self.history.complete(op_id, Response::Value(value), time);
            self.stats.completed += 1;
            client.current = None;
            client.idle_until =
                time + self.rng.between(0, self.settings.think_ticks_max) * TICK_INSTANTS;
            self.trace_completion(trace, op_id, time);
            return;
        }
    }

    fn on_crashed(&mut self, node: NodeId, time: Time) {
        for client in &mut self.clients {
            let Some(current) = &mut client.current else {
                continue;
            };
            current.writes.retain(|write| write.node != node);
            let stalled = match current.attempt {
                Attempt::Read {
                    node: read_node, ..
                } => read_node == node,
                Attempt::Write { .. } => current.writes.is_empty(),
                Attempt::Idle { .. } => false,
            };
            if stalled {
                current.attempt = Attempt::Idle { retry_at: time };
                client.target = 0;
            }
        }
    }

    /// One tick of client work: give up on late operations, retry stalled ones, invoke
    /// new ones.
    pub fn tick(&mut self, cluster: &mut Cluster) {
        let now = cluster.now();
        for index in 0..self.clients.len() {
            let client = &mut self.clients[index];
            if let Some(current) = &client.current {
                if now >= current.deadline {
                    let op_id = current.op_id;
                    self.history.unknown(op_id);
                    self.stats.unknown += 1;
                    client.current = None;
                    client.target = 0;
                    client.idle_until = now;
                    self.trace_completion(cluster.trace_mut(), op_id, now);
                }
            }
            let client = &mut self.clients[index];
            if client.current.is_none() {
                if !self.accepting_new || now < client.idle_until {
                    continue;
                }
                self.invoke(cluster.trace_mut(), index, now);
            }
            let client = &mut self.clients[index];
            let current = client.current.as_mut().expect("set above");
            let due = match current.attempt {
                Attempt::Idle { retry_at } => now >= retry_at,
                Attempt::Write { until } | Attempt::Read { until, .. } => now >= until,
            };
            if due {
                if !matches!(current.attempt, Attempt::Idle { .. }) {
                    // Silent for too long: try another node.
                    client.target = 0;
                }
                self.send_attempt(index, cluster);
            }
        }
    }

    fn invoke(&mut self, trace: &mut Trace, index: usize, now: Time) {
        let key = self.rng.pick(&self.keys).expect("at least one key").clone();
        let client = &mut self.clients[index];
        let request = client.next_request;
        client.next_request += 1;
        let tag = format!("{}.{};", client.id, request);
        let op = if self.rng.chance(self.settings.read_ppm) {
            Op::Get { key }
        } else {
            match self.rng.below(10) {
                0..=2 => Op::Put {
                    key,
                    value: Bytes::from(tag),
                },
                3..=8 => Op::Append {
                    key,
                    suffix: Bytes::from(tag),
                },
                _ => {
                    let expected = client.last_seen.get(&key).cloned().flatten();
                    Op::Cas {
                        key,
                        expected,
                        new: Bytes::from(tag),
                    }
                }
            }
        };
        let op_id = self.history.invoke(client.id, op.clone(), now);
        self.stats.invoked += 1;
        let client_id = client.id;
        trace.record(
            now,
            TraceLevel::Events,
            &[71, client_id, op_id.index() as u64],
            || format!("client {client_id}: invokes {op_id}: {op} (request {request})"),
        );
        client.current = Some(Current {
            op_id,
            op,
            request,
            deadline: now + self.settings.timeout_ticks * TICK_INSTANTS,
            attempt: Attempt::Idle { retry_at: now },
            writes: Vec::new(),
        });
    }

    fn pick_node(&mut self, cluster: &Cluster) -> NodeId {
        let ids = cluster.node_ids();
        *self.rng.pick(&ids).expect("at least one node")
    }

    fn send_attempt(&mut self, index: usize, cluster: &mut Cluster) {
        let now = cluster.now();
        let attempt_ticks = self.settings.attempt_timeout_ticks;
        let mut target = self.clients[index].target;
        if target == 0 {
            target = self.pick_node(cluster);
        }
        if self.clients[index]
            .current
            .as_ref()
            .expect("in flight")
            .op
            .is_read()
            && self.rng.chance(self.settings.follower_read_ppm)
        {
            target = self.pick_node(cluster);
        }
        let current = self.clients[index].current.as_ref().expect("in flight");
        let is_read = current.op.is_read();
        let result = if is_read {
            let tag = self.next_tag;
            self.next_tag += 1;
            cluster
                .read_index(target, tag, current.op.key())
                .map(|()| Attempt::Read {
                    node: target,
                    incarnation: cluster.incarnation(target),
                    tag,
                    until: now + attempt_ticks * TICK_INSTANTS,
                })
        } else {
            let command = Command {
                client: self.clients[index].id,
                request: current.request,
                op: current.op.clone(),
            };
            cluster
                .propose_on(target, command.encode())
                .map(|position| {
                    let write = WriteAttempt {
                        node: target,
                        incarnation: cluster.incarnation(target),
                        position,
                    };
                    self.clients[index]
                        .current
                        .as_mut()
                        .expect("in flight")
                        .writes
                        .push(write);
                    Attempt::Write {
                        until: now + attempt_ticks * TICK_INSTANTS,
                    }
                })
        };
        self.stats.attempts += 1;
        let client = &mut self.clients[index];
        let current = client.current.as_mut().expect("in flight");
        match result {
            Ok(attempt) => {
                current.attempt = attempt;
                client.target = target;
            }
            Err(error) => {
                self.stats.refused += 1;
                let (next_target, backoff_ticks) = match error {
                    ProposeError::NotLeader {
                        leader_hint: Some(leader),
                    } if leader != target => (leader, 0),
                    ProposeError::NotLeader { .. } => (0, 1),
                    _ => (target, 1 + self.rng.below(3)),
                };
                client.target = next_target;
                current.attempt = Attempt::Idle {
                    retry_at: now + backoff_ticks * TICK_INSTANTS,
                };
            }
        }
    }
}
