//! Rotation through the daemon: the scheduler renews a certificate inside its window as soon as
//! its policy allows, rewrites the export targets and runs the hook once; `keyward cert renew` does
//! the same on demand, `--rekey` makes a new stored key; the old certificate stays, superseded.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use crate::env::{Env, RENEW_GUARD, assert_clean_error, by_id, text};
use crate::util::{Agent, mode_of, poll_until};

/// The hook: one `|`-separated line of its environment per run.
pub const HOOK: &str = "printf '%s|%s|%s|%s|%s|%s\\n' \"$KEYWARD_CERT_ID\" \
    \"$KEYWARD_CERT_OLD_ID\" \"$KEYWARD_CERT_THUMBPRINT\" \"$KEYWARD_CERT_NOT_AFTER\" \
    \"$KEYWARD_CERT_SUBJECT\" \"$KEYWARD_CERT_PATHS\" >> ";

/// One run of [`HOOK`], as it logged its environment.
#[derive(Debug, PartialEq, Eq)]
pub struct HookRun {
    pub id: String,
    pub old_id: String,
    pub thumbprint: String,
    pub not_after: String,
    pub subject: String,
    pub paths: String,
}

/// The runs [`HOOK`] logged to `log` so far.
pub fn hook_runs(log: &str) -> Vec<HookRun> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 6, "hook log line {l:?}");
            HookRun {
                id: f[0].into(),
                old_id: f[1].into(),
                thumbprint: f[2].into(),
                not_after: f[3].into(),
                subject: f[4].into(),
                paths: f[5].into(),
            }
        })
        .collect()
}

/// Asserts that `a.pem` and `a.cer` in `out` hold the certificate `view`, as openssl reads them.
#[track_caller]
pub fn assert_exported(env: &Env, view: &Value) {
    let thumb = text(view, "sha1_thumbprint");
    assert_eq!(env.ssl_thumbprint("out/a.pem"), thumb, "a.pem");
    assert_eq!(env.ssl_thumbprint("out/a.cer"), thumb, "a.cer");
    assert_eq!(
        fs::read_to_string(env.path("out/a.pem")).expect("read a.pem"),
        text(view, "pem")
    );
    env.openssl_ok(&[
        "x509",
        "-in",
        "out/a.pem",
        "-outform",
        "der",
        "-out",
        "conv.cer",
    ]);
    let der = fs::read(env.path("out/a.cer")).expect("read a.cer");
    assert!(der == fs::read(env.path("conv.cer")).expect("read conv.cer"));
    assert_eq!(mode_of(env.path("out/a.pem").as_ref()), 0o644);
    assert_eq!(mode_of(env.path("out/a.cer").as_ref()), 0o644);
}

/// Asserts the hook run `run` describes the renewal `old` → `new` with both export paths.
#[track_caller]
pub fn assert_hook(env: &Env, run: &HookRun, old: &str, new: &Value) {
    assert_eq!(run.id, text(new, "id"), "{run:?}");
    assert_eq!(run.old_id, old, "{run:?}");
    assert_eq!(run.thumbprint, text(new, "sha1_thumbprint"), "{run:?}");
    assert_eq!(run.not_after, new["not_after"].to_string(), "{run:?}");
    assert_eq!(run.subject, text(new, "subject"), "{run:?}");
    let paths = format!("{}:{}", env.path("out/a.pem"), env.path("out/a.cer"));
    assert_eq!(run.paths, paths, "{run:?}");
}

/// The certificate listed (with `--all`) that `old` was superseded by, once it is.
pub fn successor(env: &Env, old: &str) -> Option<Value> {
    let list = env.all_certs();
    let by = by_id(&list, old)["superseded_by"].as_str()?.to_owned();
    Some(by_id(&list, &by).clone())
}

#[test]
fn scheduled_renewal_then_on_demand_then_rekey() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let log = env.path("hook.log");
    let (first_id, second_id) = scheduled(&env, &agent, &log);
    let third_id = on_demand(&env, &log, &first_id, &second_id);
    rekey(&env, &agent, &log, &third_id);
}

/// The scheduler renews a 10-day certificate once its policy asks for 90-day renewals; returns
/// the ids of the old and the new certificate.
fn scheduled(env: &Env, agent: &Agent, log: &str) -> (String, String) {
    env.kw_ok(&["key", "generate", "-n", "mgmt", "-C", "mgmt@example"]);
    let first = env.create("mgmt", 10, &["--subject", "CN=mgmt,O=Example"]);
    let first_id = text(&first, "id");
    assert_eq!(first["state"].as_str(), Some("expiring"), "{first}");
    // A 10-day validity cannot be renewed with a 30-day window: nothing happens yet.
    assert_eq!(env.all_certs().len(), 1);

    fs::create_dir(env.root().join("out")).expect("mkdir out");
    let hook = format!("{HOOK}'{log}'");
    let (pem, cer) = (env.path("out/a.pem"), env.path("out/a.cer"));
    let started = Instant::now();
    env.kw_ok(&[
        "cert", "policy", &first_id, "--days", "90", "--export", &pem, "--export", &cer, "--hook",
        &hook,
    ]);
    let renewed = poll_until(RENEW_GUARD, || {
        successor(env, &first_id).is_some() && !hook_runs(log).is_empty()
    });
    let latency = started.elapsed();
    assert!(renewed, "no scheduled renewal; agent log:\n{}", agent.log());
    eprintln!("scheduled renewal seen {latency:?} after the policy change");

    let list = env.all_certs();
    assert_eq!(list.len(), 2, "{list:#?}");
    let old = by_id(&list, &first_id);
    assert_eq!(old["state"].as_str(), Some("superseded"), "{old}");
    let second = successor(env, &first_id).expect("successor");
    let second_id = text(&second, "id");
    assert_eq!(second["state"].as_str(), Some("valid"), "{second}");
    assert_eq!(second["superseded_by"], Value::Null);
    assert_eq!(second["key"].as_str(), Some("mgmt"));
    assert_eq!(second["subject"].as_str(), Some("CN=mgmt, O=Example"));
    let span = second["not_after"].as_u64().unwrap() - second["not_before"].as_u64().unwrap();
    assert_eq!(span, 90 * 86_400, "{second}");
    let days = second["days_left"].as_i64().unwrap();
    assert!(days == 89 || days == 90, "{second}");
    assert_eq!(second["renewal"], old["renewal"], "the policy carries over");
    assert_exported(env, &second);
    let runs = hook_runs(log);
    assert_eq!(runs.len(), 1, "hook ran exactly once: {runs:#?}");
    assert_hook(env, &runs[0], &first_id, &second);
    // `cert list` shows the active one; the superseded one only with --all, until it expires.
    let active = env.kw_json(&["cert", "list", "--json"]);
    let active = active.as_array().expect("array");
    assert_eq!(active.len(), 1, "{active:#?}");
    assert_eq!(active[0]["id"].as_str(), Some(second_id.as_str()));
    let shown = env.kw_ok(&["cert", "show", &first_id]);
    assert!(
        shown.contains(&format!("superseded by {second_id}")),
        "{shown}"
    );
    (first_id, second_id)
}

/// On demand: a new certificate, the previous one superseded, exports rewritten, hook again.
/// Returns the new id.
fn on_demand(env: &Env, log: &str, first_id: &str, second_id: &str) -> String {
    let third = env.kw_json(&["cert", "renew", second_id, "--json"]);
    let third_id = text(&third, "id");
    assert_eq!(third["key"].as_str(), Some("mgmt"));
    let list = env.all_certs();
    assert_eq!(list.len(), 3, "{list:#?}");
    assert_eq!(
        by_id(&list, second_id)["superseded_by"].as_str(),
        Some(third_id.as_str())
    );
    assert_eq!(by_id(&list, first_id)["state"].as_str(), Some("superseded"));
    assert_exported(env, &third);
    let runs = hook_runs(log);
    assert_eq!(runs.len(), 2, "one more hook run: {runs:#?}");
    assert_hook(env, &runs[1], second_id, &third);
    third_id
}

/// `--rekey`: a new stored key, served by the agent, and a different public key.
fn rekey(env: &Env, agent: &Agent, log: &str, third_id: &str) {
    let same_key = env.x509("out/a.pem", &["-noout", "-pubkey"]);
    fs::copy(env.path("out/a.pem"), env.path("third.pem")).expect("keep third");
    env.kw_ok(&["cert", "policy", third_id, "--rekey"]);
    let fourth = env.kw_json(&["cert", "renew", third_id, "--json"]);
    let new_key = text(&fourth, "key");
    assert_ne!(new_key, "mgmt", "{fourth}");
    let keys = env.kw_json(&["key", "list", "--json"]);
    let names: Vec<&str> = keys
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&new_key.as_str()) && names.contains(&"mgmt"),
        "{keys}"
    );
    assert_exported(env, &fourth);
    let rekeyed = env.x509("out/a.pem", &["-noout", "-pubkey"]);
    assert_ne!(rekeyed, same_key, "rekey must change the public key");
    assert_eq!(env.x509("third.pem", &["-noout", "-pubkey"]), same_key);
    // The new key is the stored key's: ssh-pubkey of the export equals `key export`.
    let line = env.kw_ok(&["cert", "ssh-pubkey", "out/a.cer"]);
    let stored = env.kw_ok(&["key", "export", &new_key]);
    assert_eq!(crate::env::key_part(&line), crate::env::key_part(&stored));
    let served = agent.ssh_add(&["-l"]);
    served.assert_success("ssh-add -l");
    assert_eq!(
        served.stdout.lines().count(),
        2,
        "both keys served: {served:#?}"
    );
    let runs = hook_runs(log);
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert_hook(env, &runs[2], third_id, &fourth);
    assert_eq!(
        env.all_certs().len(),
        4,
        "every old certificate stays listed"
    );
}

/// Renewing a certificate that is already superseded must not fork the chain into two active
/// certificates (both would be renewed and would fight over the same export files).
#[test]
fn renewing_a_superseded_certificate_does_not_fork() {
    let env = Env::no_passphrase();
    env.kw_ok(&["key", "generate", "-n", "k"]);
    let a = text(&env.create("k", 60, &[]), "id");
    let b = text(&env.kw_json(&["cert", "renew", &a, "--json"]), "id");
    let out = env.kw(&["cert", "renew", &a]);
    let list = env.all_certs();
    let live: Vec<&str> = list
        .iter()
        .filter(|c| c["state"].as_str() != Some("superseded"))
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        live.len(),
        1,
        "`cert renew` of superseded {a} (exit {:?}) left these active: {live:?}",
        out.status.code()
    );
    assert_eq!(
        by_id(&list, &a)["superseded_by"].as_str(),
        Some(b.as_str()),
        "history rewritten"
    );
    if !out.status.success() {
        assert_clean_error(&out, "cert renew of a superseded certificate");
    }
}
