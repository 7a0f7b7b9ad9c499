//! Socket activation with systemd's own `systemd-socket-activate`: the daemon serves the agent
//! and control sockets it is handed (`ssh-add -l`, `keyward status`, `keyward key generate`),
//! tells `$NOTIFY_SOCKET` it is ready, and leaves the sockets in place when it stops.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Stdio;

use crate::service_units::require;
use crate::util::{Agent, HANG_GUARD, agent_bin, clean_command, cli_bin, poll_until, run};

fn keyward(home: &Path, socket: &Path, args: &[&str]) -> crate::util::Output {
    run(clean_command(cli_bin(), home)
        .arg("--socket")
        .arg(socket)
        .args(args))
}

#[test]
fn activated_daemon_serves_both_sockets_notifies_and_keeps_them() {
    let activate = require("systemd-socket-activate", "systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).expect("mkdir run");
    let agent_sock = run_dir.join("agent.sock");
    let control_sock = run_dir.join("control.sock");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(HANG_GUARD))
        .expect("notify timeout");

    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = clean_command(&activate, dir.path())
        .arg("-l")
        .arg(&agent_sock)
        .arg("--fdname=agent")
        .arg("-l")
        .arg(&control_sock)
        .arg("--fdname=control")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(format!("--setenv=HOME={}", dir.path().display()))
        .arg(agent_bin())
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("-d")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn systemd-socket-activate");
    let pid = child.id();
    // systemd-socket-activate starts the daemon on the first connection, as systemd does.
    assert!(
        poll_until(HANG_GUARD, || UnixStream::connect(&agent_sock).is_ok()),
        "systemd-socket-activate never listened on {}",
        agent_sock.display()
    );
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 on $NOTIFY_SOCKET (within the hang guard)");
    assert_eq!(&buf[..n], b"READY=1");
    let mut agent = Agent::adopt(child, dir, agent_sock.clone());
    let home = agent.dir().to_owned();

    let listed = agent.ssh_add(&["-l"]);
    assert!(
        listed.stdout.contains("The agent has no identities"),
        "ssh-add -l on the activated socket: {listed:#?}\nlog:\n{}",
        agent.log()
    );

    let status = keyward(&home, &agent_sock, &["status", "--json"]);
    status.assert_success("keyward status");
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status["daemon"], true, "{status}");
    assert_eq!(status["pid"], pid, "the activated daemon answers: {status}");

    keyward(
        &home,
        &agent_sock,
        &["key", "generate", "-t", "ed25519", "-n", "activated"],
    )
    .assert_success("keyward key generate");
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    assert!(listed.stdout.contains("ED25519"), "{listed:#?}");

    let status = agent
        .signal_and_wait(libc::SIGTERM)
        .expect("the daemon stops on SIGTERM");
    assert!(status.success(), "clean exit: {status:?}\n{}", agent.log());
    let mut stopping = [0u8; 64];
    let n = notify.recv(&mut stopping).expect("STOPPING=1");
    assert_eq!(&stopping[..n], b"STOPPING=1");
    for socket in [&agent_sock, &control_sock] {
        let meta = std::fs::symlink_metadata(socket)
            .unwrap_or_else(|e| panic!("{} removed at exit: {e}", socket.display()));
        assert!(meta.file_type().is_socket());
    }
    assert!(
        agent.log().contains("keyward-agent stopped"),
        "{}",
        agent.log()
    );
}
