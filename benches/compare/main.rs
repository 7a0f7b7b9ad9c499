//! `cargo bench --bench compare`: keyward against OpenSSH's `ssh-agent`, `ssh-keygen` and
//! `openssl req -x509`, side by side.
//!
//! Phases (`KEYWARD_BENCH_PHASES`, comma-separated, default all):
//!
//! * `agents`: both agents are started from scratch, each in its own temporary directory, loaded
//!   with the same RSA-2048 keys over the agent protocol (`SSH_AGENTC_ADD_IDENTITY`), checked (the
//!   listed keys match, signatures verify for rsa-sha2-256 and rsa-sha2-512) and then measured
//!   one at a time (alternating in short rounds, median kept), so they never compete for the CPU:
//!   with 1 key, signatures/s and p50/p99 latency at 1, 8 and 64 concurrent clients (one
//!   connection each), request-identities/s, connect-list-close churn/s, peak RSS (`VmHWM`); with
//!   1,000 keys (fresh agents), time to add them, request-identities/s, signing with the last key
//!   added, peak RSS; and `openssl speed -seconds 3 rsa2048` sign/s (one process, the issue's
//!   reference: keyward at 8 clients should reach 80% of it) and, for information, `openssl speed
//!   -multi <cores>` (every core signing with nothing else running) ([`rounds`], [`load`]);
//! * `store`: keyward-agent started on a store of 10,000 Ed25519 keys and 10,000 certificates,
//!   time to its first answer and to the full list ([`store`]);
//! * `keygen`: `keyward key generate -t rsa -b 2048` against `ssh-keygen` ([`cli`]);
//! * `cert`: `keyward cert create` against `openssl req -x509` ([`cli`]).
//!
//! It prints a table (ratios are keyward/reference; the `better` column says which direction
//! wins; a target is a ratio or an absolute limit) and writes JSON to `$KEYWARD_BENCH_OUT` or
//! `<target>/bench/compare.json`.
//!
//! Environment: `KEYWARD_BENCH_SECS` (seconds per load measurement, default 3; the whole run then
//! takes about two minutes), `KEYWARD_BENCH_KEYS` (default 1000), `KEYWARD_BENCH_OPENSSL_MULTI`
//! (default: the number of cores), `KEYWARD_BENCH_STORE_KEYS` (default 10000),
//! `KEYWARD_BENCH_STARTS` (agent starts per start-up figure, default 5), `KEYWARD_BENCH_RUNS`
//! (command runs per CLI figure, default 15), `KEYWARD_BENCH_STRICT=1` (exit non-zero when a
//! target is missed), `KEYWARD_AGENT_BIN` / `SSH_AGENT_BIN` (other agent binaries). The generated
//! RSA keys are cached in `<target>/bench/rsa2048-keys.openssh` and the start-up store in
//! `<target>/bench/store-ed25519-10000/`; the first run spends about half a minute making them.

mod agents;
mod cli;
mod config;
mod keys;
mod load;
mod openssl;
mod proto;
mod report;
mod rounds;
mod store;
mod timing;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use ssh_key::private::RsaKeypair;
use ssh_key::public::{KeyData, RsaPublicKey};

use agents::{Agent, Kind};
use config::{Config, loadavg, tool_version};
use proto::{Client, REQUEST_IDENTITIES, RSA_SHA2_256, RSA_SHA2_512, SIGN_RESPONSE, SUCCESS};
use report::{Better, Row, Val};
use rounds::{cpu_per_op, peak_rss, rates, rounds};

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
    let mut params = json!({
        "seconds_per_measurement": cfg.secs.as_secs_f64(),
        "keys": cfg.keys,
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "ssh_agent_version": tool_version("ssh", "-V"),
        "openssl_version": tool_version("openssl", "version"),
        "loadavg_before": load_before,
    });
    if cfg.runs_phase("agents") {
        params["agents"] = agent_phases(&cfg, &keys, &mut rows);
    }
    if cfg.runs_phase("store") {
        eprintln!(
            "phase 3: start-up with {} keys in the store",
            cfg.store_keys
        );
        params["store"] = store::run(&cfg, &keys[0], &mut rows)?;
    }
    if cfg.runs_phase("keygen") {
        eprintln!("phase 4: RSA-2048 key generation");
        params["keygen"] = cli::keygen(&cfg, &mut rows)?;
    }
    if cfg.runs_phase("cert") {
        eprintln!("phase 5: certificate creation");
        params["cert"] = cli::cert(&cfg, &keys[0], &mut rows)?;
    }

    let table = report::table(&rows);
    println!("\n{table}");
    params["wall_seconds"] = json!(started.elapsed().as_secs_f64());
    params["loadavg_after"] = json!(loadavg());
    report::write_json(&cfg.out, &rows, &params)?;
    println!(
        "load average before {load_before:?}, after {:?}\nJSON: {}  ({:.0} s)",
        loadavg(),
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

/// Phases 1 and 2 (the agents loaded over the protocol) and the `openssl speed` references;
/// returns their JSON parameters.
fn agent_phases(cfg: &Config, keys: &[RsaKeypair], rows: &mut Vec<Row>) -> serde_json::Value {
    // Each reference is measured before and after the agents and the better run kept: other
    // work on the machine can only lower it.
    let speed = |multi: usize| {
        let command = openssl_command(multi);
        eprintln!("{command}");
        openssl::speed_rsa2048(3, multi).map_err(|e| format!("{e:#}"))
    };
    let before = [speed(1), speed(cfg.openssl_multi)];
    eprintln!("phase 1: one key");
    let at_eight = one_key(cfg, &keys[0], rows);
    eprintln!("phase 2: {} keys", cfg.keys);
    many_keys(cfg, keys, rows);
    let after = [speed(1), speed(cfg.openssl_multi)];
    let best = |i: usize| match (&before[i], &after[i]) {
        (Ok(a), Ok(b)) => Ok(a.max(*b)),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(*x),
        (Err(e), Err(_)) => Err(e.clone()),
    };
    // The target: 80% of `openssl speed rsa2048` (one process, ~2,800 sign/s here).
    rows.push(
        Row::new(
            "sign/s, 8 clients vs openssl speed",
            "sign/s",
            Better::Higher,
            [at_eight.clone(), best(0)],
        )
        .reference("openssl")
        .target(0.8),
    );
    // For information: against every core signing with nothing else to do (the clients and the
    // kernel share the same cores with keyward).
    rows.push(
        Row::new(
            format!(
                "sign/s, 8 clients vs openssl speed -multi {}",
                cfg.openssl_multi
            ),
            "sign/s",
            Better::Higher,
            [at_eight, best(1)],
        )
        .reference("openssl"),
    );
    json!({
        "openssl_commands": [openssl_command(1), openssl_command(cfg.openssl_multi)],
        "openssl_sign_per_s_runs": {
            "single": [before[0].as_ref().ok(), after[0].as_ref().ok()],
            "multi": [before[1].as_ref().ok(), after[1].as_ref().ok()],
        },
        "loadavg_after": loadavg(),
    })
}

fn openssl_command(multi: usize) -> String {
    if multi > 1 {
        format!("openssl speed -seconds 3 -multi {multi} rsa2048")
    } else {
        "openssl speed -seconds 3 rsa2048".to_owned()
    }
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

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
