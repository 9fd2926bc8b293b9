//! The raw fsync anchor: how fast this disk makes a small write durable with nothing
//! in between, so a durable benchmark's figures can be read against it.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of each raw write unless a benchmark says otherwise: one page.
pub const RAW_WRITE_BYTES_DEFAULT: usize = 4096;

/// Byte every raw write is filled with.
const FILL_BYTE: u8 = 0x5a;

/// A scratch file for raw writes, each followed by `fdatasync`, appended one after
/// another. Removed when dropped.
pub struct RawFsyncFile {
    path: PathBuf,
    file: File,
    block: Vec<u8>,
}

/// What [`RawFsyncFile::run_for`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RawFsyncRun {
    /// Writes made, each followed by `fdatasync`.
    // Invariant: at least 1.
    pub count: u64,
    /// From the first write to the end of the last `fdatasync`.
    pub elapsed: Duration,
    /// Each write + `fdatasync`'s own time, sorted ascending.
    // Invariant: `count` of them.
    pub latencies: Vec<Duration>,
}

/// A raw write or `fdatasync` that failed, with the scratch file's path.
#[derive(Debug)]
pub struct RawFsyncError {
    /// The scratch file.
    pub path: PathBuf,
    /// What was being done: `creating`, `writing`, `fdatasync`.
    pub action: &'static str,
    /// Why it failed.
    pub source: io::Error,
}

impl fmt::Display for RawFsyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "raw fsync file {}: {}: {}",
            self.path.display(),
            self.action,
            self.source
        )
    }
}

impl std::error::Error for RawFsyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl RawFsyncFile {
    /// Creates a scratch file of a name no other in this process uses, in `dir` (on
    /// the disk to measure), for writes of `write_bytes` each.
    pub fn create_in(dir: &Path, write_bytes: usize) -> Result<RawFsyncFile, RawFsyncError> {
        assert!(write_bytes > 0, "a raw write of no bytes");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            "concord-bench-raw-fsync-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).map_err(|source| RawFsyncError {
            path: path.clone(),
            action: "creating",
            source,
        })?;
        Ok(RawFsyncFile {
            path,
            file,
            block: vec![FILL_BYTE; write_bytes],
        })
    }

    /// The scratch file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes and `fdatasync`s in a loop until `duration` has passed (at least once).
    pub fn run_for(&mut self, duration: Duration) -> Result<RawFsyncRun, RawFsyncError> {
        let mut latencies = Vec::new();
        let start = Instant::now();
        loop {
            let began = Instant::now();
            self.file
                .write_all(&self.block)
                .map_err(|source| self.error("writing", source))?;
            self.file
                .sync_data()
                .map_err(|source| self.error("fdatasync", source))?;
            latencies.push(began.elapsed());
            if start.elapsed() >= duration {
                break;
            }
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        Ok(RawFsyncRun {
            count: latencies.len() as u64,
            elapsed,
            latencies,
        })
    }

    fn error(&self, action: &'static str, source: io::Error) -> RawFsyncError {
        RawFsyncError {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

impl Drop for RawFsyncFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The raw fsync anchor: `write_bytes` writes ([`RAW_WRITE_BYTES_DEFAULT`] unless a
/// benchmark needs another size), each followed by `fdatasync`, in one scratch file in
/// `dir`, for `duration`. The file is removed afterwards.
pub fn raw_fsync(
    dir: &Path,
    write_bytes: usize,
    duration: Duration,
) -> Result<RawFsyncRun, RawFsyncError> {
    RawFsyncFile::create_in(dir, write_bytes)?.run_for(duration)
}

impl RawFsyncRun {
    /// Elapsed seconds over the count: the loop's time per write + `fdatasync`.
    pub fn seconds_per_fsync(&self) -> f64 {
        self.elapsed.as_secs_f64() / self.count as f64
    }

    /// The mean of the latencies (each write + `fdatasync` timed alone).
    pub fn mean_latency(&self) -> Duration {
        let total: Duration = self.latencies.iter().sum();
        Duration::from_nanos((total.as_nanos() / self.latencies.len() as u128) as u64)
    }

    /// The latency at `quantile` (0.5 for the median, 0.99 for p99): the lowest that
    /// at least that share of the writes took no longer than.
    pub fn latency_at(&self, quantile: f64) -> Duration {
        assert!(
            (0.0..=1.0).contains(&quantile),
            "a quantile of {quantile}, not in 0..=1"
        );
        let rank = (quantile * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(latencies_micros: &[u64]) -> RawFsyncRun {
        let mut latencies: Vec<Duration> = latencies_micros
            .iter()
            .map(|&micros| Duration::from_micros(micros))
            .collect();
        latencies.sort_unstable();
        RawFsyncRun {
            count: latencies.len() as u64,
            elapsed: latencies.iter().sum(),
            latencies,
        }
    }

    /// The latency at a quantile is the nearest rank: the lowest value at least that
    /// share of the writes did not exceed.
    #[test]
    fn quantiles_and_mean() {
        let run = run_of(&(1..=100).collect::<Vec<_>>());
        assert_eq!(run.latency_at(0.0), Duration::from_micros(1));
        assert_eq!(run.latency_at(0.5), Duration::from_micros(50));
        assert_eq!(run.latency_at(0.99), Duration::from_micros(99));
        assert_eq!(run.latency_at(1.0), Duration::from_micros(100));
        assert_eq!(run.mean_latency(), Duration::from_nanos(50_500));
        assert!((run.seconds_per_fsync() - 50.5e-6).abs() < 1e-12);
        let single = run_of(&[7]);
        assert_eq!(single.latency_at(0.5), Duration::from_micros(7));
        assert_eq!(single.latency_at(0.99), Duration::from_micros(7));
    }

    /// A short real run: at least one write, one latency per write, the file as long
    /// as the writes, and gone once dropped.
    #[test]
    fn a_real_run_writes_syncs_and_cleans_up() {
        let dir = std::env::temp_dir();
        let mut file = RawFsyncFile::create_in(&dir, 512).unwrap();
        let path = file.path().to_path_buf();
        let first = file.run_for(Duration::ZERO).unwrap();
        assert_eq!(first.count, 1, "one write even for no time");
        let second = file.run_for(Duration::from_millis(20)).unwrap();
        assert!(second.count >= 1);
        assert_eq!(second.latencies.len() as u64, second.count);
        assert!(second.elapsed >= Duration::from_millis(20));
        assert!(second.latencies.windows(2).all(|pair| pair[0] <= pair[1]));
        let length = std::fs::metadata(&path).unwrap().len();
        assert_eq!(length, 512 * (first.count + second.count));
        drop(file);
        assert!(!path.exists(), "{} left behind", path.display());
    }

    /// A directory that does not exist: the error names the file and what failed.
    #[test]
    fn error_names_the_file() {
        let dir = std::env::temp_dir().join("concord-bench-support-no-such-dir/deeper");
        let error = raw_fsync(&dir, RAW_WRITE_BYTES_DEFAULT, Duration::ZERO)
            .expect_err("no such directory");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("raw fsync file {}", dir.display()))
                && message.contains(": creating: "),
            "{message}"
        );
    }
}
