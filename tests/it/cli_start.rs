//! Shell lifecycle: `keyward start/env/stop` and `keyward-agent -s/-c/-k` print `ssh-agent`-style
//! export lines, start one detached agent (reused when it already answers) and stop it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{
    HANG_GUARD, Output, agent_bin, clean_command, cli_bin, mode_of, pid_alive, poll_until,
    require_tool, run,
};

/// A detached agent found through its printed pid; killed on drop if a test left it running.
pub(crate) struct Detached {
    pid: u32,
}

impl Drop for Detached {
    fn drop(&mut self) {
        if pid_alive(self.pid)
            && let Ok(pid) = libc::pid_t::try_from(self.pid)
        {
            // SAFETY: kill(2) with a pid this test started (via the CLI) and saw alive.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The value assigned to `var` in sh (`VAR=value; export VAR;`) or csh (`setenv VAR value;`)
/// output, checking the exact line format.
fn exported(out: &Output, var: &str, csh: bool) -> String {
    for line in out.stdout.lines() {
        let value = if csh {
            line.strip_prefix(&format!("setenv {var} "))
                .and_then(|rest| rest.strip_suffix(';'))
        } else {
            line.strip_prefix(&format!("{var}="))
                .and_then(|rest| rest.strip_suffix(&format!("; export {var};")))
        };
        if let Some(value) = value {
            return value.to_owned();
        }
    }
    panic!(
        "no {} line for {var} in {out:#?}",
        if csh { "csh" } else { "sh" }
    );
}

fn exported_pid(out: &Output, csh: bool) -> Detached {
    let pid = exported(out, "SSH_AGENT_PID", csh)
        .parse()
        .unwrap_or_else(|e| panic!("SSH_AGENT_PID is not a number ({e}): {out:#?}"));
    let detached = Detached { pid };
    assert!(pid_alive(pid), "agent {pid} is running");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("keyward-agent"),
        "SSH_AGENT_PID {pid} must be the keyward-agent process"
    );
    detached
}

/// The agent started by a `keyward start` whose sh output is `out`, killed on drop.
pub(crate) fn exported_pid_guard(out: &Output) -> Detached {
    exported_pid(out, false)
}

fn keyward(home: &Path, args: &[&str]) -> Output {
    run(clean_command(cli_bin(), home).args(args))
}

/// `ssh-add -l` against `socket` succeeds at the protocol level (an empty agent exits 1 with
/// "The agent has no identities.").
fn agent_answers(home: &Path, socket: &str) -> bool {
    let out = run(clean_command(require_tool("ssh-add"), home)
        .arg("-l")
        .env("SSH_AUTH_SOCK", socket));
    out.stdout.contains("The agent has no identities")
}

fn assert_stopped(pid: u32, socket: &Path) {
    assert!(
        poll_until(HANG_GUARD, || !pid_alive(pid)),
        "agent {pid} still running after stop"
    );
    assert!(
        !socket.exists(),
        "agent {pid} exited but left its socket {} (killed before its SIGTERM handler ran?)",
        socket.display()
    );
}

#[test]
fn start_reuses_env_prints_and_stop_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let socket = home.join("run").join("agent.sock");
    let sock = socket.to_str().expect("utf-8");

    let first = keyward(home, &["start", "--socket", sock]);
    first.assert_success("keyward start");
    assert_eq!(exported(&first, "SSH_AUTH_SOCK", false), sock);
    let agent = exported_pid(&first, false);
    assert!(agent_answers(home, sock), "the started agent answers");

    let second = keyward(home, &["start", "--socket", sock]);
    second.assert_success("second keyward start");
    assert_eq!(exported(&second, "SSH_AUTH_SOCK", false), sock);
    let again = exported_pid(&second, false);
    assert_eq!(
        again.pid, agent.pid,
        "a second start reuses the running agent"
    );

    let env = keyward(home, &["env", "--socket", sock]);
    env.assert_success("keyward env");
    assert_eq!(exported(&env, "SSH_AUTH_SOCK", false), sock);
    let env_csh = keyward(home, &["env", "--socket", sock, "-c"]);
    env_csh.assert_success("keyward env -c");
    assert_eq!(exported(&env_csh, "SSH_AUTH_SOCK", true), sock);

    // Another user must not read what the agent logs.
    assert_eq!(
        mode_of(&home.join("run").join("agent.log")),
        0o600,
        "agent.log mode"
    );

    keyward(home, &["stop", "--socket", sock]).assert_success("keyward stop");
    assert_stopped(agent.pid, &socket);
    keyward(home, &["stop", "--socket", sock]).assert_failure("keyward stop with no agent");
}

/// An agent that dies at start (here: an argument it refuses) leaves no agent running, so
/// `keyward start` exits non-zero, prints nothing for `eval`, and shows the agent's own error.
#[test]
fn start_fails_clearly_when_the_agent_dies_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let socket = home.join("run").join("agent.sock");
    let sock = socket.to_str().expect("utf-8");
    let out = keyward(home, &["start", "--socket", sock, "--", "--no-such-flag"]);
    out.assert_failure("keyward start with an agent that cannot start");
    assert!(out.stdout.is_empty(), "nothing to eval: {out:#?}");
    assert!(
        out.stderr.contains("no agent is running") && out.stderr.contains("--no-such-flag"),
        "the error says no agent runs and quotes the agent's complaint: {out:#?}"
    );
    assert!(!agent_answers(home, sock), "no agent answers");
    assert_eq!(
        mode_of(&home.join("run").join("agent.log")),
        0o600,
        "agent.log mode"
    );
}

#[test]
fn start_csh_style() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let socket = home.join("run").join("agent.sock");
    let sock = socket.to_str().expect("utf-8");
    let out = keyward(home, &["start", "--socket", sock, "-c"]);
    out.assert_success("keyward start -c");
    assert_eq!(exported(&out, "SSH_AUTH_SOCK", true), sock);
    let agent = exported_pid(&out, true);
    keyward(home, &["stop", "--socket", sock]).assert_success("keyward stop");
    assert_stopped(agent.pid, &socket);
}

#[test]
fn start_uses_xdg_runtime_dir_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let runtime = home.join("xdg");
    fs::create_dir(&runtime).expect("mkdir xdg");
    let expected: PathBuf = runtime.join("keyward").join("agent.sock");
    let with_env = |args: &[&str]| {
        run(clean_command(cli_bin(), home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(args))
    };
    let out = with_env(&["start"]);
    out.assert_success("keyward start");
    assert_eq!(
        exported(&out, "SSH_AUTH_SOCK", false),
        expected.to_str().expect("utf-8")
    );
    let agent = exported_pid(&out, false);
    with_env(&["stop"]).assert_success("keyward stop");
    assert_stopped(agent.pid, &expected);
}

/// The README's `eval "$(keyward start)"` works in a real shell: the command substitution
/// returns (the detached agent does not hold stdout) and `ssh-add` then reaches the agent.
#[test]
fn eval_start_in_sh() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let socket = home.join("run").join("agent.sock");
    let script = format!(
        "eval \"$('{cli}' start --socket '{sock}')\" && echo \"pid=$SSH_AGENT_PID\" && ssh-add -l; \
         '{cli}' stop --socket '{sock}'",
        cli = cli_bin(),
        sock = socket.display()
    );
    let out = run(clean_command(require_tool("sh"), home).args(["-c", &script]));
    assert!(
        out.stdout.contains("The agent has no identities"),
        "ssh-add after eval: {out:#?}"
    );
    let pid: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("SSH_AGENT_PID set by eval: {out:#?}"));
    let _guard = Detached { pid };
    assert_stopped(pid, &socket);
}

fn agent_flag_case(flag: &str, csh: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let socket = home.join("run").join("agent.sock");
    let sock = socket.to_str().expect("utf-8");
    let out = run(clean_command(agent_bin(), home).args([flag, "-a", sock]));
    out.assert_success(&format!("keyward-agent {flag}"));
    assert_eq!(exported(&out, "SSH_AUTH_SOCK", csh), sock);
    let agent = exported_pid(&out, csh);
    assert!(agent_answers(home, sock), "the launched agent answers");

    let killed = run(clean_command(agent_bin(), home)
        .arg("-k")
        .env("SSH_AGENT_PID", agent.pid.to_string()));
    killed.assert_success("keyward-agent -k");
    assert_stopped(agent.pid, &socket);
}

#[test]
fn agent_s_prints_sh_exports_and_k_kills() {
    agent_flag_case("-s", false);
}

#[test]
fn agent_c_prints_csh_exports_and_k_kills() {
    agent_flag_case("-c", true);
}
