//! What the `keyward` commands do, behind the argument parsing in `src/bin/keyward.rs`.
//!
//! Every store command is a control [`Request`]: sent to the running daemon when one answers on
//! the control socket, otherwise run by the same [`Service`] on the store opened here.

pub mod certs;
pub mod keys;
pub mod passphrase;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::clock::SystemClock;
use crate::control::client::Client;
use crate::control::proto::{ErrorKind, Request, Response, StatusView};
use crate::service::Service;
use crate::store::{KdfParams, SledStore, StoreError};

/// Where the store and the daemon are.
#[derive(Debug, Clone)]
pub struct Locations {
    /// The agent socket (the control socket sits beside it).
    pub agent_socket: PathBuf,
    /// The store directory, if one is known.
    pub store: Option<PathBuf>,
    /// The file holding the store passphrase, for a sealed store opened here.
    pub store_passphrase_file: Option<PathBuf>,
}

impl Locations {
    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        crate::control::control_socket_for(&self.agent_socket)
    }

    fn store_dir(&self) -> anyhow::Result<&Path> {
        self.store
            .as_deref()
            .context("no store directory: pass --store DIR or set KEYWARD_STORE or HOME")
    }
}

/// The daemon, or the store opened by this process.
pub enum Backend {
    /// A running daemon.
    Daemon {
        /// The connection.
        client: Client,
        /// The passphrase file given on the command line, for privileged requests.
        passphrase_file: Option<PathBuf>,
    },
    /// The store, opened here because no daemon runs.
    Local {
        /// The service over the store.
        service: Box<Service>,
        /// The passphrase file given on the command line, for unsealing.
        passphrase_file: Option<PathBuf>,
    },
}

impl Backend {
    /// Connects to the daemon, or opens the store when none answers.
    pub fn open(at: &Locations) -> anyhow::Result<Self> {
        if let Some(client) = Client::connect(&at.control_socket())? {
            return Ok(Self::Daemon {
                client,
                passphrase_file: at.store_passphrase_file.clone(),
            });
        }
        let store = open_or_create(at.store_dir()?)?;
        Ok(Self::Local {
            service: Box::new(
                Service::new(Some(Arc::new(store)), None, Arc::new(SystemClock))
                    .with_defaults(configured_defaults())
                    .with_askpass(std::env::var_os("SSH_ASKPASS").map(PathBuf::from)),
            ),
            passphrase_file: at.store_passphrase_file.clone(),
        })
    }

    /// Sends a request; a failure answer becomes an error carrying its message. A privileged
    /// request the agent refuses without the store passphrase is sent again with it, asked for
    /// on the terminal (or read from the passphrase file).
    pub fn call(&mut self, request: impl Fn() -> Request) -> anyhow::Result<Response> {
        let response = self.send(&request)?;
        let Response::Error {
            kind: ErrorKind::PassphraseRequired,
            message,
        } = response
        else {
            return check(response);
        };
        let file = match self {
            Self::Daemon {
                passphrase_file, ..
            }
            | Self::Local {
                passphrase_file, ..
            } => passphrase_file.clone(),
        };
        let passphrase = passphrase::obtain(file.as_deref(), "Store passphrase: ")
            .with_context(|| message.clone())?;
        if let Self::Local { service, .. } = self {
            // The store opened here is sealed: the same passphrase unseals it, asked once.
            let _ = service.handle(Request::Unlock {
                passphrase: passphrase.clone(),
            });
        }
        check(self.send(&|| Request::Authorized {
            passphrase: passphrase.clone(),
            request: Box::new(request()),
        })?)
    }

    fn send(&mut self, request: &dyn Fn() -> Request) -> anyhow::Result<Response> {
        Ok(match self {
            Self::Daemon { client, .. } => client.call(request())?,
            Self::Local {
                service,
                passphrase_file,
            } => {
                let first = service.handle(request());
                if let Response::Error {
                    kind: ErrorKind::Sealed,
                    ..
                } = first
                {
                    let passphrase =
                        passphrase::obtain(passphrase_file.as_deref(), "Store passphrase: ")?;
                    check(service.handle(Request::Unlock { passphrase }))?;
                    service.handle(request())
                } else {
                    first
                }
            }
        })
    }

    /// Whether a daemon answers.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Self::Daemon { .. })
    }
}

/// Opens the store at `dir`, creating it without a passphrase on first use (as the daemon does);
/// `keyward init` before first use, or `keyward passwd` later, sets a passphrase.
pub fn open_or_create(dir: &Path) -> anyhow::Result<SledStore> {
    match SledStore::open(dir) {
        Err(StoreError::NotInitialised { .. }) => {
            let passphrase = passphrase::for_new_store(dir)?;
            if passphrase.is_none() {
                eprintln!(
                    "keyward: creating store {} without a passphrase (set one with `keyward passwd`)",
                    dir.display()
                );
            }
            SledStore::init(
                dir,
                passphrase.as_ref().map(|p| p.as_bytes()),
                KdfParams::default(),
            )
        }
        other => other,
    }
    .with_context(|| format!("cannot open the store at {}", dir.display()))
}

/// The defaults of the configuration file, if it can be read (a bad file is reported by the
/// commands that read it for more, and by `keyward config check`).
fn configured_defaults() -> crate::service::Defaults {
    crate::config::Config::load(None)
        .map(|(config, _)| crate::service::Defaults::from_config(&config))
        .unwrap_or_default()
}

/// Fits a table to the terminal: on a terminal, lines wider than it are cut with `…`; piped
/// output is left whole (scripts should use `--json` anyway). keyward prints no colours, so
/// `NO_COLOR` needs nothing more.
pub fn fit_to_terminal(text: &str) -> String {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return text.to_owned();
    }
    let Some((terminal_size::Width(width), _)) = terminal_size::terminal_size() else {
        return text.to_owned();
    };
    fit(text, usize::from(width))
}

fn fit(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.chars().count() > width && width > 1 {
            out.extend(line.chars().take(width - 1));
            out.push('…');
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Turns an error response into an error.
pub fn check(response: Response) -> anyhow::Result<Response> {
    match response {
        Response::Error { message, .. } => bail!("{message}"),
        other => Ok(other),
    }
}

/// `keyward init`: creates the store, with a passphrase unless `no_passphrase`.
pub fn init(
    at: &Locations,
    no_passphrase: bool,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<String> {
    if Client::connect(&at.control_socket())?.is_some() {
        bail!(
            "keyward-agent is running on {} and already has a store; `keyward status` shows it",
            at.control_socket().display()
        );
    }
    let dir = at.store_dir()?;
    let passphrase = if no_passphrase {
        None
    } else {
        Some(passphrase::obtain_new(passphrase_file)?)
    };
    SledStore::init(
        dir,
        passphrase.as_ref().map(|p| p.as_bytes()),
        KdfParams::default(),
    )
    .with_context(|| format!("cannot create a store at {}", dir.display()))?;
    Ok(match passphrase {
        Some(_) => format!(
            "created store {} (encrypted with your passphrase)",
            dir.display()
        ),
        None => format!(
            "created store {} WITHOUT a passphrase: private keys are protected by file permissions only",
            dir.display()
        ),
    })
}

/// `keyward status` as text.
pub fn format_status(status: &StatusView, socket: &Path) -> String {
    let mut out = String::new();
    match status.pid {
        Some(pid) => out.push_str(&format!(
            "agent:      running (pid {pid}) on {}\n",
            socket.display()
        )),
        None => out.push_str("agent:      not running (store opened directly)\n"),
    }
    out.push_str(&format!("store:      {}\n", status.store));
    out.push_str(&format!(
        "protection: {}\n",
        if status.passphrase_set {
            "passphrase (Argon2id + XChaCha20-Poly1305)"
        } else {
            "NO PASSPHRASE: private keys are protected by file permissions only"
        }
    ));
    out.push_str(&format!(
        "sealed:     {}\n",
        if status.sealed {
            "yes (run `keyward unlock`)"
        } else {
            "no"
        }
    ));
    out.push_str(&format!("keys:       {}\n", status.key_count));
    out.push_str(&format!("certs:      {}\n", status.cert_count));
    if let Some(n) = status.agent_keys {
        out.push_str(&format!("served:     {n} keys in the agent\n"));
    }
    out
}

#[cfg(test)]
mod fit_tests {
    #[test]
    fn long_lines_are_cut_to_the_width() {
        assert_eq!(super::fit("abcdef\nab\n", 4), "abc…\nab\n");
    }
}
