//! The ceiling reference: `openssl speed -seconds S -multi N rsa2048`, RSA-2048 sign/s summed
//! over N processes, i.e. what this machine's cores can sign with no agent around them.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `openssl speed` and returns its RSA-2048 sign/s.
pub fn speed_rsa2048(seconds: u32, multi: usize) -> Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string()])
        .args(["-multi", &multi.to_string(), "rsa2048"])
        .output()
        .context("running openssl speed")?;
    if !out.status.success() {
        bail!(
            "openssl speed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Finds `rsa 2048 bits 0.000267s 0.000018s   3745.0  56505.0` and takes the sign/s column.
fn parse(stdout: &str) -> Result<f64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("rsa") && l.contains("2048 bits"))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(fields.len().checked_sub(2)?)?.parse().ok()
        })
        .context("no rsa 2048 line in openssl speed output")
}
