//! `keyward-agent`: the daemon, with ssh-agent's command line. All of it is
//! [`keyward::daemon::main`], which `keyward agent` runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    keyward::daemon::main(std::env::args_os())
}
