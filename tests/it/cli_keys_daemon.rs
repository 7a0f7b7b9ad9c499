//! `keyward key ...` through a running daemon (over `control.sock`): new keys are served at once,
//! `ssh-add -d`/`-D` unload without deleting, `key load` serves again, `delete`, `rename` and
//! `comment` reach both the store and the agent; `keyward status` reports the daemon.

use std::fs;

use serde_json::Value;

use crate::env::{Env, key_part};
use crate::util::{Agent, assert_no_identities};

/// The fingerprints `ssh-add -l` prints, one per served key.
fn served(agent: &Agent) -> Vec<String> {
    let out = agent.ssh_add(&["-l"]);
    if out.stdout.contains("no identities") {
        return Vec::new();
    }
    out.assert_success("ssh-add -l");
    out.stdout.lines().map(str::to_owned).collect()
}

fn sha(env: &Env, name: &str) -> String {
    env.show(name)["sha256"]
        .as_str()
        .expect("sha256")
        .to_owned()
}

#[test]
fn generate_through_daemon_is_served_at_once() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    assert_no_identities(&agent);
    assert!(
        env.root().join("run/keyward/control.sock").exists(),
        "control.sock beside agent.sock"
    );

    let view: Value = serde_json::from_str(&env.kw_ok(&[
        "key",
        "generate",
        "-n",
        "work",
        "-C",
        "me@example",
        "--json",
    ]))
    .expect("generate --json");
    assert_eq!(view["loaded"], Value::Bool(true), "{view}");
    assert_eq!(view["bits"].as_u64(), Some(2048));
    let lines = served(&agent);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fp = view["sha256"].as_str().unwrap();
    assert_eq!(lines[0], format!("2048 {fp} me@example (RSA)"));
    // The agent's public key is the exported one.
    let from_agent = agent.ssh_add(&["-L"]);
    from_agent.assert_success("ssh-add -L");
    assert_eq!(
        key_part(&from_agent.stdout),
        key_part(&env.kw_ok(&["key", "export", "work"]))
    );

    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "ed", "-C", "ed@x"]);
    assert_eq!(served(&agent).len(), 2);

    let list = env.kw_json(&["key", "list", "--json"]);
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|k| k["loaded"] == Value::Bool(true)),
        "{list:?}"
    );
    let text = env.kw_ok(&["key", "list"]);
    assert!(text.contains("work") && text.contains("ed"), "{text}");

    let status = env.kw_json(&["status", "--json"]);
    assert_eq!(status["daemon"], Value::Bool(true), "{status}");
    assert_eq!(
        status["pid"].as_u64(),
        Some(u64::from(agent.pid())),
        "{status}"
    );
    assert_eq!(status["key_count"].as_u64(), Some(2), "{status}");
    assert_eq!(status["agent_keys"].as_u64(), Some(2), "{status}");
    assert_eq!(status["sealed"], Value::Bool(false), "{status}");
    assert_eq!(status["passphrase_set"], Value::Bool(false), "{status}");
    let text = env.kw_ok(&["status"]);
    assert!(
        text.contains(&format!("running (pid {})", agent.pid())),
        "{text}"
    );
    assert!(text.contains("NO PASSPHRASE"), "said plainly: {text}");
}

#[test]
fn ssh_add_unloads_but_never_deletes() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    env.kw_ok(&["key", "generate", "-t", "ed25519", "-n", "a", "-C", "a@x"]);
    env.kw_ok(&["key", "generate", "-t", "ecdsa", "-n", "b", "-C", "b@x"]);
    let pub_a = env.path("a.pub");
    fs::write(&pub_a, env.kw_ok(&["key", "export", "a"])).expect("write a.pub");

    agent.ssh_add(&["-d", &pub_a]).assert_success("ssh-add -d");
    let left = served(&agent);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains(&sha(&env, "b")), "{left:?}");
    assert_eq!(env.key_names(), ["a", "b"], "ssh-add -d deletes nothing");
    assert_eq!(env.show("a")["loaded"], Value::Bool(false));
    assert!(env.kw_ok(&["key", "list"]).contains("not served"));

    let out = env.kw(&["key", "load", "a"]);
    out.assert_success("keyward key load");
    assert_eq!(served(&agent).len(), 2);

    agent.ssh_add(&["-D"]).assert_success("ssh-add -D");
    assert_no_identities(&agent);
    assert_eq!(env.key_names(), ["a", "b"], "ssh-add -D deletes nothing");
    env.kw_ok(&["key", "load", "b"]);
    let back = served(&agent);
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].contains(&sha(&env, "b")));
    // Loading an already served key is harmless.
    env.kw_ok(&["key", "load", "b"]);
    assert_eq!(served(&agent).len(), 1);
}

#[test]
fn delete_rename_comment_reach_the_agent() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    env.kw_ok(&[
        "key", "generate", "-t", "ed25519", "-n", "old", "-C", "first",
    ]);
    env.kw_ok(&[
        "key", "generate", "-t", "ed25519", "-n", "gone", "-C", "bye",
    ]);
    let fp = sha(&env, "old");

    env.kw_ok(&["key", "rename", "old", "new"]);
    assert_eq!(env.key_names(), ["gone", "new"]);
    assert_eq!(sha(&env, "new"), fp, "rename keeps the key");
    let out = env.kw(&["key", "show", "old"]);
    out.assert_failure("show by the old name");

    env.kw_ok(&["key", "comment", "new", "second comment"]);
    assert_eq!(env.show("new")["comment"].as_str(), Some("second comment"));
    assert!(
        env.kw_ok(&["key", "export", "new"])
            .trim_end()
            .ends_with(" second comment")
    );
    let lines = served(&agent);
    let line = lines
        .iter()
        .find(|l| l.contains(&fp))
        .expect("still served");
    assert_eq!(line, &format!("256 {fp} second comment (ED25519)"));

    // Delete asks first; without a terminal and without --yes it refuses.
    let out = env.kw(&["key", "delete", "gone"]);
    out.assert_failure("delete without --yes");
    assert_eq!(env.key_names(), ["gone", "new"]);
    let gone_fp = sha(&env, "gone");
    env.kw_ok(&["key", "delete", "gone", "--yes"]);
    assert_eq!(env.key_names(), ["new"]);
    let lines = served(&agent);
    assert!(lines.iter().all(|l| !l.contains(&gone_fp)), "{lines:?}");
    assert_eq!(lines.len(), 1);

    // By id too.
    let id = env.show("new")["id"].as_str().unwrap().to_owned();
    assert_eq!(env.show(&id)["name"].as_str(), Some("new"));
    env.kw_ok(&["key", "delete", &id, "-y"]);
    assert!(env.key_names().is_empty());
    assert_no_identities(&agent);
}
