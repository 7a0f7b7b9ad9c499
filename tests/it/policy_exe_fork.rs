//! `--exe` against a program that hands its connection on: a Python program connects to the
//! agent socket and forks; the connecting process then execs `/usr/bin/ssh` (or exits) and the
//! child sends the sign request. The agent re-reads the connecting pid's executable and start
//! time at every request, so both are refused for a key whose policy names `ssh`, and the audit
//! record says why with full paths. A copy of Python named `ssh` in a temporary directory shows
//! in the confirm prompt with its full path and parent chain, not as `ssh`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::policy_hosts::{StoredKey, exe_path, last_sign, stored_key};
use crate::util::{Output, clean_command, require_tool, run, write_script};

/// The attacker: connects, pins the connect-time identity with one round trip (so the test
/// does not depend on how fast the agent accepts), then per `mode`:
/// - `plain`: signs itself;
/// - `exec`: forks; the parent execs `argv[4:]` once the child is ready, the child waits until
///   the parent runs `argv[4]` and sends the sign request, then kills the parent;
/// - `exit`: forks; the parent exits, the child waits for that and sends the request;
/// - `child`: forks; the parent, still running, waits while the child sends the request;
/// - `race`: as `exec` but without the first round trip: the parent may run ssh before the
///   agent has even accepted the connection.
///
/// Prints the reply's message type (14 signed, 5 refused).
const ATTACKER: &str = r#"
import os, signal, socket, struct, sys, time

path, blob, mode = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]

def string(b):
    return struct.pack(">I", len(b)) + b

def request(s, body):
    s.sendall(struct.pack(">I", len(body)) + body)
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)

def sign(s):
    return request(s, bytes([13]) + string(blob) + string(b"forked request") + struct.pack(">I", 0))[0]

def wait_for(cond):
    deadline = time.monotonic() + 30
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("timed out")
        time.sleep(0.01)

s = socket.socket(socket.AF_UNIX)
s.connect(path)
if mode != "race":
    assert request(s, bytes([11]))[0] == 12
if mode == "plain":
    print(sign(s))
    sys.exit(0)
parent = os.getpid()
pid = os.fork()
if pid:
    if mode == "exit":
        os._exit(0)
    if mode == "child":
        os.waitpid(pid, 0)
        sys.exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.execv(sys.argv[4], sys.argv[4:])

def gone():
    try:
        with open(f"/proc/{parent}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True

def runs(exe):
    try:
        return os.readlink(f"/proc/{parent}/exe") == exe
    except OSError:
        return False

if mode == "exit":
    wait_for(gone)
    print(sign(s))
elif mode == "child":
    print(sign(s))
else:
    wait_for(lambda: runs(sys.argv[4]))
    reply = sign(s)
    os.kill(parent, signal.SIGKILL)
    print(reply)
"#;

fn attacker(env: &Env, python: &Path, key: &StoredKey, mode: &str, exec: &[String]) -> Output {
    let script = env.root().join("attacker.py");
    fs::write(&script, ATTACKER).expect("write attacker");
    run(clean_command(python, env.root())
        .arg(&script)
        .arg(env.socket())
        .arg(hex(&key.blob()))
        .arg(mode)
        .args(exec))
}

/// Lower-case hex, for passing key blobs on a command line.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The attacker's verdict (its exit status is ssh's when its parent exec'd ssh and was killed).
#[track_caller]
fn assert_reply(out: &Output, want: u8, what: &str) {
    assert_eq!(out.stdout.trim(), want.to_string(), "{what}: {out:#?}");
}

/// An `ssh` that stays alive without children: it waits for the banner of a server that never
/// answers (a listening socket nobody accepts on).
fn hanging_ssh(port: u16) -> Vec<String> {
    [
        &exe_path("ssh"),
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn exe_rule_refuses_a_connection_handed_to_a_forked_child() {
    let env = Env::no_passphrase();
    let _agent = env.start_agent(&[]);
    let python = PathBuf::from(exe_path("python3"));
    let ssh = exe_path("ssh");
    let key = stored_key(&env, "sshonly", "ed25519");
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent port");
    let port = silent.local_addr().expect("port").port();

    // Control: the rule admits Python itself, and its own request is signed.
    env.kw_ok(&[
        "policy",
        "set",
        "sshonly",
        "--exe",
        &python.display().to_string(),
    ]);
    assert_reply(
        &attacker(&env, &python, &key, "plain", &[]),
        14,
        "python signs as python",
    );
    assert_eq!(last_sign(&env, "sshonly")["outcome"], "allowed");

    // The attack: python connects, the connecting process becomes ssh, its child asks.
    env.kw_ok(&["policy", "set", "sshonly", "--exe", &ssh]);
    let out = attacker(&env, &python, &key, "exec", &hanging_ssh(port));
    assert_reply(&out, 5, "forked child after the parent exec'd ssh");
    let record = last_sign(&env, "sshonly");
    assert_eq!(record["outcome"], "refused", "{record}");
    let detail = &record["detail"];
    let reason = detail["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("executables") && reason.contains("exec'd") && reason.contains(&ssh),
        "{record}"
    );
    assert_eq!(
        detail["exe"],
        ssh.as_str(),
        "what the pid runs now: {record}"
    );
    assert_eq!(
        detail["connected_exe"],
        python.display().to_string(),
        "what it ran when it connected: {record}"
    );
    assert_parents_are_full_paths(&record);

    // The connecting process exits and its child asks: refused too.
    let out = attacker(&env, &python, &key, "exit", &[]);
    assert_reply(&out, 5, "forked child after the parent exited");
    let record = last_sign(&env, "sshonly");
    assert_eq!(record["outcome"], "refused", "{record}");
    assert!(
        record["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("has exited")),
        "{record}"
    );

    // The parent still runs python, unchanged: the kernel says the child wrote the request.
    let out = attacker(&env, &python, &key, "child", &[]);
    assert_reply(&out, 5, "forked child of a still-running python");
    let record = last_sign(&env, "sshonly");
    assert!(
        record["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("written by pid")),
        "{record}"
    );

    // The same child with the python rule: the parent that exec'd ssh no longer qualifies either.
    env.kw_ok(&[
        "policy",
        "set",
        "sshonly",
        "--exe",
        &python.display().to_string(),
    ]);
    let out = attacker(&env, &python, &key, "exec", &hanging_ssh(port));
    assert_reply(&out, 5, "python rule, parent exec'd ssh");

    // With the ssh rule, racing the accept: the child's request is refused whoever wins.
    env.kw_ok(&["policy", "set", "sshonly", "--exe", &ssh]);
    for _ in 0..3 {
        let out = attacker(&env, &python, &key, "race", &hanging_ssh(port));
        assert_reply(&out, 5, "exec before the agent accepted");
    }
    drop(silent);
}

#[track_caller]
fn assert_parents_are_full_paths(record: &serde_json::Value) {
    let parents = record["detail"]["parents"].as_array().expect("parents");
    assert!(
        parents.len() >= 2,
        "the chain reaches the parents: {record}"
    );
    for p in parents {
        if let Some(exe) = p["exe"].as_str() {
            assert!(exe.starts_with('/'), "full path {exe:?} in {record}");
        }
    }
}

#[test]
fn confirm_prompt_shows_full_paths_of_a_python_named_ssh() {
    let env = Env::no_passphrase();
    let probe = tempfile::tempdir().expect("temp dir");
    let record = probe.path().join("prompt");
    let askpass = write_script(
        probe.path(),
        "askpass",
        &format!("printf '%s' \"$1\" > '{}'", record.display()),
    );
    let _agent = env.start_agent(&["--askpass", askpass.to_str().expect("utf-8")]);
    let key = stored_key(&env, "confirmed", "ed25519");
    env.kw_ok(&["policy", "set", "confirmed", "--confirm"]);

    let fake = probe.path().join("ssh");
    fs::copy(exe_path("python3"), &fake).expect("copy python as ssh");
    assert_reply(&attacker(&env, &fake, &key, "plain", &[]), 14, "approved");
    let prompt = fs::read_to_string(&record).expect("askpass was run");
    let me = std::env::current_exe().expect("test binary");
    let me = fs::canonicalize(me).expect("canonical test binary");
    assert!(
        prompt.contains(&format!("Requested by {} (pid ", fake.display())),
        "the full path of the fake ssh: {prompt}"
    );
    assert!(
        prompt.contains(&format!("from {} (pid ", me.display())),
        "the parent chain with full paths: {prompt}"
    );
    let audit = last_sign(&env, "confirmed");
    assert_eq!(
        audit["detail"]["exe"],
        fake.display().to_string(),
        "{audit}"
    );
    // Not an actual ssh: the real one lives elsewhere.
    assert_ne!(fake, require_tool("ssh"));
}
