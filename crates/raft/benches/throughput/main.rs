//! Proposal throughput of concord-raft: three voters in one process, each run by
//! concord-group's `GroupDriver` (the driver the runtime and the simulator run), an
//! in-memory log, a state machine that keeps nothing, and N proposers that each keep
//! one proposal outstanding (see `cluster.rs` for the loop).
//!
//! `cargo bench -p concord-raft` measures every row. Run without `--bench` (as
//! `cargo test --benches` does), with `--quick`, or with `CONCORD_BENCH_QUICK=1`, it is a
//! smoke check instead: tiny counts, every applied entry recorded and checked.
//!
//! Environment: `CONCORD_BENCH_REPEATS` (default 5) sets how many timed runs each row
//! takes; the table shows their median and the min–max spread.
//! `CONCORD_BENCH_PROPOSERS=1,256` runs only those rows (for profiling one of them).
//!
//! Exit codes: 0 on a completed run (whether or not the targets are met), 2 on a bad
//! argument or environment variable.

mod cluster;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cluster::{Cluster, COMPACT_INTERVAL_ENTRIES, ENTRY_BYTES, NODE_COUNT, PAYLOAD_BYTES};
use concord_bench_support::{
    grouped, verdict, Bench, Environment, Mode, OptionError, Spread, Table, Variable,
};

/// Proposer counts, one table row each.
const PROPOSER_COUNTS: [u64; 4] = [1, 64, 256, 1024];

/// Proposals per second of the reference, an in-process benchmark of the same shape
/// on this machine class (numbers from the issue), by proposer count.
const REFERENCE_PROPOSALS_PER_SECOND: [(u64, f64); 4] = [
    (1, 9_400.0),
    (64, 183_000.0),
    (256, 307_000.0),
    (1024, 438_000.0),
];

/// Target: at least this many proposals per second with this many proposers.
const TARGET_THROUGHPUT: (u64, f64) = (256, 1_000_000.0);
/// Target: at most this many nanoseconds per proposal with this many proposers.
const TARGET_LATENCY: (u64, f64) = (1, 20_000.0);

/// Timed runs per row unless `CONCORD_BENCH_REPEATS` says otherwise.
const REPEATS_DEFAULT: usize = 5;
/// Fewest proposals in a timed run.
const RUN_PROPOSALS_MIN: u64 = 200_000;
/// Shortest a timed run should take; the proposal count is raised to reach it.
const RUN_DURATION_MIN: Duration = Duration::from_secs(1);
/// How long each row warms up before measuring the rate that sizes its timed runs.
const WARMUP_DURATION: Duration = Duration::from_millis(200);
/// How long each row measures the rate that sizes its timed runs.
const CALIBRATION_DURATION: Duration = Duration::from_millis(300);
/// Factor on the proposal count calibration gives, so a run stays above
/// [`RUN_DURATION_MIN`] when the timed runs go a little faster than calibration.
const CALIBRATION_HEADROOM: f64 = 1.25;
/// Proposals per warm-up and calibration step.
const WARMUP_STEP_PROPOSALS: u64 = 1_000;
/// Proposals in each run of the smoke check.
const QUICK_RUN_PROPOSALS: u64 = 2_000;

/// The command line: `--quick` and the variables read.
const BENCH: Bench = Bench {
    name: "concord-raft throughput",
    command: "cargo bench -p concord-raft --bench throughput",
    quick: "tiny counts, every applied entry checked (a smoke check)",
    variables: &[
        Variable {
            name: "REPEATS",
            value: "R",
            help: "timed runs per row (default 5)",
        },
        Variable {
            name: "PROPOSERS",
            value: "N,N...",
            help: "only these rows (default 1,64,256,1024)",
        },
    ],
};

/// How the binary was asked to run.
struct Options {
    mode: Mode,
    repeats: usize,
    /// The rows to run, by proposer count.
    proposer_counts: Vec<u64>,
}

impl Options {
    fn read(mode: Mode, environment: &Environment<'_>) -> Result<Options, OptionError> {
        Ok(Options {
            mode,
            repeats: environment
                .count("REPEATS")?
                .map_or(REPEATS_DEFAULT, |repeats| repeats as usize),
            proposer_counts: environment
                .counts("PROPOSERS")?
                .unwrap_or_else(|| PROPOSER_COUNTS.to_vec()),
        })
    }
}

/// One row's timed runs.
struct Row {
    proposers: u64,
    proposals: u64,
    /// Elapsed seconds of the runs.
    seconds: Spread,
    /// Mean entries per `propose_batch` of the runs.
    batch_entries_mean: Spread,
}

impl Row {
    fn proposals_per_second(&self) -> f64 {
        self.proposals as f64 / self.seconds.median
    }

    fn nanoseconds_per_proposal(&self) -> f64 {
        self.seconds.median * 1e9 / self.proposals as f64
    }
}

fn main() -> ExitCode {
    let options = match BENCH.start(Options::read) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    print_parameters(&options);
    let rows: Vec<Row> = options
        .proposer_counts
        .iter()
        .map(|&proposers| measure_row(proposers, &options))
        .collect();
    print_table(&rows);
    print_targets(&rows, &options);
    ExitCode::SUCCESS
}

fn print_parameters(options: &Options) {
    println!("concord-raft throughput");
    println!(
        "  {NODE_COUNT} voters in one process, single-threaded: one event loop drives every node's \
         GroupDriver (concord-group: the runtime's and the simulator's driver); \
         messages are delivered by calling step() on the target node"
    );
    println!(
        "  log: MemStorage, compacted every {} applied entries; state machine keeps nothing; \
         payload {PAYLOAD_BYTES} bytes ({ENTRY_BYTES} in the log with the driver's command tag)",
        grouped(COMPACT_INTERVAL_ENTRIES)
    );
    println!(
        "  each proposer keeps one proposal outstanding and proposes its next once the leader applies it;"
    );
    println!(
        "  each loop iteration queues every free proposer's entry with the leader's driver, which proposes them in one propose_batch,"
    );
    println!("  then runs Ready cycles (take_ready, persist, finish_ready, send, apply) on all nodes until none has work; no ticks");
    if options.mode.is_quick() {
        println!(
            "  QUICK smoke check: {} proposals per run, every applied entry checked on every node; \
             figures are not stable and targets are not judged",
            grouped(QUICK_RUN_PROPOSALS)
        );
    } else {
        println!(
            "  each run: at least {} proposals and about {:.1} s (sized by a {} ms warm-up and {} ms calibration)",
            grouped(RUN_PROPOSALS_MIN),
            RUN_DURATION_MIN.as_secs_f64(),
            WARMUP_DURATION.as_millis(),
            CALIBRATION_DURATION.as_millis()
        );
    }
    println!(
        "  repeats: {} per row (CONCORD_BENCH_REPEATS); median shown, spread = min–max proposals/s",
        options.repeats
    );
    if cfg!(debug_assertions) {
        println!("  NOTE: debug build, invariants are checked after every input; figures are not representative");
    }
    println!();
}

fn measure_row(proposers: u64, options: &Options) -> Row {
    let quick = options.mode.is_quick();
    let proposals = if quick {
        QUICK_RUN_PROPOSALS
    } else {
        calibrate(proposers)
    };
    let mut seconds = Vec::with_capacity(options.repeats);
    let mut batch_means = Vec::with_capacity(options.repeats);
    for _ in 0..options.repeats {
        // A fresh cluster per run; only `run` is timed, not the start or the election.
        let mut cluster = Cluster::new(proposers, quick);
        let start = Instant::now();
        let stats = cluster.run(proposals);
        let elapsed = start.elapsed().as_secs_f64();
        if quick {
            cluster.check_applied();
        }
        seconds.push(elapsed);
        batch_means.push(stats.proposals as f64 / stats.iterations as f64);
    }
    Row {
        proposers,
        proposals,
        seconds: Spread::of(seconds),
        batch_entries_mean: Spread::of(batch_means),
    }
}

/// Warms up a cluster, then measures its rate for [`CALIBRATION_DURATION`] and returns
/// the proposal count that makes a timed run last at least [`RUN_DURATION_MIN`] at
/// that rate (with some headroom), and at least [`RUN_PROPOSALS_MIN`].
fn calibrate(proposers: u64) -> u64 {
    let mut cluster = Cluster::new(proposers, false);
    let warmup_start = Instant::now();
    while warmup_start.elapsed() < WARMUP_DURATION {
        cluster.run(WARMUP_STEP_PROPOSALS);
    }
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < CALIBRATION_DURATION {
        done += cluster.run(WARMUP_STEP_PROPOSALS).proposals;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    let needed = (rate * RUN_DURATION_MIN.as_secs_f64() * CALIBRATION_HEADROOM).ceil() as u64;
    needed.max(RUN_PROPOSALS_MIN).div_ceil(10_000) * 10_000
}

fn print_table(rows: &[Row]) {
    let mut table = Table::new([
        "proposers",
        "proposals",
        "seconds",
        "proposals/s",
        "spread proposals/s",
        "ns/op",
        "batch",
        "reference/s",
        "ours/ref",
    ]);
    for row in rows {
        let slowest = row.proposals as f64 / row.seconds.max;
        let fastest = row.proposals as f64 / row.seconds.min;
        let (reference, ratio) = match reference_for(row.proposers) {
            Some(reference) => (
                grouped(reference as u64),
                format!("{:.2}x", row.proposals_per_second() / reference),
            ),
            None => ("-".into(), "-".into()),
        };
        table.push([
            row.proposers.to_string(),
            grouped(row.proposals),
            format!("{:.3}", row.seconds.median),
            grouped(row.proposals_per_second() as u64),
            format!("{} – {}", grouped(slowest as u64), grouped(fastest as u64)),
            format!("{:.0}", row.nanoseconds_per_proposal()),
            format!("{:.1}", row.batch_entries_mean.median),
            reference,
            ratio,
        ]);
    }
    table.print();
    println!();
    println!(
        "ns/op = median seconds / proposals; with 1 proposer it is the latency of one proposal."
    );
    println!("batch = mean entries per propose_batch in a run, the median of the runs.");
    println!(
        "reference: in-process benchmark of the same shape on this machine class (numbers from the issue): {}",
        REFERENCE_PROPOSALS_PER_SECOND
            .iter()
            .map(|(proposers, rate)| format!("{}/s at {proposers}", grouped(*rate as u64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn print_targets(rows: &[Row], options: &Options) {
    let (proposers, minimum) = TARGET_THROUGHPUT;
    if let Some(row) = rows.iter().find(|row| row.proposers == proposers) {
        let rate = row.proposals_per_second();
        println!(
            "target: >= {} proposals/s at {proposers} proposers: {}/s  {}",
            grouped(minimum as u64),
            grouped(rate as u64),
            verdict(options.mode, rate >= minimum)
        );
    }
    let (proposers, maximum) = TARGET_LATENCY;
    if let Some(row) = rows.iter().find(|row| row.proposers == proposers) {
        let latency = row.nanoseconds_per_proposal();
        println!(
            "target: <= {:.0} µs per proposal at {proposers} proposer: {:.2} µs  {}",
            maximum / 1_000.0,
            latency / 1_000.0,
            verdict(options.mode, latency <= maximum)
        );
    }
}

fn reference_for(proposers: u64) -> Option<f64> {
    REFERENCE_PROPOSALS_PER_SECOND
        .iter()
        .find(|(count, _)| *count == proposers)
        .map(|(_, rate)| *rate)
}
