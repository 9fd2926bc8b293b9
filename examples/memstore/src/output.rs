//! Writing results: a reader that goes away (`memstore list | head`) is not an error.

use std::io::{ErrorKind, Write};

use crate::Error;

/// Writes `line` and a newline to `out` and flushes it (other programs read these
/// lines as they come). A closed pipe is ignored.
pub fn emit(out: &mut dyn Write, line: &str) -> Result<(), Error> {
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    match written {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => {
            Err(Error::failure("writing the output", error))
        }
        _ => Ok(()),
    }
}
