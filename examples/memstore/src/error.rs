//! How a command fails: what it was doing, why (the whole chain of causes), and the
//! exit code that tells a script which kind of failure it was.

use std::fmt;
use std::process::ExitCode;

/// How a run ended: the process exit code. [`Exit::ALL`] with [`Exit::meaning`] is the
/// one list of exit codes; `memstore --help` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked (serve: stopped on SIGTERM or ctrl-c).
    Success,
    /// 1: the command failed while running.
    Failure,
    /// 2: the command line is wrong.
    Usage,
    /// 3: `get` found no such key.
    NotFound,
    /// 5: a write may or may not have applied: the client could not learn its outcome.
    OutcomeUnknown,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: [Exit; 5] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::NotFound,
        Exit::OutcomeUnknown,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::NotFound => 3,
            Exit::OutcomeUnknown => 5,
        }
    }

    /// What the code means, for help and docs.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success; `serve` exits 0 when stopped by SIGTERM or ctrl-c",
            Exit::Failure => {
                "failure: the node could not start or join, the peer is unreachable, \
                 no leader answered in time, the request was refused"
            }
            Exit::Usage => "usage error: an unknown flag, a bad value, a missing argument",
            Exit::NotFound => "`get`: the key is not set",
            Exit::OutcomeUnknown => {
                "`put`, `delete`: the write may or may not have applied (the client kept \
                 retrying it under one request id until --timeout-ms, but never heard); \
                 it applied at most once"
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
/// `<what>: <why>`, `<why>` being the cause and each of its sources in turn.
#[derive(Debug)]
pub struct Error {
    exit: Exit,
    what: String,
    why: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// A failure while doing `what` ("putting \"k\" through 127.0.0.1:7001"), caused by
    /// `why`.
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
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.what, self.why)?;
        let mut source = self.why.source();
        while let Some(cause) = source {
            write!(formatter, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
