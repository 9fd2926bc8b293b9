//! `concord inspect`.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_raft::{ConfChange, ConfState, Entry, EntryKind, HardState, LogStore};
use concord_storage::{Log, LogConfig};

use crate::support::{concord, concord_command, TempDir};

/// Opens the log in `dir`, waiting out a lock held by someone else's descriptor:
/// another test of this binary that spawns a process at the moment this one held the
/// lock gives the child a copy of the lock's descriptor until the child execs.
fn open_log(dir: &Path) -> Log {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Log::open(dir, LogConfig::default()) {
            Ok(log) => return log,
            Err(concord_storage::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("opening the log in {}: {error}", dir.display()),
        }
    }
}

fn entry(index: u64, term: u64, kind: EntryKind, data: Bytes) -> Entry {
    Entry {
        term,
        index,
        kind,
        data,
    }
}

/// A stopped node's data directory: group 1 bootstrapped with voters 1-3, entries 2-6
/// (a no-op, writes, adding voter 4), a snapshot at 4 and compaction up to 3; group 7
/// with entries 1-3 and no snapshot.
fn node_data_dir() -> TempDir {
    let dir = TempDir::new("node");
    let log = open_log(dir.path());
    let mut group = log
        .bootstrap_group(1, ConfState::with_voters([1, 2, 3]))
        .unwrap();
    group
        .append(&[
            entry(2, 2, EntryKind::Normal, Bytes::new()),
            entry(
                3,
                2,
                EntryKind::Normal,
                Bytes::from_static(b"put /config/a 1"),
            ),
            entry(
                4,
                2,
                EntryKind::ConfChange,
                ConfChange::add_voter(4).encode(),
            ),
            entry(
                5,
                3,
                EntryKind::Normal,
                Bytes::from_static(b"put /config/b 2"),
            ),
            entry(6, 3, EntryKind::Normal, Bytes::from_static(&[0, 1, 2, 250])),
        ])
        .unwrap();
    group
        .set_hard_state(HardState {
            term: 3,
            vote: 2,
            commit: 5,
        })
        .unwrap();
    group
        .set_conf_state(ConfState::with_voters([1, 2, 3, 4]))
        .unwrap();
    group
        .create_snapshot(
            4,
            ConfState::with_voters([1, 2, 3, 4]),
            Bytes::from_static(b"state at 4"),
        )
        .unwrap();
    group.compact(3).unwrap();
    let mut other = log.group(7);
    other
        .append(&[
            entry(1, 1, EntryKind::Normal, Bytes::from_static(b"a")),
            entry(2, 1, EntryKind::Normal, Bytes::from_static(b"b")),
            entry(3, 1, EntryKind::Normal, Bytes::from_static(b"c")),
        ])
        .unwrap();
    other
        .set_hard_state(HardState {
            term: 1,
            vote: 7,
            commit: 3,
        })
        .unwrap();
    dir
}

/// `concord inspect <dir> <flags...>`.
/// `concord inspect` of a directory no node holds. A child that another test of this
/// binary spawns while one of ours holds the lock keeps a copy of the lock's
/// descriptor until it execs, so a run that finds the directory locked (exit 4) is
/// tried again for a while.
fn inspect(dir: &TempDir, flags: &[&str]) -> crate::support::Run {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = inspect_once(dir, flags);
        if run.code != 4 || Instant::now() >= deadline {
            return run;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `concord inspect` run.
fn inspect_once(dir: &TempDir, flags: &[&str]) -> crate::support::Run {
    let mut args = vec![OsStr::new("inspect"), dir.path().as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    concord(args)
}

/// The report's lines from `groups` on: everything but the path and segment sizes.
fn groups_part(table: &str) -> &str {
    &table[table.find("groups ").expect("a groups line")..]
}

// The table shows, per group, the hard state, membership, log bounds, snapshot and
// every entry with index, term, kind, size and summary (a decoded conf change, quoted
// text, hex) — exactly, line for line.
#[test]
fn table_shows_each_group_on_disk() {
    let dir = node_data_dir();
    let run = inspect(&dir, &[]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let mut lines = run.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("data directory {}", dir.path().display()).as_str())
    );
    assert!(lines.next().unwrap().starts_with("segments       1 ("));
    assert_eq!(
        groups_part(&run.stdout),
        r#"groups         2

group 1
  hard state   term 3, vote 2, commit 5
  conf state   voters [1, 2, 3, 4]
  log          first index 4, last index 6
  snapshot     index 4, term 2, 10 bytes, voters [1, 2, 3, 4] (snapshot-00000000000000000001-00000000000000000004.snap)
       index    term  kind            bytes  summary
           4       2  conf-change        15  add voter 4
           5       3  normal             15  "put /config/b 2"
           6       3  normal              4  0x000102fa

group 7
  hard state   term 1, vote 7, commit 3
  conf state   voters []
  log          first index 1, last index 3
  snapshot     none
       index    term  kind            bytes  summary
           1       1  normal              1  "a"
           2       1  normal              1  "b"
           3       1  normal              1  "c"
"#
    );
}

// `--json` prints one JSON document with the same facts as the table: group ids, hard
// state, membership, bounds, snapshot and entries.
#[test]
fn json_has_the_same_facts() {
    let dir = node_data_dir();
    let run = inspect(&dir, &["--json"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert_eq!(report["dir"], dir.path().to_str().unwrap());
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let first = &groups[0];
    assert_eq!(first["group"], 1);
    assert_eq!(
        first["hard_state"],
        serde_json::json!({"term": 3, "vote": 2, "commit": 5})
    );
    assert_eq!(
        first["conf_state"]["voters"],
        serde_json::json!([1, 2, 3, 4])
    );
    assert_eq!(
        (&first["first_index"], &first["last_index"]),
        (&4.into(), &6.into())
    );
    assert_eq!(first["snapshot"]["index"], 4);
    assert_eq!(first["snapshot"]["term"], 2);
    assert_eq!(first["snapshot"]["data_bytes"], 10);
    let entries: Vec<(u64, u64, &str, u64)> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["index"].as_u64().unwrap(),
                entry["term"].as_u64().unwrap(),
                entry["kind"].as_str().unwrap(),
                entry["data_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            (4, 2, "conf-change", 15),
            (5, 3, "normal", 15),
            (6, 3, "normal", 4)
        ]
    );
    assert_eq!(first["entries"][0]["summary"], "add voter 4");
    let second = &groups[1];
    assert_eq!(second["group"], 7);
    assert_eq!(second["snapshot"], serde_json::Value::Null);
    assert_eq!(second["entries"].as_array().unwrap().len(), 3);
}

// `--group` limits the report to the groups named (repeated or comma-separated),
// `--entries N` to the N most recent entries (saying how many are not shown),
// `--no-entries` to none, and `--entries all` shows every one.
#[test]
fn flags_limit_groups_and_entries() {
    let dir = node_data_dir();

    let run = inspect(&dir, &["--group", "7", "--entries", "2"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(
        groups_part(&run.stdout),
        r#"groups         1

group 7
  hard state   term 1, vote 7, commit 3
  conf state   voters []
  log          first index 1, last index 3
  snapshot     none
       index    term  kind            bytes  summary
  ... 1 earlier entries not shown
           2       1  normal              1  "b"
           3       1  normal              1  "c"
"#
    );

    for flags in [&["--group", "7", "--group", "1"][..], &["--group", "1,7"]] {
        let run = inspect(&dir, flags);
        assert_eq!(run.code, 0, "{flags:?}: {}", run.stderr);
        let json = inspect(&dir, &[flags, &["--json"][..]].concat());
        let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(report["groups"].as_array().unwrap().len(), 2, "{flags:?}");
    }

    let run = inspect(&dir, &["--no-entries", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for group in report["groups"].as_array().unwrap() {
        assert_eq!(group["entries"], serde_json::json!([]));
        assert_eq!(group["entries_omitted"], 3);
    }
    let run = inspect(&dir, &["--no-entries"]);
    assert!(!run.stdout.contains("add voter 4"), "{}", run.stdout);

    let run = inspect(&dir, &["--entries", "all", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["groups"][1]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(report["groups"][1]["entries_omitted"], 0);
}

// Asking for a group the directory does not hold fails (exit 3, not found) and names
// the groups it does hold.
#[test]
fn unknown_group_is_refused() {
    let dir = node_data_dir();
    let run = inspect(&dir, &["--group", "1", "--group", "9"]);
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "concord: inspecting {}: no group 9 in it (it holds groups 1, 7)\n",
            dir.path().display()
        )
    );
}

// While a node (here, this test) has the log open, its LOCK is held: inspect refuses
// with exit 4 and says what to do; once the log is closed, it works.
#[test]
fn locked_directory_is_refused() {
    let dir = node_data_dir();
    let log = open_log(dir.path());
    let run = inspect_once(&dir, &[]);
    assert_eq!(run.code, 4);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "concord: inspecting {}: the directory is locked by a running node (LOCK held); \
             stop the node or inspect a copy\n",
            dir.path().display()
        )
    );
    drop(log);
    assert_eq!(inspect(&dir, &[]).code, 0, "the lock was not released");
}

// A path that does not exist, a file, and a directory with no log in it each fail
// with exit 1 and a message naming the path and what was expected; nothing is created
// in the directory that is not a node's.
#[test]
fn wrong_paths_are_explained() {
    let scratch = TempDir::new("paths");
    let missing = scratch.path().join("no-such-node");
    let run = concord([OsStr::new("inspect"), missing.as_os_str()]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "concord: inspecting {}: no such directory\n",
            missing.display()
        )
    );

    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"not a node").unwrap();
    let run = concord([OsStr::new("inspect"), file.as_os_str()]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "concord: inspecting {}: not a directory; expected a node's data directory\n",
            file.display()
        )
    );

    let empty = TempDir::new("empty");
    let run = concord([OsStr::new("inspect"), empty.path().as_os_str()]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "concord: inspecting {}: no concord log in it: a node's data directory holds \
             segment-NNNNNNNNNNNNNNNNNNNN.log files\n",
            empty.path().display()
        )
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

// Usage errors (an unknown flag, a bad value, conflicting or missing arguments, no
// command) exit 2 with clap's message on stderr and nothing on stdout.
#[test]
fn usage_errors_exit_2() {
    let dir = node_data_dir();
    let path = dir.path().to_str().unwrap();
    for (args, expected) in [
        (&["inspect", path, "--bogus"][..], "--bogus"),
        (
            &["inspect", path, "--entries", "many"],
            "expected a number of entries or `all`",
        ),
        (&["inspect", path, "--group", "x"], "--group <ID>"),
        (
            &["inspect", path, "--entries", "3", "--no-entries"],
            "cannot be used with",
        ),
        (&["inspect"], "<DATA_DIR>"),
        (&["frobnicate"], "frobnicate"),
        (&[], "Usage: concord <COMMAND>"),
    ] {
        let run = concord(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

// `--help` (exit 0, on stdout) documents the exit codes, from the same list as the
// crate's README, and `-h` summarises them; `inspect --help` documents every flag.
#[test]
fn help_documents_exit_codes_and_flags() {
    let run = concord(["--help"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert!(
        run.stdout.contains(&concord::Exit::help()),
        "{}",
        run.stdout
    );
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&concord::Exit::help()),
        "README exit codes drifted"
    );

    let run = concord(["-h"]);
    assert!(
        run.stdout.contains("Exit codes: 0 success, 1 failure"),
        "{}",
        run.stdout
    );
    let run = concord(["--version"]);
    assert_eq!(
        run.stdout,
        format!("concord {}\n", env!("CARGO_PKG_VERSION"))
    );

    let run = concord(["inspect", "--help"]);
    assert_eq!(run.code, 0);
    for flag in [
        "--json",
        "--group <ID>",
        "--entries <N|all>",
        "--no-entries",
        "<DATA_DIR>",
    ] {
        assert!(
            run.stdout.contains(flag),
            "missing {flag} in\n{}",
            run.stdout
        );
    }
}

// A reader that stops early (`concord inspect dir | head`) is not an error: with far
// more output than a pipe buffers, closing the pipe makes concord's write fail with a
// broken pipe, and it still exits 0 without a word on stderr.
#[test]
fn closed_pipe_is_not_an_error() {
    let dir = TempDir::new("big");
    let log = open_log(dir.path());
    let entries: Vec<Entry> = (1..=5000)
        .map(|index| entry(index, 1, EntryKind::Normal, Bytes::from_static(b"put /k v")))
        .collect();
    log.group(1).append(&entries).unwrap();
    drop(log);

    let mut child = concord_command()
        .args([OsStr::new("inspect"), dir.path().as_os_str()])
        .args(["--entries", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"data directory "));
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
}
