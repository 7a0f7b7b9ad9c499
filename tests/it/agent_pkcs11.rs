//! PKCS#11 tokens with `SoftHSM2`: `ssh-add -s PROVIDER` (PIN on stdin, as ssh-add reads it) lists
//! the token's RSA and ECDSA keys, they sign (`ssh-keygen -Y sign`, verified) and log in to an
//! sshd, `-e` removes them; a provider outside the allow-list and a provider requested over a
//! forwarded agent are refused, and the agent process never maps the provider library.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sshd::Host;
use crate::util::{Agent, AgentOpts, Output, clean_command, require_tool, run, unique};

const PROVIDER: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "123456";

/// A `SoftHSM2` token holding an RSA and an ECDSA key pair, in its own directory.
struct Token {
    conf: PathBuf,
}

impl Token {
    fn new(dir: &Path) -> Token {
        require_tool("softhsm2-util");
        require_tool("pkcs11-tool");
        assert!(
            Path::new(PROVIDER).exists(),
            "{PROVIDER} missing: apt-get install -y softhsm2"
        );
        let tokens = dir.join("tokens");
        fs::create_dir_all(&tokens).expect("mkdir tokens");
        let conf = dir.join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        let token = Token { conf };
        run(token
            .tool("softhsm2-util", dir)
            .args(["--init-token", "--free", "--label", "keyward"])
            .args(["--pin", PIN, "--so-pin", "654321"]))
        .assert_success("softhsm2-util --init-token");
        for (kind, id, label) in [("rsa:2048", "01", "rsa"), ("EC:prime256v1", "02", "ec")] {
            let out = run(token
                .tool("pkcs11-tool", dir)
                .args(["--module", PROVIDER, "--token-label", "keyward"])
                .args(["--login", "--pin", PIN, "--keypairgen", "--key-type", kind])
                .args(["--id", id, "--label", label]));
            out.assert_success("pkcs11-tool --keypairgen");
        }
        token
    }

    fn tool(&self, name: &str, dir: &Path) -> std::process::Command {
        let mut cmd = clean_command(require_tool(name), dir);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }
}

/// `ssh-add ARGS` with the PIN on stdin.
fn ssh_add_pin(agent: &Agent, args: &[&str]) -> Output {
    let pin_file = agent.dir().join(format!("pin-{}", unique()));
    fs::write(&pin_file, format!("{PIN}\n")).expect("write pin");
    run(agent
        .command("ssh-add")
        .args(args)
        .stdin(fs::File::open(&pin_file).expect("open pin")))
}

fn start(token: &Token) -> Agent {
    Agent::start_with(&AgentOpts {
        args: Vec::new(),
        env: vec![("SOFTHSM2_CONF".to_owned(), token.conf.display().to_string())],
    })
}

/// Whether the process `pid` has `lib` mapped.
fn maps(pid: u32, lib: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("read maps")
        .contains(lib)
}

#[test]
fn pkcs11_token_keys_list_sign_login_and_remove() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = Token::new(dir.path());
    let agent = start(&token);

    let out = ssh_add_pin(&agent, &["-s", PROVIDER]);
    out.assert_success(&format!("ssh-add -s; agent log:\n{}", agent.log()));
    let listed = agent.ssh_add(&["-L"]);
    listed.assert_success("ssh-add -L");
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "the token's two keys: {listed:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("ssh-rsa ")),
        "{listed:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ecdsa-sha2-nistp256 ")),
        "{listed:#?}"
    );
    assert!(
        !maps(agent.pid(), "libsofthsm2"),
        "the provider must not be loaded into the agent"
    );

    // Each key signs (ssh-keygen -Y sign through the agent), and the signature verifies.
    for (i, line) in lines.iter().enumerate() {
        let pub_dir = dir.path().join(format!("pub{i}"));
        fs::create_dir_all(&pub_dir).expect("mkdir");
        let pub_file = pub_dir.join("token.pub");
        fs::write(&pub_file, format!("{line}\n")).expect("write pub");
        let data = dir.path().join(format!("data{i}.txt"));
        fs::write(&data, b"signed by a token\n").expect("write data");
        run(agent
            .command("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&pub_file)
            .arg(&data))
        .assert_success(&format!(
            "ssh-keygen -Y sign with {line}; log:\n{}",
            agent.log()
        ));
        let signers = dir.path().join(format!("signers{i}"));
        fs::write(&signers, format!("t@keyward {line}\n")).expect("write signers");
        let mut sig = data.clone().into_os_string();
        sig.push(".sig");
        run(clean_command(require_tool("ssh-keygen"), dir.path())
            .args(["-Y", "verify", "-n", "file", "-I", "t@keyward", "-f"])
            .arg(&signers)
            .arg("-s")
            .arg(sig)
            .stdin(fs::File::open(&data).expect("open data")))
        .assert_success("ssh-keygen -Y verify");
    }

    // A login to an sshd that accepts only the token's keys (ssh asks for rsa-sha2-512).
    let host_dir = dir.path().join("host");
    fs::create_dir_all(&host_dir).expect("mkdir host");
    let host = Host::alone(
        &host_dir,
        "token-host",
        &format!("{}\n", lines.join("\n")),
        "",
    );
    let out = host.login(&agent, &host_dir, &[], "echo logged-in");
    assert!(
        out.status.success() && out.stdout.trim() == "logged-in",
        "login with a token key: {out:#?}\nagent log:\n{}",
        agent.log()
    );

    // Loaded once: a second -s is refused; -e removes the keys; then -s works again.
    ssh_add_pin(&agent, &["-s", PROVIDER]).assert_failure("second ssh-add -s");
    agent
        .ssh_add(&["-e", PROVIDER])
        .assert_success("ssh-add -e");
    let out = agent.ssh_add(&["-l"]);
    assert!(
        out.stdout.contains("no identities"),
        "no keys after -e: {out:#?}"
    );
    ssh_add_pin(&agent, &["-s", PROVIDER]).assert_success("ssh-add -s after -e");
}

#[test]
fn pkcs11_wrong_pin_and_provider_outside_allow_list_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = Token::new(dir.path());
    let agent = start(&token);
    // A copy of the provider outside /usr/lib*: refused before anything is loaded.
    let copy = dir.path().join("libsofthsm2.so");
    fs::copy(PROVIDER, &copy).expect("copy provider");
    let out = ssh_add_pin(&agent, &["-s", copy.to_str().expect("utf-8")]);
    out.assert_failure("ssh-add -s with a provider outside the allow-list");
    assert!(
        agent.log().contains("not on the allow-list"),
        "the agent says why: {}",
        agent.log()
    );
    // A wrong PIN: no keys.
    let pin_file = dir.path().join("bad-pin");
    fs::write(&pin_file, "000000\n").expect("write pin");
    run(agent
        .command("ssh-add")
        .args(["-s", PROVIDER])
        .stdin(fs::File::open(&pin_file).expect("open")))
    .assert_failure("ssh-add -s with a wrong PIN");
    assert!(agent.ssh_add(&["-l"]).stdout.contains("no identities"));
}

/// Over `ssh -A`, the far host may not load a provider into the agent (CVE-2023-38408), even
/// one on the allow-list; locally the same request works.
#[test]
fn pkcs11_provider_over_a_forwarded_agent_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = Token::new(dir.path());
    let agent = start(&token);
    let user_key = crate::util::keygen(dir.path(), "user", crate::util::KeyType::Ed25519, "");
    agent.add(&user_key, &[]);
    let host_dir = dir.path().join("host");
    fs::create_dir_all(&host_dir).expect("mkdir host");
    let host = Host::alone(
        &host_dir,
        "fwd-host",
        &format!("{}\n", user_key.public_line()),
        "AllowAgentForwarding yes\n",
    );
    let script = format!(
        "echo {PIN} | {add} -s {PROVIDER}; echo \"pkcs11=$?\"",
        add = require_tool("ssh-add").display()
    );
    let out = host.login(&agent, &host_dir, &["ForwardAgent=yes".to_owned()], &script);
    assert!(out.stdout.contains("pkcs11="), "script ran: {out:#?}");
    assert!(
        !out.stdout.contains("pkcs11=0"),
        "ssh-add -s over the forwarded agent must fail: {out:#?}"
    );
    assert!(
        agent
            .log()
            .contains("refused a PKCS#11 provider over a forwarded connection"),
        "refused for being forwarded: {}",
        agent.log()
    );
    assert!(
        !agent.ssh_add(&["-L"]).stdout.contains("ssh-rsa"),
        "no token key was added"
    );
    ssh_add_pin(&agent, &["-s", PROVIDER]).assert_success("local ssh-add -s");
}
