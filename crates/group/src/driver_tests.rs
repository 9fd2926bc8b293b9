//! Unit tests of the driver. Each feeds inputs and asserts the whole output: messages
//! (with when they may leave), the write, what is handed to apply, and the answers.

use bytes::Bytes;
use concord_raft::{
    ConfState, Config, Entry, EntryKind, HardState, LogStore, MemStorage, Message, MessageKind,
    RawNode, Role, Snapshot, SnapshotChunk, SnapshotMetadata,
};
use concord_types::ApiError;

use super::*;
use crate::apply::{Answer, ApplyItem, Callers, EntryPayload};
use crate::framing::{encode_command, SnapshotHeader};

/// Callers named by numbers.
struct Tags;

impl Callers for Tags {
    type Proposal = u64;
    type Read = u64;
    type Admin = u64;
}

type Driver = GroupDriver<MemStorage, Tags>;
type Output = DriverOutput<Tags>;

const ELECTION: u32 = 10;

fn raw(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
    let config = Config {
        election_timeout_ticks: ELECTION,
        heartbeat_interval_ticks: 1,
        pre_vote: false,
        check_quorum: false,
        ..Config::new(id)
    };
    let storage = MemStorage::with_conf_state(ConfState::with_voters(voters.iter().copied()));
    RawNode::new(&config, storage).unwrap()
}

fn driver(id: u64, voters: &[u64]) -> Driver {
    let config = DriverConfig {
        read_timeout_ticks: 30,
        read_retry_ticks: 5,
        proposal_timeout_ticks: 20,
        ..DriverConfig::new(1, ELECTION)
    };
    GroupDriver::new(
        config,
        raw(id, voters),
        1,
        ConfState::with_voters(voters.iter().copied()),
        Addresses::new(),
    )
}

/// Writes `write` to the driver's memory storage, as the runtime's memory backend does.
fn persist(driver: &mut Driver, write: &DurableWrite) {
    let storage = driver.storage_mut();
    if let Some(snapshot) = &write.snapshot {
        storage.apply_snapshot(snapshot.clone()).unwrap();
    }
    storage.append(&write.entries).unwrap();
    if let Some(hard_state) = write.hard_state {
        storage.set_hard_state(hard_state).unwrap();
    }
}

/// One turn: take the Ready, and if it has a write, persist it and finish. Returns
/// the messages sent before the write, the write, and the output after finishing.
fn turn(driver: &mut Driver) -> (Vec<String>, Option<DurableWrite>, Output) {
    let mut out = Output::default();
    let write = driver.take_ready(&mut out);
    let before = out
        .messages
        .drain(..)
        .map(|m| describe_message(&m))
        .collect();
    if let Some(write) = &write {
        persist(driver, write);
        driver.finish_ready(&mut out);
    }
    (before, write, out)
}

fn describe_message(message: &Message) -> String {
    let mut text = format!(
        "{:?} {}->{} t{}",
        message.kind, message.from, message.to, message.term
    );
    if !message.entries.is_empty() {
        let first = message.entries[0].index;
        let last = message.entries.last().unwrap().index;
        text.push_str(&format!(" [{first}..={last}]"));
    }
    if message.reject {
        text.push_str(" reject");
    }
    text
}

fn describe_output(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = out.messages.iter().map(describe_message).collect();
    for item in &out.apply {
        lines.push(match item {
            ApplyItem::Entries(entries) => format!(
                "apply {}",
                entries
                    .iter()
                    .map(|entry| {
                        let what = match &entry.payload {
                            EntryPayload::Noop => "noop".to_string(),
                            EntryPayload::Command(command) => {
                                format!("cmd {}", String::from_utf8_lossy(command))
                            }
                            other => format!("{other:?}"),
                        };
                        match entry.proposer {
                            Some(tag) => {
                                format!("{}@{} {what} for #{tag}", entry.index, entry.term)
                            }
                            None => format!("{}@{} {what}", entry.index, entry.term),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ApplyItem::Notice(notice) => format!("notice {notice:?}"),
            ApplyItem::Restore(snapshot) => format!("restore {}", snapshot.metadata.index),
            ApplyItem::Reads { index, term, reads } => format!(
                "reads at {index} (term {term}) for {:?}",
                reads.iter().map(|read| read.caller).collect::<Vec<_>>()
            ),
        });
    }
    for answer in &out.answers {
        lines.push(match answer {
            Answer::Proposal(tag, result) => format!("answer proposal #{tag}: {result:?}"),
            Answer::Read(tag, result) => format!("answer read #{tag}: {result:?}"),
            Answer::Admin(tag, result) => format!("answer admin #{tag}: {result:?}"),
        });
    }
    lines
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

fn entry(index: u64, term: u64, data: Bytes) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data,
    }
}

/// A single voter elects itself. Its vote and no-op are one write; the no-op commits
/// once its own copy is durable, and its commit-only hard state is not written on its
/// own: the Ready that hands the no-op out has no write. The state machine hears
/// `Elected` right after the no-op, and never before.
#[test]
fn a_lone_voter_announces_its_term_after_its_no_op_applies() {
    let mut d = driver(1, &[1]);
    let mut out = Output::default();
    d.admin(AdminOp::Campaign, 7, &mut out);
    assert_eq!(describe_output(&out), vec!["answer admin #7: Ok(())"]);
    assert_eq!(d.raw().role(), Role::Leader);

    let (before, write, out) = turn(&mut d);
    assert!(before.is_empty());
    assert_eq!(
        write,
        Some(DurableWrite {
            hard_state: Some(hard_state(2, 1, 1)),
            entries: vec![entry(2, 2, Bytes::new())],
            snapshot: None,
            compact: None,
        })
    );
    assert!(describe_output(&out).is_empty());

    let (before, write, out) = turn(&mut d);
    assert!(before.is_empty());
    assert_eq!(
        write, None,
        "a commit-only hard state is not written on its own"
    );
    assert_eq!(
        describe_output(&out),
        vec!["apply 2@2 noop", "notice Elected { term: 2 }"]
    );

    // The lazily kept commit index rides with the next durable write.
    d.propose(encode_command(b"x"), 8);
    let (_, write, out) = turn(&mut d);
    assert_eq!(
        write,
        Some(DurableWrite {
            hard_state: Some(hard_state(2, 1, 2)),
            entries: vec![entry(3, 2, encode_command(b"x"))],
            snapshot: None,
            compact: None,
        })
    );
    assert!(describe_output(&out).is_empty());
    let (_, write, out) = turn(&mut d);
    assert_eq!(write, None);
    assert_eq!(describe_output(&out), vec!["apply 3@2 cmd x for #8"]);
}

/// Contract step 4: a follower's acknowledgement leaves only after the entries it
/// acknowledges are durable; nothing is handed out before the commit is known.
#[test]
fn a_follower_acknowledges_only_after_its_write() {
    let mut d = driver(2, &[1, 2, 3]);
    let mut append = Message::new(MessageKind::Append, 1, 2, 2);
    append.index = 1;
    append.log_term = 1;
    append.commit = 1;
    append.entries = vec![entry(2, 2, Bytes::new()), entry(3, 2, encode_command(b"a"))];
    d.step(append).unwrap();
    let mut out = Output::default();
    let write = d.take_ready(&mut out).expect("entries to write");
    assert_eq!(
        write,
        DurableWrite {
            hard_state: Some(hard_state(2, 0, 1)),
            entries: vec![entry(2, 2, Bytes::new()), entry(3, 2, encode_command(b"a"))],
            snapshot: None,
            compact: None,
        }
    );
    assert!(
        out.messages.is_empty(),
        "the acknowledgement must wait for the write"
    );
    assert_eq!(out.soft_state, Some((Role::Follower, 1)));
    persist(&mut d, &write);
    d.finish_ready(&mut out);
    assert_eq!(describe_output(&out), vec!["AppendResponse 2->1 t2"]);
}

/// With the planted bug the acknowledgement leaves with the Ready, before the write:
/// the simulator's sweep must catch this (crates/sim tests).
#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_bug_sends_the_acknowledgement_early() {
    let mut d = driver(2, &[1, 2, 3]);
    d.config.planted_bug = Some(DriverBug::SendPersistedEarly);
    let mut append = Message::new(MessageKind::Append, 1, 2, 2);
    append.index = 1;
    append.log_term = 1;
    append.entries = vec![entry(2, 2, Bytes::new())];
    d.step(append).unwrap();
    let (before, write, _) = turn(&mut d);
    assert!(write.is_some());
    assert_eq!(before, vec!["AppendResponse 2->1 t2"]);
}

/// A proposal on a follower is refused at once with the leader's address; queued
/// proposals are proposed as one batch; a proposal not handed out in time times out.
#[test]
fn proposals_are_batched_refused_or_timed_out() {
    let mut follower = driver(2, &[1, 2, 3]);
    follower.addresses.insert(1, "10.0.0.1:7001".into());
    let mut heartbeat = Message::new(MessageKind::Heartbeat, 1, 2, 2);
    heartbeat.commit = 1;
    follower.step(heartbeat).unwrap();
    follower.propose(encode_command(b"a"), 1);
    let (_, _, out) = turn(&mut follower);
    assert_eq!(
        describe_output(&out)
            .into_iter()
            .filter(|line| line.starts_with("answer"))
            .collect::<Vec<_>>(),
        vec![
            "answer proposal #1: Err(NotLeader { leader: Some(1), address: Some(\"10.0.0.1:7001\") })"
        ]
    );

    let mut leader = driver(1, &[1, 2, 3]);
    leader.raw.campaign();
    for from in [2, 3] {
        let _ = turn(&mut leader);
        leader
            .step(Message::new(MessageKind::RequestVoteResponse, from, 1, 2))
            .unwrap();
    }
    assert_eq!(leader.raw().role(), Role::Leader);
    let _ = turn(&mut leader);
    // The followers acknowledge the no-op: they leave probing and take a pipeline.
    for from in [2, 3] {
        let mut ack = Message::new(MessageKind::AppendResponse, from, 1, 2);
        ack.index = 2;
        leader.step(ack).unwrap();
    }
    let _ = turn(&mut leader);
    leader.propose(encode_command(b"a"), 10);
    leader.propose(encode_command(b"b"), 11);
    let (before, write, _) = turn(&mut leader);
    let write = write.unwrap();
    assert_eq!(
        write.entries,
        vec![
            entry(3, 2, encode_command(b"a")),
            entry(4, 2, encode_command(b"b"))
        ]
    );
    assert_eq!(
        before,
        vec!["Append 1->2 t2 [3..=4]", "Append 1->3 t2 [3..=4]"],
        "appends go out before the leader's own write"
    );
    let mut out = Output::default();
    for _ in 0..19 {
        leader.tick(&mut out);
    }
    assert!(out.answers.is_empty());
    leader.tick(&mut out);
    assert_eq!(
        describe_output(&out)
            .into_iter()
            .filter(|line| line.starts_with("answer"))
            .collect::<Vec<_>>(),
        vec![
            "answer proposal #10: Err(Timeout)",
            "answer proposal #11: Err(Timeout)"
        ]
    );
}

/// Thesis §6.4: a lone voter confirms a read at once; the read is handed to apply at
/// the commit index with the term. A read on a node with no leader waits, and times
/// out after `read_timeout_ticks`.
#[test]
fn reads_are_confirmed_then_handed_out_or_time_out() {
    let mut d = driver(1, &[1]);
    d.raw.campaign();
    let _ = turn(&mut d);
    let _ = turn(&mut d);
    d.read(Bytes::from_static(b"q"), 5);
    let (_, _, out) = turn(&mut d);
    assert_eq!(describe_output(&out), vec!["reads at 2 (term 2) for [5]"]);

    let mut lost = driver(2, &[1, 2, 3]);
    lost.read(Bytes::from_static(b"q"), 6);
    let (_, _, out) = turn(&mut lost);
    assert!(
        describe_output(&out).is_empty(),
        "no leader known: the read waits"
    );
    let mut out = Output::default();
    for _ in 0..29 {
        lost.tick(&mut out);
    }
    assert!(out.answers.is_empty());
    lost.tick(&mut out);
    assert_eq!(
        describe_output(&out)
            .into_iter()
            .filter(|line| line.starts_with("answer"))
            .collect::<Vec<_>>(),
        vec!["answer read #6: Err(Timeout)"]
    );
}

/// A leader deposed by a higher term hears `SteppedDown` for the term it led, after
/// what the same Ready hands out; its proposals in the log are dropped when another
/// entry takes their index.
#[test]
fn a_deposed_leader_hears_it_stepped_down_and_loses_its_proposals() {
    let mut d = driver(1, &[1]);
    d.raw.campaign();
    let _ = turn(&mut d);
    let _ = turn(&mut d);
    // Membership grows to three so the leader needs others to commit.
    d.raw
        .propose_conf_change(&concord_raft::ConfChange::add_voter(2))
        .unwrap();
    let _ = turn(&mut d);
    let (_, _, out) = turn(&mut d);
    assert_eq!(
        describe_output(&out),
        vec![
            "apply 3@2 Membership(ConfState { voters: [1, 2], learners: [], voters_outgoing: [], learners_next: [], auto_leave: false })"
        ]
    );
    d.propose(encode_command(b"lost"), 3);
    let _ = turn(&mut d);
    // Node 2 leads term 5 and overwrites index 4.
    let mut append = Message::new(MessageKind::Append, 2, 1, 5);
    append.index = 3;
    append.log_term = 2;
    append.commit = 4;
    append.entries = vec![entry(4, 5, Bytes::new())];
    d.step(append).unwrap();
    let (_, write, out) = turn(&mut d);
    assert!(write.is_some());
    assert_eq!(out.soft_state, Some((Role::Follower, 2)));
    assert_eq!(
        describe_output(&out),
        vec![
            "AppendResponse 1->2 t5",
            "apply 4@5 noop",
            "notice SteppedDown { term: 2 }",
            "answer proposal #3: Err(ProposalDropped)"
        ]
    );
}

/// Raft paper §7: a snapshot from the leader is written, then handed out to restore;
/// a proposal the snapshot replaced has an unknown outcome; the driver learns the
/// snapshot's addresses and membership.
#[test]
fn an_installed_snapshot_replaces_the_log_and_its_waiters() {
    let mut d = driver(2, &[1, 2]);
    let header = SnapshotHeader {
        addresses: Addresses::from([(1, "a:1".to_string()), (2, "b:2".to_string())]),
        has_state: true,
        ..SnapshotHeader::default()
    };
    let mut data = header.encode().to_vec();
    data.extend_from_slice(b"state");
    let snapshot = Snapshot {
        metadata: SnapshotMetadata {
            index: 9,
            term: 3,
            conf_state: ConfState::with_voters([1, 2]),
        },
        data: Bytes::from(data),
    };
    // A waiter for index 5 that the snapshot will replace.
    d.waiters.push_back(Waiter {
        index: 5,
        term: 2,
        proposer: 4,
        proposed_tick: 0,
    });
    let mut message = Message::new(MessageKind::Snapshot, 1, 2, 3);
    message.snapshot = Some(Box::new(SnapshotChunk {
        metadata: snapshot.metadata.clone(),
        offset: 0,
        total_bytes: snapshot.data.len() as u64,
        data: snapshot.data.clone(),
    }));
    d.step(message).unwrap();
    let (_, write, out) = turn(&mut d);
    let write = write.unwrap();
    assert_eq!(write.snapshot, Some(snapshot));
    assert_eq!(
        describe_output(&out),
        vec![
            "AppendResponse 2->1 t3",
            "restore 9",
            "answer proposal #4: Err(OutcomeUnknown(\"a snapshot from the leader replaced this node's log\"))"
        ]
    );
    assert_eq!(
        out.learned_addresses,
        vec![(1, "a:1".to_string()), (2, "b:2".to_string())]
    );
    assert_eq!(d.handed_index(), 9);
}

/// The driver refuses to take a Ready while the previous one is unfinished.
#[test]
#[should_panic(expected = "before the previous one was finished")]
fn a_ready_cannot_be_taken_twice() {
    let mut d = driver(1, &[1]);
    d.raw.campaign();
    let mut out = Output::default();
    assert!(d.take_ready(&mut out).is_some());
    d.take_ready(&mut out);
}

/// Queued and waiting callers are all answered when the group goes away: queued work
/// was never proposed, proposals in the log have an unknown outcome.
#[test]
fn fail_all_answers_everyone() {
    let mut d = driver(1, &[1]);
    d.raw.campaign();
    let _ = turn(&mut d);
    let _ = turn(&mut d);
    d.propose(encode_command(b"a"), 1);
    let _ = turn(&mut d);
    d.propose(encode_command(b"b"), 2);
    d.read(Bytes::new(), 3);
    let mut out = Output::default();
    d.fail_all("node shutting down", &mut out);
    assert_eq!(
        describe_output(&out),
        vec![
            "answer proposal #2: Err(Unavailable(\"node shutting down\"))",
            "answer proposal #1: Err(OutcomeUnknown(\"node shutting down\"))",
            "answer read #3: Err(Unavailable(\"node shutting down\"))"
        ]
    );
    let _: ApiError = ApiError::Timeout;
}

/// A follower's read travels to the leader with a context, and the leader's answer
/// may arrive late. A node that restarted meanwhile must not take that answer, made
/// for a read of its previous life, for the answer to a read of this one: it would
/// serve the new read at the old, lower index (a stale read; simulator seed
/// 73985147402 with `--storage mem`). Drivers made as the runtime makes them
/// (`DriverConfig::new`) number their reads from a random start.
#[test]
fn a_late_answer_to_a_read_of_a_previous_life_is_not_taken() {
    let heard_leader = |d: &mut Driver| {
        let mut heartbeat = Message::new(MessageKind::Heartbeat, 1, 2, 2);
        heartbeat.commit = 1;
        d.step(heartbeat).unwrap();
        let _ = turn(d);
    };
    let asked = |d: &mut Driver, caller: u64| -> Message {
        d.read(Bytes::from_static(b"q"), caller);
        let mut out = Output::default();
        let write = d.take_ready(&mut out);
        assert!(write.is_none());
        let request = out
            .messages
            .into_iter()
            .find(|m| m.kind == MessageKind::ReadIndex)
            .expect("the read goes to the leader");
        assert_eq!(request.to, 1);
        request
    };
    let mut before = driver(2, &[1, 2]);
    heard_leader(&mut before);
    let old_request = asked(&mut before, 7);

    // The node restarts: a new driver over the same storage.
    let storage = before.storage_mut().clone();
    let config = DriverConfig {
        read_timeout_ticks: 30,
        read_retry_ticks: 5,
        proposal_timeout_ticks: 20,
        ..DriverConfig::new(1, ELECTION)
    };
    let raw = RawNode::new(
        &Config {
            election_timeout_ticks: ELECTION,
            heartbeat_interval_ticks: 1,
            pre_vote: false,
            check_quorum: false,
            ..Config::new(2)
        },
        storage,
    )
    .unwrap();
    let mut after = GroupDriver::new(
        config,
        raw,
        1,
        ConfState::with_voters([1, 2]),
        Addresses::new(),
    );
    heard_leader(&mut after);
    let new_request = asked(&mut after, 8);

    // The leader's answer to the old read arrives, at the old commit index.
    let mut late = Message::new(MessageKind::ReadIndexResponse, 1, 2, 2);
    late.index = 1;
    late.context = old_request.context;
    after.step(late).unwrap();
    let (_, _, out) = turn(&mut after);
    assert!(
        describe_output(&out)
            .iter()
            .all(|line| !line.starts_with("reads")),
        "a late answer served a read of this life: {:?}",
        describe_output(&out)
    );
    // Its own answer serves it.
    let mut answer = Message::new(MessageKind::ReadIndexResponse, 1, 2, 2);
    answer.index = 1;
    answer.context = new_request.context;
    after.step(answer).unwrap();
    let (_, _, out) = turn(&mut after);
    assert_eq!(describe_output(&out), vec!["reads at 1 (term 2) for [8]"]);
}

/// A leader that loses its term and wins a later one between two Readys (the role
/// and leader it reports look unchanged) hears `SteppedDown` for the term it led,
/// then `Elected` for the new one once that term's no-op applies.
#[test]
fn a_leader_elected_again_between_readys_hears_both_notices() {
    let mut d = driver(1, &[1]);
    let mut out = Output::default();
    d.admin(AdminOp::Campaign, 7, &mut out);
    let _ = turn(&mut d);
    let (_, _, out) = turn(&mut d);
    assert_eq!(
        describe_output(&out),
        vec!["apply 2@2 noop", "notice Elected { term: 2 }"]
    );
    // A message of term 5 deposes it; it campaigns and wins term 6 at once.
    d.step(Message::new(MessageKind::Heartbeat, 2, 1, 5))
        .unwrap();
    d.raw.campaign();
    assert_eq!((d.raw().role(), d.raw().term()), (Role::Leader, 6));
    let mut notices = Vec::new();
    for _ in 0..3 {
        let (_, _, out) = turn(&mut d);
        notices.extend(
            describe_output(&out)
                .into_iter()
                .filter(|line| line.starts_with("notice") || line.contains("noop")),
        );
    }
    assert_eq!(
        notices,
        vec![
            "notice SteppedDown { term: 2 }",
            "apply 3@6 noop",
            "notice Elected { term: 6 }"
        ]
    );
}
