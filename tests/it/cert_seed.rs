//! The management-certificate seed workflow without a daemon: `keyward key generate` → `cert
//! create` → `cert export` to `.pem` and `.cer`, every file re-read by `openssl` (v3, SHA-256 with
//! RSA, subject, self-verification, DER equal to OpenSSL's conversion, the stored key's public key)
//! and `keyward cert show` agreeing with OpenSSL's fingerprints and dates.

use std::fs;

use crate::env::{Env, field, key_part, text};

#[test]
fn seed_workflow_pem_and_cer_read_by_openssl() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "mgmt", "-C", "mgmt@example"]);
    let created = env.create("mgmt", 365, &["--subject", "CN=mgmt,O=Example"]);
    let id = text(&created, "id");
    assert_eq!(created["key"].as_str(), Some("mgmt"), "{created}");
    assert_eq!(created["origin"].as_str(), Some("issued"), "{created}");
    assert_eq!(created["state"].as_str(), Some("valid"), "{created}");

    env.kw_ok(&["cert", "export", &id, "--out", "my.pem"]);
    env.kw_ok(&["cert", "export", &id, "--out", "my.cer"]);
    let pem = fs::read_to_string(env.path("my.pem")).expect("read my.pem");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    let cer = fs::read(env.path("my.cer")).expect("read my.cer");
    assert_eq!(cer.first(), Some(&0x30), "my.cer is DER (a SEQUENCE)");

    // `openssl x509 -text`: v3, SHA-256 with RSA, the subject, the extensions.
    let dump = env.x509("my.pem", &["-text", "-noout"]);
    assert!(dump.contains("Version: 3 (0x2)"), "{dump}");
    assert!(
        dump.contains("Signature Algorithm: sha256WithRSAEncryption"),
        "{dump}"
    );
    assert!(dump.contains("Public-Key: (2048 bit)"), "{dump}");
    assert_eq!(field(&dump, "Subject:"), "CN = mgmt, O = Example", "{dump}");
    assert_eq!(field(&dump, "Issuer:"), "CN = mgmt, O = Example", "{dump}");
    assert!(dump.contains("X509v3 Basic Constraints"), "{dump}");
    assert!(dump.contains("X509v3 Subject Key Identifier"), "{dump}");

    // Self-signed: it verifies against itself.
    let verify = env.openssl(&["verify", "-CAfile", "my.pem", "my.pem"]);
    verify.assert_success("openssl verify -CAfile my.pem my.pem");
    assert!(verify.stdout.contains("my.pem: OK"), "{verify:#?}");

    // Our DER is OpenSSL's DER of our PEM, byte for byte; and the .cer reads back to the PEM.
    env.openssl_ok(&[
        "x509", "-in", "my.pem", "-outform", "der", "-out", "ssl.cer",
    ]);
    let ssl_der = fs::read(env.path("ssl.cer")).expect("read ssl.cer");
    assert!(
        cer == ssl_der,
        "my.cer differs from openssl's DER of my.pem"
    );
    assert_eq!(env.x509("my.cer", &["-outform", "pem"]), pem);

    // The certificate's key is the stored key: as SSH lines ...
    let stored = env.kw_ok(&["key", "export", "mgmt"]);
    for file in ["my.pem", "my.cer"] {
        let line = env.kw_ok(&["cert", "ssh-pubkey", file]);
        assert_eq!(key_part(&line), key_part(&stored), "{file}");
        assert_eq!(line.trim_end(), format!("{} my", key_part(&stored)));
    }
    // ... and as SubjectPublicKeyInfo, against the exported private key converted to PEM.
    env.kw_ok(&["key", "export", "mgmt", "--private", "--out", "id_mgmt"]);
    env.ssh_keygen(&["-p", "-m", "PEM", "-N", "", "-P", "", "-f", "id_mgmt"])
        .assert_success("ssh-keygen -p -m PEM");
    let from_key = env.openssl_ok(&["pkey", "-in", "id_mgmt", "-pubout"]);
    let from_cert = env.x509("my.pem", &["-pubkey", "-noout"]);
    assert_eq!(from_cert, from_key, "certificate key != stored key");
    // The exported private key signs for the certificate's key: openssl pairs them.
    let check = env.openssl_ok(&["x509", "-in", "my.pem", "-noout", "-modulus"]);
    let key_mod = env.openssl_ok(&["rsa", "-in", "id_mgmt", "-noout", "-modulus"]);
    assert_eq!(check, key_mod);

    // `cert show --json` agrees with openssl.
    let view = env.cert_show(&id);
    assert_eq!(text(&view, "sha1_thumbprint"), env.ssl_thumbprint("my.pem"));
    let sha256 = env.x509("my.pem", &["-noout", "-fingerprint", "-sha256"]);
    assert_eq!(
        text(&view, "sha256_fingerprint"),
        field(&sha256, "Fingerprint=")
    );
    let end = env.x509("my.pem", &["-noout", "-enddate", "-dateopt", "iso_8601"]);
    assert_eq!(
        text(&view, "expires").replace('T', " "),
        field(&end, "notAfter="),
        "not_after as openssl reads it"
    );
    let start = env.x509("my.pem", &["-noout", "-startdate", "-dateopt", "iso_8601"]);
    let not_before = view["not_before"].as_u64().expect("not_before");
    let not_after = view["not_after"].as_u64().expect("not_after");
    assert_eq!(not_after - not_before, 365 * 86_400, "{view}");
    assert!(!field(&start, "notBefore=").is_empty());
    let serial = env.x509("my.pem", &["-noout", "-serial"]);
    assert_eq!(
        text(&view, "serial").trim_start_matches('0'),
        field(&serial, "serial=").trim_start_matches('0'),
    );
    assert!(
        dump.contains("Serial Number:") && !dump.contains("(Negative)"),
        "positive serial: {dump}"
    );
    let days = view["days_left"].as_i64().expect("days_left");
    assert!(days == 364 || days == 365, "days_left {days}: {view}");
    assert_eq!(view["subject"].as_str(), Some("CN=mgmt, O=Example"));
    assert_eq!(text(&view, "pem"), pem, "show --json carries the PEM");
    assert_eq!(env.kw_ok(&["cert", "show", &id, "--pem"]), pem);

    // The text forms name the same certificate.
    let shown = env.kw_ok(&["cert", "show", &id[..8]]);
    assert!(shown.contains(&id), "prefix lookup: {shown}");
    assert!(shown.contains(&text(&view, "sha1_thumbprint")), "{shown}");
    let listed = env.kw_ok(&["cert", "list"]);
    assert!(
        listed.contains(&id[..12]) && listed.contains("mgmt"),
        "{listed}"
    );
}

/// Two certificates of one key get different random serials (rcgen's default would repeat).
#[test]
fn serials_are_random_per_certificate() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let a = env.create("k", 30, &[]);
    let b = env.create("k", 30, &[]);
    assert_ne!(text(&a, "serial"), text(&b, "serial"));
    assert_ne!(text(&a, "sha1_thumbprint"), text(&b, "sha1_thumbprint"));
    // Default subject: CN=<key name>.
    assert_eq!(a["subject"].as_str(), Some("CN=k"), "{a}");
}
