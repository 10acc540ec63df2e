//! `moat-sandbox`: the per-sandbox processes (`__sandbox`, `__ns-prepare`, `__ns-init`,
//! `__vm`), a binary of their own so each start execs, and each idle sandbox keeps resident,
//! only what they use ([`moat_runtime::supervisor::entry`]). `moat` spawns it from next to
//! itself; exit status 2 on a usage error.

use std::process::ExitCode;

use moat_runtime::supervisor::entry;

/// Exit status of a usage error.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    match entry::parse(std::env::args_os().skip(1)) {
        Ok(command) => entry::run(command),
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
