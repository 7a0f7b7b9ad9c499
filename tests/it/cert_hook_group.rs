//! A renewal hook runs in its own process group: a hook that leaves `sleep 1000` in the
//! background returns `keyward cert renew` at once (it used to hold it for the 60-second hook
//! timeout, through the job's copy of the output pipe) and the job does not outlive the hook; a
//! hook that itself runs past the timeout returns `cert renew` within the timeout and a few
//! seconds, renewed, with nothing of the hook's group left running.

use std::fs;
use std::time::{Duration, Instant};

use crate::env::{Env, text};
use crate::util::poll_until;

/// The hook's timeout (`rotation::HOOK_TIMEOUT`).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Live (not zombie) processes in process group `group`.
fn group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state (field 3), ppid (4), pgrp (5).
        if fields.len() > 2
            && fields[0] != "Z"
            && fields[0] != "X"
            && fields[2] == group.to_string()
        {
            members.push(pid);
        }
    }
    members
}

/// Sets `hook` on a fresh certificate, runs `cert renew` and returns how long it took and the
/// hook's process group (the `sh` pid, which the hook writes to `group`).
fn renew_with_hook(env: &Env, hook_body: &str) -> (Duration, u32) {
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let id = text(&env.create("k", 60, &[]), "id");
    let group = env.path("group");
    let hook = format!("echo $$ > '{group}'; {hook_body}");
    env.kw_ok(&["cert", "policy", &id, "--hook", &hook]);
    let started = Instant::now();
    let renewed = env.kw_json(&["cert", "renew", &id, "--json"]);
    let took = started.elapsed();
    assert!(renewed["id"].is_string(), "{renewed}");
    assert_eq!(env.all_certs().len(), 2, "renewed");
    let pgid = fs::read_to_string(&group)
        .expect("the hook ran")
        .trim()
        .parse()
        .expect("pgid");
    (took, pgid)
}

#[track_caller]
fn assert_group_gone(pgid: u32) {
    assert!(
        poll_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
        "processes of the hook's group {pgid} survived: {:?}",
        group_members(pgid)
    );
}

#[test]
fn hook_background_job_neither_holds_renew_nor_survives() {
    let env = Env::no_passphrase();
    let (took, pgid) = renew_with_hook(&env, "sleep 1000 & echo hook-ran; exit 0");
    eprintln!("cert renew with a backgrounding hook took {took:?}");
    // Far below the hook timeout (60 s): a bound against a hang, not a speed check.
    assert!(took < Duration::from_secs(30), "cert renew waited {took:?}");
    assert_group_gone(pgid);
}

#[test]
fn hook_past_the_timeout_is_killed_with_its_group() {
    let env = Env::no_passphrase();
    let (took, pgid) = renew_with_hook(&env, "sleep 1000 & sleep 1000");
    eprintln!("cert renew with a hook past the timeout took {took:?}");
    assert!(
        took >= HOOK_TIMEOUT,
        "the hook was given its time: {took:?}"
    );
    assert!(
        took < HOOK_TIMEOUT + Duration::from_secs(30),
        "cert renew waited {took:?}"
    );
    assert_group_gone(pgid);
}
