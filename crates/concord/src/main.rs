//! The `concord` binary. Everything it does lives in the library ([`concord::run`]), so
//! tests and other programs drive the same code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Not locked for the whole run: a server's log lines go to stderr from other
    // threads meanwhile.
    concord::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .into()
}
