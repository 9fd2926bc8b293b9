//! The command line without a cluster: usage errors, help, and failures that name
//! what failed and why.

use crate::support::{memstore, test_dir, Server};

/// A wrong command line exits 2; `--help` exits 0 and lists the exit codes.
#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["get"],
        &["put", "--peer", "127.0.0.1:7001", "only-a-key"],
        &["serve", "--data-dir", "d"],
        &[
            "serve",
            "--id",
            "1",
            "--data-dir",
            "d",
            "--bootstrap",
            "--join",
            "x:1",
        ],
        &["remove", "not-a-number"],
    ] {
        let output = memstore(args);
        assert_eq!(output.code, Some(2), "memstore {args:?}: {output:?}");
    }
    let help = memstore(&["--help"]).ok();
    assert!(help.contains("Exit codes:\n  0  success"), "{help}");
    assert!(help.contains(&concord_memstore::Exit::help()), "{help}");
}

/// A client command to a node that is not there exits 1 with
/// `memstore: <what>: <why>`; `serve` on an empty data directory without
/// `--bootstrap` or `--join` exits 2 and says what to give; a bad config file exits 1
/// naming the file.
#[test]
fn failures_say_what_failed_and_why() {
    let nobody = memstore(&["get", "--peer", "127.0.0.1:1", "k"]);
    assert_eq!(nobody.code, Some(1), "{nobody:?}");
    assert!(
        nobody
            .stderr
            .starts_with("memstore: connecting to 127.0.0.1:1: unavailable: "),
        "{nobody:?}"
    );

    let dir = test_dir();
    let data_dir = dir.path().join("n1");
    let data_dir = data_dir.to_str().unwrap();
    let lonely = memstore(&[
        "serve",
        "--id",
        "1",
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(lonely.code, Some(2), "{lonely:?}");
    assert!(
        lonely.stdout.starts_with("listening 127.0.0.1:"),
        "{lonely:?}"
    );
    assert!(
        lonely.stderr.contains(&format!(
            "memstore: starting: {data_dir} holds no cluster: give --bootstrap to found one or --join PEER_ADDR to join one"
        )),
        "{lonely:?}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "snapshot_interval_entries = \"often\"\n").unwrap();
    let bad = memstore(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.starts_with("memstore: reading the config: "),
        "{bad:?}"
    );
}

/// `serve` on the data directory of a running node exits 4 (data directory in use)
/// and says so; the running node is unaffected.
#[test]
fn a_data_directory_in_use_exits_4() {
    let dir = test_dir();
    let mut running = Server::start(dir.path(), 1, "127.0.0.1:0", &["--bootstrap"]);
    let data_dir = dir.path().join("n1");
    let second = memstore(&[
        "serve",
        "--id",
        "1",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(second.code, Some(4), "{second:?}");
    assert!(second.stderr.contains("is in use"), "{second:?}");
    crate::support::client("put", &running.address, &["k", "v"]).ok();
    running.terminate();
}
