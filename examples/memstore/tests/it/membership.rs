//! Dynamic membership through the command line: joining by ticket, removing a
//! member, replacing one.

use std::time::Duration;

use crate::support::{client, eventually, status, test_dir, voters, Server};

/// How long a member may take to learn of a membership change.
const BOUND: Duration = Duration::from_secs(5);

/// Node 1 bootstraps alone; node 2 joins through it and node 3 through node 2 (a
/// follower: its ticket comes from the leader by redirect). Node 3 is removed and
/// stopped; node 4 joins; node 2 is removed and stopped, so node 4 replaced it. After
/// every step the group takes writes and every member has every write.
#[test]
fn bootstrap_one_join_two_remove_one_replace_one() {
    let dir = test_dir();
    let mut n1 = Server::start(dir.path(), 1, "127.0.0.1:0", &["--bootstrap"]);
    let a1 = n1.address.clone();
    client("put", &a1, &["a", "1"]).ok();
    assert_eq!(voters(&a1), vec![1]);

    let mut n2 = Server::start(dir.path(), 2, "127.0.0.1:0", &["--join", &a1]);
    let a2 = n2.address.clone();
    let mut n3 = Server::start(dir.path(), 3, "127.0.0.1:0", &["--join", &a2]);
    let a3 = n3.address.clone();
    assert_eq!(voters(&a3), vec![1, 2, 3]);
    client("put", &a3, &["b", "2"]).ok();
    for peer in [&a1, &a2, &a3] {
        assert_eq!(client("list", peer, &[]).ok(), "a\t1\nb\t2\n");
    }

    // Remove node 3 (asked of node 2, a follower: the client follows its redirect).
    assert_eq!(client("remove", &a2, &["3"]).ok(), "removed node 3\n");
    eventually(BOUND, "node 1 sees voters 1 and 2", || {
        voters(&a1) == [1, 2]
    });
    assert_eq!(n3.terminate().code(), Some(0));

    // Node 4 joins, node 2 goes: 4 replaced 2.
    let mut n4 = Server::start(dir.path(), 4, "127.0.0.1:0", &["--join", &a1]);
    let a4 = n4.address.clone();
    assert_eq!(voters(&a4), vec![1, 2, 4]);
    client("remove", &a4, &["2"]).ok();
    assert_eq!(n2.terminate().code(), Some(0));
    eventually(BOUND, "node 1 sees voters 1 and 4", || {
        voters(&a1) == [1, 4]
    });
    client("put", &a4, &["c", "3"]).ok();
    for peer in [&a1, &a4] {
        assert_eq!(client("list", peer, &[]).ok(), "a\t1\nb\t2\nc\t3\n");
    }
    eventually(BOUND, "node 4 no longer lists nodes 2 and 3", || {
        let seen = status(&a4);
        !seen.contains_key("member 2") && !seen.contains_key("member 3")
    });

    for node in [&mut n1, &mut n4] {
        assert_eq!(node.terminate().code(), Some(0));
    }
}
