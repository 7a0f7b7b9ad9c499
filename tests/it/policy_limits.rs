//! Counting and timing rules through the real agent: `--rate`, `--max-signatures`, `--hours`
//! (windows computed from the current UTC time, with a margin of an hour on each side) and
//! legacy `ssh-rsa` (SHA-1) signatures, refused unless `--allow-sha1`, asked for with a raw
//! sign request (flags 0) as older clients send it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::env::Env;
use crate::policy_hosts::{assert_refuses, assert_signs, last_sign, stored_key};
use crate::wire::{
    Client, SSH_AGENT_FAILURE, SSH_AGENT_RSA_SHA2_256, SSH2_AGENT_SIGN_RESPONSE,
    parse_sign_response,
};

#[track_caller]
fn assert_refused_by(env: &Env, key: &str, rule: &str) {
    let record = last_sign(env, key);
    assert_eq!(record["outcome"], "refused", "{record}");
    let reason = record["detail"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with(rule), "expected rule {rule}: {record}");
}

#[test]
fn policy_rate_and_max_signatures() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let rate = stored_key(&env, "rate", "ed25519");
    let max = stored_key(&env, "max", "ed25519");
    env.kw_ok(&["policy", "set", "rate", "--rate", "2/1h"]);
    env.kw_ok(&["policy", "set", "max", "--max-signatures", "1"]);

    assert_signs(&agent, &rate, "file");
    assert_signs(&agent, &rate, "file");
    assert_refuses(&agent, &rate, "file");
    assert_refused_by(&env, "rate", "rate:");

    assert_signs(&agent, &max, "file");
    assert_refuses(&agent, &max, "file");
    assert_refused_by(&env, "max", "max_signatures:");
    // The limits are per key: the rate-limited key does not use up the other's count.
    assert_refuses(&agent, &rate, "file");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn hhmm(minute: u64) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// `FROM-TO` covering `[minute + from, minute + to)` of a day, in minutes.
fn range(minute: u64, from: u64, to: u64) -> String {
    format!(
        "{}-{}",
        hhmm((minute + from) % 1440),
        hhmm((minute + to) % 1440)
    )
}

#[test]
fn policy_hours_window() {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "hours", "ed25519");
    // Stay clear of midnight UTC so "today" cannot change under the day-of-week checks.
    while (86_400 - unix_now() % 86_400) < 120 {
        std::thread::sleep(Duration::from_secs(5));
    }
    let now = unix_now();
    let minute = now % 86_400 / 60;
    let today = usize::try_from((now / 86_400 + 3) % 7).expect("weekday");

    let set_hours = |hours: &str| env.kw_ok(&["policy", "set", "hours", "--hours", hours]);

    // From an hour ago to an hour from now (it may span midnight): allowed.
    set_hours(&range(minute, 1380, 60));
    assert_signs(&agent, &key, "file");
    // Two to three hours from now: refused.
    set_hours(&range(minute, 120, 180));
    assert_refuses(&agent, &key, "file");
    assert_refused_by(&env, "hours", "hours:");
    // The same instant in UTC+05:30, written in local time: allowed.
    let local = (minute + 330) % 1440;
    let window = format!("{} +05:30", range(local, 1380, 60));
    set_hours(&window);
    assert_signs(&agent, &key, "file");
    // The UTC window read as UTC-05:00 is five hours later: refused.
    let window = format!("{} -05:00", range(minute, 1380, 60));
    set_hours(&window);
    assert_refuses(&agent, &key, "file");
    // Days: all day today allowed, all day tomorrow only refused.
    let day = |d: usize| format!("{} 00:00-24:00", DAYS[d % 7]);
    set_hours(&day(today));
    assert_signs(&agent, &key, "file");
    set_hours(&day(today + 1));
    assert_refuses(&agent, &key, "file");
    assert_refused_by(&env, "hours", "hours:");
}

#[test]
fn policy_sha1_refused_unless_allowed() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "rsa", "rsa");
    let blob = key.blob();
    let mut client = Client::connect(agent.socket());

    // Default policy: SHA-2 signs, legacy ssh-rsa (flags 0) is refused.
    let reply = client.sign(&blob, b"sha1 policy test", SSH_AGENT_RSA_SHA2_256);
    assert_eq!(parse_sign_response(&reply).0, "rsa-sha2-256");
    let reply = client.sign(&blob, b"sha1 policy test", 0);
    assert_eq!(reply, [SSH_AGENT_FAILURE], "ssh-rsa without --allow-sha1");
    assert_refused_by(&env, "rsa", "allow_sha1");

    env.kw_ok(&["policy", "set", "rsa", "--allow-sha1"]);
    let reply = client.sign(&blob, b"sha1 policy test", 0);
    assert_eq!(
        reply[0], SSH2_AGENT_SIGN_RESPONSE,
        "ssh-rsa with --allow-sha1"
    );
    let (algorithm, signature) = parse_sign_response(&reply);
    assert_eq!(algorithm, "ssh-rsa");
    assert_eq!(signature.len(), 256, "an RSA-2048 signature");
    let record = last_sign(&env, "rsa");
    assert_eq!(record["outcome"], "allowed", "{record}");
    assert_eq!(record["detail"]["algorithm"], "ssh-rsa", "{record}");
    // Other rules still apply to SHA-1 signatures.
    env.kw_ok(&[
        "policy",
        "set",
        "rsa",
        "--allow-sha1",
        "--max-signatures",
        "0",
    ]);
    let reply = client.sign(&blob, b"sha1 policy test", 0);
    assert_eq!(reply, [SSH_AGENT_FAILURE]);
}

/// `--max-signatures 1` must hold when requests arrive together: the count must be checked and
/// taken in one step. `--confirm` with an askpass that approves after a second makes the window
/// between the check and the count wide enough to hit every time (without it, 32 simultaneous
/// requests also got several signatures, but not on every run).
#[test]
fn policy_max_signatures_concurrent_requests() {
    let env = Env::no_passphrase();
    let askpass = crate::util::write_script(env.root(), "askpass-slow", "sleep 1\nexit 0");
    let agent = env.start_agent(&["--askpass", askpass.to_str().expect("utf-8 path")]);
    let key = stored_key(&env, "once", "ed25519");
    env.kw_ok(&["policy", "set", "once", "--confirm"]);
    assert_signs(&agent, &key, "file");
    // The signature above counts: a policy change keeps the key's usage, so a limit of 2 leaves
    // exactly one more.
    env.kw_ok(&[
        "policy",
        "set",
        "once",
        "--confirm",
        "--max-signatures",
        "2",
    ]);
    let blob = key.blob();
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(agent.socket())).collect();
    let request = crate::wire::Msg::new(crate::wire::SSH2_AGENTC_SIGN_REQUEST)
        .string(&blob)
        .string(b"concurrent")
        .u32(0);
    for client in &mut clients {
        client.send(&request);
    }
    let mut signed = 0;
    for client in &mut clients {
        let reply = client.read_frame().expect("read reply").expect("a reply");
        if reply[0] == SSH2_AGENT_SIGN_RESPONSE {
            signed += 1;
        }
    }
    assert_eq!(
        signed, 1,
        "{signed} signatures made by 4 simultaneous requests with one signature left"
    );
}
