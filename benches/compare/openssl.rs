//! The raw-crypto references: `openssl speed -seconds S rsa2048` (one process: the figure the
//! benchmark issue quotes, about 2,800 sign/s here) and `openssl speed -seconds S -multi N
//! rsa2048` (sign/s summed over N processes: what all of this machine's cores can sign with no
//! agent, no client and no kernel around them).

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `openssl speed` (with `-multi N` when `multi` is above 1) and returns its RSA-2048 sign/s.
pub fn speed_rsa2048(seconds: u32, multi: usize) -> Result<f64> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", &seconds.to_string()]);
    if multi > 1 {
        cmd.args(["-multi", &multi.to_string()]);
    }
    let out = cmd
        .arg("rsa2048")
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
