#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod cli;
pub mod inspect;
pub mod server;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

pub use concord_cli::{Error, Exit};

use cli::{Cli, Command};

/// Runs the command line `args` (the program name first, as from
/// [`std::env::args_os`]), writing the command's output to `out` and errors to `err`
/// (one line, `concord: <what failed>: <why>`), and returns how it ended.
///
/// Help and `--version` go to `out` and end in [`Exit::Success`]; usage errors go to
/// `err` and end in [`Exit::Usage`]. A reader that goes away (`concord inspect dir |
/// head`) is not an error: output stops quietly and the run ends in [`Exit::Success`].
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(refusal) => return concord_cli::usage(refusal, out, err),
    };
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args, out),
        Command::Server(args) => run_server(args, out),
    };
    match result {
        Ok(()) => Exit::Success,
        Err(error) => error.report("concord", err),
    }
}

/// Runs `concord server` on a runtime of its own, logging to stderr.
fn run_server(args: &cli::ServerArgs, out: &mut dyn Write) -> Result<(), Error> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::failure("starting the runtime", error))?;
    let result = runtime.block_on(server::run(args, out));
    // Connections and tasks left behind do not hold the exit up.
    runtime.shutdown_background();
    result
}

/// Logs to stderr at the level of `CONCORD_LOG` (off, error, warn, info, debug,
/// trace); info by default.
fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("CONCORD_LOG").as_deref().map(str::trim) {
        Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("warn") => LevelFilter::WARN,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}
