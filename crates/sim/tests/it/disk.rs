//! The durable log under the simulator's disk faults: power lost in the middle of a
//! write, failed fsyncs, torn crashes and flipped bits, with every checker running.

use std::path::PathBuf;

use bytes::Bytes;
use concord_raft::NodeId;
use concord_sim::cluster::{Cluster, ClusterOptions};
use concord_sim::params::Params;
use concord_sim::rng::PPM;
use concord_sim::run::{run, RunOptions};
use concord_sim::storage::{DiskFault, StorageMode};
use concord_sim::trace::Trace;

fn command(n: u64) -> Bytes {
    Bytes::from(format!("command {n:04}"))
}

fn others(cluster: &Cluster, excluded: NodeId) -> Vec<NodeId> {
    cluster
        .node_ids()
        .into_iter()
        .filter(|&id| id != excluded)
        .collect()
}

/// Node `id`'s segment files and their bytes, oldest first.
fn segments(cluster: &Cluster, id: NodeId) -> Vec<(PathBuf, Vec<u8>)> {
    let fs = cluster
        .storage(id)
        .and_then(|storage| storage.fs())
        .expect("a node on the durable log");
    fs.paths()
        .into_iter()
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("segment-"))
        })
        .filter_map(|path| Some((path.clone(), fs.file_bytes(&path)?)))
        .collect()
}

// Proves that each disk fault stops the node it hits and that the node comes back
// through recovery with every write it acknowledged: the leader's disk loses power in
// the middle of a write (clean or torn) or fails an fsync while it appends a new
// entry; the leader crashes, the others go on, and once restarted it holds the entries
// committed before and catches up, with every checker quiet.
#[test]
fn disk_faults_stop_the_node_and_recovery_keeps_acknowledged_writes() {
    for (seed, fault) in [
        (
            1,
            DiskFault::PowerLoss {
                torn: false,
                syncs_before: 0,
            },
        ),
        (
            2,
            DiskFault::PowerLoss {
                torn: true,
                syncs_before: 0,
            },
        ),
        (3, DiskFault::SyncFailure),
    ] {
        let mut cluster = Cluster::new(3, |_| {}, seed);
        let before = cluster.one(command(1), 3, false).unwrap();
        let leader = cluster.check_one_leader().unwrap();
        assert!(cluster.arm_disk_fault(leader, fault));
        cluster.propose_on(leader, command(2)).unwrap();
        assert!(!cluster.is_up(leader), "{fault}: the leader kept running");
        assert_eq!(cluster.stats().disk_faults, 1, "{fault}");
        // The others elect a leader and commit without it.
        let index = cluster.one(command(3), 2, true).unwrap();
        cluster.restart(leader);
        assert!(cluster.is_up(leader), "{fault}: the leader did not restart");
        let caught_up = cluster
            .run_until(100, |cluster| cluster.applied_index(leader) >= Some(index))
            .unwrap();
        assert!(caught_up, "{fault}:\n{}", cluster.describe());
        assert_eq!(cluster.committed_count(before), (3, Some(command(1))));
        cluster.check_all_logs().unwrap();
    }
}

// Proves that power lost between the syncs of a multi-sync write stops the node too: a
// follower's snapshot syncs its file, then the directory that names it, and power
// fails at the second sync; the follower restarts from whichever snapshot recovery
// finds and catches up. A fault waiting for a second sync misses a plain append (one
// sync), and is disarmed: later writes go through.
#[test]
fn power_loss_between_the_syncs_of_a_snapshot() {
    let mut cluster = Cluster::new(3, |_| {}, 7);
    for n in 1..=10 {
        cluster.one(command(n), 3, false).unwrap();
    }
    let leader = cluster.check_one_leader().unwrap();
    let follower = others(&cluster, leader)[0];
    let second_sync = DiskFault::PowerLoss {
        torn: true,
        syncs_before: 1,
    };
    assert!(cluster.arm_disk_fault(follower, second_sync));
    assert!(!cluster.snapshot(follower, 0), "the snapshot survived");
    assert!(!cluster.is_up(follower));
    assert_eq!(cluster.stats().disk_faults, 1);
    cluster.restart(follower);
    let index = cluster.one(command(11), 3, true).unwrap();
    assert_eq!(cluster.committed_count(index).0, 3);
    // An append syncs once: the fault misses it.
    assert!(cluster.arm_disk_fault(follower, second_sync));
    let index = cluster.one(command(12), 3, false).unwrap();
    assert!(cluster.is_up(follower));
    assert_eq!(cluster.stats().disk_faults, 1);
    for n in 13..=15 {
        cluster.one(command(n), 3, false).unwrap();
    }
    assert!(cluster.snapshot(follower, 0));
    assert_eq!(cluster.committed_count(index).0, 3);
    cluster.check_all_logs().unwrap();
}

// Proves that memory storage has no disk to fail: arming a fault is refused and
// changes nothing.
#[test]
fn memory_storage_has_no_disk_faults() {
    let mut options = ClusterOptions::new(3, 4);
    options.storage = StorageMode::Mem;
    let mut cluster = Cluster::with_options(options, Trace::quiet());
    let leader = cluster.check_one_leader().unwrap();
    assert!(!cluster.arm_disk_fault(leader, DiskFault::SyncFailure));
    assert!(cluster.storage(leader).unwrap().fs().is_none());
    cluster.one(command(1), 3, false).unwrap();
    assert!(cluster.is_up(leader));
}

// Proves that a flipped bit in a durable record is refused, not served: a follower
// crashes, one bit of an acknowledged entry in an older segment of its disk flips, and
// at restart recovery refuses to start with a corruption error naming that segment
// and a byte offset at or before the bit. The node stays down for good; the other two
// keep committing, and every checker stays quiet.
#[test]
fn flipped_bit_in_a_durable_entry_is_refused_at_restart() {
    let mut cluster = Cluster::new(3, |_| {}, 5);
    for n in 1..=20 {
        cluster.one(command(n), 3, false).unwrap();
    }
    let leader = cluster.check_one_leader().unwrap();
    let follower = others(&cluster, leader)[0];
    cluster.crash(follower);
    // Recovery started a new segment; command 7 sits in an older one.
    let target = command(7);
    let (path, offset) = segments(&cluster, follower)
        .into_iter()
        .find_map(|(path, bytes)| {
            let at = bytes
                .windows(target.len())
                .position(|window| window == &target[..])?;
            Some((path, at as u64))
        })
        .expect("command 7 on the follower's disk");
    cluster.flip_bit(follower, &path, offset + 3, 0).unwrap();
    cluster.restart(follower);
    assert!(!cluster.is_up(follower), "a damaged disk was served");
    let refusal = cluster
        .recovery_refusal(follower)
        .expect("recovery refused")
        .to_string();
    let file = path.display().to_string();
    let Some(rest) = refusal.strip_prefix(&format!("corrupt data in {file} at byte ")) else {
        panic!("the refusal does not name {file}: {refusal}");
    };
    let reported: u64 = rest
        .split(':')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset in {refusal}"));
    assert!(reported <= offset + 3, "{refusal}");
    // A lost node stays down, and the group goes on without it.
    cluster.restart(follower);
    assert!(!cluster.is_up(follower));
    cluster.one(command(21), 2, true).unwrap();
    cluster.check_all_logs().unwrap();
}

// Proves that long runs on the durable log start new segments and delete old ones once
// every node has snapshotted and compacted past them, and that nodes still agree after
// crashing and recovering from those segments.
#[test]
fn segments_roll_and_old_ones_are_deleted_after_compaction() {
    let mut cluster = Cluster::new(3, |_| {}, 6);
    let payload = Bytes::from(vec![b'x'; 1000]);
    for round in 0..3 {
        for _ in 0..100 {
            cluster.one(payload.clone(), 3, true).unwrap();
        }
        for id in cluster.node_ids() {
            assert!(cluster.snapshot(id, 10), "round {round}: node {id}");
        }
    }
    for id in cluster.node_ids() {
        let segments = segments(&cluster, id);
        let first = segments.first().expect("a segment").0.clone();
        assert!(
            !first.ends_with("segment-00000000000000000001.log"),
            "node {id} kept its first segment: {first:?}"
        );
        cluster.crash(id);
        cluster.restart(id);
    }
    let index = cluster.one(command(1), 3, true).unwrap();
    assert_eq!(cluster.committed_count(index).0, 3);
    cluster.check_all_logs().unwrap();
}

/// Disk faults on most writes, every crash torn, crashes often.
fn disk_faults_everywhere(params: &mut Params) {
    params.disk_fault_ppm = 20_000;
    params.torn_crash_ppm = PPM;
    params.crash_ppm = params.crash_ppm.max(5_000);
}

// Proves that random runs with many disk faults (power lost mid-write, torn or clean,
// failed fsyncs) and torn crashes pass every checker: recovery never refuses what only
// crashes touched, and never loses an acknowledged write.
#[test]
fn random_runs_with_disk_faults_pass_every_checker() {
    let mut disk_faults = 0;
    let mut writes_interrupted = 0;
    for seed in 0..20 {
        let mut options = RunOptions::new(seed);
        options.tweak = Some(disk_faults_everywhere);
        let report = run(&options);
        if let Some(failure) = &report.failure {
            panic!("seed {seed} FAILED {failure}");
        }
        disk_faults += report.cluster.disk_faults;
        writes_interrupted += report.cluster.writes_interrupted;
    }
    assert!(disk_faults > 100, "only {disk_faults} disk faults");
    assert!(writes_interrupted > 0, "no crash landed mid-write");
}
