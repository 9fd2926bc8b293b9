//! The throughput benchmark's driver loop, run small to show it is correct, so the
//! figures it reports are for a loop that really commits and applies everything.

#[path = "../../benches/throughput/cluster.rs"]
mod cluster;

use cluster::{Cluster, COMPACT_INTERVAL_ENTRIES};
use concord_raft::storage::BOOTSTRAP_INDEX;

/// With 64 proposers each keeping one proposal outstanding, a few thousand proposals
/// run through the benchmark's loop (batched proposals, direct delivery, compaction
/// off the hot path); every proposal is then applied exactly once, each proposer's in
/// the order proposed, and all three nodes applied the same sequence.
#[test]
fn bench_loop_applies_every_proposal_once_in_the_same_order_on_every_node() {
    let proposers = 64;
    let mut cluster = Cluster::new(proposers, true);
    let first = cluster.run(3_000);
    let second = cluster.run(2_000);
    let compacted = cluster.check_applied();
    assert_eq!(
        compacted, [BOOTSTRAP_INDEX; 3],
        "too few entries to compact"
    );
    // The loop batches: after the first iteration every proposer proposes together.
    for stats in [first, second] {
        assert!(
            stats.iterations * 8 < stats.proposals,
            "{stats:?}: expected batches of many entries with {proposers} proposers"
        );
    }
}

/// Past [`COMPACT_INTERVAL_ENTRIES`] applied entries every node compacts its log
/// (through its driver's next write, as the runtime does) between iterations; the run
/// goes on over the compacted logs, still applying every proposal exactly once and in
/// order on every node.
#[test]
fn bench_loop_compacts_every_log_and_goes_on_exactly_once() {
    let mut cluster = Cluster::new(256, true);
    cluster.run(COMPACT_INTERVAL_ENTRIES + 2_000);
    let compacted = cluster.check_applied();
    for (position, index) in compacted.into_iter().enumerate() {
        assert!(
            index > COMPACT_INTERVAL_ENTRIES,
            "node {}: compacted to {index} only",
            position + 1
        );
    }
}
