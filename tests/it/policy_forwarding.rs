//! `--deny-forwarding` with the real `ssh -A`: a direct login to host A works either way; on A,
//! through the forwarded agent, the key is not listed (`ssh-add -l`), `ssh-keygen -Y sign` fails
//! (it looks the key up in the list first), a direct sign request (`ssh-add -T`, which does not)
//! is refused by the policy, and the second hop `ssh` to host B fails, while a key without the
//! rule does all four. Over the forwarded agent, keys can be used but never added or removed.

use std::fs;

use crate::env::Env;
use crate::policy_hosts::{Hosts, audit_records, exe_path, stored_key};

/// What the remote script on A printed.
struct Remote {
    stdout: String,
    fingerprint: String,
}

impl Remote {
    /// Whether step `name` (`list`, `sign`, `test`, `hop`) exited 0.
    fn ok(&self, name: &str) -> bool {
        self.stdout.contains(&format!("{name}=0"))
    }

    fn listed(&self) -> bool {
        self.ok("list") && self.stdout.contains(&self.fingerprint)
    }

    fn second_hop(&self) -> bool {
        self.ok("hop") && self.stdout.contains("second-hop")
    }
}

fn forwarding_case(deny: bool) -> Remote {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "k", "ed25519");
    let hosts = Hosts::new(env.root(), &[&key.line]);
    let mut args = vec!["policy", "set", "k"];
    if deny {
        args.push("--deny-forwarding");
    }
    env.kw_ok(&args);

    let out = hosts.ssh(&agent, &hosts.a, &[], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "direct login to A (deny_forwarding={deny}): {out:#?}\nagent log:\n{}",
        agent.log()
    );

    let data = env.root().join("forwarded-data.txt");
    fs::write(&data, b"signed on host A\n").expect("write data");
    let script = format!(
        "{add} -l; echo \"list=$?\"; {keygen} -Y sign -n file -f {pub_} {data}; echo \"sign=$?\"; \
         {add} -T {pub_}; echo \"test=$?\"; {inner}; echo \"hop=$?\"",
        add = exe_path("ssh-add"),
        keygen = exe_path("ssh-keygen"),
        pub_ = key.pub_only.display(),
        data = data.display(),
        inner = hosts.remote_ssh(&hosts.b, &[], "echo second-hop"),
    );
    let out = hosts.ssh(&agent, &hosts.a, &["-A"], &script);
    let text = &out.stdout;
    assert!(text.contains("hop="), "the script ran on A: {out:#?}");
    let remote = Remote {
        stdout: out.stdout.clone(),
        fingerprint: key.fingerprint.clone(),
    };
    let signed_file = data.with_extension("txt.sig");
    assert_eq!(signed_file.exists(), remote.ok("sign"), "{out:#?}");
    // The audit trail saw the `ssh-add -T` signature on A (arbitrary data) as forwarded; the
    // requester the agent sees is the local `ssh` that forwards the agent.
    let records = audit_records(&env, Some("k"));
    let record = records
        .iter()
        .find(|r| r["action"] == "sign" && r["detail"]["purpose"] == "other data")
        .unwrap_or_else(|| panic!("no sign record from ssh-add -T: {records:#?}"));
    assert_eq!(record["detail"]["forwarded"], true, "{record}");
    assert_eq!(
        record["detail"]["exe"],
        exe_path("ssh").as_str(),
        "{record}"
    );
    assert_eq!(
        record["detail"]["host"],
        hosts.a.fingerprint.as_str(),
        "{record}"
    );
    assert_eq!(
        record["outcome"],
        if deny { "refused" } else { "allowed" },
        "{record}"
    );
    if deny {
        let reason = record["detail"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("deny_forwarding"), "{record}");
    }
    remote
}

#[test]
fn policy_forwarding_denied_on_the_forwarded_hop() {
    let remote = forwarding_case(true);
    assert!(!remote.listed(), "a deny-forwarding key is not listed on A");
    assert!(
        !remote.ok("sign"),
        "ssh-keygen -Y sign on A must be refused"
    );
    assert!(!remote.ok("test"), "ssh-add -T on A must be refused");
    assert!(!remote.second_hop(), "ssh from A to B must fail");
}

#[test]
fn policy_forwarding_allowed_without_the_rule() {
    let remote = forwarding_case(false);
    assert!(remote.listed(), "the key is listed on A through ssh -A");
    assert!(remote.ok("sign"), "ssh-keygen -Y sign on A works");
    assert!(remote.ok("test"), "ssh-add -T on A works");
    assert!(remote.second_hop(), "ssh from A to B works");
}

/// Over `ssh -A`, host A may use the keys but never change them: `ssh-add KEY`, `ssh-add -d`,
/// `ssh-add -D` and `ssh-add -s` are refused (and audited as refused, with the reason), a control
/// request sent down the forwarded agent socket is an unknown agent message, and the control
/// socket is not reachable from A at all (ssh forwards the agent socket only). The keys are still
/// served, locally and on A, and nothing was added.
#[test]
fn forwarded_connection_cannot_change_keys_or_reach_the_control_socket() {
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "k", "ed25519");
    let hosts = Hosts::new(env.root(), &[&key.line]);
    let extra = env.root().join("extra");
    crate::util::run(
        std::process::Command::new(crate::util::require_tool("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "extra", "-f"])
            .arg(&extra),
    );
    // A control request (`status`) in the control protocol's framing, sent to SSH_AUTH_SOCK.
    let raw = "import os, socket, struct; s = socket.socket(socket.AF_UNIX); \
               s.connect(os.environ['SSH_AUTH_SOCK']); \
               body = b'{\"version\":1,\"request\":{\"type\":\"status\"}}'; \
               s.sendall(struct.pack('>I', len(body)) + body); \
               reply = s.recv(5); print('raw-reply=%d' % reply[4])";
    let script = format!(
        "{add} {extra} </dev/null; echo \"add=$?\"; {add} -d {pub_}; echo \"remove=$?\"; \
         {add} -D; echo \"removeall=$?\"; {add} -s /nonexistent/pkcs11.so </dev/null; \
         echo \"pkcs11=$?\"; {kw} --socket \"$SSH_AUTH_SOCK\" --store {remote_store} status; \
         {python} -c \"{raw}\"; {add} -l; echo \"list=$?\"",
        add = exe_path("ssh-add"),
        extra = extra.display(),
        pub_ = key.pub_only.display(),
        kw = crate::util::cli_bin(),
        remote_store = env.root().join("store-on-a").display(),
        python = exe_path("python3"),
    );
    let out = hosts.ssh(&agent, &hosts.a, &["-A"], &script);
    let text = &out.stdout;
    assert!(text.contains("list="), "the script ran on A: {out:#?}");
    for step in ["add", "remove", "removeall", "pkcs11"] {
        assert!(
            !text.contains(&format!("{step}=0")),
            "{step} must fail over the forwarded agent: {out:#?}"
        );
    }
    // The CLI on A finds no control socket beside the forwarded agent socket: it can only open
    // a store of its own there.
    assert!(
        text.contains("agent:      not running"),
        "the control socket is not reachable from A: {out:#?}"
    );
    assert!(
        text.contains("raw-reply=5"),
        "a control request down the agent socket is an unknown agent message (FAILURE): {out:#?}"
    );
    assert!(
        text.contains("list=0") && text.contains(&key.fingerprint),
        "the key is still served on A: {out:#?}"
    );

    // Locally: the stored key is still served and the extra key was not added.
    let listed = agent.ssh_add(&["-l"]);
    assert!(listed.stdout.contains(&key.fingerprint), "{listed:#?}");
    assert!(!listed.stdout.contains("extra"), "{listed:#?}");
    let records = audit_records(&env, None);
    for action in ["add", "remove", "remove_all"] {
        let record = records
            .iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} record: {records:#?}"));
        assert_eq!(record["outcome"], "refused", "{record}");
        assert_eq!(
            record["detail"]["reason"], "over a forwarded connection",
            "{record}"
        );
    }
}
