//! The `memstore` binary. Everything it does lives in the library
//! ([`concord_memstore::run`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    // Not locked for the whole run: the node's log lines go to stderr from other
    // threads meanwhile.
    concord_memstore::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .into()
}
