//! `cargo bench --bench compare`: keyward-agent against OpenSSH's `ssh-agent`, side by side.
//!
//! Both agents are started from scratch, each in its own temporary directory, loaded with the
//! same RSA-2048 keys over the agent protocol (`SSH_AGENTC_ADD_IDENTITY`), checked (the listed
//! keys match, signatures verify for rsa-sha2-256 and rsa-sha2-512) and then measured one at a
//! time (alternating in short rounds, median kept), so they never compete for the CPU:
//!
//! * with 1 key: signatures/s and p50/p99 latency at 1, 8 and 64 concurrent clients (one
//!   connection each), request-identities/s, connect-list-close churn/s, peak RSS (`VmHWM`);
//! * with 1,000 keys (fresh agents): time to add them, request-identities/s, signing with the last
//!   key added, peak RSS;
//! * `openssl speed -seconds 3 -multi <cores> rsa2048` sign/s as the ceiling for keyward at 8
//!   clients.
//!
//! It prints a table (ratios are keyward/reference; the `better` column says which direction
//! wins) and writes JSON to `$KEYWARD_BENCH_OUT` or `<target>/bench/compare.json`.
//!
//! Environment: `KEYWARD_BENCH_SECS` (seconds per measurement, default 3; the whole run then
//! takes about 70 s), `KEYWARD_BENCH_KEYS` (default 1000), `KEYWARD_BENCH_OPENSSL_MULTI`
//! (default: the number of cores), `KEYWARD_BENCH_STRICT=1` (exit non-zero when a target is
//! missed), `KEYWARD_AGENT_BIN` / `SSH_AGENT_BIN` (other agent binaries). The generated keys are
//! cached in `<target>/bench/rsa2048-keys.openssh`; the first run spends about half a minute
//! making them.

mod agents;
mod keys;
mod load;
mod openssl;
mod proto;
mod report;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use ssh_key::private::RsaKeypair;
use ssh_key::public::{KeyData, RsaPublicKey};

use agents::{Agent, Kind};
use proto::{Client, REQUEST_IDENTITIES, RSA_SHA2_256, RSA_SHA2_512, SIGN_RESPONSE, SUCCESS};
use report::{Better, Row, Val};

/// An agent that started and passed its checks, or why not.
type Slot = Result<Agent, String>;

struct Config {
    secs: Duration,
    keys: usize,
    openssl_multi: usize,
    strict: bool,
    out: PathBuf,
    cache: PathBuf,
}

impl Config {
    fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secs: f64 = var("KEYWARD_BENCH_SECS").map_or(Ok(3.0), |v| v.parse())?;
        let keys: usize = var("KEYWARD_BENCH_KEYS").map_or(Ok(1000), |v| v.parse())?;
        ensure!(keys >= 2, "KEYWARD_BENCH_KEYS must be at least 2");
        // One process per core: with -multi, `openssl speed` reports wall-clock rates summed
        // over its processes, so more processes than cores only share the same cores.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let openssl_multi = var("KEYWARD_BENCH_OPENSSL_MULTI").map_or(Ok(cores), |v| v.parse())?;
        let bench_dir = target_dir().join("bench");
        Ok(Self {
            secs: Duration::from_secs_f64(secs),
            keys,
            openssl_multi,
            strict: var("KEYWARD_BENCH_STRICT").is_some_and(|v| v != "0"),
            out: var("KEYWARD_BENCH_OUT")
                .map_or_else(|| bench_dir.join("compare.json"), PathBuf::from),
            cache: bench_dir.join("rsa2048-keys.openssh"),
        })
    }
}

/// The target directory, from where cargo put this executable (`<target>/release/deps/compare-*`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(PathBuf::from))?
        })
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it and
    // should not spend a minute benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("compare: not run (use `cargo bench --bench compare`)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let started = Instant::now();
    let cfg = Config::from_env()?;
    let load_before = loadavg();
    if load_before.first().is_some_and(|l| *l > 0.5) {
        eprintln!(
            "warning: load average {load_before:?}: other work on this machine skews results"
        );
    }
    let keys = keys::load_or_generate(&cfg.cache, cfg.keys)?;
    let mut rows = Vec::new();

    // The ceiling is measured before and after the agents and the better run kept: other work
    // on the machine can only lower it.
    let speed = || {
        eprintln!(
            "openssl speed -seconds 3 -multi {} rsa2048",
            cfg.openssl_multi
        );
        openssl::speed_rsa2048(3, cfg.openssl_multi).map_err(|e| format!("{e:#}"))
    };
    let speed_before = speed();
    eprintln!("phase 1: one key");
    let at_eight = one_key(&cfg, &keys[0], &mut rows);
    eprintln!("phase 2: {} keys", cfg.keys);
    many_keys(&cfg, &keys, &mut rows);
    let speed_after = speed();
    let ceiling = match (&speed_before, &speed_after) {
        (Ok(a), Ok(b)) => Ok(a.max(*b)),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(*x),
        (Err(e), Err(_)) => Err(e.clone()),
    };
    rows.push(Row {
        reference_name: "openssl",
        ..Row::new(
            "sign/s, 8 clients vs openssl speed",
            "sign/s",
            Better::Higher,
            [at_eight, ceiling],
        )
        .target(0.8)
    });

    let table = report::table(&rows);
    println!("\n{table}");
    let params = json!({
        "seconds_per_measurement": cfg.secs.as_secs_f64(),
        "keys": cfg.keys,
        "openssl_command": format!("openssl speed -seconds 3 -multi {} rsa2048", cfg.openssl_multi),
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "ssh_agent_version": tool_version("ssh", "-V"),
        "openssl_version": tool_version("openssl", "version"),
        "openssl_sign_per_s_runs": [speed_before.ok(), speed_after.ok()],
        "wall_seconds": started.elapsed().as_secs_f64(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    });
    report::write_json(&cfg.out, &rows, &params)?;
    println!(
        "JSON: {}  ({:.0} s)",
        cfg.out.display(),
        started.elapsed().as_secs_f64()
    );
    let failed = rows.iter().filter(|r| r.pass() == Some(false)).count();
    Ok(if cfg.strict && failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Phase 1: one key loaded. Returns keyward's sign/s at 8 clients for the openssl row.
fn one_key(cfg: &Config, key: &RsaKeypair, rows: &mut Vec<Row>) -> Val {
    let pair = start_pair(std::slice::from_ref(key)).map(|r| r.map(|(agent, _)| agent));
    let public = public(key);
    let mut at_eight = Err("not measured".to_owned());
    for clients in [1, 8, 64] {
        let runs = rounds(&pair, cfg, |a, d| {
            load::sign(a.socket(), &public, clients, d)
        });
        let pick = |f: fn(&load::Run) -> f64| runs.clone().map(|r| r.map(|run| f(&run)));
        let mut rate = Row::new(
            format!("sign rsa-sha2-256, {}", plural(clients, "client")),
            "sign/s",
            Better::Higher,
            pick(|r| r.rate),
        );
        let p50 = Row::new(
            format!("sign p50, {}", plural(clients, "client")),
            "us",
            Better::Lower,
            pick(|r| r.p50_us),
        );
        let mut p99 = Row::new(
            format!("sign p99, {}", plural(clients, "client")),
            "us",
            Better::Lower,
            pick(|r| r.p99_us),
        );
        match clients {
            1 => rate = rate.target(2.0),
            8 => {
                at_eight.clone_from(&rate.keyward);
                rate = rate.target(2.0);
            }
            _ => p99 = p99.target(0.5),
        }
        let cpu = Row::new(
            format!("agent CPU per signature, {}", plural(clients, "client")),
            "us",
            Better::Lower,
            cpu_per_op(&runs),
        );
        rows.extend([rate, p50, p99, cpu]);
    }
    let lists = rounds(&pair, cfg, |a, d| load::list(a.socket(), 1, 1, d));
    rows.push(Row::new(
        "request-identities, 1 key",
        "req/s",
        Better::Higher,
        rates(&lists),
    ));
    for clients in [1, 8] {
        let churn = rounds(&pair, cfg, |a, d| load::churn(a.socket(), 1, clients, d));
        rows.push(Row::new(
            format!("connect-list-close, {}", plural(clients, "client")),
            "conn/s",
            Better::Higher,
            rates(&churn),
        ));
    }
    rows.push(Row::new("peak RSS, 1 key", "MiB", Better::Lower, peak_rss(&pair)).target(2.0));
    at_eight
}

/// Phase 2: fresh agents with all the keys.
fn many_keys(cfg: &Config, keys: &[RsaKeypair], rows: &mut Vec<Row>) {
    let n = keys.len();
    let started = start_pair(keys);
    let add_rate = started.clone_rates();
    let pair = started.map(|r| r.map(|(agent, _)| agent));
    rows.push(Row::new(
        format!("add identity, {n} keys"),
        "keys/s",
        Better::Higher,
        add_rate,
    ));
    let expect = u32::try_from(n).unwrap_or(u32::MAX);
    let lists = rounds(&pair, cfg, |a, d| load::list(a.socket(), expect, 1, d));
    rows.push(
        Row::new(
            format!("request-identities, {n} keys"),
            "req/s",
            Better::Higher,
            rates(&lists),
        )
        .target(10.0),
    );
    rows.push(Row::new(
        format!("agent CPU per request-identities, {n} keys"),
        "us",
        Better::Lower,
        cpu_per_op(&lists),
    ));
    let last = public(&keys[n - 1]);
    let signs = rounds(&pair, cfg, |a, d| load::sign(a.socket(), &last, 1, d));
    rows.push(Row::new(
        format!("sign with key #{n} of {n}, 1 client"),
        "sign/s",
        Better::Higher,
        rates(&signs),
    ));
    rows.push(
        Row::new(
            format!("peak RSS, {n} keys"),
            "MiB",
            Better::Lower,
            peak_rss(&pair),
        )
        .target(1.0),
    );
}

fn public(key: &RsaKeypair) -> KeyData {
    KeyData::Rsa(RsaPublicKey::from(key))
}

/// Starts keyward then ssh-agent, each loaded with `keys` and checked; with the add rate.
fn start_pair(keys: &[RsaKeypair]) -> [Result<(Agent, f64), String>; 2] {
    [Kind::Keyward, Kind::OpenSsh].map(|kind| {
        let agent = Agent::start(kind).map_err(|e| format!("{e:#}"))?;
        match load_and_check(&agent, keys) {
            Ok(rate) => Ok((agent, rate)),
            Err(e) => Err(format!("{e:#}; agent log: {}", agent.log().trim())),
        }
    })
}

trait AddRates {
    fn clone_rates(&self) -> [Val; 2];
}

impl AddRates for [Result<(Agent, f64), String>; 2] {
    fn clone_rates(&self) -> [Val; 2] {
        [0, 1].map(|i| {
            self[i]
                .as_ref()
                .map(|(_, rate)| *rate)
                .map_err(Clone::clone)
        })
    }
}

/// Adds `keys` over one connection (returns keys/s), then checks the listing and signatures.
fn load_and_check(agent: &Agent, keys: &[RsaKeypair]) -> Result<f64> {
    let frames = keys
        .iter()
        .enumerate()
        .map(|(i, k)| proto::add_identity(k, &format!("bench-{i}")))
        .collect::<Result<Vec<_>>>()?;
    let mut client = Client::connect(agent.socket())?;
    let start = Instant::now();
    for frame in &frames {
        client.call_expect(frame, SUCCESS).context("adding a key")?;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = keys.len() as f64 / start.elapsed().as_secs_f64();

    let listed = proto::identities(client.call(&REQUEST_IDENTITIES)?)?;
    let want: HashSet<KeyData> = keys.iter().map(public).collect();
    let got: HashSet<KeyData> = listed
        .iter()
        .map(|id| id.credential.key_data().clone())
        .collect();
    ensure!(
        listed.len() == keys.len() && got == want,
        "{} lists {} keys, not the {} added",
        agent.kind().name(),
        listed.len(),
        keys.len()
    );
    for key in [&keys[0], &keys[keys.len() - 1]] {
        for flags in [RSA_SHA2_256, RSA_SHA2_512] {
            let data = load::sign_data(99);
            let frame = proto::sign_request(&public(key), &data, flags)?;
            let reply = client.call_expect(&frame, SIGN_RESPONSE)?;
            proto::verify_sign_response(reply, &public(key), &data, flags)
                .with_context(|| format!("{} signature (flags {flags})", agent.kind().name()))?;
        }
    }
    Ok(rate)
}

/// Runs `f` on keyward, then on ssh-agent (never both at once).
fn each<T>(pair: &[Slot; 2], f: impl Fn(&Agent) -> Result<T>) -> [Result<T, String>; 2] {
    [0, 1].map(|i| {
        let agent = pair[i].as_ref().map_err(Clone::clone)?;
        f(agent).map_err(|e| format!("{e:#}"))
    })
}

/// Load runs alternate between the agents in [`ROUNDS`] short rounds, so a change in background
/// load hits both alike; each figure is the median over the rounds.
const ROUNDS: usize = 3;

fn rounds(
    pair: &[Slot; 2],
    cfg: &Config,
    f: impl Fn(&Agent, Duration) -> Result<load::Run>,
) -> [Result<load::Run, String>; 2] {
    let dur = cfg.secs / u32::try_from(ROUNDS).unwrap_or(1);
    let mut runs: [Result<Vec<load::Run>, String>; 2] = [Ok(Vec::new()), Ok(Vec::new())];
    for _ in 0..ROUNDS {
        let round = each(pair, |a| {
            let cpu = a.cpu_seconds()?;
            let mut run = f(a, dur)?;
            #[allow(clippy::cast_precision_loss)]
            let per_op = (a.cpu_seconds()? - cpu) * 1e6 / run.ops.max(1) as f64;
            run.cpu_us = per_op;
            Ok(run)
        });
        for (acc, r) in runs.iter_mut().zip(round) {
            if let Ok(v) = acc {
                match r {
                    Ok(run) => v.push(run),
                    Err(e) => *acc = Err(e),
                }
            }
        }
    }
    runs.map(|r| r.map(|v| load::Run::median(&v)))
}

fn cpu_per_op(runs: &[Result<load::Run, String>; 2]) -> [Val; 2] {
    [0, 1].map(|i| match &runs[i] {
        Ok(r) if r.cpu_us.is_finite() => Ok(r.cpu_us),
        Ok(_) => Err("CPU time not measured".to_owned()),
        Err(e) => Err(e.clone()),
    })
}

fn rates(runs: &[Result<load::Run, String>; 2]) -> [Val; 2] {
    [0, 1].map(|i| runs[i].as_ref().map(|r| r.rate).map_err(Clone::clone))
}

#[allow(clippy::cast_precision_loss)]
fn peak_rss(pair: &[Slot; 2]) -> [Val; 2] {
    each(pair, |a| Ok(a.peak_rss_kib()? as f64 / 1024.0))
}

fn tool_version(tool: &str, arg: &str) -> String {
    Command::new(tool).arg(arg).output().map_or_else(
        |e| e.to_string(),
        |o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        },
    )
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
