//! Crash safety of the store: the daemon is killed with SIGKILL at a random moment during a stream
//! of `keyward key generate` writes, then restarted, many times. Every acknowledged key (the
//! command exited 0) must survive, every stored record must read back whole, the store must
//! always open, and no store file may be readable by group or others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

use crate::env::{Env, STORE_PASS};
use crate::util::run;

/// Kill/restart cycles.
const CYCLES: u32 = 20;

/// Runs `keyward key generate -t ed25519 -n kN` one after another, numbering from `first`,
/// until `stop` is set; returns `(name, acknowledged)` for every command run.
///
/// A command that finds no daemon opens the store itself; `wrong_pass` (a wrong store
/// passphrase in `KEYWARD_PASSPHRASE_FILE`) makes sure that such a command never writes (and
/// never prompts on a terminal), so every acknowledged key went through a daemon.
fn writer(env: &Env, wrong_pass: &str, first: u32, stop: &AtomicBool) -> Vec<(String, bool)> {
    let mut results = Vec::new();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("k{n}");
        let out = run(env
            .kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", wrong_pass)
            .args([
                "key", "generate", "-t", "ed25519", "--json", "-n", &name, "-C", &name,
            ]));
        if out.status.success() {
            let view: serde_json::Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("generate --json printed no JSON ({e}): {out:#?}"));
            assert_eq!(
                view["name"],
                name.as_str(),
                "acknowledged another key: {out:#?}"
            );
            assert_eq!(view["loaded"], true, "acknowledged offline: {out:#?}");
        }
        results.push((name, out.status.success()));
        n += 1;
    }
    results
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_key() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let wrong = env.pass_file("not the store passphrase");
    let started = Instant::now();
    let mut attempts: Vec<(String, bool)> = Vec::new();
    let mut next = 0u32;
    for cycle in 0..CYCLES {
        let mut agent = env.start_agent(&["--passphrase-file", &pass]);
        let stop = AtomicBool::new(false);
        let (status, done) = thread::scope(|scope| {
            let handle = scope.spawn(|| writer(&env, &wrong, next, &stop));
            // Kill somewhere in the stream: after 20..=300 ms of writes.
            thread::sleep(Duration::from_millis(
                20 + u64::from(OsRng.next_u32() % 281),
            ));
            let status = agent.signal_and_wait(libc::SIGKILL);
            // Stop the writer before restarting, so that no CLI that found no daemon holds the
            // store open while the next daemon opens it. (Without a daemon, the CLI opens the
            // store itself; the passphrase it is given is wrong, so it writes nothing.)
            stop.store(true, Ordering::Relaxed);
            (status, handle.join().expect("writer thread"))
        });
        let status = status.expect("agent dies on SIGKILL");
        assert!(!status.success(), "cycle {cycle}: {status}");
        next += u32::try_from(done.len()).expect("count fits");
        attempts.extend(done);
        drop(agent);
    }

    let agent = env.start_agent(&["--passphrase-file", &pass]);
    let stored = env.key_names();
    let acked: Vec<&String> = attempts
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| n)
        .collect();
    let lost: Vec<&&String> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged keys lost: {lost:?} (stored {stored:?})"
    );
    assert!(
        acked.len() >= 5,
        "too few acknowledged writes ({}) to test anything; attempts {attempts:?}",
        acked.len()
    );
    // Unacknowledged writes may or may not have landed, but nothing else may appear.
    for name in &stored {
        assert!(
            attempts.iter().any(|(n, _)| n == name),
            "{name} was never written"
        );
    }
    // Every stored record is whole: its public key parses, and the agent serves each key (so
    // its private key decrypts under the master key).
    for name in &stored {
        let view = env.show(name);
        let public = view["public"].as_str().expect("public");
        ssh_key::PublicKey::from_openssh(public)
            .unwrap_or_else(|e| panic!("{name}: torn public key {public:?}: {e}"));
        assert_eq!(view["loaded"], serde_json::Value::Bool(true), "{view}");
        assert_eq!(view["comment"].as_str(), Some(name.as_str()), "{view}");
    }
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    assert_eq!(listed.stdout.lines().count(), stored.len(), "{listed:#?}");
    let loose = env.store_loose_modes();
    assert!(
        loose.is_empty(),
        "store paths with group/other bits: {loose:?}"
    );
    eprintln!(
        "store_crash: {CYCLES} SIGKILL cycles, {} generate attempts, {} acknowledged, {} stored, {:.1?}",
        attempts.len(),
        acked.len(),
        stored.len(),
        started.elapsed()
    );
}

/// Kill/restart cycles during start-up (`KEYWARD_CRASH_START_CYCLES`; `scripts/soak` runs more).
const START_CYCLES: usize = 20;

/// SIGKILL at a random moment of start-up (opening the store, unsealing it, recording the unseal
/// in the audit journal, serving the keys), over and over: afterwards the store opens, every key
/// is served, the audit chain verifies and no store path is readable by group or others.
#[test]
fn sigkill_during_start_up_never_damages_the_store() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let mut agent = env.start_agent(&["--passphrase-file", &pass]);
    for name in ["s1", "s2", "s3"] {
        env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", name]);
    }
    crate::env::stop(&mut agent);
    drop(agent);

    let cycles = crate::procstat::env_size("KEYWARD_CRASH_START_CYCLES", START_CYCLES);
    let started = Instant::now();
    let mut reached_ready = 0;
    for cycle in 0..cycles {
        let mut child = std::process::Command::new(crate::util::agent_bin())
            .arg("--socket")
            .arg(env.socket())
            .arg("--store")
            .arg(env.store())
            .args(["--passphrase-file", &pass, "-D"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn keyward-agent");
        // Start-up takes some 100-200 ms here: kill anywhere from before the store is opened to
        // just after the keys are served (the figure printed says how many kills came after).
        thread::sleep(Duration::from_millis(u64::from(OsRng.next_u32() % 250)));
        if std::os::unix::net::UnixStream::connect(env.socket()).is_ok() {
            reached_ready += 1;
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "cycle {cycle}: {status}");
    }

    let agent = env.start_agent(&["--passphrase-file", &pass]);
    assert_eq!(env.key_names(), ["s1", "s2", "s3"], "keys after the kills");
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:#?}");
    let verify = env.kw(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "audit chain after the kills: {verify:#?}"
    );
    let loose = env.store_loose_modes();
    assert!(
        loose.is_empty(),
        "store paths with group/other bits: {loose:?}"
    );
    eprintln!(
        "store_crash: {cycles} SIGKILL cycles during start-up ({reached_ready} after the socket answered), store intact, audit chain verified, {:.1?}",
        started.elapsed()
    );
}
