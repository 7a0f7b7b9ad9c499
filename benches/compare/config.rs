//! The run's settings from the environment, where the target directory is, and facts about the
//! machine recorded with the results (tool versions, load average).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};

/// What to run and where, from `KEYWARD_BENCH_*`.
pub struct Config {
    /// Seconds per load measurement.
    pub secs: Duration,
    /// Keys loaded over the agent protocol in phase 2.
    pub keys: usize,
    /// Processes for `openssl speed -multi`.
    pub openssl_multi: usize,
    /// Exit non-zero when a target is missed.
    pub strict: bool,
    /// Where the JSON goes.
    pub out: PathBuf,
    /// The RSA-2048 key cache.
    pub cache: PathBuf,
    /// `<target>/bench`: caches and scratch space.
    pub bench_dir: PathBuf,
    /// Keys (and as many certificates) in the start-up store.
    pub store_keys: usize,
    /// Agent starts measured per figure (median kept).
    pub starts: usize,
    /// Command runs per figure for key generation and certificate creation (median kept).
    pub runs: usize,
    /// Which phases run: `agents`, `store`, `keygen`, `cert` (all by default).
    phases: Vec<String>,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self> {
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
            bench_dir,
            store_keys: var("KEYWARD_BENCH_STORE_KEYS").map_or(Ok(10_000), |v| v.parse())?,
            starts: var("KEYWARD_BENCH_STARTS").map_or(Ok(5), |v| v.parse())?,
            runs: var("KEYWARD_BENCH_RUNS").map_or(Ok(15), |v| v.parse())?,
            phases: var("KEYWARD_BENCH_PHASES").map_or_else(
                || PHASES.map(str::to_owned).to_vec(),
                |v| v.split(',').map(|p| p.trim().to_owned()).collect(),
            ),
        })
        .and_then(Self::checked)
    }

    fn checked(self) -> Result<Self> {
        ensure!(
            self.store_keys >= 1,
            "KEYWARD_BENCH_STORE_KEYS must be at least 1"
        );
        ensure!(
            self.starts >= 1 && self.runs >= 1,
            "KEYWARD_BENCH_STARTS and _RUNS must be at least 1"
        );
        for p in &self.phases {
            ensure!(
                PHASES.contains(&p.as_str()),
                "unknown phase {p:?} in KEYWARD_BENCH_PHASES (choose from {PHASES:?})"
            );
        }
        Ok(self)
    }

    /// Whether `phase` is to run.
    pub fn runs_phase(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// Every phase, in the order they run.
pub const PHASES: [&str; 4] = ["agents", "store", "keygen", "cert"];

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

/// What a tool prints about its version.
pub fn tool_version(tool: &str, arg: &str) -> String {
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
pub fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}
