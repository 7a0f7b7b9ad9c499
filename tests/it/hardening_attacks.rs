//! A hostile peer and hostile signals: a frame header whose body never comes is dropped after the
//! body deadline; a constraint list with a valid extension followed by a bad one (the shape of
//! CVE-2021-28041) leaves no key and no constraint behind; SIGABRT leaves no core file even when
//! the daemon is started with `ulimit -c unlimited`.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ssh_agent_lib::proto::KeyConstraint;
use ssh_agent_lib::proto::extension::{
    DestinationConstraint, HostTuple, KeySpec, RestrictDestination,
};
use ssh_encoding::Encode;
use ssh_key::private::Ed25519Keypair;

use crate::util::{Agent, agent_bin, clean_command, require_tool};
use crate::wire::{
    Client, Msg, SSH_AGENT_FAILURE, SSH_AGENT_SUCCESS, SSH2_AGENT_SIGN_RESPONSE,
    SSH2_AGENTC_ADD_ID_CONSTRAINED, SSH2_AGENTC_ADD_IDENTITY,
};

/// The daemon's body deadline (`daemon::BODY_DEADLINE`).
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Timer slack allowed below the deadline.
const SLACK: Duration = Duration::from_millis(200);

#[test]
fn withheld_body_is_dropped_after_the_deadline() {
    let agent = Agent::start();
    let mut stalled = Client::connect(agent.socket());
    let started = Instant::now();
    stalled
        .write_raw(&[0, 0, 0, 100, 13, 0, 0])
        .expect("write a header and 3 of 100 body bytes");
    // Others are served meanwhile.
    assert!(Client::connect(agent.socket()).identities().is_empty());
    stalled.assert_closed_without_reply();
    let waited = started.elapsed();
    eprintln!("withheld body: connection dropped after {waited:?}");
    // Lower bound only (minus timer slack): the daemon waited for the body as long as it said.
    assert!(
        waited + SLACK >= BODY_DEADLINE,
        "dropped after only {waited:?}"
    );
    assert!(Client::connect(agent.socket()).identities().is_empty());
}

/// An Ed25519 key encoded for an add request, and its public blob.
fn ed25519_body(seed: u8) -> (Msg, Vec<u8>) {
    let keypair = Ed25519Keypair::from_seed(&[seed; 32]);
    let public = keypair.public.0;
    let body = Msg::default()
        .string("ssh-ed25519")
        .string(public)
        .string(keypair.to_bytes())
        .string(format!("cve-shape-{seed}"));
    let blob = Msg::default().string("ssh-ed25519").string(public).0;
    (body, blob)
}

/// A well-formed `restrict-destination-v00@openssh.com` constraint to one host key.
fn valid_destination() -> Vec<u8> {
    let host = Ed25519Keypair::from_seed(&[99; 32]);
    let hop = DestinationConstraint {
        from: HostTuple {
            username: String::new(),
            hostname: String::new(),
            keys: vec![],
        },
        to: HostTuple {
            username: String::new(),
            hostname: "host.example".into(),
            keys: vec![KeySpec {
                keyblob: ssh_key::public::KeyData::Ed25519(host.public),
                is_ca: false,
            }],
        },
    };
    let ext = ssh_agent_lib::proto::Extension::new_key_constraint(RestrictDestination {
        constraints: vec![hop],
    })
    .expect("encode restrict-destination");
    let mut out = Vec::new();
    KeyConstraint::Extension(ext)
        .encode(&mut out)
        .expect("encode constraint");
    out
}

/// Bad constraints to put after the valid one.
fn bad_tails() -> Vec<(&'static str, Vec<u8>)> {
    let valid = valid_destination();
    vec![
        (
            "an unknown extension",
            Msg::default()
                .byte(255)
                .string("bogus@keyward.test")
                .string("x")
                .0,
        ),
        // The second restrict-destination announces more bytes than the frame has.
        (
            "a truncated restrict-destination",
            valid[..valid.len() - 7].to_vec(),
        ),
        ("an unknown constraint type", vec![42, 0, 0, 0, 1]),
        (
            "a restrict-destination with a garbage body",
            Msg::default()
                .byte(255)
                .string("restrict-destination-v00@openssh.com")
                .string([0xff; 12])
                .0,
        ),
    ]
}

fn sign_kind(client: &mut Client, blob: &[u8]) -> u8 {
    client.sign(blob, b"plain data, not a login", 0)[0]
}

#[test]
fn valid_extension_then_bad_constraint_leaves_no_state() {
    let agent = Agent::start();
    let mut client = Client::connect(agent.socket());
    // The valid constraint alone is accepted: the test's encoding is right.
    let (probe, probe_blob) = ed25519_body(3);
    let alone = Msg::new(SSH2_AGENTC_ADD_ID_CONSTRAINED)
        .raw(&probe.0)
        .raw(&valid_destination());
    assert_eq!(client.request(&alone), vec![SSH_AGENT_SUCCESS]);
    assert_eq!(
        sign_kind(&mut client, &probe_blob),
        SSH_AGENT_FAILURE,
        "a destination-constrained key does not sign unbound data"
    );
    assert_eq!(client.request(&Msg::new(19)), vec![SSH_AGENT_SUCCESS]);

    // An unconstrained key already held.
    let (held, held_blob) = ed25519_body(1);
    let plain = Msg::new(SSH2_AGENTC_ADD_IDENTITY).raw(&held.0);
    assert_eq!(client.request(&plain), vec![SSH_AGENT_SUCCESS]);
    let (fresh, fresh_blob) = ed25519_body(2);

    for (what, tail) in bad_tails() {
        for (body, name) in [(&fresh, "a new key"), (&held, "the held key")] {
            let msg = Msg::new(SSH2_AGENTC_ADD_ID_CONSTRAINED)
                .raw(&body.0)
                .raw(&valid_destination())
                .raw(&tail);
            assert_eq!(
                client.request(&msg),
                vec![SSH_AGENT_FAILURE],
                "{name} with a valid restrict-destination then {what} must be refused"
            );
        }
        let listed: Vec<Vec<u8>> = client.identities().into_iter().map(|(b, _)| b).collect();
        assert_eq!(
            listed,
            vec![held_blob.clone()],
            "after {what}: only the held key"
        );
        assert!(!listed.contains(&fresh_blob));
        // The held key kept no destination constraint from the refused add: it still signs
        // unbound data.
        assert_eq!(
            sign_kind(&mut client, &held_blob),
            SSH2_AGENT_SIGN_RESPONSE,
            "after {what}: the held key is unchanged"
        );
    }
}

#[test]
fn sigabrt_leaves_no_core_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock").join("agent.sock");
    let log = fs::File::create(dir.path().join("agent.log")).expect("create log");
    let child = clean_command(require_tool("sh"), dir.path())
        .current_dir(dir.path())
        .arg("-c")
        .arg("ulimit -c unlimited && exec \"$0\" --socket \"$1\" -d")
        .arg(agent_bin())
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn agent with ulimit -c unlimited");
    let mut agent = Agent::adopt(child, dir, socket);
    let cwd = fs::read_link(format!("/proc/{}/cwd", agent.pid())).expect("daemon cwd");
    assert_eq!(cwd, agent.dir(), "the daemon runs in the temp dir");
    let limits = fs::read_to_string(format!("/proc/{}/limits", agent.pid())).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    let soft = core.split_whitespace().nth(4).expect("soft limit");
    assert_eq!(
        soft, "0",
        "started with ulimit -c unlimited, the daemon lowers its own core limit: {core}"
    );

    let status = agent
        .signal_and_wait(libc::SIGABRT)
        .expect("the daemon exits on SIGABRT");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "killed by SIGABRT: {status}"
    );
    assert!(!status.core_dumped(), "the kernel reports a core dump");
    let cores: Vec<_> = fs::read_dir(&cwd)
        .expect("read cwd")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
        .map(|e| e.path())
        .collect();
    assert!(cores.is_empty(), "core files left: {cores:?}");
}
