#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod cli;
pub mod inspect;

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
    };
    match result {
        Ok(()) => Exit::Success,
        Err(error) => error.report("concord", err),
    }
}
