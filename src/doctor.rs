//! `keyward doctor`: checks that ssh will find and can use the agent, and says what to do about
//! each problem.
//!
//! Each check is a small function returning a [`Check`]; [`run`] does them all in order. Nothing
//! here changes anything (no store is created, no socket replaced).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// The first OpenSSH release that sends `session-bind@openssh.com` (destination restrictions).
pub const SESSION_BIND_OPENSSH: (u32, u32) = (8, 9);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but something is weaker or different than expected.
    Warn,
    /// Broken: `keyward doctor` exits non-zero.
    Fail,
    /// Could not be checked.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about it, when something is wrong.
    pub fix: Option<String>,
}

fn check(name: &'static str, outcome: Outcome, detail: String, fix: Option<&str>) -> Check {
    Check {
        name,
        outcome,
        detail,
        fix: fix.map(str::to_owned),
    }
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `$SSH_AUTH_SOCK`.
    pub ssh_auth_sock: Option<PathBuf>,
    /// keyward's agent socket (the control socket is beside it).
    pub agent_socket: PathBuf,
    /// The configuration file to validate, if any.
    pub config: Option<PathBuf>,
}

/// Runs every check.
pub fn run(inputs: &Inputs) -> Vec<Check> {
    let socket = &inputs.agent_socket;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let control = crate::control::control_socket_for(socket);
    let mut checks = vec![
        ssh_auth_sock(inputs.ssh_auth_sock.as_deref(), socket),
        path_mode("socket directory", dir, 0o700),
        path_mode("agent socket", socket, 0o600),
        control_socket(&control),
        agent_answers(socket),
    ];
    checks.extend(store(&control));
    checks.push(openssh(ssh_version().as_deref()));
    checks.push(config(inputs.config.as_deref()));
    checks
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.outcome == Outcome::Fail)
}

/// The checks as text, one line each plus a `fix:` line under each problem.
pub fn format(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.outcome {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        };
        out.push_str(&format!("{tag:<5} {:<17} {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<17} fix: {fix}\n", ""));
        }
    }
    out
}

/// `SSH_AUTH_SOCK` is set and names keyward's socket.
pub fn ssh_auth_sock(env: Option<&Path>, ours: &Path) -> Check {
    let profile = format!(
        "add `export SSH_AUTH_SOCK={}` to your shell profile (`keyward service install` prints the line), or run eval \"$(keyward start)\"",
        ours.display()
    );
    match env {
        None => check(
            "SSH_AUTH_SOCK",
            Outcome::Fail,
            "not set: ssh will not use any agent".into(),
            Some(&profile),
        ),
        Some(path) if same_file(path, ours) => check(
            "SSH_AUTH_SOCK",
            Outcome::Ok,
            format!("points at keyward ({})", path.display()),
            None,
        ),
        Some(path) => check(
            "SSH_AUTH_SOCK",
            Outcome::Warn,
            format!(
                "points at {}, not at keyward's {}: ssh uses another agent",
                path.display(),
                ours.display()
            ),
            Some(&format!(
                "{profile}; or set `IdentityAgent {}` in ~/.ssh/config",
                ours.display()
            )),
        ),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// `path` exists, belongs to us and has exactly `mode`.
pub fn path_mode(name: &'static str, path: &Path, mode: u32) -> Check {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            return check(
                name,
                Outcome::Fail,
                format!("{}: {e}", path.display()),
                Some(
                    "start the agent: `systemctl --user start keyward.socket`, or eval \"$(keyward start)\"",
                ),
            );
        }
    };
    let uid = nix::unistd::getuid().as_raw();
    let actual = meta.permissions().mode() & 0o7777;
    if meta.uid() != uid {
        return check(
            name,
            Outcome::Fail,
            format!(
                "{} belongs to uid {}, not to you (uid {uid})",
                path.display(),
                meta.uid()
            ),
            Some(
                "another user controls this path: remove it, or use a socket under $XDG_RUNTIME_DIR",
            ),
        );
    }
    if actual & !mode != 0 {
        return check(
            name,
            Outcome::Fail,
            format!(
                "{} has mode {actual:04o}; others may reach it",
                path.display()
            ),
            Some(&format!("chmod {mode:04o} {}", path.display())),
        );
    }
    check(
        name,
        Outcome::Ok,
        format!("{} (mode {actual:04o}, yours)", path.display()),
        None,
    )
}

/// The control socket: like [`path_mode`], but its absence only warns, since an agent run with
/// `--no-store` has none (and a missing agent fails its own check).
fn control_socket(control: &Path) -> Check {
    if control.exists() {
        return path_mode("control socket", control, 0o600);
    }
    check(
        "control socket",
        Outcome::Warn,
        format!(
            "{} is missing: `keyward` cannot manage the agent",
            control.display()
        ),
        Some(
            "run the agent with a store (not --no-store); under systemd enable keyward-control.socket",
        ),
    )
}

/// The agent answers a request for its identities (what `ssh-add -l` sends).
pub fn agent_answers(socket: &Path) -> Check {
    let fix = "start it: `systemctl --user start keyward.socket`, or eval \"$(keyward start)\"; its log is `journalctl --user -u keyward` or agent.log beside the socket";
    if let Err(e @ crate::socket::SocketError::ForeignServer { .. }) =
        crate::socket::connect(socket)
    {
        return check(
            "agent",
            Outcome::Fail,
            e.to_string(),
            Some("never point SSH_AUTH_SOCK at a socket another user serves"),
        );
    }
    match list_identities(socket) {
        Ok(n) => check(
            "agent",
            Outcome::Ok,
            format!("answers on {} ({n} keys)", socket.display()),
            None,
        ),
        Err(e) => check(
            "agent",
            Outcome::Fail,
            format!("no answer on {}: {e}", socket.display()),
            Some(fix),
        ),
    }
}

/// Sends `SSH_AGENTC_REQUEST_IDENTITIES` and returns how many keys the agent lists.
pub fn list_identities(socket: &Path) -> std::io::Result<u32> {
    // Checked to be served by our uid before the request is sent.
    let mut stream = crate::socket::connect(socket)
        .map_err(std::io::Error::other)?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&[0, 0, 0, 1, 11])?;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header)?;
    if header[4] != 12 {
        return Err(std::io::Error::other(format!(
            "unexpected answer type {} (is this an SSH agent?)",
            header[4]
        )));
    }
    Ok(u32::from_be_bytes([
        header[5], header[6], header[7], header[8],
    ]))
}

/// `ssh -V`'s output (it prints to stderr), or `None` if ssh is not installed.
pub fn ssh_version() -> Option<String> {
    let out = std::process::Command::new("ssh").arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Some(text)
}

/// Parses `OpenSSH_9.2p1 ...` into `(9, 2)`.
pub fn parse_openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// OpenSSH is new enough for `session-bind@openssh.com`.
pub fn openssh(version: Option<&str>) -> Check {
    let Some(text) = version else {
        return check(
            "OpenSSH",
            Outcome::Fail,
            "ssh is not installed".into(),
            Some("install the OpenSSH client (apt-get install openssh-client)"),
        );
    };
    match parse_openssh_version(text) {
        Some(v) if v >= SESSION_BIND_OPENSSH => check(
            "OpenSSH",
            Outcome::Ok,
            format!("{text} (session-bind supported)"),
            None,
        ),
        Some(_) => check(
            "OpenSSH",
            Outcome::Warn,
            format!("{text}: older than 8.9, so destination restrictions cannot be enforced"),
            Some("upgrade OpenSSH to 8.9 or newer"),
        ),
        None => check(
            "OpenSSH",
            Outcome::Warn,
            format!("cannot read the version from {text:?}"),
            None,
        ),
    }
}

/// The configuration file is valid.
pub fn config(explicit: Option<&Path>) -> Check {
    match crate::config::Config::load(explicit) {
        Ok((_, Some(path))) => check(
            "config",
            Outcome::Ok,
            format!("{} is valid", path.display()),
            None,
        ),
        Ok((_, None)) => check(
            "config",
            Outcome::Ok,
            "no config file; defaults apply".into(),
            None,
        ),
        Err(e) => check(
            "config",
            Outcome::Fail,
            e.to_string(),
            Some(
                "fix the file (`keyward config check` shows the line); config/keyward.toml documents every key",
            ),
        ),
    }
}

#[path = "doctor_store.rs"]
mod store_checks;
pub use store_checks::store;

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
