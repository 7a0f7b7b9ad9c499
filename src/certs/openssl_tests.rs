//! Every certificate keyward issues is re-read by an independent tool: these tests run the real
//! `openssl` and `ssh-keygen` binaries against our certificates, and our parser against theirs.
//! A missing tool fails the test with an install hint; it is never skipped.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use super::create::tests::{test_cert, test_key};
use super::*;

/// Runs `program args...`, panicking with an install hint if it is missing and with its stderr
/// if it fails (unless `may_fail`).
fn run_tool(program: &str, args: &[&str], dir: &Path, may_fail: bool) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            assert!(
                e.kind() != std::io::ErrorKind::NotFound,
                "`{program}` is not installed; these tests need it \
                 (Debian/Ubuntu: apt-get install openssl openssh-client; macOS: brew install openssl)"
            );
            panic!("cannot run {program}: {e}")
        });
    assert!(
        may_fail || output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run_tool("openssl", args, dir, false).stdout).unwrap()
}

/// The value after `=` on OpenSSL's single-line outputs (`serial=..`, `sha1 Fingerprint=..`).
fn after_eq(line: &str) -> &str {
    line.trim().split_once('=').unwrap().1
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn openssl_accepts_verifies_and_re_encodes_our_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = unix_now();
    let cert = test_cert(r"CN=web01.example.com,O=Example\, Inc.,OU=Ops", 365, now);
    let pem = cert.to_pem().unwrap();
    std::fs::write(d.join("c.pem"), &pem).unwrap();
    std::fs::write(d.join("c.cer"), cert.der()).unwrap();

    let text = openssl(d, &["x509", "-in", "c.pem", "-text", "-noout"]);
    for needle in [
        "Version: 3 (0x2)",
        "Signature Algorithm: sha256WithRSAEncryption",
        "Public-Key: (2048 bit)",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    let verify = openssl(d, &["verify", "-CAfile", "c.pem", "c.pem"]);
    assert_eq!(verify.trim(), "c.pem: OK");

    // Byte for byte: OpenSSL's re-encoding of our PEM is our DER and our PEM.
    let der = run_tool(
        "openssl",
        &["x509", "-in", "c.pem", "-outform", "der"],
        d,
        false,
    )
    .stdout;
    assert_eq!(der, cert.der());
    assert_eq!(openssl(d, &["x509", "-in", "c.cer", "-inform", "der"]), pem);

    let info = cert.info();
    let sha1 = openssl(
        d,
        &["x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha1"],
    );
    assert_eq!(after_eq(&sha1).replace(':', ""), info.sha1_thumbprint);
    let sha256 = openssl(
        d,
        &["x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha256"],
    );
    assert_eq!(after_eq(&sha256), info.sha256_fingerprint);
    let serial = openssl(d, &["x509", "-in", "c.pem", "-noout", "-serial"]);
    assert_eq!(after_eq(&serial), info.serial_hex);
    let nameopt = "sep_comma_plus_space,sname,utf8,esc_2253";
    let subject = openssl(
        d,
        &[
            "x509", "-in", "c.pem", "-noout", "-subject", "-nameopt", nameopt,
        ],
    );
    assert_eq!(after_eq(&subject), info.subject);
    assert_eq!(
        info.subject,
        r"CN=web01.example.com, O=Example\, Inc., OU=Ops"
    );

    // Expiry as OpenSSL sees it: still valid a minute before not_after, not a minute after.
    let left = info.not_after - now;
    let checkend = |secs: u64| {
        let secs = secs.to_string();
        let args = ["x509", "-in", "c.pem", "-noout", "-checkend", secs.as_str()];
        run_tool("openssl", &args, d, true).status.success()
    };
    assert!(checkend(left - 60));
    assert!(!checkend(left + 60));
}

#[test]
fn certificate_key_and_identifiers_match_openssl_for_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Our key as an OpenSSH file, converted to PEM by ssh-keygen so OpenSSL can read it.
    let key = ssh_key::PrivateKey::new(test_key().clone(), "").unwrap();
    key.write_openssh_file(&d.join("id_rsa"), ssh_key::LineEnding::LF)
        .unwrap();
    let args = ["-p", "-q", "-m", "PEM", "-P", "", "-N", "", "-f", "id_rsa"];
    run_tool("ssh-keygen", &args, d, false);

    let cert = test_cert("CN=same-key", 365, unix_now());
    std::fs::write(d.join("c.pem"), cert.to_pem().unwrap()).unwrap();
    let ours = openssl(d, &["x509", "-in", "c.pem", "-noout", "-pubkey"]);
    let theirs = openssl(d, &["pkey", "-in", "id_rsa", "-pubout"]);
    assert_eq!(ours, theirs);

    // OpenSSL's own certificate for the key has the same subject key identifier as ours.
    let args = ["req", "-x509", "-key", "id_rsa", "-nodes", "-days", "365"];
    let mut args = args.to_vec();
    args.extend(["-subj", "/CN=same-key", "-out", "o.pem"]);
    openssl(d, &args);
    let theirs = Certificate::parse(&std::fs::read(d.join("o.pem")).unwrap()).unwrap();
    assert!(cert.subject_key_id().is_some());
    assert_eq!(theirs.subject_key_id(), cert.subject_key_id());
    assert_eq!(theirs.info().subject, cert.info().subject);

    let ssh = run_tool("ssh-keygen", &["-y", "-f", "id_rsa"], d, false).stdout;
    let ssh = String::from_utf8(ssh).unwrap();
    assert_eq!(ssh_public_key_line(cert.der(), "").unwrap(), ssh.trim());
}

#[test]
fn ssh_key_of_an_openssl_certificate_equals_ssh_keygen_y() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = [
        "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", "k",
    ];
    run_tool("ssh-keygen", &args, d, false);
    let args = [
        "req", "-x509", "-key", "k", "-nodes", "-days", "365", "-subj", "/CN=test",
    ];
    let mut pem_args = args.to_vec();
    pem_args.extend(["-out", "c.pem"]);
    openssl(d, &pem_args);
    openssl(
        d,
        &["x509", "-in", "c.pem", "-outform", "der", "-out", "c.cer"],
    );

    let expected = run_tool("ssh-keygen", &["-y", "-f", "k"], d, false).stdout;
    let expected = String::from_utf8(expected).unwrap();
    let expected = expected.trim();
    for file in ["c.pem", "c.cer"] {
        let bytes = std::fs::read(d.join(file)).unwrap();
        assert_eq!(ssh_public_key_line(&bytes, "").unwrap(), expected, "{file}");
        let with_comment = ssh_public_key_line(&bytes, "vm@prod").unwrap();
        assert_eq!(with_comment, format!("{expected} vm@prod"));
    }

    // Any certificate reads as OpenSSL describes it.
    let info = Certificate::parse(&std::fs::read(d.join("c.pem")).unwrap())
        .unwrap()
        .info();
    let sha1 = openssl(
        d,
        &["x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha1"],
    );
    assert_eq!(after_eq(&sha1).replace(':', ""), info.sha1_thumbprint);
    let serial = openssl(d, &["x509", "-in", "c.pem", "-noout", "-serial"]);
    assert_eq!(after_eq(&serial), info.serial_hex);
    assert_eq!((info.key_algorithm.as_str(), info.key_bits), ("RSA", 2048));
    assert_eq!(info.subject, "CN=test");
}

#[test]
fn non_rsa_certificates_and_bad_input_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let req = |key: &str, out: &str| {
        let args = [
            "req", "-x509", "-newkey", key, "-nodes", "-days", "1", "-subj", "/CN=x",
        ];
        let mut args = args.to_vec();
        args.extend(["-keyout", "k.pem", "-out", out]);
        run_tool("openssl", &args, d, false);
    };
    let args = ["genpkey", "-genparam", "-algorithm", "DSA"];
    let mut args = args.to_vec();
    args.extend(["-pkeyopt", "dsa_paramgen_bits:1024", "-out", "dsa.params"]);
    openssl(d, &args);
    let args = ["ecparam", "-name", "prime256v1", "-out", "ec.params"];
    openssl(d, &args);
    req("ec:ec.params", "ec.pem");
    req("ed25519", "ed.pem");
    req("dsa:dsa.params", "dsa.pem");

    for (file, algorithm, bits) in [
        ("ec.pem", "EC (P-256)", 256),
        ("ed.pem", "Ed25519", 256),
        ("dsa.pem", "DSA", 1024),
    ] {
        let bytes = std::fs::read(d.join(file)).unwrap();
        let info = Certificate::parse(&bytes).unwrap().info();
        assert_eq!(
            (info.key_algorithm.as_str(), info.key_bits),
            (algorithm, bits)
        );
        let err = ssh_public_key_line(&bytes, "").unwrap_err();
        assert!(
            matches!(&err, CertError::NotRsaCertificate { algorithm: a } if a == algorithm),
            "{err:?}"
        );
        assert!(err.to_string().contains(algorithm), "{err}");
    }

    let mut random = [0u8; 512];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let err = ssh_public_key_line(&random, "").unwrap_err();
    assert_eq!(err.to_string(), "not an X.509 certificate (PEM or DER)");
    let err = ssh_public_key_line(&std::fs::read(d.join("k.pem")).unwrap(), "").unwrap_err();
    assert!(matches!(err, CertError::WrongPemLabel { .. }), "{err:?}");

    let signer = crate::keys::Signer::from_keypair(test_key()).unwrap();
    let err = create_self_signed(&signer, &Subject::new("x").unwrap(), 0, unix_now()).unwrap_err();
    assert!(matches!(err, CertError::InvalidDays { days: 0 }));
}
