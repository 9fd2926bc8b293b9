//! `concord-sim`: runs randomized simulations of a concord raft group and reports every
//! invariant violation with the command that replays it.
//!
//! ```text
//! concord-sim --seeds A..B [--machine kv|tree] [--storage mem|disk] [--ticks N] [--bug NAME] [--fault NAME]
//! concord-sim --seed N [--trace] [--storage mem|disk] [--ticks N] [--bug NAME] [--fault NAME]
//! ```
//!
//! Exit codes: 0 every run passed; 1 some run failed; 2 the command line was wrong.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use concord_raft::PlantedBug;
use concord_sim::checkers::CheckerKind;
use concord_sim::cluster::{Machine, SimFault};
use concord_sim::params::{planted_bug_from_name, planted_bug_name, PLANTED_BUGS};
use concord_sim::run::{run, RunOptions, RunReport};
use concord_sim::storage::StorageMode;
use concord_sim::trace::TraceLevel;

/// Prints a line to standard output; a closed pipe (`| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const USAGE: &str = "\
usage: concord-sim --seeds A..B [options]    run seeds A to B-1, report failures
       concord-sim --seed N [options]        replay one seed with a readable trace

options:
  --storage KIND  where nodes keep their logs: disk (concord-storage on a simulated disk,
                  with torn crashes and disk faults; the default) or mem (MemStorage)
  --machine KIND  the state machine every group runs: kv (the simulator's key-value map;
                  the default) or tree (the coordination service's namespace, each key a
                  blob)
  --ticks N       length of the safety phase in ticks (default: drawn from the seed)
  --bug NAME      plant a bug in the core: commit-old-term-by-count, vote-without-log-check,
                  lease-read-without-check-quorum, forget-vote
  --fault NAME    plant a fault in the simulator's driver: send-before-persist,
                  crash-loses-last-write, corrupt-persisted-entry, read-before-apply,
                  partition-forever, isolate-voter-forever, half-transactions (with
                  --machine tree)
  --trace         with --seed: print every message too, not just events
  --quiet         with --seed: print only the summary
  -h, --help      print this help

exit codes: 0 all runs passed, 1 a run failed, 2 bad command line";

/// What the command line asked for.
struct Command {
    seeds: std::ops::Range<u64>,
    single: bool,
    ticks: Option<u64>,
    bug: Option<PlantedBug>,
    fault: Option<SimFault>,
    storage: StorageMode,
    machine: Machine,
    trace: bool,
    quiet: bool,
}

fn parse(arguments: &[String]) -> Result<Option<Command>, String> {
    let mut command = Command {
        seeds: 0..0,
        single: false,
        ticks: None,
        bug: None,
        fault: None,
        storage: StorageMode::default(),
        machine: Machine::default(),
        trace: false,
        quiet: false,
    };
    let mut seeds_given = false;
    let mut iter = arguments.iter();
    let number = |flag: &str, value: Option<&String>| -> Result<u64, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse::<u64>()
            .map_err(|_| format!("{flag}: {value:?} is not a non-negative integer"))
    };
    while let Some(argument) = iter.next() {
        match argument.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seed" => {
                let seed = number("--seed", iter.next())?;
                if seeds_given {
                    return Err("give one of --seed and --seeds".into());
                }
                seeds_given = true;
                command.single = true;
                command.seeds = seed..seed.checked_add(1).ok_or("--seed: too large")?;
            }
            "--seeds" => {
                let value = iter.next().ok_or("--seeds needs a value like 0..1000")?;
                let (start, end) = value
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds: {value:?} is not a range like 0..1000"))?;
                let parse_bound = |text: &str| {
                    text.parse::<u64>()
                        .map_err(|_| format!("--seeds: {value:?} is not a range like 0..1000"))
                };
                let (start, end) = (parse_bound(start)?, parse_bound(end)?);
                if start >= end {
                    return Err(format!("--seeds: {value:?} is empty"));
                }
                if seeds_given {
                    return Err("give one of --seed and --seeds".into());
                }
                seeds_given = true;
                command.seeds = start..end;
            }
            "--ticks" => command.ticks = Some(number("--ticks", iter.next())?),
            "--bug" => {
                let name = iter.next().ok_or("--bug needs a name")?;
                let bug = planted_bug_from_name(name).ok_or_else(|| {
                    let names: Vec<&str> = PLANTED_BUGS.into_iter().map(planted_bug_name).collect();
                    format!("--bug: unknown bug {name:?}; known: {}", names.join(", "))
                })?;
                command.bug = Some(bug);
            }
            "--fault" => {
                let name = iter.next().ok_or("--fault needs a name")?;
                let fault = SimFault::from_name(name).ok_or_else(|| {
                    let names: Vec<&str> = SimFault::ALL.into_iter().map(SimFault::name).collect();
                    format!(
                        "--fault: unknown fault {name:?}; known: {}",
                        names.join(", ")
                    )
                })?;
                command.fault = Some(fault);
            }
            "--machine" => {
                let name = iter.next().ok_or("--machine needs kv or tree")?;
                command.machine = Machine::from_name(name).ok_or_else(|| {
                    format!("--machine: unknown state machine {name:?}; known: kv, tree")
                })?;
            }
            "--storage" => {
                let name = iter.next().ok_or("--storage needs mem or disk")?;
                command.storage = StorageMode::from_name(name).ok_or_else(|| {
                    format!("--storage: unknown storage {name:?}; known: mem, disk")
                })?;
            }
            "--trace" => command.trace = true,
            "--quiet" => command.quiet = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !seeds_given {
        return Err("give --seed N or --seeds A..B".into());
    }
    if (command.trace || command.quiet) && !command.single {
        return Err("--trace and --quiet go with --seed".into());
    }
    Ok(Some(command))
}

/// The command that replays `seed` as `command` ran it.
fn replay_command(seed: u64, command: &Command) -> String {
    let mut text = format!("cargo run --release -p concord-sim -- --seed {seed}");
    if command.storage != StorageMode::default() {
        text.push_str(&format!(" --storage {}", command.storage));
    }
    if command.machine != Machine::default() {
        text.push_str(&format!(" --machine {}", command.machine.name()));
    }
    if let Some(ticks) = command.ticks {
        text.push_str(&format!(" --ticks {ticks}"));
    }
    if let Some(bug) = command.bug {
        text.push_str(&format!(" --bug {}", planted_bug_name(bug)));
    }
    if let Some(fault) = command.fault {
        text.push_str(&format!(" --fault {}", fault.name()));
    }
    text
}

fn options(seed: u64, command: &Command) -> RunOptions {
    let mut options = RunOptions::new(seed);
    options.safety_ticks = command.ticks;
    options.planted_bug = command.bug;
    options.sim_fault = command.fault;
    options.storage = command.storage;
    options.machine = command.machine;
    if command.single && !command.quiet {
        options.trace_level = if command.trace {
            TraceLevel::Messages
        } else {
            TraceLevel::Events
        };
        options.trace_to_stdout = true;
    }
    options
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn summarize_one(report: &RunReport) {
    out!(
        "seed {}: {} ticks (liveness in {}), {} ops invoked, {} completed, {} unknown, {} checked; \
         {} entries applied, {} snapshots created, {} installed, {} crashes ({} torn, {} mid-write), \
         {} disk faults, {} membership changes; {} messages sent ({} bytes), {} lost, {} slow, {} cut; \
         trace hash {:016x}",
        report.params.seed,
        report.ticks,
        report
            .liveness_ticks
            .map(|ticks| format!("{ticks} ticks"))
            .unwrap_or_else(|| "-".into()),
        report.clients.invoked,
        report.clients.completed,
        report.clients.unknown,
        report.operations_checked,
        report.cluster.entries_applied,
        report.cluster.snapshots_created,
        report.cluster.snapshots_installed,
        report.cluster.crashes,
        report.cluster.torn_crashes,
        report.cluster.writes_interrupted,
        report.cluster.disk_faults,
        report.cluster.conf_changes_applied,
        report.network.sent,
        report.network.bytes_sent,
        report.network.lost,
        report.network.slowed,
        report.network.cut,
        report.trace_hash
    );
    if let Some(undecided) = &report.linearizability_undecided {
        out!("linearizability undecided: {undecided}");
    }
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&arguments) {
        Ok(Some(command)) => command,
        Ok(None) => {
            out!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("concord-sim: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if command.single {
        let seed = command.seeds.start;
        let report = run(&options(seed, &command));
        summarize_one(&report);
        return match &report.failure {
            None => {
                out!("seed {seed}: passed");
                ExitCode::SUCCESS
            }
            Some(failure) => {
                out!("seed {seed}: FAILED {failure}");
                out!("reproduce: {}", replay_command(seed, &command));
                ExitCode::from(1)
            }
        };
    }
    let started = Instant::now();
    let (mut passed, mut failed, mut operations, mut undecided) = (0u64, 0u64, 0u64, 0u64);
    let mut totals = concord_sim::cluster::ClusterStats::default();
    let mut failures_by_checker: std::collections::BTreeMap<CheckerKind, u64> = Default::default();
    for seed in command.seeds.clone() {
        let report = run(&options(seed, &command));
        operations += report.operations_checked;
        totals.crashes += report.cluster.crashes;
        totals.torn_crashes += report.cluster.torn_crashes;
        totals.writes_interrupted += report.cluster.writes_interrupted;
        totals.disk_faults += report.cluster.disk_faults;
        if report.linearizability_undecided.is_some() {
            undecided += 1;
        }
        match &report.failure {
            None => passed += 1,
            Some(failure) => {
                failed += 1;
                *failures_by_checker.entry(failure.checker).or_default() += 1;
                out!(
                    "seed {seed} FAILED [{}] {}  -- reproduce: {}",
                    failure.checker,
                    first_line(&failure.message),
                    replay_command(seed, &command)
                );
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let by_checker: Vec<String> = failures_by_checker
        .iter()
        .map(|(checker, count)| format!("{checker} {count}"))
        .collect();
    out!(
        "storage {}, machine {}: seeds run {}, passed {passed}, failed {failed}{}, operations checked {operations}, \
         linearizability undecided {undecided}; crashes {} ({} torn, {} mid-write), disk faults {}; \
         total time {seconds:.1}s",
        command.storage,
        command.machine.name(),
        passed + failed,
        if by_checker.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_checker.join(", "))
        },
        totals.crashes,
        totals.torn_crashes,
        totals.writes_interrupted,
        totals.disk_faults
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
