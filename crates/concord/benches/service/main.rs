//! What the coordination service costs over the bare runtime: three `concord server`
//! processes on loopback with the durable log (fsync on), this process the client
//! through `concord-client`'s `ServiceClient`, against three `memstore serve`
//! processes (the runtime with a plain map, through `RaftClient`) in the same run,
//! with the disk's raw fsync latency beside them.
//!
//! Workloads, each timed for `CONCORD_BENCH_SECONDS` and repeated
//! `CONCORD_BENCH_REPEATS` times, memstore and concord alternating: 256 B puts from 1
//! proposer and from 256 (each proposer overwrites its own key, one request
//! outstanding), and linearizable gets from 64 readers. The table shows each
//! figure's median with its min–max spread, and the concord/memstore ratio (median of
//! the per-repeat ratios), against the targets: 1-proposer put p50 within 1.1x
//! memstore's; 256 proposers at least 0.8x memstore's puts/s with p99 at most 5 ms;
//! 64 readers at least 100,000 gets/s.
//!
//! The proposers are tasks sharing one client on a current-thread runtime (as in
//! memstore's benchmark: on 2 cores shared with the servers, a second client thread
//! costs more in wake-ups than it gives). The memstore servers are this benchmark's
//! own binary run again as `memstore serve` (`CONCORD_BENCH_ROLE=memstore`), so the
//! anchor is the same build.
//!
//! Without `--bench` (as `cargo test --benches` runs it), with `--quick`, or with
//! `CONCORD_BENCH_QUICK=1`, it is a smoke check: short runs, targets not judged.

#[allow(dead_code)]
#[path = "../../tests/it/cluster.rs"]
mod cluster;

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_bench_support::{
    raw_fsync, verdict, Bench, Environment, Mode, OptionError, Spread, Table, Variable,
    RAW_WRITE_BYTES_DEFAULT,
};
use concord_client::service::ServiceClient;
use concord_client::{ClientConfig, RaftClient, ReadMode};
use concord_memstore::store::{Command, Query};
use concord_node::{LogEntry, DEFAULT_GROUP};
use concord_service::command::{Op, Txn};
use concord_service::Limits;
use hdrhistogram::Histogram;

use cluster::Server;

/// Bytes of every put's value.
const VALUE_BYTES: usize = 256;
/// Proposers of the concurrent put row.
const PUT_PROPOSERS: usize = 256;
/// Readers of the get row.
const GET_READERS: usize = 64;
/// Timed runs per workload unless `CONCORD_BENCH_REPEATS` says otherwise.
const REPEATS_DEFAULT: usize = 3;
/// Length of a timed run unless `CONCORD_BENCH_SECONDS` says otherwise.
const RUN_DEFAULT: Duration = Duration::from_secs(3);
/// The lengths `CONCORD_BENCH_SECONDS` may ask for.
const RUN_ALLOWED: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(600);
/// The smoke check's run length.
const QUICK_RUN: Duration = Duration::from_millis(300);
/// Warm-up before each workload's timed runs.
const WARMUP: Duration = Duration::from_millis(500);
/// The namespace the benchmark writes in.
const NAMESPACE: &str = "bench";
/// The variable that makes this binary a memstore server.
const ROLE_VARIABLE: &str = "CONCORD_BENCH_ROLE";

const BENCH: Bench = Bench {
    name: "concord service bench",
    command: "cargo bench -p concord --bench service",
    quick: "one run of 0.3 s per workload (a smoke check)",
    variables: &[
        Variable {
            name: "REPEATS",
            value: "R",
            help: "timed runs per workload (default 3, quick 1)",
        },
        Variable {
            name: "SECONDS",
            value: "S",
            help: "length of a timed run, 0.001 to 600 (default 3, quick 0.3)",
        },
    ],
};

struct Options {
    mode: Mode,
    repeats: usize,
    run: Duration,
}

impl Options {
    fn read(mode: Mode, environment: &Environment<'_>) -> Result<Options, OptionError> {
        let quick = mode.is_quick();
        Ok(Options {
            mode,
            repeats: environment
                .count("REPEATS")?
                .map_or(if quick { 1 } else { REPEATS_DEFAULT }, |r| r as usize),
            run: environment
                .seconds("SECONDS", RUN_ALLOWED)?
                .unwrap_or(if quick { QUICK_RUN } else { RUN_DEFAULT }),
        })
    }
}

/// One timed run of one workload on one system.
#[derive(Clone, Copy)]
struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// The system under test: how one request of each workload is made.
trait System: Clone + Send + Sync + 'static {
    fn put(&self, proposer: usize) -> impl Future<Output = Result<(), String>> + Send;
    fn get(&self, reader: usize) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Clone)]
struct Memstore(RaftClient);

impl System for Memstore {
    async fn put(&self, proposer: usize) -> Result<(), String> {
        let command = Command::Put {
            key: format!("proposer-{proposer}"),
            value: "v".repeat(VALUE_BYTES),
        };
        self.0
            .propose(DEFAULT_GROUP, command.encode())
            .await
            .map(drop)
            .map_err(|error| format!("a memstore put failed: {error}"))
    }

    async fn get(&self, reader: usize) -> Result<(), String> {
        let query = Query::Get {
            key: format!("proposer-{}", reader % PUT_PROPOSERS),
        };
        self.0
            .read(DEFAULT_GROUP, query.encode(), ReadMode::Linearizable)
            .await
            .map(drop)
            .map_err(|error| format!("a memstore get failed: {error}"))
    }
}

#[derive(Clone)]
struct Concord(ServiceClient);

impl System for Concord {
    async fn put(&self, proposer: usize) -> Result<(), String> {
        let op = Op::BlobPut {
            path: ServiceClient::path(&format!("/proposer-{proposer}")).expect("a valid path"),
            value: Bytes::from("v".repeat(VALUE_BYTES)),
        };
        self.0
            .txn(NAMESPACE, Txn::single(op))
            .await
            .map(drop)
            .map_err(|error| format!("a concord put failed: {error}"))
    }

    async fn get(&self, reader: usize) -> Result<(), String> {
        self.0
            .get(NAMESPACE, &format!("/proposer-{}", reader % PUT_PROPOSERS))
            .await
            .map(drop)
            .map_err(|error| format!("a concord get failed: {error}"))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Put(usize),
    Get(usize),
}

impl Workload {
    fn label(self) -> String {
        match self {
            Workload::Put(n) => format!("put, {n} proposer{}", if n == 1 { "" } else { "s" }),
            Workload::Get(n) => format!("linearizable get, {n} readers"),
        }
    }
}

/// Runs `workload` on `system` for `duration`: requests per second and latencies.
async fn measure<S: System>(
    system: &S,
    workload: Workload,
    duration: Duration,
) -> Result<Run, String> {
    let (workers, put) = match workload {
        Workload::Put(n) => (n, true),
        Workload::Get(n) => (n, false),
    };
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let system = system.clone();
            tokio::spawn(async move {
                let mut latencies = new_histogram();
                let mut finished = Instant::now();
                while finished < deadline {
                    let sent = Instant::now();
                    if put {
                        system.put(worker).await?;
                    } else {
                        system.get(worker).await?;
                    }
                    finished = Instant::now();
                    latencies.saturating_record((finished - sent).as_nanos() as u64);
                }
                Ok::<_, String>((latencies, finished))
            })
        })
        .collect();
    let mut histogram = new_histogram();
    let mut last = start;
    for task in tasks {
        let (latencies, finished) = task.await.map_err(|error| error.to_string())??;
        histogram
            .add(&latencies)
            .map_err(|error| error.to_string())?;
        last = last.max(finished);
    }
    Ok(Run {
        per_second: histogram.len() as f64 / (last - start).as_secs_f64(),
        p50: Duration::from_nanos(histogram.value_at_quantile(0.5)),
        p99: Duration::from_nanos(histogram.value_at_quantile(0.99)),
    })
}

/// Nanoseconds from 1 µs to 60 s, 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn main() -> ExitCode {
    if std::env::var(ROLE_VARIABLE).as_deref() == Ok("memstore") {
        // This binary as a memstore server: the arguments after the program name.
        let args = std::env::args_os().skip(1);
        let exit = concord_memstore::run(
            std::iter::once("memstore".into()).chain(args),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return exit.into();
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

/// Three servers of `program`: the first founds, the others join through it.
fn start_three(
    program: &str,
    subcommand: &str,
    environment: Vec<(String, String)>,
    dir: &std::path::Path,
    found: &[&str],
) -> Vec<Server> {
    let found: Vec<String> = found.iter().map(|arg| arg.to_string()).collect();
    let (first, _) = Server::start_program(
        program,
        subcommand,
        environment.clone(),
        dir,
        1,
        "127.0.0.1:0",
        &found,
    );
    let join = vec!["--join".to_string(), first.address.clone()];
    let mut servers = vec![first];
    for id in [2, 3] {
        let (server, _) = Server::start_program(
            program,
            subcommand,
            environment.clone(),
            dir,
            id,
            "127.0.0.1:0",
            &join,
        );
        servers.push(server);
    }
    servers
}

fn bench(options: &Options) -> Result<(), String> {
    // On the same disk as the build, not in a tmpfs: fsync must mean something.
    let dir = tempfile::Builder::new()
        .prefix("concord-service-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .map_err(|error| format!("a scratch directory: {error}"))?;
    println!(
        "concord service vs memstore: 3 server processes each on loopback, durable log \
         (fsync on), {VALUE_BYTES} B blob puts and linearizable gets through the client"
    );
    println!(
        "  {} CPUs; data in {}; {} timed run(s) of {:.1} s per workload and system{}",
        std::thread::available_parallelism().map_or(0, |count| count.get()),
        dir.path().display(),
        options.repeats,
        options.run.as_secs_f64(),
        if options.mode.is_quick() {
            " (quick smoke check: pass --bench for the real run)"
        } else {
            ""
        }
    );
    let raw = raw_fsync(
        dir.path(),
        RAW_WRITE_BYTES_DEFAULT,
        if options.mode.is_quick() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        },
    )
    .map_err(|error| error.to_string())?;
    println!(
        "  raw disk: {RAW_WRITE_BYTES_DEFAULT} B write + fdatasync: p50 {:.0} us, p99 {:.0} us",
        raw.latency_at(0.5).as_secs_f64() * 1e6,
        raw.latency_at(0.99).as_secs_f64() * 1e6,
    );

    let me = std::env::current_exe().map_err(|error| error.to_string())?;
    let memstore_servers = start_three(
        &me.display().to_string(),
        "serve",
        vec![
            (ROLE_VARIABLE.to_string(), "memstore".to_string()),
            ("MEMSTORE_LOG".to_string(), "warn".to_string()),
        ],
        dir.path(),
        &["--bootstrap"],
    );
    let concord_servers = start_three(
        cluster::CONCORD,
        "server",
        vec![("CONCORD_LOG".to_string(), "warn".to_string())],
        dir.path(),
        &["--initial-cluster", "n1=1@127.0.0.1:0"],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("a runtime: {error}"))?;
    let config = ClientConfig {
        request_timeout_ms: 30_000,
        ..ClientConfig::default()
    };
    let addresses = |servers: &[Server]| servers.iter().map(|s| s.address.clone()).collect();
    let (memstore, concord) = runtime.block_on(async {
        let memstore = RaftClient::connect_many(addresses(&memstore_servers), config.clone())
            .await
            .map_err(|error| format!("connecting to memstore: {error}"))?;
        let concord = ServiceClient::connect(addresses(&concord_servers), config.clone())
            .await
            .map_err(|error| format!("connecting to concord: {error}"))?;
        concord
            .create_namespace(NAMESPACE, vec![], 3, Limits::default())
            .await
            .map_err(|error| format!("creating the namespace: {error}"))?;
        Ok::<_, String>((Memstore(memstore), Concord(concord)))
    })?;

    let workloads = [
        Workload::Put(1),
        Workload::Put(PUT_PROPOSERS),
        Workload::Get(GET_READERS),
    ];
    let mut results: Vec<(Workload, Vec<Run>, Vec<Run>)> = Vec::new();
    for workload in workloads {
        let (mut anchor_runs, mut service_runs) = (Vec::new(), Vec::new());
        runtime.block_on(async {
            measure(&memstore, workload, WARMUP).await?;
            measure(&concord, workload, WARMUP).await?;
            for _ in 0..options.repeats {
                anchor_runs.push(measure(&memstore, workload, options.run).await?);
                service_runs.push(measure(&concord, workload, options.run).await?);
            }
            Ok::<_, String>(())
        })?;
        if !options.mode.is_quick() {
            eprintln!("  {} measured", workload.label());
        }
        results.push((workload, anchor_runs, service_runs));
    }
    println!();
    let mut table = Table::new([
        "workload",
        "memstore /s",
        "concord /s",
        "ratio /s",
        "memstore p50 ms",
        "concord p50 ms",
        "ratio p50",
        "memstore p99 ms",
        "concord p99 ms",
    ]);
    let show = |spread: Spread, scale: f64, digits: usize| {
        format!(
            "{:.digits$} [{:.digits$}-{:.digits$}]",
            spread.median * scale,
            spread.min * scale,
            spread.max * scale
        )
    };
    let mut verdicts = Vec::new();
    for (workload, anchor, service) in &results {
        let rate = |runs: &[Run]| Spread::of(runs.iter().map(|run| run.per_second));
        let p50 = |runs: &[Run]| Spread::of(runs.iter().map(|run| run.p50.as_secs_f64()));
        let p99 = Spread::of(service.iter().map(|run| run.p99.as_secs_f64()));
        let anchor_p99 = Spread::of(anchor.iter().map(|run| run.p99.as_secs_f64()));
        let rate_ratio = Spread::of(
            anchor
                .iter()
                .zip(service)
                .map(|(a, s)| s.per_second / a.per_second),
        );
        let p50_ratio = Spread::of(
            anchor
                .iter()
                .zip(service)
                .map(|(a, s)| s.p50.as_secs_f64() / a.p50.as_secs_f64()),
        );
        table.push([
            workload.label(),
            show(rate(anchor), 1.0, 0),
            show(rate(service), 1.0, 0),
            show(rate_ratio, 1.0, 2),
            show(p50(anchor), 1e3, 2),
            show(p50(service), 1e3, 2),
            show(p50_ratio, 1.0, 2),
            show(anchor_p99, 1e3, 2),
            show(p99, 1e3, 2),
        ]);
        match workload {
            Workload::Put(1) => verdicts.push((
                "1-proposer put p50 within 1.1x memstore's".to_string(),
                p50_ratio.median,
                p50_ratio.median <= 1.1,
            )),
            Workload::Put(_) => {
                verdicts.push((
                    format!("{PUT_PROPOSERS} proposers: puts/s at least 0.8x memstore's"),
                    rate_ratio.median,
                    rate_ratio.median >= 0.8,
                ));
                verdicts.push((
                    format!("{PUT_PROPOSERS} proposers: p99 at most 5 ms (ms)"),
                    p99.median * 1e3,
                    p99.median <= 0.005,
                ));
            }
            Workload::Get(_) => verdicts.push((
                format!("{GET_READERS} readers: at least 100,000 linearizable gets/s"),
                rate(service).median,
                rate(service).median >= 100_000.0,
            )),
        }
    }
    table.print();
    println!();
    for (target, value, met) in verdicts {
        println!("  {target}: {value:.2} {}", verdict(options.mode, met));
    }
    drop(memstore_servers);
    drop(concord_servers);
    Ok(())
}
