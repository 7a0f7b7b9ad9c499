//! Key types beyond the common three, added with the real `ssh-add` and checked by OpenSSH:
//! ECDSA P-521 (many keys, so the half whose private scalar is shorter than 66 bytes, which
//! ssh-key 0.6 cannot read, is covered) and DSA, which OpenSSH 9.2 still offers.

use crate::sshd::Host;
use crate::util::{Agent, Key, KeyType, assert_agent_signs, keygen};

/// How many P-521 keys to try: the chance that none has a short scalar is 2^-30.
const P521_KEYS: usize = 30;

#[test]
fn p521_keys_of_every_scalar_length_sign_verified_by_ssh_keygen() {
    let agent = Agent::start();
    let keys: Vec<Key> = (0..P521_KEYS)
        .map(|i| keygen(agent.dir(), &format!("p521-{i}"), KeyType::Ecdsa(521), ""))
        .collect();
    // The keys ssh-key 0.6 cannot read are the ones this test is about: there must be some.
    let short: Vec<&Key> = keys
        .iter()
        .filter(|k| ssh_key::PrivateKey::read_openssh_file(&k.private).is_err())
        .collect();
    assert!(
        !short.is_empty(),
        "no P-521 key with a short scalar among {P521_KEYS}"
    );
    for key in &keys {
        agent.add(key, &[]);
    }
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    assert_eq!(listed.stdout.lines().count(), P521_KEYS, "{listed:#?}");
    for key in &keys {
        assert_agent_signs(&agent, key);
    }
    // Locking seals each key and unlocking reads it back: short scalars survive that too.
    let locked = agent.ssh_add_askpass("pw", &["-x"]);
    locked.assert_success("ssh-add -x");
    agent
        .ssh_add_askpass("pw", &["-X"])
        .assert_success("ssh-add -X");
    for key in short.iter().take(3) {
        assert_agent_signs(&agent, key);
    }
}

/// An sshd that accepts `key` and the extra algorithms `algorithms` (for DSA).
fn login(agent: &Agent, key: &Key, algorithms: &str) {
    let host = Host::alone(
        agent.dir(),
        "keyward-keytype-host",
        &format!("{}\n", key.public_line()),
        &format!("PubkeyAcceptedAlgorithms {algorithms}\n"),
    );
    let extra = [format!("PubkeyAcceptedAlgorithms={algorithms}")];
    let out = host.login(agent, agent.dir(), &extra, "echo ok");
    assert!(
        out.status.success() && out.stdout.trim() == "ok",
        "{algorithms} login through the agent: {out:#?}\nagent log:\n{}",
        agent.log()
    );
}

#[test]
fn p521_logs_in() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "p521", KeyType::Ecdsa(521), "");
    agent.add(&key, &[]);
    login(&agent, &key, "ecdsa-sha2-nistp521");
}

/// DSA: signatures verified by `ssh-keygen -Y verify`, a login where sshd allows `ssh-dss`, and
/// the 40-byte `r || s` signature blob OpenSSH expects.
#[test]
fn dsa_signs_and_logs_in_where_allowed() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "dsa", KeyType::Dsa, "");
    agent.add(&key, &["-t", "600"]);
    let listed = agent.ssh_add(&["-l"]);
    assert!(listed.stdout.contains("(DSA)"), "{listed:#?}");
    assert_agent_signs(&agent, &key);
    let mut client = crate::wire::Client::connect(agent.socket());
    let reply = client.sign(&key.blob(), b"data", 0);
    let mut fields = crate::wire::Fields(&reply[1..]);
    let mut sig = crate::wire::Fields(fields.string());
    assert_eq!(sig.string(), b"ssh-dss");
    assert_eq!(sig.string().len(), 40);
    login(&agent, &key, "+ssh-dss");
    // Without ssh-dss allowed, sshd refuses the same key: the login above used DSA.
    let host = Host::alone(
        agent.dir(),
        "keyward-no-dss-host",
        &format!("{}\n", key.public_line()),
        "",
    );
    let out = host.login(
        &agent,
        agent.dir(),
        &["PubkeyAcceptedAlgorithms=+ssh-dss".to_owned()],
        "echo ok",
    );
    out.assert_failure("DSA login where sshd does not allow ssh-dss");
}
