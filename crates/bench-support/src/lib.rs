//! What every concord benchmark shares, so they read their options, compute their
//! medians and print their verdicts alike:
//!
//! - [`Bench`] — one definition of a benchmark's command line: `--quick`, `-h`, and
//!   the `CONCORD_BENCH_*` variables it reads ([`ENV_PREFIX`]), which make its usage
//!   text; [`Environment`] reads them, typed, with errors that name the variable, the
//!   value and what is allowed. [`Mode`] tells a measurement from a smoke check.
//! - [`Spread`] — the median and the min–max spread of a figure over repeated runs.
//! - [`Table`] — rows of strings in right-aligned columns sized to their content.
//! - [`raw_fsync`] and [`RawFsyncFile`] — the disk's raw fsync rate, the anchor a
//!   durable benchmark's figures are read against.
//! - [`verdict`] — `PASS`, `FAIL`, or `not judged (quick)`; [`grouped`] — `1,234,567`.
//!
//! A benchmark is a plain `main` (`harness = false`): `cargo bench` passes it `--bench`
//! and it measures; `cargo test --benches` runs it without, and it runs as a quick
//! smoke check. Exit codes: 0 on a completed run (whether or not the targets are met),
//! 2 on a bad argument or variable ([`Bench::start`]); each benchmark documents when it
//! exits with 1.

#![deny(missing_docs)]

mod fsync;
mod options;
mod stats;
mod table;

pub use fsync::{raw_fsync, RawFsyncError, RawFsyncFile, RawFsyncRun, RAW_WRITE_BYTES_DEFAULT};
pub use options::{Bench, Environment, Mode, OptionError, Parsed, Variable, ENV_PREFIX};
pub use stats::Spread;
pub use table::Table;

/// The verdict on a target in a measurement.
pub const PASS: &str = "PASS";
/// The verdict on a missed target in a measurement.
pub const FAIL: &str = "FAIL";
/// The verdict on any target in a smoke check, whose figures are not stable.
pub const NOT_JUDGED: &str = "not judged (quick)";

/// The one verdict word every benchmark prints after a target: [`PASS`] or [`FAIL`]
/// as `met` says, or [`NOT_JUDGED`] in [`Mode::Quick`] whatever `met` is.
pub fn verdict(mode: Mode, met: bool) -> &'static str {
    match (mode, met) {
        (Mode::Quick, _) => NOT_JUDGED,
        (Mode::Measure, true) => PASS,
        (Mode::Measure, false) => FAIL,
    }
}

/// `value` with thousands separators: `1234567` as `1,234,567`.
pub fn grouped(value: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a measurement judges; a smoke check never says PASS or FAIL, met or not.
    #[test]
    fn verdict_is_pass_or_fail_only_when_measuring() {
        assert_eq!(verdict(Mode::Measure, true), "PASS");
        assert_eq!(verdict(Mode::Measure, false), "FAIL");
        assert_eq!(verdict(Mode::Quick, true), "not judged (quick)");
        assert_eq!(verdict(Mode::Quick, false), "not judged (quick)");
    }

    /// A separator before every third digit from the right, none before the first.
    #[test]
    fn grouped_separates_thousands() {
        let cases = [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ];
        for (value, expected) in cases {
            assert_eq!(grouped(value), expected, "{value}");
        }
    }
}
