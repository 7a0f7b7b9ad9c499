//! The native CLI: `keyward config check` and `keyward-agent --config` (unknown keys name key and
//! line; settings are used), `keyward doctor` against a healthy and a missing agent, shell
//! completions and man pages.

use std::fs;
use std::os::unix::net::UnixStream;

use crate::service_units::{keyward_in, require};
use crate::util::{Agent, HANG_GUARD, agent_bin, clean_command, cli_bin, poll_until, run};

#[test]
fn config_check_accepts_the_example_and_names_an_unknown_key_and_its_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/keyward.toml");
    keyward_in(home.path(), &["config", "check", example]).assert_success("check the example");

    let bad = home.path().join("bad.toml");
    fs::write(
        &bad,
        "[agent]\nlifetime = \"1h\"\n\n[store]\nenabeld = false\n",
    )
    .expect("write");
    let out = keyward_in(
        home.path(),
        &["config", "check", bad.to_str().expect("utf-8")],
    );
    out.assert_failure("config check of a typo");
    let line = format!("{}:5:", bad.display());
    assert!(out.stderr.contains(&line), "names line 5: {out:#?}");
    assert!(out.stderr.contains("`enabeld`"), "names the key: {out:#?}");

    // The daemon refuses the same file rather than run with a default.
    let agent = run(clean_command(agent_bin(), home.path())
        .arg("--config")
        .arg(&bad));
    agent.assert_failure("keyward-agent --config with a typo");
    assert!(
        agent.stderr.contains(&line) && agent.stderr.contains("enabeld"),
        "{agent:#?}"
    );

    // The default file is the one checked without an argument.
    let default = home.path().join("config/keyward");
    fs::create_dir_all(&default).expect("mkdir");
    fs::write(default.join("keyward.toml"), "[log]\nlevel = \"debug\"\n").expect("write");
    let out = keyward_in(home.path(), &["config", "check"]);
    out.assert_success("config check of the default file");
    assert!(out.stderr.contains("keyward.toml is valid"), "{out:#?}");
}

#[test]
fn agent_and_cli_take_the_socket_from_the_default_config_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("from-config").join("agent.sock");
    let config_dir = dir.path().join(".config/keyward");
    fs::create_dir_all(&config_dir).expect("mkdir config");
    let config = config_dir.join("keyward.toml");
    fs::write(
        &config,
        format!(
            "[agent]\nsocket = \"{}\"\n\n[store]\nenabled = false\n",
            socket.display()
        ),
    )
    .expect("write config");
    // No --config: $HOME/.config/keyward/keyward.toml is read. -D: in the foreground (with no
    // flag at all it would detach, as ssh-agent does).
    let log = fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = clean_command(agent_bin(), dir.path())
        .arg("-D")
        .stderr(log)
        .spawn()
        .expect("spawn keyward-agent");
    let agent = Agent::adopt(child, dir, socket.clone());
    assert!(agent.ssh_add(&["-l"]).stdout.contains("no identities"));
    // store.enabled = false: like --no-store, no control socket.
    assert!(
        !socket.with_file_name("control.sock").exists(),
        "{}",
        agent.log()
    );
    // The CLI finds the agent where the same file puts it.
    let env = run(clean_command(cli_bin(), agent.dir()).arg("env"));
    env.assert_success("keyward env");
    assert!(
        env.stdout
            .contains(&format!("SSH_AUTH_SOCK={}; export", socket.display())),
        "{env:#?}"
    );

    let other = agent.dir().join("flag").join("agent.sock");
    let log = fs::File::create(agent.dir().join("agent2.log")).expect("log");
    let mut second = clean_command(agent_bin(), agent.dir())
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&other)
        .stderr(log)
        .spawn()
        .expect("spawn second keyward-agent");
    let up = poll_until(HANG_GUARD, || UnixStream::connect(&other).is_ok());
    let _ = second.kill();
    let _ = second.wait();
    assert!(up, "--socket overrides the config's socket");
}

#[test]
fn doctor_passes_with_a_healthy_agent_and_says_what_to_fix_without_one() {
    require("ssh", "openssh-client");
    let agent = Agent::start();
    let out = run(clean_command(cli_bin(), agent.dir())
        .arg("--socket")
        .arg(agent.socket())
        .arg("doctor")
        .env("SSH_AUTH_SOCK", agent.socket()));
    out.assert_success("keyward doctor with a running agent");
    for line in [
        "ok    SSH_AUTH_SOCK",
        "ok    socket directory",
        "ok    agent socket",
        "ok    agent ",
        "ok    OpenSSH",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}: {out:#?}");
    }
    assert!(
        out.stdout.contains("warn  passphrase"),
        "a store without a passphrase is flagged: {out:#?}"
    );

    let json = run(clean_command(cli_bin(), agent.dir())
        .arg("--socket")
        .arg(agent.socket())
        .args(["doctor", "--json"])
        .env("SSH_AUTH_SOCK", agent.socket()));
    let checks: serde_json::Value = serde_json::from_str(&json.stdout).expect("doctor --json");
    assert!(
        checks.as_array().is_some_and(|a| a
            .iter()
            .any(|c| c["name"] == "agent" && c["outcome"] == "ok")),
        "{checks}"
    );

    let missing = agent.dir().join("nowhere").join("agent.sock");
    let out = run(clean_command(cli_bin(), agent.dir())
        .arg("--socket")
        .arg(&missing)
        .arg("doctor"));
    out.assert_failure("keyward doctor without an agent");
    assert!(out.stdout.contains("FAIL  SSH_AUTH_SOCK"), "{out:#?}");
    assert!(out.stdout.contains("FAIL  agent"), "{out:#?}");
    assert!(out.stdout.contains("fix: "), "{out:#?}");
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let home = tempfile::tempdir().expect("tempdir");
    for (shell, marker) in [
        ("bash", "_keyward()"),
        ("zsh", "#compdef keyward"),
        ("fish", "complete -c keyward"),
    ] {
        let out = keyward_in(home.path(), &["completions", shell]);
        out.assert_success("keyward completions");
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..200.min(out.stdout.len())]
        );
        assert!(
            out.stdout.contains("doctor"),
            "{shell} completes subcommands"
        );
    }
    let man = home.path().join("man1");
    let out = keyward_in(home.path(), &["man", "--out", man.to_str().expect("utf-8")]);
    out.assert_success("keyward man");
    let page = fs::read_to_string(man.join("keyward.1")).expect("keyward.1");
    assert!(page.contains(".TH keyward 1"), "{page}");
    let install =
        fs::read_to_string(man.join("keyward-service-install.1")).expect("subcommand page");
    assert!(install.contains("no\\-enable"), "{install}");
}
