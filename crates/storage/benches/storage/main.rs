//! Append throughput of concord-storage with fsync, next to the disk's raw fsync rate
//! measured in the same run, and the time to restart from a 1 GiB log.
//!
//! `cargo bench -p concord-storage` measures every row. Run without `--bench` (as
//! `cargo test --benches` does), with `--quick`, or with `CONCORD_BENCH_QUICK=1`, it is a
//! smoke check instead: tiny durations and a small log, every row's log reopened and
//! checked.
//!
//! Rows: 1 and 100 groups; entries of 16 B, 256 B and 4 KiB; 1 writer appending one
//! entry per write (latency), 64 writers appending one entry per write (group commit of
//! tiny writes), and 64 writers appending 16 entries per write (a raft `Ready` under
//! load). Writers pick groups round robin; a group's next index is taken under the
//! group's lock, the batch submitted, the lock released, then the writer waits for
//! durability, so one group can have many batches in flight (a pipelined driver).
//!
//! Environment: `CONCORD_BENCH_REPEATS` (default 3, quick 1) timed runs per row, the
//! median of each figure shown; `CONCORD_BENCH_DIR` where the logs go (default: the
//! system temp dir); `CONCORD_BENCH_RESTART_MIB` size of the restart log (default
//! 1024, quick 4).
//!
//! Exit codes: 0 on a completed run (whether or not the targets are met), 1 if the
//! storage failed, 2 on a bad argument or environment variable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_bench_support::{
    raw_fsync, verdict, Bench, Environment, Mode, OptionError, RawFsyncFile, Spread, Table,
    Variable, RAW_WRITE_BYTES_DEFAULT,
};
use concord_raft::{Entry, EntryKind, Storage};
use concord_storage::{Log, LogConfig, WriteBatch};

/// Timed runs per row unless `CONCORD_BENCH_REPEATS` says otherwise.
const REPEATS_DEFAULT: usize = 3;
/// Length of one timed run.
const RUN_DURATION: Duration = Duration::from_millis(1500);
/// Writers run this long before the timed window opens.
const WARMUP_DURATION: Duration = Duration::from_millis(300);
/// Single-writer rows alternate log and raw writes in slices this long.
const SLICE_DURATION: Duration = Duration::from_millis(100);
/// Length of the raw fsync measurement (taken before and after the rows).
const RAW_DURATION: Duration = Duration::from_secs(2);
/// Bytes of each raw write.
const RAW_WRITE_BYTES: usize = RAW_WRITE_BYTES_DEFAULT;
/// Size of the restart log unless `CONCORD_BENCH_RESTART_MIB` says otherwise.
const RESTART_MIB_DEFAULT: u64 = 1024;
/// Entry size, groups and entries per group per batch of the restart log.
const RESTART_ENTRY_BYTES: usize = 256;
const RESTART_GROUPS: u64 = 100;
const RESTART_ENTRIES_PER_GROUP_PER_BATCH: u64 = 40;

/// Targets from the issue.
const TARGET_ENTRIES_PER_SECOND_64_WRITERS_256B: f64 = 200_000.0;
const TARGET_SINGLE_WRITER_LATENCY_RATIO: f64 = 1.3;
const TARGET_RESTART_SECONDS: f64 = 5.0;

const QUICK_RUN_DURATION: Duration = Duration::from_millis(60);
const QUICK_WARMUP_DURATION: Duration = Duration::from_millis(20);
const QUICK_RAW_DURATION: Duration = Duration::from_millis(100);
const QUICK_RESTART_MIB: u64 = 4;

/// The command line: `--quick` and the variables read.
const BENCH: Bench = Bench {
    name: "concord-storage bench",
    command: "cargo bench -p concord-storage",
    quick: "tiny durations and log, every row checked (a smoke check)",
    variables: &[
        Variable {
            name: "REPEATS",
            value: "R",
            help: "timed runs per row (default 3, quick 1)",
        },
        Variable {
            name: "DIR",
            value: "PATH",
            help: "where the logs go (default: the system temp dir)",
        },
        Variable {
            name: "RESTART_MIB",
            value: "N",
            help: "size of the restart log in MiB (default 1024, quick 4)",
        },
    ],
};

struct Options {
    mode: Mode,
    repeats: usize,
    dir: PathBuf,
    restart_mib: u64,
}

impl Options {
    fn read(mode: Mode, environment: &Environment<'_>) -> Result<Options, OptionError> {
        let quick = mode.is_quick();
        Ok(Options {
            mode,
            repeats: environment
                .count("REPEATS")?
                .map_or(if quick { 1 } else { REPEATS_DEFAULT }, |repeats| {
                    repeats as usize
                }),
            dir: environment.path("DIR").unwrap_or_else(std::env::temp_dir),
            restart_mib: environment.count("RESTART_MIB")?.unwrap_or(if quick {
                QUICK_RESTART_MIB
            } else {
                RESTART_MIB_DEFAULT
            }),
        })
    }
}

#[derive(Clone, Copy)]
struct RowSpec {
    writers: u64,
    groups: u64,
    entry_bytes: usize,
    entries_per_write: u64,
}

struct Run {
    entries: u64,
    writes: u64,
    syncs: u64,
    seconds: f64,
    /// For single-writer rows: seconds per raw write + fdatasync, measured just before.
    raw_seconds: Option<f64>,
}

impl Run {
    fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.seconds
    }

    /// Microseconds from submit to durable, as each writer sees a write.
    fn write_micros(&self, writers: u64) -> f64 {
        self.seconds * 1e6 / self.writes as f64 * writers as f64
    }

    /// Seconds per write over seconds per raw write + fdatasync: the one interleaved
    /// with this run, else `raw_seconds`.
    fn latency_ratio(&self, writers: u64, raw_seconds: f64) -> f64 {
        self.write_micros(writers) / (self.raw_seconds.unwrap_or(raw_seconds) * 1e6)
    }
}

struct Row {
    spec: RowSpec,
    runs: Vec<Run>,
}

impl Row {
    /// The median and spread of `figure` over the runs.
    fn spread(&self, figure: impl Fn(&Run) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(figure))
    }
}

fn main() -> ExitCode {
    let options = match BENCH.start(Options::read) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("concord-storage bench: {message}");
            ExitCode::from(1)
        }
    }
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path, name: &str) -> Result<Self, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = parent.join(format!(
            "concord-storage-bench-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|error| format!("creating {}: {error}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row_specs() -> Vec<RowSpec> {
    let mut specs = Vec::new();
    for (writers, entries_per_write) in [(1, 1), (64, 1), (64, 16)] {
        for groups in [1, 100] {
            for entry_bytes in [16, 256, 4096] {
                specs.push(RowSpec {
                    writers,
                    groups,
                    entry_bytes,
                    entries_per_write,
                });
            }
        }
    }
    specs
}

fn run(options: &Options) -> Result<(), String> {
    println!("concord-storage append benchmark");
    println!(
        "  logs in {} (LogConfig::default(): {} MiB segments); every write waits for fdatasync",
        options.dir.display(),
        LogConfig::default().segment_bytes_max >> 20
    );
    println!(
        "  machine: {} cores, shared with other builds: expect noise; medians of {} run(s) of {:?}",
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        options.repeats,
        if options.mode.is_quick() {
            QUICK_RUN_DURATION
        } else {
            RUN_DURATION
        }
    );
    if options.mode.is_quick() {
        println!("  QUICK: a smoke check, not a measurement");
    }
    let raw_duration = if options.mode.is_quick() {
        QUICK_RAW_DURATION
    } else {
        RAW_DURATION
    };
    let raw_before = raw_fsync_seconds(&options.dir, raw_duration)?;
    println!(
        "  raw disk: {RAW_WRITE_BYTES} B write + fdatasync in a loop: {:.0} us each ({:.0}/s)",
        raw_before * 1e6,
        1.0 / raw_before
    );
    println!();
    let mut table = Table::new([
        "writers",
        "groups",
        "entry",
        "entries/write",
        "entries/s",
        "MB/s",
        "entries/fsync",
        "write (us)",
        "vs raw",
        "entries/s min..max",
    ]);
    let specs = row_specs();
    let mut rows = Vec::new();
    for (position, spec) in specs.iter().enumerate() {
        let row = measure_row(*spec, options)?;
        if !options.mode.is_quick() {
            // The table waits for every row; say how far it got.
            eprintln!("  row {} of {} measured", position + 1, specs.len());
        }
        let rate = row.spread(Run::entries_per_second);
        table.push([
            spec.writers.to_string(),
            spec.groups.to_string(),
            bytes_label(spec.entry_bytes),
            spec.entries_per_write.to_string(),
            format!("{:.0}", rate.median),
            format!("{:.1}", rate.median * spec.entry_bytes as f64 / 1e6),
            format!(
                "{:.1}",
                row.spread(|run| run.entries as f64 / run.syncs.max(1) as f64)
                    .median
            ),
            format!(
                "{:.0}",
                row.spread(|run| run.write_micros(spec.writers)).median
            ),
            format!(
                "{:.2}x",
                row.spread(|run| run.latency_ratio(spec.writers, raw_before))
                    .median
            ),
            format!("{:.0}..{:.0}", rate.min, rate.max),
        ]);
        rows.push(row);
    }
    table.print();
    let raw_after = raw_fsync_seconds(&options.dir, raw_duration)?;
    let raw = (raw_before + raw_after) / 2.0;
    println!();
    println!(
        "  raw disk again after the rows: {:.0} us ({:.0}/s); ratios below use the mean {:.0} us",
        raw_after * 1e6,
        1.0 / raw_after,
        raw * 1e6
    );
    println!("  write (us): time from submit to durable as each writer sees it");
    println!("  vs raw: that over one raw write + fdatasync; for 1 writer, raw writes interleaved with the run in");
    println!("  {SLICE_DURATION:?} slices (the disk's fsync latency drifts several-fold within seconds); else the first raw figure");

    let restart = measure_restart(options)?;

    println!();
    println!("targets:");
    let best_64 = rows
        .iter()
        .filter(|row| row.spec.writers == 64 && row.spec.entry_bytes == 256)
        .map(|row| (row.spread(Run::entries_per_second).median, row.spec))
        .fold((0.0, None), |best, (rate, spec)| {
            if rate > best.0 {
                (rate, Some(spec))
            } else {
                best
            }
        });
    if let (rate, Some(spec)) = best_64 {
        println!(
            "  64 writers, 256 B entries: {:.0} entries/s ({} groups, {} entries/write), target {:.0}: {}",
            rate,
            spec.groups,
            spec.entries_per_write,
            TARGET_ENTRIES_PER_SECOND_64_WRITERS_256B,
            verdict(
                options.mode,
                rate >= TARGET_ENTRIES_PER_SECOND_64_WRITERS_256B
            )
        );
        println!(
            "    (at {:.0} fsyncs/s that needs {:.0} entries per fsync)",
            1.0 / raw,
            TARGET_ENTRIES_PER_SECOND_64_WRITERS_256B * raw
        );
    }
    let worst_ratio = rows
        .iter()
        .filter(|row| row.spec.writers == 1)
        .map(|row| row.spread(|run| run.latency_ratio(1, raw)).median)
        .fold(0.0f64, f64::max);
    println!(
        "  single writer: worst write latency {:.2}x the raw fdatasync latency interleaved with it, target <= {:.1}x: {}",
        worst_ratio,
        TARGET_SINGLE_WRITER_LATENCY_RATIO,
        verdict(
            options.mode,
            worst_ratio <= TARGET_SINGLE_WRITER_LATENCY_RATIO
        )
    );
    println!(
        "  restart of a {} MiB log: {:.2} s (page cache warm){}, target < {:.0} s: {}",
        options.restart_mib,
        restart.warm_seconds,
        restart
            .cold_seconds
            .map(|cold| format!(", {cold:.2} s (its files evicted from the page cache)"))
            .unwrap_or_default(),
        TARGET_RESTART_SECONDS,
        verdict(
            options.mode,
            restart.cold_seconds.unwrap_or(restart.warm_seconds) < TARGET_RESTART_SECONDS
        )
    );
    Ok(())
}

fn bytes_label(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Seconds per raw write + fdatasync in one file in `parent`, over `duration`.
fn raw_fsync_seconds(parent: &Path, duration: Duration) -> Result<f64, String> {
    let run = raw_fsync(parent, RAW_WRITE_BYTES, duration).map_err(|error| error.to_string())?;
    Ok(run.seconds_per_fsync())
}

fn payload(entry_bytes: usize) -> Bytes {
    Bytes::from((0..entry_bytes).map(|byte| byte as u8).collect::<Vec<u8>>())
}

fn measure_row(spec: RowSpec, options: &Options) -> Result<Row, String> {
    let runs = (0..options.repeats)
        .map(|_| measure_run(spec, options))
        .collect::<Result<_, _>>()?;
    Ok(Row { spec, runs })
}

fn measure_run(spec: RowSpec, options: &Options) -> Result<Run, String> {
    let (warmup, duration) = if options.mode.is_quick() {
        (QUICK_WARMUP_DURATION, QUICK_RUN_DURATION)
    } else {
        (WARMUP_DURATION, RUN_DURATION)
    };
    if spec.writers == 1 {
        return measure_single_writer(spec, options, duration);
    }
    let dir = ScratchDir::new(&options.dir, "row")?;
    let log = Log::open(&dir.0, LogConfig::default()).map_err(|error| error.to_string())?;
    // Next index of each group, held while a batch is built and submitted.
    let next_indexes: Arc<Vec<Mutex<u64>>> =
        Arc::new((0..spec.groups).map(|_| Mutex::new(1)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let entries_done = Arc::new(AtomicU64::new(0));
    let writes_done = Arc::new(AtomicU64::new(0));
    let failure = Arc::new(Mutex::new(None::<String>));
    let barrier = Arc::new(Barrier::new(spec.writers as usize + 1));
    let data = payload(spec.entry_bytes);
    let handles: Vec<_> = (0..spec.writers)
        .map(|writer| {
            let log = log.clone();
            let next_indexes = next_indexes.clone();
            let stop = stop.clone();
            let entries_done = entries_done.clone();
            let writes_done = writes_done.clone();
            let failure = failure.clone();
            let barrier = barrier.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let group = (writer + round * spec.writers) % spec.groups;
                    round += 1;
                    let submitted = {
                        let mut next = next_indexes[group as usize].lock().unwrap();
                        let entries: Vec<Entry> = (0..spec.entries_per_write)
                            .map(|offset| Entry {
                                term: 1,
                                index: *next + offset,
                                kind: EntryKind::Normal,
                                data: data.clone(),
                            })
                            .collect();
                        *next += spec.entries_per_write;
                        let mut batch = WriteBatch::new();
                        batch.group(group + 1).entries = entries;
                        log.submit(batch)
                    };
                    if let Err(error) = submitted.and_then(|durable| durable.wait()) {
                        *failure.lock().unwrap() = Some(error.to_string());
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    entries_done.fetch_add(spec.entries_per_write, Ordering::Relaxed);
                    writes_done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(warmup);
    let (entries_start, writes_start, syncs_start) = (
        entries_done.load(Ordering::Relaxed),
        writes_done.load(Ordering::Relaxed),
        log.stats().syncs,
    );
    let start = Instant::now();
    std::thread::sleep(duration);
    let (entries_end, writes_end, syncs_end) = (
        entries_done.load(Ordering::Relaxed),
        writes_done.load(Ordering::Relaxed),
        log.stats().syncs,
    );
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().map_err(|_| "a writer panicked".to_string())?;
    }
    if let Some(message) = failure.lock().unwrap().take() {
        return Err(message);
    }
    // Every acknowledged entry must come back after a restart.
    drop(log);
    let log = Log::open(&dir.0, LogConfig::default()).map_err(|error| error.to_string())?;
    for (group, next) in next_indexes.iter().enumerate() {
        let expected = *next.lock().unwrap() - 1;
        let found = log.group(group as u64 + 1).last_index().unwrap();
        if found != expected {
            return Err(format!(
                "group {}: last index {found} after restart, expected {expected}",
                group + 1
            ));
        }
    }
    Ok(Run {
        entries: entries_end - entries_start,
        writes: writes_end - writes_start,
        syncs: syncs_end - syncs_start,
        seconds,
        raw_seconds: None,
    })
}

/// A single writer, compared with the raw loop fairly: the disk's fsync latency drifts
/// by several times within seconds here, so log writes and raw writes alternate in
/// slices of [`SLICE_DURATION`] over the whole run, on the same disk, and each side's
/// time is summed over its own slices.
fn measure_single_writer(
    spec: RowSpec,
    options: &Options,
    duration: Duration,
) -> Result<Run, String> {
    let dir = ScratchDir::new(&options.dir, "single")?;
    let log_dir = dir.0.join("log");
    let log = Log::open(&log_dir, LogConfig::default()).map_err(|error| error.to_string())?;
    let mut raw =
        RawFsyncFile::create_in(&dir.0, RAW_WRITE_BYTES).map_err(|error| error.to_string())?;
    let data = payload(spec.entry_bytes);
    let mut next_indexes = vec![1u64; spec.groups as usize];
    let slices = (duration.as_secs_f64() / SLICE_DURATION.as_secs_f64())
        .ceil()
        .max(1.0) as u64;
    let syncs_start = log.stats().syncs;
    let (mut log_seconds, mut log_writes) = (0.0, 0u64);
    let (mut raw_seconds, mut raw_writes) = (0.0, 0u64);
    for slice in 0..slices * 2 {
        if slice % 2 == 0 {
            let start = Instant::now();
            while start.elapsed() < SLICE_DURATION {
                let group = log_writes % spec.groups;
                let next = &mut next_indexes[group as usize];
                let mut batch = WriteBatch::new();
                batch.group(group + 1).entries = vec![Entry {
                    term: 1,
                    index: *next,
                    kind: EntryKind::Normal,
                    data: data.clone(),
                }];
                *next += 1;
                log.write(batch).map_err(|error| error.to_string())?;
                log_writes += 1;
            }
            log_seconds += start.elapsed().as_secs_f64();
        } else {
            let run = raw
                .run_for(SLICE_DURATION)
                .map_err(|error| error.to_string())?;
            raw_writes += run.count;
            raw_seconds += run.elapsed.as_secs_f64();
        }
    }
    let syncs = log.stats().syncs - syncs_start;
    drop(log);
    let log = Log::open(&log_dir, LogConfig::default()).map_err(|error| error.to_string())?;
    for (group, next) in next_indexes.iter().enumerate() {
        let found = log.group(group as u64 + 1).last_index().unwrap();
        if found != next - 1 {
            return Err(format!(
                "group {}: last index {found} after restart, expected {}",
                group + 1,
                next - 1
            ));
        }
    }
    Ok(Run {
        entries: log_writes,
        writes: log_writes,
        syncs,
        seconds: log_seconds,
        raw_seconds: Some(raw_seconds / raw_writes as f64),
    })
}

struct Restart {
    warm_seconds: f64,
    cold_seconds: Option<f64>,
}

/// Writes a log of `restart_mib` MiB (256 B entries over 100 groups), then times
/// opening it: once with its files in the page cache, once with them evicted.
fn measure_restart(options: &Options) -> Result<Restart, String> {
    let dir = ScratchDir::new(&options.dir, "restart")?;
    let target_bytes = options.restart_mib << 20;
    let log = Log::open(&dir.0, LogConfig::default()).map_err(|error| error.to_string())?;
    let data = payload(RESTART_ENTRY_BYTES);
    let started = Instant::now();
    let mut next = 1u64;
    while log.stats().bytes_written < target_bytes {
        let mut batch = WriteBatch::new();
        for group in 1..=RESTART_GROUPS {
            batch.group(group).entries = (0..RESTART_ENTRIES_PER_GROUP_PER_BATCH)
                .map(|offset| Entry {
                    term: 1,
                    index: next + offset,
                    kind: EntryKind::Normal,
                    data: data.clone(),
                })
                .collect();
        }
        next += RESTART_ENTRIES_PER_GROUP_PER_BATCH;
        log.write(batch).map_err(|error| error.to_string())?;
    }
    let stats = log.stats();
    drop(log);
    let entries = (next - 1) * RESTART_GROUPS;
    println!();
    println!(
        "restart: wrote {} MiB ({} entries of {RESTART_ENTRY_BYTES} B in {} groups, {} segments) in {:.1} s",
        stats.bytes_written >> 20,
        entries,
        RESTART_GROUPS,
        std::fs::read_dir(&dir.0).map_or(0, |names| names
            .filter_map(|name| name.ok())
            .filter(|name| name.file_name().to_string_lossy().starts_with("segment-"))
            .count()),
        started.elapsed().as_secs_f64()
    );
    let open = || -> Result<f64, String> {
        let start = Instant::now();
        let log = Log::open(&dir.0, LogConfig::default()).map_err(|error| error.to_string())?;
        let seconds = start.elapsed().as_secs_f64();
        let last = log.group(RESTART_GROUPS).last_index().unwrap();
        if last != next - 1 {
            return Err(format!(
                "restart found last index {last}, expected {}",
                next - 1
            ));
        }
        let report = log.recovery();
        println!(
            "  open: {:.2} s, {} segments, {} MiB, {} batches checked ({:.0} MiB/s)",
            seconds,
            report.segments,
            report.bytes >> 20,
            report.batches,
            (report.bytes >> 20) as f64 / seconds
        );
        Ok(seconds)
    };
    let warm_seconds = open()?;
    let cold_seconds = if evict_from_page_cache(&dir.0) {
        Some(open()?)
    } else {
        println!("  (could not evict the files from the page cache: no cold measurement)");
        None
    };
    Ok(Restart {
        warm_seconds,
        cold_seconds,
    })
}

/// Drops the page cache of the files in `dir` (only those), with `dd ... oflag=nocache`.
fn evict_from_page_cache(dir: &Path) -> bool {
    let Ok(names) = std::fs::read_dir(dir) else {
        return false;
    };
    for name in names.filter_map(|name| name.ok()) {
        let path = name.path();
        let status = std::process::Command::new("dd")
            .arg(format!("of={}", path.display()))
            .args([
                "oflag=nocache",
                "conv=notrunc,fdatasync",
                "count=0",
                "status=none",
            ])
            .status();
        if !matches!(status, Ok(status) if status.success()) {
            return false;
        }
    }
    true
}
