//! The `keyward` commands that make it feel native: `service install|uninstall|status`,
//! `doctor`, `config check|example`, `completions` and `man`. The binary flattens
//! [`NativeCommand`] into its own subcommands and calls [`run`].

// Doc comments on the clap types are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::doctor;
use crate::install::{self, InstallError, Manager};

/// The example configuration, every key with its default.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/keyward.toml");

/// Why a native command failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// Installing or removing the service failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing output failed.
    #[error("cannot write {0}")]
    Io(String, #[source] std::io::Error),
}

/// The commands this module runs.
#[derive(clap::Subcommand, Debug)]
pub enum NativeCommand {
    /// Install, remove or inspect keyward as a user service (systemd units or a LaunchAgent).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Check that ssh finds the agent and that it is set up safely, and say how to fix problems.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The configuration file to check (default: the one keyward-agent reads).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check or print the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: keyward completions bash > /etc/bash_completion.d/keyward
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (keyward.1, keyward-key.1, ..., keyward-agent.1) into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// `keyward service ...`.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum ServiceCommand {
    /// Write the units (or plist) with this keyward-agent's path, enable and start them, and
    /// print the line for your shell profile.
    Install {
        /// systemd or launchd (default: this system's).
        #[arg(long)]
        manager: Option<Manager>,
        /// Only write the files; do not run systemctl or launchctl.
        #[arg(long)]
        no_enable: bool,
    },
    /// Stop and disable the service and remove its files (the store is kept).
    Uninstall {
        /// systemd or launchd (default: this system's).
        #[arg(long)]
        manager: Option<Manager>,
        /// Only remove the files; do not run systemctl or launchctl.
        #[arg(long)]
        no_disable: bool,
    },
    /// Show whether the service is installed, enabled and answering.
    Status {
        /// systemd or launchd (default: this system's).
        #[arg(long)]
        manager: Option<Manager>,
    },
}

/// `keyward config ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file (default: $XDG_CONFIG_HOME/keyward/keyward.toml).
    Check {
        /// The file.
        file: Option<PathBuf>,
    },
    /// Print the documented example configuration (every key with its default).
    Example,
}

/// Runs `command`; `root` is the CLI's clap definition, for completions and man pages.
pub fn run(
    command: NativeCommand,
    agent_socket: &Path,
    store: Option<PathBuf>,
    root: clap::Command,
) -> Result<ExitCode, NativeError> {
    match command {
        NativeCommand::Service(service) => return service_command(service, agent_socket, store),
        NativeCommand::Doctor { json, config } => {
            let checks = doctor::run(&doctor::Inputs {
                ssh_auth_sock: std::env::var_os("SSH_AUTH_SOCK")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                agent_socket: agent_socket.to_owned(),
                config,
            });
            if json {
                let text = serde_json::to_string_pretty(&checks).expect("checks serialize");
                println!("{text}");
            } else {
                print!("{}", doctor::format(&checks));
            }
            return Ok(if doctor::failed(&checks) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        NativeCommand::Config(ConfigCommand::Check { file }) => {
            match Config::load(file.as_deref())? {
                (_, Some(path)) => eprintln!("keyward: {} is valid", path.display()),
                (_, None) => eprintln!(
                    "keyward: no configuration file at {}; the defaults apply",
                    crate::config::default_path().map_or_else(
                        || "~/.config/keyward/keyward.toml".into(),
                        |p| p.display().to_string()
                    )
                ),
            }
        }
        NativeCommand::Config(ConfigCommand::Example) => print!("{EXAMPLE_CONFIG}"),
        NativeCommand::Completions { shell } => {
            let mut root = root;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut root, "keyward", &mut out);
            std::io::stdout()
                .write_all(&out)
                .map_err(|e| NativeError::Io("stdout".into(), e))?;
        }
        NativeCommand::Man { out } => {
            let mut written = write_man_pages(root, &out)?;
            written.extend(write_man_pages(crate::daemon::cmdline::command(), &out)?);
            for path in written {
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `NAME.1` for `root` and `NAME-SUB.1` for each subcommand, recursively.
pub fn write_man_pages(root: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, NativeError> {
    let io = |path: &Path| {
        let shown = path.display().to_string();
        move |e| NativeError::Io(shown, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut root = root;
    root.build();
    let mut pending = vec![root];
    let mut written = Vec::new();
    while let Some(cmd) = pending.pop() {
        // build() names each subcommand `parent-sub` in its display name.
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        pending.extend(
            cmd.get_subcommands()
                .filter(|sub| sub.get_name() != "help")
                .cloned(),
        );
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(io(dir))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).map_err(io(&path))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

fn service_command(
    command: ServiceCommand,
    agent_socket: &Path,
    store: Option<PathBuf>,
) -> Result<ExitCode, NativeError> {
    match command {
        ServiceCommand::Install { manager, no_enable } => {
            let manager = manager.unwrap_or_else(Manager::native);
            service_install(manager, no_enable, agent_socket, store)
        }
        ServiceCommand::Uninstall {
            manager,
            no_disable,
        } => service_uninstall(manager.unwrap_or_else(Manager::native), no_disable),
        ServiceCommand::Status { manager } => {
            let manager = manager.unwrap_or_else(Manager::native);
            service_status(manager, agent_socket, store)
        }
    }
}

fn manager_tool(manager: Manager) -> &'static str {
    match manager {
        Manager::Systemd => "systemctl",
        Manager::Launchd => "launchctl",
    }
}

fn service_install(
    manager: Manager,
    no_enable: bool,
    agent_socket: &Path,
    store: Option<PathBuf>,
) -> Result<ExitCode, NativeError> {
    let dir = manager.dir()?;
    let paths = install::default_paths(store)?;
    if let Some(pid) = crate::launch::running_agent(agent_socket) {
        eprintln!(
            "keyward: an agent (pid {pid}) already serves {}; stop it (`keyward stop`) so the \
             service can take the socket",
            agent_socket.display()
        );
    }
    for path in install::write(manager, &dir, &paths)? {
        eprintln!("keyward: wrote {}", path.display());
    }
    let commands = install::enable_commands(manager, &dir);
    if no_enable {
        eprintln!("keyward: not enabled (--no-enable); to start it run:");
        for command in &commands {
            eprintln!("  {}", command.join(" "));
        }
    } else if install::manager_present(manager) {
        for command in &commands {
            install::run_manager(command)?;
            eprintln!("keyward: ran {}", command.join(" "));
        }
    } else {
        eprintln!(
            "keyward: {} is not installed here; the files are written but not enabled",
            manager_tool(manager)
        );
    }
    eprintln!("keyward: add this line to your shell profile (~/.profile, ~/.bashrc, ~/.zshrc):");
    println!("{}", install::profile_line(manager, &paths));
    Ok(ExitCode::SUCCESS)
}

fn service_uninstall(manager: Manager, no_disable: bool) -> Result<ExitCode, NativeError> {
    if !no_disable && install::manager_present(manager) {
        for command in install::disable_commands(manager) {
            // Already stopped or never loaded is fine: the files go either way.
            if let Err(e) = install::run_manager(&command) {
                eprintln!("keyward: {e}");
            }
        }
    }
    let removed = install::remove(manager, &manager.dir()?)?;
    for path in &removed {
        eprintln!("keyward: removed {}", path.display());
    }
    if removed.is_empty() {
        eprintln!("keyward: nothing was installed");
    }
    eprintln!("keyward: the store is kept; remove the SSH_AUTH_SOCK line from your shell profile");
    Ok(ExitCode::SUCCESS)
}

fn service_status(
    manager: Manager,
    agent_socket: &Path,
    store: Option<PathBuf>,
) -> Result<ExitCode, NativeError> {
    let dir = manager.dir()?;
    let files = install::render(manager, &install::default_paths(store)?);
    for (name, _) in &files.0 {
        let path = dir.join(name);
        let state = if path.exists() {
            "installed"
        } else {
            "not installed"
        };
        println!("{state:<13} {}", path.display());
    }
    if manager == Manager::Systemd && install::manager_present(manager) {
        for unit in install::SOCKET_UNITS.iter().chain(&["keyward.service"]) {
            let state = |verb: &str| {
                std::process::Command::new("systemctl")
                    .args(["--user", verb, unit])
                    .output()
                    .map_or_else(
                        |_| "unknown".to_owned(),
                        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
                    )
            };
            println!(
                "{unit:<23} {} / {}",
                state("is-enabled"),
                state("is-active")
            );
        }
    }
    if let Some(pid) = crate::launch::running_agent(agent_socket) {
        println!(
            "agent         running (pid {pid}) on {}",
            agent_socket.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("agent         not answering on {}", agent_socket.display());
        Ok(ExitCode::FAILURE)
    }
}
