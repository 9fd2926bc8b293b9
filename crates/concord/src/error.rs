//! How a command fails: what it was doing, why it failed (the whole chain of causes),
//! and the exit code that tells a script which kind of failure it was.

use std::fmt;
use std::process::ExitCode;

/// How a run ended: the process exit code. [`Exit::ALL`] with [`Exit::meaning`] is the
/// one list of exit codes; `concord --help` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success,
    /// 1: the command failed while running.
    Failure,
    /// 2: the command line is wrong.
    Usage,
    /// 3: the data directory is in use by a running node.
    DataDirInUse,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: [Exit; 4] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::DataDirInUse,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::DataDirInUse => 3,
        }
    }

    /// What the code means, for help and docs.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => {
                "success (also when the reader of the output goes away, as in `concord inspect DIR | head`)"
            }
            Exit::Failure => {
                "the command failed: a missing or unreadable path, not a data directory, an unknown group, an I/O error"
            }
            Exit::Usage => "usage error: an unknown flag, a bad value, a missing argument",
            Exit::DataDirInUse => {
                "the data directory is in use: a running node holds its LOCK; stop the node or use a copy"
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
/// `<what failed>: <why>`, `<why>` being the cause and each of its sources in turn.
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

    /// The exit code this failure ends the run with.
    pub fn exit(&self) -> Exit {
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
    // repeats its source in its own message.
    #[test]
    fn error_prints_the_chain_once() {
        for repeats_source in [false, true] {
            let cause = std::io::Error::other("permission denied");
            let error = Error::new(
                Exit::Failure,
                "inspecting /data",
                Wrapper(cause, repeats_source),
            );
            assert_eq!(
                error.to_string(),
                "inspecting /data: opening LOCK: permission denied"
            );
        }
    }

    // Every exit code is listed in the help text with its number.
    #[test]
    fn exit_codes_help_lists_every_code() {
        let help = Exit::help();
        for exit in Exit::ALL {
            assert!(help.contains(&format!("  {}  {}", exit.code(), exit.meaning())));
        }
        assert_eq!(Exit::ALL.map(Exit::code), [0, 1, 2, 3]);
    }
}
