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
use concord_bench_support::{
    grouped, verdict, Bench, Environment, Mode, OptionError, Spread, Table, Variable,
};
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

/// The command line: `--quick` and the variables read.
const BENCH: Bench = Bench {
    name: "concord-node throughput",
    command: "cargo bench -p concord-node --bench throughput",
    quick: "small counts, every proposal checked (a smoke check)",
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
        Variable {
            name: "LOOP_THREADS",
            value: "1",
            help: "each raft loop on its own thread (production default)\n\
                   instead of a task on the shared runtime",
        },
        Variable {
            name: "DURABLE",
            value: "1",
            help: "the durable log with fsync (temporary directories)\n\
                   instead of the in-memory backend",
        },
    ],
};

struct Options {
    mode: Mode,
    /// Run each node's raft loop on a thread of its own (the production default)
    /// instead of as a task on the shared runtime.
    loop_threads: bool,
    /// Use the durable log (fsync on) in temporary directories instead of memory.
    durable: bool,
    repeats: usize,
    proposer_counts: Vec<u64>,
}

impl Options {
    fn read(mode: Mode, environment: &Environment<'_>) -> Result<Options, OptionError> {
        Ok(Options {
            mode,
            loop_threads: environment.flag("LOOP_THREADS")?.unwrap_or(false),
            durable: environment.flag("DURABLE")?.unwrap_or(false),
            repeats: environment
                .count("REPEATS")?
                .map_or(REPEATS_DEFAULT, |repeats| repeats as usize),
            proposer_counts: environment
                .counts("PROPOSERS")?
                .unwrap_or_else(|| PROPOSER_COUNTS.to_vec()),
        })
    }
}

struct Row {
    proposers: u64,
    proposals: u64,
    /// Elapsed seconds of the runs.
    seconds: Spread,
}

impl Row {
    fn proposals_per_second(&self) -> f64 {
        self.proposals as f64 / self.seconds.median
    }
}

fn main() -> ExitCode {
    let options = match BENCH.start(Options::read) {
        Ok(options) => options,
        Err(exit) => return exit,
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
                eprintln!("{}: {message}", BENCH.name);
                return ExitCode::from(1);
            }
        }
    }
    print_table(&rows);
    print_target(&rows, &options);
    ExitCode::SUCCESS
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
    if options.mode.is_quick() {
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
    let proposals = if options.mode.is_quick() {
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
    if options.mode.is_quick() {
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
    Ok(Row {
        proposers,
        proposals,
        seconds: Spread::of(seconds),
    })
}

fn print_table(rows: &[Row]) {
    let mut table = Table::new([
        "proposers",
        "proposals",
        "seconds",
        "proposals/s",
        "spread proposals/s",
        "ns/op",
        "reference/s",
        "ours/ref",
    ]);
    for row in rows {
        let slowest = row.proposals as f64 / row.seconds.max;
        let fastest = row.proposals as f64 / row.seconds.min;
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
        table.push([
            row.proposers.to_string(),
            grouped(row.proposals),
            format!("{:.3}", row.seconds.median),
            grouped(row.proposals_per_second() as u64),
            format!("{} – {}", grouped(slowest as u64), grouped(fastest as u64)),
            format!("{:.0}", row.seconds.median * 1e9 / row.proposals as f64),
            reference,
            ratio,
        ]);
    }
    table.print();
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
        println!(
            "target: >= {} proposals/s at {proposers} proposers: {}/s  {}",
            grouped(minimum as u64),
            grouped(rate as u64),
            verdict(options.mode, rate >= minimum)
        );
    }
}
