//! The seed workflow without a daemon: `keyward key generate` → `key export` (public line, private
//! key files) → the files re-read by `ssh-keygen`, whose fingerprints equal `keyward key
//! fingerprint` exactly; `--force` and passphrase-encrypted exports.

use std::fs;

use crate::env::{Env, assert_clean_error, key_part};
use crate::util::mode_of;

/// Generates `name` with `gen_args` offline, exports it every way and checks each file with
/// `ssh-keygen`. Returns the exported private key path.
fn seed_case(gen_args: &[&str], name: &str, type_word: &str, bits: u64) -> (Env, String) {
    let env = Env::no_passphrase();
    let mut args = vec!["key", "generate", "-C", "me@example", "-n", name];
    args.extend_from_slice(gen_args);
    env.kw_ok(&args);

    let view = env.show(name);
    assert_eq!(view["bits"].as_u64(), Some(bits), "{view}");
    assert_eq!(
        view["loaded"],
        serde_json::Value::Null,
        "no agent runs: {view}"
    );

    // The public line, as pasted into a portal.
    let public = env.kw_ok(&["key", "export", name]);
    let line = public.trim_end();
    assert_eq!(public, format!("{line}\n"), "exactly one line");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 3, "{line}");
    assert_eq!(fields[0], type_word, "{line}");
    assert!(fields[1].starts_with("AAAA"), "{line}");
    assert_eq!(fields[2], "me@example", "{line}");
    assert_eq!(view["public"].as_str(), Some(line));

    // The private key files: FILE 0600 and FILE.pub 0644.
    fs::create_dir(env.root().join("out")).expect("mkdir out");
    let id = env.path(&format!("out/id_{name}"));
    env.kw_ok(&["key", "export", name, "--private", "--out", &id]);
    let id_pub = format!("{id}.pub");
    assert_eq!(mode_of(id.as_ref()), 0o600, "private key mode");
    assert_eq!(mode_of(id_pub.as_ref()), 0o644, "public key mode");
    assert_eq!(fs::read_to_string(&id_pub).expect("read .pub"), public);

    let derived = env.ssh_keygen(&["-y", "-f", &id]);
    derived.assert_success("ssh-keygen -y on the exported private key");
    assert_eq!(key_part(&derived.stdout), key_part(line));

    // Fingerprints, exactly as ssh-keygen prints them.
    let sha = env.ssh_keygen(&["-l", "-f", &id_pub]);
    sha.assert_success("ssh-keygen -l");
    assert_eq!(env.kw_ok(&["key", "fingerprint", name]), sha.stdout);
    let md5 = env.ssh_keygen(&["-E", "md5", "-l", "-f", &id_pub]);
    md5.assert_success("ssh-keygen -E md5 -l");
    assert_eq!(
        env.kw_ok(&["key", "fingerprint", name, "-E", "md5"]),
        md5.stdout
    );
    assert_eq!(
        env.kw_ok(&["key", "fingerprint", name, "--hash", "md5"]),
        md5.stdout
    );
    let sha_field = sha.stdout.split_whitespace().nth(1).expect("fingerprint");
    assert_eq!(view["sha256"].as_str(), Some(sha_field));
    (env, id)
}

/// Export again: refused without `--force` (files unchanged), accepted with it.
fn check_force(env: &Env, name: &str, id: &str) {
    let id_pub = format!("{id}.pub");
    fs::write(id, "sentinel private\n").expect("overwrite id");
    fs::write(&id_pub, "sentinel public\n").expect("overwrite id.pub");
    let out = env.kw(&["key", "export", name, "--private", "--out", id]);
    assert_clean_error(&out, "export over an existing file without --force");
    assert!(out.stderr.contains("--force"), "{out:#?}");
    assert_eq!(fs::read_to_string(id).unwrap(), "sentinel private\n");
    assert_eq!(fs::read_to_string(&id_pub).unwrap(), "sentinel public\n");

    // Only the .pub in the way is enough to refuse.
    fs::remove_file(id).expect("rm id");
    let out = env.kw(&["key", "export", name, "--private", "--out", id]);
    assert_clean_error(&out, "export over an existing .pub without --force");
    assert!(!std::path::Path::new(id).exists(), "nothing written");
    fs::write(id, "sentinel private\n").expect("rewrite id");

    env.kw_ok(&["key", "export", name, "--private", "--out", id, "--force"]);
    assert_eq!(mode_of(id.as_ref()), 0o600);
    assert_eq!(mode_of(id_pub.as_ref()), 0o644);
    env.ssh_keygen(&["-y", "-f", id])
        .assert_success("ssh-keygen -y after --force");
    assert_eq!(
        fs::read_to_string(&id_pub).unwrap(),
        env.kw_ok(&["key", "export", name])
    );
    // Atomic writes leave no temporary files behind, refused or not.
    let dir = std::path::Path::new(id).parent().expect("out dir");
    let mut left: Vec<String> = fs::read_dir(dir)
        .expect("read out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [format!("id_{name}"), format!("id_{name}.pub")]);
}

/// The default key: RSA 2048, as `ssh-keygen -t rsa -b 2048 -C me@example`.
#[test]
fn seed_workflow_rsa_default() {
    let (env, id) = seed_case(&[], "work", "ssh-rsa", 2048);
    let view = env.show("work");
    assert_eq!(view["type"].as_str(), Some("RSA"), "{view}");
    check_force(&env, "work", &id);
}

#[test]
fn seed_workflow_rsa_3072() {
    seed_case(&["-t", "rsa", "-b", "3072"], "r3072", "ssh-rsa", 3072);
}

/// The only 4096-bit key of the suite (slow to generate).
#[test]
fn seed_workflow_rsa_4096() {
    seed_case(&["-t", "rsa", "--bits", "4096"], "r4096", "ssh-rsa", 4096);
}

#[test]
fn seed_workflow_ed25519() {
    let (env, id) = seed_case(&["-t", "ed25519"], "ed", "ssh-ed25519", 256);
    check_force(&env, "ed", &id);
}

#[test]
fn seed_workflow_ecdsa() {
    seed_case(&["--type", "ecdsa"], "ec", "ecdsa-sha2-nistp256", 256);
}

/// `--private --passphrase-file P` writes a key `ssh-keygen` opens with that passphrase only.
#[test]
fn export_encrypted_private_key() {
    let env = Env::no_passphrase();
    env.kw_ok(&[
        "key", "generate", "-t", "ed25519", "-n", "enc", "-C", "enc@x",
    ]);
    let pass = env.pass_file("export pass phrase");
    let id = env.path("id_enc");
    env.kw_ok(&[
        "key",
        "export",
        "enc",
        "--private",
        "--passphrase-file",
        &pass,
        "--out",
        &id,
    ]);
    assert_eq!(mode_of(id.as_ref()), 0o600);
    let text = fs::read_to_string(&id).expect("read key");
    let parsed = ssh_key::PrivateKey::from_openssh(&text).expect("OpenSSH private key");
    assert!(parsed.is_encrypted(), "the exported key must be encrypted");

    let public = env.kw_ok(&["key", "export", "enc"]);
    let good = env.ssh_keygen(&["-y", "-P", "export pass phrase", "-f", &id]);
    good.assert_success("ssh-keygen -y with the right passphrase");
    assert_eq!(key_part(&good.stdout), key_part(&public));
    env.ssh_keygen(&["-y", "-P", "wrong", "-f", &id])
        .assert_failure("ssh-keygen -y with a wrong passphrase");
    env.ssh_keygen(&["-y", "-P", "", "-f", &id])
        .assert_failure("ssh-keygen -y with no passphrase");

    // An RSA key too (the default type), as most portals still want one.
    env.kw_ok(&["key", "generate", "-n", "rsaenc", "-C", "r@x"]);
    let id = env.path("id_rsaenc");
    env.kw_ok(&[
        "key",
        "export",
        "rsaenc",
        "--private",
        "--passphrase-file",
        &pass,
        "--out",
        &id,
    ]);
    let good = env.ssh_keygen(&["-y", "-P", "export pass phrase", "-f", &id]);
    good.assert_success("ssh-keygen -y on the encrypted RSA export");
    assert_eq!(
        key_part(&good.stdout),
        key_part(&env.kw_ok(&["key", "export", "rsaenc"]))
    );
}

/// The public line can go to a file too (0644), with the same `--force` rule.
#[test]
fn export_public_to_file() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "p"]);
    let out = env.path("p.pub");
    assert_eq!(env.kw_ok(&["key", "export", "p", "--out", &out]), "");
    assert_eq!(mode_of(out.as_ref()), 0o644);
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        env.kw_ok(&["key", "export", "p"])
    );
    let again = env.kw(&["key", "export", "p", "--out", &out]);
    assert_clean_error(&again, "public export over an existing file");
    env.kw_ok(&["key", "export", "p", "--out", &out, "--force"]);
}

/// Offline, on a passphrase-protected store, the private key can be exported when the store
/// passphrase is given in `KEYWARD_PASSPHRASE_FILE` (as `key generate` accepts offline).
#[test]
fn offline_private_export_from_passphrase_store() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(crate::env::STORE_PASS);
    let mut gen_cmd = env.kw_command();
    gen_cmd
        .env("KEYWARD_PASSPHRASE_FILE", &pass)
        .args(["key", "generate", "-t", "ed25519", "-n", "sealed"]);
    crate::util::run(&mut gen_cmd).assert_success("offline generate with KEYWARD_PASSPHRASE_FILE");
    let id = env.path("id_sealed");
    let mut export = env.kw_command();
    export.env("KEYWARD_PASSPHRASE_FILE", &pass).args([
        "key",
        "export",
        "sealed",
        "--private",
        "--out",
        &id,
    ]);
    crate::util::run(&mut export)
        .assert_success("offline private export with KEYWARD_PASSPHRASE_FILE");
    env.ssh_keygen(&["-y", "-f", &id])
        .assert_success("ssh-keygen -y");
}
