//! Randomized runs: a bounded sweep of seeds passes every checker, and a run is a pure
//! function of its seed.

use concord_sim::run::{run, RunOptions};
use concord_sim::trace::TraceLevel;

/// The seeds the sweep runs. Each takes a few tens of milliseconds in the test profile.
const SWEEP_SEEDS: std::ops::Range<u64> = 0..300;

// Proves that the core passes every checker (election safety, log matching, leader
// completeness, state machine safety, committed entries never lost, linearizability,
// liveness) on a few hundred random seeds of faults.
#[test]
fn random_seeds_pass_every_checker() {
    let mut unexpected = Vec::new();
    for seed in SWEEP_SEEDS {
        let report = run(&RunOptions::new(seed));
        if let Some(failure) = &report.failure {
            unexpected.push(format!(
                "seed {seed} FAILED {failure}\n  reproduce: cargo run --release -p concord-sim -- --seed {seed}"
            ));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

// Proves that a run is a pure function of its seed: the same seed twice gives the same
// trace hash (every event, message and decision) and the same counts, while another
// seed gives another trace.
#[test]
fn same_seed_same_run() {
    for seed in [3, 42, 1001] {
        let mut options = RunOptions::new(seed);
        let first = run(&options);
        options.trace_level = TraceLevel::Messages;
        let second = run(&options);
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed}: trace differs"
        );
        assert_eq!(first.trace_events, second.trace_events, "seed {seed}");
        assert_eq!(first.clients, second.clients, "seed {seed}");
        assert_eq!(first.cluster, second.cluster, "seed {seed}");
        assert_eq!(first.failure, second.failure, "seed {seed}");
        assert!(
            first.trace_events > 1000,
            "seed {seed}: suspiciously short run"
        );
        assert!(
            !second.trace_lines.is_empty(),
            "the Messages level keeps lines"
        );
    }
    assert_ne!(
        run(&RunOptions::new(3)).trace_hash,
        run(&RunOptions::new(4)).trace_hash
    );
}
