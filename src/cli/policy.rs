//! `keyward policy ...` and `keyward audit ...`: building a policy from command-line flags
//! (host names resolved through `known_hosts`), the dry run, and reading the audit trail.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::clock::parse_duration;
use crate::control::proto::AuditView;
use crate::policy::{Policy, Purpose, RateLimit, TimeWindow};

/// Where `keyward audit --since` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From this sequence number.
    Seq(u64),
    /// Records of the last this long.
    Ago(std::time::Duration),
}

/// A sequence number (`1200`), or a duration back from now (`1h`, `2d`).
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(seq) = text.parse() {
        return Ok(Since::Seq(seq));
    }
    parse_duration(text).map(Since::Ago).map_err(|_| {
        format!("invalid --since {text:?} (a sequence number, or a duration such as 1h or 2d)")
    })
}

/// `N/DURATION`, e.g. `10/60s` or `100/1h`.
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let (count, period) = text
        .split_once('/')
        .ok_or_else(|| format!("invalid rate {text:?} (use COUNT/PERIOD, e.g. 10/1m)"))?;
    let count = count
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate count in {text:?}"))?;
    Ok(RateLimit {
        count,
        per_secs: parse_duration(period.trim())?.as_secs(),
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(name: &str) -> Result<u8, String> {
    let lower = name.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| lower.starts_with(d))
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| format!("unknown day {name:?} (use mon..sun)"))
}

fn minute(hhmm: &str) -> Result<u16, String> {
    let (h, m) = hhmm
        .split_once(':')
        .ok_or_else(|| format!("invalid time {hhmm:?} (use HH:MM)"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| format!("invalid hour in {hhmm:?}"))?,
        m.parse()
            .map_err(|_| format!("invalid minute in {hhmm:?}"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("invalid time {hhmm:?}"));
    }
    Ok(h * 60 + m)
}

/// `[DAYS] HH:MM-HH:MM [±HH:MM]`, e.g. `mon-fri 08:00-20:00 +01:00` or `sat,sun 10:00-12:00`.
pub fn parse_hours(text: &str) -> Result<TimeWindow, String> {
    let mut days = Vec::new();
    let mut range = None;
    let mut offset = 0i32;
    for part in text.split_whitespace() {
        if let Some(sign) = part.chars().next().filter(|c| *c == '+' || *c == '-') {
            let m = i32::from(minute(&part[1..])?);
            offset = if sign == '-' { -m } else { m };
        } else if part.contains(':') {
            let (from, to) = part
                .split_once('-')
                .ok_or_else(|| format!("invalid time range {part:?} (use HH:MM-HH:MM)"))?;
            range = Some((minute(from)?, minute(to)?));
        } else {
            for item in part.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        let mut d = a;
                        loop {
                            days.push(d);
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days.push(day(item)?),
                }
            }
        }
    }
    let (from_minute, to_minute) =
        range.ok_or_else(|| format!("no time range in {text:?} (e.g. mon-fri 08:00-20:00)"))?;
    Ok(TimeWindow {
        days,
        from_minute,
        to_minute,
        utc_offset_minutes: offset,
    })
}

/// A purpose flag: `login`, `x509` (issuing certificates), or an SSHSIG namespace (`git`,
/// `file`, `*`).
pub fn parse_purpose(text: &str) -> Purpose {
    match text {
        "login" => Purpose::Login,
        "x509" => Purpose::X509,
        other => Purpose::Sshsig(other.strip_prefix("sshsig:").unwrap_or(other).to_owned()),
    }
}

/// Host-key fingerprints for `host`: a `SHA256:` fingerprint as is, else every key
/// `ssh-keygen -F host` finds in `known_hosts` (hashed entries too).
pub fn resolve_host(host: &str, known_hosts: &Path) -> anyhow::Result<Vec<String>> {
    if host.starts_with("SHA256:") {
        return Ok(vec![host.to_owned()]);
    }
    let out = Command::new("ssh-keygen")
        .args(["-F", host, "-f"])
        .arg(known_hosts)
        .output()
        .context("cannot run ssh-keygen to look the host up in known_hosts")?;
    let mut fingerprints = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // "host keytype base64 [comment]": parse from the key type on.
        let key_part = line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
        if let Ok(key) = ssh_key::PublicKey::from_openssh(&key_part) {
            fingerprints.push(key.fingerprint(ssh_key::HashAlg::Sha256).to_string());
        }
    }
    if fingerprints.is_empty() {
        bail!(
            "{host} is not in {}: connect to it once with ssh, or give its host-key fingerprint (SHA256:...)",
            known_hosts.display()
        );
    }
    Ok(fingerprints)
}

/// `keyward policy show` as text.
pub fn format_policy(key: &str, p: &Policy) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "any".to_owned()
        } else {
            v.join(", ")
        }
    };
    let purposes: Vec<String> = p
        .purposes
        .iter()
        .map(|p| match p {
            Purpose::Login => "login".to_owned(),
            Purpose::Sshsig(ns) => format!("sshsig:{ns}"),
            Purpose::X509 => "x509".to_owned(),
        })
        .collect();
    let hours = p.hours.as_ref().map_or_else(
        || "any time".to_owned(),
        |w| {
            let days: Vec<&str> = w.days.iter().map(|&d| DAYS[usize::from(d) % 7]).collect();
            format!(
                "{} {:02}:{:02}-{:02}:{:02} (UTC{:+03}:{:02})",
                if days.is_empty() {
                    "every day".to_owned()
                } else {
                    days.join(",")
                },
                w.from_minute / 60,
                w.from_minute % 60,
                w.to_minute / 60,
                w.to_minute % 60,
                w.utc_offset_minutes / 60,
                (w.utc_offset_minutes % 60).abs()
            )
        },
    );
    format!(
        "key:            {key}\nconfirm:        {}\nlifetime:       {}\nmax signatures: {}\nrate:           {}\nsha1 (ssh-rsa): {}\ndestinations:   {}\nforwarding:     {}\nuids:           {}\nexecutables:    {}\npurposes:       {}\nhours:          {hours}\n",
        if p.confirm { "ask each time" } else { "no" },
        p.lifetime_secs.map_or_else(
            || "unlimited".to_owned(),
            |s| format!("{s} s after loading")
        ),
        p.max_signatures
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        p.rate.map_or_else(
            || "unlimited".to_owned(),
            |r| format!("{} per {} s", r.count, r.per_secs)
        ),
        if p.allow_sha1 { "allowed" } else { "refused" },
        list(&p.destinations),
        if p.deny_forwarding {
            "refused"
        } else {
            "allowed"
        },
        if p.uids.is_empty() {
            "the agent's own".to_owned()
        } else {
            p.uids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
        list(&p.executables),
        list(&purposes),
    )
}

/// One audit record per line.
pub fn format_audit(records: &[AuditView]) -> String {
    let mut out = String::new();
    for r in records {
        let d = &r.detail;
        let field = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        // Control requests record their caller apart, and why one failed as `error`.
        let caller = |k: &str| {
            d.get("caller")
                .and_then(|c| c.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        out.push_str(&format!(
            "{:>6}  {}  {:8}  {:10}  {:16}  {}{}{}\n",
            r.seq,
            r.time,
            r.outcome,
            r.action,
            r.key.as_deref().unwrap_or("-"),
            field("purpose").map_or_else(String::new, |p| format!("{p} ")),
            field("exe")
                .or_else(|| caller("exe"))
                .map_or_else(String::new, |e| format!("by {e} ")),
            field("reason")
                .or_else(|| field("error"))
                .filter(|r| r != "allowed")
                .map_or_else(String::new, |r| format!("({r})")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_hours_and_purposes() {
        assert_eq!(
            parse_rate("10/1m"),
            Ok(RateLimit {
                count: 10,
                per_secs: 60
            })
        );
        assert!(parse_rate("10").is_err());
        let w = parse_hours("mon-fri 08:00-20:00 +01:00").unwrap();
        assert_eq!(
            (w.days, w.from_minute, w.to_minute, w.utc_offset_minutes),
            (vec![0, 1, 2, 3, 4], 480, 1200, 60)
        );
        let w = parse_hours("fri-mon 22:00-06:00").unwrap();
        assert_eq!(w.days, vec![4, 5, 6, 0]);
        assert!(parse_hours("mon-fri").is_err());
        assert!(parse_hours("xyz 08:00-09:00").is_err());
        assert_eq!(parse_purpose("git"), Purpose::Sshsig("git".into()));
        assert_eq!(parse_purpose("login"), Purpose::Login);
        assert_eq!(parse_purpose("x509"), Purpose::X509);
        assert_eq!(parse_since("12"), Ok(Since::Seq(12)));
        assert_eq!(
            parse_since("1h"),
            Ok(Since::Ago(std::time::Duration::from_secs(3600)))
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn resolves_hosts_through_known_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1xTmUFMV8pQm3KHVxkHg0KTSVtYDhWSx43ak3Q4A6w";
        std::fs::write(&kh, format!("example.org {key}\n")).unwrap();
        let fp = ssh_key::PublicKey::from_openssh(key)
            .unwrap()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        assert_eq!(resolve_host("example.org", &kh).unwrap(), vec![fp]);
        assert!(resolve_host("other.org", &kh).is_err());
        assert_eq!(
            resolve_host("SHA256:abc", &kh).unwrap(),
            vec!["SHA256:abc".to_owned()]
        );
    }
}
