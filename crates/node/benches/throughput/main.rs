//! Proposal throughput of the concord-node runtime: three nodes in one process, the
//! in-memory storage backend and the in-process memory transport, through the whole
//! async runtime (request queue, raft loop thread, apply tasks, oneshot replies). N
//! proposer tasks each keep one proposal outstanding: propose, wait for the state
//! machine's response, propose the next.
//!
//! Same rows as concord-raft's `throughput` benchmark (1, 64, 256, 1024 proposers),
//! for comparison with the core alone and with the reference.
//!
//! `cargo bench -p concord-node` measures every row. Run without `--bench` (as
//! `cargo test --benches` does), with `--quick`, or with `CONCORD_BENCH_QUICK=1`, it is
//! a smoke check: small counts, every proposal checked to apply.
//!
//! Environment: `CONCORD_BENCH_REPEATS` (default 5) sets the timed runs per row (the
//! table shows their median and the min–max spread); `CONCORD_BENCH_PROPOSERS=1,256`
//! runs only those rows.
//!
//! Exit codes: 0 on a completed run (whether or not the target is met), 2 on a bad
//! argument or environment variable, 1 if the cluster could not start.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_node::transport::memory::MemoryNetwork;
use concord_node::transport::Transport;
use concord_node::{
    ApplyContext, GroupId, Node, NodeConfig, NodeHandle, StateMachine, StateMachineError,
    DEFAULT_GROUP,
};
use concord_raft::Role;

/// Proposer counts, one table row each.
const PROPOSER_COUNTS: [u64; 4] = [1, 64, 256, 1024];
/// Proposals per second of the reference in-process benchmark of this shape (numbers
/// from the issue), by proposer count.
const REFERENCE_PROPOSALS_PER_SECOND: [(u64, f64); 4] = [
    (1, 9_400.0),
    (64, 183_000.0),
    (256, 307_000.0),
    (1024, 438_000.0),
];
/// Target: at least this many proposals per second with this many proposers.
const TARGET_THROUGHPUT: (u64, f64) = (256, 600_000.0);
/// Timed runs per row unless `CONCORD_BENCH_REPEATS` says otherwise.
const REPEATS_DEFAULT: usize = 5;
/// How long a timed run should take; its proposal count is sized for it.
const RUN_DURATION: Duration = Duration::from_secs(1);
/// How long each row warms up (and measures the rate that sizes its runs).
const WARMUP_DURATION: Duration = Duration::from_millis(500);
/// Proposals per run in the smoke check.
const QUICK_RUN_PROPOSALS: u64 = 2_000;
/// Bytes of every proposal's payload.
const PAYLOAD_BYTES: usize = 16;

/// A state machine that keeps nothing: applying answers an empty response.
struct Discard;

impl StateMachine for Discard {
    fn apply(
        &mut self,
        _context: &mut ApplyContext<'_>,
        _command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::new())
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::new())
    }

    fn snapshot(&self, _sink: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        Ok(())
    }

    fn restore(&mut self, _source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        Ok(())
    }
}

struct Options {
    quick: bool,
    /// Run each node's raft loop on a thread of its own (the production default)
    /// instead of as a task on the shared runtime.
    loop_threads: bool,
    /// Use the durable log (fsync on) in temporary directories instead of memory.
    durable: bool,
    repeats: usize,
    proposer_counts: Vec<u64>,
}

struct Row {
    proposers: u64,
    proposals: u64,
    /// Elapsed seconds of each run, sorted.
    seconds: Vec<f64>,
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
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("concord-node throughput: {message}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    print_parameters(&options);
    let mut rows = Vec::new();
    for &proposers in &options.proposer_counts {
        match runtime.block_on(measure_row(proposers, &options)) {
            Ok(row) => rows.push(row),
            Err(message) => {
                eprintln!("concord-node throughput: {message}");
                return ExitCode::from(1);
            }
        }
    }
    print_table(&rows);
    print_target(&rows, &options);
    ExitCode::SUCCESS
}

const USAGE: &str = "\
usage: cargo bench -p concord-node --bench throughput [-- --quick]
  --quick                   small counts, every proposal checked (a smoke check)
environment:
  CONCORD_BENCH_QUICK=1     same as --quick
  CONCORD_BENCH_REPEATS=R   timed runs per row (default 5)
  CONCORD_BENCH_PROPOSERS=N,N...  only these rows (default 1,64,256,1024)
  CONCORD_BENCH_LOOP_THREADS=1    each raft loop on its own thread (production default)
                            instead of a task on the shared runtime
  CONCORD_BENCH_DURABLE=1   the durable log with fsync (temporary directories)
                            instead of the in-memory backend
";

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
                    "CONCORD_BENCH_PROPOSERS must be a comma-separated list of counts of at least 1, not {text:?}"
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let loop_threads = match variable("CONCORD_BENCH_LOOP_THREADS").as_deref() {
        None | Some("") | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(format!(
                "CONCORD_BENCH_LOOP_THREADS must be 0 or 1, not {other:?}"
            ))
        }
    };
    let durable = match variable("CONCORD_BENCH_DURABLE").as_deref() {
        None | Some("") | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(format!(
                "CONCORD_BENCH_DURABLE must be 0 or 1, not {other:?}"
            ))
        }
    };
    Ok(Some(Options {
        quick: quick || !benchmarking,
        loop_threads,
        durable,
        repeats,
        proposer_counts,
    }))
}

fn print_parameters(options: &Options) {
    println!("concord-node throughput");
    let workers = std::thread::available_parallelism().map_or(1, |count| count.get());
    println!(
        "  3 nodes in one process: {} storage, in-process memory transport, \
         tokio multi-thread runtime ({workers} workers)",
        if options.durable {
            "DURABLE (concord-storage log in temporary directories, fsync per batch; CONCORD_BENCH_DURABLE=1)"
        } else {
            "in-memory"
        }
    );
    if options.loop_threads {
        println!("  raft loops: one thread per node (CONCORD_BENCH_LOOP_THREADS=1; the production default)");
    } else {
        println!(
            "  raft loops: tasks on the shared runtime (NodeBuilder::raft_loop_on_runtime); \
             CONCORD_BENCH_LOOP_THREADS=1 for a thread per node"
        );
    }
    println!(
        "  each proposer task keeps one proposal ({PAYLOAD_BYTES} bytes) outstanding through \
         NodeHandle::propose on the leader and waits for the applied response; state machine keeps nothing"
    );
    if options.quick {
        println!(
            "  QUICK smoke check: {QUICK_RUN_PROPOSALS} proposals per run; figures are not stable and the target is not judged"
        );
    } else {
        println!(
            "  each run about {:.1} s (sized by a {} ms warm-up); {} runs per row (CONCORD_BENCH_REPEATS); \
             median shown, spread = min–max proposals/s",
            RUN_DURATION.as_secs_f64(),
            WARMUP_DURATION.as_millis(),
            options.repeats
        );
    }
    if cfg!(debug_assertions) {
        println!("  NOTE: debug build; figures are not representative");
    }
    println!();
}

/// Three nodes with group [`DEFAULT_GROUP`], node 1 leading.
async fn start_cluster(
    loop_threads: bool,
    durable: Option<&tempfile::TempDir>,
) -> Result<Vec<NodeHandle>, String> {
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    let members: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("memory-{id}"))).collect();
    for id in 1..=3u64 {
        let config = NodeConfig {
            listen_address: format!("memory-{id}"),
            // No elections or heartbeats get in the way of the measurement.
            tick_interval_ms: 100,
            proposal_timeout_ms: 60_000,
            snapshot_interval_entries: 1_000_000,
            snapshot_trailing_entries: 1_000,
            ..NodeConfig::new(
                id,
                durable.map_or_else(
                    || "unused".into(),
                    |dir| dir.path().join(format!("node-{id}")),
                ),
            )
        };
        let network = network.clone();
        let mut builder = Node::builder(config, |_: GroupId| Discard).without_server();
        if durable.is_none() {
            builder = builder.memory_storage();
        }
        builder = builder.transport(Box::new(move |inbox| -> Arc<dyn Transport> {
            Arc::new(network.register(id, inbox))
        }));
        if !loop_threads {
            builder = builder.raft_loop_on_runtime();
        }
        let node = builder.start().await.map_err(|error| error.to_string())?;
        node.bootstrap(&members)
            .await
            .map_err(|error| error.to_string())?;
        nodes.push(node);
    }
    nodes[0]
        .campaign(DEFAULT_GROUP)
        .await
        .map_err(|error| error.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = nodes[0]
            .status(DEFAULT_GROUP)
            .await
            .map_err(|error| error.to_string())?;
        if status.role == Role::Leader && status.commit > 1 {
            return Ok(nodes);
        }
        if Instant::now() > deadline {
            return Err("node 1 did not become leader".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `proposals` proposals through `proposers` tasks on `leader`; returns the
/// elapsed time.
async fn run(leader: &NodeHandle, proposers: u64, proposals: u64) -> Result<Duration, String> {
    let remaining = Arc::new(AtomicU64::new(proposals));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(proposers as usize);
    for proposer in 0..proposers {
        let leader = leader.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequence = 0u64;
            let mut last_index = 0;
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                let mut payload = [0u8; PAYLOAD_BYTES];
                payload[..8].copy_from_slice(&proposer.to_le_bytes());
                payload[8..].copy_from_slice(&sequence.to_le_bytes());
                sequence += 1;
                let applied = leader
                    .propose(DEFAULT_GROUP, Bytes::copy_from_slice(&payload))
                    .await
                    .map_err(|error| error.to_string())?;
                if applied.index <= last_index {
                    return Err(format!(
                        "proposal applied at {} after {last_index}",
                        applied.index
                    ));
                }
                last_index = applied.index;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(start.elapsed())
}

async fn measure_row(proposers: u64, options: &Options) -> Result<Row, String> {
    let directory = if options.durable {
        Some(tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?)
    } else {
        None
    };
    let nodes = start_cluster(options.loop_threads, directory.as_ref()).await?;
    let leader = &nodes[0];
    let proposals = if options.quick {
        QUICK_RUN_PROPOSALS
    } else {
        // Warm up, and size the runs from the warm-up's rate.
        let mut done = 0u64;
        let warmup = Instant::now();
        while warmup.elapsed() < WARMUP_DURATION {
            let step = (proposers * 50).max(1_000);
            run(leader, proposers, step).await?;
            done += step;
        }
        let rate = done as f64 / warmup.elapsed().as_secs_f64();
        ((rate * RUN_DURATION.as_secs_f64()) as u64)
            .max(proposers * 10)
            .div_ceil(1_000)
            * 1_000
    };
    let mut seconds = Vec::with_capacity(options.repeats);
    for _ in 0..options.repeats {
        seconds.push(run(leader, proposers, proposals).await?.as_secs_f64());
    }
    if options.quick {
        // Every node applied everything.
        let commit = leader
            .status(DEFAULT_GROUP)
            .await
            .map_err(|e| e.to_string())?
            .commit;
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &nodes {
            while node
                .status(DEFAULT_GROUP)
                .await
                .map_err(|e| e.to_string())?
                .applied
                < commit
            {
                if Instant::now() > deadline {
                    return Err(format!("node {} did not apply everything", node.node_id()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for node in &nodes {
        node.shutdown().await;
    }
    seconds.sort_by(f64::total_cmp);
    Ok(Row {
        proposers,
        proposals,
        seconds,
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:>9} {:>11} {:>8} {:>13} {:>25} {:>9} {:>13} {:>9}",
        "proposers",
        "proposals",
        "seconds",
        "proposals/s",
        "spread proposals/s",
        "ns/op",
        "reference/s",
        "ours/ref"
    );
    for row in rows {
        let slowest = row.proposals as f64 / row.seconds[row.seconds.len() - 1];
        let fastest = row.proposals as f64 / row.seconds[0];
        let (reference, ratio) = match REFERENCE_PROPOSALS_PER_SECOND
            .iter()
            .find(|(count, _)| *count == row.proposers)
        {
            Some((_, reference)) => (
                grouped(*reference as u64),
                format!("{:.2}x", row.proposals_per_second() / reference),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:>9} {:>11} {:>8.3} {:>13} {:>25} {:>9.0} {:>13} {:>9}",
            row.proposers,
            grouped(row.proposals),
            row.median_seconds(),
            grouped(row.proposals_per_second() as u64),
            format!("{} – {}", grouped(slowest as u64), grouped(fastest as u64)),
            row.median_seconds() * 1e9 / row.proposals as f64,
            reference,
            ratio
        );
    }
    println!();
    println!(
        "ns/op = median seconds / proposals; with 1 proposer it is the latency of one proposal."
    );
    println!(
        "reference: in-process benchmark of the same shape (numbers from the issue): {}",
        REFERENCE_PROPOSALS_PER_SECOND
            .iter()
            .map(|(proposers, rate)| format!("{}/s at {proposers}", grouped(*rate as u64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn print_target(rows: &[Row], options: &Options) {
    let (proposers, minimum) = TARGET_THROUGHPUT;
    if let Some(row) = rows.iter().find(|row| row.proposers == proposers) {
        let rate = row.proposals_per_second();
        let verdict = if options.quick {
            "not judged (quick)"
        } else if rate >= minimum {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "target: >= {} proposals/s at {proposers} proposers: {}/s  {verdict}",
            grouped(minimum as u64),
            grouped(rate as u64)
        );
    }
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
