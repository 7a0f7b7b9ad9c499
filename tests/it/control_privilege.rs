//! The control socket as a same-user attacker sees it: a raw client (this test process) writes
//! length-prefixed JSON envelopes to `control.sock` by hand. Exporting a private key, clearing or
//! loosening a policy, setting a renewal hook or export target, deleting or renaming a key and
//! changing the passphrase are refused without the store passphrase and allowed with it; wrong
//! guesses are slowed; tightening needs nothing; every such request is audited with the caller's
//! pid and executable. A store without a passphrase allows them (audited) and `doctor` says so.
//! The legitimate user, through the CLI with the passphrase, loses nothing.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env::{Env, STORE_PASS};
use crate::policy_hosts::audit_records;
use crate::util::{cli_bin, run, write_script};

/// Sends `request` on the control socket exactly as the CLI frames it; returns the `response`.
pub fn raw(env: &Env, request: Value) -> Value {
    let path = env.root().join("run/keyward/control.sock");
    let mut stream = UnixStream::connect(&path).expect("connect control.sock");
    let mut envelope = serde_json::Map::new();
    envelope.insert("version".into(), 1.into());
    envelope.insert("request".into(), request);
    let body = serde_json::to_vec(&envelope).expect("json");
    let len = u32::try_from(body.len()).expect("small frame");
    stream.write_all(&len.to_be_bytes()).expect("write length");
    stream.write_all(&body).expect("write body");
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("read length");
    let mut answer = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut answer).expect("read body");
    let envelope: Value = serde_json::from_slice(&answer).expect("answer is JSON");
    envelope["response"].clone()
}

/// `request` wrapped with the store passphrase `passphrase`.
fn authorized(passphrase: &str, request: Value) -> Value {
    let mut wrapped = serde_json::Map::new();
    wrapped.insert("op".into(), "authorized".into());
    wrapped.insert("passphrase".into(), passphrase.into());
    wrapped.insert("request".into(), request);
    Value::Object(wrapped)
}

#[track_caller]
fn assert_refused(answer: &Value, kind: &str) {
    assert_eq!(answer["result"], "error", "{answer}");
    assert_eq!(answer["kind"], kind, "{answer}");
    assert!(
        !answer.to_string().contains("PRIVATE KEY"),
        "a refusal reveals no key: {answer}"
    );
}

fn our_exe() -> String {
    fs::canonicalize(std::env::current_exe().expect("current exe"))
        .expect("canonical exe")
        .display()
        .to_string()
}

/// The audit records of control operation `op`, oldest first.
fn control_records(env: &Env, op: &str) -> Vec<Value> {
    audit_records(env, None)
        .into_iter()
        .filter(|r| r["action"] == format!("control.{op}"))
        .collect()
}

/// Asserts the records of `op` are, in order, `outcomes`, each naming this process as caller.
#[track_caller]
fn assert_audited(env: &Env, op: &str, outcomes: &[&str]) -> Vec<Value> {
    let records = control_records(env, op);
    let got: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, outcomes, "audit of control.{op}: {records:#?}");
    let pid = std::process::id();
    for r in &records {
        let caller = &r["detail"]["caller"];
        assert_eq!(caller["pid"], pid, "caller pid of {r}");
        assert_eq!(caller["exe"], our_exe(), "caller exe of {r}");
        assert!(
            caller["parents"].as_array().is_some_and(|p| p.len() >= 2),
            "parent chain of {r}"
        );
        assert!(
            !r.to_string().contains(STORE_PASS),
            "no passphrase in the audit trail: {r}"
        );
    }
    records
}

#[test]
#[allow(clippy::too_many_lines)] // one attack after another, then the audit of each
fn raw_client_needs_the_passphrase_for_privileged_requests() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let _agent = env.start_agent(&["--passphrase-file", &pass]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "work"]);
    env.kw_ok(&["key", "generate", "-t", "rsa", "-n", "web"]);
    let cert = env.create("web", 90, &[]);
    let cert_id = cert["id"].as_str().expect("cert id").to_owned();

    // Tightening needs nothing.
    let strict = json!({ "executables": ["/usr/bin/ssh"], "deny_forwarding": true });
    let answer = raw(
        &env,
        json!({ "op": "policy_set", "key": "work", "policy": strict }),
    );
    assert_eq!(answer["result"], "policy", "{answer}");
    let stricter =
        json!({ "executables": ["/usr/bin/ssh"], "deny_forwarding": true, "confirm": true });
    let answer = raw(
        &env,
        json!({ "op": "policy_set", "key": "work", "policy": stricter }),
    );
    assert_eq!(answer["result"], "policy", "{answer}");

    // Everything privileged is refused without the passphrase, and changes nothing.
    assert_refused(
        &raw(&env, json!({ "op": "key_private", "key": "work" })),
        "passphrase_required",
    );
    assert_refused(
        &raw(
            &env,
            json!({ "op": "policy_set", "key": "work", "policy": null }),
        ),
        "passphrase_required",
    );
    let loosened = raw(
        &env,
        json!({ "op": "policy_set", "key": "work", "policy": { "confirm": true } }),
    );
    assert_refused(&loosened, "passphrase_required");
    let message = loosened["message"].as_str().unwrap_or("");
    assert!(
        message.contains("deny_forwarding") && message.contains("executables"),
        "the refusal names what would be loosened: {message}"
    );
    assert_refused(
        &raw(
            &env,
            json!({ "op": "key_rename", "key": "work", "new_name": "stolen" }),
        ),
        "passphrase_required",
    );
    assert_refused(
        &raw(&env, json!({ "op": "key_delete", "key": "work" })),
        "passphrase_required",
    );
    let hook =
        json!({ "op": "cert_policy", "cert": cert_id, "policy": { "hook": "touch /tmp/pwned" } });
    assert_refused(&raw(&env, hook.clone()), "passphrase_required");
    let target = env.path("stolen.pem");
    let export = json!({ "op": "cert_policy", "cert": cert_id,
        "policy": { "exports": [{ "path": target, "format": "pem" }] } });
    assert_refused(&raw(&env, export.clone()), "passphrase_required");
    assert_refused(
        &raw(
            &env,
            json!({ "op": "change_passphrase", "old": "guess", "new": "mine" }),
        ),
        "wrong_passphrase",
    );
    // A renewal-policy change without a hook or a new target needs nothing.
    let answer = raw(
        &env,
        json!({ "op": "cert_policy", "cert": cert_id, "policy": { "renew_before": 86400 } }),
    );
    assert_eq!(answer["result"], "cert", "{answer}");

    assert_eq!(env.key_names(), ["web", "work"]);
    let policy = env.kw_json(&["policy", "show", "work", "--json"]);
    assert_eq!(policy["executables"], json!(["/usr/bin/ssh"]), "{policy}");
    assert_eq!(policy["deny_forwarding"], true, "{policy}");
    assert_eq!(policy["confirm"], true, "{policy}");

    // Wrong guesses wait longer and longer (100 ms more each, as failed unlocks).
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        assert_refused(
            &raw(
                &env,
                authorized("wrong guess", json!({ "op": "key_private", "key": "web" })),
            ),
            "wrong_passphrase",
        );
        waits.push(started.elapsed());
    }
    for (n, wait) in waits.iter().enumerate() {
        let floor = Duration::from_millis(100 * (n as u64 + 1));
        assert!(*wait >= floor, "guess {} answered after {wait:?}", n + 1);
    }

    // With the passphrase, each is allowed.
    let private = raw(
        &env,
        authorized(STORE_PASS, json!({ "op": "key_private", "key": "web" })),
    );
    assert_eq!(private["result"], "private", "{private}");
    let file = env.path("web.key");
    fs::write(&file, private["openssh"].as_str().expect("key text")).expect("write key");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    let derived = env.ssh_keygen(&["-y", "-f", &file]);
    derived.assert_success("ssh-keygen -y of the exported key");
    let public = env.kw_ok(&["key", "export", "web"]);
    assert_eq!(
        crate::env::key_part(&derived.stdout),
        crate::env::key_part(&public)
    );
    let answer = raw(&env, authorized(STORE_PASS, hook));
    assert_eq!(answer["result"], "cert", "{answer}");
    assert_eq!(answer["renewal"]["hook"], "touch /tmp/pwned", "{answer}");
    let answer = raw(
        &env,
        authorized(
            STORE_PASS,
            json!({ "op": "policy_set", "key": "work", "policy": null }),
        ),
    );
    assert_eq!(answer["result"], "policy", "{answer}");
    let answer = raw(
        &env,
        authorized(
            STORE_PASS,
            json!({ "op": "key_rename", "key": "work", "new_name": "work2" }),
        ),
    );
    assert_eq!(answer["result"], "key", "{answer}");
    let answer = raw(
        &env,
        authorized(STORE_PASS, json!({ "op": "key_delete", "key": "work2" })),
    );
    assert_eq!(answer["result"], "key", "{answer}");
    assert_eq!(env.key_names(), ["web"]);

    // Each attempt is in the audit trail, with who made it.
    let exports = assert_audited(
        &env,
        "key_private",
        &["refused", "refused", "refused", "refused", "allowed"],
    );
    assert_eq!(exports[4]["detail"]["passphrase"], "checked");
    let sets = assert_audited(
        &env,
        "policy_set",
        &["allowed", "allowed", "refused", "refused", "allowed"],
    );
    assert_eq!(sets[0]["detail"]["passphrase"], "not needed");
    assert_eq!(sets[0]["detail"]["key"], "work", "{:?}", sets[0]);
    assert_audited(&env, "key_rename", &["refused", "allowed"]);
    assert_audited(&env, "key_delete", &["refused", "allowed"]);
    assert_audited(&env, "change_passphrase", &["refused"]);
    assert_audited(
        &env,
        "cert_policy",
        &["refused", "refused", "allowed", "allowed"],
    );
    // `keyward audit` shows who was refused, and why.
    let text = env.kw_ok(&["audit"]);
    assert!(
        text.lines().any(|l| l.contains("refused")
            && l.contains("control.key_private")
            && l.contains(&format!("by {}", our_exe()))
            && l.contains("needs the store passphrase")),
        "{text}"
    );
}

#[test]
fn the_cli_with_the_passphrase_loses_nothing() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let _agent = env.start_agent(&["--passphrase-file", &pass]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "mine"]);
    env.kw_ok(&["policy", "set", "mine", "--deny-forwarding"]);
    let out = env.path("mine.key");

    // Without a terminal or a passphrase file, the CLI cannot authorise: a clear refusal.
    let refused = env.kw(&["key", "export", "mine", "--private", "--out", &out]);
    refused.assert_failure("private export without the passphrase");
    assert!(
        refused.stderr.contains("passphrase"),
        "says what is missing: {refused:#?}"
    );
    assert!(!std::path::Path::new(&out).exists());

    let ok = |args: &[&str]| {
        run(env
            .kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &pass)
            .args(args))
        .assert_success(&format!("keyward {}", args.join(" ")))
        .stdout
        .clone()
    };
    ok(&["key", "export", "mine", "--private", "--out", &out]);
    assert_eq!(crate::util::mode_of(std::path::Path::new(&out)), 0o600);
    ok(&["policy", "clear", "mine"]);
    ok(&["key", "rename", "mine", "ours"]);
    ok(&["key", "delete", "ours", "--yes"]);
    assert!(env.key_names().is_empty());
    // The CLI is the caller these records name.
    let cli = fs::canonicalize(cli_bin()).expect("cli path");
    for op in ["key_private", "policy_set", "key_rename", "key_delete"] {
        let last = control_records(&env, op).pop().expect("audited");
        assert_eq!(last["outcome"], "allowed", "{last}");
        assert_eq!(
            last["detail"]["caller"]["exe"],
            cli.display().to_string(),
            "{last}"
        );
    }
}

#[test]
fn without_a_store_passphrase_privileged_requests_are_allowed_audited_and_flagged() {
    let env = Env::no_passphrase();
    let _agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "open"]);
    env.kw_ok(&["policy", "set", "open", "--confirm", "--deny-forwarding"]);
    let answer = raw(
        &env,
        json!({ "op": "policy_set", "key": "open", "policy": null }),
    );
    assert_eq!(answer["result"], "policy", "{answer}");
    let answer = raw(&env, json!({ "op": "key_private", "key": "open" }));
    assert_eq!(answer["result"], "private", "{answer}");
    let records = assert_audited(&env, "key_private", &["allowed"]);
    assert_eq!(records[0]["detail"]["passphrase"], "none set");
    let records = control_records(&env, "policy_set");
    assert_eq!(
        records.last().expect("audited")["detail"]["passphrase"],
        "none set"
    );

    let doctor = run(env.kw_command().arg("doctor"));
    assert!(
        doctor.stdout.contains("warn  passphrase")
            && doctor
                .stdout
                .contains("file permissions are the only guard"),
        "{doctor:#?}"
    );
}

#[test]
fn exporting_a_confirm_key_asks_first() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let record = env.root().join("askpass.record");
    let answer = env.root().join("askpass.answer");
    fs::write(&answer, "yes").expect("answer");
    let askpass = write_script(
        env.root(),
        "askpass",
        &format!(
            "printf '%s|%s\\n' \"$SSH_ASKPASS_PROMPT\" \"$1\" >> '{}'\n[ \"$(cat '{}')\" = yes ]",
            record.display(),
            answer.display()
        ),
    );
    let askpass = askpass.to_str().expect("utf-8").to_owned();
    let _agent = env.start_agent(&["--passphrase-file", &pass, "--askpass", &askpass]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "guarded"]);
    env.kw_ok(&["policy", "set", "guarded", "--confirm"]);
    let export = |file: &str| {
        run(env
            .kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &pass)
            .args(["key", "export", "guarded", "--private", "--out", file]))
    };
    let first = env.path("guarded.key");
    export(&first).assert_success("confirmed export");
    let asked = fs::read_to_string(&record).expect("askpass was run");
    let cli = fs::canonicalize(cli_bin()).expect("cli path");
    assert!(
        asked.starts_with("confirm|Allow EXPORT of the private key guarded?")
            && asked.contains(&cli.display().to_string()),
        "the prompt names the key and the full path of who asks: {asked}"
    );

    fs::write(&answer, "no").expect("answer");
    let second = env.path("declined.key");
    let out = export(&second);
    out.assert_failure("declined export");
    assert!(out.stderr.contains("not confirmed"), "{out:#?}");
    assert!(!std::path::Path::new(&second).exists());
    let asked = fs::read_to_string(&record).expect("record");
    assert_eq!(asked.matches("confirm|Allow EXPORT").count(), 2, "{asked}");
    let records = control_records(&env, "key_private");
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    // Each CLI export first asks without the passphrase (refused), then with it.
    assert_eq!(outcomes, ["refused", "allowed", "refused", "refused"]);
    assert!(
        records[3]["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not confirmed")),
        "{:?}",
        records[3]
    );
}

#[test]
#[allow(clippy::too_many_lines)] // every operation once, then its record
fn every_request_that_changes_state_or_reveals_a_secret_is_audited_with_its_caller() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let _agent = env.start_agent(&["--passphrase-file", &pass]);
    let kw = |args: &[&str]| {
        run(env
            .kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &pass)
            .args(args))
        .assert_success(&format!("keyward {}", args.join(" ")))
        .stdout
        .clone()
    };
    kw(&["key", "generate", "-t", "rsa", "-n", "a"]);
    let imported = env.path("imported");
    env.ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &imported])
        .assert_success("ssh-keygen");
    kw(&["key", "import", &imported, "-n", "b"]);
    kw(&["key", "comment", "b", "new comment"]);
    kw(&["key", "load", "b"]);
    kw(&[
        "key",
        "export",
        "b",
        "--private",
        "--out",
        &env.path("b.key"),
    ]);
    kw(&["policy", "set", "b", "--confirm"]);
    kw(&["policy", "clear", "b"]);
    let cert = env.create("a", 90, &[]);
    let id = cert["id"].as_str().expect("id").to_owned();
    kw(&["cert", "renew", &id]);
    kw(&["cert", "policy", &id, "--days", "120"]);
    let pem = env.path("foreign.pem");
    env.openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &env.path("foreign.key"),
        "-out",
        &pem,
        "-days",
        "30",
        "-subj",
        "/CN=foreign",
    ]);
    kw(&["cert", "import", &pem]);
    kw(&["seal"]);
    kw(&["unlock", "--passphrase-file", &pass]);
    kw(&["key", "rename", "a", "c"]);
    let new = env.pass_file("a brand new passphrase");
    kw(&[
        "passwd",
        "--old-passphrase-file",
        &pass,
        "--new-passphrase-file",
        &new,
    ]);
    let cli = fs::canonicalize(cli_bin())
        .expect("cli")
        .display()
        .to_string();
    let records = audit_records(&env, None);
    for op in [
        "key_generate",
        "key_import",
        "key_comment",
        "key_load",
        "key_private",
        "policy_set",
        "cert_create",
        "cert_renew",
        "cert_policy",
        "cert_import",
        "seal",
        "unlock",
        "change_passphrase",
    ] {
        // The last: the agent's own unseal at start-up is recorded too, as the agent's.
        let allowed = records
            .iter()
            .rfind(|r| r["action"] == format!("control.{op}") && r["outcome"] == "allowed")
            .unwrap_or_else(|| panic!("no allowed control.{op} record: {records:#?}"));
        let caller = &allowed["detail"]["caller"];
        assert_eq!(caller["exe"], cli, "{allowed}");
        assert!(caller["pid"].as_u64().is_some_and(|p| p > 1), "{allowed}");
        assert_eq!(caller["uid"], nix::unistd::getuid().as_raw(), "{allowed}");
        let parents = caller["parents"].as_array().expect("parents");
        assert_eq!(parents[0]["exe"], cli, "{allowed}");
        assert_eq!(
            parents[1]["exe"],
            our_exe(),
            "the test process ran the CLI: {allowed}"
        );
    }
    // The new passphrase was checked (the old one no longer authorises).
    let renamed = raw(
        &env,
        authorized(
            STORE_PASS,
            json!({ "op": "key_rename", "key": "c", "new_name": "d" }),
        ),
    );
    assert_refused(&renamed, "wrong_passphrase");
    let text = records.iter().map(Value::to_string).collect::<String>();
    assert!(!text.contains(STORE_PASS) && !text.contains("PRIVATE KEY"));
}

#[test]
fn offline_the_cli_asks_once_and_privileged_requests_work() {
    let env = Env::with_passphrase();
    let pass = env.pass_file(STORE_PASS);
    let kw = |args: &[&str]| {
        run(env
            .kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", &pass)
            .args(args))
    };
    kw(&["key", "generate", "-t", "ed25519", "-n", "off"]).assert_success("generate offline");
    kw(&["policy", "set", "off", "--deny-forwarding"]).assert_success("tighten offline");
    kw(&["policy", "clear", "off"]).assert_success("clear offline");
    kw(&[
        "key",
        "export",
        "off",
        "--private",
        "--out",
        &env.path("off.key"),
    ])
    .assert_success("private export offline");
    let wrong = env.pass_file("nope");
    let out = run(env
        .kw_command()
        .env("KEYWARD_PASSPHRASE_FILE", &wrong)
        .args(["key", "delete", "off", "--yes"]));
    out.assert_failure("delete offline with a wrong passphrase");
    assert_eq!(env.key_names(), ["off"]);
}
