//! Each bug planted in the core (`PlantedBug`) is caught by the checker meant to catch
//! it, and the same scenario without the bug passes: a checker that never fails proves
//! nothing.

use bytes::Bytes;
use concord_raft::{Index, NodeId, PlantedBug, ReadOnlyOption};
use concord_sim::checkers::{CheckerKind, CheckerSet, Violation};
use concord_sim::cluster::ClusterEvent;
use concord_sim::cluster::{Answer, PRIMARY_GROUP};
use concord_sim::cluster::{Cluster, ClusterOptions};
use concord_sim::history::{History, Op, Response};
use concord_sim::kv::{decode_response, encode_op, get_query};
use concord_sim::linearizability;
use concord_sim::network::TICK_INSTANTS;
use concord_sim::run::{run, RunOptions};
use concord_sim::trace::Trace;

/// Runs seeds `0..seeds_max` with `configure` applied until one fails; returns it.
pub fn first_failure(
    seeds_max: u64,
    configure: impl Fn(&mut RunOptions),
) -> Option<(u64, Violation)> {
    (0..seeds_max).find_map(|seed| {
        let mut options = RunOptions::new(seed);
        configure(&mut options);
        run(&options).failure.map(|failure| (seed, failure))
    })
}

/// Asserts that some seed below `seeds_max` fails, with `expected`.
pub fn assert_caught_by(
    seeds_max: u64,
    expected: CheckerKind,
    configure: impl Fn(&mut RunOptions),
) {
    match first_failure(seeds_max, configure) {
        Some((seed, failure)) => assert_eq!(
            failure.checker, expected,
            "seed {seed} failed, but not by {expected}: {failure}"
        ),
        None => panic!("no seed below {seeds_max} was caught by {expected}"),
    }
}

// Proves that granting votes without the §5.4.1 up-to-date check lets a node with a
// stale log win an election, and that leader completeness catches the winner missing a
// committed entry, within the first 30 random seeds.
#[test]
fn vote_without_log_check_is_caught_by_leader_completeness() {
    assert_caught_by(30, CheckerKind::LeaderCompleteness, |options| {
        options.planted_bug = Some(PlantedBug::VoteWithoutLogCheck);
        options.safety_ticks = Some(600);
    });
}

/// A node votes, forgets the vote in a crash, and votes again in the same term.
fn forget_vote_scenario(bug: Option<PlantedBug>) -> Result<(), Violation> {
    let mut options = ClusterOptions::new(3, 1);
    options.config.pre_vote = false;
    options.config.check_quorum = false;
    options.config.planted_bug = bug;
    let mut cluster = Cluster::with_options(options, Trace::quiet());
    // Node 1 campaigns for term 2 without node 3. As soon as node 2 has voted for it,
    // cut 1 -> 2 so that nothing of node 1's term reaches node 2's log.
    cluster.disconnect(3);
    cluster.campaign(1);
    let voted = cluster.run_until(50, |cluster| {
        cluster.raw_node(2).map(|node| node.raft().vote) == Some(1)
    })?;
    assert!(
        voted,
        "node 2 never voted for node 1:\n{}",
        cluster.describe()
    );
    cluster.cut_link(1, 2);
    assert!(cluster.run_until(50, |cluster| cluster.leader() == Some(1))?);
    let term = cluster.term(1).unwrap();
    // Node 2 restarts from its storage; node 3 campaigns for the same term with it.
    cluster.crash(2);
    cluster.restart(2);
    cluster.connect(3);
    cluster.disconnect(1);
    cluster.campaign(3);
    assert_eq!(
        cluster.term(3),
        Some(term),
        "node 3 campaigns in node 1's term"
    );
    cluster.run_until(50, |cluster| cluster.leader_among(&[3]).is_some())?;
    Ok(())
}

// Proves that a vote left out of the persisted hard state (§5.2) lets a restarted node
// vote twice in one term and elect two leaders, and that election safety catches it;
// without the bug node 2 remembers its vote and node 3 loses that term.
#[test]
fn forget_vote_is_caught_by_election_safety() {
    let violation = forget_vote_scenario(Some(PlantedBug::ForgetVote)).unwrap_err();
    assert_eq!(
        violation.checker,
        CheckerKind::ElectionSafety,
        "{violation}"
    );
    assert!(
        violation.message.starts_with("two leaders in term 2"),
        "{violation}"
    );
    forget_vote_scenario(None).unwrap();
}

/// What the Figure 8 scenario reached.
#[derive(Debug, PartialEq, Eq)]
enum Figure8 {
    /// S5 won with a log missing the entry S1 counted as committed.
    StaleLeaderElected,
    /// S1 committed only together with its own term's entry, so S5 could not win.
    NoStaleLeader,
}

fn last_index(cluster: &Cluster, id: NodeId) -> Index {
    cluster.view(id).map(|view| view.last_index).unwrap_or(0)
}

fn commit_index(cluster: &Cluster, id: NodeId) -> Index {
    cluster.view(id).map(|view| view.commit).unwrap_or(0)
}

/// The Raft paper's Figure 8, played with five nodes S1..S5 (one entry per append, so
/// an old entry and the new leader's no-op travel in separate messages).
fn figure_8_scenario(bug: Option<PlantedBug>, checkers: CheckerSet) -> Result<Figure8, Violation> {
    let mut options = ClusterOptions::new(5, 8);
    options.config.pre_vote = false;
    options.config.check_quorum = false;
    options.config.append_bytes_max = 1;
    options.config.planted_bug = bug;
    options.checkers = checkers;
    let mut cluster = Cluster::with_options(options, Trace::quiet());
    // (a) S1 leads term 2 and everyone has its no-op.
    cluster.campaign(1);
    assert!(cluster.run_until(50, |cluster| cluster.leader() == Some(1))?);
    let base = last_index(&cluster, 1);
    assert!(cluster.run_until(100, |cluster| (1..=5)
        .all(|id| cluster.applied_index(id) >= Some(base)))?);
    // S1, cut off, appends X at index k = base + 1 alone, then crashes.
    cluster.disconnect(1);
    let x = cluster.propose_on(1, Bytes::from_static(b"x")).unwrap();
    let k = x.index;
    cluster.run_ticks(1)?;
    cluster.crash(1);
    // (b) S5 wins the next term with S2..S4's votes and appends its no-op at k, alone;
    // then S5 and S4 crash so that S2 and S3 cannot elect anyone.
    cluster.campaign(5);
    assert!(cluster.run_until(50, |cluster| cluster.leader() == Some(5))?);
    cluster.disconnect(5);
    cluster.run_ticks(1)?;
    assert_eq!(last_index(&cluster, 5), k, "S5's no-op sits at k");
    cluster.crash(5);
    cluster.crash(4);
    // (c) S1 restarts and wins with S2 and S3: its (k, term of X) beats their logs.
    cluster.restart(1);
    cluster.connect(1);
    cluster.campaign(1);
    let elected = cluster.run_until(200, |cluster| cluster.leader() == Some(1))?;
    assert!(elected, "S1 was not re-elected:\n{}", cluster.describe());
    // S1 sends X to S2 and S3, then its own no-op at k + 1. The moment it considers k
    // committed, cut it off (its messages in flight are lost) and crash it.
    let committed = cluster.run_until(100, |cluster| commit_index(cluster, 1) >= k)?;
    assert!(committed, "S1 never committed k:\n{}", cluster.describe());
    cluster.disconnect(1);
    cluster.crash(1);
    // (d) S5 restarts and campaigns with S4 and whichever of S2, S3 lacks S1's no-op.
    let lacking: Vec<NodeId> = [2, 3]
        .into_iter()
        .filter(|&id| last_index(&cluster, id) == k)
        .collect();
    let Some(&voter) = lacking.first() else {
        return Ok(Figure8::NoStaleLeader);
    };
    let other = if voter == 2 { 3 } else { 2 };
    cluster.disconnect(other);
    cluster.restart(4);
    cluster.restart(5);
    cluster.connect(5);
    cluster.campaign(5);
    let elected = cluster.run_until(200, |cluster| cluster.leader() == Some(5))?;
    if !elected {
        return Ok(Figure8::NoStaleLeader);
    }
    // Let S5 replicate its entry at k over X and run the periodic checks.
    cluster.run_ticks(40)?;
    Ok(Figure8::StaleLeaderElected)
}

// Proves that committing an entry of an earlier term by counting replicas (the Figure 8
// bug, §5.4.2) lets a later leader overwrite a committed entry, and that leader
// completeness catches the new leader lacking it. With leader completeness off,
// committed-never-lost catches the same leader when it next checks every leader. Without
// the bug, S1 commits X only with an entry of its own term, and S5 cannot win.
#[test]
fn commit_old_term_by_count_is_caught_figure_8() {
    let bug = Some(PlantedBug::CommitOldTermByCount);
    let violation = figure_8_scenario(bug, CheckerSet::all()).unwrap_err();
    assert_eq!(
        violation.checker,
        CheckerKind::LeaderCompleteness,
        "{violation}"
    );

    let without_completeness = CheckerSet::all().without(CheckerKind::LeaderCompleteness);
    let violation = figure_8_scenario(bug, without_completeness).unwrap_err();
    assert_eq!(
        violation.checker,
        CheckerKind::CommittedNeverLost,
        "{violation}"
    );

    assert_eq!(
        figure_8_scenario(None, CheckerSet::all()).unwrap(),
        Figure8::NoStaleLeader
    );
}

/// Proposes `op` for `client` on `node` and runs until that node applies it; records
/// the operation in `history`. Returns false if it did not complete.
fn write(
    cluster: &mut Cluster,
    history: &mut History,
    node: NodeId,
    client: u64,
    op: Op,
) -> Result<bool, Violation> {
    let id = history.invoke(client, op.clone(), cluster.now());
    let _ = client;
    let Ok(position) = cluster.propose_on(node, encode_op(&op)) else {
        history.fail(id, cluster.now());
        return Ok(false);
    };
    let applied = cluster.run_until(100, |cluster| {
        cluster.applied_index(node) >= Some(position.index)
            && cluster.applied_term(position.index) == Some(position.term)
    })?;
    if applied {
        history.complete(id, Response::Ok, cluster.now());
    } else {
        history.unknown(id);
    }
    Ok(applied)
}

/// A lease-read leader is cut off; the majority elects a new leader that overwrites
/// the key; then the old leader, if it still thinks it leads, is asked for a read.
/// Returns the history, or `None` if the old leader had already stepped down.
fn lease_read_scenario(seed: u64, bug: Option<PlantedBug>) -> Result<Option<History>, Violation> {
    let mut options = ClusterOptions::new(3, seed);
    options.config.check_quorum = true;
    options.config.pre_vote = false;
    options.config.read_only = ReadOnlyOption::LeaseBased;
    options.config.heartbeat_interval_ticks = 1;
    options.config.planted_bug = bug;
    options.collect_events = true;
    let mut cluster = Cluster::with_options(options, Trace::quiet());
    let mut history = History::new();
    cluster.campaign(1);
    assert!(cluster.run_until(50, |cluster| cluster.leader() == Some(1))?);
    assert!(write(&mut cluster, &mut history, 1, 1, Op::put("k", "a"))?);
    cluster.partition(&[vec![1], vec![2, 3]]);
    assert!(cluster.run_until(100, |cluster| cluster.leader_among(&[2, 3]).is_some())?);
    let new_leader = cluster.leader_among(&[2, 3]).unwrap();
    if !write(&mut cluster, &mut history, new_leader, 2, Op::put("k", "b"))? {
        return Ok(None);
    }
    if cluster.leaders().iter().all(|&(id, _)| id != 1) {
        return Ok(None);
    }
    // Invoke the read strictly after the write completed.
    cluster.run_instant();
    cluster.take_events();
    let read = history.invoke(3, Op::get("k"), cluster.now());
    cluster.read(PRIMARY_GROUP, 1, 7, get_query(b"k"));
    let mut served = None;
    for _ in 0..10 * TICK_INSTANTS {
        cluster.run_instant();
        for event in cluster.take_events() {
            if let ClusterEvent::Answered {
                tag: 7,
                answer: Answer::Read(result),
                time,
                ..
            } = event
            {
                served = Some((result, time));
            }
        }
        if served.is_some() {
            break;
        }
    }
    match served {
        Some((Ok(read_response), time)) => {
            let response = decode_response(&read_response.response).expect("a value");
            history.complete(read, response, time)
        }
        // Refused (not leader, lease gone): it certainly read nothing.
        Some((Err(_), time)) => history.fail(read, time),
        None => history.unknown(read),
    }
    Ok(Some(history))
}

// Proves that serving lease reads while the lease is not valid lets a leader cut off by
// a partition answer with a value the majority has since overwritten, and that the
// linearizability checker catches the stale read; the same seed without the bug
// refuses to answer (its lease has run out), so its history is linearizable.
#[test]
fn lease_read_without_check_quorum_is_caught_by_linearizability() {
    let bug = Some(PlantedBug::LeaseReadWithoutCheckQuorum);
    let caught = (0..30).find_map(|seed| {
        let history = lease_read_scenario(seed, bug).unwrap()?;
        match linearizability::check(&history) {
            Err(error) if error.is_violation() => Some((seed, error)),
            _ => None,
        }
    });
    let (seed, error) = caught.expect("no seed left the deposed leader serving a stale read");
    assert!(error.to_string().contains("get"), "{error}");
    if let Some(history) = lease_read_scenario(seed, None).unwrap() {
        linearizability::check(&history).unwrap();
    }
}
