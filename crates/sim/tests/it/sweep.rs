//! Randomized runs: a bounded sweep of seeds passes every checker on either storage,
//! and a run is a pure function of its seed.

use concord_sim::cluster::Machine;
use concord_sim::run::{run, RunOptions};
use concord_sim::storage::StorageMode;
use concord_sim::trace::TraceLevel;

/// The seeds the sweep runs on the durable log (the default storage), with its torn
/// crashes and disk faults. Each takes a few tens of milliseconds in the test profile.
const DISK_SWEEP_SEEDS: std::ops::Range<u64> = 0..200;

/// The seeds the sweep runs on memory storage.
const MEM_SWEEP_SEEDS: std::ops::Range<u64> = 200..300;

/// The seeds the sweep runs with the coordination service's namespace as every
/// group's state machine, on the durable log.
const TREE_SWEEP_SEEDS: std::ops::Range<u64> = 300..400;

/// Runs `seeds` on `storage` with `machine`; returns a line per failure.
fn sweep(storage: StorageMode, machine: Machine, seeds: std::ops::Range<u64>) -> Vec<String> {
    let mut unexpected = Vec::new();
    for seed in seeds {
        let mut options = RunOptions::new(seed);
        options.storage = storage;
        options.machine = machine;
        let report = run(&options);
        if let Some(failure) = &report.failure {
            unexpected.push(format!(
                "seed {seed} FAILED {failure}\n  reproduce: cargo run --release -p concord-sim -- --seed {seed} --storage {storage} --machine {}",
                machine.name()
            ));
        }
    }
    unexpected
}

// Proves that the core, over concord's durable log, passes every checker (election
// safety, log matching, leader completeness, state machine safety, committed entries
// never lost, linearizability, liveness, storage) on a few hundred random seeds of
// faults, disk faults included.
#[test]
fn random_seeds_pass_every_checker_on_disk() {
    let unexpected = sweep(StorageMode::Disk, Machine::Kv, DISK_SWEEP_SEEDS);
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

// Proves the same over memory storage, where the core is tested apart from the
// storage engine.
#[test]
fn random_seeds_pass_every_checker_in_memory() {
    let unexpected = sweep(StorageMode::Mem, Machine::Kv, MEM_SWEEP_SEEDS);
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

// Proves the coordination service's namespace (concord-service, the code the server
// runs), serving each key as a blob through transactions and queries, passes every
// checker under the same faults: linearizable puts, appends, compare-and-swaps and
// reads through leader changes, crashes and snapshot installs, exactly once.
#[test]
fn random_seeds_pass_every_checker_with_the_namespace() {
    let unexpected = sweep(StorageMode::Disk, Machine::Tree, TREE_SWEEP_SEEDS);
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

// Proves that a run is a pure function of its seed and storage: the same seed twice
// gives the same trace hash (every event, message and decision) and the same counts,
// while another seed, or the other storage, gives another trace.
#[test]
fn same_seed_same_run() {
    for storage in StorageMode::ALL {
        for seed in [3, 42, 1001] {
            let mut options = RunOptions::new(seed);
            options.storage = storage;
            let first = run(&options);
            options.trace_level = TraceLevel::Messages;
            let second = run(&options);
            let what = format!("seed {seed} on {storage}");
            assert_eq!(first.trace_hash, second.trace_hash, "{what}: trace differs");
            assert_eq!(first.trace_events, second.trace_events, "{what}");
            assert_eq!(first.clients, second.clients, "{what}");
            assert_eq!(first.cluster, second.cluster, "{what}");
            assert_eq!(first.network, second.network, "{what}");
            assert_eq!(first.failure, second.failure, "{what}");
            assert!(first.trace_events > 1000, "{what}: suspiciously short run");
            assert!(
                !second.trace_lines.is_empty(),
                "the Messages level keeps lines"
            );
        }
    }
    assert_ne!(
        run(&RunOptions::new(3)).trace_hash,
        run(&RunOptions::new(4)).trace_hash
    );
    let mut mem = RunOptions::new(3);
    mem.storage = StorageMode::Mem;
    assert_ne!(run(&mem).trace_hash, run(&RunOptions::new(3)).trace_hash);
}
