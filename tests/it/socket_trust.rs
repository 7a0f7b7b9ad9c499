//! Another local user squatting where keyward's sockets live: a shared sticky directory created
//! first, impostor `agent.sock`/`control.sock` sockets, a symlinked directory. The impostor is a
//! real listener run as `nobody` that records every byte it reads; every keyward client must
//! refuse it before sending anything, and say what to fix.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;

use crate::util::{
    HANG_GUARD, Output, agent_bin, clean_command, cli_bin, mode_of, poll_until, require_tool, run,
};

const NOBODY: u32 = 65534;

/// What the test itself sends last to an impostor, and its hex form as the impostor prints it.
const MARKER: &[u8] = b"END";
const MARKER_HEX: &str = "454e44";

/// The listener another user runs: accepts connections one after the other and prints, per
/// connection, how many bytes it read and what they were.
const IMPOSTOR: &str = r#"
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    data = b""
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    c.close()
    print("conn", len(data), data.hex(), flush=True)
"#;

/// A listener served by `nobody`, recording what its clients send.
struct Impostor {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Where it can be reached now.
    path: PathBuf,
}

impl Impostor {
    /// Binds `path` as `nobody` (its directory must let `nobody` create it) and waits until it
    /// listens.
    fn serve(path: &Path) -> Impostor {
        let mut child = clean_command(require_tool("setpriv"), Path::new("/"))
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(require_tool("python3"))
            .args(["-c", IMPOSTOR])
            .arg(path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the impostor");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let ready = lines.recv_timeout(HANG_GUARD);
        assert_eq!(
            ready.as_deref(),
            Ok("ready"),
            "the impostor listens on {}",
            path.display()
        );
        let meta = fs::symlink_metadata(path).expect("impostor socket");
        assert_eq!(
            meta.uid(),
            NOBODY,
            "the impostor's socket belongs to nobody"
        );
        Impostor {
            child,
            lines,
            path: path.to_owned(),
        }
    }

    /// Asserts the impostor was reached (at least once) and never received a byte.
    ///
    /// It serves connections in the order they arrive, so a last connection of our own that
    /// sends a marker is recorded after every connection the clients made before it.
    #[track_caller]
    fn assert_reached_but_got_nothing(&mut self, what: &str) {
        let mut marker = UnixStream::connect(&self.path).expect("connect to the impostor");
        marker.write_all(MARKER).expect("send the marker");
        drop(marker);
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(HANG_GUARD)
                .unwrap_or_else(|e| panic!("{what}: the impostor stopped recording: {e}"));
            let mut fields = line.split(' ').skip(1);
            let count: usize = fields
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("impostor line {line:?}"));
            if fields.next() == Some(MARKER_HEX) {
                break;
            }
            seen.push(count);
        }
        assert!(
            !seen.is_empty(),
            "{what}: no client reached the impostor, so the test shows nothing"
        );
        assert!(
            seen.iter().all(|&n| n == 0),
            "{what}: the impostor received bytes: {seen:?}"
        );
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory `nobody` can traverse, with an `xdg` runtime directory in it.
fn scene() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let xdg = tmp.path().join("xdg");
    fs::create_dir(&xdg).expect("mkdir xdg");
    fs::set_permissions(&xdg, fs::Permissions::from_mode(0o700)).expect("chmod xdg");
    (tmp, xdg)
}

/// A directory owned by `nobody` with `mode`.
fn nobody_dir(path: &Path, mode: u32) {
    fs::create_dir(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn keyward(home: &Path, xdg: &Path, args: &[&str]) -> Output {
    run(clean_command(cli_bin(), home)
        .env("XDG_RUNTIME_DIR", xdg)
        .args(args))
}

/// Every client command against the squatted sockets fails, prints no export line and says
/// `what_to_fix`.
fn every_client_refuses(home: &Path, xdg: &Path, what_to_fix: &str) {
    let passphrase = home.join("pass");
    fs::write(&passphrase, "correct horse battery staple\n").expect("write passphrase");
    let pass = passphrase.to_str().expect("utf-8");
    for args in [
        &["start"][..],
        &["env"],
        &["stop"],
        &["status"],
        &["unlock", "--passphrase-file", pass],
        &["key", "list"],
        &["doctor"],
    ] {
        let out = keyward(home, xdg, args);
        out.assert_failure(&format!("keyward {args:?} against another user's socket"));
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains("not by you") && text.contains(what_to_fix),
            "keyward {args:?} must say another user serves the socket and {what_to_fix:?}: {out:#?}"
        );
        assert!(
            !out.stdout.contains("; export SSH_AUTH_SOCK;"),
            "keyward {args:?} must print no export line: {out:#?}"
        );
    }
}

#[test]
fn shared_sticky_runtime_dir_with_impostor_sockets_gets_nothing() {
    let (tmp, xdg) = scene();
    let dir = xdg.join("keyward");
    fs::set_permissions(&xdg, fs::Permissions::from_mode(0o755)).expect("chmod xdg");
    nobody_dir(&dir, 0o1777);
    let mut agent = Impostor::serve(&dir.join("agent.sock"));
    let mut control = Impostor::serve(&dir.join("control.sock"));

    every_client_refuses(tmp.path(), &xdg, &format!("rm -r {}", dir.display()));
    let out = run(native_agent(tmp.path()).env("XDG_RUNTIME_DIR", &xdg));
    out.assert_failure("keyward-agent in a squatted directory");
    assert!(
        out.stderr.contains("65534") && out.stderr.contains(&dir.display().to_string()),
        "keyward-agent names the other user and the directory: {out:#?}"
    );

    agent.assert_reached_but_got_nothing("agent.sock");
    control.assert_reached_but_got_nothing("control.sock");

    // The directory alone, with no socket in it, is refused too.
    drop((agent, control));
    fs::remove_file(dir.join("agent.sock")).expect("rm agent.sock");
    fs::remove_file(dir.join("control.sock")).expect("rm control.sock");
    let out = keyward(tmp.path(), &xdg, &["start"]);
    out.assert_failure("keyward start in a sticky directory of another user");
    assert!(
        out.stderr.contains("owned by uid 65534")
            && out.stderr.contains(&format!("rm -r {}", dir.display())),
        "the error names the owner and the fix: {out:#?}"
    );
    assert!(
        fs::read_dir(&dir).expect("ls").next().is_none(),
        "nothing was created in the squatted directory"
    );
}

#[test]
fn impostor_sockets_in_our_own_runtime_dir_get_nothing() {
    let (tmp, xdg) = scene();
    let dir = xdg.join("keyward");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    // nobody binds in a directory of its own; the sockets are then moved into ours, as if an
    // earlier mistake had let them in. Connecting still reaches nobody's listener.
    let stage = tmp.path().join("stage");
    nobody_dir(&stage, 0o755);
    let mut impostors = Vec::new();
    for name in ["agent.sock", "control.sock"] {
        let mut impostor = Impostor::serve(&stage.join(name));
        fs::rename(stage.join(name), dir.join(name)).expect("move the impostor socket");
        impostor.path = dir.join(name);
        impostors.push(impostor);
    }

    every_client_refuses(tmp.path(), &xdg, &format!("rm {}/", dir.display()));
    let out = run(native_agent(tmp.path()).env("XDG_RUNTIME_DIR", &xdg));
    out.assert_failure("keyward-agent over another user's socket");
    assert!(
        out.stderr.contains("socket of uid 65534") && out.stderr.contains("rm "),
        "keyward-agent says whose socket it is and how to remove it: {out:#?}"
    );
    for (impostor, name) in impostors.iter_mut().zip(["agent.sock", "control.sock"]) {
        impostor.assert_reached_but_got_nothing(name);
    }
}

#[test]
fn symlinked_runtime_dir_is_refused_and_its_target_gets_nothing() {
    let (tmp, xdg) = scene();
    let target = tmp.path().join("nobody-dir");
    nobody_dir(&target, 0o755);
    let link = xdg.join("keyward");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let mut agent = Impostor::serve(&target.join("agent.sock"));
    let mut control = Impostor::serve(&target.join("control.sock"));

    every_client_refuses(tmp.path(), &xdg, "symbolic link");
    agent.assert_reached_but_got_nothing("agent.sock through the link");
    control.assert_reached_but_got_nothing("control.sock through the link");

    drop((agent, control));
    fs::remove_file(target.join("agent.sock")).expect("rm");
    fs::remove_file(target.join("control.sock")).expect("rm");
    for out in [
        keyward(tmp.path(), &xdg, &["start"]),
        run(native_agent(tmp.path()).env("XDG_RUNTIME_DIR", &xdg)),
    ] {
        out.assert_failure("starting an agent in a symlinked directory");
        assert!(
            out.stderr.contains("is a symbolic link")
                && out.stderr.contains(&format!("rm {}", link.display())),
            "the error says to remove the link: {out:#?}"
        );
    }
    assert!(
        fs::read_dir(&target).expect("ls").next().is_none(),
        "nothing was created through the link"
    );
}

/// Without `XDG_RUNTIME_DIR`, a user with no `/run/user/$UID` of its own gets a private directory
/// under its home, never a shared path; the agent's log there is 0600.
#[test]
fn runtime_dir_falls_back_under_home_without_xdg_runtime_dir() {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = tmp.path().join("home");
    nobody_dir(&home, 0o700);
    let run_user = Path::new("/run/user/65534");
    let expected_dir = match fs::symlink_metadata(run_user) {
        Ok(m) if m.is_dir() && m.uid() == NOBODY && m.mode() & 0o7777 == 0o700 => {
            run_user.join("keyward")
        }
        _ => home.join(".local/state/keyward/run"),
    };
    let expected = expected_dir.join("agent.sock");
    let as_nobody = |program: &Path, args: &[&str]| {
        run(clean_command(require_tool("setpriv"), &home)
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program)
            .args(args))
    };
    let cli = Path::new(cli_bin());
    let out = as_nobody(cli, &["start"]);
    out.assert_success("keyward start as nobody without XDG_RUNTIME_DIR");
    let _guard = crate::cli_start::exported_pid_guard(&out);
    assert!(
        out.stdout.contains(&format!(
            "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;",
            expected.display()
        )),
        "the socket is {}: {out:#?}",
        expected.display()
    );
    assert_eq!(mode_of(&expected_dir), 0o700, "socket directory mode");
    assert_eq!(
        fs::symlink_metadata(&expected_dir).expect("stat").uid(),
        NOBODY
    );
    assert_eq!(mode_of(&expected_dir.join("agent.log")), 0o600, "log mode");
    let listed = run(clean_command(require_tool("setpriv"), &home)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(require_tool("ssh-add"))
        .arg("-l")
        .env("SSH_AUTH_SOCK", &expected));
    assert!(
        listed.stdout.contains("The agent has no identities"),
        "ssh-add reaches the agent: {listed:#?}"
    );
    as_nobody(cli, &["stop"]).assert_success("keyward stop");
    assert!(
        poll_until(HANG_GUARD, || !expected.exists()),
        "the agent removed its socket"
    );
}

/// keyward-agent as `keyward start` and the service units run it: in the foreground on the
/// default socket (a keyward long option; ssh-agent's flagless mode would make a private
/// directory of its own instead, which no squatter can reach).
fn native_agent(home: &std::path::Path) -> std::process::Command {
    let mut command = clean_command(agent_bin(), home);
    command.arg("--store").arg(home.join("store"));
    command
}
