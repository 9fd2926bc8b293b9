//! Inspection of a data directory: what an operator's tool shows.

use bytes::Bytes;
use concord_raft::{ConfChange, ConfState, Entry, EntryKind, HardState, LogStore};
use concord_storage::{inspect, inspect_with, InspectOptions, Log, LogConfig, StdFs};

use crate::support::TempDir;

// The report lists each group's hard state, membership, bounds, snapshot and entries,
// decoding conf changes and previewing payloads, as a table and as JSON.
#[test]
fn inspect_shows_groups_entries_and_summaries() {
    let dir = TempDir::new("inspect");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut group = log
        .bootstrap_group(1, ConfState::with_voters([1, 2, 3]))
        .unwrap();
    group
        .append(&[
            Entry {
                term: 2,
                index: 2,
                kind: EntryKind::Normal,
                data: Bytes::new(),
            },
            Entry {
                term: 2,
                index: 3,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"put /config/a 1"),
            },
            Entry {
                term: 2,
                index: 4,
                kind: EntryKind::ConfChange,
                data: ConfChange::add_voter(4).encode(),
            },
            Entry {
                term: 2,
                index: 5,
                kind: EntryKind::Normal,
                data: Bytes::from_static(&[0, 1, 2, 250]),
            },
        ])
        .unwrap();
    group
        .set_hard_state(HardState {
            term: 2,
            vote: 1,
            commit: 4,
        })
        .unwrap();
    log.group(7)
        .append(&crate::support::entries(1, &[1], 5))
        .unwrap();
    drop(group);
    drop(log);

    let report = inspect(dir.path()).unwrap();
    assert_eq!(report.groups.len(), 2);
    let first = &report.groups[0];
    assert_eq!(
        (first.group, first.first_index, first.last_index),
        (1, 2, 5)
    );
    assert_eq!(
        (
            first.hard_state.term,
            first.hard_state.vote,
            first.hard_state.commit
        ),
        (2, 1, 4)
    );
    assert_eq!(first.conf_state.voters, vec![1, 2, 3]);
    let snapshot = first.snapshot.as_ref().unwrap();
    assert_eq!(
        (snapshot.index, snapshot.term, snapshot.data_bytes),
        (1, 1, 0)
    );
    let summaries: Vec<(&str, &str)> = first
        .entries
        .iter()
        .map(|entry| (entry.kind.as_str(), entry.summary.as_str()))
        .collect();
    assert_eq!(
        summaries,
        vec![
            ("normal", "(empty: leader no-op)"),
            ("normal", "\"put /config/a 1\""),
            ("conf-change", "add voter 4"),
            ("normal", "0x000102fa"),
        ]
    );
    let table = report.to_string();
    for expected in [
        "group 1",
        "hard state   term 2, vote 1, commit 4",
        "voters [1, 2, 3]",
        "first index 2, last index 5",
        "add voter 4",
        "group 7",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in\n{table}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["groups"][0]["entries"][2]["summary"], "add voter 4");
    assert_eq!(json["groups"][1]["group"], 7);

    let limited = inspect_with(
        &StdFs,
        dir.path(),
        &InspectOptions {
            entries_per_group_max: Some(1),
        },
    )
    .unwrap();
    assert_eq!(limited.groups[0].entries.len(), 1);
    assert_eq!(limited.groups[0].entries_omitted, 3);
}
