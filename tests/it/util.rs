//! Shared test helpers: locating the built binaries, a guard that runs `keyward-agent` in a fresh
//! temporary directory, running OpenSSH tools against it with a clean environment, and key
//! generation with `ssh-keygen`.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// PATH given to every child process: the system tool directories only.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a child process may run before the test calls it hung. This guards against a test
/// blocking forever; it is not a timing assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

/// How long to wait for the daemon to accept connections before calling the start failed.
const READY_GUARD: Duration = Duration::from_secs(60);

/// Path of the built `keyward-agent` binary.
pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyward-agent")
}

/// Path of the built `keyward` CLI binary.
pub fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyward")
}

/// Panics, with an install hint, when `name` is not on [`PATH`]: tests fail, never skip.
pub fn require_tool(name: &str) -> PathBuf {
    for dir in PATH.split(':') {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let package = match name {
        "sshd" => "openssh-server",
        "ssh" | "ssh-add" | "ssh-keygen" => "openssh-client",
        "setpriv" | "runuser" => "util-linux",
        "openssl" => "openssl",
        other => other,
    };
    panic!(
        "required tool `{name}` is not installed; run `scripts/test` (it installs missing tools) \
         or `apt-get install -y {package}`"
    );
}

/// What a finished child process produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with the full output unless the process exited 0.
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.status.success(), "{what} failed: {self:#?}");
        self
    }

    /// Panics with the full output if the process exited 0.
    #[track_caller]
    pub fn assert_failure(&self, what: &str) -> &Self {
        assert!(
            !self.status.success(),
            "{what} unexpectedly succeeded: {self:#?}"
        );
        self
    }
}

/// A `Command` for `program` with an empty environment apart from `PATH` and `HOME`, stdin closed.
pub fn clean_command(program: impl AsRef<OsStr>, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", PATH)
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, capturing stdout and stderr, and panics if it (or a process that
/// inherited its stdout/stderr) is still running after [`HANG_GUARD`].
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {shown}: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout was piped"));
    let stderr = drain(child.stderr.take().expect("stderr was piped"));
    let deadline = Instant::now() + HANG_GUARD;
    let status = wait_until(&mut child, deadline)
        .unwrap_or_else(|| panic!("{shown} still running after {HANG_GUARD:?}; killed it"));
    let take = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("{shown} exited but its {name} stayed open (a detached child holds it?)")
        });
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Output {
        status,
        stdout: take(stdout, "stdout"),
        stderr: take(stderr, "stderr"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just ends the capture; the test sees what was read so far.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Waits for `child` until `deadline`; kills it and returns `None` if it is still running then.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `guard` has passed; returns whether it held.
pub fn poll_until(guard: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + guard;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes an executable `/bin/sh` script named `name` into `dir`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

/// Mode bits (permissions only) of `path`, without following a final symlink.
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X'))),
        Err(_) => false,
    }
}

/// Options for starting a daemon.
#[derive(Default)]
pub struct AgentOpts {
    /// Extra command-line arguments after `--socket PATH`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `keyward-agent` in its own temporary directory; killed on drop.
pub struct Agent {
    child: Option<Child>,
    dir: TempDir,
    socket: PathBuf,
}

impl Agent {
    /// Starts an agent with no extra options.
    pub fn start() -> Agent {
        Agent::start_with(&AgentOpts::default())
    }

    /// Starts an agent with extra arguments.
    pub fn start_args(args: &[&str]) -> Agent {
        Agent::start_with(&AgentOpts {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
        })
    }

    /// Starts an agent whose socket is `DIR/sock/agent.sock` (the `sock` directory does not exist
    /// beforehand) and waits until it accepts connections.
    pub fn start_with(opts: &AgentOpts) -> Agent {
        let dir = tempfile::tempdir().expect("create temp dir");
        let socket = dir.path().join("sock").join("agent.sock");
        Agent::start_at(dir, socket, opts)
    }

    /// Starts an agent on `socket`, keeping its files in `dir`.
    pub fn start_at(dir: TempDir, socket: PathBuf, opts: &AgentOpts) -> Agent {
        let child = spawn_agent(dir.path(), &socket, opts);
        Agent::adopt(child, dir, socket)
    }

    /// Takes charge of an already spawned daemon and waits until `socket` accepts connections.
    pub fn adopt(child: Child, dir: TempDir, socket: PathBuf) -> Agent {
        let mut agent = Agent {
            child: Some(child),
            dir,
            socket,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_GUARD;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("agent child present");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "keyward-agent exited early ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "keyward-agent never accepted on {}; log:\n{}",
                self.socket.display(),
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory that holds the socket directory, keys and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent child present").id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// A clean command for `program` with `SSH_AUTH_SOCK` naming this agent.
    pub fn command(&self, program: &str) -> Command {
        require_tool(program);
        let mut cmd = clean_command(program, self.dir());
        cmd.env("SSH_AUTH_SOCK", &self.socket);
        cmd
    }

    /// Runs `ssh-add ARGS` against this agent.
    pub fn ssh_add(&self, args: &[&str]) -> Output {
        run(self.command("ssh-add").args(args))
    }

    /// Runs `ssh-add ARGS` with `SSH_ASKPASS` forced to a script that prints `secret`.
    pub fn ssh_add_askpass(&self, secret: &str, args: &[&str]) -> Output {
        let askpass = write_script(
            self.dir(),
            &format!("askpass-{}", unique()),
            &format!("printf '%s\\n' '{secret}'"),
        );
        run(self
            .command("ssh-add")
            .env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .args(args))
    }

    /// Adds `key` (unencrypted) with extra `ssh-add` flags placed before the file name.
    pub fn add(&self, key: &Key, flags: &[&str]) {
        let mut args = flags.to_vec();
        let file = key.private.to_str().expect("utf-8 path");
        args.push(file);
        self.ssh_add(&args).assert_success("ssh-add");
    }

    /// Sends `signal` to the daemon and waits for it to exit; `None` if it did not exit in time.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("agent child present");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        wait_until(&mut child, Instant::now() + HANG_GUARD)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns `keyward-agent --socket SOCKET -d ARGS` with a clean environment, stderr to
/// `DIR/agent.log`.
pub fn spawn_agent(dir: &Path, socket: &Path, opts: &AgentOpts) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .expect("open agent log");
    let mut cmd = clean_command(agent_bin(), dir);
    cmd.arg("--socket")
        .arg(socket)
        .arg("-d")
        .args(&opts.args)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().expect("spawn keyward-agent")
}

/// A number unique within this test process, for file names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Key types `ssh-keygen` can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa(u32),
    Ed25519,
    Ecdsa(u32),
    Dsa,
}

impl KeyType {
    fn keygen_args(self) -> Vec<String> {
        match self {
            KeyType::Rsa(bits) => vec!["-t".into(), "rsa".into(), "-b".into(), bits.to_string()],
            KeyType::Ed25519 => vec!["-t".into(), "ed25519".into()],
            KeyType::Ecdsa(bits) => {
                vec!["-t".into(), "ecdsa".into(), "-b".into(), bits.to_string()]
            }
            KeyType::Dsa => vec!["-t".into(), "dsa".into()],
        }
    }
}

/// A key pair made by `ssh-keygen`.
pub struct Key {
    /// The private key file (`DIR/keys/NAME`), mode 0600.
    pub private: PathBuf,
    /// The public key beside it (`DIR/keys/NAME.pub`).
    pub public: PathBuf,
    /// A copy of the public key in a directory that holds no private key (`DIR/pub/NAME.pub`), for
    /// `ssh-keygen -Y sign`, which silently uses a private key file beside the `.pub` otherwise.
    pub pub_only: PathBuf,
    /// The comment given with `-C`.
    pub comment: String,
}

impl Key {
    /// The `.pub` file's contents, trimmed.
    pub fn public_line(&self) -> String {
        fs::read_to_string(&self.public)
            .expect("read .pub")
            .trim()
            .to_owned()
    }

    /// The public key parsed by `ssh-key`.
    pub fn public_key(&self) -> ssh_key::PublicKey {
        ssh_key::PublicKey::from_openssh(&self.public_line()).expect("parse .pub")
    }

    /// The public key blob as sent on the agent protocol.
    pub fn blob(&self) -> Vec<u8> {
        self.public_key()
            .to_bytes()
            .expect("encode public key blob")
    }
}

/// Generates a key of `kind` named `name` under `dir`, encrypted with `passphrase` if non-empty.
pub fn keygen(dir: &Path, name: &str, kind: KeyType, passphrase: &str) -> Key {
    let keys = dir.join("keys");
    let pubs = dir.join("pub");
    fs::create_dir_all(&keys).expect("mkdir keys");
    fs::create_dir_all(&pubs).expect("mkdir pub");
    let private = keys.join(name);
    let comment = format!("{name}@keyward-test");
    run(clean_command(require_tool("ssh-keygen"), dir)
        .args(kind.keygen_args())
        .args(["-q", "-N", passphrase, "-C", &comment, "-f"])
        .arg(&private))
    .assert_success("ssh-keygen");
    let public = keys.join(format!("{name}.pub"));
    let pub_only = pubs.join(format!("{name}.pub"));
    fs::copy(&public, &pub_only).expect("copy .pub");
    assert!(
        !pubs.join(name).exists(),
        "the pub-only directory must not hold a private key"
    );
    Key {
        private,
        public,
        pub_only,
        comment,
    }
}

/// Signs `data` with `ssh-keygen -Y sign -n file` through the agent, using only the public key.
/// On success the signature is at `DATA.sig`.
pub fn sign_file(agent: &Agent, key: &Key, data: &Path) -> Output {
    let _ = fs::remove_file(sig_path(data));
    run(agent
        .command("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&key.pub_only)
        .arg(data))
}

/// Path of the signature `ssh-keygen -Y sign` writes for `data`.
pub fn sig_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Verifies `DATA.sig` for `data` with `ssh-keygen -Y verify` against an `allowed_signers` file
/// naming `key`.
pub fn verify_file(dir: &Path, key: &Key, data: &Path) -> Output {
    let signers = dir.join(format!("allowed_signers-{}", unique()));
    fs::write(&signers, format!("signer@keyward {}\n", key.public_line()))
        .expect("write allowed_signers");
    let input = fs::File::open(data).expect("open data");
    run(clean_command(require_tool("ssh-keygen"), dir)
        .args(["-Y", "verify", "-n", "file", "-I", "signer@keyward", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(sig_path(data))
        .stdin(input))
}

/// Writes a small data file to sign and returns its path.
pub fn data_file(dir: &Path) -> PathBuf {
    let path = dir.join(format!("data-{}.txt", unique()));
    fs::write(&path, b"keyward integration test payload\n").expect("write data");
    path
}

/// Signs a fresh data file through the agent and verifies it with `ssh-keygen -Y verify`.
#[track_caller]
pub fn assert_agent_signs(agent: &Agent, key: &Key) {
    let data = data_file(agent.dir());
    sign_file(agent, key, &data).assert_success("ssh-keygen -Y sign through the agent");
    verify_file(agent.dir(), key, &data).assert_success("ssh-keygen -Y verify");
}

/// Asserts that the agent refuses to sign with `key` (so `ssh-keygen -Y sign` fails).
#[track_caller]
pub fn assert_agent_refuses(agent: &Agent, key: &Key) {
    let data = data_file(agent.dir());
    sign_file(agent, key, &data).assert_failure("ssh-keygen -Y sign with a refused key");
    assert!(!sig_path(&data).exists(), "no signature may be written");
}

/// The output of `ssh-add -l` must say the agent holds no identities.
#[track_caller]
pub fn assert_no_identities(agent: &Agent) {
    let out = agent.ssh_add(&["-l"]);
    assert!(
        out.stdout.contains("The agent has no identities"),
        "expected no identities: {out:#?}"
    );
}
