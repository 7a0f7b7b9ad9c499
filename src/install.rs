//! `keyward service install|uninstall|status`: the systemd user units (`systemd/`) or the
//! `LaunchAgent` plist (`launchd/`) written for this user with the real paths, enabled and started
//! through `systemctl --user` or `launchctl` where they exist.
//!
//! The files in the repository are the templates, embedded here, so what is installed is exactly
//! what the tests verify.

use std::path::{Path, PathBuf};
use std::process::Command;

const SERVICE: &str = include_str!("../systemd/keyward.service");
const AGENT_SOCKET: &str = include_str!("../systemd/keyward.socket");
const CONTROL_SOCKET: &str = include_str!("../systemd/keyward-control.socket");
const PLIST: &str = include_str!("../launchd/org.keyward.agent.plist");
/// The `LaunchAgent` label (and file name, with `.plist`).
pub const LAUNCHD_LABEL: &str = "org.keyward.agent";
/// The socket units, agent first.
pub const SOCKET_UNITS: [&str; 2] = ["keyward.socket", "keyward-control.socket"];

/// Why installing or removing the service failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No home directory to install into.
    #[error("HOME is not set, so there is no user service directory")]
    NoHome,
    /// A file could not be written or removed.
    #[error("cannot {what} {path}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` or `launchctl` failed.
    #[error("`{command}` failed: {detail}")]
    Manager {
        /// The command line.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
}

/// Which service manager to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manager {
    /// systemd user units (Linux).
    Systemd,
    /// A launchd `LaunchAgent` (macOS).
    Launchd,
}

impl Manager {
    /// This system's manager.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }

    /// The directory its user files go to: `$XDG_CONFIG_HOME/systemd/user` or
    /// `~/Library/LaunchAgents`.
    pub fn dir(self) -> Result<PathBuf, InstallError> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").ok_or(InstallError::NoHome);
        Ok(match self {
            Self::Systemd => var("XDG_CONFIG_HOME")
                .map_or_else(|| home.map(|h| h.join(".config")), Ok)?
                .join("systemd/user"),
            Self::Launchd => home?.join("Library/LaunchAgents"),
        })
    }
}

/// What gets installed: the files' names and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files(pub Vec<(String, String)>);

/// The paths the installed files name.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The `keyward-agent` binary.
    pub agent: PathBuf,
    /// The store directory (writable under systemd's `ProtectSystem=strict`).
    pub store: PathBuf,
    /// The socket directory (launchd, which cannot expand `$XDG_RUNTIME_DIR`).
    pub socket_dir: PathBuf,
    /// The log file (launchd; systemd logs to the journal).
    pub log: PathBuf,
}

/// Quotes a path for a systemd unit: `%` doubled (specifiers), quoted if it has spaces.
fn unit_path(path: &Path) -> String {
    let text = path.display().to_string().replace('%', "%%");
    if text.contains(char::is_whitespace) {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The files for `manager`, filled in with `paths`.
pub fn render(manager: Manager, paths: &Paths) -> Files {
    match manager {
        Manager::Systemd => {
            let service: String = SERVICE
                .lines()
                .map(|line| {
                    if line.starts_with("ExecStart=") {
                        format!("ExecStart={}\n", unit_path(&paths.agent))
                    } else if line.starts_with("ReadWritePaths=") {
                        format!("ReadWritePaths={}\n", unit_path(&paths.store))
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect();
            Files(vec![
                ("keyward.service".to_owned(), service),
                (SOCKET_UNITS[0].to_owned(), AGENT_SOCKET.to_owned()),
                (SOCKET_UNITS[1].to_owned(), CONTROL_SOCKET.to_owned()),
            ])
        }
        Manager::Launchd => {
            let plist = PLIST
                .replace(
                    "__KEYWARD_AGENT__",
                    &xml(&paths.agent.display().to_string()),
                )
                .replace(
                    "__SOCKET_DIR__",
                    &xml(&paths.socket_dir.display().to_string()),
                )
                .replace("__LOG_FILE__", &xml(&paths.log.display().to_string()));
            Files(vec![(format!("{LAUNCHD_LABEL}.plist"), plist)])
        }
    }
}

/// The line to add to the shell profile so `ssh` finds the agent.
pub fn profile_line(manager: Manager, paths: &Paths) -> String {
    match manager {
        Manager::Systemd => {
            "export SSH_AUTH_SOCK=\"$XDG_RUNTIME_DIR/keyward/agent.sock\"".to_owned()
        }
        Manager::Launchd => format!(
            "export SSH_AUTH_SOCK=\"{}\"",
            paths.socket_dir.join("agent.sock").display()
        ),
    }
}

/// The default paths for this user: the `keyward-agent` beside this program, the default store
/// and socket directory.
pub fn default_paths(store: Option<PathBuf>) -> Result<Paths, InstallError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or(InstallError::NoHome)?;
    let agent = crate::launch::agent_binary();
    // The unit needs an absolute path; canonicalize resolves symlinks such as ~/.cargo/bin ones
    // only when it must (a relative name from PATH).
    let agent = if agent.is_absolute() {
        agent
    } else {
        which(&agent).unwrap_or(agent)
    };
    Ok(Paths {
        agent,
        store: store
            .or_else(crate::paths::default_store_dir)
            .unwrap_or_else(|| home.join(".local/share/keyward")),
        socket_dir: crate::socket::default_dir(),
        log: home.join("Library/Logs/keyward-agent.log"),
    })
}

/// The first `name` on `PATH`.
pub fn which(name: &Path) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + use<> {
    let path = path.to_owned();
    move |source| InstallError::Io { what, path, source }
}

/// Writes the files into `dir`, creating the store (and for launchd the socket) directory
/// mode 0700 since the service needs them to exist; returns the written paths.
pub fn write(manager: Manager, dir: &Path, paths: &Paths) -> Result<Vec<PathBuf>, InstallError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.store)
        .map_err(io("create", &paths.store))?;
    if manager == Manager::Launchd {
        // launchd binds the sockets there: the directory gets the same lstat checks as ours.
        crate::socket::prepare_dir(&paths.socket_dir)
            .map_err(|e| io("prepare", &paths.socket_dir)(std::io::Error::other(e)))?;
    }
    let mut written = Vec::new();
    for (name, text) in render(manager, paths).0 {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io("write", &path))?;
        written.push(path);
    }
    Ok(written)
}

/// Removes the installed files from `dir`; returns the removed paths.
pub fn remove(manager: Manager, dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let names = match manager {
        Manager::Systemd => vec![
            "keyward.service".to_owned(),
            SOCKET_UNITS[0].to_owned(),
            SOCKET_UNITS[1].to_owned(),
        ],
        Manager::Launchd => vec![format!("{LAUNCHD_LABEL}.plist")],
    };
    let mut removed = Vec::new();
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
    }
    Ok(removed)
}

/// The manager commands that enable and start the installed service.
pub fn enable_commands(manager: Manager, dir: &Path) -> Vec<Vec<String>> {
    let strings = |args: &[&str]| args.iter().map(|&a| a.to_owned()).collect::<Vec<_>>();
    match manager {
        Manager::Systemd => vec![
            strings(&["systemctl", "--user", "daemon-reload"]),
            strings(&[
                "systemctl",
                "--user",
                "enable",
                "--now",
                SOCKET_UNITS[0],
                SOCKET_UNITS[1],
            ]),
        ],
        Manager::Launchd => vec![vec![
            "launchctl".to_owned(),
            "bootstrap".to_owned(),
            format!("gui/{}", nix::unistd::getuid()),
            dir.join(format!("{LAUNCHD_LABEL}.plist"))
                .display()
                .to_string(),
        ]],
    }
}

/// The manager commands that stop and disable the service.
pub fn disable_commands(manager: Manager) -> Vec<Vec<String>> {
    let strings = |args: &[&str]| args.iter().map(|&a| a.to_owned()).collect::<Vec<_>>();
    match manager {
        Manager::Systemd => vec![strings(&[
            "systemctl",
            "--user",
            "disable",
            "--now",
            "keyward.service",
            SOCKET_UNITS[0],
            SOCKET_UNITS[1],
        ])],
        Manager::Launchd => vec![vec![
            "launchctl".to_owned(),
            "bootout".to_owned(),
            format!("gui/{}/{LAUNCHD_LABEL}", nix::unistd::getuid()),
        ]],
    }
}

/// Runs `command` (a manager command line); its failure is an error naming it.
pub fn run_manager(command: &[String]) -> Result<String, InstallError> {
    let shown = command.join(" ");
    let (program, args) = command
        .split_first()
        .expect("a command line is never empty");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| InstallError::Manager {
            command: shown.clone(),
            detail: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(InstallError::Manager {
            command: shown,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Whether the manager's command-line tool is installed.
pub fn manager_present(manager: Manager) -> bool {
    which(Path::new(match manager {
        Manager::Systemd => "systemctl",
        Manager::Launchd => "launchctl",
    }))
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            agent: "/opt/key ward/bin/keyward-agent".into(),
            store: "/home/u/.local/share/keyward".into(),
            socket_dir: "/tmp/keyward-501".into(),
            log: "/Users/u/Library/Logs/keyward-agent.log".into(),
        }
    }

    #[test]
    fn the_service_names_the_real_binary_and_store() {
        let files = render(Manager::Systemd, &paths());
        let service = &files.0[0].1;
        assert!(service.contains("\nExecStart=\"/opt/key ward/bin/keyward-agent\"\n"));
        assert!(service.contains("\nReadWritePaths=/home/u/.local/share/keyward\n"));
        assert!(!service.contains("/usr/bin/keyward-agent"));
        assert_eq!(unit_path(Path::new("/a%b")), "/a%%b");
    }

    #[test]
    fn the_plist_has_no_placeholder_left() {
        let files = render(Manager::Launchd, &paths());
        let plist = &files.0[0].1;
        assert!(!plist.contains("__"), "{plist}");
        assert!(plist.contains("<string>/tmp/keyward-501/agent.sock</string>"));
        assert_eq!(
            profile_line(Manager::Launchd, &paths()),
            "export SSH_AUTH_SOCK=\"/tmp/keyward-501/agent.sock\""
        );
    }
}
