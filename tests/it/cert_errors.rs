//! Bad input to `keyward cert ...` gets a clear error and a non-zero exit and changes nothing in
//! the store (`cert list --all --json` before and after) — offline and through the daemon: files
//! that are not certificates, an EC certificate where RSA is needed, out-of-range validities and
//! renew windows, unknown keys and certificates, non-RSA keys, unknown subject attributes, and an
//! export over an existing file without `--force`. Relative export paths are made absolute.

use std::fs;

use serde_json::Value;

use crate::env::{Env, assert_clean_error, assert_refused, ssh_keygen_pem, text};

/// Runs `keyward ARGS`, expects a one-line `keyward: ...` error mentioning `hint`
/// (case-insensitive), and checks that no certificate or policy changed.
#[track_caller]
fn refused(env: &Env, args: &[&str], hint: &str) {
    assert_refused(env, args, hint, Env::snapshot);
}

/// The files the cases use, made once per test: junk, a private key, an empty file, an EC
/// certificate, and an existing export target.
fn inputs(env: &Env) {
    fs::write(env.path("junk.pem"), "this is not a certificate\n").expect("write junk");
    fs::write(env.path("empty.cer"), b"").expect("write empty");
    let key = ssh_keygen_pem(env, "id_rsa");
    fs::copy(&key, env.path("key.pem")).expect("copy key");
    env.openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ec.key",
        "-days",
        "30",
        "-subj",
        "/CN=ec",
        "-out",
        "ec.pem",
    ]);
    env.openssl_ok(&["x509", "-in", "ec.pem", "-outform", "der", "-out", "ec.cer"]);
    fs::write(env.path("taken.pem"), "sentinel\n").expect("write taken");
}

fn cases(env: &Env, rsa_cert: &str) {
    // Not certificates, for import and ssh-pubkey.
    for file in ["junk.pem", "key.pem", "empty.cer"] {
        refused(env, &["cert", "import", file], "not an X.509 certificate");
        refused(
            env,
            &["cert", "ssh-pubkey", file],
            "not an X.509 certificate",
        );
    }
    refused(env, &["cert", "import", "missing.pem"], "missing.pem");
    refused(env, &["cert", "ssh-pubkey", "missing.pem"], "missing.pem");
    // An EC certificate has no ssh-rsa form.
    refused(env, &["cert", "ssh-pubkey", "ec.pem"], "not RSA");
    refused(env, &["cert", "ssh-pubkey", "ec.cer"], "not RSA");

    // cert create: validity, key, subject.
    let create = |days: &str, key: &str, subject: &str| {
        vec![
            "cert",
            "create",
            "--key",
            key,
            "--days",
            days,
            "--subject",
            subject,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let run = |args: Vec<String>, hint: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(env, &args, hint);
    };
    run(create("0", "mgmt", "CN=a"), "1 to 36500 days");
    run(create("100000", "mgmt", "CN=a"), "1 to 36500 days");
    run(create("365", "nosuchkey", "CN=a"), "nosuchkey");
    run(create("365", "ed", "CN=a"), "RSA keys only");
    run(
        create("365", "mgmt", "CN=a,C=US"),
        "unknown subject attribute `C`",
    );
    run(
        create("365", "mgmt", "CN=a,XX=1"),
        "unknown subject attribute `XX`",
    );
    run(create("365", "mgmt", "O=Example"), "common name");
    run(create("365", "mgmt", "CN="), "empty");

    // Unknown certificates.
    for sub in ["show", "renew", "policy"] {
        refused(env, &["cert", sub, "zz-no-such-cert"], "no certificate");
    }
    refused(
        env,
        &["cert", "export", "zz-no-such-cert", "--out", "x.pem"],
        "no certificate",
    );
    assert!(!env.root().join("x.pem").exists());

    // Renewing would give a certificate due again at once (10 days, 30-day window).
    let short = text(&env.create("mgmt", 10, &[]), "id");
    refused(env, &["cert", "renew", &short], "renew-before");

    // Export over an existing file: refused without --force, the file untouched.
    refused(
        env,
        &["cert", "export", rsa_cert, "--out", "taken.pem"],
        "--force",
    );
    assert_eq!(
        fs::read_to_string(env.path("taken.pem")).unwrap(),
        "sentinel\n"
    );

    // Policy bounds.
    let policy = |extra: &[&str], hint: &str| {
        let mut args = vec!["cert", "policy", rsa_cert];
        args.extend_from_slice(extra);
        refused(env, &args, hint);
    };
    policy(&["--days", "0"], "validity");
    policy(&["--days", "100000"], "validity");
    policy(&["--renew-before", "30m"], "renew-before");
    policy(&["--renew-before", "400d"], "renew-before");
    let before = env.snapshot();
    let out = env.kw(&["cert", "policy", rsa_cert, "--renew-before", "0"]);
    out.assert_failure("--renew-before 0");
    assert!(out.stderr.contains("renew-before"), "{out:#?}");
    assert_eq!(env.snapshot(), before);
}

/// Checks what bad input must not break and the `--force` and relative-path cases that succeed.
fn accepted(env: &Env, rsa_cert: &str) {
    env.kw_ok(&["cert", "export", rsa_cert, "--out", "taken.pem", "--force"]);
    assert_eq!(
        env.ssl_thumbprint("taken.pem"),
        text(&env.cert_show(rsa_cert), "sha1_thumbprint")
    );
    fs::write(env.path("taken.pem"), "sentinel\n").expect("reset taken");

    // A relative export path is made absolute by the CLI (from its working directory).
    let view = env.kw_json(&[
        "cert",
        "policy",
        rsa_cert,
        "--export",
        "rel/b.pem",
        "--export",
        "c.out:der",
        "--json",
    ]);
    let exports = view["renewal"]["exports"].as_array().expect("exports");
    assert_eq!(exports.len(), 2, "{view}");
    assert_eq!(
        exports[0]["path"].as_str(),
        Some(env.path("rel/b.pem").as_str())
    );
    assert_eq!(exports[0]["format"].as_str(), Some("pem"));
    assert_eq!(
        exports[1]["path"].as_str(),
        Some(env.path("c.out").as_str())
    );
    assert_eq!(exports[1]["format"].as_str(), Some("der"));
    let view = env.kw_json(&["cert", "policy", rsa_cert, "--no-exports", "--json"]);
    assert_eq!(view["renewal"]["exports"], Value::Array(Vec::new()));
}

fn bad_input(env: &Env) {
    let rsa_cert = text(&env.create("mgmt", 365, &[]), "id");
    cases(env, &rsa_cert);
    accepted(env, &rsa_cert);
}

#[test]
fn bad_input_offline_and_through_the_daemon() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "mgmt"]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "ed"]);
    inputs(&env);
    bad_input(&env);
    let _agent = env.start_agent(&[]);
    bad_input(&env);
}

/// An export target that cannot be written (its directory is missing): if `keyward cert renew`
/// reports failure, the store must be as before — otherwise the user, told it failed, renews
/// again and supersedes twice. If the renewal is kept, the command must say it renewed.
#[test]
fn renew_that_cannot_export_fails_cleanly_or_says_it_renewed() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let id = text(&env.create("k", 60, &[]), "id");
    let target = env.path("no-such-dir/a.pem");
    env.kw_ok(&["cert", "policy", &id, "--export", &target]);
    let before = env.snapshot();
    let out = env.kw(&["cert", "renew", &id, "--json"]);
    let after = env.snapshot();
    if out.status.success() {
        let view: Value = serde_json::from_str(&out.stdout).expect("renew --json");
        assert!(
            after.iter().any(|c| c["id"] == view["id"]),
            "renewed to an unlisted certificate: {out:#?}"
        );
    } else {
        assert_clean_error(&out, "cert renew with an unwritable export target");
        assert!(out.stderr.contains("no-such-dir"), "{out:#?}");
        assert_eq!(
            after.len(),
            before.len(),
            "`cert renew` failed ({}) yet stored a renewal: {after:#?}",
            out.stderr.trim()
        );
        assert_eq!(after, before, "a failed renewal changed the store");
    }
}
