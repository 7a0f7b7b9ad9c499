//! `ssh-add -h` with OpenSSH's semantics, through real `ssh -A` chains of private `sshd`s: the
//! rows of issue 15's table (hops walked in order from the origin, keys hidden where they may
//! not be used onwards, hosts presenting host certificates matched through `@cert-authority`)
//! and the permitted paths. The same commands run against OpenSSH's own `ssh-agent`, which must
//! give the same answers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::sshd::Host;
use crate::util::{Agent, Key, KeyType, Output, clean_command, keygen, require_tool, run, unique};

/// Hosts A and B (plain host keys) and C (a host certificate from `ca`), one `known_hosts`
/// naming A and B by key and C through `@cert-authority hostC`.
struct Net {
    a: Host,
    b: Host,
    c: Host,
    known: PathBuf,
    no_identity: PathBuf,
    /// Unrestricted: logs in to the first hop of chains that start where the restricted key
    /// may not go.
    free: Key,
    /// The key under test.
    restricted: Key,
}

impl Net {
    fn new(dir: &Path) -> Net {
        let free = keygen(dir, "free", KeyType::Ed25519, "");
        let restricted = keygen(dir, "restricted", KeyType::Ed25519, "");
        let ak = dir.join("authorized_keys");
        fs::write(
            &ak,
            format!("{}\n{}\n", free.public_line(), restricted.public_line()),
        )
        .expect("write authorized_keys");
        let fwd = "AllowAgentForwarding yes\n";
        let a = Host::new(dir, "hostA", &ak, fwd);
        let b = Host::new(dir, "hostB", &ak, fwd);
        let ca = keygen(dir, "host-ca", KeyType::Ed25519, "");
        let cert = dir.join("keys").join("host-hostC-cert.pub");
        let c = Host::new(
            dir,
            "hostC",
            &ak,
            &format!("{fwd}HostCertificate {}\n", cert.display()),
        );
        run(clean_command(require_tool("ssh-keygen"), dir)
            .args(["-q", "-s"])
            .arg(&ca.private)
            .args(["-I", "hostC", "-h", "-n", "hostC,hostc"])
            .arg(dir.join("keys").join("host-hostC.pub")))
        .assert_success("ssh-keygen -s (host certificate)");
        assert!(cert.exists(), "host certificate written");
        let known = dir.join("known_hosts");
        fs::write(
            &known,
            format!(
                "{}{}@cert-authority hostC {}\n",
                a.known_line,
                b.known_line,
                ca.public_line()
            ),
        )
        .expect("write known_hosts");
        Net {
            a,
            b,
            c,
            known,
            no_identity: dir.join("no-such-identity"),
            free,
            restricted,
        }
    }

    /// `ssh` arguments to `host` using only the agent's copy of `key`.
    fn args(&self, host: &Host, key: &Key) -> Vec<String> {
        host.ssh_args(
            &self.known,
            &self.no_identity,
            &[
                "IdentitiesOnly=yes".to_owned(),
                format!("IdentityFile={}", key.pub_only.display()),
            ],
        )
    }

    /// Whether a direct login to `host` with `key` works.
    fn login(&self, agent: &Agent, host: &Host, key: &Key) -> bool {
        let out = run(agent
            .command("ssh")
            .args(self.args(host, key))
            .arg("echo logged-in"));
        out.status.success() && out.stdout.trim() == "logged-in"
    }

    /// Logs in to `first` with `key` and `ssh -A`; there lists the forwarded agent and logs in
    /// to `second` with the restricted key. (Whether the restricted key is listed on `first`,
    /// whether the second hop worked.)
    fn chain(&self, agent: &Agent, first: &Host, key: &Key, second: &Host) -> (bool, bool) {
        let quote = |w: &String| format!("'{w}'");
        let inner: Vec<String> = std::iter::once(require_tool("ssh").display().to_string())
            .chain(self.args(second, &self.restricted))
            .chain(["echo second-hop".to_owned()])
            .map(|w| quote(&w))
            .collect();
        let script = format!(
            "{} -l; echo \"list=$?\"; {}; echo \"hop=$?\"",
            require_tool("ssh-add").display(),
            inner.join(" ")
        );
        let out = run(agent
            .command("ssh")
            .arg("-A")
            .args(self.args(first, key))
            .arg(script));
        assert!(
            out.stdout.contains("hop="),
            "the script ran on {}: {out:#?}",
            first.alias
        );
        let listed = out.stdout.contains(&fingerprint(&self.restricted));
        let hopped = out.stdout.contains("second-hop") && out.stdout.contains("hop=0");
        (listed, hopped)
    }

    /// Logs in along `path` (host aliases) with the restricted key alone, through `ssh -A` at
    /// every hop, each host running the next `ssh` (OpenSSH's multihop regress test, in
    /// miniature). Returns what each host printed: `reached X` and, if the restricted key was
    /// listed on X's forwarded agent, `listed X`.
    fn multihop(&self, agent: &Agent, path: &[&Host]) -> Vec<String> {
        let dir = agent.dir();
        let script = dir.join("multihop.sh");
        let fp = fingerprint(&self.restricted);
        fs::write(
            &script,
            format!(
                "#!/bin/sh
me=\"$1\"; shift
echo \"reached $me\"
                 {add} -l | grep -q '{fp}' && echo \"listed $me\"
                 if [ $# -gt 0 ]; then next=\"$1\"; {dir}/ssh-to-\"$next\" {script} \"$@\"; fi
",
                add = require_tool("ssh-add").display(),
                dir = dir.display(),
                script = script.display(),
            ),
        )
        .expect("write multihop.sh");
        for host in [&self.a, &self.b, &self.c] {
            let words: Vec<String> = std::iter::once(require_tool("ssh").display().to_string())
                .chain(["-A".to_owned()])
                .chain(self.args(host, &self.restricted))
                .map(|w| format!("'{w}'"))
                .collect();
            let wrapper = dir.join(format!("ssh-to-{}", host.alias));
            fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh
exec {} \"$@\"
",
                    words.join(" ")
                ),
            )
            .expect("write ssh wrapper");
            for file in [&wrapper, &script] {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(file, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
        let aliases: Vec<&str> = path.iter().map(|h| h.alias.as_str()).collect();
        let out = run(agent.command("sh").arg(&script).arg("local").args(&aliases));
        out.stdout
            .lines()
            .filter(|l| l.starts_with("reached") || l.starts_with("listed"))
            .map(str::to_owned)
            .collect()
    }

    /// Replaces the agent's keys: the free key, and the restricted one with `ssh-add -h` for
    /// each of `hops`.
    fn load(&self, agent: &Agent, hops: &[&str]) {
        agent.ssh_add(&["-D"]);
        let free = self.free.private.to_str().expect("utf-8");
        agent.ssh_add(&[free]).assert_success("ssh-add free key");
        let known = self.known.to_str().expect("utf-8");
        let mut args = vec!["-H", known];
        for hop in hops {
            args.extend(["-h", hop]);
        }
        args.push(self.restricted.private.to_str().expect("utf-8"));
        let out: Output = agent.ssh_add(&args);
        out.assert_success(&format!("ssh-add -h {hops:?}; log:\n{}", agent.log()));
    }
}

fn fingerprint(key: &Key) -> String {
    key.public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string()
}

/// Every row, as (what was tried, whether it worked).
fn outcomes(agent: &Agent) -> BTreeMap<&'static str, bool> {
    let net = Net::new(agent.dir());
    let (r, f) = (&net.restricted, &net.free);
    let mut seen = BTreeMap::new();

    net.load(agent, &["hostA", "hostA>hostB"]);
    seen.insert("A,A>B: local->A", net.login(agent, &net.a, r));
    let (listed, hop) = net.chain(agent, &net.a, r, &net.b);
    seen.insert("A,A>B: listed on A", listed);
    seen.insert("A,A>B: local->A->B", hop);
    let (listed, hop) = net.chain(agent, &net.b, f, &net.a);
    seen.insert("A,A>B: listed on B", listed);
    seen.insert("A,A>B: local->B->A", hop);
    seen.insert("A,A>B: local->B->B", net.chain(agent, &net.b, f, &net.b).1);
    seen.insert("A,A>B: local->B", net.login(agent, &net.b, r));

    net.load(agent, &["hostA>hostB"]);
    seen.insert("A>B: local->A", net.login(agent, &net.a, r));
    seen.insert("A>B: local->B", net.login(agent, &net.b, r));

    net.load(agent, &["hostA"]);
    let (listed, hop) = net.chain(agent, &net.c, f, &net.a);
    seen.insert("A: listed on C (certificate)", listed);
    seen.insert("A: local->C->A", hop);

    net.load(agent, &["hostC", "hostC>hostA"]);
    seen.insert("C,C>A: local->C (certificate)", net.login(agent, &net.c, r));
    let (listed, hop) = net.chain(agent, &net.c, r, &net.a);
    seen.insert("C,C>A: listed on C", listed);
    seen.insert("C,C>A: local->C->A", hop);
    seen.insert("C,C>A: local->A", net.login(agent, &net.a, r));

    // Three hops, the last to the host presenting a certificate.
    net.load(agent, &["hostA", "hostA>hostB", "hostB>hostC"]);
    seen.insert(
        "A,A>B,B>C: local->A->B->C",
        net.multihop(agent, &[&net.a, &net.b, &net.c]).join(",")
            == "reached local,listed local,reached hostA,listed hostA,reached hostB,listed hostB,reached hostC",
    );
    // A cycle, denied and then allowed (agent-restrict.sh's "multihop cycle").
    net.load(agent, &["hostA", "hostA>hostB"]);
    seen.insert(
        "A,A>B: local->A->B->A reaches B only",
        net.multihop(agent, &[&net.a, &net.b, &net.a]).join(",")
            == "reached local,listed local,reached hostA,listed hostA,reached hostB",
    );
    net.load(
        agent,
        &["hostA", "hostA>hostB", "hostB>hostA", "hostA>hostA"],
    );
    seen.insert(
        "A,A>B,B>A,A>A: local->A->B->A->A",
        net.multihop(agent, &[&net.a, &net.b, &net.a, &net.a])
            .join(",")
            == "reached local,listed local,reached hostA,listed hostA,reached hostB,listed hostB,\
                reached hostA,listed hostA,reached hostA,listed hostA",
    );

    net.load(agent, &[&format!("{}@hostA", crate::sshd::current_user())]);
    seen.insert("me@A: local->A", net.login(agent, &net.a, r));
    net.load(agent, &["nobody-else@hostA"]);
    seen.insert("nobody-else@A: local->A", net.login(agent, &net.a, r));
    seen
}

fn expected() -> BTreeMap<&'static str, bool> {
    [
        ("A,A>B: local->A", true),
        ("A,A>B: listed on A", true),
        ("A,A>B: local->A->B", true),
        ("A,A>B: listed on B", false),
        ("A,A>B: local->B->A", false),
        ("A,A>B: local->B->B", false),
        ("A,A>B: local->B", false),
        ("A>B: local->A", false),
        ("A>B: local->B", false),
        ("A: listed on C (certificate)", false),
        ("A: local->C->A", false),
        ("C,C>A: local->C (certificate)", true),
        ("C,C>A: listed on C", true),
        ("C,C>A: local->C->A", true),
        ("C,C>A: local->A", false),
        ("me@A: local->A", true),
        ("A,A>B,B>C: local->A->B->C", true),
        ("A,A>B: local->A->B->A reaches B only", true),
        ("A,A>B,B>A,A>A: local->A->B->A->A", true),
        ("nobody-else@A: local->A", false),
    ]
    .into_iter()
    .collect()
}

#[test]
fn ssh_add_h_hops_with_keyward() {
    let agent = Agent::start();
    let seen = outcomes(&agent);
    assert_eq!(seen, expected(), "agent log:\n{}", agent.log());
}

/// The same commands against OpenSSH's `ssh-agent`: the table above is OpenSSH's behaviour.
#[test]
fn ssh_add_h_hops_with_openssh_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join(format!("ssh-agent-{}.sock", unique()));
    let log = fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let child = clean_command(require_tool("ssh-agent"), dir.path())
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ssh-agent");
    let agent = Agent::adopt(child, dir, socket);
    let seen = outcomes(&agent);
    assert_eq!(seen, expected());
}

/// A stored key's `--destination` list walks the same hops: listed hosts only, forwarded only
/// through listed hosts; `keyward policy test --via` gives the agent's answer.
#[test]
fn stored_destinations_walk_the_hops_and_policy_test_agrees() {
    use crate::env::Env;
    use crate::policy_hosts::{Hosts, exe_path, stored_key};
    let env = Env::no_passphrase();
    let agent = env.start_agent(&[]);
    let key = stored_key(&env, "k", "ed25519");
    let free = keygen(env.root(), "free", KeyType::Ed25519, "");
    let hosts = Hosts::new(env.root(), &[&key.line, &free.public_line()]);
    agent
        .ssh_add(&[free.private.to_str().expect("utf-8")])
        .assert_success("ssh-add free key");
    let only = |pub_: &Path| {
        vec![
            "-o".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "-o".to_owned(),
            format!("IdentityFile={}", pub_.display()),
        ]
    };
    // local -> A with the free key, then A -> B with the stored key: (listed on A, hop worked).
    let chain = || {
        let inner_opts = only(&key.pub_only);
        let inner_refs: Vec<&str> = inner_opts.iter().map(String::as_str).collect();
        let script = format!(
            "{} -l; {}; echo \"hop=$?\"",
            exe_path("ssh-add"),
            hosts.remote_ssh(&hosts.b, &inner_refs, "echo second-hop")
        );
        let outer = only(&free.pub_only);
        let mut args: Vec<&str> = vec!["-A"];
        args.extend(outer.iter().map(String::as_str));
        let out = hosts.ssh(&agent, &hosts.a, &args, &script);
        assert!(out.stdout.contains("hop="), "script ran on A: {out:#?}");
        (
            out.stdout.contains(&key.fingerprint),
            out.stdout.contains("second-hop") && out.stdout.contains("hop=0"),
        )
    };
    let kh = hosts.known.to_str().expect("utf-8");
    let test = |args: &[&str]| {
        let mut all = vec!["policy", "test", "k", "--known-hosts", kh];
        all.extend_from_slice(args);
        env.kw(&all)
    };

    env.kw_ok(&[
        "policy",
        "set",
        "k",
        "--destination",
        "hostA",
        "--destination",
        "hostB",
        "--known-hosts",
        kh,
    ]);
    assert_eq!(chain(), (true, true), "A and B listed: through A to B");
    let out = test(&["--host", "hostB", "--via", "hostA"]);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");

    env.kw_ok(&[
        "policy",
        "set",
        "k",
        "--destination",
        "hostB",
        "--known-hosts",
        kh,
    ]);
    assert_eq!(chain(), (false, false), "only B listed: not through A");
    let out = test(&["--host", "hostB", "--via", "hostA"]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout.contains("destinations") && out.stdout.contains(&hosts.a.fingerprint),
        "{out:#?}"
    );
    assert_eq!(test(&["--host", "hostB"]).status.code(), Some(0));
}
