//! `keyward-sk-helper`: signs once through a FIDO security-key provider library, so that the
//! library never runs inside the agent (see `keyward::keys::sk`). Started by the agent, one
//! request on stdin, one reply on stdout.

fn main() -> std::process::ExitCode {
    keyward::keys::sk::helper_main()
}
