//! The audit trail through the CLI: every signature decision is listed by `keyward audit --json`
//! (key, action, outcome, executable, purpose, reason), `--key` and `--since` filter it, and
//! `keyward audit verify` finds it intact; then, with the daemon stopped, a record edited in the
//! store's audit journal (re-encoded with a valid record checksum and frame, so only the hash
//! chain can tell) and a record deleted from the middle are both caught and named. Then the
//! attacks a same-user process can make on the files, each on a fresh copy of the store: a
//! refusal dropped and the rest re-chained with SHA-256 as keyward once chained them, the tail
//! cut, `HEAD` rewritten, the newest segment deleted, an older copy of the trail put back, the
//! anchor deleted: `keyward audit verify` exits 1 and says what it found.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::env::{Env, stop};
use crate::policy_hosts::{assert_refuses, assert_signs, audit_records, exe_path, stored_key};

/// The store's record envelope: `version ‖ JSON body ‖ SHA-256(version ‖ body)[..8]`.
fn envelope(version: u8, body: &[u8]) -> Vec<u8> {
    let sum = Sha256::new()
        .chain_update([version])
        .chain_update(body)
        .finalize();
    let mut out = vec![version];
    out.extend_from_slice(body);
    out.extend_from_slice(&sum[..8]);
    out
}

/// Rewrites the audit journal of the (stopped daemon's) store: every frame
/// (`len: u32 BE ‖ seq: u64 BE ‖ envelope`) of every segment `<store>/audit/*.log` goes through
/// `edit`, which may change its envelope or drop it (`None`).
fn with_journal(env: &Env, mut edit: impl FnMut(u64, Vec<u8>) -> Option<Vec<u8>>) {
    let dir = env.store().join("audit");
    for entry in std::fs::read_dir(&dir).expect("the audit journal") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read a segment");
        let (mut rest, mut out) = (bytes.as_slice(), Vec::new());
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("len")) as usize;
            let seq = u64::from_be_bytes(rest[4..12].try_into().expect("seq"));
            let envelope = rest[12..4 + len].to_vec();
            rest = &rest[4 + len..];
            if let Some(envelope) = edit(seq, envelope) {
                let len = u32::try_from(8 + envelope.len()).expect("small");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&envelope);
            }
        }
        std::fs::write(&path, out).expect("write a segment");
    }
}

#[track_caller]
fn verify(env: &Env) -> (Option<i32>, String) {
    let out = env.kw(&["audit", "verify"]);
    (out.status.code(), format!("{}{}", out.stdout, out.stderr))
}

#[track_caller]
fn sign_record<'a>(records: &'a [Value], key: &str, outcome: &str, purpose: &str) -> &'a Value {
    records
        .iter()
        .find(|r| {
            r["action"] == "sign"
                && r["key"] == key
                && r["outcome"] == outcome
                && r["detail"]["purpose"] == purpose
        })
        .unwrap_or_else(|| panic!("no {outcome} sign of {key} for {purpose} in {records:#?}"))
}

#[test]
fn audit_lists_decisions_and_catches_tampering() {
    let env = &Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    let aud = stored_key(env, "aud", "ed25519");
    let plain = stored_key(env, "plain", "ed25519");
    env.kw_ok(&["policy", "set", "aud", "--purpose", "git"]);
    assert_signs(&agent, &aud, "git");
    assert_refuses(&agent, &aud, "file");
    assert_signs(&agent, &plain, "file");

    let keygen = exe_path("ssh-keygen");
    let all = audit_records(env, None);
    let allowed = sign_record(&all, "aud", "allowed", "sshsig namespace git");
    let refused = sign_record(&all, "aud", "refused", "sshsig namespace file");
    let other = sign_record(&all, "plain", "allowed", "sshsig namespace file");
    for r in [allowed, refused, other] {
        assert_eq!(r["detail"]["exe"], keygen.as_str(), "{r}");
        assert!(r["seq"].is_u64() && r["time"].is_string(), "{r}");
        assert!(r["detail"]["chain"]["mac"].is_string(), "keyed: {r}");
    }
    assert_eq!(allowed["detail"]["fingerprint"], aud.fingerprint.as_str());
    assert_eq!(allowed["detail"]["reason"], "allowed", "{allowed}");
    let reason = refused["detail"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("purposes:"), "{refused}");

    let only = audit_records(env, Some("aud"));
    assert!(only.iter().all(|r| r["key"] == "aud"), "{only:#?}");
    assert!(only.iter().any(|r| r["seq"] == allowed["seq"]), "{only:#?}");
    assert!(only.iter().any(|r| r["seq"] == refused["seq"]), "{only:#?}");
    let since = refused["seq"].as_u64().expect("seq");
    let out = env.kw_ok(&["audit", "--json", "--since", &since.to_string()]);
    let tail: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(
        tail.iter().all(|r| r["seq"].as_u64() >= Some(since)),
        "{out}"
    );
    assert_eq!(
        tail.first().map(|r| &r["seq"]),
        Some(&refused["seq"]),
        "{out}"
    );
    let text = env.kw_ok(&["audit", "--key", "aud"]);
    assert!(
        text.contains("refused") && text.contains("purposes:"),
        "{text}"
    );

    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact"), "{out}");

    stop(&mut agent);
    tamper(env, refused["seq"].as_u64().expect("seq"));
}

/// With the daemon stopped: edits record `seq`, then restores it and removes it; `audit verify`
/// must name the broken record each time.
fn tamper(env: &Env, seq: u64) {
    // Edit the refused record's action with the daemon stopped, keeping its envelope valid.
    let mut original = Vec::new();
    with_journal(env, |s, value| {
        if s != seq {
            return Some(value);
        }
        original.clone_from(&value);
        let (version, body) = (value[0], &value[1..value.len() - 8]);
        assert_eq!(envelope(version, body), original, "envelope understood");
        let mut event: Value = serde_json::from_slice(body).expect("record body is JSON");
        assert_eq!(event["action"], "sign", "{event}");
        event["action"] = "login".into();
        let body = serde_json::to_vec(&event).expect("encode");
        Some(envelope(version, &body))
    });
    assert!(!original.is_empty(), "record {seq} found in the journal");
    // Offline: the CLI opens the store itself; the record still decodes, so only the chain
    // catches the edit.
    let listed = audit_records(env, Some("aud"));
    assert!(
        listed
            .iter()
            .any(|r| r["seq"] == seq && r["action"] == "login"),
        "{listed:#?}"
    );
    let (code, out) = verify(env);
    assert_eq!(code, Some(1), "an edited record: {out}");
    assert!(
        out.contains(&format!("record {seq}")),
        "names the record: {out}"
    );
    // Through a restarted daemon too.
    let mut agent = env.start_agent(&[]);
    let (code, out) = verify(env);
    assert_eq!(code, Some(1), "an edited record, daemon running: {out}");
    assert!(out.contains(&format!("record {seq}")), "{out}");
    stop(&mut agent);

    // Restored, the chain is intact again; then a record removed from the middle is caught at
    // the record after it.
    with_journal(env, |s, value| {
        Some(if s == seq { original.clone() } else { value })
    });
    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "restored: {out}");
    let next = audit_records(env, None)
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .find(|&s| s > seq)
        .expect("a record after the refused one");
    with_journal(env, |s, value| (s != seq).then_some(value));
    let (code, out) = verify(env);
    assert_eq!(code, Some(1), "a removed record: {out}");
    assert!(
        out.contains(&format!("record {next}")),
        "names the record after it: {out}"
    );
}

/// Copies directory `from` to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// Puts the store back to `pristine` (a copy of it).
fn restore(env: &Env, pristine: &std::path::Path) {
    std::fs::remove_dir_all(env.store()).expect("remove store");
    copy_dir(pristine, &env.store());
}

/// The chain value (`mac` or `hash`) of a record body.
fn chain_value(event: &Value) -> String {
    let chain = &event["detail"]["chain"];
    chain["mac"]
        .as_str()
        .or_else(|| chain["hash"].as_str())
        .expect("a chain value")
        .to_owned()
}

/// Re-chains a record body after `prev` exactly as keyward did before records were keyed:
/// `hash` = SHA-256(`prev` ‖ the record's JSON without `chain`, as `AuditEvent` serializes it).
fn rechain(event: &mut Value, prev: &str) {
    event["detail"]
        .as_object_mut()
        .expect("detail")
        .remove("chain");
    let typed: keyward::store::AuditEvent =
        serde_json::from_value(event.clone()).expect("an audit event");
    let body = serde_json::to_vec(&typed).expect("json");
    let hash = Sha256::new()
        .chain_update(prev.as_bytes())
        .chain_update(&body)
        .finalize();
    let hash = hash.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    event["detail"]["chain"] = serde_json::json!({ "prev": prev, "hash": hash });
}

/// Decodes a frame's envelope to the record body.
fn body(envelope: &[u8]) -> Value {
    serde_json::from_slice(&envelope[1..envelope.len() - 8]).expect("record body")
}

/// Rewrites the whole journal into frames `(seq, envelope)`, split into segments starting at
/// `splits` (plus the first record's).
fn write_journal(env: &Env, frames: &[(u64, Vec<u8>)], splits: &[u64]) {
    let dir = env.store().join("audit");
    for e in std::fs::read_dir(&dir).expect("journal") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "log") {
            std::fs::remove_file(p).expect("remove segment");
        }
    }
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for (seq, envelope) in frames {
        if out.is_empty() || splits.contains(seq) {
            out.push((*seq, Vec::new()));
        }
        let bytes = &mut out.last_mut().expect("a segment").1;
        let len = u32::try_from(8 + envelope.len()).expect("small");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(envelope);
    }
    for (first, bytes) in out {
        std::fs::write(dir.join(format!("{first:020}.log")), bytes).expect("write segment");
    }
}

fn read_journal(env: &Env) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    with_journal(env, |seq, envelope| {
        frames.push((seq, envelope.clone()));
        Some(envelope)
    });
    frames.sort_by_key(|f| f.0);
    frames
}

#[track_caller]
fn assert_detected(env: &Env, attack: &str, says: &str) {
    let (code, out) = verify(env);
    assert_eq!(code, Some(1), "{attack} must be reported: {out}");
    assert!(out.contains("BROKEN"), "{attack}: {out}");
    assert!(
        out.contains(says),
        "{attack}: the report says {says:?}: {out}"
    );
}

/// The journal `frames` with record `dropped` removed, every later record re-chained with
/// SHA-256 and renumbered so the sequence has no gap: a valid chain of the old kind.
fn without(frames: &[(u64, Vec<u8>)], dropped: u64) -> Vec<(u64, Vec<u8>)> {
    let mut forged: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut prev = String::new();
    for (seq, env_bytes) in frames {
        let mut event = body(env_bytes);
        if *seq < dropped {
            prev = chain_value(&event);
            forged.push((*seq, env_bytes.clone()));
        } else if *seq > dropped {
            rechain(&mut event, &prev);
            prev = chain_value(&event);
            let typed: keyward::store::AuditEvent =
                serde_json::from_value(event).expect("an audit event");
            let bytes = serde_json::to_vec(&typed).expect("json");
            forged.push((seq - 1, envelope(env_bytes[0], &bytes)));
        }
    }
    forged
}

#[test]
fn attacks_on_the_trail_files_are_reported() {
    let env = &Env::no_passphrase();
    let mut agent = env.start_agent(&[]);
    let aud = stored_key(env, "aud", "ed25519");
    env.kw_ok(&["policy", "set", "aud", "--purpose", "git"]);
    assert_signs(&agent, &aud, "git");
    assert_refuses(&agent, &aud, "file");
    assert_signs(&agent, &aud, "git");
    assert_signs(&agent, &aud, "git");
    let refused = sign_record(
        &audit_records(env, None),
        "aud",
        "refused",
        "sshsig namespace file",
    )["seq"]
        .as_u64()
        .expect("seq");
    stop(&mut agent);
    let older = env.root().join("older");
    copy_dir(&env.store(), &older);
    // More records after the older copy was taken.
    let mut agent = env.start_agent(&[]);
    assert_signs(&agent, &aud, "git");
    assert_refuses(&agent, &aud, "file");
    stop(&mut agent);
    let pristine = env.root().join("pristine");
    copy_dir(&env.store(), &pristine);

    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "the legitimate trail verifies: {out}");
    assert!(out.contains("intact"), "{out}");
    assert!(out.contains("no passphrase"), "says what guards it: {out}");
    let frames = read_journal(env);
    let last = frames.last().expect("records").0;

    write_journal(env, &without(&frames, refused), &[]);
    assert_detected(env, "a dropped refusal with the rest re-chained", "anchor");

    restore(env, &pristine);
    write_journal(env, &frames[..frames.len() - 1], &[]);
    assert_detected(
        env,
        "a cut tail",
        &format!(
            "the trail ends at record {} but the anchor vouches for record {last}",
            last - 1
        ),
    );

    restore(env, &pristine);
    std::fs::write(
        env.store().join("audit").join("HEAD"),
        format!("{}\n", refused + 1),
    )
    .expect("write HEAD");
    assert_detected(env, "a rewritten HEAD", "HEAD");

    restore(env, &pristine);
    let split = frames[frames.len() - 2].0;
    write_journal(env, &frames, &[split]);
    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "two segments are a valid layout: {out}");
    std::fs::remove_file(env.store().join("audit").join(format!("{split:020}.log")))
        .expect("delete the newest segment");
    assert_detected(env, "a deleted newest segment", "anchor vouches for record");

    restore(env, &pristine);
    std::fs::remove_dir_all(env.store().join("audit")).expect("remove trail");
    copy_dir(&older.join("audit"), &env.store().join("audit"));
    assert_detected(
        env,
        "an older copy of the trail",
        "anchor vouches for record",
    );

    restore(env, &pristine);
    std::fs::remove_file(env.store().join("audit.anchor")).expect("delete anchor");
    assert_detected(env, "a deleted anchor", "audit.anchor is missing");

    restore(env, &pristine);
    with_journal(env, |seq, value| {
        if seq != refused {
            return Some(value);
        }
        let mut event = body(&value);
        event["outcome"] = "allowed".into();
        Some(envelope(
            value[0],
            &serde_json::to_vec(&event).expect("json"),
        ))
    });
    assert_detected(env, "an edited refusal", &format!("record {refused}"));

    // Nothing of it stuck: the untouched trail still verifies, through the daemon as well.
    restore(env, &pristine);
    let mut agent = env.start_agent(&[]);
    let (code, out) = verify(env);
    stop(&mut agent);
    assert_eq!(code, Some(0), "{out}");
}

/// Allowed signatures flooding the trail (through the agent protocol, far more than its
/// retention) push older signatures out, but every refusal stays listed and verified.
#[test]
fn a_flood_of_signatures_keeps_every_refusal() {
    const RETENTION: usize = 40;
    const FLOOD: usize = 2_100;
    let env = &Env::no_passphrase();
    let config = env.root().join("keyward.toml");
    std::fs::write(&config, format!("[audit]\nmax_events = {RETENTION}\n")).expect("config");
    let mut agent = env.start_agent(&["--config", config.to_str().expect("utf-8")]);
    let aud = stored_key(env, "aud", "ed25519");
    env.kw_ok(&["policy", "set", "aud", "--purpose", "git"]);
    let refusals = 3;
    for _ in 0..refusals {
        assert_refuses(&agent, &aud, "file");
    }
    let plain = stored_key(env, "plain", "ed25519");
    let mut client = crate::wire::Client::connect(agent.socket());
    for i in 0..FLOOD {
        let reply = client.sign(&plain.blob(), format!("flood {i}").as_bytes(), 0);
        assert_eq!(reply[0], 14, "signature {i} answered SIGN_RESPONSE");
    }
    drop(client);
    let records = audit_records(env, None);
    let allowed = records
        .iter()
        .filter(|r| r["action"] == "sign" && r["outcome"] == "allowed")
        .count();
    assert!(
        allowed < 1_000 + RETENTION,
        "the flood was pruned ({allowed} allowed signatures listed)"
    );
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "sign" && r["outcome"] == "refused")
        .collect();
    assert_eq!(
        refused.len(),
        refusals,
        "every refusal is still listed: {refused:#?}"
    );
    assert!(
        records.iter().any(|r| r["action"] == "policy set"
            || r["action"].as_str().is_some_and(|a| a.contains("policy"))),
        "the policy change is still listed"
    );
    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("kept apart"), "{out}");
    stop(&mut agent);
    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "offline: {out}");
}

/// A daemon started without its passphrase still audits what `ssh-add`ed keys sign; the trail
/// cannot be verified until the store is unsealed, and then it verifies whole.
#[test]
fn records_written_while_sealed_verify_after_the_unseal() {
    let env = &Env::with_passphrase();
    let mut agent = env.start_agent(&[]);
    let key = env.root().join("id_added");
    let out = crate::util::run(
        crate::util::clean_command(crate::util::require_tool("ssh-keygen"), env.root())
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "added", "-f"])
            .arg(&key),
    );
    out.assert_success("ssh-keygen");
    agent
        .ssh_add(&[key.to_str().expect("utf-8")])
        .assert_success("ssh-add");
    let data = env.root().join("data");
    std::fs::write(&data, b"signed while sealed").expect("data");
    let pub_only = env.root().join("pub");
    std::fs::create_dir(&pub_only).expect("mkdir");
    std::fs::copy(key.with_extension("pub"), pub_only.join("id_added.pub")).expect("copy pub");
    let out = crate::util::run(
        crate::util::clean_command(crate::util::require_tool("ssh-keygen"), env.root())
            .env("SSH_AUTH_SOCK", agent.socket())
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(pub_only.join("id_added.pub"))
            .arg(&data),
    );
    out.assert_success("ssh-keygen -Y sign through the sealed agent");
    let (code, out) = verify(env);
    assert_ne!(
        code,
        Some(0),
        "a sealed store cannot verify its trail: {out}"
    );
    assert!(out.contains("sealed"), "{out}");

    let pass = env.pass_file(crate::env::STORE_PASS);
    env.kw_ok(&["unlock", "--passphrase-file", &pass]);
    let (code, out) = verify(env);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact"), "{out}");
    stop(&mut agent);
    let records = audit_records_offline(env, &pass);
    let signed = records
        .iter()
        .find(|r| r["action"] == "sign" && r["outcome"] == "allowed")
        .unwrap_or_else(|| panic!("the signature made while sealed is recorded: {records:#?}"));
    assert!(
        signed["detail"]["chain"]["hash"].is_string(),
        "unkeyed: {signed}"
    );
}

/// `keyward audit --json` offline on a sealed store, unsealed with the passphrase file.
fn audit_records_offline(env: &Env, pass: &str) -> Vec<Value> {
    let out = crate::util::run(
        env.kw_command()
            .env("KEYWARD_PASSPHRASE_FILE", pass)
            .args(["audit", "--json"]),
    );
    out.assert_success("keyward audit --json offline");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}
