//! The throughput benchmark's driver loop, run small to show it is correct, so the
//! figures it reports are for a loop that really commits and applies everything.

#[path = "../../benches/throughput/cluster.rs"]
mod cluster;

use cluster::Cluster;

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
    cluster.check_applied();
    // The loop batches: after the first iteration every proposer proposes together.
    for stats in [first, second] {
        assert!(
            stats.iterations * 8 < stats.proposals,
            "{stats:?}: expected batches of many entries with {proposers} proposers"
        );
    }
}
