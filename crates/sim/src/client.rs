//! The client oracle: simulated clients of one group's key-value store, each with one
//! operation in flight, whose every invocation and response goes into a [`History`]
//! for the linearizability checker.
//!
//! They behave as concord's client does, through the same server-side code: a client
//! registers with the group's exactly-once table (through the log) before its first
//! write, and sends every write with a `RequestId` — its client id, a request number,
//! and the lowest number it has not seen answered. A write whose outcome is in doubt
//! (no answer in `client_attempt_timeout_ticks`, the node crashed, an
//! `OutcomeUnknown`, `Timeout` or `Unavailable` answer) is sent again, to another node
//! if need be, with the same number: the group applies it at most once and answers a
//! repeat from its table. A refusal (`NotLeader`) sends the client to the named leader.
//! An answer to any attempt of the current request completes it. After
//! `client_timeout_ticks` the client gives up: the operation's outcome is unknown (it
//! may still take effect, at most once), and the client goes on with the next number,
//! telling the group it will never ask again. A group that forgot the client (its
//! table entry evicted) refuses the request without applying it: with nothing in doubt
//! the client registers again and retries; otherwise the outcome is unknown.
//!
//! A read asks a node for a linearizable read (the believed leader, or a random node
//! for follower reads) and completes with the value the node's state machine answered.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_raft::NodeId;
use concord_storage::GroupId;
use concord_types::{ApiError, RequestId};

use crate::cluster::{Answer, Cluster, ClusterEvent};
use crate::history::{ClientId, History, Op, OpId, Response};
use crate::kv::{decode_response, encode_op, get_query};
use crate::network::{Time, TICK_INSTANTS};
use crate::params::Params;
use crate::rng::Rng;
use crate::trace::{Trace, TraceLevel};

/// Two keys written only together, by [`Op::AppendBoth`]: on every node they hold the
/// same value, or a transaction applied in part.
pub const PAIR_KEYS: [&[u8]; 2] = [b"pair0", b"pair1"];

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
    /// Share of operations, in ppm, on the pair of keys [`PAIR_KEYS`]: appends to
    /// both in one transaction, and reads of either. 0 (the key-value machine's
    /// runs): none, and no randomness drawn for them.
    pub pair_ppm: u32,
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
            pair_ppm: params.pair_ppm,
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
    /// Attempts sent (registrations, proposals and reads).
    pub attempts: u64,
    /// Attempts refused or failed.
    pub refused: u64,
    /// Registrations with the exactly-once table.
    pub registrations: u64,
    /// Writes answered from the exactly-once table or applied once after being sent
    /// more than once.
    pub retried_writes: u64,
}

/// What a client is waiting for.
#[derive(Clone, Copy, Debug)]
enum Attempt {
    /// Nothing in flight; send the next attempt at `retry_at`.
    Idle { retry_at: Time },
    /// An attempt (registration, write or read) is in flight on `node` under `tag`;
    /// retry at `until`.
    Sent {
        node: NodeId,
        tag: u64,
        until: Time,
        registering: bool,
    },
}

#[derive(Clone, Debug)]
struct Current {
    op_id: OpId,
    op: Op,
    /// The request number of a write, once it has one.
    sequence: Option<u64>,
    deadline: Time,
    attempt: Attempt,
    /// Tags of every write attempt of this request: an answer to any completes it.
    write_tags: Vec<u64>,
    /// Some attempt's outcome is unknown: the write may have applied.
    in_doubt: bool,
    /// Times the write was sent.
    sends: u32,
}

#[derive(Clone, Debug)]
struct Client {
    id: ClientId,
    /// The group's id for this client, once registered.
    registered: Option<u64>,
    next_sequence: u64,
    /// The node believed to lead (0: none known).
    target: NodeId,
    idle_until: Time,
    current: Option<Current>,
    /// The last value this client saw for each key, for compare-and-swap guesses.
    last_seen: BTreeMap<Bytes, Option<Bytes>>,
}

/// The clients of one group and their history.
#[derive(Debug)]
pub struct ClientOracle {
    group: GroupId,
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
    /// Clients of `group` behaving as `settings` says, drawing from `rng`.
    pub fn new(group: GroupId, settings: ClientSettings, rng: Rng) -> ClientOracle {
        let clients = (1..=settings.clients as ClientId)
            .map(|id| Client {
                id,
                registered: None,
                next_sequence: 1,
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
            group,
            settings,
            clients,
            keys,
            history: History::new(),
            rng,
            // Tags are unique across every group's oracle: the group is in the top bits.
            next_tag: group << 40,
            accepting_new: true,
            stats: ClientStats::default(),
        }
    }

    /// The group the clients use.
    pub fn group(&self) -> GroupId {
        self.group
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

    /// Hands the oracle one cluster event (answers for other groups are ignored).
    pub fn on_event(&mut self, trace: &mut Trace, event: &ClusterEvent) {
        match event {
            ClusterEvent::Answered {
                group,
                node,
                time,
                tag,
                answer,
                ..
            } if *group == self.group => self.on_answer(trace, *node, *time, *tag, answer),
            ClusterEvent::Answered { .. } => {}
            ClusterEvent::Crashed { node, time } => self.on_crashed(*node, *time),
        }
    }

    fn on_answer(
        &mut self,
        trace: &mut Trace,
        node: NodeId,
        time: Time,
        tag: u64,
        answer: &Answer,
    ) {
        let Some(index) = self.clients.iter().position(|client| {
            client.current.as_ref().is_some_and(|current| {
                current.write_tags.contains(&tag)
                    || matches!(current.attempt, Attempt::Sent { tag: sent, .. } if sent == tag)
            })
        }) else {
            // An answer to an attempt the client gave up on.
            return;
        };
        let think = self.rng.between(0, self.settings.think_ticks_max) * TICK_INSTANTS;
        let client = &mut self.clients[index];
        let current = client.current.as_mut().expect("matched");
        let latest = matches!(current.attempt, Attempt::Sent { tag: sent, .. } if sent == tag);
        let registering = matches!(
            current.attempt,
            Attempt::Sent {
                registering: true,
                ..
            }
        );
        let retry_now = Attempt::Idle { retry_at: time };
        let backoff = Attempt::Idle {
            retry_at: time + TICK_INSTANTS,
        };
        match answer {
            Answer::Proposal(Ok(applied)) if registering && latest => {
                let Ok(id) = <[u8; 8]>::try_from(&applied.response[..]) else {
                    panic!(
                        "client {}: a registration answered {:?}",
                        client.id, applied.response
                    );
                };
                client.registered = Some(u64::from_be_bytes(id));
                client.target = node;
                current.attempt = retry_now;
                self.stats.registrations += 1;
            }
            Answer::Proposal(Err(error)) if registering && latest => {
                self.stats.refused += 1;
                client.target = redirect(error, node);
                current.attempt = if client.target != 0 {
                    retry_now
                } else {
                    backoff
                };
            }
            Answer::Proposal(Ok(applied)) => {
                let response = decode_response(&applied.response).unwrap_or_else(|| {
                    panic!(
                        "client {}: a write answered {:?}, not a response",
                        client.id, applied.response
                    )
                });
                if current.sends > 1 {
                    self.stats.retried_writes += 1;
                }
                let op_id = current.op_id;
                if let (Op::Cas { key, new, .. }, Response::Cas(true)) = (&current.op, &response) {
                    client.last_seen.insert(key.clone(), Some(new.clone()));
                }
                client.target = node;
                client.current = None;
                client.idle_until = time + think;
                self.history.complete(op_id, response, time);
                self.stats.completed += 1;
                self.trace_completion(trace, op_id, time);
            }
            Answer::Proposal(Err(ApiError::ClientUnknown { .. })) => {
                // The group forgot this client: nothing of this attempt applied.
                self.stats.refused += 1;
                client.registered = None;
                if current.in_doubt {
                    let op_id = current.op_id;
                    client.current = None;
                    client.idle_until = time + think;
                    self.history.unknown(op_id);
                    self.stats.unknown += 1;
                    self.trace_completion(trace, op_id, time);
                } else {
                    // Start over: a new session, a new number.
                    current.sequence = None;
                    current.write_tags.clear();
                    current.attempt = retry_now;
                }
            }
            Answer::Proposal(Err(error)) if latest => {
                self.stats.refused += 1;
                match error {
                    ApiError::InvalidRequest(reason) => panic!(
                        "client {}: the group refused request {:?} as invalid: {reason}",
                        client.id, current.sequence
                    ),
                    error if error.outcome_unknown() => current.in_doubt = true,
                    _ => {}
                }
                client.target = redirect(error, node);
                current.attempt = if client.target != 0 {
                    retry_now
                } else {
                    backoff
                };
            }
            Answer::Proposal(Err(error)) => {
                // A late answer to an earlier attempt of this request.
                if error.outcome_unknown() {
                    current.in_doubt = true;
                }
            }
            Answer::Read(Ok(read)) if latest => {
                let Some(Response::Value(value)) = decode_response(&read.response) else {
                    panic!("client {}: a read answered {:?}", client.id, read.response);
                };
                let op_id = current.op_id;
                if let Op::Get { key } = &current.op {
                    client.last_seen.insert(key.clone(), value.clone());
                }
                client.current = None;
                client.idle_until = time + think;
                self.history.complete(op_id, Response::Value(value), time);
                self.stats.completed += 1;
                self.trace_completion(trace, op_id, time);
            }
            Answer::Read(Err(error)) if latest => {
                self.stats.refused += 1;
                client.target = redirect(error, node);
                current.attempt = if client.target != 0 {
                    retry_now
                } else {
                    backoff
                };
            }
            Answer::Read(_) | Answer::Admin(_) => {}
        }
    }

    fn trace_completion(&self, trace: &mut Trace, op_id: OpId, time: Time) {
        let operation = self.history.operation(op_id);
        let group = self.group;
        trace.record(
            time,
            TraceLevel::Events,
            &[70, group, operation.client, op_id.index() as u64],
            || format!("group {group} client {}: {operation}", operation.client),
        );
    }

    fn on_crashed(&mut self, node: NodeId, time: Time) {
        for client in &mut self.clients {
            let Some(current) = &mut client.current else {
                continue;
            };
            if let Attempt::Sent {
                node: sent_to,
                registering,
                ..
            } = current.attempt
            {
                if sent_to == node {
                    if current.sequence.is_some() && !registering {
                        current.in_doubt = true;
                    }
                    current.attempt = Attempt::Idle { retry_at: time };
                    client.target = 0;
                }
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
                Attempt::Sent { until, .. } => now >= until,
            };
            if due {
                if let Attempt::Sent { registering, .. } = current.attempt {
                    // Silent for too long: the attempt may yet apply; try another node.
                    if current.sequence.is_some() && !registering {
                        current.in_doubt = true;
                    }
                    client.target = 0;
                }
                self.send_attempt(index, cluster);
            }
        }
    }

    fn invoke(&mut self, trace: &mut Trace, index: usize, now: Time) {
        let key = self.rng.pick(&self.keys).expect("at least one key").clone();
        let pair = self.settings.pair_ppm > 0 && self.rng.chance(self.settings.pair_ppm);
        let client = &mut self.clients[index];
        let tag = format!("{}.{};", client.id, client.next_sequence);
        let op = if pair {
            let [first, second] = PAIR_KEYS.map(Bytes::from_static);
            match self.rng.below(4) {
                0 => Op::Get { key: first },
                1 => Op::Get { key: second },
                _ => Op::AppendBoth {
                    key: first,
                    other: second,
                    suffix: Bytes::from(tag),
                },
            }
        } else if self.rng.chance(self.settings.read_ppm) {
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
        let (client_id, group) = (client.id, self.group);
        trace.record(
            now,
            TraceLevel::Events,
            &[71, group, client_id, op_id.index() as u64],
            || format!("group {group} client {client_id}: invokes {op_id}: {op}"),
        );
        client.current = Some(Current {
            op_id,
            op,
            sequence: None,
            deadline: now + self.settings.timeout_ticks * TICK_INSTANTS,
            attempt: Attempt::Idle { retry_at: now },
            write_tags: Vec::new(),
            in_doubt: false,
            sends: 0,
        });
    }

    fn pick_node(&mut self, cluster: &Cluster) -> NodeId {
        let ids = cluster.node_ids();
        *self.rng.pick(&ids).expect("at least one node")
    }

    fn send_attempt(&mut self, index: usize, cluster: &mut Cluster) {
        let now = cluster.now();
        let until = now + self.settings.attempt_timeout_ticks * TICK_INSTANTS;
        let mut target = self.clients[index].target;
        if target == 0 {
            target = self.pick_node(cluster);
        }
        let is_read = self.clients[index]
            .current
            .as_ref()
            .expect("in flight")
            .op
            .is_read();
        if is_read && self.rng.chance(self.settings.follower_read_ppm) {
            target = self.pick_node(cluster);
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        self.stats.attempts += 1;
        let group = self.group;
        let client = &mut self.clients[index];
        client.target = target;
        let current = client.current.as_mut().expect("in flight");
        if is_read {
            current.attempt = Attempt::Sent {
                node: target,
                tag,
                until,
                registering: false,
            };
            let query = get_query(current.op.key());
            cluster.read(group, target, tag, query);
            return;
        }
        let Some(client_id) = client.registered else {
            current.attempt = Attempt::Sent {
                node: target,
                tag,
                until,
                registering: true,
            };
            cluster.register_client(group, target, tag);
            return;
        };
        let sequence = *current.sequence.get_or_insert_with(|| {
            let sequence = client.next_sequence;
            client.next_sequence += 1;
            sequence
        });
        // One request at a time: every earlier one is done with.
        let request = RequestId {
            client: client_id,
            sequence,
            first_unanswered: sequence,
        };
        current.attempt = Attempt::Sent {
            node: target,
            tag,
            until,
            registering: false,
        };
        current.write_tags.push(tag);
        current.sends += 1;
        let command = encode_op(&current.op);
        cluster.propose_request(group, target, tag, request, command);
    }
}

/// Where to go after `error` from `node`: the leader it names, else anywhere.
fn redirect(error: &ApiError, node: NodeId) -> NodeId {
    match error {
        ApiError::NotLeader {
            leader: Some(leader),
            ..
        } if *leader != node => *leader,
        _ => 0,
    }
}
