//! A benchmark's command line and environment: one [`Bench`] definition makes the
//! usage text, and the typed readers of [`Environment`] refuse any variable it does not
//! list, so the usage cannot miss one.

use std::ffi::OsString;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The prefix of every benchmark's environment variables.
pub const ENV_PREFIX: &str = "CONCORD_BENCH_";

/// The variable every benchmark reads, after the prefix: `CONCORD_BENCH_QUICK=1` is
/// `--quick`.
const QUICK: &str = "QUICK";

/// The exit code of a bad argument or variable (as every concord program uses it).
const EXIT_USAGE: u8 = 2;

/// An environment variable a benchmark reads, named without [`ENV_PREFIX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The name after the prefix: `REPEATS` for `CONCORD_BENCH_REPEATS`.
    pub name: &'static str,
    /// The value's shape in the usage text: `R`, `N,N...`, `PATH`.
    pub value: &'static str,
    /// What it does and its default. A `\n` starts a continuation line.
    pub help: &'static str,
}

/// One benchmark binary's command line: its name, how it is run, what `--quick` makes
/// of it and the variables it reads besides `CONCORD_BENCH_QUICK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bench {
    /// What its error lines start with: `concord-raft throughput`.
    pub name: &'static str,
    /// How it is run: `cargo bench -p concord-raft --bench throughput`.
    pub command: &'static str,
    /// What `--quick` makes of it: `tiny counts, every applied entry checked`.
    pub quick: &'static str,
    /// The variables it reads besides `CONCORD_BENCH_QUICK`.
    pub variables: &'static [Variable],
}

/// How a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Under `cargo bench` (which passes `--bench`): every row measured, the targets
    /// judged.
    Measure,
    /// A smoke check: small counts, results checked, targets not judged. Without
    /// `--bench` (as `cargo test --benches` runs it), with `--quick`, or with
    /// `CONCORD_BENCH_QUICK=1`.
    Quick,
}

impl Mode {
    /// True for [`Mode::Quick`].
    pub fn is_quick(self) -> bool {
        self == Mode::Quick
    }
}

/// What a command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// `-h` or `--help`: the usage text, and nothing else.
    Help,
    /// A run, with the options the benchmark read.
    Run(T),
}

/// An argument or a variable a benchmark refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// An argument other than `--bench`, `--quick`, `-h` and `--help`.
    UnknownArgument(String),
    /// A variable set to a value it does not allow.
    BadValue {
        /// The variable's whole name: `CONCORD_BENCH_REPEATS`.
        variable: String,
        /// Its value (non-UTF-8 bytes replaced).
        value: String,
        /// What it allows: `a whole number of at least 1`.
        allowed: String,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::UnknownArgument(argument) => write!(f, "unknown argument {argument:?}"),
            OptionError::BadValue {
                variable,
                value,
                allowed,
            } => write!(f, "{variable} must be {allowed}, not {value:?}"),
        }
    }
}

impl std::error::Error for OptionError {}

impl Bench {
    /// The usage text `-h` prints and a bad option follows with: the arguments, then
    /// every variable with its help, in one aligned column.
    pub fn usage(&self) -> String {
        let quick_variable = Variable {
            name: QUICK,
            value: "1",
            help: "same as --quick",
        };
        let variables: Vec<(String, &str)> = std::iter::once(&quick_variable)
            .chain(self.variables)
            .map(|variable| {
                (
                    format!("{ENV_PREFIX}{}={}", variable.name, variable.value),
                    variable.help,
                )
            })
            .collect();
        let arguments = [
            ("--quick".to_string(), self.quick),
            ("-h, --help".to_string(), "this text"),
        ];
        let width = arguments
            .iter()
            .chain(&variables)
            .map(|(left, _)| left.chars().count())
            .max()
            .unwrap_or(0);
        let line = |out: &mut String, left: &str, help: &str| {
            for (position, help_line) in help.lines().enumerate() {
                let left = if position == 0 { left } else { "" };
                out.push_str(&format!("  {left:<width$}  {help_line}\n"));
            }
        };
        let mut out = format!("usage: {} [-- --quick]\n", self.command);
        for (left, help) in &arguments {
            line(&mut out, left, help);
        }
        out.push_str("environment (unset or empty: the default):\n");
        for (left, help) in &variables {
            line(&mut out, left, help);
        }
        out.push_str(
            "without --bench (cargo bench passes it; cargo test --benches does not) it runs \
             as with --quick\n",
        );
        out
    }

    /// Reads the arguments (without the program name) and the variables `lookup`
    /// finds, given their whole names: the [`Mode`], then whatever `read` takes from
    /// the [`Environment`]. Help is asked before anything is read.
    pub fn parse<T>(
        &self,
        arguments: impl IntoIterator<Item = impl Into<OsString>>,
        lookup: &dyn Fn(&str) -> Option<OsString>,
        read: impl FnOnce(Mode, &Environment<'_>) -> Result<T, OptionError>,
    ) -> Result<Parsed<T>, OptionError> {
        let mut benchmarking = false;
        let mut quick = false;
        for argument in arguments {
            let argument: OsString = argument.into();
            match argument.to_str() {
                Some("--bench") => benchmarking = true,
                Some("--quick") => quick = true,
                Some("-h" | "--help") => return Ok(Parsed::Help),
                _ => {
                    return Err(OptionError::UnknownArgument(
                        argument.to_string_lossy().into_owned(),
                    ))
                }
            }
        }
        let environment = Environment {
            bench: self,
            lookup,
        };
        quick |= environment.read_flag(QUICK)?.unwrap_or(false);
        // Without `--bench` the binary runs under `cargo test`: check, do not measure.
        let mode = if quick || !benchmarking {
            Mode::Quick
        } else {
            Mode::Measure
        };
        read(mode, &environment).map(Parsed::Run)
    }

    /// [`Bench::parse`] on this process's arguments and environment. `Err` is the exit
    /// code to end with at once: 0 after printing the usage (`-h`), 2 after printing
    /// the error and the usage to stderr.
    pub fn start<T>(
        &self,
        read: impl FnOnce(Mode, &Environment<'_>) -> Result<T, OptionError>,
    ) -> Result<T, ExitCode> {
        let lookup = |name: &str| std::env::var_os(name);
        match self.parse(std::env::args_os().skip(1), &lookup, read) {
            Ok(Parsed::Run(options)) => Ok(options),
            Ok(Parsed::Help) => {
                print!("{}", self.usage());
                Err(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{}: {error}", self.name);
                eprint!("{}", self.usage());
                Err(ExitCode::from(EXIT_USAGE))
            }
        }
    }
}

/// The benchmark's variables, read typed. Each reader takes the name after
/// [`ENV_PREFIX`], answers `None` when the variable is unset or empty (the caller's
/// default applies), and panics when the [`Bench`] does not list the name: its usage
/// would not tell of it.
pub struct Environment<'a> {
    bench: &'a Bench,
    lookup: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Environment<'_> {
    /// A switch: `0` or `1`.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, OptionError> {
        self.check_listed(name);
        self.read_flag(name)
    }

    /// A count: a whole number of at least 1.
    pub fn count(&self, name: &str) -> Result<Option<u64>, OptionError> {
        const ALLOWED: &str = "a whole number of at least 1";
        self.check_listed(name);
        self.read(name, ALLOWED, |text| parse_count(text).ok_or(()))
    }

    /// A list of counts, comma-separated (spaces around each allowed): `1,64,256`.
    pub fn counts(&self, name: &str) -> Result<Option<Vec<u64>>, OptionError> {
        const ALLOWED: &str = "a comma-separated list of whole numbers of at least 1";
        self.check_listed(name);
        self.read(name, ALLOWED, |text| {
            text.split(',')
                .map(|count| parse_count(count.trim()).ok_or(()))
                .collect()
        })
    }

    /// A length of time in seconds (`2.5`), within `allowed`.
    pub fn seconds(
        &self,
        name: &str,
        allowed: RangeInclusive<Duration>,
    ) -> Result<Option<Duration>, OptionError> {
        let description = format!(
            "a number of seconds from {} to {}",
            allowed.start().as_secs_f64(),
            allowed.end().as_secs_f64()
        );
        self.check_listed(name);
        self.read(name, &description, |text| {
            let seconds: f64 = text.trim().parse().map_err(drop)?;
            let duration = Duration::try_from_secs_f64(seconds).map_err(drop)?;
            if allowed.contains(&duration) {
                Ok(duration)
            } else {
                Err(())
            }
        })
    }

    /// A path, taken as it is (not required to exist, nor to be UTF-8).
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.check_listed(name);
        (self.lookup)(&variable_name(name))
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    }

    fn check_listed(&self, name: &str) {
        assert!(
            self.bench
                .variables
                .iter()
                .any(|variable| variable.name == name),
            "{}: {} is read but not listed in its Bench::variables (nor its usage)",
            self.bench.name,
            variable_name(name)
        );
    }

    fn read_flag(&self, name: &str) -> Result<Option<bool>, OptionError> {
        self.read(name, "0 or 1", |text| match text {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(()),
        })
    }

    /// Reads `ENV_PREFIX + name` with `parse`; a value that is not UTF-8 or that
    /// `parse` refuses is an error saying it must be `allowed`.
    fn read<T>(
        &self,
        name: &str,
        allowed: &str,
        parse: impl FnOnce(&str) -> Result<T, ()>,
    ) -> Result<Option<T>, OptionError> {
        let variable = variable_name(name);
        let Some(value) = (self.lookup)(&variable).filter(|value| !value.is_empty()) else {
            return Ok(None);
        };
        match value.to_str().map(parse) {
            Some(Ok(parsed)) => Ok(Some(parsed)),
            _ => Err(OptionError::BadValue {
                variable,
                value: value.to_string_lossy().into_owned(),
                allowed: allowed.to_string(),
            }),
        }
    }
}

fn variable_name(name: &str) -> String {
    format!("{ENV_PREFIX}{name}")
}

fn parse_count(text: &str) -> Option<u64> {
    // `u64::from_str` takes a leading `+`; a count is digits only.
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&count| count >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH: Bench = Bench {
        name: "test bench",
        command: "cargo bench -p test",
        quick: "tiny counts",
        variables: &[
            Variable {
                name: "REPEATS",
                value: "R",
                help: "timed runs per row (default 5)",
            },
            Variable {
                name: "PROPOSERS",
                value: "N,N...",
                help: "only these rows\n(default 1,64)",
            },
            Variable {
                name: "SECONDS",
                value: "S",
                help: "length of a run",
            },
            Variable {
                name: "DIR",
                value: "PATH",
                help: "where files go",
            },
            Variable {
                name: "DURABLE",
                value: "1",
                help: "fsync on",
            },
        ],
    };

    /// Everything a test run reads: mode, repeats, proposers, seconds, dir, durable.
    #[derive(Debug, PartialEq)]
    struct Read {
        mode: Mode,
        repeats: Option<u64>,
        proposers: Option<Vec<u64>>,
        seconds: Option<Duration>,
        dir: Option<PathBuf>,
        durable: Option<bool>,
    }

    fn parse(arguments: &[&str], variables: &[(&str, &str)]) -> Result<Parsed<Read>, OptionError> {
        let variables: Vec<(String, String)> = variables
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let lookup = move |name: &str| {
            variables
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| OsString::from(value))
        };
        BENCH.parse(arguments.iter().copied(), &lookup, |mode, environment| {
            Ok(Read {
                mode,
                repeats: environment.count("REPEATS")?,
                proposers: environment.counts("PROPOSERS")?,
                seconds: environment.seconds(
                    "SECONDS",
                    Duration::from_millis(1)..=Duration::from_secs(600),
                )?,
                dir: environment.path("DIR"),
                durable: environment.flag("DURABLE")?,
            })
        })
    }

    fn bad_value(variable: &str, value: &str, allowed: &str) -> OptionError {
        OptionError::BadValue {
            variable: variable.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }

    fn unset(mode: Mode) -> Read {
        Read {
            mode,
            repeats: None,
            proposers: None,
            seconds: None,
            dir: None,
            durable: None,
        }
    }

    /// `--bench` alone measures; without it, or with `--quick` or
    /// `CONCORD_BENCH_QUICK=1`, the run is quick; `CONCORD_BENCH_QUICK=0` or empty
    /// changes nothing.
    #[test]
    fn mode_is_measure_only_with_bench_and_nothing_quick() {
        let mode =
            |arguments: &[&str], variables: &[(&str, &str)]| match parse(arguments, variables) {
                Ok(Parsed::Run(read)) => {
                    assert_eq!(read, unset(read.mode), "nothing else is set");
                    read.mode
                }
                other => panic!("{arguments:?} {variables:?}: {other:?}"),
            };
        assert_eq!(mode(&["--bench"], &[]), Mode::Measure);
        assert_eq!(mode(&[], &[]), Mode::Quick);
        assert_eq!(mode(&["--bench", "--quick"], &[]), Mode::Quick);
        assert_eq!(mode(&["--quick", "--bench"], &[]), Mode::Quick);
        let quick = |value| [("CONCORD_BENCH_QUICK", value)];
        assert_eq!(mode(&["--bench"], &quick("1")), Mode::Quick);
        assert_eq!(mode(&["--bench"], &quick("0")), Mode::Measure);
        assert_eq!(mode(&["--bench"], &quick("")), Mode::Measure);
        assert_eq!(mode(&[], &quick("0")), Mode::Quick);
    }

    /// Help wins over everything after it and over bad variables; any other argument
    /// is refused by name.
    #[test]
    fn help_and_unknown_arguments() {
        for help in ["-h", "--help"] {
            assert_eq!(
                parse(
                    &["--bench", help, "--nonsense"],
                    &[("CONCORD_BENCH_REPEATS", "x")]
                ),
                Ok(Parsed::Help)
            );
        }
        let error = parse(&["--bench", "--repeats=3"], &[]).unwrap_err();
        assert_eq!(error, OptionError::UnknownArgument("--repeats=3".into()));
        assert_eq!(error.to_string(), r#"unknown argument "--repeats=3""#);
    }

    /// Set values arrive typed; unset and empty ones are `None`.
    #[test]
    fn values_are_read_typed() {
        let read = parse(
            &["--bench"],
            &[
                ("CONCORD_BENCH_REPEATS", "3"),
                ("CONCORD_BENCH_PROPOSERS", "1, 64 ,256"),
                ("CONCORD_BENCH_SECONDS", "2.5"),
                ("CONCORD_BENCH_DIR", "/mnt/disk"),
                ("CONCORD_BENCH_DURABLE", "1"),
            ],
        );
        assert_eq!(
            read,
            Ok(Parsed::Run(Read {
                mode: Mode::Measure,
                repeats: Some(3),
                proposers: Some(vec![1, 64, 256]),
                seconds: Some(Duration::from_millis(2500)),
                dir: Some(PathBuf::from("/mnt/disk")),
                durable: Some(true),
            }))
        );
        let empty = parse(
            &["--bench"],
            &[
                ("CONCORD_BENCH_REPEATS", ""),
                ("CONCORD_BENCH_PROPOSERS", ""),
                ("CONCORD_BENCH_SECONDS", ""),
                ("CONCORD_BENCH_DIR", ""),
                ("CONCORD_BENCH_DURABLE", ""),
            ],
        );
        assert_eq!(empty, Ok(Parsed::Run(unset(Mode::Measure))));
    }

    /// Every refused value names the whole variable, the value and what is allowed,
    /// and reads as one sentence.
    #[test]
    fn bad_values_name_the_variable_the_value_and_what_is_allowed() {
        const COUNT: &str = "a whole number of at least 1";
        const COUNTS: &str = "a comma-separated list of whole numbers of at least 1";
        const SECONDS: &str = "a number of seconds from 0.001 to 600";
        let cases = [
            ("CONCORD_BENCH_QUICK", "yes", "0 or 1"),
            ("CONCORD_BENCH_DURABLE", "2", "0 or 1"),
            ("CONCORD_BENCH_REPEATS", "0", COUNT),
            ("CONCORD_BENCH_REPEATS", "-1", COUNT),
            ("CONCORD_BENCH_REPEATS", "+3", COUNT),
            ("CONCORD_BENCH_REPEATS", "3x", COUNT),
            ("CONCORD_BENCH_REPEATS", "18446744073709551616", COUNT),
            ("CONCORD_BENCH_PROPOSERS", "1,,64", COUNTS),
            ("CONCORD_BENCH_PROPOSERS", "1,0", COUNTS),
            ("CONCORD_BENCH_PROPOSERS", "1;64", COUNTS),
            ("CONCORD_BENCH_PROPOSERS", ",", COUNTS),
            ("CONCORD_BENCH_SECONDS", "0", SECONDS),
            ("CONCORD_BENCH_SECONDS", "600.5", SECONDS),
            ("CONCORD_BENCH_SECONDS", "-1", SECONDS),
            ("CONCORD_BENCH_SECONDS", "NaN", SECONDS),
            ("CONCORD_BENCH_SECONDS", "inf", SECONDS),
            ("CONCORD_BENCH_SECONDS", "3s", SECONDS),
        ];
        for (variable, value, allowed) in cases {
            let error = parse(&["--bench"], &[(variable, value)]).unwrap_err();
            assert_eq!(error, bad_value(variable, value, allowed));
        }
        assert_eq!(
            bad_value("CONCORD_BENCH_REPEATS", "0", COUNT).to_string(),
            r#"CONCORD_BENCH_REPEATS must be a whole number of at least 1, not "0""#
        );
    }

    /// The ends of a range of seconds are allowed.
    #[test]
    fn seconds_range_is_inclusive() {
        for (text, duration) in [
            ("0.001", Duration::from_millis(1)),
            ("600", Duration::from_secs(600)),
        ] {
            let Ok(Parsed::Run(read)) = parse(&[], &[("CONCORD_BENCH_SECONDS", text)]) else {
                panic!("{text} refused");
            };
            assert_eq!(read.seconds, Some(duration));
        }
    }

    /// A variable the benchmark does not list is a bug in the benchmark: its usage
    /// would not tell of it.
    #[test]
    #[should_panic(expected = "CONCORD_BENCH_UNLISTED is read but not listed")]
    fn reading_an_unlisted_variable_panics() {
        let lookup = |_: &str| None;
        let _ = BENCH.parse(["--bench"], &lookup, |_, environment| {
            environment.count("UNLISTED")
        });
    }

    /// The whole usage text: arguments and variables in one aligned column, a
    /// continuation line under its help, the QUICK variable first.
    #[test]
    fn usage_lists_every_variable_aligned() {
        assert_eq!(
            BENCH.usage(),
            "\
usage: cargo bench -p test [-- --quick]
  --quick                         tiny counts
  -h, --help                      this text
environment (unset or empty: the default):
  CONCORD_BENCH_QUICK=1           same as --quick
  CONCORD_BENCH_REPEATS=R         timed runs per row (default 5)
  CONCORD_BENCH_PROPOSERS=N,N...  only these rows
                                  (default 1,64)
  CONCORD_BENCH_SECONDS=S         length of a run
  CONCORD_BENCH_DIR=PATH          where files go
  CONCORD_BENCH_DURABLE=1         fsync on
without --bench (cargo bench passes it; cargo test --benches does not) it runs as with --quick
"
        );
    }
}
