//! The replica run the way little_raft's own tests run theirs (`raft_stable.rs` and
//! `raft_unstable.rs` in that crate): three replicas on threads, talking through
//! channels, a heartbeat of 500 ms and election timeouts of 750–950 ms. Each
//! transition is handed to whichever replica says it leads, one second after the
//! previous step, and the test then waits two seconds. The replica promises that a
//! leader exists one second after start, and that every replica applies every
//! transition once, in the order submitted.
//!
//! One difference from little_raft is deliberate: a new leader's no-op is an empty
//! entry that the replica never hands to the state machine (see the replica's module
//! documentation), so the no-op transition's id does not appear among the applied
//! ones.
//!
//! The timings are the scenario's and are not stretched for a loaded machine: the
//! first election comes within 200 ms of start (the replica's head start), so the
//! one-second mark leaves 800 ms of slack, and a re-election after a halt needs at
//! most 950 ms plus a round trip of the two seconds allowed. What the tests add is
//! explicit checks: a leader must be found at every submission (little_raft's tests
//! would skip the submission and fail only at the end), and each replica's final
//! value is compared too.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use concord_raft::replica::{
    Cluster, DecodeError, Replica, ReplicaError, StateMachine, StateMachineTransition,
    TransitionState,
};
use concord_raft::{Message, NodeId, Snapshot, SnapshotMetadata};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);
const ELECTION_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(750), Duration::from_millis(950));
/// The wait before each submission, and the first one after start.
const BEFORE_SUBMIT: Duration = Duration::from_secs(1);
/// The wait after each submission.
const AFTER_SUBMIT: Duration = Duration::from_secs(2);
/// The time a halted replica's peers get to elect another leader.
const REELECTION: Duration = Duration::from_secs(2);
const REPLICAS: [NodeId; 3] = [1, 2, 3];

/// Adds `delta` to a number.
#[derive(Clone, Copy, Debug)]
struct Arithmetic {
    id: u64,
    delta: i32,
}

impl StateMachineTransition for Arithmetic {
    type TransitionId = u64;

    fn id(&self) -> u64 {
        self.id
    }

    fn encode(&self) -> Bytes {
        let mut bytes = self.id.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.delta.to_le_bytes());
        bytes.into()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; 12] = bytes.try_into()?;
        let (id, delta) = bytes.split_at(8);
        Ok(Arithmetic {
            id: u64::from_le_bytes(id.try_into()?),
            delta: i32::from_le_bytes(delta.try_into()?),
        })
    }
}

/// A number that transitions add to, starting from zero. Reports each applied
/// transition as (replica, transition id).
struct Calculator {
    id: NodeId,
    value: i64,
    applied: Sender<(NodeId, u64)>,
    pending: Vec<Arithmetic>,
}

impl StateMachine<Arithmetic> for Calculator {
    fn register_transition_state(&mut self, id: u64, state: TransitionState) {
        if state == TransitionState::Applied {
            self.applied
                .send((self.id, id))
                .expect("the test keeps the receiver");
        }
    }

    fn apply_transition(&mut self, transition: Arithmetic) {
        self.value += i64::from(transition.delta);
    }

    fn get_pending_transitions(&mut self) -> Vec<Arithmetic> {
        std::mem::take(&mut self.pending)
    }

    fn create_snapshot(&mut self, _metadata: &SnapshotMetadata) -> Bytes {
        Bytes::copy_from_slice(&self.value.to_le_bytes())
    }

    fn set_snapshot(&mut self, snapshot: Snapshot) {
        let bytes = snapshot.data[..].try_into().expect("an 8-byte snapshot");
        self.value = i64::from_le_bytes(bytes);
    }
}

/// One replica's view of the others: a channel to each, the messages received, and
/// whether it leads.
struct ThreadCluster {
    id: NodeId,
    is_leader: bool,
    outboxes: BTreeMap<NodeId, Sender<Message>>,
    received: Vec<Message>,
    halt: bool,
}

impl Cluster for ThreadCluster {
    fn send_message(&mut self, to: NodeId, message: Message) {
        if let Some(outbox) = self.outboxes.get(&to) {
            // A receiver gone means the test is over; the message is lost like any
            // other.
            let _ = outbox.send(message);
        }
    }

    fn receive_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.received)
    }

    fn halt(&self) -> bool {
        self.halt
    }

    fn register_leader(&mut self, leader: Option<NodeId>) {
        self.is_leader = leader == Some(self.id);
    }
}

/// Three replicas on their threads, and a forwarding thread per replica that moves
/// its incoming messages into its cluster and notifies it.
struct Harness {
    clusters: BTreeMap<NodeId, Arc<Mutex<ThreadCluster>>>,
    calculators: BTreeMap<NodeId, Arc<Mutex<Calculator>>>,
    notify_transition: BTreeMap<NodeId, Sender<()>>,
    applied: Receiver<(NodeId, u64)>,
    replicas: Vec<(NodeId, JoinHandle<Result<(), ReplicaError>>)>,
}

impl Harness {
    fn start() -> Harness {
        let (applied_sender, applied) = mpsc::channel();
        let mut outboxes = BTreeMap::new();
        let mut inboxes = BTreeMap::new();
        for id in REPLICAS {
            let (outbox, inbox) = mpsc::channel();
            outboxes.insert(id, outbox);
            inboxes.insert(id, inbox);
        }
        let mut harness = Harness {
            clusters: BTreeMap::new(),
            calculators: BTreeMap::new(),
            notify_transition: BTreeMap::new(),
            applied,
            replicas: Vec::new(),
        };
        for id in REPLICAS {
            let cluster = Arc::new(Mutex::new(ThreadCluster {
                id,
                is_leader: false,
                outboxes: outboxes.clone(),
                received: Vec::new(),
                halt: false,
            }));
            let calculator = Arc::new(Mutex::new(Calculator {
                id,
                value: 0,
                applied: applied_sender.clone(),
                pending: Vec::new(),
            }));
            let (notify_message, recv_msg) = mpsc::channel();
            let (notify_transition, recv_transition) = mpsc::channel();
            let peers = REPLICAS.into_iter().filter(|&peer| peer != id).collect();
            let mut replica = Replica::new(
                id,
                peers,
                cluster.clone(),
                calculator.clone(),
                Arithmetic { id: 0, delta: 0 },
                HEARTBEAT_TIMEOUT,
                ELECTION_TIMEOUT_RANGE,
            )
            .expect("valid replica settings");
            let thread = thread::Builder::new()
                .name(format!("replica-{id}"))
                .spawn(move || replica.start(recv_msg, recv_transition))
                .expect("spawn a replica thread");
            harness.replicas.push((id, thread));
            forward(
                inboxes.remove(&id).unwrap(),
                cluster.clone(),
                notify_message,
            );
            harness.clusters.insert(id, cluster);
            harness.calculators.insert(id, calculator);
            harness.notify_transition.insert(id, notify_transition);
        }
        harness
    }

    /// Waits a second, hands transition `id` to the replica that says it leads, then
    /// waits two seconds. Fails if no replica leads at that moment.
    fn submit_to_leader(&self, delta: i32, id: u64) {
        thread::sleep(BEFORE_SUBMIT);
        let leader = self
            .clusters
            .values()
            .map(|cluster| cluster.lock().unwrap())
            .find(|cluster| cluster.is_leader)
            .map(|cluster| cluster.id);
        let Some(leader) = leader else {
            panic!("no replica leads when transition {id} is submitted");
        };
        self.calculators[&leader]
            .lock()
            .unwrap()
            .pending
            .push(Arithmetic { id, delta });
        self.notify_transition[&leader].send(()).unwrap();
        thread::sleep(AFTER_SUBMIT);
    }

    /// Halts replica `id`: it stops, and the messages sent to it from now on are never
    /// read.
    fn halt(&self, id: NodeId) {
        self.clusters[&id].lock().unwrap().halt = true;
    }

    /// Forgets that halted replica `id` led, as little_raft's test does: a replica
    /// that has stopped does not report losing leadership.
    fn forget_leader(&self, id: NodeId) {
        self.clusters[&id].lock().unwrap().is_leader = false;
    }

    /// Waits a second, halts every replica and waits for their threads. Returns each
    /// replica's applied transition ids, in order, and its final value.
    fn halt_all(self) -> BTreeMap<NodeId, (Vec<u64>, i64)> {
        thread::sleep(BEFORE_SUBMIT);
        for id in REPLICAS {
            self.halt(id);
        }
        for (id, thread) in self.replicas {
            let result = thread.join().expect("the replica thread does not panic");
            assert_eq!(result, Ok(()), "replica {id} stopped with an error");
        }
        let mut outcome: BTreeMap<NodeId, (Vec<u64>, i64)> = REPLICAS
            .into_iter()
            .map(|id| {
                (
                    id,
                    (Vec::new(), self.calculators[&id].lock().unwrap().value),
                )
            })
            .collect();
        for (replica, transition) in self.applied.try_iter() {
            outcome.get_mut(&replica).unwrap().0.push(transition);
        }
        outcome
    }
}

/// Moves each message for one replica into its cluster and notifies the replica, until
/// every sender is gone.
fn forward(inbox: Receiver<Message>, cluster: Arc<Mutex<ThreadCluster>>, notify: Sender<()>) {
    thread::spawn(move || {
        for message in inbox {
            cluster.lock().unwrap().received.push(message);
            // A replica that has stopped no longer listens.
            let _ = notify.send(());
        }
    });
}

/// little_raft's `raft_stable`: three replicas elect a leader and apply four
/// transitions, each submitted to the leader a second after the last.
#[test]
fn three_replicas_apply_four_transitions_in_order() {
    let harness = Harness::start();
    harness.submit_to_leader(5, 1);
    harness.submit_to_leader(-51, 2);
    harness.submit_to_leader(-511, 3);
    harness.submit_to_leader(3, 4);
    let outcome = harness.halt_all();
    for id in REPLICAS {
        assert_eq!(
            outcome[&id],
            (vec![1, 2, 3, 4], 5 - 51 - 511 + 3),
            "replica {id}: applied transitions and final value"
        );
    }
}

/// little_raft's `raft_unstable`: after the first transition, replica 1 halts (leader
/// or not) and everything sent to it is lost; the other two elect a leader if they
/// need one, and apply the first transition and three more, in order.
#[test]
fn two_replicas_carry_on_after_the_third_halts() {
    let harness = Harness::start();
    harness.submit_to_leader(5, 1);
    harness.halt(1);
    thread::sleep(REELECTION);
    harness.forget_leader(1);
    harness.submit_to_leader(-51, 2);
    harness.submit_to_leader(-511, 3);
    harness.submit_to_leader(3, 4);
    let outcome = harness.halt_all();
    assert_eq!(
        outcome[&1].0,
        vec![1],
        "replica 1 halted after transition 1"
    );
    for id in [2, 3] {
        assert_eq!(
            outcome[&id],
            (vec![1, 2, 3, 4], 5 - 51 - 511 + 3),
            "replica {id}: applied transitions and final value"
        );
    }
}
