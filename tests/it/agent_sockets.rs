//! The agent socket: modes, refusing to take over a live socket, replacing a stale one, refusing
//! peers of another uid, and removing the socket on SIGTERM/SIGINT.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use crate::util::{
    Agent, AgentOpts, HANG_GUARD, KeyType, agent_bin, assert_no_identities, clean_command, keygen,
    mode_of, require_tool, run, wait_until,
};

#[test]
fn socket_dir_is_0700_and_socket_0600() {
    let agent = Agent::start();
    let socket = agent.socket();
    let dir = socket.parent().expect("socket has a parent");
    assert_eq!(mode_of(dir), 0o700, "socket directory mode");
    let meta = fs::symlink_metadata(socket).expect("stat socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        socket.display()
    );
    assert_eq!(mode_of(socket), 0o600, "socket mode");
}

#[test]
fn second_agent_on_a_live_socket_fails_and_first_keeps_serving() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &[]);

    let second = run(clean_command(agent_bin(), agent.dir())
        .arg("--socket")
        .arg(agent.socket()));
    second.assert_failure("a second agent on a live socket");
    assert!(
        second.stderr.contains("already"),
        "the error must say the socket is already in use: {second:#?}"
    );
    assert!(
        agent.socket().exists(),
        "the live socket must not be removed"
    );
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l on the first agent");
    assert_eq!(listed.stdout.lines().count(), 1, "{listed:#?}");
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock_dir = dir.path().join("sock");
    fs::create_dir(&sock_dir).expect("mkdir");
    fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let socket = sock_dir.join("agent.sock");
    drop(UnixListener::bind(&socket).expect("bind a socket that nobody will serve"));
    assert!(
        socket.exists(),
        "the stale socket file stays after its listener is gone"
    );

    let agent = Agent::start_at(dir, socket, &AgentOpts::default());
    assert_no_identities(&agent);
    assert_eq!(mode_of(agent.socket()), 0o600, "replaced socket mode");
}

/// A client of another uid reaches the socket (made 0666 in a 0755 directory for this test) but
/// the agent hangs up before answering, while the owner is still served.
#[test]
fn client_of_another_uid_is_disconnected_before_any_reply() {
    let setpriv = require_tool("setpriv");
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &[]);
    let socket = agent.socket();
    for dir in [agent.dir(), socket.parent().expect("parent")] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    }
    fs::set_permissions(socket, fs::Permissions::from_mode(0o666)).expect("chmod socket");

    let ssh_add = require_tool("ssh-add");
    let out = run(clean_command(&setpriv, agent.dir())
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&ssh_add)
        .arg("-l")
        .env("SSH_AUTH_SOCK", socket));
    out.assert_failure("ssh-add -l as nobody");
    assert!(
        !out.stderr.contains("Could not open a connection"),
        "nobody must reach the socket (the test opens its modes): {out:#?}"
    );
    // The agent hangs up at once, so ssh-add either reads EOF ("communication with agent failed")
    // or, when its request write races the hang-up, dies of SIGPIPE with no output.
    let hung_up = out.stderr.contains("communication with agent failed")
        || (out.status.signal() == Some(libc::SIGPIPE) && out.stdout.is_empty());
    assert!(
        hung_up,
        "the agent must hang up without answering: {out:#?}"
    );
    assert!(!out.stdout.contains("SHA256:"), "no key may leak: {out:#?}");

    let owner = agent.ssh_add(&["-l"]);
    owner.assert_success("ssh-add -l as the owner");
    assert_eq!(owner.stdout.lines().count(), 1);
}

/// Signals the daemon right after it became ready (readiness means signals are handled too),
/// several times over to catch a handler installed only after the socket accepts.
fn terminates_cleanly_on(signal: libc::c_int) {
    for round in 1..=5 {
        let mut agent = Agent::start();
        let socket = agent.socket().to_owned();
        let status = agent
            .signal_and_wait(signal)
            .unwrap_or_else(|| panic!("agent did not exit after signal {signal}"));
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: exit status after signal {signal} was {status}; log:\n{}",
            agent.log()
        );
        assert!(!socket.exists(), "socket removed after signal {signal}");
    }
}

#[test]
fn sigterm_removes_socket_and_exits_0() {
    terminates_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_removes_socket_and_exits_0() {
    terminates_cleanly_on(libc::SIGINT);
}

/// `-D` (foreground) is accepted as a no-op.
#[test]
fn foreground_flag_is_accepted() {
    let agent = Agent::start_args(&["-D"]);
    assert_no_identities(&agent);
}

/// A socket path whose parent is a regular file cannot be created: the agent exits non-zero.
#[test]
fn agent_exits_when_socket_parent_cannot_be_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("file");
    fs::write(&blocker, b"not a directory").expect("write");
    let mut child = clean_command(agent_bin(), dir.path())
        .arg("--socket")
        .arg(blocker.join("agent.sock"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let status = wait_until(&mut child, Instant::now() + HANG_GUARD).expect("agent exits");
    assert!(!status.success(), "an unusable socket path must fail");
}
