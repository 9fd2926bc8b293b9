#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod cli;
mod commands;
mod output;
pub mod serve;
pub mod store;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use crate::cli::{Cli, Command};
pub use concord_cli::{Error, Exit};

/// Runs the `memstore` command line `args` (the program name first), writing results
/// to `out` and errors to `err` as `memstore: <what>: <why>`.
pub fn run(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(refusal) => return concord_cli::usage(refusal, out, err),
    };
    init_logging(matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Error::failure("starting the runtime", error).report("memstore", err),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args, out).await,
            Command::Put(args) => commands::put(args, out).await,
            Command::Get(args) => commands::get(args, out).await,
            Command::Delete(args) => commands::delete(args, out).await,
            Command::List(args) => commands::list(args, out).await,
            Command::Status(args) => commands::status(args, out).await,
            Command::Members(args) => commands::members(args, out).await,
            Command::Remove(args) => commands::remove(args, out).await,
            Command::Transfer(args) => commands::transfer(args, out).await,
        }
    });
    // Connections and tasks left behind by a failed call do not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(()) => Exit::Success,
        Err(error) => error.report("memstore", err),
    }
}

/// Logs to stderr at the level of `MEMSTORE_LOG`; by default info for a server, warn
/// for a client command.
fn init_logging(server: bool) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("MEMSTORE_LOG").as_deref().map(str::trim) {
        Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("warn") => LevelFilter::WARN,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        Ok("info") => LevelFilter::INFO,
        _ if server => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}
