//! What concord's command-line programs (`concord`, `memstore`) share, so a script
//! sees the same exit codes and the same error lines from each: [`Exit`], the one
//! list of exit codes; [`Error`], a failure with what was being done and its whole
//! chain of causes; [`usage`], how a command line clap refuses ends; and
//! [`write_all`], output that stops quietly when its reader goes away.

#![deny(missing_docs)]

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// How a run ended: the process exit code. [`Exit::ALL`] with [`Exit::meaning`] is the
/// one list of exit codes of every concord program; their `--help` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success,
    /// 1: the command failed while running.
    Failure,
    /// 2: the command line is wrong.
    Usage,
    /// 3: what was asked for does not exist (a key, a group).
    NotFound,
    /// 4: the data directory is in use by a running node.
    DataDirInUse,
    /// 5: a write may or may not have applied: the client could not learn its outcome.
    OutcomeUnknown,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: [Exit; 6] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::NotFound,
        Exit::DataDirInUse,
        Exit::OutcomeUnknown,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::NotFound => 3,
            Exit::DataDirInUse => 4,
            Exit::OutcomeUnknown => 5,
        }
    }

    /// What the code means, for help and docs.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => {
                "success; a server stopped by SIGTERM or ctrl-c, and output whose reader went \
                 away (`... | head`), end here too"
            }
            Exit::Failure => {
                "failure: a node could not start or join, a peer is unreachable, no leader \
                 answered in time, a request was refused, a path is not a data directory, an \
                 I/O error"
            }
            Exit::Usage => "usage error: an unknown flag, a bad value, a missing argument",
            Exit::NotFound => "not found: the key or group asked for does not exist",
            Exit::DataDirInUse => {
                "the data directory is in use: a running node holds its LOCK; stop the node or \
                 use a copy"
            }
            Exit::OutcomeUnknown => {
                "a write may or may not have applied: the client retried it under one request \
                 id until its deadline but never heard; it applied at most once"
            }
        }
    }

    /// The exit codes as help text, one line per code.
    pub fn help() -> String {
        let mut text = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            text.push_str(&format!("  {}  {}\n", exit.code(), exit.meaning()));
        }
        text
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failed command: what it was doing, why it failed, and its exit code. Displays as
/// `<what failed>: <why>`, `<why>` being the cause and each of its sources in turn,
/// each said once.
#[derive(Debug)]
pub struct Error {
    exit: Exit,
    what: String,
    why: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// A failure while doing `what` ("inspecting /data/n1"), caused by `why`, ending in
    /// `exit`.
    pub fn new(
        exit: Exit,
        what: impl Into<String>,
        why: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error {
            exit,
            what: what.into(),
            why: why.into(),
        }
    }

    /// [`Error::new`] with [`Exit::Failure`].
    pub fn failure(
        what: impl Into<String>,
        why: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::new(Exit::Failure, what, why)
    }

    /// The exit code this failure ends the run with.
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// Writes `<program>: <self>` as one line to `err` and returns the exit code.
    pub fn report(&self, program: &str, err: &mut dyn Write) -> Exit {
        // Nothing better to do if even this write fails: the exit code still tells.
        let _ = writeln!(err, "{program}: {self}");
        self.exit
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chain = self.why.to_string();
        let mut source = self.why.source();
        while let Some(cause) = source {
            // Many errors already print their source in their own message (`opening
            // FILE: permission denied`); say each cause once.
            let text = cause.to_string();
            if !chain.contains(&text) {
                chain.push_str(": ");
                chain.push_str(&text);
            }
            source = cause.source();
        }
        write!(f, "{}: {chain}", self.what)
    }
}

impl std::error::Error for Error {}

/// Ends a run whose command line clap refused, or answered (`--help`, `--version`):
/// help and version text go to `out` and end in [`Exit::Success`]; usage errors go to
/// `err` and end in [`Exit::Usage`].
pub fn usage(refusal: clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let mut text = refusal.render().to_string();
    if !text.ends_with('\n') {
        text.push('\n'); // `--version` comes without one
    }
    // Nothing better to do if even this write fails: the exit code still tells.
    if refusal.use_stderr() {
        let _ = write_all(err, text.as_bytes());
        Exit::Usage
    } else {
        let _ = write_all(out, text.as_bytes());
        Exit::Success
    }
}

/// Writes `bytes` to `out` and flushes it. A broken pipe (the reader went away) is not
/// an error: the output is simply not wanted any more.
pub fn write_all(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A future that completes on SIGTERM or ctrl-c (SIGINT), for a server to stop
/// gracefully on either. Made before the server starts, so a signal that comes while
/// it starts is not lost. Needs a tokio runtime with signals enabled.
pub fn stop_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error, bool);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.1 {
                write!(f, "opening LOCK: {}", self.0)
            } else {
                write!(f, "opening LOCK")
            }
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    // The whole chain of causes is printed, each cause once, whether or not an error
    // repeats its source in its own message; a report is one line with the program.
    #[test]
    fn error_prints_the_chain_once() {
        for repeats_source in [false, true] {
            let cause = std::io::Error::other("permission denied");
            let error = Error::new(
                Exit::DataDirInUse,
                "inspecting /data",
                Wrapper(cause, repeats_source),
            );
            assert_eq!(
                error.to_string(),
                "inspecting /data: opening LOCK: permission denied"
            );
            let mut err = Vec::new();
            assert_eq!(error.report("concord", &mut err), Exit::DataDirInUse);
            assert_eq!(
                String::from_utf8(err).unwrap(),
                "concord: inspecting /data: opening LOCK: permission denied\n"
            );
        }
    }

    // Every exit code is listed in the help text with its number, and the numbers are
    // the documented ones.
    #[test]
    fn exit_codes_help_lists_every_code() {
        let help = Exit::help();
        for exit in Exit::ALL {
            assert!(help.contains(&format!("  {}  {}", exit.code(), exit.meaning())));
        }
        assert_eq!(Exit::ALL.map(Exit::code), [0, 1, 2, 3, 4, 5]);
    }

    // A broken pipe is not an error; any other write error is.
    #[test]
    fn a_closed_reader_is_not_an_error() {
        struct Failing(io::ErrorKind);
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(self.0))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_all(&mut Failing(io::ErrorKind::BrokenPipe), b"x").is_ok());
        assert!(write_all(&mut Failing(io::ErrorKind::PermissionDenied), b"x").is_err());
    }

    #[derive(clap::Parser, Debug)]
    #[command(name = "tool", version = "1.0")]
    struct Tool {
        #[arg(long)]
        count: u32,
    }

    // Help and version go to out with success; a bad command line to err with usage.
    #[test]
    fn usage_routes_help_and_errors() {
        use clap::Parser;
        for (args, expected, to_out) in [
            (vec!["tool", "--help"], Exit::Success, true),
            (vec!["tool", "--version"], Exit::Success, true),
            (vec!["tool", "--count", "many"], Exit::Usage, false),
        ] {
            let refusal = Tool::try_parse_from(&args).unwrap_err();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(usage(refusal, &mut out, &mut err), expected, "{args:?}");
            let (written, empty) = if to_out { (out, err) } else { (err, out) };
            assert!(written.ends_with(b"\n") && empty.is_empty(), "{args:?}");
        }
    }
}
