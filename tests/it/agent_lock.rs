//! Locking and unlocking: `ssh-add -x`/`-X`, what a locked agent refuses, and the delay gate that
//! slows wrong unlock passwords across all connections.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::procstat::env_size;
use crate::util::{
    Agent, KeyType, assert_agent_refuses, assert_agent_signs, assert_no_identities, keygen,
};
use crate::wire::{Client, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS};

const LOCK_PASSWORD: &str = "lock-me-up";

#[test]
fn ssh_add_lock_and_unlock() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Ed25519, "");
    agent.add(&key, &[]);
    assert_agent_signs(&agent, &key);

    let locked = agent.ssh_add_askpass(LOCK_PASSWORD, &["-x"]);
    locked.assert_success("ssh-add -x");
    assert!(locked.stderr.contains("Agent locked"), "{locked:#?}");

    assert_no_identities(&agent);
    assert_agent_refuses(&agent, &key);

    let wrong = agent.ssh_add_askpass("not-the-password", &["-X"]);
    wrong.assert_failure("ssh-add -X with a wrong password");
    assert_no_identities(&agent);

    let unlocked = agent.ssh_add_askpass(LOCK_PASSWORD, &["-X"]);
    unlocked.assert_success("ssh-add -X");
    assert!(unlocked.stderr.contains("Agent unlocked"), "{unlocked:#?}");
    assert_eq!(agent.ssh_add(&["-l"]).stdout.lines().count(), 1);
    assert_agent_signs(&agent, &key);
}

#[test]
fn locked_agent_refuses_raw_sign_and_lists_nothing() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", KeyType::Rsa(2048), "");
    agent.add(&key, &[]);
    let mut client = Client::connect(agent.socket());
    assert_eq!(client.lock(LOCK_PASSWORD), SSH_AGENT_SUCCESS);
    assert!(client.identities().is_empty(), "locked agent lists keys");
    assert_eq!(
        client.sign(&key.blob(), b"data", 0),
        vec![SSH_AGENT_FAILURE]
    );
    // A second connection sees the same lock.
    let mut other = Client::connect(agent.socket());
    assert!(other.identities().is_empty());
    assert_eq!(other.unlock(LOCK_PASSWORD), SSH_AGENT_SUCCESS);
    assert_eq!(client.identities().len(), 1);
}

/// OpenSSH delays the n-th consecutive wrong unlock by n × 100 ms, and its single thread makes the
/// delays add up. Parallel wrong unlocks on separate connections must go through one gate, so N
/// of them take at least 100 ms × (1 + 2 + … + N) in total. Only a lower bound is asserted.
///
/// `KEYWARD_UNLOCK_ATTEMPTS` wrong passwords (5 by default) come from `KEYWARD_UNLOCK_CLIENTS`
/// parallel connections (as many as attempts by default; `scripts/soak` runs the 20
/// attempts from 16 clients, so some clients try twice in a row). The figures are printed on one
/// `wrong unlocks:` line.
#[test]
fn parallel_wrong_unlocks_share_one_delay_gate() {
    let attempts = env_size("KEYWARD_UNLOCK_ATTEMPTS", 5);
    let client_count = env_size("KEYWARD_UNLOCK_CLIENTS", attempts).clamp(1, attempts);
    let agent = Agent::start();
    {
        let mut client = Client::connect(agent.socket());
        assert_eq!(client.lock(LOCK_PASSWORD), SSH_AGENT_SUCCESS);
    }

    let barrier = Arc::new(Barrier::new(client_count + 1));
    let handles: Vec<_> = (0..client_count)
        .map(|c| {
            let mut client = Client::connect(agent.socket());
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                // Client c makes attempts c, c + clients, c + 2 × clients, …
                (c..attempts)
                    .step_by(client_count)
                    .map(|n| client.unlock(&format!("wrong-{n}")))
                    .collect::<Vec<u8>>()
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut made = 0;
    for handle in handles {
        for reply in handle.join().expect("unlock thread") {
            assert_eq!(reply, SSH_AGENT_FAILURE, "a wrong password must fail");
            made += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(made, attempts);

    let attempts = u64::try_from(attempts).expect("attempts fit");
    let schedule = Duration::from_millis((1..=attempts).map(|n| n * 100).sum());
    // 10 ms per attempt of slack for timer granularity; this is still far above what per-connection
    // or concurrent delays would give (at most attempts × 100 ms per client).
    let lower = schedule.saturating_sub(Duration::from_millis(10 * attempts));
    eprintln!(
        "wrong unlocks: {attempts} attempts from {client_count} parallel clients took \
         {elapsed:?}; OpenSSH's delay schedule allows no less than {schedule:?}"
    );
    assert!(
        elapsed >= lower,
        "{attempts} parallel wrong unlocks took {elapsed:?}, expected at least {lower:?} \
         (the OpenSSH delay schedule summed over one shared gate)"
    );

    let mut client = Client::connect(agent.socket());
    assert_eq!(
        client.unlock(LOCK_PASSWORD),
        SSH_AGENT_SUCCESS,
        "right password still works"
    );
}

#[test]
fn unlocking_an_unlocked_agent_fails() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    assert_eq!(client.unlock(LOCK_PASSWORD), SSH_AGENT_FAILURE);
    assert!(client.identities().is_empty());
}
