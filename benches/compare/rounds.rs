//! Running one measurement on both agents: alternating short rounds, medians, and the per-op
//! figures taken from them (rates, agent CPU per operation, peak RSS).

use std::time::Duration;

use anyhow::Result;

use crate::Config;
use crate::agents::Agent;
use crate::load;
use crate::report::Val;

/// An agent that started and passed its checks, or why not.
pub type Slot = Result<Agent, String>;

/// Runs `f` on keyward, then on ssh-agent (never both at once).
pub fn each<T>(pair: &[Slot; 2], f: impl Fn(&Agent) -> Result<T>) -> [Result<T, String>; 2] {
    [0, 1].map(|i| {
        let agent = pair[i].as_ref().map_err(Clone::clone)?;
        f(agent).map_err(|e| format!("{e:#}"))
    })
}

/// Load runs alternate between the agents in [`ROUNDS`] short rounds, so a change in background
/// load hits both alike; each figure is the median over the rounds.
pub const ROUNDS: usize = 3;

pub fn rounds(
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

pub fn cpu_per_op(runs: &[Result<load::Run, String>; 2]) -> [Val; 2] {
    [0, 1].map(|i| match &runs[i] {
        Ok(r) if r.cpu_us.is_finite() => Ok(r.cpu_us),
        Ok(_) => Err("CPU time not measured".to_owned()),
        Err(e) => Err(e.clone()),
    })
}

pub fn rates(runs: &[Result<load::Run, String>; 2]) -> [Val; 2] {
    [0, 1].map(|i| runs[i].as_ref().map(|r| r.rate).map_err(Clone::clone))
}

#[allow(clippy::cast_precision_loss)]
pub fn peak_rss(pair: &[Slot; 2]) -> [Val; 2] {
    each(pair, |a| Ok(a.peak_rss_kib()? as f64 / 1024.0))
}
