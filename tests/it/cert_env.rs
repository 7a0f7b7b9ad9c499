//! Helpers for the `keyward cert` tests: a temporary home with its own store and sockets, the
//! `keyward` CLI and `keyward-agent` run against it, and `openssl`/`ssh-keygen` as independent
//! readers of what keyward writes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    Agent, AgentOpts, Output, clean_command, cli_bin, poll_until, require_tool, run,
};

/// How long a renewal the scheduler should make may take to show up. A guard against waiting
/// forever on a loaded machine, not a latency requirement.
pub const RENEW_GUARD: Duration = Duration::from_secs(30);

/// A temporary home: `HOME`, `XDG_RUNTIME_DIR`, `KEYWARD_STORE` and `KEYWARD_SOCKET` all point
/// inside it; the CLI runs with it as working directory.
pub struct CertEnv {
    dir: TempDir,
}

impl CertEnv {
    /// A home with a store made by `keyward init --no-passphrase`.
    pub fn new() -> CertEnv {
        let dir = tempfile::tempdir().expect("create temp dir");
        let run_dir = dir.path().join("run");
        fs::create_dir(&run_dir).expect("mkdir run");
        fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o700)).expect("chmod run");
        let env = CertEnv { dir };
        env.kw_ok(&["init", "--no-passphrase"]);
        env
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `ROOT/NAME` as a string, for command lines.
    pub fn path(&self, name: &str) -> String {
        self.root()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    fn socket(&self) -> PathBuf {
        self.root().join("run").join("keyward").join("agent.sock")
    }

    /// Runs `keyward ARGS` in this home.
    pub fn kw(&self, args: &[&str]) -> Output {
        let mut cmd = clean_command(cli_bin(), self.root());
        cmd.env("XDG_RUNTIME_DIR", self.root().join("run"))
            .env("KEYWARD_STORE", self.store())
            .env("KEYWARD_SOCKET", self.socket())
            .current_dir(self.root())
            .args(args);
        run(&mut cmd)
    }

    /// Runs `keyward ARGS`, panics unless it succeeds, and returns its stdout.
    #[track_caller]
    pub fn kw_ok(&self, args: &[&str]) -> String {
        let out = self.kw(args);
        out.assert_success(&format!("keyward {}", args.join(" ")));
        out.stdout
    }

    /// The stdout of `keyward ARGS` (which must succeed) parsed as JSON.
    #[track_caller]
    pub fn kw_json(&self, args: &[&str]) -> Value {
        let stdout = self.kw_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("keyward {} printed no JSON ({e}): {stdout}", args.join(" "))
        })
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
    pub fn show(&self, id: &str) -> Value {
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

    /// Starts `keyward-agent` on this home's store and socket and waits until the control socket
    /// answers.
    pub fn start_agent(&self) -> Agent {
        let opts = AgentOpts {
            args: vec![
                "--store".to_owned(),
                self.store().to_str().expect("utf-8 path").to_owned(),
            ],
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

    /// Runs `ssh-keygen ARGS` in this home.
    pub fn ssh_keygen(&self, args: &[&str]) -> Output {
        run(clean_command(require_tool("ssh-keygen"), self.root())
            .current_dir(self.root())
            .args(args))
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

/// Generates an RSA 2048 key in PEM (PKCS#1) form at `ROOT/NAME` with `ssh-keygen`, so that
/// `openssl req -key` reads it; returns its path.
#[track_caller]
pub fn ssh_keygen_pem(env: &CertEnv, name: &str) -> String {
    let path = env.path(name);
    env.ssh_keygen(&[
        "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", name, "-f", &path,
    ])
    .assert_success("ssh-keygen -t rsa -b 2048 -m PEM");
    path
}
