//! The `concord` binary. Everything it does lives in the library ([`concord::run`]), so
//! tests and other programs drive the same code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    concord::run(std::env::args_os(), &mut stdout.lock(), &mut stderr.lock()).into()
}
