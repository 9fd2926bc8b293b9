//! Proposal throughput of concord-raft: three voters in one process, an in-memory log,
//! a state machine that keeps nothing, and N proposers that each keep one proposal
//! outstanding (see `cluster.rs` for the loop).
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

use cluster::{Cluster, COMPACT_INTERVAL_ENTRIES, NODE_COUNT, PAYLOAD_BYTES};

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

/// How the binary was asked to run.
struct Options {
    quick: bool,
    repeats: usize,
    /// The rows to run, by proposer count.
    proposer_counts: Vec<u64>,
}

/// One row's timed runs.
struct Row {
    proposers: u64,
    proposals: u64,
    /// Elapsed time of each run, sorted.
    seconds: Vec<f64>,
    /// Mean entries per `propose_batch` in the median run.
    batch_entries_mean: f64,
}

impl Row {
    fn median_seconds(&self) -> f64 {
        let middle = self.seconds.len() / 2;
        if self.seconds.len() % 2 == 1 {
            self.seconds[middle]
        } else {
            (self.seconds[middle - 1] + self.seconds[middle]) / 2.0
        }
    }

    fn proposals_per_second(&self) -> f64 {
        self.proposals as f64 / self.median_seconds()
    }

    fn nanoseconds_per_proposal(&self) -> f64 {
        self.median_seconds() * 1e9 / self.proposals as f64
    }
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("concord-raft throughput: {message}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
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

const USAGE: &str = "\
usage: cargo bench -p concord-raft --bench throughput [-- --quick]
  --quick                   tiny counts, every applied entry checked (a smoke check)
environment:
  CONCORD_BENCH_QUICK=1     same as --quick
  CONCORD_BENCH_REPEATS=R   timed runs per row (default 5)
  CONCORD_BENCH_PROPOSERS=N,N...  only these rows (default 1,64,256,1024)
";

/// Parses the arguments (`--bench` is what `cargo bench` passes) and the environment
/// (read through `variable`). `Ok(None)` asks for the usage text.
fn parse_options(
    arguments: impl Iterator<Item = String>,
    variable: impl Fn(&str) -> Option<String>,
) -> Result<Option<Options>, String> {
    let mut benchmarking = false;
    let mut quick = false;
    for argument in arguments {
        match argument.as_str() {
            "--bench" => benchmarking = true,
            "--quick" => quick = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match variable("CONCORD_BENCH_QUICK").as_deref() {
        None | Some("") | Some("0") => {}
        Some("1") => quick = true,
        Some(other) => return Err(format!("CONCORD_BENCH_QUICK must be 0 or 1, not {other:?}")),
    }
    let repeats = match variable("CONCORD_BENCH_REPEATS").as_deref() {
        None | Some("") => REPEATS_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(repeats) if repeats > 0 => repeats,
            _ => {
                return Err(format!(
                    "CONCORD_BENCH_REPEATS must be a whole number of at least 1, not {text:?}"
                ))
            }
        },
    };
    let proposer_counts = match variable("CONCORD_BENCH_PROPOSERS").as_deref() {
        None | Some("") => PROPOSER_COUNTS.to_vec(),
        Some(text) => text
            .split(',')
            .map(|count| match count.trim().parse::<u64>() {
                Ok(count) if count > 0 => Ok(count),
                _ => Err(format!(
                    "CONCORD_BENCH_PROPOSERS must be a comma-separated list of counts of at least 1, \
                     not {text:?}"
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    // Without `--bench` the binary runs under `cargo test`: check, do not measure.
    Ok(Some(Options {
        quick: quick || !benchmarking,
        repeats,
        proposer_counts,
    }))
}

fn print_parameters(options: &Options) {
    println!("concord-raft throughput");
    println!(
        "  {NODE_COUNT} voters in one process, single-threaded: one event loop drives every node; \
         messages are delivered by calling step() on the target node"
    );
    println!(
        "  log: MemStorage, compacted every {} applied entries; state machine keeps nothing; \
         payload {PAYLOAD_BYTES} bytes",
        grouped(COMPACT_INTERVAL_ENTRIES)
    );
    println!(
        "  each proposer keeps one proposal outstanding and proposes its next once the leader applies it;"
    );
    println!(
        "  each loop iteration proposes every free proposer's entry in one propose_batch (the core's batching),"
    );
    println!("  then runs Ready cycles (persist, send, apply, advance) on all nodes until none has work; no ticks");
    if options.quick {
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
    let proposals = if options.quick {
        QUICK_RUN_PROPOSALS
    } else {
        calibrate(proposers)
    };
    let mut seconds = Vec::with_capacity(options.repeats);
    let mut batch_means = Vec::with_capacity(options.repeats);
    for _ in 0..options.repeats {
        // A fresh cluster per run; only `run` is timed, not the start or the election.
        let mut cluster = Cluster::new(proposers, options.quick);
        let start = Instant::now();
        let stats = cluster.run(proposals);
        let elapsed = start.elapsed().as_secs_f64();
        if options.quick {
            cluster.check_applied();
        }
        seconds.push(elapsed);
        batch_means.push((elapsed, stats.proposals as f64 / stats.iterations as f64));
    }
    seconds.sort_by(f64::total_cmp);
    batch_means.sort_by(|a, b| a.0.total_cmp(&b.0));
    Row {
        proposers,
        proposals,
        seconds,
        batch_entries_mean: batch_means[batch_means.len() / 2].1,
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
    println!(
        "{:>9} {:>11} {:>8} {:>13} {:>25} {:>9} {:>7} {:>13} {:>9}",
        "proposers",
        "proposals",
        "seconds",
        "proposals/s",
        "spread proposals/s",
        "ns/op",
        "batch",
        "reference/s",
        "ours/ref"
    );
    for row in rows {
        let slowest = row.proposals as f64 / row.seconds[row.seconds.len() - 1];
        let fastest = row.proposals as f64 / row.seconds[0];
        let spread = format!("{} – {}", grouped(slowest as u64), grouped(fastest as u64));
        let (reference, ratio) = match reference_for(row.proposers) {
            Some(reference) => (
                grouped(reference as u64),
                format!("{:.2}x", row.proposals_per_second() / reference),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:>9} {:>11} {:>8.3} {:>13} {:>25} {:>9.0} {:>7.1} {:>13} {:>9}",
            row.proposers,
            grouped(row.proposals),
            row.median_seconds(),
            grouped(row.proposals_per_second() as u64),
            spread,
            row.nanoseconds_per_proposal(),
            row.batch_entries_mean,
            reference,
            ratio
        );
    }
    println!();
    println!(
        "ns/op = median seconds / proposals; with 1 proposer it is the latency of one proposal."
    );
    println!("batch = mean entries per propose_batch in the median run.");
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
    let verdict = |met: bool| {
        if options.quick {
            "not judged (quick)"
        } else if met {
            "PASS"
        } else {
            "FAIL"
        }
    };
    let (proposers, minimum) = TARGET_THROUGHPUT;
    if let Some(row) = rows.iter().find(|row| row.proposers == proposers) {
        let rate = row.proposals_per_second();
        println!(
            "target: >= {} proposals/s at {proposers} proposers: {}/s  {}",
            grouped(minimum as u64),
            grouped(rate as u64),
            verdict(rate >= minimum)
        );
    }
    let (proposers, maximum) = TARGET_LATENCY;
    if let Some(row) = rows.iter().find(|row| row.proposers == proposers) {
        let latency = row.nanoseconds_per_proposal();
        println!(
            "target: <= {:.0} µs per proposal at {proposers} proposer: {:.2} µs  {}",
            maximum / 1_000.0,
            latency / 1_000.0,
            verdict(latency <= maximum)
        );
    }
}

fn reference_for(proposers: u64) -> Option<f64> {
    REFERENCE_PROPOSALS_PER_SECOND
        .iter()
        .find(|(count, _)| *count == proposers)
        .map(|(_, rate)| *rate)
}

/// `1234567` as `1,234,567`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
