//! Helpers for the store, `keyward key` and `keyward cert` tests: a temporary home with its own
//! store, socket and runtime directories, the `keyward` CLI run against it, `keyward-agent` started
//! on that store, and `openssl`/`ssh-keygen` as independent readers of what keyward writes.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    Agent, AgentOpts, Output, clean_command, cli_bin, poll_until, require_tool, run,
};

/// How long a renewal the scheduler should make may take to show up. A guard against waiting
/// forever on a loaded machine, not a latency requirement.
pub const RENEW_GUARD: Duration = Duration::from_secs(30);

/// Passphrase used for stores in these tests.
pub const STORE_PASS: &str = "correct horse battery staple";

/// A temporary home: `HOME`, `XDG_RUNTIME_DIR`, `KEYWARD_STORE` and `KEYWARD_SOCKET` all point
/// inside it, so nothing outside the directory is read or written.
pub struct Env {
    dir: TempDir,
}

impl Env {
    /// A fresh, empty home (no store yet).
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("create temp dir");
        fs::create_dir(dir.path().join("run")).expect("mkdir run");
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700))
            .expect("chmod run");
        Env { dir }
    }

    /// A home whose store was made by `keyward init --no-passphrase`.
    pub fn no_passphrase() -> Env {
        let env = Env::new();
        env.kw(&["init", "--no-passphrase"])
            .assert_success("keyward init --no-passphrase");
        env
    }

    /// A home whose store was made by `keyward init --passphrase-file` with [`STORE_PASS`].
    pub fn with_passphrase() -> Env {
        let env = Env::new();
        let pass = env.pass_file(STORE_PASS);
        env.kw(&["init", "--passphrase-file", &pass])
            .assert_success("keyward init --passphrase-file");
        env
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The store directory (`KEYWARD_STORE`).
    pub fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    /// The agent socket (`KEYWARD_SOCKET`); `control.sock` is beside it.
    pub fn socket(&self) -> PathBuf {
        self.root().join("run").join("keyward").join("agent.sock")
    }

    /// `ROOT/NAME` as a string, for command lines.
    pub fn path(&self, name: &str) -> String {
        self.root()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    /// Writes `passphrase` (with a trailing newline) to a new file and returns its path.
    pub fn pass_file(&self, passphrase: &str) -> String {
        let path = self.path(&format!("pass-{}", crate::util::unique()));
        fs::write(&path, format!("{passphrase}\n")).expect("write passphrase file");
        path
    }

    /// A clean command for the `keyward` CLI in this home.
    pub fn kw_command(&self) -> Command {
        let mut cmd = clean_command(cli_bin(), self.root());
        cmd.env("XDG_RUNTIME_DIR", self.root().join("run"))
            .env("KEYWARD_STORE", self.store())
            .env("KEYWARD_SOCKET", self.socket())
            .current_dir(self.root());
        cmd
    }

    /// Runs `keyward ARGS`.
    pub fn kw(&self, args: &[&str]) -> Output {
        run(self.kw_command().args(args))
    }

    /// Runs `keyward ARGS`, panics unless it succeeds, and returns its stdout.
    #[track_caller]
    pub fn kw_ok(&self, args: &[&str]) -> String {
        let out = self.kw(args);
        out.assert_success(&format!("keyward {}", args.join(" ")));
        out.stdout
    }

    /// Parses the stdout of `keyward ARGS` (which must succeed) as JSON.
    #[track_caller]
    pub fn kw_json(&self, args: &[&str]) -> Value {
        let stdout = self.kw_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("keyward {} printed no JSON ({e}): {stdout}", args.join(" "))
        })
    }

    /// `keyward key show NAME --json`.
    #[track_caller]
    pub fn show(&self, name: &str) -> Value {
        self.kw_json(&["key", "show", name, "--json"])
    }

    /// The names in `keyward key list --json`, sorted.
    #[track_caller]
    pub fn key_names(&self) -> Vec<String> {
        let list = self.kw_json(&["key", "list", "--json"]);
        let mut names: Vec<String> = list
            .as_array()
            .expect("key list --json is an array")
            .iter()
            .map(|k| k["name"].as_str().expect("name is a string").to_owned())
            .collect();
        names.sort();
        names
    }

    /// `keyward cert create --key KEY --days DAYS [EXTRA] --json`; returns the certificate view.
    #[track_caller]
    pub fn create(&self, key: &str, days: u32, extra: &[&str]) -> Value {
        let days = days.to_string();
        let mut args = vec!["cert", "create", "--key", key, "--days", &days, "--json"];
        args.extend_from_slice(extra);
        self.kw_json(&args)
    }

    /// `keyward cert show ID --json`.
    #[track_caller]
    pub fn cert_show(&self, id: &str) -> Value {
        self.kw_json(&["cert", "show", id, "--json"])
    }

    /// `keyward cert list --all --json`.
    #[track_caller]
    pub fn all_certs(&self) -> Vec<Value> {
        match self.kw_json(&["cert", "list", "--all", "--json"]) {
            Value::Array(list) => list,
            other => panic!("cert list --json is not an array: {other}"),
        }
    }

    /// `cert list --all --json` without `days_left`, which changes as time passes: what the store
    /// holds, for before/after comparisons.
    #[track_caller]
    pub fn snapshot(&self) -> Vec<Value> {
        let mut certs = self.all_certs();
        for cert in &mut certs {
            if let Value::Object(map) = cert {
                map.remove("days_left");
            }
        }
        certs
    }

    /// Runs `ssh-keygen ARGS` in this home.
    pub fn ssh_keygen(&self, args: &[&str]) -> Output {
        run(clean_command(require_tool("ssh-keygen"), self.root())
            .current_dir(self.root())
            .args(args))
    }

    /// Runs `openssl ARGS` in this home.
    pub fn openssl(&self, args: &[&str]) -> Output {
        run(clean_command(require_tool("openssl"), self.root())
            .current_dir(self.root())
            .args(args))
    }

    /// Runs `openssl ARGS`, panics unless it succeeds, and returns its stdout.
    #[track_caller]
    pub fn openssl_ok(&self, args: &[&str]) -> String {
        let out = self.openssl(args);
        out.assert_success(&format!("openssl {}", args.join(" ")));
        out.stdout
    }

    /// The SHA-1 thumbprint of the certificate in `file` (PEM or DER, by extension) as
    /// `openssl x509 -fingerprint` prints it, without colons: the form keyward shows.
    #[track_caller]
    pub fn ssl_thumbprint(&self, file: &str) -> String {
        let out = self.x509(file, &["-noout", "-fingerprint", "-sha1"]);
        field(&out, "Fingerprint=").replace(':', "")
    }

    /// `openssl x509 -in FILE ARGS`, with `-inform der` for `.cer`/`.der` files; its stdout.
    #[track_caller]
    pub fn x509(&self, file: &str, args: &[&str]) -> String {
        let der = Path::new(file)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("cer") || e.eq_ignore_ascii_case("der"));
        let inform = if der { "der" } else { "pem" };
        let mut all = vec!["x509", "-inform", inform, "-in", file];
        all.extend_from_slice(args);
        self.openssl_ok(&all)
    }

    /// Starts `keyward-agent --socket SOCKET --store STORE ARGS` and waits until both its agent
    /// socket and its control socket answer.
    pub fn start_agent(&self, args: &[&str]) -> Agent {
        let mut all = vec![
            "--store".to_owned(),
            self.store().to_str().expect("utf-8 path").to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let opts = AgentOpts {
            args: all,
            env: Vec::new(),
        };
        let agent = Agent::start_at(
            tempfile::tempdir().expect("agent temp dir"),
            self.socket(),
            &opts,
        );
        let ready = poll_until(Duration::from_secs(60), || {
            let out = self.kw(&["status", "--json"]);
            out.status.success()
                && serde_json::from_str::<Value>(&out.stdout)
                    .is_ok_and(|v| v["daemon"] == Value::Bool(true))
        });
        assert!(
            ready,
            "control socket never answered; log:\n{}",
            agent.log()
        );
        agent
    }

    /// Every regular file under the store directory.
    pub fn store_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.store(), &mut |p, meta| {
            if meta.is_file() {
                files.push(p.to_owned());
            }
        });
        files
    }

    /// Every path under the store (the directory itself included) with group or other mode bits,
    /// as `find STORE -perm /077` would print them.
    pub fn store_loose_modes(&self) -> Vec<String> {
        let mut loose = Vec::new();
        let store = self.store();
        let meta = fs::symlink_metadata(&store).expect("stat store");
        if meta.permissions().mode() & 0o077 != 0 {
            loose.push(format!(
                "{} {:o}",
                store.display(),
                meta.permissions().mode()
            ));
        }
        walk(&store, &mut |p, meta| {
            if meta.permissions().mode() & 0o077 != 0 {
                loose.push(format!("{} {:o}", p.display(), meta.permissions().mode()));
            }
        });
        loose
    }
}

/// Stops `agent` with SIGTERM and panics unless it exits successfully.
#[track_caller]
pub fn stop(agent: &mut Agent) {
    let status = agent
        .signal_and_wait(libc::SIGTERM)
        .expect("agent exits on SIGTERM");
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        agent.log()
    );
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let meta = fs::symlink_metadata(entry.path()).expect("stat");
        visit(&entry.path(), &meta);
        if meta.is_dir() {
            walk(&entry.path(), visit);
        }
    }
}

/// The first two fields (`type base64`) of a public key line: the key without its comment.
pub fn key_part(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Panics unless `out` is a failure with a one-line `keyward: ...` message on stderr.
#[track_caller]
pub fn assert_clean_error(out: &Output, what: &str) {
    out.assert_failure(what);
    let err = out.stderr.trim_end();
    assert!(
        err.starts_with("keyward: ") && !err.contains('\n'),
        "{what}: expected a one-line `keyward: ...` error, got {out:#?}"
    );
}

/// The value after `label` on the first line of `text` containing it.
#[track_caller]
pub fn field(text: &str, label: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in {text:?}"));
    line.split_once(label)
        .expect("label present")
        .1
        .trim()
        .to_owned()
}

/// The string `key` of a JSON object (panics when absent).
#[track_caller]
pub fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
        .to_owned()
}

/// The certificate with id `id` in a `cert list --json` answer.
#[track_caller]
pub fn by_id<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|c| c["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("certificate {id} not listed: {list:#?}"))
}

/// Runs `keyward ARGS`, expects a one-line `keyward: ...` error mentioning `hint`
/// (case-insensitive), and checks that `state` (what the store holds) is the same before and after.
#[track_caller]
pub fn assert_refused<T: PartialEq + fmt::Debug>(
    env: &Env,
    args: &[&str],
    hint: &str,
    state: impl Fn(&Env) -> T,
) {
    let before = state(env);
    let out = env.kw(args);
    let what = format!("keyward {}", args.join(" "));
    assert_clean_error(&out, &what);
    assert!(
        out.stderr.to_lowercase().contains(&hint.to_lowercase()),
        "{what}: the error should mention {hint:?}: {out:#?}"
    );
    assert_eq!(state(env), before, "{what} changed the store");
}

/// Generates an RSA 2048 key in PEM (PKCS#1) form at `ROOT/NAME` with `ssh-keygen`, so that
/// `openssl req -key` reads it; returns its path.
#[track_caller]
pub fn ssh_keygen_pem(env: &Env, name: &str) -> String {
    let path = env.path(name);
    env.ssh_keygen(&[
        "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", name, "-f", &path,
    ])
    .assert_success("ssh-keygen -t rsa -b 2048 -m PEM");
    path
}
