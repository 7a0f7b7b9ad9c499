//! Bad input to `keyward key ...` gets a one-line `keyward: ...` error and a non-zero exit, and
//! changes nothing in the store — both offline (the CLI opens the store) and through the daemon.

use std::fs;

use crate::env::{Env, assert_clean_error, assert_refused};
use crate::util::{KeyType, keygen};

/// What the store holds, as `keyward key list --json` prints it.
fn snapshot(env: &Env) -> String {
    env.kw_ok(&["key", "list", "--json"])
}

/// Runs `keyward ARGS`, expects a clean error mentioning `hint` (case-insensitive), and checks
/// that the store is unchanged.
#[track_caller]
fn refused(env: &Env, args: &[&str], hint: &str) {
    assert_refused(env, args, hint, snapshot);
}

fn bad_input_cases(env: &Env) {
    env.kw_ok(&[
        "key", "generate", "-t", "ed25519", "-n", "have", "-C", "have@x",
    ]);
    bad_key_files(env);
    unknown_names_and_existing_paths(env);
    duplicates_and_unsupported(env);
}

/// Corrupt, truncated, missing and wrongly-decrypted key files.
fn bad_key_files(env: &Env) {
    let garbage = env.path("garbage");
    fs::write(&garbage, "this is not a key\n").expect("write garbage");
    refused(env, &["key", "import", &garbage, "-n", "g"], "garbage");
    let real = keygen(env.root(), "real", KeyType::Ed25519, "");
    let text = fs::read_to_string(&real.private).expect("read key");
    let truncated = env.path("truncated");
    fs::write(&truncated, &text[..text.len() / 2]).expect("write truncated");
    refused(env, &["key", "import", &truncated, "-n", "t"], "truncated");
    let flipped = env.path("flipped");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[3] = lines[3].chars().rev().collect();
    fs::write(&flipped, lines.join("\n") + "\n").expect("write flipped");
    refused(env, &["key", "import", &flipped, "-n", "f"], "flipped");
    refused(
        env,
        &["key", "import", &env.path("missing"), "-n", "m"],
        "missing",
    );

    // A wrong passphrase for an encrypted key file.
    let enc = keygen(env.root(), "enc", KeyType::Ed25519, "right pass");
    let wrong = env.pass_file("wrong pass");
    let enc_file = enc.private.to_str().unwrap();
    refused(
        env,
        &[
            "key",
            "import",
            enc_file,
            "-n",
            "e",
            "--passphrase-file",
            &wrong,
        ],
        "passphrase",
    );
}

/// Unknown key names, and export paths that already exist.
fn unknown_names_and_existing_paths(env: &Env) {
    for cmd in [
        vec!["key", "show", "nope"],
        vec!["key", "export", "nope"],
        vec!["key", "fingerprint", "nope"],
        vec!["key", "delete", "nope", "--yes"],
        vec!["key", "rename", "nope", "other"],
        vec!["key", "comment", "nope", "c"],
    ] {
        refused(env, &cmd, "nope");
    }
    let out_file = env.path("nope_id");
    refused(
        env,
        &["key", "export", "nope", "--private", "--out", &out_file],
        "nope",
    );
    assert!(!env.root().join("nope_id").exists());

    // An existing export path without --force: the file is left alone.
    let existing = env.path("existing");
    fs::write(&existing, "keep me\n").expect("write existing");
    refused(
        env,
        &["key", "export", "have", "--out", &existing],
        "--force",
    );
    refused(
        env,
        &["key", "export", "have", "--private", "--out", &existing],
        "--force",
    );
    assert_eq!(fs::read_to_string(&existing).unwrap(), "keep me\n");
    assert!(!env.root().join("existing.pub").exists());
    // A private key never goes to stdout.
    refused(env, &["key", "export", "have", "--private"], "--out");
}

/// Duplicate names, and unsupported key types and sizes.
fn duplicates_and_unsupported(env: &Env) {
    refused(
        env,
        &["key", "generate", "-t", "ed25519", "-n", "have"],
        "have",
    );
    let other = keygen(env.root(), "other", KeyType::Ed25519, "");
    let other_file = other.private.to_str().unwrap();
    refused(env, &["key", "import", other_file, "-n", "have"], "have");
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "second"]);
    refused(env, &["key", "rename", "second", "have"], "have");

    // Unsupported sizes and types.
    refused(
        env,
        &["key", "generate", "--bits", "1024", "-n", "small"],
        "1024",
    );
    refused(
        env,
        &["key", "generate", "-b", "8192", "-n", "huge"],
        "8192",
    );
    refused(env, &["key", "generate", "-t", "dsa", "-n", "dsa"], "dsa");
    refused(
        env,
        &[
            "key", "generate", "-t", "ed25519", "-b", "2048", "-n", "edbits",
        ],
        "bits",
    );
    let dsa = env.path("id_dsa_like");
    fs::write(
        &dsa,
        "-----BEGIN DSA PRIVATE KEY-----\nMIIBuwIBAAKBgQD\n-----END DSA PRIVATE KEY-----\n",
    )
    .expect("write dsa");
    refused(env, &["key", "import", &dsa, "-n", "dsa"], "dsa");
}

#[test]
fn bad_input_offline() {
    let env = Env::no_passphrase();
    bad_input_cases(&env);
    // `key load` needs a daemon and says so.
    let out = env.kw(&["key", "load", "have"]);
    assert_clean_error(&out, "key load without a daemon");
}

#[test]
fn bad_input_through_daemon() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    bad_input_cases(&env);
    refused(&env, &["key", "load", "nope"], "nope");
    // Only the two good keys are served.
    let listed = agent.ssh_add(&["-l"]);
    assert_eq!(listed.stdout.lines().count(), 2, "{listed:#?}");
}

/// A wrong store passphrase (offline, via `KEYWARD_PASSPHRASE_FILE`) is refused cleanly.
#[test]
fn wrong_store_passphrase_offline() {
    let env = Env::with_passphrase();
    let wrong = env.pass_file("not it");
    let out = crate::util::run(
        env.kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &wrong)
            .args(["key", "generate", "-t", "ed25519", "-n", "x"]),
    );
    assert_clean_error(&out, "generate with a wrong store passphrase");
    assert!(out.stderr.contains("wrong passphrase"), "{out:#?}");
    assert!(env.key_names().is_empty());
}
