//! Load, kept short for CI: many idle connections plus concurrent signers (every signature made,
//! lists still answered), and a daemon held to 64 file descriptors by `prlimit` under more clients
//! than that (it stays up without spinning, and serves again once they leave). The figures (list
//! latency, CPU used while saturated, time to recover) are printed; only generous bounds that
//! express a requirement (no spinning, recovery within seconds) are asserted.
//!
//! Sizes (CI default, `scripts/soak`): `KEYWARD_LOAD_CONNECTIONS` idle connections (200, 1,000),
//! `KEYWARD_LOAD_SIGNERS` concurrent signers (16, 64), `KEYWARD_FD_CLIENTS` clients against
//! `--nofile=64` (100, 200).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::procstat::{cpu_ticks, env_size, open_fds, p99_and_max, raise_nofile, ticks_per_second};
use crate::util::{Agent, HANG_GUARD, KeyType, keygen, pid_alive, poll_until, require_tool, run};
use crate::wire::{Client, SSH2_AGENT_SIGN_RESPONSE};

const SIGNATURES_EACH: usize = 25;

/// CPU the daemon may use per wall-clock second while its descriptors are exhausted: a daemon
/// spinning on `accept` would use a whole core (1.0); an idle one uses almost nothing.
const SATURATED_CPU_BOUND: f64 = 0.5;

/// How soon the daemon must answer again once the clients that exhausted its descriptors leave.
/// The issue asks for a second; this guard is generous for a loaded machine, the real figure is
/// printed.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[test]
fn idle_connections_and_concurrent_signers() {
    let idle_count = env_size("KEYWARD_LOAD_CONNECTIONS", 200);
    let signer_count = env_size("KEYWARD_LOAD_SIGNERS", 16);
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

    let barrier = Arc::new(Barrier::new(signer_count + 1));
    let signers: Vec<_> = (0..signer_count)
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
        signer_count * SIGNATURES_EACH,
        "every signature under load succeeds"
    );
    // The idle connections are all still open and served.
    for client in idle.iter_mut().rev().step_by(50) {
        assert_eq!(client.identities().len(), 1);
    }
    let lists = latencies.len();
    let (p99, max) = p99_and_max(&mut latencies);
    eprintln!(
        "load: {idle_count} idle connections held, {signed} signatures by {signer_count} \
         signers, {lists} lists, list max {max:?}, list p99 {p99:?}"
    );
}

#[test]
fn descriptor_exhaustion_does_not_stop_the_daemon() {
    let client_count = env_size("KEYWARD_FD_CLIENTS", 100);
    raise_nofile(client_count as u64 + 256);
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
    let clients: Vec<Client> = (0..client_count)
        .map(|_| Client::connect(agent.socket()))
        .collect();
    // The daemon fills its descriptor table (the lower bound is a saturation check, not timing).
    let fds = || open_fds(pid);
    assert!(
        poll_until(HANG_GUARD, || fds() >= 60),
        "the daemon never filled its 64 descriptors ({} open)",
        fds()
    );
    let wall = Duration::from_secs(2);
    let before = cpu_ticks(pid);
    thread::sleep(wall);
    let used = cpu_ticks(pid) - before;
    let tick = ticks_per_second();
    #[allow(clippy::cast_precision_loss)]
    let cpu_per_wall = used as f64 / tick as f64 / wall.as_secs_f64();
    let open = fds();
    assert!(
        pid_alive(pid),
        "the daemon died with its descriptors exhausted"
    );

    drop(clients);
    let left = Instant::now();
    let mut last = None;
    let recovered = poll_until(HANG_GUARD, || {
        let mut client = Client::connect(agent.socket());
        let ids = client.identities();
        let ok = ids.len() == 1;
        last = Some(ids);
        ok
    });
    let recovery = left.elapsed();
    eprintln!(
        "fd exhaustion: {client_count} clients against --nofile=64, {open} descriptors open, \
         daemon used {used} ticks ({cpu_per_wall:.3} CPU-seconds per wall second) while \
         saturated, answered again {recovery:?} after the clients left"
    );
    assert!(
        recovered,
        "no working list after the clients left: {last:?}; log:\n{}",
        agent.log()
    );
    assert!(
        cpu_per_wall < SATURATED_CPU_BOUND,
        "the daemon spun with its descriptors exhausted: {cpu_per_wall:.3} CPU-seconds per \
         second"
    );
    assert!(
        recovery < RECOVERY_BOUND,
        "the daemon took {recovery:?} to answer again after the clients left"
    );
    // ssh-add agrees.
    let out = agent.ssh_add(&["-l"]);
    assert!(
        out.status.success() && out.stdout.lines().count() == 1,
        "ssh-add -l after recovery: {out:#?}"
    );
}
