//! The run's trace: every event is folded into a hash (two runs of one seed must give
//! the same hash), and printed when the trace level asks for it.
//!
//! Events come at two levels. [`TraceLevel::Events`] shows what a person replaying a
//! failure wants first: faults, role changes, membership, client operations.
//! [`TraceLevel::Messages`] adds every message sent, delivered or dropped and every
//! Ready. Events are hashed whatever the level, from numbers rather than text, so that
//! a quiet sweep does not pay for formatting.

use std::fmt;

use crate::network::{Time, TICK_INSTANTS};
use crate::rng::hash_words;

/// How much of the trace to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TraceLevel {
    /// Print nothing (sweeps and tests).
    #[default]
    Quiet,
    /// Faults, role changes, membership, client operations.
    Events,
    /// Everything, down to each message.
    Messages,
}

/// Where printed events go.
#[derive(Debug)]
pub enum TraceSink {
    /// Standard output, as they happen.
    Stdout,
    /// Kept in memory (tests that inspect the trace).
    Buffer(Vec<String>),
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    level: TraceLevel,
    sink: TraceSink,
    hash: u64,
    events: u64,
}

impl Trace {
    /// A trace printing up to `level` into `sink`.
    pub fn new(level: TraceLevel, sink: TraceSink) -> Trace {
        Trace {
            level,
            sink,
            hash: 0x243F_6A88_85A3_08D3,
            events: 0,
        }
    }

    /// A trace that prints nothing.
    pub fn quiet() -> Trace {
        Trace::new(TraceLevel::Quiet, TraceSink::Buffer(Vec::new()))
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Number of events so far.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// True when events of `level` are printed.
    pub fn shows(&self, level: TraceLevel) -> bool {
        level <= self.level && level != TraceLevel::Quiet
    }

    /// Records an event at `now`: `words` go into the hash; `describe` is called only if
    /// the event is printed.
    pub fn record(
        &mut self,
        now: Time,
        level: TraceLevel,
        words: &[u64],
        describe: impl FnOnce() -> String,
    ) {
        self.events += 1;
        self.hash = hash_words(self.hash, words);
        if self.shows(level) {
            let line = format!("{} {}", Stamp(now), describe());
            self.emit(line);
        }
    }

    /// Prints a line regardless of level (run headers and summaries), unless quiet.
    pub fn note(&mut self, line: String) {
        if self.level != TraceLevel::Quiet {
            self.emit(line);
        }
    }

    fn emit(&mut self, line: String) {
        match &mut self.sink {
            TraceSink::Stdout => {
                use std::io::Write as _;
                // A closed pipe (`| head`) is not an error: stop printing.
                if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                    self.level = TraceLevel::Quiet;
                }
            }
            TraceSink::Buffer(lines) => lines.push(line),
        }
    }

    /// The lines kept by a [`TraceSink::Buffer`].
    pub fn lines(&self) -> &[String] {
        match &self.sink {
            TraceSink::Buffer(lines) => lines,
            TraceSink::Stdout => &[],
        }
    }
}

/// A time stamp: `t=1234 (tick 154.2)`.
struct Stamp(Time);

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[t={:>7} tick {:>5}.{}]",
            self.0,
            self.0 / TICK_INSTANTS,
            self.0 % TICK_INSTANTS
        )
    }
}
