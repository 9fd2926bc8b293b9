//! The README's walkthrough, command for command and in its order (ports chosen by
//! the OS instead of 7001..7004).

use std::time::Duration;

use crate::support::{client, eventually, memstore, status, test_dir, voters, Server};

/// The leader's id as `status` through `peer` names it.
fn leader(peer: &str) -> u64 {
    let seen = status(peer);
    seen["leader"]
        .split(' ')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no leader in {seen:?}"))
}

/// Node 1 bootstraps, nodes 2 and 3 join through it; a write through one node is
/// read through the others (linearizable, then stale); node 3 stops on ctrl-c (exit
/// 0) and the two others keep taking writes; it restarts with the same command,
/// resumes from its data directory and has what it missed. The leader is killed:
/// writes go on through the survivors, and it comes back with its command.
/// Leadership moves on request; node 2 is removed and node 4 joins in its place;
/// delete, list, and a key that is not set (exit 3). A second node on a data
/// directory in use is refused.
#[test]
fn readme_walkthrough() {
    let dir = test_dir();
    let n1 = Server::start(dir.path(), 1, "127.0.0.1:0", &["--bootstrap"]);
    let a1 = n1.address.clone();
    let n2 = Server::start(dir.path(), 2, "127.0.0.1:0", &["--join", &a1]);
    let n3 = Server::start(dir.path(), 3, "127.0.0.1:0", &["--join", &a1]);
    let (a2, a3) = (n2.address.clone(), n3.address.clone());
    let mut nodes = [n1, n2, n3];
    let addresses = [a1.clone(), a2.clone(), a3.clone()];

    // Node 2 learns of node 3's promotion within a heartbeat or so.
    let members = format!("1 voter {a1}\n2 voter {a2}\n3 voter {a3}\n");
    eventually(Duration::from_secs(5), "node 2 sees three voters", || {
        client("members", &a2, &[]).ok() == members
    });

    // Write through node 1, read through 2 and 3.
    let put = client("put", &a1, &["greeting", "hello"]).ok();
    assert!(put.starts_with("ok index "), "{put}");
    assert_eq!(client("get", &a2, &["greeting"]).ok(), "hello\n");
    eventually(Duration::from_secs(5), "node 3 applies the write", || {
        client("get", &a3, &["greeting", "--stale"]).stdout == "hello\n"
    });
    let seen = status(&a3);
    assert_eq!(seen["node"], "3");
    assert!(
        ["leader", "follower"].contains(&seen["role"].as_str()),
        "{seen:?}"
    );
    assert_eq!(seen["commit"], seen["applied"], "{seen:?}");
    assert_eq!(seen["member 3"], format!("voter {a3}"));
    assert!((1..=3).contains(&leader(&a3)));

    // Stop node 3 with ctrl-c: it exits 0; the others keep working.
    let exit = nodes[2].interrupt();
    assert_eq!(exit.code(), Some(0), "node 3:\n{}", nodes[2].log_tail());
    client("put", &a2, &["greeting", "bonjour"]).ok();
    assert_eq!(client("get", &a1, &["greeting"]).ok(), "bonjour\n");
    let down = client("get", &a3, &["greeting"]);
    assert_eq!(down.code, Some(1), "{down:?}");
    assert!(
        down.stderr
            .starts_with(&format!("memstore: connecting to {a3}: unavailable: ")),
        "{down:?}"
    );

    // Restart it with the same command: it resumes and has the write it missed.
    assert_eq!(nodes[2].restart(), "resumed");
    assert_eq!(client("get", &a3, &["greeting"]).ok(), "bonjour\n");

    // Lose the leader: the survivors take writes; it comes back with its command.
    let lost = leader(&a1) as usize - 1;
    nodes[lost].kill();
    let survivor = &addresses[(lost + 1) % 3];
    client("put", survivor, &["greeting", "hallo"]).ok();
    assert_eq!(nodes[lost].restart(), "resumed");
    assert_eq!(
        client("get", &addresses[lost], &["greeting"]).ok(),
        "hallo\n"
    );

    // Move the leader, replace node 2 by node 4.
    assert_eq!(client("transfer", &a1, &["3"]).ok(), "node 3 leads\n");
    assert_eq!(status(&a3)["role"], "leader");
    assert_eq!(client("remove", &a1, &["2"]).ok(), "removed node 2\n");
    assert_eq!(nodes[1].interrupt().code(), Some(0));
    let mut n4 = Server::start(dir.path(), 4, "127.0.0.1:0", &["--join", &a1]);
    let a4 = n4.address.clone();
    assert_eq!(voters(&a4), vec![1, 3, 4]);
    assert_eq!(client("get", &a4, &["greeting"]).ok(), "hallo\n");

    // Delete, list, and a key that is not set.
    client("put", &a4, &["colour", "blue"]).ok();
    let deleted = client("delete", &a1, &["greeting"]).ok();
    assert!(deleted.ends_with(" (deleted)\n"), "{deleted}");
    assert_eq!(client("list", &a3, &[]).ok(), "colour\tblue\n");
    let missing = client("get", &a1, &["greeting"]);
    assert_eq!(missing.code, Some(3), "{missing:?}");
    assert_eq!(
        missing.stderr,
        format!("memstore: getting \"greeting\" from {a1}: no such key\n")
    );

    // A second node cannot open a data directory in use (exit 4); the first keeps running.
    let clash = memstore(&[
        "serve",
        "--id",
        "1",
        "--data-dir",
        nodes[0].data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(clash.code, Some(4), "{clash:?}");
    assert!(
        clash.stderr.contains("memstore: starting node 1 in "),
        "{clash:?}"
    );
    assert_eq!(client("get", &a1, &["colour"]).ok(), "blue\n");

    let [n1, _, n3] = &mut nodes;
    for node in [n1, n3, &mut n4] {
        assert_eq!(node.terminate().code(), Some(0));
    }
}
