//! The service files as `keyward service install` writes them: systemd's own `systemd-analyze
//! verify` accepts the units without a warning, and the `LaunchAgent` plist parses (with python3's
//! plistlib, as `plutil` is macOS-only) and names the real program and both sockets.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Output, PATH, clean_command, cli_bin, run};

/// Panics, with the Debian package to install, when `name` is not on [`PATH`].
pub fn require(name: &str, package: &str) -> PathBuf {
    PATH.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "required tool `{name}` is not installed; run `scripts/test` or \
                 `apt-get install -y {package}`"
            )
        })
}

/// Runs `keyward ARGS` with `HOME=home`, `XDG_CONFIG_HOME=home/config` and
/// `XDG_RUNTIME_DIR=home/run`.
pub fn keyward_in(home: &Path, args: &[&str]) -> Output {
    let runtime = home.join("run");
    fs::create_dir_all(&runtime).expect("mkdir run");
    run(clean_command(cli_bin(), home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(args))
}

/// The `keyward-agent` beside the CLI, as `service install` finds it.
fn agent_path() -> PathBuf {
    fs::canonicalize(crate::util::agent_bin()).expect("canonical agent path")
}

#[test]
fn installed_systemd_units_pass_systemd_analyze_verify() {
    let analyze = require("systemd-analyze", "systemd");
    let home = tempfile::tempdir().expect("tempdir");
    let out = keyward_in(
        home.path(),
        &["service", "install", "--manager", "systemd", "--no-enable"],
    );
    out.assert_success("keyward service install --no-enable");
    assert_eq!(
        out.stdout.trim(),
        "export SSH_AUTH_SOCK=\"$XDG_RUNTIME_DIR/keyward/agent.sock\"",
        "the profile line: {out:#?}"
    );
    let units = home.path().join("config/systemd/user");
    let service = fs::read_to_string(units.join("keyward.service")).expect("read service");
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= line");
    assert_eq!(
        fs::canonicalize(exec).expect("ExecStart names a file"),
        agent_path()
    );
    let store = home.path().join(".local/share/keyward");
    assert!(
        service.contains(&format!("\nReadWritePaths={}\n", store.display())),
        "{service}"
    );
    assert!(store.is_dir(), "install creates the store directory");
    for setting in [
        "Type=notify",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "IPAddressDeny=any",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "LimitCORE=0",
    ] {
        assert!(service.lines().any(|l| l == setting), "missing {setting}");
    }
    for (unit, name, path) in [
        ("keyward.socket", "agent", "%t/keyward/agent.sock"),
        (
            "keyward-control.socket",
            "control",
            "%t/keyward/control.sock",
        ),
    ] {
        let text = fs::read_to_string(units.join(unit)).expect("read socket unit");
        for line in [
            format!("ListenStream={path}"),
            format!("FileDescriptorName={name}"),
            "SocketMode=0600".to_owned(),
            "DirectoryMode=0700".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
    }

    let verify = run(clean_command(&analyze, home.path())
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .current_dir(&units)
        .args([
            "--user",
            "verify",
            "keyward.service",
            "keyward.socket",
            "keyward-control.socket",
        ]));
    verify.assert_success("systemd-analyze --user verify");
    // verify only warns (exit 0) about unknown keys or bad values: any output is a finding.
    assert_eq!(
        verify.stderr.trim(),
        "",
        "systemd-analyze warnings: {verify:#?}"
    );

    let out = keyward_in(
        home.path(),
        &[
            "service",
            "uninstall",
            "--manager",
            "systemd",
            "--no-disable",
        ],
    );
    out.assert_success("keyward service uninstall");
    assert!(!units.join("keyward.service").exists());
    assert!(store.is_dir(), "uninstall keeps the store");
}

#[test]
fn installed_launchd_plist_parses_and_names_program_and_sockets() {
    let python = require("python3", "python3");
    let home = tempfile::tempdir().expect("tempdir");
    let out = keyward_in(
        home.path(),
        &["service", "install", "--manager", "launchd", "--no-enable"],
    );
    out.assert_success("keyward service install --manager launchd --no-enable");
    let socket_dir = home.path().join("run/keyward");
    assert_eq!(
        out.stdout.trim(),
        format!(
            "export SSH_AUTH_SOCK=\"{}\"",
            socket_dir.join("agent.sock").display()
        )
    );
    let plist = home
        .path()
        .join("Library/LaunchAgents/org.keyward.agent.plist");
    let parsed = run(clean_command(&python, home.path())
        .arg("-c")
        .arg(
            "import json, plistlib, sys\n\
         with open(sys.argv[1], 'rb') as f: print(json.dumps(plistlib.load(f)))",
        )
        .arg(&plist));
    parsed.assert_success("plistlib.load");
    let value: serde_json::Value = serde_json::from_str(&parsed.stdout).expect("json");
    assert_eq!(value["Label"], "org.keyward.agent");
    let program = value["ProgramArguments"][0].as_str().expect("program");
    assert_eq!(
        fs::canonicalize(program).expect("program exists"),
        agent_path()
    );
    for (name, file) in [("agent", "agent.sock"), ("control", "control.sock")] {
        let socket = &value["Sockets"][name];
        assert_eq!(
            socket["SockPathName"].as_str(),
            Some(socket_dir.join(file).to_str().expect("utf-8")),
            "{name} socket in {value}"
        );
        assert_eq!(socket["SockPathMode"], 0o600, "{name} socket mode");
    }
    assert_eq!(value["Umask"], 0o077);
    assert_eq!(value["HardResourceLimits"]["Core"], 0);
    assert!(
        !fs::read_to_string(&plist)
            .expect("read plist")
            .contains("__"),
        "no placeholder left"
    );
}
