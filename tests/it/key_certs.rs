//! OpenSSH certificates of stored keys (`keyward key cert add NAME FILE`): a CA made with
//! `ssh-keygen` certifies the exported public line of a key made by `keyward key generate`; the
//! agent then serves the certificate beside the plain key (`ssh-add -l`/`-L`, byte for byte),
//! logs in to an sshd that trusts only the CA, keeps serving it after a restart and a `passwd`
//! re-key, unloads it alone with `ssh-add -d`, and `keyward cert check` reports it when it
//! expires inside the window. Certificates for another key, with a bad CA signature or malformed
//! are refused with a message saying so, and change nothing.

use std::fs;
use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use serde_json::Value;

use crate::env::{Env, STORE_PASS, assert_clean_error, key_part, stop};
use crate::sshd::{Host, current_user};
use crate::util::{KeyType, keygen};

/// Writes the exported public line of stored key `name` to `ROOT/NAME.pub` and has `ca` certify
/// it with the `ssh-keygen -s` options `opts`; returns the `-cert.pub` file.
fn certify_stored(env: &Env, name: &str, ca: &Path, opts: &[&str]) -> PathBuf {
    let public = env.root().join(format!("{name}.pub"));
    fs::write(&public, env.kw_ok(&["key", "export", name])).expect("write public line");
    let mut args = vec!["-q", "-s", ca.to_str().expect("utf-8"), "-I", "kw-stored"];
    args.extend_from_slice(opts);
    args.push(public.to_str().expect("utf-8"));
    env.ssh_keygen(&args).assert_success("ssh-keygen -s");
    let cert = env.root().join(format!("{name}-cert.pub"));
    assert!(cert.is_file(), "no certificate at {}", cert.display());
    cert
}

fn key_certs(env: &Env, name: &str) -> Vec<Value> {
    let list = env.kw_json(&["key", "cert", "list", name, "--json"]);
    list.as_array().expect("a JSON array").clone()
}

/// An sshd that trusts `ca` for user certificates and has no authorized keys at all.
fn ca_host(dir: &Path, ca: &Path) -> Host {
    Host::alone(
        dir,
        "keyward-keycert-host",
        "",
        &format!("TrustedUserCAKeys {}\n", ca.display()),
    )
}

/// `ssh-add -l` lists the plain key and its certificate, and `ssh-add -L` prints the
/// certificate byte for byte as the CA signed it (`cert_line`, the `-cert.pub` file).
#[track_caller]
fn assert_served(agent: &crate::util::Agent, cert_line: &str) {
    let listed = agent.ssh_add(&["-l"]);
    listed.assert_success("ssh-add -l");
    assert!(
        listed.stdout.contains("(ED25519-CERT)") && listed.stdout.contains("(ED25519)"),
        "the plain key and its certificate are listed: {listed:#?}"
    );
    let served = agent.ssh_add(&["-L"]);
    assert!(
        served
            .stdout
            .lines()
            .any(|l| key_part(l) == key_part(cert_line)),
        "ssh-add -L prints the file's blob: {served:#?}\nfile: {cert_line}"
    );
}

/// Locked (`ssh-add -x`), the certificate signs nothing; unlocked, it signs again (its signer is
/// the key's, decrypted again from the store).
fn lock_and_unlock(env: &Env, agent: &crate::util::Agent, host: &Host) {
    agent
        .ssh_add_askpass("lock-pw", &["-x"])
        .assert_success("ssh-add -x");
    host.login(agent, env.root(), &[], "echo ok")
        .assert_failure("login while the agent is locked");
    agent
        .ssh_add_askpass("lock-pw", &["-X"])
        .assert_success("ssh-add -X");
    let out = host.login(agent, env.root(), &[], "echo ok");
    assert!(
        out.status.success() && out.stdout.trim() == "ok",
        "login after the agent is unlocked: {out:#?}\nagent log:\n{}",
        agent.log()
    );
}

#[test]
fn a_stored_keys_certificate_is_served_logs_in_and_survives_restart_and_rekey() {
    let env = Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    env.kw_ok(&[
        "key",
        "generate",
        "-t",
        "ed25519",
        "-n",
        "login",
        "-C",
        "login@keyward",
    ]);
    let ca = keygen(env.root(), "ca", KeyType::Ed25519, "");
    let user = current_user();
    let cert = certify_stored(
        &env,
        "login",
        &ca.private,
        &[
            "-n",
            &user,
            "-V",
            "always:forever",
            "-O",
            "no-x11-forwarding",
        ],
    );
    let cert_line = fs::read_to_string(&cert).expect("read certificate");
    let host = ca_host(env.root(), &ca.public);

    // Without the certificate the plain key is not enough: no authorized key.
    host.login(&agent, env.root(), &[], "echo ok")
        .assert_failure("login with the plain stored key only");

    let added = env.kw_json(&[
        "key",
        "cert",
        "add",
        "login",
        cert.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(added[0]["state"], "valid", "{added:#}");
    assert_eq!(added[0]["expires"], "forever", "{added:#}");
    assert_eq!(added[0]["key_id"], "kw-stored", "{added:#}");
    assert_eq!(added[0]["served"], true, "{added:#}");

    assert_served(&agent, &cert_line);

    let login = |what: &str, agent: &crate::util::Agent| {
        let out = host.login(agent, env.root(), &[], "echo ok");
        assert!(
            out.status.success() && out.stdout.trim() == "ok",
            "{what}: {out:#?}\nagent log:\n{}",
            agent.log()
        );
    };
    login("certificate login through the agent", &agent);
    agent
        .ssh_add(&["-T", cert.to_str().unwrap()])
        .assert_success("ssh-add -T CERT");

    // `ssh-add -d` of the certificate unloads it alone.
    agent
        .ssh_add(&["-d", cert.to_str().unwrap()])
        .assert_success("ssh-add -d CERT");
    let listed = agent.ssh_add(&["-l"]).stdout;
    assert!(
        !listed.contains("-CERT") && listed.contains("(ED25519)"),
        "only the certificate left: {listed}"
    );
    host.login(&agent, env.root(), &[], "echo ok")
        .assert_failure("login with the certificate unloaded");
    assert_eq!(key_certs(&env, "login")[0]["served"], false);
    env.kw_ok(&["key", "load", "login"]);
    login("after key load", &agent);
    lock_and_unlock(&env, &agent, &host);

    // A restart serves it again from the store.
    stop(&mut agent);
    let mut agent = env.start_agent(&[]);
    assert_served(&agent, &cert_line);
    login("after a restart", &agent);

    // A passphrase change re-keys the store into a new database: the certificate comes along.
    let pass = env.pass_file(STORE_PASS);
    env.kw_ok(&["passwd", "--new-passphrase-file", &pass]);
    stop(&mut agent);
    let agent = env.start_agent(&[]);
    env.kw_ok(&["unlock", "--passphrase-file", &pass]);
    let certs = key_certs(&env, "login");
    assert_eq!(certs.len(), 1, "{certs:#?}");
    assert_eq!(
        key_part(certs[0]["public"].as_str().unwrap()),
        key_part(&cert_line)
    );
    login("after passwd and unlock", &agent);
    // Sealing the store stops serving the certificate with its key; unsealing serves both again.
    env.kw_ok(&["seal"]);
    assert!(!agent.ssh_add(&["-l"]).stdout.contains("ED25519"));
    env.kw_ok(&["unlock", "--passphrase-file", &pass]);
    assert!(agent.ssh_add(&["-l"]).stdout.contains("(ED25519-CERT)"));

    // Removing it (not privileged: it only takes away) stops serving it.
    env.kw_ok(&["key", "cert", "remove", "login"]);
    assert!(key_certs(&env, "login").is_empty());
    assert!(!agent.ssh_add(&["-l"]).stdout.contains("-CERT"));
}

/// The certificate `cert` of stored key `short` signs under the key's policy, counting into the
/// key's usage: two signatures allowed, one each way, then both refused.
fn signs_under_the_key_policy(env: &Env, agent: &crate::util::Agent, cert: &Path) {
    env.kw_ok(&["policy", "set", "short", "--max-signatures", "2"]);
    let data = env.root().join("data");
    fs::write(&data, "signed data\n").unwrap();
    let sign = |with: &Path| {
        let _ = fs::remove_file(env.root().join("data.sig"));
        crate::util::run(agent.command("ssh-keygen").current_dir(env.root()).args([
            "-Y",
            "sign",
            "-n",
            "file",
            "-U",
            "-f",
            with.to_str().unwrap(),
            data.to_str().unwrap(),
        ]))
    };
    let plain = env.root().join("short.pub");
    sign(cert).assert_success("signing with the certificate");
    sign(&plain).assert_success("signing with the plain key");
    let refused = sign(cert);
    refused.assert_failure("a third signature, with the certificate");
    sign(&plain).assert_failure("a fourth signature, with the plain key");
    assert!(
        agent
            .log()
            .contains("max_signatures: 2 signatures already made"),
        "refused by the key's policy: {refused:#?}\n{}",
        agent.log()
    );
}

#[test]
fn expiry_is_checked_and_bad_certificates_are_refused() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "short"]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "other"]);
    let ca = keygen(env.root(), "ca", KeyType::Ed25519, "");
    let day = certify_stored(&env, "short", &ca.private, &["-n", "u", "-V", "-1m:+1d"]);
    let other = certify_stored(&env, "other", &ca.private, &["-n", "u"]);

    // Outside any window yet: nothing to report.
    let check = env.kw(&["cert", "check", "--within", "12h"]);
    assert_eq!(check.status.code(), Some(0), "{check:#?}");

    env.kw_ok(&["key", "cert", "add", "short", day.to_str().unwrap()]);
    let certs = key_certs(&env, "short");
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0]["state"], "expiring", "{certs:#?}");
    let id = certs[0]["id"].as_str().unwrap().to_owned();

    let check = env.kw(&["cert", "check", "--within", "12h"]);
    assert_eq!(check.status.code(), Some(0), "valid for a day: {check:#?}");
    let check = env.kw(&["cert", "check", "--within", "2d"]);
    assert_eq!(
        check.status.code(),
        Some(3),
        "expires within 2 days: {check:#?}"
    );
    assert!(check.stdout.contains(&id[..12]), "{check:#?}");
    let listed = env.kw_json(&["cert", "list", "--json"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("cert list shows it: {listed:#}"));
    assert_eq!(row["origin"], "openssh");
    assert_eq!(row["key"], "short");
    let out = env.kw(&["cert", "show", &id[..12]]);
    assert_clean_error(&out, "cert show of an OpenSSH certificate");
    assert!(
        out.stderr.contains("OpenSSH certificate of key short"),
        "{out:#?}"
    );

    signs_under_the_key_policy(&env, &agent, &day);

    // Another key's certificate.
    let out = env.kw(&["key", "cert", "add", "short", other.to_str().unwrap()]);
    assert_clean_error(&out, "another key's certificate");
    assert!(
        out.stderr.contains("certifies") && out.stderr.contains("not the key short"),
        "{out:#?}"
    );

    // A bad CA signature: the last byte of the signature flipped.
    let line = fs::read_to_string(&day).unwrap();
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap();
    let mut blob = Base64::decode_vec(parts.next().unwrap()).unwrap();
    *blob.last_mut().unwrap() ^= 1;
    let forged = env.root().join("forged-cert.pub");
    fs::write(
        &forged,
        format!("{kind} {}\n", Base64::encode_string(&blob)),
    )
    .unwrap();
    let out = env.kw(&["key", "cert", "add", "short", forged.to_str().unwrap()]);
    assert_clean_error(&out, "a forged certificate");
    assert!(
        out.stderr.contains("CA signature does not verify"),
        "{out:#?}"
    );

    // Malformed files: garbage, and a plain public key.
    let garbage = env.root().join("garbage-cert.pub");
    fs::write(&garbage, "ssh-ed25519-cert-v01@openssh.com !!!!\n").unwrap();
    let out = env.kw(&["key", "cert", "add", "short", garbage.to_str().unwrap()]);
    assert_clean_error(&out, "a malformed certificate");
    assert!(out.stderr.contains("malformed"), "{out:#?}");
    let out = env.kw(&[
        "key",
        "cert",
        "add",
        "short",
        env.path("short.pub").as_str(),
    ]);
    assert_clean_error(&out, "a plain public key");
    assert!(out.stderr.contains("not a certificate"), "{out:#?}");

    // Nothing refused was stored.
    assert_eq!(key_certs(&env, "short").len(), 1);
    assert!(key_certs(&env, "other").is_empty());

    env.kw_ok(&["key", "cert", "remove", "short", &id[..10]]);
    let audit = env.kw_ok(&["audit"]);
    assert!(
        audit.contains("control.key_cert_add") && audit.contains("control.key_cert_remove"),
        "{audit}"
    );
    let check = env.kw(&["cert", "check", "--within", "2d"]);
    assert_eq!(check.status.code(), Some(0), "removed: {check:#?}");
}
