//! keyward-agent with ssh-agent's command line, driven as scripts drive ssh-agent: `eval` of the
//! no-flag output, command mode, `-k`, `-s -a` on a live socket, `-t`, `-E md5`, `-d`, bad
//! flags and their exit codes, `keyward agent`, and a second agent on a store another holds.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::util::{
    HANG_GUARD, KeyType, Output, agent_bin, clean_command, cli_bin, keygen, mode_of, pid_alive,
    poll_until, require_tool, run, write_script,
};

/// A detached agent this test started: killed (SIGKILL) on drop if a test failed before stopping it.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        if pid_alive(self.0)
            && let Ok(pid) = libc::pid_t::try_from(self.0)
        {
            // SAFETY: kill(2) on a pid this test started and saw alive.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The value `ssh-agent -s` output gives `var`.
fn exported(out: &Output, var: &str) -> Option<String> {
    out.stdout.lines().find_map(|line| {
        line.strip_prefix(&format!("{var}="))
            .and_then(|rest| rest.strip_suffix(&format!("; export {var};")))
            .map(str::to_owned)
    })
}

fn agent_pid(out: &Output) -> Detached {
    let pid: u32 = exported(out, "SSH_AGENT_PID")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no SSH_AGENT_PID line: {out:#?}"));
    assert!(pid_alive(pid), "agent {pid} runs: {out:#?}");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("keyward-agent"),
        "SSH_AGENT_PID {pid} must be the agent process"
    );
    Detached(pid)
}

fn ssh_add(home: &Path, socket: &str, args: &[&str]) -> Output {
    run(clean_command(require_tool("ssh-add"), home)
        .args(args)
        .env("SSH_AUTH_SOCK", socket))
}

fn kill_agent(home: &Path, pid: u32) -> Output {
    run(clean_command(agent_bin(), home)
        .arg("-k")
        .env("SSH_AGENT_PID", pid.to_string()))
}

fn assert_gone(pid: u32, socket: &Path) {
    assert!(
        poll_until(HANG_GUARD, || !pid_alive(pid)),
        "agent {pid} still running"
    );
    assert!(
        poll_until(Duration::from_secs(5), || !socket.exists()),
        "agent {pid} left its socket {}",
        socket.display()
    );
}

/// A private runtime directory (0700), as a login session's `$XDG_RUNTIME_DIR`.
fn runtime_dir(home: &Path) -> PathBuf {
    let dir = home.join("run");
    fs::create_dir(&dir).expect("mkdir run");
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    dir
}

/// `eval "$(keyward-agent)"` in a real shell returns, points ssh-add at a fresh private socket
/// directory under the runtime directory, and `keyward-agent -k` then stops that agent.
#[test]
fn eval_of_no_flag_output_then_ssh_add() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let runtime = runtime_dir(home);
    let script = format!(
        "eval \"$('{agent}')\" >/dev/null || exit 9\n\
         echo \"sock=$SSH_AUTH_SOCK\"; echo \"pid=$SSH_AGENT_PID\"\n\
         stat -c 'dirmode=%a' \"$(dirname \"$SSH_AUTH_SOCK\")\"\n\
         ssh-add -l; echo \"list=$?\"\n\
         '{agent}' -k",
        agent = agent_bin()
    );
    let out = run(clean_command(require_tool("sh"), home)
        .args(["-c", &script])
        .env("XDG_RUNTIME_DIR", &runtime));
    out.assert_success("eval of keyward-agent's output");
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {out:#?}"))
            .to_owned()
    };
    let socket = PathBuf::from(field("sock"));
    let pid: u32 = field("pid").parse().expect("pid");
    assert!(
        out.stdout.contains("The agent has no identities") && field("list") == "1",
        "ssh-add -l reached the agent: {out:#?}"
    );
    let private = socket.parent().expect("socket dir");
    assert_eq!(private.parent(), Some(runtime.as_path()), "{out:#?}");
    let name = private.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("ssh-"), "private dir {name}");
    assert_eq!(field("dirmode"), "700");
    assert!(
        socket
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("agent."),
        "{}",
        socket.display()
    );
    assert!(
        out.stdout
            .contains(&format!("echo Agent pid {pid} killed;")),
        "-k output: {out:#?}"
    );
    assert_gone(pid, &socket);
    assert!(
        !private.exists(),
        "the private directory goes with the agent"
    );
}

/// Two agents started without -a never share a socket.
#[test]
fn agents_without_a_get_their_own_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let runtime = runtime_dir(home);
    let start = || {
        let out = run(clean_command(agent_bin(), home)
            .args(["-s", "--no-store"])
            .env("XDG_RUNTIME_DIR", &runtime));
        out.assert_success("keyward-agent -s");
        let socket = exported(&out, "SSH_AUTH_SOCK").expect("socket line");
        (agent_pid(&out), socket)
    };
    let (a, sock_a) = start();
    let (b, sock_b) = start();
    assert_ne!(sock_a, sock_b);
    assert_ne!(Path::new(&sock_a).parent(), Path::new(&sock_b).parent());
    assert_eq!(mode_of(Path::new(&sock_a).parent().unwrap()), 0o700);
    for (agent, sock) in [(&a, &sock_a), (&b, &sock_b)] {
        assert_eq!(ssh_add(home, sock, &["-l"]).status.code(), Some(1));
        kill_agent(home, agent.0).assert_success("-k");
        assert_gone(agent.0, Path::new(sock));
    }
}

/// Command mode: the command runs with the agent in its environment, keyward-agent exits with
/// the command's status, and the agent exits after it (as ssh-agent's child does).
#[test]
fn command_mode_propagates_status_and_the_agent_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let key = keygen(home, "cmd", KeyType::Ed25519, "");
    let script = format!(
        "ssh-add -q '{key}' && ssh-add -l && echo \"pid=$SSH_AGENT_PID\" && \
         echo \"sock=$SSH_AUTH_SOCK\" && exit 7",
        key = key.private.display()
    );
    let out = run(clean_command(agent_bin(), home)
        .args(["--no-store", "sh", "-c", &script])
        .env("XDG_RUNTIME_DIR", runtime_dir(home)));
    assert_eq!(out.status.code(), Some(7), "the command's status: {out:#?}");
    assert!(out.stdout.contains("cmd@keyward-test"), "{out:#?}");
    let pid: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("SSH_AGENT_PID in the command: {out:#?}"));
    let _guard = Detached(pid);
    let socket = PathBuf::from(
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("sock="))
            .expect("sock="),
    );
    // ssh-agent checks every 10 s; keyward every second.
    assert!(
        poll_until(Duration::from_secs(15), || !pid_alive(pid)),
        "agent {pid} outlived its command"
    );
    assert!(
        poll_until(Duration::from_secs(5), || !socket.exists()),
        "socket left behind"
    );

    // A command that cannot run: status 1, and no agent is left behind.
    let out = run(clean_command(agent_bin(), home).args(["--no-store", "/nonexistent/cmd"]));
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("/nonexistent/cmd"), "{out:#?}");
}

/// `-k` signals exactly `$SSH_AGENT_PID`: of two agents, the other keeps serving.
#[test]
fn k_kills_the_right_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let start = |name: &str| {
        let sock = home.join(name);
        let out = run(clean_command(agent_bin(), home)
            .args(["-s", "--no-store", "-a"])
            .arg(&sock));
        out.assert_success("keyward-agent -s -a");
        (agent_pid(&out), sock)
    };
    let (first, first_sock) = start("one.sock");
    let (second, second_sock) = start("two.sock");
    let out = kill_agent(home, first.0);
    out.assert_success("-k");
    assert_eq!(
        out.stdout,
        format!(
            "unset SSH_AUTH_SOCK;\nunset SSH_AGENT_PID;\necho Agent pid {} killed;\n",
            first.0
        )
    );
    assert_gone(first.0, &first_sock);
    assert!(pid_alive(second.0), "the other agent must survive");
    assert_eq!(
        ssh_add(home, second_sock.to_str().unwrap(), &["-l"])
            .status
            .code(),
        Some(1)
    );
    // csh syntax with -c.
    let out = run(clean_command(agent_bin(), home)
        .args(["-c", "-k"])
        .env("SSH_AGENT_PID", second.0.to_string()));
    out.assert_success("-c -k");
    assert!(
        out.stdout.starts_with("unsetenv SSH_AUTH_SOCK;\n"),
        "{out:#?}"
    );
    assert_gone(second.0, &second_sock);

    let out = run(clean_command(agent_bin(), home).arg("-k"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("SSH_AGENT_PID not set"), "{out:#?}");
    let out = run(clean_command(agent_bin(), home)
        .arg("-k")
        .env("SSH_AGENT_PID", "1x"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not a good PID"), "{out:#?}");
}

/// `-s -a SOCK` while another agent serves SOCK: exit 1, "Address already in use", nothing on
/// stdout (no pid of anyone), and the serving agent keeps its socket.
#[test]
fn s_a_on_a_live_socket_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let sock = home.join("agent.sock");
    let out = run(clean_command(agent_bin(), home)
        .args(["-s", "--no-store", "-a"])
        .arg(&sock));
    out.assert_success("first agent");
    let first = agent_pid(&out);
    for extra in [&["-s"][..], &["-c"], &["-D"], &[]] {
        let out = run(clean_command(agent_bin(), home)
            .args(extra)
            .args(["--no-store", "-a"])
            .arg(&sock));
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {out:#?}");
        assert!(
            out.stderr.contains("Address already in use"),
            "{extra:?}: {out:#?}"
        );
        assert!(
            out.stdout.is_empty(),
            "{extra:?} printed for someone else's agent: {out:#?}"
        );
    }
    assert_eq!(
        ssh_add(home, sock.to_str().unwrap(), &["-l"]).status.code(),
        Some(1)
    );
    kill_agent(home, first.0).assert_success("-k");
    assert_gone(first.0, &sock);
}

/// `-t` gives keys added without a lifetime that lifetime; ssh-agent's time formats parse, a
/// bad one is a usage error.
#[test]
fn t_sets_the_default_lifetime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let key = keygen(home, "life", KeyType::Ed25519, "");
    let sock = home.join("agent.sock");
    let out = run(clean_command(agent_bin(), home)
        .args(["-s", "--no-store", "-t", "3s", "-a"])
        .arg(&sock));
    out.assert_success("keyward-agent -t 3s");
    let agent = agent_pid(&out);
    let sock = sock.to_str().unwrap();
    ssh_add(home, sock, &["-q", key.private.to_str().unwrap()]).assert_success("ssh-add");
    assert!(
        ssh_add(home, sock, &["-l"])
            .stdout
            .contains("life@keyward-test")
    );
    assert!(
        poll_until(Duration::from_secs(20), || ssh_add(home, sock, &["-l"])
            .stdout
            .contains("The agent has no identities")),
        "the key outlived -t 3s"
    );
    kill_agent(home, agent.0).assert_success("-k");

    let out = run(clean_command(agent_bin(), home).args(["-s", "-t", "soon"]));
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("Invalid lifetime"), "{out:#?}");
    assert!(out.stdout.is_empty());
}

/// `-E md5`: the confirmation prompt names the key by its MD5 fingerprint, as
/// `ssh-keygen -E md5 -l` prints it.
#[test]
fn e_md5_names_keys_by_md5_in_prompts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let key = keygen(home, "md5", KeyType::Ed25519, "");
    let prompt_file = home.join("prompt.txt");
    let askpass = write_script(
        home,
        "askpass",
        &format!("printf '%s' \"$1\" > '{}'\nexit 0", prompt_file.display()),
    );
    let sock = home.join("agent.sock");
    let out = run(clean_command(agent_bin(), home)
        .args(["-s", "--no-store", "-E", "md5", "--askpass"])
        .arg(&askpass)
        .arg("-a")
        .arg(&sock));
    out.assert_success("keyward-agent -E md5");
    let agent = agent_pid(&out);
    let sock = sock.to_str().unwrap();
    ssh_add(home, sock, &["-q", "-c", key.private.to_str().unwrap()]).assert_success("ssh-add -c");
    let data = home.join("data");
    fs::write(&data, b"sign me").expect("write data");
    run(clean_command(require_tool("ssh-keygen"), home)
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&key.pub_only)
        .arg(&data)
        .env("SSH_AUTH_SOCK", sock))
    .assert_success("signature confirmed through askpass");
    let md5 = run(clean_command(require_tool("ssh-keygen"), home)
        .args(["-E", "md5", "-l", "-f"])
        .arg(&key.public));
    let md5 = md5
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    assert!(md5.starts_with("MD5:"), "{md5}");
    let prompt = fs::read_to_string(&prompt_file).expect("askpass was asked");
    assert!(prompt.contains(&md5), "prompt {prompt:?} must show {md5}");
    kill_agent(home, agent.0).assert_success("-k");
}

/// Bad values exit as ssh-agent does: usage errors 1, a bad -E or -O 255.
#[test]
fn bad_flags_exit_as_ssh_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    for (args, code, says) in [
        (&["-E", "sha3"][..], 255, "Invalid hash algorithm"),
        (&["-O", "no-such-option"], 255, "Unknown -O option"),
        (&["-s", "-c"], 1, ""),
        (&["-s", "true"], 1, ""),
        (&["-x"], 1, ""),
    ] {
        let out = run(clean_command(agent_bin(), home).args(args));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(says), "{args:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:#?}");
    }
    // What OpenSSH's tests pass: -P with a pattern, the documented -O options.
    let sock = home.join("agent.sock");
    let out = run(clean_command(agent_bin(), home)
        .args([
            "-P/*",
            "-O",
            "no-restrict-websafe",
            "-O",
            "allow-remote-pkcs11",
        ])
        .args(["-s", "--no-store", "-a"])
        .arg(&sock));
    out.assert_success("-P -O");
    let agent = agent_pid(&out);
    kill_agent(home, agent.0).assert_success("-k");
    assert_gone(agent.0, &sock);
}

/// `-d`: foreground, the `SSH_AUTH_SOCK` line on stdout, debug log on stderr; SIGTERM stops it.
#[test]
fn d_prints_the_socket_line_and_logs_debug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let sock = home.join("agent.sock");
    let mut child = clean_command(agent_bin(), home)
        .args(["-d", "--no-store", "-a"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn -d");
    let _guard = Detached(child.id());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    assert_eq!(
        first,
        format!("SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;", sock.display())
    );
    let second = lines.next().expect("a line").expect("utf-8");
    assert_eq!(second, format!("echo Agent pid {};", child.id()));
    assert_eq!(
        ssh_add(home, sock.to_str().unwrap(), &["-l"]).status.code(),
        Some(1)
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log).unwrap();
    assert!(log.contains("DEBUG"), "debug log on stderr: {log}");
    assert!(!sock.exists());
}

/// `keyward agent ARGS` is keyward-agent: same output, same agent.
#[test]
fn keyward_agent_subcommand_is_the_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let sock = home.join("agent.sock");
    let out = run(clean_command(cli_bin(), home)
        .args(["agent", "-s", "--no-store", "-a"])
        .arg(&sock));
    out.assert_success("keyward agent -s");
    assert_eq!(
        exported(&out, "SSH_AUTH_SOCK").as_deref(),
        sock.to_str(),
        "{out:#?}"
    );
    let pid: u32 = exported(&out, "SSH_AGENT_PID").unwrap().parse().unwrap();
    let _guard = Detached(pid);
    assert_eq!(
        ssh_add(home, sock.to_str().unwrap(), &["-l"]).status.code(),
        Some(1)
    );
    let out = run(clean_command(cli_bin(), home)
        .args(["agent", "-k"])
        .env("SSH_AGENT_PID", pid.to_string()));
    out.assert_success("keyward agent -k");
    assert_gone(pid, &sock);
    let out = run(clean_command(cli_bin(), home).args(["agent", "-O", "bogus"]));
    assert_eq!(out.status.code(), Some(255), "{out:#?}");
}

/// A second agent on the default store another agent holds starts anyway, says so on stderr,
/// and serves keys added with ssh-add; the first keeps the store.
#[test]
fn second_agent_on_the_same_store_serves_ssh_add_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let key = keygen(home, "second", KeyType::Ed25519, "");
    let start = |name: &str| {
        let sock = home.join(name);
        let out = run(clean_command(agent_bin(), home)
            .args(["-s", "-a"])
            .arg(&sock));
        out.assert_success("keyward-agent -s on the default store");
        (agent_pid(&out), sock, out)
    };
    let (first, first_sock, first_out) = start("one.sock");
    assert!(!first_out.stderr.contains("belongs to another agent"));
    let (second, second_sock, out) = start("two.sock");
    assert!(
        out.stderr.contains("belongs to another agent"),
        "the second agent says why it has no stored keys: {out:#?}"
    );
    let sock = second_sock.to_str().unwrap();
    ssh_add(home, sock, &["-q", key.private.to_str().unwrap()]).assert_success("ssh-add");
    assert!(
        ssh_add(home, sock, &["-l"])
            .stdout
            .contains("second@keyward-test")
    );
    // The first agent still owns the store: the CLI reaches it through its control socket.
    let status = run(clean_command(cli_bin(), home)
        .args(["status", "--socket"])
        .arg(&first_sock));
    status.assert_success("keyward status on the store's agent");
    for (agent, sock) in [(&first, &first_sock), (&second, &second_sock)] {
        kill_agent(home, agent.0).assert_success("-k");
        assert_gone(agent.0, sock);
    }
}

/// `keyward man` writes keyward-agent's page, which documents the ssh-agent command line.
#[test]
fn man_page_documents_ssh_agent_compatibility() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(clean_command(cli_bin(), dir.path())
        .args(["man", "--out"])
        .arg(dir.path().join("man")));
    out.assert_success("keyward man");
    let page = fs::read_to_string(dir.path().join("man/keyward-agent.1")).expect("keyward-agent.1");
    for needle in [
        "ssh\\-agent",
        "BIND_ADDRESS",
        "\\-k",
        "command",
        "Address",
        "0700",
    ] {
        assert!(page.contains(needle), "keyward-agent.1 lacks {needle:?}");
    }
}

/// Started with ssh-agent's flags, the agent still serves its store: a key generated through
/// the CLI is listed by ssh-add at once. A relative -a means the caller's directory, although
/// the detached agent works from `/`.
#[test]
fn ssh_agent_flags_still_serve_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let out =
        run(clean_command(agent_bin(), home)
            .current_dir(home)
            .args(["-s", "-a", "agent.sock"]));
    out.assert_success("keyward-agent -s -a agent.sock");
    let agent = agent_pid(&out);
    let sock = home.join("agent.sock");
    // Absolute, unlike ssh-agent: a relative SSH_AUTH_SOCK would break at the shell's next cd.
    assert_eq!(
        exported(&out, "SSH_AUTH_SOCK").as_deref(),
        sock.to_str(),
        "{out:#?}"
    );
    assert!(sock.exists(), "bound in the caller's directory");
    run(clean_command(cli_bin(), home)
        .args([
            "key",
            "generate",
            "-t",
            "ed25519",
            "-n",
            "stored",
            "-C",
            "stored@store",
            "--socket",
        ])
        .arg(&sock))
    .assert_success("keyward key generate through the agent");
    let listed = ssh_add(home, sock.to_str().unwrap(), &["-l"]);
    assert!(listed.stdout.contains("stored@store"), "{listed:#?}");
    kill_agent(home, agent.0).assert_success("-k");
    assert_gone(agent.0, &sock);
    assert!(
        !home.join("agent.sock.control").exists() && !Path::new("/agent.sock.control").exists()
    );
}

/// With no flag, a csh `$SHELL` gets csh lines, as from ssh-agent.
#[test]
fn no_flag_with_a_csh_shell_prints_csh_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path();
    let sock = home.join("agent.sock");
    // Only ssh-agent's flags: keyward's own long options would keep it in the foreground.
    let out = run(clean_command(agent_bin(), home)
        .args(["-a"])
        .arg(&sock)
        .env("SHELL", "/bin/tcsh"));
    out.assert_success("keyward-agent with SHELL=tcsh");
    assert!(
        out.stdout.starts_with(&format!(
            "setenv SSH_AUTH_SOCK {};\nsetenv SSH_AGENT_PID ",
            sock.display()
        )),
        "{out:#?}"
    );
    let pid: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("setenv SSH_AGENT_PID "))
        .and_then(|p| p.strip_suffix(';'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pid line: {out:#?}"));
    let _guard = Detached(pid);
    kill_agent(home, pid).assert_success("-k");
    assert_gone(pid, &sock);
}
