//! Unit tests of the applier: each hands it items and asserts everything it answered,
//! emitted and asked to propose.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{ConfState, Snapshot, SnapshotMetadata};
use concord_types::{ApiError, RequestId};

use super::*;
use crate::exactly_once::ClientTableLimits;
use crate::framing::GroupSpec;
use crate::state_machine::{ExactlyOnce, LeaderNotice, StateMachineError};

struct Tags;

impl Callers for Tags {
    type Proposal = u64;
    type Read = u64;
    type Admin = u64;
}

/// A counter: each command adds its bytes' count; emits the new value; refuses a
/// snapshot that says "bad"; fails applying "die".
#[derive(Default)]
struct Counter {
    total: u64,
}

impl StateMachine for Counter {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        if &command[..] == b"die" {
            return Err(StateMachineError("disk gone".into()));
        }
        self.total += command.len() as u64;
        context.emit(Bytes::from(format!("total {}", self.total)));
        Ok(Bytes::from(self.total.to_string()))
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.total.to_string()))
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        Ok(sink.write_all(self.total.to_string().as_bytes())?)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut text = String::new();
        source.read_to_string(&mut text)?;
        self.total = text
            .parse()
            .map_err(|_| StateMachineError(format!("not a count: {text:?}")))?;
        Ok(())
    }

    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        match notice {
            LeaderNotice::Elected { term } => vec![Bytes::from(format!("hello {term}"))],
            LeaderNotice::SteppedDown { .. } => Vec::new(),
        }
    }
}

fn factory() -> Arc<dyn StateMachineFactory> {
    Arc::new(|_group| ExactlyOnce::new(Counter::default(), ClientTableLimits::default()))
}

fn applier(policy: SnapshotPolicy) -> Applier<Tags> {
    Applier::new(ApplierStart {
        group: 7,
        spec: GroupSpec::new("counter"),
        state_machine: factory().create(7, &GroupSpec::new("counter")).unwrap(),
        applied: 1,
        applied_term: 1,
        conf_state: ConfState::with_voters([1]),
        addresses: Addresses::new(),
        policy,
        factory: factory(),
    })
}

fn never() -> SnapshotPolicy {
    SnapshotPolicy {
        interval_entries: 0,
        interval_bytes: 0,
    }
}

fn entry(index: u64, payload: EntryPayload, proposer: Option<u64>) -> CommittedEntry<Tags> {
    CommittedEntry {
        index,
        term: 2,
        payload,
        data: Bytes::from_static(b"abcd"),
        proposer,
    }
}

fn describe(out: &ApplyOutput<Tags>) -> Vec<String> {
    let mut lines = Vec::new();
    for answer in &out.answers {
        lines.push(match answer {
            Answer::Proposal(tag, Ok(response)) => format!(
                "#{tag}: {} at {}",
                String::from_utf8_lossy(&response.response),
                response.index
            ),
            Answer::Read(tag, Ok(response)) => format!(
                "#{tag}: read {} at {} term {}",
                String::from_utf8_lossy(&response.response),
                response.index,
                response.term
            ),
            other => format!("{other:?}"),
        });
    }
    for event in &out.events {
        lines.push(match event {
            GroupEvent::Applied { index, event, .. } => {
                format!("event {index}: {}", String::from_utf8_lossy(event))
            }
            GroupEvent::Restored { index } => format!("restored at {index}"),
        });
    }
    for proposal in &out.proposals {
        lines.push(format!("propose {}", String::from_utf8_lossy(proposal)));
    }
    lines
}

/// Raft thesis §6.3 through the applier: a client registers (its id is the entry's
/// index), its request applies once, and a copy of it committed later is answered
/// from the table without applying again; a request of an unknown client is refused.
#[test]
fn a_repeated_request_is_answered_without_applying_again() {
    let mut a = applier(never());
    let request = RequestId {
        client: 2,
        sequence: 1,
        first_unanswered: 1,
    };
    let stranger = RequestId {
        client: 99,
        sequence: 1,
        first_unanswered: 1,
    };
    let command = || EntryPayload::Request {
        id: request,
        command: Bytes::from_static(b"abc"),
    };
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Entries(vec![
            entry(2, EntryPayload::Register, Some(1)),
            entry(3, command(), Some(2)),
            entry(4, command(), Some(3)),
            entry(
                5,
                EntryPayload::Request {
                    id: stranger,
                    command: Bytes::from_static(b"zz"),
                },
                Some(4),
            ),
        ]),
        &mut out,
    );
    let registered = match &out.answers[0] {
        Answer::Proposal(1, Ok(response)) => response.response.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(&registered[..], &2u64.to_be_bytes());
    assert_eq!(
        describe(&out)[1..].to_vec(),
        vec![
            "#2: 3 at 3",
            "#3: 3 at 4",
            "Proposal(Err(ClientUnknown { client: 99 }))",
            "event 3: total 3",
        ]
    );
    assert_eq!(a.applied(), 5);
}

/// A leadership notice reaches the state machine in order, and what it asks to
/// propose comes out; a linearizable read waits for its index, then answers with the
/// index and term; a stale read answers at once.
#[test]
fn notices_reach_the_state_machine_and_reads_wait_for_their_index() {
    let mut a = applier(never());
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Reads {
            index: 3,
            term: 2,
            reads: vec![PendingRead {
                query: Bytes::new(),
                caller: 9,
            }],
        },
        &mut out,
    );
    a.handle(
        ApplyItem::Reads {
            index: 0,
            term: 0,
            reads: vec![PendingRead {
                query: Bytes::new(),
                caller: 10,
            }],
        },
        &mut out,
    );
    assert_eq!(describe(&out), vec!["#10: read 0 at 1 term 1"]);
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Entries(vec![entry(2, EntryPayload::Noop, None)]),
        &mut out,
    );
    a.handle(
        ApplyItem::Notice(LeaderNotice::Elected { term: 2 }),
        &mut out,
    );
    a.handle(
        ApplyItem::Entries(vec![entry(
            3,
            EntryPayload::Command(Bytes::from_static(b"xy")),
            None,
        )]),
        &mut out,
    );
    assert_eq!(
        describe(&out),
        vec![
            "#9: read 2 at 3 term 2",
            "event 3: total 2",
            "propose hello 2"
        ]
    );
}

/// A failing state machine stops the group visibly: waiting reads hear
/// `GroupStopped`; the proposers of the failed entry and of later committed ones hear
/// the outcome is unknown (other replicas apply them); nothing more applies.
#[test]
fn an_apply_failure_stops_the_group() {
    let mut a = applier(never());
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Reads {
            index: 5,
            term: 2,
            reads: vec![PendingRead {
                query: Bytes::new(),
                caller: 1,
            }],
        },
        &mut out,
    );
    a.handle(
        ApplyItem::Entries(vec![
            entry(
                2,
                EntryPayload::Command(Bytes::from_static(b"die")),
                Some(2),
            ),
            entry(3, EntryPayload::Command(Bytes::from_static(b"x")), Some(3)),
        ]),
        &mut out,
    );
    let stopped = "GroupStopped { group: 7, reason: \"applying entry 2: disk gone\" }";
    let unknown = |index| {
        format!(
            "Proposal(Err(OutcomeUnknown(\"entry {index} is committed, but group 7's state \
             machine stopped on this node (applying entry 2: disk gone); other replicas \
             apply it\")))"
        )
    };
    assert_eq!(
        describe(&out),
        vec![format!("Read(Err({stopped}))"), unknown(2), unknown(3)]
    );
    assert_eq!(a.stopped(), Some("applying entry 2: disk gone"));
    assert_eq!(a.applied(), 1);
    assert!(!a.snapshot_due());
}

/// Snapshots: due by count or by bytes; written with the header and read back by a
/// restore on another applier (table included); a snapshot the state machine refuses
/// stops the group; an unreadable entry does too.
#[test]
fn snapshots_round_trip_and_bad_ones_stop_the_group() {
    let mut a = applier(SnapshotPolicy {
        interval_entries: 0,
        interval_bytes: 8,
    });
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Entries(vec![
            entry(2, EntryPayload::Register, None),
            entry(3, EntryPayload::Command(Bytes::from_static(b"abcd")), None),
        ]),
        &mut out,
    );
    assert!(a.snapshot_due(), "8 bytes applied");
    let mut data = Vec::new();
    let taken = a
        .write_snapshot(&mut data, &mut ApplyOutput::default())
        .unwrap();
    assert_eq!(taken.index, 3);
    assert_eq!(taken.bytes, data.len() as u64);
    assert!(!a.snapshot_due());

    let mut b = applier(never());
    let snapshot = |data: Vec<u8>| Snapshot {
        metadata: SnapshotMetadata {
            index: 3,
            term: 2,
            conf_state: ConfState::with_voters([1, 2]),
        },
        data: Bytes::from(data),
    };
    let mut out = ApplyOutput::default();
    b.handle(ApplyItem::Restore(snapshot(data.clone())), &mut out);
    assert_eq!(describe(&out), vec!["restored at 3"]);
    assert_eq!(b.applied(), 3);
    assert_eq!(b.spec().kind, "counter");
    assert_eq!(b.conf_state(), &ConfState::with_voters([1, 2]));
    // The restored table knows client 2.
    let mut out = ApplyOutput::default();
    b.handle(
        ApplyItem::Entries(vec![entry(
            4,
            EntryPayload::Request {
                id: RequestId {
                    client: 2,
                    sequence: 1,
                    first_unanswered: 1,
                },
                command: Bytes::from_static(b"z"),
            },
            Some(5),
        )]),
        &mut out,
    );
    assert_eq!(describe(&out), vec!["#5: 5 at 4", "event 4: total 5"]);

    let mut c = applier(never());
    let mut bad = data.clone();
    let keep = bad.len() - 1;
    bad.truncate(keep);
    bad.extend_from_slice(b"?");
    let mut out = ApplyOutput::default();
    c.handle(ApplyItem::Restore(snapshot(bad)), &mut out);
    assert!(c
        .stopped()
        .unwrap()
        .starts_with("restoring the snapshot at 3"));

    let mut d = applier(never());
    let mut out = ApplyOutput::default();
    d.handle(
        ApplyItem::Entries(vec![entry(
            2,
            EntryPayload::Unreadable("unknown entry tag 9".into()),
            None,
        )]),
        &mut out,
    );
    assert_eq!(d.stopped(), Some("entry 2 (term 2): unknown entry tag 9"));
    let _ = ApiError::Timeout;
}

/// A counter that may report a durable index (what a state machine keeping its own
/// state on disk would hold after a restart) and may journal its drop.
struct ProbeCounter {
    counter: Counter,
    durable: Option<Index>,
    journal: Option<Arc<std::sync::Mutex<Vec<&'static str>>>>,
}

impl Drop for ProbeCounter {
    fn drop(&mut self) {
        if let Some(Ok(mut journal)) = self.journal.as_ref().map(|journal| journal.lock()) {
            journal.push("dropped");
        }
    }
}

impl StateMachine for ProbeCounter {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        self.counter.apply(context, command)
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        self.counter.query(query)
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        self.counter.snapshot(sink)
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        self.counter.restore(source)
    }

    fn durable_index(&self) -> Option<Index> {
        self.durable
    }
}

// A durable state machine restarted ahead of the group's snapshot (it holds up to
// 4, the group restarts at 2) is not handed entries 3 and 4 again, though the
// applier follows them (membership, index); entry 5 is applied. No snapshot is
// written until the applier has caught up with what the state machine holds.
#[test]
fn a_durable_state_machine_is_not_handed_what_it_holds() {
    let mut applier: Applier<Tags> = Applier::new(ApplierStart {
        group: 7,
        spec: GroupSpec::new("counter"),
        state_machine: Box::new(ProbeCounter {
            counter: Counter { total: 10 },
            durable: Some(4),
            journal: None,
        }),
        applied: 2,
        applied_term: 2,
        conf_state: ConfState::with_voters([1]),
        addresses: Addresses::new(),
        policy: SnapshotPolicy {
            interval_entries: 1,
            interval_bytes: 0,
        },
        factory: factory(),
    });
    let mut out = ApplyOutput::default();
    applier.handle(
        ApplyItem::Entries(vec![entry(
            3,
            EntryPayload::Command(Bytes::from_static(b"aa")),
            None,
        )]),
        &mut out,
    );
    // Its state is that of entry 4: no snapshot may call it the state at 3.
    assert!(!applier.snapshot_due());
    let refused = applier
        .write_snapshot(&mut Vec::new(), &mut out)
        .unwrap_err();
    assert!(
        refused.to_string().contains("holds entries up to 4"),
        "{refused}"
    );
    applier.handle(
        ApplyItem::Entries(vec![
            entry(
                4,
                EntryPayload::Membership(ConfState::with_voters([1, 2])),
                None,
            ),
            entry(
                5,
                EntryPayload::Command(Bytes::from_static(b"bbb")),
                Some(9),
            ),
        ]),
        &mut out,
    );
    assert_eq!(describe(&out), ["#9: 13 at 5", "event 5: total 13"]);
    assert_eq!(applier.applied(), 5);
    assert_eq!(applier.conf_state(), &ConfState::with_voters([1, 2]));
    assert!(applier.snapshot_due());
    let taken = applier
        .write_snapshot(&mut Vec::new(), &mut ApplyOutput::default())
        .unwrap();
    assert_eq!(taken.index, 5);
}

// Replaying the log into a durable state machine applies commands, requests and
// registrations as the applier would, and skips membership changes and no-ops.
#[test]
fn replaying_the_log_applies_what_the_applier_would() {
    use concord_raft::{ConfChange, Entry, EntryKind};
    let mut state_machine = factory().create(7, &GroupSpec::new("counter")).unwrap();
    let normal = |index, data: Bytes| Entry {
        index,
        term: 3,
        kind: EntryKind::Normal,
        data,
    };
    let entries = vec![
        normal(5, Bytes::new()),
        normal(6, framing::encode_command(b"aa")),
        normal(7, framing::encode_register()),
        Entry {
            index: 8,
            term: 3,
            kind: EntryKind::ConfChange,
            data: ConfChange::add_voter(2).encode(),
        },
        normal(
            9,
            framing::encode_request(
                RequestId {
                    client: 7,
                    sequence: 1,
                    first_unanswered: 1,
                },
                b"bbb",
            ),
        ),
    ];
    replay_log(state_machine.as_mut(), 7, &entries).unwrap();
    assert_eq!(state_machine.query(Bytes::new()).unwrap(), "5");
    // The registration at 7 made client 7, whose request 1 is answered now.
    let table = state_machine.client_table().unwrap();
    assert!(matches!(
        table.admit(
            &RequestId {
                client: 7,
                sequence: 1,
                first_unanswered: 1
            },
            10
        ),
        Admission::Answered(response) if response == "5"
    ));
    // An entry it cannot read stops the replay with the reason.
    let error = replay_log(
        state_machine.as_mut(),
        7,
        &[normal(11, Bytes::from_static(&[0xff, 1, 2]))],
    )
    .unwrap_err();
    assert!(error.contains("entry 11"), "{error}");
}

// A group whose state machine keeps no exactly-once table refuses registrations and
// requests that carry a client id (nothing could stop a retry applying twice), and
// applies plain commands.
#[test]
fn without_a_table_requests_with_a_client_id_are_refused() {
    let plain: Arc<dyn StateMachineFactory> = Arc::new(|_group| Counter::default());
    let mut a: Applier<Tags> = Applier::new(ApplierStart {
        group: 7,
        spec: GroupSpec::new("counter"),
        state_machine: plain.create(7, &GroupSpec::new("counter")).unwrap(),
        applied: 1,
        applied_term: 1,
        conf_state: ConfState::with_voters([1]),
        addresses: Addresses::new(),
        policy: never(),
        factory: plain,
    });
    let request = EntryPayload::Request {
        id: RequestId {
            client: 2,
            sequence: 1,
            first_unanswered: 1,
        },
        command: Bytes::from_static(b"abc"),
    };
    let mut out = ApplyOutput::default();
    a.handle(
        ApplyItem::Entries(vec![
            entry(2, EntryPayload::Register, Some(1)),
            entry(3, request, Some(2)),
            entry(4, EntryPayload::Command(Bytes::from_static(b"x")), Some(3)),
        ]),
        &mut out,
    );
    let lines = describe(&out);
    assert!(
        lines[0].contains("keeps no exactly-once table"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("cannot be applied exactly once"),
        "{lines:?}"
    );
    assert_eq!(lines[2..], ["#3: 1 at 4", "event 4: total 1"]);
    assert_eq!(a.applied(), 4);
}

// A snapshot install drops the old state machine before the factory makes the new
// one (a durable one may hold files or locks its successor opens).
#[test]
fn a_snapshot_install_drops_the_old_state_machine_first() {
    let journal = Arc::new(std::sync::Mutex::new(Vec::new()));
    let made = journal.clone();
    let factory: Arc<dyn StateMachineFactory> = Arc::new(move |_group| {
        made.lock().unwrap().push("made");
        ProbeCounter {
            counter: Counter::default(),
            durable: None,
            journal: Some(made.clone()),
        }
    });
    let mut a: Applier<Tags> = Applier::new(ApplierStart {
        group: 7,
        spec: GroupSpec::new("counter"),
        state_machine: factory.create(7, &GroupSpec::new("counter")).unwrap(),
        applied: 1,
        applied_term: 1,
        conf_state: ConfState::with_voters([1]),
        addresses: Addresses::new(),
        policy: never(),
        factory,
    });
    // A snapshot of a count of 3, as the journaled counter writes it.
    let mut data = Vec::new();
    let header = SnapshotHeader {
        spec: GroupSpec::new("counter"),
        addresses: Addresses::new(),
        has_state: true,
    }
    .encode();
    data.extend_from_slice(&header);
    data.extend_from_slice(b"3");
    let snapshot = Snapshot {
        metadata: SnapshotMetadata {
            index: 5,
            term: 2,
            conf_state: ConfState::with_voters([1]),
        },
        data: Bytes::from(data),
    };
    let mut out = ApplyOutput::default();
    a.handle(ApplyItem::Restore(snapshot), &mut out);
    assert_eq!(describe(&out), vec!["restored at 5"]);
    assert_eq!(a.state_machine().query(Bytes::new()).unwrap(), "3");
    let seen = journal.lock().unwrap().clone();
    assert_eq!(seen, ["made", "dropped", "made"]);
}
