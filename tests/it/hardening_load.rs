//! Load, kept short for CI: many idle connections plus concurrent signers (every signature made,
//! lists still answered), and a daemon held to 64 file descriptors by `prlimit` under 100
//! clients (it stays up, and serves again once they leave). The figures (list latency, CPU used
//! while saturated) are printed, never asserted against an upper bound.
//!
//! `KEYWARD_LOAD_CONNECTIONS` sets the idle connections (200 by default; `scripts/soak` uses
//! 1,000).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::util::{Agent, HANG_GUARD, KeyType, keygen, pid_alive, poll_until, require_tool, run};
use crate::wire::{Client, SSH2_AGENT_SIGN_RESPONSE};

const SIGNERS: usize = 16;
const SIGNATURES_EACH: usize = 25;

fn connections() -> usize {
    std::env::var("KEYWARD_LOAD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Raises this process's soft descriptor limit to its hard limit (the daemon inherits it).
fn raise_nofile(needed: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= needed,
        "RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs"
    );
}

#[test]
fn idle_connections_and_concurrent_signers() {
    let idle_count = connections();
    raise_nofile(2 * idle_count as u64 + 256);
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &[]);
    let blob = key.blob();

    let mut idle: Vec<Client> = (0..idle_count)
        .map(|_| Client::connect(agent.socket()))
        .collect();
    // Every idle connection is really accepted: it answers.
    for client in idle.iter_mut().step_by(50) {
        assert_eq!(client.identities().len(), 1);
    }

    let barrier = Arc::new(Barrier::new(SIGNERS + 1));
    let signers: Vec<_> = (0..SIGNERS)
        .map(|i| {
            let (socket, blob, barrier) = (
                agent.socket().to_owned(),
                blob.clone(),
                Arc::clone(&barrier),
            );
            thread::spawn(move || {
                let mut client = Client::connect(&socket);
                barrier.wait();
                (0..SIGNATURES_EACH)
                    .filter(|n| {
                        let data = format!("signer {i} request {n}");
                        client.sign(&blob, data.as_bytes(), 0)[0] == SSH2_AGENT_SIGN_RESPONSE
                    })
                    .count()
            })
        })
        .collect();
    barrier.wait();
    let mut lister = Client::connect(agent.socket());
    let mut latencies = Vec::new();
    while signers.iter().any(|s| !s.is_finished()) {
        let started = Instant::now();
        assert_eq!(lister.identities().len(), 1, "a list answered under load");
        latencies.push(started.elapsed());
    }
    let signed: usize = signers
        .into_iter()
        .map(|s| s.join().expect("signer thread"))
        .sum();
    assert_eq!(
        signed,
        SIGNERS * SIGNATURES_EACH,
        "every signature under load succeeds"
    );
    // The idle connections are all still open and served.
    for client in idle.iter_mut().rev().step_by(50) {
        assert_eq!(client.identities().len(), 1);
    }
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "load: {idle_count} idle connections held, {signed} signatures by {SIGNERS} signers, \
         {} lists, list p99 {p99:?}",
        latencies.len()
    );
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn descriptor_exhaustion_does_not_stop_the_daemon() {
    const CLIENTS: usize = 100;
    raise_nofile(CLIENTS as u64 + 256);
    let prlimit = require_tool("prlimit");
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &[]);
    let pid = agent.pid();
    run(std::process::Command::new(&prlimit)
        .arg(format!("--pid={pid}"))
        .arg("--nofile=64:64"))
    .assert_success("prlimit --nofile=64:64");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")),
        "prlimit applied: {limits}"
    );

    // More clients than the daemon has descriptors: the kernel queues the rest in the backlog.
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(agent.socket()))
        .collect();
    // The daemon fills its descriptor table (the lower bound is a saturation check, not timing).
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    assert!(
        poll_until(HANG_GUARD, || fds() >= 60),
        "the daemon never filled its 64 descriptors ({} open)",
        fds()
    );
    let wall = Duration::from_secs(2);
    let before = cpu_ticks(pid);
    thread::sleep(wall);
    let used = cpu_ticks(pid) - before;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .expect("sysconf")
        .expect("CLK_TCK set");
    let tick = u64::try_from(tick).expect("positive tick");
    #[allow(clippy::cast_precision_loss)]
    let cpu_per_wall = used as f64 / tick as f64 / wall.as_secs_f64();
    eprintln!(
        "fd exhaustion: {CLIENTS} clients against --nofile=64, {} descriptors open, daemon \
         used {used} ticks ({cpu_per_wall:.3} CPU-seconds per wall second) while saturated",
        fds()
    );
    assert!(
        pid_alive(pid),
        "the daemon died with its descriptors exhausted"
    );

    drop(clients);
    let mut last = None;
    let recovered = poll_until(HANG_GUARD, || {
        let out = agent.ssh_add(&["-l"]);
        let ok = out.status.success() && out.stdout.lines().count() == 1;
        last = Some(out);
        ok
    });
    assert!(
        recovered,
        "no working ssh-add -l after the clients left: {last:#?}; log:\n{}",
        agent.log()
    );
}
