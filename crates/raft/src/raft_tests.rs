//! Unit tests of the state machine. Each feeds inputs and asserts the whole output
//! (messages, log, role), and names the Raft paper or thesis section it checks.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::conf_change::ConfChange;
use crate::config::{Config, ReadOnlyOption};
use crate::errors::ProposeError;
use crate::progress::ProgressState;
use crate::raw_node::{RawNode, Ready};
use crate::storage::{LogStore, MemStorage, Storage};
use crate::types::{
    ConfState, Entry, EntryKind, HardState, Message, MessageKind, NodeId, Role, NO_NODE,
};

/// Election timeout of the test configs, in ticks.
const ELECTION: u32 = 10;

/// The hard state of a freshly bootstrapped node: the bootstrap snapshot at index 1,
/// term 1 is committed.
const BOOT: HardState = HardState {
    term: 1,
    vote: NO_NODE,
    commit: 1,
};

fn config(id: NodeId) -> Config {
    Config {
        election_timeout_ticks: ELECTION,
        heartbeat_interval_ticks: 1,
        pre_vote: false,
        check_quorum: false,
        ..Config::new(id)
    }
}

fn hard_state(term: u64, vote: NodeId, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from_static(data),
    }
}

fn storage_with(voters: &[NodeId], entries: &[Entry], hard_state: HardState) -> MemStorage {
    let mut storage = MemStorage::with_conf_state(ConfState::with_voters(voters.iter().copied()));
    storage.append(entries).unwrap();
    storage.set_hard_state(hard_state).unwrap();
    storage
}

fn node(id: NodeId, voters: &[NodeId]) -> RawNode<MemStorage> {
    RawNode::new(&config(id), storage_with(voters, &[], BOOT)).unwrap()
}

/// Runs one driver round per the contract; returns the Ready for inspection.
fn handle_ready(node: &mut RawNode<MemStorage>) -> Ready {
    let ready = node.ready();
    if let Some(snapshot) = &ready.snapshot {
        node.storage_mut().apply_snapshot(snapshot.clone()).unwrap();
    }
    if let Some(hard_state) = ready.hard_state {
        node.storage_mut().set_hard_state(hard_state).unwrap();
    }
    node.storage_mut().append(&ready.entries).unwrap();
    for committed in &ready.committed_entries {
        if committed.kind == EntryKind::ConfChange {
            let change = ConfChange::decode(&committed.data).unwrap();
            if let Ok(conf_state) = node.apply_conf_change(&change) {
                node.storage_mut().set_conf_state(conf_state);
            }
        }
    }
    node.advance();
    ready
}

/// All messages of one driver round.
fn outbox(node: &mut RawNode<MemStorage>) -> Vec<Message> {
    let ready = handle_ready(node);
    ready
        .messages
        .into_iter()
        .chain(ready.persisted_messages)
        .collect()
}

fn kinds(messages: &[Message]) -> Vec<(MessageKind, NodeId, u64)> {
    messages.iter().map(|m| (m.kind, m.to, m.term)).collect()
}

/// Snapshots the node's storage at its applied index with `data` and compacts the log
/// up to it, as a driver does; returns that index.
fn snapshot_and_compact(node: &mut RawNode<MemStorage>, data: Bytes) -> u64 {
    let status = node.status();
    let storage = node.storage_mut();
    storage
        .create_snapshot(status.applied, status.conf_state, data)
        .unwrap();
    storage.compact(status.applied).unwrap();
    status.applied
}

/// A group of nodes wired by direct calls, with links that can be cut.
struct Network {
    nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    delivered: Vec<Message>,
}

impl Network {
    fn new(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Network {
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut config = config(id);
                tweak(&mut config);
                let storage = storage_with(ids, &[], BOOT);
                (id, RawNode::new(&config, storage).unwrap())
            })
            .collect();
        Network {
            nodes,
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            delivered: Vec::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Runs every node's Ready and delivers messages until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut messages = Vec::new();
            for (&id, node) in self.nodes.iter_mut() {
                if node.has_ready() {
                    let ready = handle_ready(node);
                    self.applied.entry(id).or_default().extend(
                        ready
                            .committed_entries
                            .into_iter()
                            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty()),
                    );
                    messages.extend(ready.messages);
                    messages.extend(ready.persisted_messages);
                }
            }
            if messages.is_empty() && !self.nodes.values().any(|node| node.has_ready()) {
                return;
            }
            for message in messages {
                if self.cut.contains(&(message.from, message.to)) {
                    continue;
                }
                self.delivered.push(message.clone());
                if let Some(target) = self.nodes.get_mut(&message.to) {
                    target.step(message).unwrap();
                }
            }
        }
        panic!("network did not settle");
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn elect(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.settle();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "node {id} should have won"
        );
    }

    fn tick(&mut self, id: NodeId, ticks: u32) {
        for _ in 0..ticks {
            self.node(id).tick();
            self.settle();
        }
    }

    fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied
            .get(&id)
            .map(|entries| entries.iter().map(|e| e.data.clone()).collect())
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------
// Elections.

/// Raft paper §5.2: a follower that hears nothing for an election timeout becomes a
/// candidate in the next term, votes for itself, and asks every other voter — and the
/// vote requests wait until its vote is durable.
#[test]
fn election_timeout_starts_candidacy() {
    let mut n = node(1, &[1, 2, 3]);
    for _ in 0..2 * ELECTION {
        n.tick();
    }
    assert_eq!(n.role(), Role::Candidate);
    assert_eq!(n.term(), 2);
    let ready = handle_ready(&mut n);
    assert_eq!(ready.hard_state, Some(hard_state(2, 1, 1)));
    assert!(
        ready.messages.is_empty(),
        "vote requests must wait for the vote to persist"
    );
    let requests = ready.persisted_messages;
    assert_eq!(
        kinds(&requests),
        vec![
            (MessageKind::RequestVote, 2, 2),
            (MessageKind::RequestVote, 3, 2)
        ]
    );
    assert!(requests.iter().all(|m| m.index == 1 && m.log_term == 1));
}

/// Thesis §9.6: with pre-vote, a timed-out follower asks for pre-votes for term+1
/// without changing its own term or vote, and the requests go out at once.
#[test]
fn pre_vote_does_not_change_term() {
    let mut config = config(1);
    config.pre_vote = true;
    let mut n = RawNode::new(&config, storage_with(&[1, 2, 3], &[], BOOT)).unwrap();
    n.campaign();
    assert_eq!(n.role(), Role::PreCandidate);
    assert_eq!(n.term(), 1);
    let ready = handle_ready(&mut n);
    assert_eq!(ready.hard_state, None);
    assert_eq!(
        kinds(&ready.messages),
        vec![
            (MessageKind::RequestPreVote, 2, 2),
            (MessageKind::RequestPreVote, 3, 2)
        ]
    );
}

/// Raft paper §5.4.1: a vote is granted only to a candidate whose log is at least as
/// up to date (higher last term, or same last term and at least as long).
#[test]
fn vote_requires_up_to_date_log() {
    let entries = [entry(2, 1, b"a"), entry(3, 2, b"b")];
    let cases = [
        // (candidate last index, last term, granted)
        (3, 2, true),
        (4, 2, true),
        (2, 3, true),
        (2, 2, false),
        (5, 1, false),
    ];
    for (index, log_term, granted) in cases {
        let storage = storage_with(&[1, 2, 3], &entries, hard_state(2, 0, 0));
        let mut n = RawNode::new(&config(1), storage).unwrap();
        let mut request = Message::new(MessageKind::RequestVote, 2, 1, 3);
        request.index = index;
        request.log_term = log_term;
        n.step(request).unwrap();
        let response = outbox(&mut n);
        assert_eq!(
            kinds(&response),
            vec![(MessageKind::RequestVoteResponse, 2, 3)]
        );
        assert_eq!(
            !response[0].reject, granted,
            "candidate log ({index}, {log_term})"
        );
        assert_eq!(n.raft().vote, if granted { 2 } else { NO_NODE });
    }
}

/// Raft paper §5.2: at most one vote per term, first come first served; the same
/// candidate asking again is granted again.
#[test]
fn one_vote_per_term() {
    let mut n = node(1, &[1, 2, 3]);
    for (candidate, granted) in [(2, true), (3, false), (2, true)] {
        let mut request = Message::new(MessageKind::RequestVote, candidate, 1, 2);
        request.index = 1;
        request.log_term = 1;
        n.step(request).unwrap();
        let response = outbox(&mut n);
        assert_eq!(response.len(), 1);
        assert_eq!(response[0].reject, !granted, "vote for {candidate}");
    }
    assert_eq!(n.raft().vote, 2);
}

/// Raft paper §5.2 and §8: a candidate with a majority becomes leader and appends an
/// empty entry of its term, which it replicates at once.
#[test]
fn candidate_with_majority_becomes_leader_and_appends_no_op() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign();
    handle_ready(&mut n);
    n.step(Message::new(MessageKind::RequestVoteResponse, 2, 1, 2))
        .unwrap();
    assert_eq!(n.role(), Role::Leader);
    let ready = handle_ready(&mut n);
    assert_eq!(ready.entries, vec![entry(2, 2, b"")]);
    assert_eq!(
        kinds(&ready.messages),
        vec![(MessageKind::Append, 2, 2), (MessageKind::Append, 3, 2)]
    );
    for append in &ready.messages {
        assert_eq!((append.index, append.log_term, append.commit), (1, 1, 1));
        assert_eq!(append.entries, vec![entry(2, 2, b"")]);
    }
}

/// Raft paper Figure 2 ("respond to RPCs only after updating stable storage"), and
/// etcd's Ready contract: nothing leaves before a new term and vote are durable. A
/// sole voter wins its election with no round trip, so its first appends are in the
/// Ready that makes its term durable; sent early, a crash losing that write lets it
/// win the same term again with other entries at the same indexes, and a learner
/// holding the first ones keeps a log that matches by (index, term) but differs
/// (simulator seed 36320623670). Once the term is durable, a leader's appends go out
/// at once again (thesis §10.2.1).
#[test]
fn a_sole_voter_sends_nothing_before_its_new_term_is_durable() {
    let mut conf_state = ConfState::with_voters([1]);
    conf_state.learners = vec![2];
    let mut storage = MemStorage::with_conf_state(conf_state);
    storage.set_hard_state(BOOT).unwrap();
    let mut n = RawNode::new(&config(1), storage).unwrap();
    n.campaign();
    assert_eq!(n.role(), Role::Leader);
    // A proposal taken in the same turn (as concord-group's driver does) makes the
    // leader append to the learner in the Ready that carries its new term.
    n.propose(Bytes::from_static(b"w")).unwrap();
    let ready = handle_ready(&mut n);
    let hard_state = ready.hard_state.expect("a new term to persist");
    assert_eq!((hard_state.term, hard_state.vote), (BOOT.term + 1, 1));
    assert!(ready.messages.is_empty(), "{:?}", kinds(&ready.messages));
    assert_eq!(
        kinds(&ready.persisted_messages),
        vec![(MessageKind::Append, 2, BOOT.term + 1)]
    );
    let mut ack = Message::new(MessageKind::AppendResponse, 2, 1, BOOT.term + 1);
    ack.index = n.status().last_index;
    n.step(ack).unwrap();
    n.propose(Bytes::from_static(b"x")).unwrap();
    let ready = handle_ready(&mut n);
    assert!(!ready.messages.is_empty());
    assert!(kinds(&ready.messages)
        .iter()
        .all(|&kind| kind == (MessageKind::Append, 2, BOOT.term + 1)));
    assert!(ready.persisted_messages.is_empty());
}

/// A node that stood down (its state machine stopped) steps down at once if it leads,
/// never campaigns again, on its timeout or on a leader's `TimeoutNow`, and still
/// grants its vote and acknowledges entries.
#[test]
fn a_node_that_stood_down_never_seeks_leadership_but_still_votes() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign();
    handle_ready(&mut n);
    n.step(Message::new(MessageKind::RequestVoteResponse, 2, 1, 2))
        .unwrap();
    assert_eq!(n.role(), Role::Leader);
    handle_ready(&mut n);
    n.stand_down();
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, 2, NO_NODE)
    );
    for _ in 0..4 * ELECTION {
        n.tick();
    }
    n.step(Message::new(MessageKind::TimeoutNow, 2, 1, 2))
        .unwrap();
    assert_eq!((n.role(), n.term()), (Role::Follower, 2));
    handle_ready(&mut n);
    // Node 3 campaigns in term 3 with a log as long: node 1 votes for it.
    let mut request = Message::new(MessageKind::RequestVote, 3, 1, 3);
    request.index = 2;
    request.log_term = 2;
    n.step(request).unwrap();
    let ready = handle_ready(&mut n);
    let granted: Vec<_> = ready
        .persisted_messages
        .iter()
        .filter(|m| m.kind == MessageKind::RequestVoteResponse && !m.reject)
        .map(|m| (m.to, m.term))
        .collect();
    assert_eq!(granted, vec![(3, 3)]);
    // And it stores what the new leader sends.
    let mut append = Message::new(MessageKind::Append, 3, 1, 3);
    append.index = 2;
    append.log_term = 2;
    append.entries = vec![entry(3, 3, b"")];
    n.step(append).unwrap();
    let ready = handle_ready(&mut n);
    assert_eq!(ready.entries, vec![entry(3, 3, b"")]);
}

/// Raft paper §5.2: a candidate rejected by a majority returns to follower.
#[test]
fn candidate_rejected_by_majority_becomes_follower() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign();
    handle_ready(&mut n);
    for from in [2, 3] {
        let mut rejection = Message::new(MessageKind::RequestVoteResponse, from, 1, 2);
        rejection.reject = true;
        n.step(rejection).unwrap();
    }
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.term(), 2);
}

/// Raft paper §5.1: any message with a higher term makes a leader step down.
#[test]
fn higher_term_deposes_leader() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let mut append = Message::new(MessageKind::Append, 2, 1, 5);
    append.index = 1;
    append.log_term = 1;
    net.node(1).step(append).unwrap();
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!((net.node(1).term(), net.node(1).leader()), (5, 2));
}

/// Thesis §6.2: with check-quorum a leader that hears from no quorum for an election
/// timeout steps down; one that hears from a quorum stays.
#[test]
fn check_quorum_steps_down_isolated_leader() {
    let mut net = Network::new(&[1, 2, 3], |c| c.check_quorum = true);
    net.elect(1);
    net.tick(1, ELECTION);
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "a connected leader keeps its role"
    );
    net.isolate(1);
    net.tick(1, 2 * ELECTION);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(
        net.node(1).term(),
        2,
        "stepping down does not change the term"
    );
}

/// Thesis §4.2.3: with check-quorum, a follower that heard from its leader within the
/// election timeout ignores vote requests from a higher term (a disruptive server).
#[test]
fn follower_in_lease_ignores_vote_requests() {
    let mut net = Network::new(&[1, 2, 3], |c| c.check_quorum = true);
    net.elect(1);
    let mut request = Message::new(MessageKind::RequestVote, 3, 2, 7);
    request.index = 10;
    request.log_term = 7;
    net.node(2).step(request).unwrap();
    assert_eq!(net.node(2).term(), 2);
    assert!(outbox(net.node(2)).is_empty());
}

/// Contract step 3 lets a driver write a hard state that changes only the commit
/// index lazily, and restart at its latest snapshot: a node that snapshotted at 5 and
/// crashed before its commit index (4 on disk) was written again restarts with
/// `applied` 5, committed at least 5 (a snapshot holds only committed state). Asking
/// for more than the snapshot is still refused. (The simulator running concord-node's
/// driver found the refusal, seed 3.)
#[test]
fn restart_at_a_snapshot_ahead_of_the_durable_commit_index() {
    let entries: Vec<Entry> = (2..=7).map(|index| entry(index, 1, b"x")).collect();
    let mut storage = storage_with(&[1, 2, 3], &entries, hard_state(1, 0, 4));
    storage
        .create_snapshot(
            5,
            ConfState::with_voters([1, 2, 3]),
            Bytes::from_static(b"s"),
        )
        .unwrap();
    storage.compact(3).unwrap();
    let mut config = config(1);
    config.applied = 5;
    let n = RawNode::new(&config, storage.clone()).unwrap();
    assert_eq!((n.status().commit, n.status().applied), (5, 5));
    config.applied = 6;
    let refused = RawNode::new(&config, storage).err().unwrap();
    assert!(
        refused.to_string().contains("latest snapshot (5)"),
        "{refused}"
    );
}

/// Raft paper Figure 2, RequestVote: "reply false if term < currentTerm", with the
/// current term in the reply. A candidate of an older term learns the term and steps
/// down to follower, and the rejection still carries the commit hint.
#[test]
fn stale_vote_request_is_rejected_with_the_current_term() {
    for kind in [MessageKind::RequestVote, MessageKind::RequestPreVote] {
        let entries = [entry(2, 4, b"a")];
        let storage = storage_with(&[1, 2, 3], &entries, hard_state(5, 0, 2));
        let mut voter = RawNode::new(&config(2), storage).unwrap();
        let mut request = Message::new(kind, 1, 2, 3);
        request.index = 9;
        request.log_term = 3;
        voter.step(request).unwrap();
        let response = outbox(&mut voter);
        let expected_kind = if kind == MessageKind::RequestVote {
            MessageKind::RequestVoteResponse
        } else {
            MessageKind::RequestPreVoteResponse
        };
        assert_eq!(kinds(&response), vec![(expected_kind, 1, 5)], "{kind:?}");
        assert_eq!(
            (response[0].reject, response[0].commit, response[0].log_term),
            (true, 2, 4)
        );
        assert_eq!((voter.term(), voter.raft().vote), (5, NO_NODE));
    }
    // The stale candidate takes the term and gives up.
    let mut candidate = node(1, &[1, 2, 3]);
    candidate.campaign();
    handle_ready(&mut candidate);
    let mut rejection = Message::new(MessageKind::RequestVoteResponse, 2, 1, 5);
    rejection.reject = true;
    candidate.step(rejection).unwrap();
    assert_eq!((candidate.role(), candidate.term()), (Role::Follower, 5));
}

/// The shape of simulator seeds 7302755 and 2101698435: after a membership change,
/// the candidate with the newest log (node 1, voters [1, 2]) needs the vote of a voter
/// still on an older configuration (node 2, voters [2, 3], without node 1) that has
/// run up a higher term in elections it cannot win. Node 2's own vote requests never
/// reach node 1, so node 1 learns the term only from the rejections of its own stale
/// requests; it then campaigns above it and wins. Were stale vote requests ignored,
/// both terms would climb side by side and no leader would ever be elected.
#[test]
fn a_candidate_below_a_voter_of_an_older_configuration_learns_its_term_and_wins() {
    let newest = [entry(2, 3, b"a"), entry(3, 3, b"b"), entry(4, 4, b"c")];
    let mut nodes = BTreeMap::new();
    nodes.insert(
        1,
        RawNode::new(
            &config(1),
            storage_with(&[1, 2], &newest, hard_state(4, 0, 4)),
        )
        .unwrap(),
    );
    nodes.insert(
        2,
        RawNode::new(&config(2), storage_with(&[2, 3], &[], hard_state(9, 0, 1))).unwrap(),
    );
    let mut net = Network {
        nodes,
        cut: BTreeSet::new(),
        applied: BTreeMap::new(),
        delivered: Vec::new(),
    };
    for _ in 0..40 * ELECTION {
        for id in [1, 2] {
            net.node(id).tick();
        }
        net.settle();
        if net.node(1).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(net.node(1).role(), Role::Leader, "node 1 never won");
    assert!(net.node(1).term() > 9);
}

/// Thesis §9.6: a node cut off from the group pre-votes but never raises its term, so
/// when it returns it does not depose the working leader.
#[test]
fn pre_vote_keeps_partitioned_node_from_disrupting() {
    let mut net = Network::new(&[1, 2, 3], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.elect(1);
    let leader_term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 5 * ELECTION);
    assert_eq!(
        net.node(3).term(),
        leader_term,
        "pre-vote never won, term unchanged"
    );
    net.heal();
    net.tick(1, 2);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), leader_term);
    assert_eq!(net.node(3).leader(), 1);
}

// ------------------------------------------------------------------------------------
// Replication.

/// Raft paper §5.3: a proposal is appended to the leader's log and sent to each
/// follower with the index and term of the entry before it and the commit index.
#[test]
fn proposal_is_appended_and_replicated() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let position = net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    assert_eq!((position.index, position.term), (3, 2));
    let ready = handle_ready(net.node(1));
    assert_eq!(ready.entries, vec![entry(3, 2, b"x")]);
    let appends: Vec<_> = ready
        .messages
        .iter()
        .map(|m| {
            (
                m.kind,
                m.to,
                m.index,
                m.log_term,
                m.commit,
                m.entries.clone(),
            )
        })
        .collect();
    assert_eq!(
        appends,
        vec![
            (MessageKind::Append, 2, 2, 2, 2, vec![entry(3, 2, b"x")]),
            (MessageKind::Append, 3, 2, 2, 2, vec![entry(3, 2, b"x")]),
        ]
    );
}

/// Batching: a batch of proposals becomes consecutive entries sent in one append.
#[test]
fn batch_is_one_append() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let batch = [b"a", b"b", b"c"].map(|data| Bytes::from_static(data));
    let first = net.node(1).propose_batch(batch).unwrap();
    assert_eq!(first.index, 3);
    let ready = handle_ready(net.node(1));
    assert_eq!(ready.messages.len(), 2);
    assert!(ready.messages.iter().all(|m| m.entries.len() == 3));
    for append in ready.messages {
        let to = append.to;
        net.node(to).step(append).unwrap();
    }
    net.settle();
    assert_eq!(
        net.applied_data(3),
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c")
        ]
    );
}

/// Raft paper §5.3: a follower whose log does not hold the previous entry rejects the
/// append and hints where its log could match; it accepts and truncates a conflicting
/// suffix once the leader sends from the matching point.
#[test]
fn follower_rejects_gap_and_truncates_conflict() {
    let entries = [entry(2, 1, b"a"), entry(3, 1, b"b"), entry(4, 2, b"stale")];
    let storage = storage_with(&[1, 2, 3], &entries, hard_state(2, 0, 2));
    let mut n = RawNode::new(&config(2), storage).unwrap();
    // Leader of term 3 believes the follower has index 5 at term 3.
    let mut append = Message::new(MessageKind::Append, 1, 2, 3);
    append.index = 5;
    append.log_term = 3;
    n.step(append).unwrap();
    let response = outbox(&mut n);
    assert_eq!(response.len(), 1);
    let r = &response[0];
    assert_eq!(
        (r.kind, r.reject, r.index, r.reject_hint, r.log_term),
        (MessageKind::AppendResponse, true, 5, 4, 2)
    );
    // The leader's entry 4 has term 3: the follower's entry 4 (term 2) must go.
    let mut append = Message::new(MessageKind::Append, 1, 2, 3);
    append.index = 3;
    append.log_term = 1;
    append.entries = vec![entry(4, 3, b"new")];
    append.commit = 4;
    n.step(append).unwrap();
    let ready = handle_ready(&mut n);
    assert_eq!(ready.entries, vec![entry(4, 3, b"new")]);
    assert_eq!(
        ready
            .committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let r = &ready.persisted_messages[0];
    assert_eq!(
        (r.kind, r.reject, r.index),
        (MessageKind::AppendResponse, false, 4)
    );
    assert_eq!(n.storage().term(4).unwrap(), 3);
}

/// Raft paper §5.3 (fast backtracking at its end): a leader whose follower holds a long
/// divergent tail from an old term finds the match point in a few round trips rather
/// than one per entry.
#[test]
fn leader_backtracks_a_term_at_a_time() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    // Node 3's log: 50 entries of term 1 (never committed); nodes 1 and 2 hold only
    // the bootstrap snapshot.
    let stale: Vec<Entry> = (2..=51).map(|i| entry(i, 1, b"s")).collect();
    let storage = storage_with(&[1, 2, 3], &stale, BOOT);
    net.nodes
        .insert(3, RawNode::new(&config(3), storage).unwrap());
    // Node 1 wins term 2 with node 2's vote (node 3, cut off, would refuse).
    net.cut.insert((1, 3));
    net.elect(1);
    for i in 0..20 {
        net.node(1).propose(Bytes::from(vec![i as u8; 1])).unwrap();
    }
    net.settle();
    net.heal();
    net.delivered.clear();
    net.tick(1, 1);
    let rejections = net
        .delivered
        .iter()
        .filter(|m| m.from == 3 && m.reject)
        .count();
    assert!(rejections <= 3, "took {rejections} rejected round trips");
    assert_eq!(
        net.node(3).status().last_index,
        net.node(1).status().last_index
    );
    assert_eq!(
        net.node(3).storage().term(22).unwrap(),
        2,
        "the stale tail was replaced"
    );
}

/// Raft paper §5.4.2 (Figure 8): a leader never commits an entry of an earlier term by
/// counting replicas; it commits once an entry of its own term reaches a quorum.
#[test]
fn old_term_entry_is_not_committed_by_count() {
    // Node 1 holds entry 2 from term 2 that never committed; it is now leader of term 4.
    let entries = [entry(2, 1, b"a"), entry(3, 2, b"old")];
    let storage = storage_with(&[1, 2, 3], &entries, hard_state(3, 0, 2));
    let mut n = RawNode::new(&config(1), storage).unwrap();
    n.campaign();
    handle_ready(&mut n);
    n.step(Message::new(MessageKind::RequestVoteResponse, 2, 1, 4))
        .unwrap();
    assert_eq!(n.role(), Role::Leader);
    handle_ready(&mut n); // no-op entry 4 at term 4
                          // Node 2 acknowledges only up to entry 3 (term 2): a majority holds it, yet it must
                          // not commit.
    let mut ack = Message::new(MessageKind::AppendResponse, 2, 1, 4);
    ack.index = 3;
    n.step(ack).unwrap();
    assert_eq!(n.status().commit, 2);
    // Acknowledging the term-4 no-op commits everything up to it.
    let mut ack = Message::new(MessageKind::AppendResponse, 2, 1, 4);
    ack.index = 4;
    n.step(ack).unwrap();
    assert_eq!(n.status().commit, 4);
}

/// Thesis §10.2.1: the leader may send entries before writing them, but counts its own
/// copy toward commitment only once persisted.
#[test]
fn leader_counts_itself_only_after_persisting() {
    let mut n = node(1, &[1, 2]);
    n.campaign();
    handle_ready(&mut n);
    n.step(Message::new(MessageKind::RequestVoteResponse, 2, 1, 2))
        .unwrap();
    handle_ready(&mut n); // the no-op (index 2) is now durable on the leader
    n.propose(Bytes::from_static(b"x")).unwrap();
    let ready = n.ready();
    // The follower acknowledges index 3 before the leader has persisted it: a quorum
    // of 2 holds only up to the no-op.
    let mut ack = Message::new(MessageKind::AppendResponse, 2, 1, 2);
    ack.index = 3;
    n.step(ack).unwrap();
    assert_eq!(n.status().commit, 2, "own copy of 3 is not durable yet");
    n.storage_mut().append(&ready.entries).unwrap();
    n.advance();
    assert_eq!(n.status().commit, 3);
}

/// Flow control: in replicate state the leader pipelines appends without waiting, up to
/// `inflight_messages_max`, then pauses until acknowledgements free the window.
#[test]
fn pipelining_is_bounded_by_inflight_window() {
    let mut net = Network::new(&[1, 2], |c| c.inflight_messages_max = 3);
    net.elect(1);
    for i in 0..10u8 {
        net.node(1).propose(Bytes::from(vec![i])).unwrap();
    }
    let ready = handle_ready(net.node(1));
    let appends: Vec<_> = ready
        .messages
        .iter()
        .filter(|m| m.kind == MessageKind::Append)
        .collect();
    assert_eq!(appends.len(), 3, "window of 3 messages");
    let status = net.node(1).status();
    assert_eq!(status.progress[&2].state, ProgressState::Replicate);
    for append in ready.messages {
        net.node(2).step(append).unwrap();
    }
    net.settle();
    assert_eq!(net.applied_data(2).len(), 10);
}

/// Limits: payload bytes in the uncommitted tail are bounded; over the limit a
/// proposal is refused at once with a typed error, and accepted again after commit.
#[test]
fn uncommitted_bytes_limit_refuses_proposals() {
    let mut net = Network::new(&[1, 2, 3], |c| c.uncommitted_bytes_max = 100);
    net.elect(1);
    net.isolate(1);
    net.node(1).propose(Bytes::from(vec![0; 60])).unwrap();
    let refused = net.node(1).propose(Bytes::from(vec![0; 60])).unwrap_err();
    assert_eq!(
        refused,
        ProposeError::UncommittedBytesExceeded { limit_bytes: 100 }
    );
    net.heal();
    net.tick(1, 1);
    net.node(1).propose(Bytes::from(vec![0; 60])).unwrap();
}

/// Proposals on a follower fail at once with the leader's id; with no leader, none.
#[test]
fn proposal_on_follower_names_leader() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    assert_eq!(
        net.node(2).propose(Bytes::new()).unwrap_err(),
        ProposeError::NotLeader { leader_hint: None }
    );
    net.elect(1);
    assert_eq!(
        net.node(2).propose(Bytes::new()).unwrap_err(),
        ProposeError::NotLeader {
            leader_hint: Some(1)
        }
    );
}

// ------------------------------------------------------------------------------------
// Snapshots.

/// Raft paper §7: a follower behind the leader's compacted log receives the snapshot
/// in chunks no larger than `snapshot_chunk_bytes_max`, installs it, and then
/// receives the entries after it.
#[test]
fn snapshot_is_streamed_in_chunks_then_log_resumes() {
    let mut net = Network::new(&[1, 2, 3], |c| c.snapshot_chunk_bytes_max = 10);
    net.elect(1);
    net.isolate(3);
    for i in 0..5u8 {
        net.node(1).propose(Bytes::from(vec![i])).unwrap();
    }
    net.settle();
    // Leader snapshots at its applied index and compacts everything.
    let applied = snapshot_and_compact(net.node(1), Bytes::from(vec![7u8; 35]));
    net.heal();
    net.delivered.clear();
    net.tick(1, 1);
    let chunks: Vec<(u64, usize)> = net
        .delivered
        .iter()
        .filter(|m| m.kind == MessageKind::Snapshot)
        .map(|m| {
            let chunk = m.snapshot.as_ref().unwrap();
            (chunk.offset, chunk.data.len())
        })
        .collect();
    assert_eq!(chunks, vec![(0, 10), (10, 10), (20, 10), (30, 5)]);
    let snapshot = net.node(3).storage().snapshot(0).unwrap();
    assert_eq!(snapshot.metadata.index, applied);
    assert_eq!(snapshot.data, Bytes::from(vec![7u8; 35]));
    net.node(1).propose(Bytes::from_static(b"after")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3), vec![Bytes::from_static(b"after")]);
}

// ------------------------------------------------------------------------------------
// Membership.

fn change_and_settle(net: &mut Network, leader: NodeId, change: ConfChange) {
    net.node(leader).propose_conf_change(&change).unwrap();
    net.settle();
}

/// Thesis §4.1: a single-step change adds one voter; the new node catches up and
/// counts toward the quorum.
#[test]
fn single_step_add_voter() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    let storage = MemStorage::new();
    net.nodes
        .insert(4, RawNode::new(&config(4), storage).unwrap());
    net.elect(1);
    change_and_settle(&mut net, 1, ConfChange::add_voter(4));
    let conf = net.node(1).status().conf_state;
    assert_eq!(conf.voters, vec![1, 2, 3, 4]);
    assert!(!conf.is_joint());
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4), vec![Bytes::from_static(b"x")]);
}

/// Thesis §4.3: a change of several voters enters a joint configuration and, with
/// auto-leave, the leader leaves it as soon as it applies.
#[test]
fn joint_consensus_enters_and_leaves_automatically() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    for id in [4, 5] {
        net.nodes
            .insert(id, RawNode::new(&config(id), MemStorage::new()).unwrap());
    }
    net.elect(1);
    let change = ConfChange {
        transition: crate::ConfChangeTransition::Auto,
        changes: vec![
            crate::ConfChangeSingle {
                kind: crate::ConfChangeKind::AddVoter,
                node: 4,
            },
            crate::ConfChangeSingle {
                kind: crate::ConfChangeKind::AddVoter,
                node: 5,
            },
            crate::ConfChangeSingle {
                kind: crate::ConfChangeKind::Remove,
                node: 3,
            },
        ],
    };
    change_and_settle(&mut net, 1, change);
    let conf = net.node(1).status().conf_state;
    assert!(
        !conf.is_joint(),
        "left the joint config automatically: {conf:?}"
    );
    assert_eq!(conf.voters, vec![1, 2, 4, 5]);
    assert_eq!(net.node(5).status().conf_state.voters, vec![1, 2, 4, 5]);
}

/// Thesis §4.2.1: a learner receives the log but does not vote or campaign; once
/// promoted it votes.
#[test]
fn learner_replicates_without_voting_then_promotes() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.nodes
        .insert(4, RawNode::new(&config(4), MemStorage::new()).unwrap());
    net.elect(1);
    change_and_settle(&mut net, 1, ConfChange::add_learner(4));
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4), vec![Bytes::from_static(b"x")]);
    net.tick(4, 5 * ELECTION);
    assert_eq!(
        net.node(4).role(),
        Role::Follower,
        "a learner never campaigns"
    );
    assert!(net.node(1).status().progress[&4].is_learner);
    change_and_settle(&mut net, 1, ConfChange::add_voter(4));
    assert_eq!(net.node(1).status().conf_state.voters, vec![1, 2, 3, 4]);
    assert!(!net.node(1).status().progress[&4].is_learner);
}

/// Thesis §4.2.2: a removed node stops campaigning; a removed leader hands leadership
/// to a remaining voter rather than leaving the group leaderless.
#[test]
fn removed_nodes_stop_campaigning_and_leader_hands_off() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    change_and_settle(&mut net, 1, ConfChange::remove(3));
    let term = net.node(3).term();
    net.isolate(3);
    net.tick(3, 5 * ELECTION);
    assert_eq!(net.node(3).term(), term, "a removed node does not campaign");
    net.heal();
    change_and_settle(&mut net, 1, ConfChange::remove(1));
    // No election timeout needed: node 1 handed leadership to node 2 (TimeoutNow).
    assert_eq!(
        net.node(2).role(),
        Role::Leader,
        "the remaining voter leads at once"
    );
    assert_eq!(
        net.node(1).role(),
        Role::Follower,
        "the removed leader stepped down"
    );
    assert!(net
        .delivered
        .iter()
        .any(|m| m.kind == MessageKind::TimeoutNow && m.from == 1 && m.to == 2));
    net.node(2).propose(Bytes::from_static(b"after")).unwrap();
    net.settle();
    assert_eq!(
        net.applied_data(2).last(),
        Some(&Bytes::from_static(b"after"))
    );
}

/// Log Matching (Raft paper §5.3) makes a commit index learnable from any node: a vote
/// rejection carries the rejecter's commit index and its term there, and a candidate
/// whose entry there has the same term commits up to it — but not when the terms
/// differ. This is what frees a voter stuck in an old configuration after the leader
/// that removed itself left.
#[test]
fn vote_rejection_teaches_commit_index() {
    for (hint_term, expected_commit) in [(1, 3), (2, 1)] {
        let entries = [entry(2, 1, b"a"), entry(3, 1, b"b")];
        let storage = storage_with(&[1, 2, 3], &entries, hard_state(1, 0, 1));
        let mut n = RawNode::new(&config(1), storage).unwrap();
        n.campaign();
        handle_ready(&mut n);
        let mut rejection = Message::new(MessageKind::RequestVoteResponse, 2, 1, 2);
        rejection.reject = true;
        rejection.commit = 3;
        rejection.log_term = hint_term;
        n.step(rejection).unwrap();
        assert_eq!(n.status().commit, expected_commit, "hint term {hint_term}");
    }
    // And the rejecting side fills the hint in.
    let entries = [entry(2, 1, b"a")];
    let storage = storage_with(&[1, 2, 3], &entries, hard_state(1, 0, 2));
    let mut voter = RawNode::new(&config(2), storage).unwrap();
    let mut request = Message::new(MessageKind::RequestVote, 1, 2, 2);
    request.index = 1;
    request.log_term = 1;
    voter.step(request).unwrap();
    let response = outbox(&mut voter);
    assert_eq!(
        (response[0].reject, response[0].commit, response[0].log_term),
        (true, 2, 1)
    );
}

/// One membership change at a time: a second is refused until the first applies.
#[test]
fn conf_change_refused_while_one_is_pending() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.isolate(1);
    let position = net
        .node(1)
        .propose_conf_change(&ConfChange::add_learner(9))
        .unwrap();
    let refused = net
        .node(1)
        .propose_conf_change(&ConfChange::add_learner(8))
        .unwrap_err();
    assert_eq!(
        refused,
        ProposeError::ConfChangePending {
            pending_index: position.index
        }
    );
    let invalid = ConfChange::leave_joint();
    net.heal();
    net.settle();
    net.tick(1, 1);
    assert!(matches!(
        net.node(1).propose_conf_change(&invalid),
        Err(ProposeError::InvalidConfChange(_))
    ));
}

// ------------------------------------------------------------------------------------
// Leadership transfer.

/// Thesis §3.10: the leader catches the target up, sends TimeoutNow, and the target
/// wins at once — even with pre-vote and check-quorum on; proposals are refused while
/// the transfer is under way.
#[test]
fn leadership_transfer_catches_up_then_times_out_target() {
    let mut net = Network::new(&[1, 2, 3], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.elect(1);
    net.isolate(3);
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    net.settle();
    net.heal();
    net.node(1).transfer_leader(3);
    assert_eq!(
        net.node(1).propose(Bytes::from_static(b"y")).unwrap_err(),
        ProposeError::TransferInProgress { target: 3 }
    );
    net.settle();
    assert_eq!(net.node(3).role(), Role::Leader);
    assert_eq!(net.node(1).leader(), 3);
    assert!(net
        .delivered
        .iter()
        .any(|m| m.kind == MessageKind::TimeoutNow && m.to == 3));
}

/// A transfer that cannot finish within an election timeout is abandoned and
/// proposals are accepted again.
#[test]
fn stalled_transfer_is_abandoned() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3);
    assert!(net.node(1).propose(Bytes::new()).is_err());
    net.tick(1, ELECTION);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(1).propose(Bytes::from_static(b"z")).unwrap();
}

// ------------------------------------------------------------------------------------
// Reads.

/// Thesis §6.4: a ReadIndex read on the leader is confirmed by a heartbeat round to a
/// quorum and answered with the commit index at the time of the request.
#[test]
fn read_index_on_leader_waits_for_heartbeat_quorum() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    let commit = net.node(1).status().commit;
    net.isolate(1);
    net.node(1).read_index(Bytes::from_static(b"r1")).unwrap();
    let ready = handle_ready(net.node(1));
    assert!(ready.read_states.is_empty(), "no quorum yet");
    let heartbeats: Vec<_> = ready
        .messages
        .iter()
        .filter(|m| m.kind == MessageKind::Heartbeat)
        .collect();
    assert_eq!(heartbeats.len(), 2);
    assert!(heartbeats.iter().all(|m| m.context.as_ref() == b"r1"));
    let mut ack = Message::new(MessageKind::HeartbeatResponse, 2, 1, 2);
    ack.context = Bytes::from_static(b"r1");
    net.node(1).step(ack).unwrap();
    let ready = handle_ready(net.node(1));
    assert_eq!(ready.read_states.len(), 1);
    assert_eq!(
        (
            ready.read_states[0].index,
            ready.read_states[0].context.as_ref()
        ),
        (commit, &b"r1"[..])
    );
}

/// Thesis §6.4: a follower's read goes through the leader and comes back as a read
/// state with the leader's commit index.
#[test]
fn read_index_on_follower_goes_through_leader() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.node(2).read_index(Bytes::from_static(b"f")).unwrap();
    let forwarded = handle_ready(net.node(2));
    assert_eq!(
        kinds(&forwarded.messages),
        vec![(MessageKind::ReadIndex, 1, 0)]
    );
    net.node(1).step(forwarded.messages[0].clone()).unwrap();
    net.settle();
    let status = net.node(1).status();
    let read_response = net
        .delivered
        .iter()
        .find(|m| m.kind == MessageKind::ReadIndexResponse)
        .unwrap();
    assert_eq!((read_response.to, read_response.index), (2, status.commit));
}

/// Thesis §6.4 step 1: a new leader serves no read until an entry of its term commits.
#[test]
fn read_waits_for_leader_commit_in_its_term() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign();
    handle_ready(&mut n);
    n.step(Message::new(MessageKind::RequestVoteResponse, 2, 1, 2))
        .unwrap();
    handle_ready(&mut n);
    n.read_index(Bytes::from_static(b"early")).unwrap();
    let ready = handle_ready(&mut n);
    assert!(
        ready.messages.iter().all(|m| m.context.is_empty()),
        "no read round before commit"
    );
    let mut ack = Message::new(MessageKind::AppendResponse, 2, 1, 2);
    ack.index = 2;
    n.step(ack).unwrap();
    let ready = handle_ready(&mut n);
    let rounds = ready
        .messages
        .iter()
        .filter(|m| m.kind == MessageKind::Heartbeat && m.context.as_ref() == b"early")
        .count();
    assert_eq!(rounds, 2, "read round starts once the no-op commits");
}

/// Thesis §6.4.1: with lease reads, a leader that heard from a quorum within the lease
/// answers at once; once the lease runs out it falls back to a heartbeat round.
#[test]
fn lease_read_answers_at_once_only_within_lease() {
    let mut net = Network::new(&[1, 2, 3], |c| {
        c.check_quorum = true;
        c.read_only = ReadOnlyOption::LeaseBased;
    });
    net.elect(1);
    net.tick(1, 1); // a heartbeat round starts the lease
    net.node(1)
        .read_index(Bytes::from_static(b"lease"))
        .unwrap();
    let ready = handle_ready(net.node(1));
    assert_eq!(ready.read_states.len(), 1, "answered within the lease");
    // The quorum last acknowledged the heartbeat sent at tick 1: the lease lasts until
    // tick 1 + ELECTION. At tick ELECTION it still holds.
    net.isolate(1);
    for _ in 0..ELECTION - 1 {
        net.node(1).tick();
        handle_ready(net.node(1));
    }
    net.node(1)
        .read_index(Bytes::from_static(b"still"))
        .unwrap();
    assert_eq!(
        handle_ready(net.node(1)).read_states.len(),
        1,
        "lease holds until it runs out"
    );
    net.node(1).tick();
    handle_ready(net.node(1));
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "check-quorum has not yet fired"
    );
    net.node(1).read_index(Bytes::from_static(b"late")).unwrap();
    let ready = handle_ready(net.node(1));
    assert!(ready.read_states.is_empty(), "the lease has run out");
    assert!(ready
        .messages
        .iter()
        .any(|m| m.kind == MessageKind::Heartbeat && m.context.as_ref() == b"late"));
}

/// Raft paper §5.3 (commit index carried by later appends): when the commit index
/// moves, a follower with appends still in flight is not sent a commit-only append (the
/// next append or heartbeat carries it); a follower with nothing in flight gets exactly
/// one, so an idle group applies without waiting for a heartbeat.
#[test]
fn commit_only_appends_go_to_idle_followers_once() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    let appends = handle_ready(net.node(1)).messages;
    assert_eq!(
        kinds(&appends),
        vec![(MessageKind::Append, 2, 2), (MessageKind::Append, 3, 2)]
    );
    // Only node 2 answers: its ack commits index 3.
    net.node(2).step(appends[0].clone()).unwrap();
    let ack_2 = outbox(net.node(2));
    net.node(1).step(ack_2[0].clone()).unwrap();
    assert_eq!(net.node(1).status().commit, 3);
    let after_commit = handle_ready(net.node(1)).messages;
    let summary: Vec<_> = after_commit
        .iter()
        .map(|m| (m.kind, m.to, m.entries.len(), m.commit))
        .collect();
    assert_eq!(
        summary,
        vec![(MessageKind::Append, 2, 0, 3)],
        "node 3 still has an append in flight"
    );
    // Node 3's ack arrives later: it has not been told of commit 3, so it gets one now.
    net.node(3).step(appends[1].clone()).unwrap();
    let ack_3 = outbox(net.node(3));
    net.node(1).step(ack_3[0].clone()).unwrap();
    let after_late_ack = handle_ready(net.node(1)).messages;
    let summary: Vec<_> = after_late_ack
        .iter()
        .map(|m| (m.kind, m.to, m.entries.len(), m.commit))
        .collect();
    assert_eq!(summary, vec![(MessageKind::Append, 3, 0, 3)]);
    // Node 2 acknowledges the commit-only append: nothing more to send.
    net.node(2).step(after_commit[0].clone()).unwrap();
    let ack = outbox(net.node(2));
    net.node(1).step(ack[0].clone()).unwrap();
    assert!(handle_ready(net.node(1)).messages.is_empty());
}

/// Raft paper §7 (InstallSnapshot), sent stop-and-wait: only an acknowledgement that
/// moves forward sends the next chunk, so a duplicated answer does not start a second
/// stream of chunks; a heartbeat answer resends the chunk only if the transfer stalled.
#[test]
fn snapshot_chunks_advance_only_on_forward_acks() {
    let mut net = Network::new(&[1, 2, 3], |c| c.snapshot_chunk_bytes_max = 10);
    net.elect(1);
    net.isolate(3);
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    net.settle();
    snapshot_and_compact(net.node(1), Bytes::from(vec![5u8; 30]));
    // Node 3 answers a heartbeat; the leader probes it, node 3 rejects (it lacks the
    // entries, which are compacted), and the leader starts the snapshot with chunk 0.
    let mut answer = Message::new(MessageKind::HeartbeatResponse, 3, 1, 2);
    answer.index = 1;
    net.node(1).step(answer.clone()).unwrap();
    let probe = handle_ready(net.node(1)).messages;
    assert_eq!(kinds(&probe), vec![(MessageKind::Append, 3, 2)]);
    net.node(3).step(probe[0].clone()).unwrap();
    let rejection = outbox(net.node(3));
    assert!(rejection[0].reject);
    net.node(1).step(rejection[0].clone()).unwrap();
    let sent = handle_ready(net.node(1)).messages;
    let chunks = |messages: &[Message]| -> Vec<u64> {
        messages
            .iter()
            .filter(|m| m.kind == MessageKind::Snapshot)
            .map(|m| m.snapshot.as_ref().unwrap().offset)
            .collect()
    };
    assert_eq!(chunks(&sent), vec![0]);
    // The same acknowledgement twice: one next chunk, not two.
    let mut ack = Message::new(MessageKind::SnapshotResponse, 3, 1, 2);
    ack.index = 10;
    net.node(1).step(ack.clone()).unwrap();
    net.node(1).step(ack).unwrap();
    assert_eq!(chunks(&handle_ready(net.node(1)).messages), vec![10]);
    // A heartbeat answer right after progress does not resend; a second one (stalled) does.
    net.node(1).step(answer.clone()).unwrap();
    assert_eq!(
        chunks(&handle_ready(net.node(1)).messages),
        Vec::<u64>::new()
    );
    net.node(1).step(answer).unwrap();
    assert_eq!(chunks(&handle_ready(net.node(1)).messages), vec![10]);
    // The follower lost its partial copy: it rejects and the transfer starts over.
    let mut restart = Message::new(MessageKind::SnapshotResponse, 3, 1, 2);
    restart.reject = true;
    net.node(1).step(restart).unwrap();
    assert_eq!(chunks(&handle_ready(net.node(1)).messages), vec![0]);
}

/// Raft paper §7 with the driver contract: a snapshot that completes while committed
/// entries are out with the driver (handed in a Ready, not yet applied) waits until
/// `advance`, so membership changes among those entries are applied against the
/// configuration they were written for, not the snapshot's later one.
#[test]
fn snapshot_waits_for_handed_out_entries_to_apply() {
    let mut n = node(2, &[1, 2, 3]);
    let mut append = Message::new(MessageKind::Append, 1, 2, 2);
    append.index = 1;
    append.log_term = 1;
    append.entries = vec![entry(2, 2, b"a"), entry(3, 2, b"b")];
    append.commit = 3;
    n.step(append).unwrap();
    let ready = n.ready();
    assert_eq!(
        ready.committed_entries.len(),
        2,
        "entries 2 and 3 handed out to apply"
    );
    n.storage_mut()
        .set_hard_state(ready.hard_state.unwrap())
        .unwrap();
    n.storage_mut().append(&ready.entries).unwrap();
    // Before the driver advances, a whole snapshot at index 10 arrives.
    let mut message = Message::new(MessageKind::Snapshot, 1, 2, 2);
    message.snapshot = Some(Box::new(crate::types::SnapshotChunk {
        metadata: crate::types::SnapshotMetadata {
            index: 10,
            term: 2,
            conf_state: ConfState::with_voters([1, 2, 3]),
        },
        offset: 0,
        total_bytes: 4,
        data: Bytes::from_static(b"snap"),
    }));
    n.step(message).unwrap();
    assert_eq!(
        n.status().commit,
        3,
        "not installed while entries are being applied"
    );
    n.advance();
    let ready = handle_ready(&mut n);
    assert_eq!(ready.snapshot.as_ref().map(|s| s.metadata.index), Some(10));
    let responses: Vec<_> = ready
        .persisted_messages
        .iter()
        .map(|m| (m.kind, m.index))
        .collect();
    assert_eq!(responses, vec![(MessageKind::AppendResponse, 10)]);
    assert_eq!(n.status().commit, 10);
}

/// Thesis §6.4 with §4.2.2: a leader that is no longer a voter (removed, handing
/// leadership off) serves no reads — another node may already lead — even when the new
/// configuration has a single voter, whose commit index is not ours to report.
#[test]
fn removed_leader_serves_no_reads() {
    let mut net = Network::new(&[1, 2], |_| {});
    net.elect(1);
    net.cut.insert((1, 2));
    net.cut.insert((2, 1));
    // Node 2 misses an entry, so the hand-off must first catch it up.
    net.node(1).propose(Bytes::from_static(b"x")).unwrap();
    net.settle();
    // Apply the removal of node 1 on node 1 directly: node 2 never hears of it.
    let storage_conf = net
        .node(1)
        .apply_conf_change(&ConfChange::remove(1))
        .unwrap();
    assert_eq!(storage_conf.voters, vec![2]);
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "handing off, not yet stepped down"
    );
    assert_eq!(
        net.node(1)
            .read_index(Bytes::from_static(b"r"))
            .unwrap_err(),
        ProposeError::NotLeader { leader_hint: None }
    );
    // A follower's forwarded read is refused too.
    let mut forwarded = Message::new(MessageKind::ReadIndex, 2, 1, 0);
    forwarded.context = Bytes::from_static(b"f");
    net.node(1).step(forwarded).unwrap();
    let ready = handle_ready(net.node(1));
    assert!(ready.read_states.is_empty());
    let refusals: Vec<_> = ready
        .persisted_messages
        .iter()
        .map(|m| (m.kind, m.reject))
        .collect();
    assert_eq!(refusals, vec![(MessageKind::ReadIndexResponse, true)]);
    // The hand-off cannot finish (cut off): after an election timeout it steps down.
    for _ in 0..ELECTION {
        net.node(1).tick();
        handle_ready(net.node(1));
    }
    assert_eq!(net.node(1).role(), Role::Follower);
}

/// Raft paper Figure 2: a reply always carries the current term, so a leader of an
/// older term learns it and steps down — also with pre-vote and check-quorum off.
#[test]
fn stale_leader_learns_term_from_any_reply() {
    let mut n = node(2, &[1, 2, 3]);
    n.step(Message::new(MessageKind::Heartbeat, 3, 2, 9))
        .unwrap();
    handle_ready(&mut n);
    let mut stale = Message::new(MessageKind::Append, 1, 2, 4);
    stale.index = 1;
    stale.log_term = 1;
    n.step(stale).unwrap();
    let reply = outbox(&mut n);
    assert_eq!(kinds(&reply), vec![(MessageKind::AppendResponse, 1, 9)]);
}
