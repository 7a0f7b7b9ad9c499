//! Signatures made through the agent: `ssh-keygen -Y sign` verified by `ssh-keygen -Y verify`, and
//! raw sign requests with each RSA flag, verified with the `ssh-key`/`rsa` crates.

use rsa::signature::Verifier;
use ssh_key::{Algorithm, Signature};

use crate::util::{Agent, Key, KeyType, assert_agent_signs, keygen};
use crate::wire::{
    Client, SSH_AGENT_FAILURE, SSH_AGENT_RSA_SHA2_256, SSH_AGENT_RSA_SHA2_512, parse_sign_response,
};

const DATA: &[u8] = b"keyward raw sign request payload";

fn sign_with_ssh_keygen(kind: KeyType) {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "id", kind, "");
    agent.add(&key, &[]);
    assert_agent_signs(&agent, &key);
}

#[test]
fn ssh_keygen_sign_rsa_2048() {
    sign_with_ssh_keygen(KeyType::Rsa(2048));
}

#[test]
fn ssh_keygen_sign_rsa_4096() {
    sign_with_ssh_keygen(KeyType::Rsa(4096));
}

#[test]
fn ssh_keygen_sign_ed25519() {
    sign_with_ssh_keygen(KeyType::Ed25519);
}

#[test]
fn ssh_keygen_sign_ecdsa_p256() {
    sign_with_ssh_keygen(KeyType::Ecdsa(256));
}

#[test]
fn ssh_keygen_sign_ecdsa_p384() {
    sign_with_ssh_keygen(KeyType::Ecdsa(384));
}

/// Sends a raw sign request with `flags` and returns the algorithm name and verified signature.
fn raw_sign(agent: &Agent, key: &Key, flags: u32) -> (String, Vec<u8>) {
    let mut client = Client::connect(agent.socket());
    let reply = client.sign(&key.blob(), DATA, flags);
    parse_sign_response(&reply)
}

/// Verifies an SSH signature (any algorithm `ssh-key` can express) over [`DATA`].
#[track_caller]
fn verify(key: &Key, alg: &str, sig: &[u8]) {
    let algorithm = Algorithm::new(alg).expect("known signature algorithm");
    let signature = Signature::new(algorithm, sig.to_vec()).expect("well-formed signature");
    key.public_key()
        .key_data()
        .verify(DATA, &signature)
        .unwrap_or_else(|e| panic!("{alg} signature does not verify: {e}"));
}

fn rsa_key(agent: &Agent) -> Key {
    let key = keygen(agent.dir(), "rsa", KeyType::Rsa(2048), "");
    agent.add(&key, &[]);
    key
}

#[test]
fn raw_sign_rsa_sha2_256() {
    let agent = Agent::start();
    let key = rsa_key(&agent);
    let (alg, sig) = raw_sign(&agent, &key, SSH_AGENT_RSA_SHA2_256);
    assert_eq!(alg, "rsa-sha2-256");
    assert_eq!(sig.len(), 256, "RSA-2048 signature length");
    verify(&key, &alg, &sig);
}

#[test]
fn raw_sign_rsa_sha2_512() {
    let agent = Agent::start();
    let key = rsa_key(&agent);
    let (alg, sig) = raw_sign(&agent, &key, SSH_AGENT_RSA_SHA2_512);
    assert_eq!(alg, "rsa-sha2-512");
    assert_eq!(sig.len(), 256, "RSA-2048 signature length");
    verify(&key, &alg, &sig);
}

/// Flags 0 on an RSA key asks for the legacy `ssh-rsa` (SHA-1) signature. `ssh-key` cannot express
/// it, so it is verified as PKCS#1 v1.5 with SHA-1 by the `rsa` crate.
#[test]
fn raw_sign_rsa_legacy_sha1() {
    let agent = Agent::start();
    let key = rsa_key(&agent);
    let (alg, sig) = raw_sign(&agent, &key, 0);
    assert_eq!(alg, "ssh-rsa");
    let public = key.public_key();
    let rsa_public = public.key_data().rsa().expect("an RSA key");
    let verifying = rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::try_from(rsa_public)
        .expect("RSA public key converts");
    let signature = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).expect("signature bytes");
    verifying
        .verify(DATA, &signature)
        .expect("ssh-rsa signature verifies as PKCS#1 v1.5 SHA-1");
}

#[test]
fn raw_sign_ed25519() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "ed", KeyType::Ed25519, "");
    agent.add(&key, &[]);
    let (alg, sig) = raw_sign(&agent, &key, 0);
    assert_eq!(alg, "ssh-ed25519");
    verify(&key, &alg, &sig);
}

#[test]
fn raw_sign_ecdsa_p256() {
    let agent = Agent::start();
    let key = keygen(agent.dir(), "ec", KeyType::Ecdsa(256), "");
    agent.add(&key, &[]);
    let (alg, sig) = raw_sign(&agent, &key, 0);
    assert_eq!(alg, "ecdsa-sha2-nistp256");
    verify(&key, &alg, &sig);
}

#[test]
fn sign_with_unknown_key_fails_and_connection_survives() {
    let agent = Agent::start();
    let loaded = rsa_key(&agent);
    let absent = keygen(agent.dir(), "absent", KeyType::Ed25519, "");
    let mut client = Client::connect(agent.socket());
    assert_eq!(
        client.sign(&absent.blob(), DATA, 0),
        vec![SSH_AGENT_FAILURE]
    );
    let (alg, sig) =
        parse_sign_response(&client.sign(&loaded.blob(), DATA, SSH_AGENT_RSA_SHA2_256));
    verify(&loaded, &alg, &sig);
}
