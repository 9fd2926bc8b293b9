#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod cli;
mod error;
pub mod inspect;

use std::ffi::OsString;
use std::io::{self, Write};

use clap::Parser;

pub use error::{Error, Exit};

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
        Err(usage) => {
            let mut text = usage.render().to_string();
            if !text.ends_with('\n') {
                text.push('\n'); // `--version` comes without one
            }
            // Nothing better to do if even this write fails: the exit code still tells.
            return if usage.use_stderr() {
                let _ = write_all(err, text.as_bytes());
                Exit::Usage
            } else {
                let _ = write_all(out, text.as_bytes());
                Exit::Success
            };
        }
    };
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args, out),
    };
    match result {
        Ok(()) => Exit::Success,
        Err(error) => {
            let _ = writeln!(err, "concord: {error}");
            error.exit()
        }
    }
}

/// Writes `bytes` to `out` and flushes it. A broken pipe (the reader went away) is not
/// an error: the output is simply not wanted any more.
pub(crate) fn write_all(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
