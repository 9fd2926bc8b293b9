//! Proposal throughput and latency of a real cluster: three `memstore serve`
//! processes on loopback with the durable log (every write batch waits for
//! fdatasync), and this process as the client, proposing over gRPC with
//! [`RaftClient`] straight to the leader. N proposers each keep one proposal of a
//! 256 B value outstanding: propose, wait for the applied response, propose the next.
//! The proposers are N tasks sharing one client (one connection), as the tasks of
//! one application would; the client carries whatever proposals are outstanding
//! together in `ProposeBatch` calls. The client runs on a current-thread runtime:
//! on 2 cores shared with three nodes, a multi-thread client's cross-thread
//! wake-ups cost the proposers more latency than its second thread gives (256
//! proposers: about 45k/s with p50 5.6 ms on two worker threads against 60k/s and
//! p50 3.9 ms on one, in back-to-back runs); it uses about 0.2 of a core.
//!
//! `cargo bench -p concord-memstore` measures 1, 64 and 256 proposers, each row
//! `CONCORD_BENCH_REPEATS` times (default 3; the table shows the median and the
//! min–max spread), and prints the targets with PASS or FAIL. It also measures the
//! disk's raw fsync latency (4 KiB write + fdatasync in a loop, in the same
//! directory as the nodes' data) and reads the leader's own counters (write batches
//! made durable, their latency) over each run, to show where the time goes.
//!
//! Without `--bench` (as `cargo test --benches` runs it), with `--quick`, or with
//! `CONCORD_BENCH_QUICK=1`, it is a smoke check: few, short runs, targets not judged.
//!
//! Environment: `CONCORD_BENCH_REPEATS`, `CONCORD_BENCH_PROPOSERS=1,256` (rows),
//! `CONCORD_BENCH_SECONDS` (length of a timed run, default 3),
//! `CONCORD_BENCH_EXACTLY_ONCE=0` (plain proposals without a client id, to see what
//! exactly-once costs; default 1).
//!
//! Exit codes: 0 on a completed run (whether or not the targets are met), 2 on a bad
//! argument or environment variable, 1 on a failed proposal or measurement.

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_bench_support::{
    raw_fsync, verdict, Bench, Environment, Mode, OptionError, Spread, Table, Variable,
    RAW_WRITE_BYTES_DEFAULT,
};
use concord_memstore::store::Command;
use concord_node::client::{ClientConfig, RaftClient};
use concord_node::{LogEntry, DEFAULT_GROUP};
use concord_raft::Role;
use hdrhistogram::Histogram;

use support::Server;

/// Proposer counts, one table row each.
const PROPOSER_COUNTS: [usize; 3] = [1, 64, 256];
/// Bytes of every proposal's value.
const VALUE_BYTES: usize = 256;
/// Timed runs per row unless `CONCORD_BENCH_REPEATS` says otherwise.
const REPEATS_DEFAULT: usize = 3;
/// Length of a timed run unless `CONCORD_BENCH_SECONDS` says otherwise.
const RUN_SECONDS_DEFAULT: f64 = 3.0;
/// The lengths of a timed run `CONCORD_BENCH_SECONDS` may ask for.
const RUN_ALLOWED: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(600);
/// The smoke check's rows, by proposer count.
const QUICK_PROPOSER_COUNTS: [usize; 2] = [1, 8];
/// The smoke check's timed runs per row.
const QUICK_REPEATS: usize = 1;
/// The length of the smoke check's timed runs.
const QUICK_RUN: Duration = Duration::from_millis(300);
/// How long the smoke check's raw fsync loop runs.
const QUICK_RAW_FSYNC_DURATION: Duration = Duration::from_millis(200);
/// How long each row warms up before its timed runs.
const WARMUP: Duration = Duration::from_millis(500);
/// How long the raw fsync loop runs.
const RAW_FSYNC_DURATION: Duration = Duration::from_secs(2);
/// Bytes of one raw write before its fdatasync (as the storage benchmark does).
const RAW_WRITE_BYTES: usize = RAW_WRITE_BYTES_DEFAULT;
/// Target: one proposer's median latency under this.
const TARGET_ONE_PROPOSER_P50: Duration = Duration::from_millis(1);
/// Target: this many proposers make at least this many proposals per second ...
const TARGET_THROUGHPUT: (usize, f64) = (256, 50_000.0);
/// ... with a 99th percentile latency under this.
const TARGET_P99: Duration = Duration::from_millis(20);

/// The command line: `--quick` and the variables read.
const BENCH: Bench = Bench {
    name: "memstore bench",
    command: "cargo bench -p concord-memstore",
    quick: "rows 1 and 8, one run of 0.3 s each (a smoke check)",
    variables: &[
        Variable {
            name: "REPEATS",
            value: "R",
            help: "timed runs per row (default 3, quick 1)",
        },
        Variable {
            name: "PROPOSERS",
            value: "N,N...",
            help: "only these rows (default 1,64,256, quick 1,8)",
        },
        Variable {
            name: "SECONDS",
            value: "S",
            help: "length of a timed run, 0.001 to 600 (default 3, quick 0.3)",
        },
        Variable {
            name: "EXACTLY_ONCE",
            value: "0|1",
            help: "proposals with a client id and request number (default 1) or plain (0)",
        },
    ],
};

/// Variables this benchmark read before they took the shared prefix, with their new
/// names: set, they would be ignored without a word.
const RENAMED_VARIABLES: [(&str, &str); 3] = [
    ("MEMSTORE_BENCH_REPEATS", "CONCORD_BENCH_REPEATS"),
    ("MEMSTORE_BENCH_PROPOSERS", "CONCORD_BENCH_PROPOSERS"),
    ("MEMSTORE_BENCH_SECONDS", "CONCORD_BENCH_SECONDS"),
];

struct Options {
    mode: Mode,
    repeats: usize,
    proposers: Vec<usize>,
    run: Duration,
    /// Proposals carry a client id and request number (the default, as `RaftClient`
    /// does); off, they are plain commands, as before exactly-once existed.
    exactly_once: bool,
}

impl Options {
    fn read(mode: Mode, environment: &Environment<'_>) -> Result<Options, OptionError> {
        let quick = mode.is_quick();
        Ok(Options {
            mode,
            repeats: environment.count("REPEATS")?.map_or(
                if quick {
                    QUICK_REPEATS
                } else {
                    REPEATS_DEFAULT
                },
                |repeats| repeats as usize,
            ),
            proposers: match environment.counts("PROPOSERS")? {
                Some(counts) => counts.into_iter().map(|count| count as usize).collect(),
                None if quick => QUICK_PROPOSER_COUNTS.to_vec(),
                None => PROPOSER_COUNTS.to_vec(),
            },
            exactly_once: environment.flag("EXACTLY_ONCE")?.unwrap_or(true),
            run: environment
                .seconds("SECONDS", RUN_ALLOWED)?
                .unwrap_or(if quick {
                    QUICK_RUN
                } else {
                    Duration::from_secs_f64(RUN_SECONDS_DEFAULT)
                }),
        })
    }
}

/// The leader's own counters at one moment (from its metrics endpoint), and the CPU
/// time of every process.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Write batches made durable (one fdatasync each).
    batches: f64,
    /// Seconds all those batches took from submit to durable.
    fsync_seconds: f64,
    /// Proposals whose entries committed and were handed to the apply task.
    commits: f64,
    /// Seconds from proposal to commit, summed.
    commit_seconds: f64,
    /// CPU seconds (user + system) the leader process used.
    leader_cpu: f64,
    /// CPU seconds the two followers used together.
    followers_cpu: f64,
    /// CPU seconds this process (the client) used.
    client_cpu: f64,
    /// CPU seconds the whole machine was busy (all processes, ours included).
    machine_cpu: f64,
}

impl Counters {
    fn read(nodes: &[Server], leader: usize) -> Counters {
        let node = &nodes[leader];
        let cpu = |pid: Option<u32>| pid.map_or(0.0, |pid| cpu_seconds(&pid.to_string()));
        Counters {
            // Counted by the fsync latency histogram: only batches that were written
            // and synced (the batch counter also counts turns with nothing to persist).
            batches: node.metric("concord_storage_fsync_seconds_count"),
            fsync_seconds: node.metric("concord_storage_fsync_seconds_sum"),
            commits: node.metric("concord_raft_commit_seconds_count"),
            commit_seconds: node.metric("concord_raft_commit_seconds_sum"),
            leader_cpu: cpu(node.pid()),
            followers_cpu: nodes
                .iter()
                .enumerate()
                .filter(|(position, _)| *position != leader)
                .map(|(_, node)| cpu(node.pid()))
                .sum(),
            client_cpu: cpu_seconds("self"),
            machine_cpu: machine_busy_seconds(),
        }
    }
}

/// CPU seconds every core of the machine has been busy (not idle, not waiting for
/// IO), from /proc/stat (0 where there is none).
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&position| ticks.get(position))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    busy / ticks_per_second.max(1) as f64
}

/// CPU seconds (user + system) process `pid` ("self" for this one) has used, from
/// /proc (0 where there is no /proc).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), closed by ')': state is
    // field 3, utime 14 and stime 15.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&position| fields.get(position)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / ticks_per_second.max(1) as f64
}

/// One timed run.
struct Run {
    proposals_per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Leader write batches (fdatasyncs) per second.
    batches_per_second: f64,
    /// Mean time of a leader write batch, submit to durable.
    fsync_mean: Duration,
    /// Proposals per leader write batch.
    proposals_per_batch: f64,
    /// Mean time from a proposal entering the leader's raft loop to its commit.
    commit_mean: Duration,
    /// CPU used, in cores (1.0 is one core busy all the run): leader, followers
    /// together, client, and every other process on the machine.
    cpu_cores: (f64, f64, f64, f64),
}

fn main() -> ExitCode {
    for (old, new) in RENAMED_VARIABLES {
        if std::env::var_os(old).is_some() {
            eprintln!("{}: {old} is now {new}", BENCH.name);
            return ExitCode::from(2);
        }
    }
    let options = match BENCH.start(Options::read) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    match bench(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", BENCH.name);
            ExitCode::FAILURE
        }
    }
}

fn bench(options: &Options) -> Result<(), String> {
    // On the same disk as the build, not in a tmpfs: fsync must mean something.
    let dir = tempfile::Builder::new()
        .prefix("memstore-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .map_err(|error| format!("a scratch directory: {error}"))?;
    println!(
        "memstore throughput: 3 `memstore serve` processes on loopback, durable log (fsync on), \
         this process proposing {VALUE_BYTES} B values over gRPC to the leader, {}",
        if options.exactly_once {
            "exactly once (client id and request number; CONCORD_BENCH_EXACTLY_ONCE=0 for plain)"
        } else {
            "as plain commands (CONCORD_BENCH_EXACTLY_ONCE=0)"
        }
    );
    println!(
        "  {} CPUs; data in {}; {} timed run(s) of {:.1} s per row after {} ms warm-up{}",
        std::thread::available_parallelism().map_or(0, |count| count.get()),
        dir.path().display(),
        options.repeats,
        options.run.as_secs_f64(),
        WARMUP.as_millis(),
        if options.mode.is_quick() {
            " (quick smoke check: pass --bench for the real run)"
        } else {
            ""
        }
    );
    let raw = raw_fsync(
        dir.path(),
        RAW_WRITE_BYTES,
        if options.mode.is_quick() {
            QUICK_RAW_FSYNC_DURATION
        } else {
            RAW_FSYNC_DURATION
        },
    )
    .map_err(|error| error.to_string())?;
    let raw_mean = raw.mean_latency();
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!(
        "  raw disk: {RAW_WRITE_BYTES} B write + fdatasync in a loop: mean {:.0} us, p50 {:.0} us, p99 {:.0} us ({:.0}/s)",
        micros(raw_mean),
        micros(raw.latency_at(0.5)),
        micros(raw.latency_at(0.99)),
        1.0 / raw_mean.as_secs_f64()
    );

    let mut nodes = vec![Server::start(
        dir.path(),
        1,
        "127.0.0.1:0",
        &["--bootstrap"],
    )];
    let first = nodes[0].address.clone();
    for id in [2, 3] {
        nodes.push(Server::start(
            dir.path(),
            id,
            "127.0.0.1:0",
            &["--join", &first],
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("a runtime: {error}"))?;
    let leader = runtime.block_on(find_leader(&nodes))?;
    let leader_address = nodes[leader].address.clone();
    println!("  leader: node {} at {leader_address}", nodes[leader].id);
    let round_trip = runtime.block_on(status_round_trips(
        &leader_address,
        if options.mode.is_quick() { 50 } else { 2000 },
    ))?;
    println!(
        "  gRPC round trip to the leader (status calls, no raft): p50 {:.0} us, p99 {:.0} us",
        round_trip.value_at_quantile(0.5) as f64 / 1e3,
        round_trip.value_at_quantile(0.99) as f64 / 1e3,
    );
    println!();

    let mut rows = Vec::new();
    for (position, &proposers) in options.proposers.iter().enumerate() {
        let client = runtime.block_on(connect(&leader_address, options.exactly_once))?;
        runtime.block_on(propose_for(&client, proposers, WARMUP))?;
        let mut runs = Vec::new();
        for _ in 0..options.repeats {
            let before = Counters::read(&nodes, leader);
            let (count, elapsed, histogram) =
                runtime.block_on(propose_for(&client, proposers, options.run))?;
            let after = Counters::read(&nodes, leader);
            let seconds = elapsed.as_secs_f64();
            let batches = after.batches - before.batches;
            let commits = after.commits - before.commits;
            runs.push(Run {
                proposals_per_second: count as f64 / elapsed.as_secs_f64(),
                p50: Duration::from_nanos(histogram.value_at_quantile(0.5)),
                p99: Duration::from_nanos(histogram.value_at_quantile(0.99)),
                max: Duration::from_nanos(histogram.max()),
                batches_per_second: batches / elapsed.as_secs_f64(),
                fsync_mean: Duration::from_secs_f64(
                    (after.fsync_seconds - before.fsync_seconds) / batches.max(1.0),
                ),
                proposals_per_batch: count as f64 / batches.max(1.0),
                commit_mean: Duration::from_secs_f64(
                    (after.commit_seconds - before.commit_seconds) / commits.max(1.0),
                ),
                cpu_cores: {
                    let leader = (after.leader_cpu - before.leader_cpu) / seconds;
                    let followers = (after.followers_cpu - before.followers_cpu) / seconds;
                    let client = (after.client_cpu - before.client_cpu) / seconds;
                    let machine = (after.machine_cpu - before.machine_cpu) / seconds;
                    let others = (machine - leader - followers - client).max(0.0);
                    (leader, followers, client, others)
                },
            });
        }
        rows.push(Row { proposers, runs });
        if !options.mode.is_quick() {
            // The table waits for every row; say how far it got.
            eprintln!(
                "  row {} of {} measured",
                position + 1,
                options.proposers.len()
            );
        }
    }
    table(&rows).print();
    println!();
    targets(&rows, options.mode);
    analysis(&rows, raw_mean);

    for node in &mut nodes {
        let status = node.terminate();
        if !status.success() {
            return Err(format!("node {} stopped with {status}", node.id));
        }
    }
    Ok(())
}

/// The position of the leader in `nodes`, once one leads.
async fn find_leader(nodes: &[Server]) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for (position, node) in nodes.iter().enumerate() {
            let Ok(client) = RaftClient::connect(node.address.clone()).await else {
                continue;
            };
            if let Ok(status) = client.status(DEFAULT_GROUP).await {
                if status.role == Role::Leader {
                    return Ok(position);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no leader in 10 s".into())
}

/// Latencies (ns) of `count` sequential status calls to `address`: the floor under a
/// proposal's latency that the client, gRPC and loopback set.
async fn status_round_trips(address: &str, count: usize) -> Result<Histogram<u64>, String> {
    let client = RaftClient::connect(address.to_string())
        .await
        .map_err(|error| format!("connecting to the leader: {error}"))?;
    let mut histogram = new_histogram();
    for _ in 0..count {
        let sent = Instant::now();
        client
            .status(DEFAULT_GROUP)
            .await
            .map_err(|error| format!("a status call failed: {error}"))?;
        histogram.saturating_record(sent.elapsed().as_nanos() as u64);
    }
    Ok(histogram)
}

/// The client every proposer shares.
async fn connect(leader: &str, exactly_once: bool) -> Result<RaftClient, String> {
    let config = ClientConfig {
        request_timeout_ms: 30_000,
        exactly_once,
        ..ClientConfig::default()
    };
    RaftClient::connect_with(leader.to_string(), config)
        .await
        .map_err(|error| format!("connecting to the leader: {error}"))
}

/// Runs `proposers` proposers for `duration`; answers how many proposals applied, in
/// how long (from the start to the last response), and their latencies (ns).
async fn propose_for(
    client: &RaftClient,
    proposers: usize,
    duration: Duration,
) -> Result<(u64, Duration, Histogram<u64>), String> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..proposers)
        .map(|proposer| {
            let client = client.clone();
            // Each proposer overwrites its own key: the map stays small.
            let command = Command::Put {
                key: format!("proposer-{proposer}"),
                value: "v".repeat(VALUE_BYTES),
            }
            .encode();
            tokio::spawn(async move { proposer_loop(client, command, deadline).await })
        })
        .collect();
    let mut histogram = new_histogram();
    let mut count = 0;
    let mut last = start;
    for task in tasks {
        let (done, latencies, finished) = task
            .await
            .map_err(|error| format!("a proposer panicked: {error}"))??;
        count += done;
        histogram
            .add(&latencies)
            .map_err(|error| format!("merging latencies: {error}"))?;
        last = last.max(finished);
    }
    Ok((count, last - start, histogram))
}

async fn proposer_loop(
    client: RaftClient,
    command: Bytes,
    deadline: Instant,
) -> Result<(u64, Histogram<u64>, Instant), String> {
    let mut latencies = new_histogram();
    let mut count = 0;
    let mut finished = Instant::now();
    while finished < deadline {
        let sent = Instant::now();
        client
            .propose(DEFAULT_GROUP, command.clone())
            .await
            .map_err(|error| format!("a proposal failed: {error}"))?;
        finished = Instant::now();
        latencies.saturating_record((finished - sent).as_nanos() as u64);
        count += 1;
    }
    Ok((count, latencies, finished))
}

/// Nanoseconds from 1 µs to 60 s, 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A row's timed runs.
struct Row {
    proposers: usize,
    runs: Vec<Run>,
}

impl Row {
    /// The median and spread of `figure` over the runs.
    fn spread(&self, figure: impl Fn(&Run) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(figure))
    }
}

/// The rows' medians, with the spread of the rate and of p99.
fn table(rows: &[Row]) -> Table {
    let mut table = Table::new([
        "proposers",
        "proposals/s (min-max)",
        "p50 ms",
        "p99 ms (min-max)",
        "max ms",
        "fsyncs/s",
        "fsync ms",
        "props/fsync",
        "commit ms",
        "CPU leader/foll./cl./other",
    ]);
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    for row in rows {
        let rate = row.spread(|run| run.proposals_per_second);
        let p99 = row.spread(|run| ms(run.p99));
        let median = |figure: &dyn Fn(&Run) -> f64| row.spread(figure).median;
        table.push([
            row.proposers.to_string(),
            format!("{:.0} ({:.0}-{:.0})", rate.median, rate.min, rate.max),
            format!("{:.3}", median(&|run| ms(run.p50))),
            format!("{:.2} ({:.1}-{:.1})", p99.median, p99.min, p99.max),
            format!("{:.1}", median(&|run| ms(run.max))),
            format!("{:.0}", median(&|run| run.batches_per_second)),
            format!("{:.3}", median(&|run| ms(run.fsync_mean))),
            format!("{:.1}", median(&|run| run.proposals_per_batch)),
            format!("{:.3}", median(&|run| ms(run.commit_mean))),
            format!(
                "{:.2}/{:.2}/{:.2}/{:.2}",
                median(&|run| run.cpu_cores.0),
                median(&|run| run.cpu_cores.1),
                median(&|run| run.cpu_cores.2),
                median(&|run| run.cpu_cores.3)
            ),
        ]);
    }
    table
}

fn targets(rows: &[Row], mode: Mode) {
    println!("targets:");
    if let Some(row) = rows.iter().find(|row| row.proposers == 1) {
        let p50 = row.spread(|run| run.p50.as_secs_f64()).median;
        let target = TARGET_ONE_PROPOSER_P50.as_secs_f64();
        println!(
            "  1 proposer p50 < {:.0} ms: {:.3} ms: {}{}",
            target * 1e3,
            p50 * 1e3,
            verdict(mode, p50 < target),
            missed_by(p50 / target, "over")
        );
    }
    let (count, rate_target) = TARGET_THROUGHPUT;
    if let Some(row) = rows.iter().find(|row| row.proposers == count) {
        let rate = row.spread(|run| run.proposals_per_second).median;
        println!(
            "  {count} proposers >= {rate_target:.0} proposals/s: {rate:.0}/s: {}{}",
            verdict(mode, rate >= rate_target),
            missed_by(rate_target / rate, "short")
        );
        let p99 = row.spread(|run| run.p99.as_secs_f64()).median;
        let target = TARGET_P99.as_secs_f64();
        println!(
            "  {count} proposers p99 < {:.0} ms: {:.2} ms: {}{}",
            target * 1e3,
            p99 * 1e3,
            verdict(mode, p99 < target),
            missed_by(p99 / target, "over")
        );
    }
}

/// " (N.Nx over)" when `ratio` (measured over target, the bad way) exceeds 1.
fn missed_by(ratio: f64, word: &str) -> String {
    if ratio > 1.0 {
        format!(" ({ratio:.1}x {word})")
    } else {
        String::new()
    }
}

/// Where the time goes: sequential fsyncs on one proposal's path, batching, and CPU.
fn analysis(rows: &[Row], raw_fsync: Duration) {
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    println!("where the time goes:");
    for row in rows {
        let median = |figure: &dyn Fn(&Run) -> f64| row.spread(figure).median;
        let rate = median(&|run| run.proposals_per_second);
        let batches = median(&|run| run.batches_per_second);
        let fsync = median(&|run| run.fsync_mean.as_secs_f64());
        let p50 = median(&|run| run.p50.as_secs_f64());
        let commit = median(&|run| run.commit_mean.as_secs_f64());
        let cpu = median(&|run| run.cpu_cores.0 + run.cpu_cores.1 + run.cpu_cores.2);
        let others = median(&|run| run.cpu_cores.3);
        let per_proposal = row.spread(|run| {
            let (leader, followers, client, _) = run.cpu_cores;
            (leader + followers + client) / run.proposals_per_second * 1e6
        });
        println!(
            "  {:>3} proposers: leader {:.2} fsyncs per proposal ({:.1} proposals per fsync, \
             {:.0} us each, raw disk {:.0} us); p50 {:.0} us = {:.1} leader fsyncs; \
             proposal->commit {:.0} us, commit->response {:.0} us; CPU: ours {:.2} + other processes {:.2} of {cores} cores, \
             {:.0} us ({:.0}-{:.0}) of CPU per proposal (all 4 processes)",
            row.proposers,
            batches / rate,
            rate / batches,
            fsync * 1e6,
            raw_fsync.as_secs_f64() * 1e6,
            p50 * 1e6,
            p50 / fsync,
            commit * 1e6,
            (p50 - commit).max(0.0) * 1e6,
            cpu,
            others,
            per_proposal.median,
            per_proposal.min,
            per_proposal.max
        );
    }
}
