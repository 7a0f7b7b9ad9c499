//! Process hardening of the daemon: no core dumps (`RLIMIT_CORE` 0) and not dumpable, so another
//! process of the same uid cannot ptrace it or read its memory.
//!
//! Non-dumpability is invisible in `/proc/PID/status`, and root may read any process anyway, so
//! the daemon is started as `nobody`: the kernel then shows its `/proc/PID` files as owned by root
//! (instead of `nobody`) and refuses another `nobody` process access to `/proc/PID/environ`. A
//! plain `sleep` run as `nobody` is the control that shows both checks can tell the difference.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{Agent, HANG_GUARD, agent_bin, clean_command, poll_until, require_tool, run};

const NOBODY_UID: u32 = 65534;

fn setpriv_nobody() -> Command {
    let mut cmd = clean_command(require_tool("setpriv"), Path::new("/"));
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    cmd
}

/// Owner uid of `/proc/PID/status`.
fn proc_owner(pid: u32) -> u32 {
    fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat /proc/PID/status")
        .uid()
}

/// Whether a `nobody` process can read `/proc/PID/environ`.
fn nobody_can_read_environ(pid: u32) -> bool {
    run(setpriv_nobody()
        .arg(require_tool("cat"))
        .arg(format!("/proc/{pid}/environ"))
        .stdout(Stdio::null()))
    .status
    .success()
}

#[test]
fn core_dumps_are_disabled() {
    let agent = Agent::start();
    let limits = fs::read_to_string(format!("/proc/{}/limits", agent.pid())).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    let soft = line
        .trim_start_matches("Max core file size")
        .split_whitespace()
        .next()
        .expect("soft limit");
    assert_eq!(soft, "0", "RLIMIT_CORE soft limit must be 0: {line}");
}

#[test]
fn daemon_is_not_dumpable() {
    // Control: an ordinary process run as nobody is dumpable.
    let mut control = setpriv_nobody()
        .arg(require_tool("sleep"))
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn control process");
    let control_pid = control.id();
    let owner_ok = poll_until(HANG_GUARD, || proc_owner(control_pid) == NOBODY_UID);
    let control_readable = nobody_can_read_environ(control_pid);
    let _ = control.kill();
    let _ = control.wait();
    assert!(owner_ok, "control process as nobody owns its /proc entries");
    assert!(
        control_readable,
        "nobody can read its own dumpable process's environ"
    );

    // The daemon as nobody, from a copy of the binary in a directory nobody can use.
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod dir");
    let bin = dir.path().join("keyward-agent");
    fs::copy(agent_bin(), &bin).expect("copy agent binary");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod bin");
    let socket = dir.path().join("sock").join("agent.sock");
    let log = fs::File::create(dir.path().join("agent.log")).expect("create log");
    let child = setpriv_nobody()
        .env("HOME", dir.path())
        .arg(&bin)
        .arg("--socket")
        .arg(&socket)
        .arg("-d")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn agent as nobody");
    let agent = Agent::adopt(child, dir, socket);
    let pid = agent.pid();
    assert_eq!(
        proc_owner(pid),
        0,
        "a non-dumpable process's /proc entries belong to root; log:\n{}",
        agent.log()
    );
    assert!(
        !nobody_can_read_environ(pid),
        "another nobody process read the daemon's /proc/PID/environ"
    );
}
