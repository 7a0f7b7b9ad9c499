//! Certificates made elsewhere (`openssl req -x509` from an `ssh-keygen` key): `keyward cert
//! ssh-pubkey` gives the `ssh-keygen -y` line for the PEM and the DER form, and `keyward cert
//! import` tracks one for expiry (`cert check`) without being able to renew it.

use std::fs;

use crate::env::{Env, assert_clean_error, by_id, key_part, ssh_keygen_pem, text};

/// `openssl req -x509 -key KEY -nodes -days 365 -subj /CN=x` as `x.pem`, plus `x.cer` (DER).
fn openssl_cert(env: &Env, key: &str) {
    env.openssl_ok(&[
        "req", "-x509", "-key", key, "-nodes", "-days", "365", "-subj", "/CN=x", "-out", "x.pem",
    ]);
    env.openssl_ok(&["x509", "-in", "x.pem", "-outform", "der", "-out", "x.cer"]);
}

#[test]
fn ssh_pubkey_of_openssl_certificate_equals_ssh_keygen() {
    let env = Env::no_passphrase();
    let key = ssh_keygen_pem(&env, "id_rsa");
    openssl_cert(&env, &key);
    let want = env.ssh_keygen(&["-y", "-f", &key]);
    want.assert_success("ssh-keygen -y");
    assert!(want.stdout.starts_with("ssh-rsa AAAA"), "{want:#?}");

    for file in ["x.pem", "x.cer"] {
        let line = env.kw_ok(&["cert", "ssh-pubkey", file]);
        assert_eq!(key_part(&line), key_part(&want.stdout), "{file}");
        // One line, default comment: the file name without its extension.
        assert_eq!(line, format!("{} x\n", key_part(&want.stdout)), "{file}");
        let commented = env.kw_ok(&["cert", "ssh-pubkey", file, "-C", "vm@portal"]);
        assert_eq!(commented, format!("{} vm@portal\n", key_part(&want.stdout)));
        // ssh-keygen reads the line back as the same key.
        let pub_file = env.path(&format!("{file}.pub"));
        fs::write(&pub_file, &line).expect("write .pub");
        let fp_cert = env.ssh_keygen(&["-l", "-f", &pub_file]);
        fp_cert.assert_success("ssh-keygen -l on the derived line");
        let fp_key = env.ssh_keygen(&["-l", "-f", &format!("{key}.pub")]);
        fp_key.assert_success("ssh-keygen -l on the key");
        assert_eq!(
            fp_cert.stdout.split_whitespace().nth(1),
            fp_key.stdout.split_whitespace().nth(1)
        );
    }
    // ssh-pubkey reads files only: it needs no store, so nothing was recorded.
    assert!(env.all_certs().is_empty());
}

#[test]
fn imported_certificate_is_tracked_not_renewed() {
    let env = Env::no_passphrase();
    let key = ssh_keygen_pem(&env, "id_rsa");
    openssl_cert(&env, &key);

    let view = env.kw_json(&["cert", "import", "x.cer", "--json"]);
    let id = text(&view, "id");
    assert_eq!(view["origin"].as_str(), Some("imported"), "{view}");
    assert_eq!(view["key"], serde_json::Value::Null, "{view}");
    assert_eq!(view["subject"].as_str(), Some("CN=x"), "{view}");
    assert_eq!(text(&view, "sha1_thumbprint"), env.ssl_thumbprint("x.pem"));
    let end = env.x509("x.pem", &["-noout", "-enddate", "-dateopt", "iso_8601"]);
    assert_eq!(
        text(&view, "expires").replace('T', " "),
        crate::env::field(&end, "notAfter=")
    );
    let days = view["days_left"].as_i64().expect("days_left");
    assert!(days == 364 || days == 365, "{view}");
    // The stored certificate is the file's, byte for byte (DER in, PEM out).
    assert_eq!(
        text(&view, "pem"),
        fs::read_to_string(env.path("x.pem")).expect("read x.pem")
    );

    let before = env.snapshot();
    let list = env.all_certs();
    assert_eq!(list.len(), 1, "{list:#?}");
    let listed = by_id(&list, &id);
    assert_eq!(listed["origin"].as_str(), Some("imported"));
    assert_eq!(listed["state"].as_str(), Some("valid"));
    assert_eq!(listed["not_after"], view["not_after"]);
    let table = env.kw_ok(&["cert", "list"]);
    assert!(
        table.contains(&id[..12]) && table.contains("CN=x"),
        "{table}"
    );

    // Renewal needs the key, which keyward does not have: a clear error, nothing stored.
    let out = env.kw(&["cert", "renew", &id]);
    assert_clean_error(&out, "cert renew of an imported certificate");
    assert!(
        out.stderr.contains("imported") && out.stderr.contains("renew"),
        "say why: {out:#?}"
    );
    assert_eq!(env.snapshot(), before, "a refused renewal changes nothing");

    // Monitoring: exit 3 with the certificate listed inside the window, 0 outside it.
    let out = env.kw(&["cert", "check", "--within", "400d"]);
    assert_eq!(out.status.code(), Some(3), "{out:#?}");
    assert!(out.stdout.contains(&id[..12]), "{out:#?}");
    let out = env.kw(&["cert", "check", "--within", "400d", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:#?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("check --json");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["id"].as_str(), Some(id.as_str()));
    let out = env.kw(&["cert", "check", "--within", "1d"]);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    let out = env.kw(&["cert", "check", "--within", "1d", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert_eq!(out.stdout.trim(), "[]", "{out:#?}");
    // The default window is 30 days.
    assert_eq!(env.kw(&["cert", "check"]).status.code(), Some(0));
}
