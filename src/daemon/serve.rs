//! Running the agent process: logging, hardening, the store, the sockets, then
//! [`super::run`] and the control server until a signal (or, in command mode, the command's exit)
//! stops it.
//!
//! The socket may arrive bound already (ssh-agent modes bind before they fork, so errors reach
//! the terminal), be passed by systemd or launchd, or be bound here.

use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::agent::{AgentConfig, Keyring};
use crate::clock::SystemClock;
use crate::control::proto::{Request, Response};
use crate::service::Service;
use crate::store::{KdfParams, SledStore, Store, StoreError};
use crate::{activation, config, harden, launch, paths, socket};

/// Exit status when the process that ran us in command mode went away (as ssh-agent).
const PARENT_GONE: u8 = 2;

/// What the agent serves and how, once the command line and configuration file are merged.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Agent socket path.
    pub socket: PathBuf,
    /// Default lifetime of keys added without one.
    pub lifetime: Option<Duration>,
    /// Confirmation program.
    pub askpass: Option<PathBuf>,
    /// Debug logging.
    pub debug: bool,
    /// Store directory (None: the default one).
    pub store: Option<PathBuf>,
    /// Serve ssh-add keys only.
    pub no_store: bool,
    /// Unseal with the passphrase in this file.
    pub passphrase_file: Option<PathBuf>,
    /// Defaults from the configuration file.
    pub defaults: crate::service::Defaults,
    /// The configuration file's log filter.
    pub log_level: Option<String>,
    /// ssh-agent's `-E`, `-P` and `-O` settings.
    pub compat: crate::agent::CompatOptions,
}

/// How this process came to serve: what it inherited, and what it must do once ready.
pub struct Launch {
    /// The agent socket, bound already by the caller.
    pub listener: Option<StdListener>,
    /// A private socket directory made for this agent, removed at exit.
    pub private_dir: Option<PathBuf>,
    /// Called once the agent socket accepts and everything behind it is ready.
    pub on_ready: Box<dyn FnOnce(&Path)>,
    /// Command mode: stop when this process (the command) is no longer our parent.
    pub parent: Option<nix::unistd::Pid>,
}

impl Launch {
    /// In the foreground, binding the socket here.
    pub fn foreground(on_ready: Box<dyn FnOnce(&Path)>) -> Self {
        Self {
            listener: None,
            private_dir: None,
            on_ready,
            parent: None,
        }
    }
}

/// Serves until stopped; returns the process's exit status.
pub fn serve(options: &Options, launch: Launch) -> anyhow::Result<ExitCode> {
    init_logging(options);
    for failure in harden::harden_process() {
        tracing::warn!("process hardening not applied: {failure}");
    }
    if !harden::limit_malloc_arenas() {
        tracing::debug!("malloc arena limit not applied (not glibc)");
    }
    match harden::raise_open_files() {
        Ok(soft) => tracing::debug!(soft, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let private_dir = launch.private_dir.clone();
    let result = runtime.block_on(serve_async(options, launch));
    // Our own sockets go; passed ones (systemd, launchd) stay for the next start.
    if let Ok((sockets, _)) = &result {
        for (path, inode) in [Some(sockets.agent.clone()), sockets.control.clone()]
            .into_iter()
            .flatten()
        {
            if let Some(inode) = inode {
                socket::remove_if_ours(&path, inode);
            }
        }
    }
    if let Some(dir) = private_dir {
        let _ = std::fs::remove_dir(dir);
    }
    let (_, stopped) = result?;
    tracing::info!("keyward-agent stopped");
    Ok(match stopped {
        Stopped::Signal => ExitCode::SUCCESS,
        Stopped::ParentGone => ExitCode::from(PARENT_GONE),
    })
}

/// Why the agent stopped.
enum Stopped {
    Signal,
    ParentGone,
}

async fn serve_async(options: &Options, launch: Launch) -> anyhow::Result<(Sockets, Stopped)> {
    // Signal handlers first: a SIGTERM that arrives right after the socket accepts must stop
    // us cleanly, not kill us with the socket left behind.
    let signals = shutdown_signal()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let parent = launch.parent;
    let shutdown = async move {
        let parent_gone = async {
            match parent {
                Some(pid) => watch_parent(pid).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            () = signals => Stopped::Signal,
            () = parent_gone => Stopped::ParentGone,
        };
        let _ = stop_tx.send(why);
    };
    // Sockets passed by systemd or launchd are served as they are and never removed.
    let activated = if launch.listener.is_some() {
        activation::Activated::default()
    } else {
        activation::take()?
    };
    let agent_path = activated.agent_path();
    let socket_path = agent_path.as_deref().unwrap_or(&options.socket);
    // Refuse early, before touching the store another agent may hold.
    if launch.listener.is_none()
        && activated.agent.is_none()
        && launch::running_agent(socket_path).is_some()
    {
        anyhow::bail!(
            "cannot bind to path {}: Address already in use (another agent serves it)",
            socket_path.display()
        );
    }
    let store = open_store(options)?;
    let control_path = crate::control::control_socket_for(socket_path);
    let control_passed = activated.control.is_some();
    let control = match (activated.control, &store) {
        (Some(passed), _) => Some(tokio::net::UnixListener::from_std(passed)?),
        (None, Some(_)) => Some(tokio::net::UnixListener::from_std(nonblocking(
            socket::bind(&control_path)?,
        )?)?),
        (None, None) => None,
    };
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
    // Locking the agent hides the store's master key too.
    let vault = store
        .as_ref()
        .map(|s| Arc::clone(s) as Arc<dyn crate::store::Vault + Send + Sync>);
    let keyring = Arc::new(Keyring::new().with_vault(vault));
    let askpass = options
        .askpass
        .clone()
        .or_else(|| std::env::var_os("SSH_ASKPASS").map(PathBuf::from));
    let service = Arc::new(
        Service::new(store, Some(Arc::clone(&keyring)), Arc::clone(&clock))
            .with_defaults(options.defaults.clone())
            .with_askpass(askpass.clone()),
    );
    // One audit trail for the agent sessions and the service.
    let config = Arc::new(
        AgentConfig::new(clock, askpass, options.lifetime)
            .with_auditor(service.auditor())
            .with_pkcs11(
                crate::agent::pkcs11::default_helper(),
                options.compat.providers.allowed.clone(),
            )
            .with_compat(options.compat.clone()),
    );
    if let Some(file) = &options.passphrase_file {
        let passphrase = read_passphrase_file(file)?;
        if let Response::Error { message, .. } = service.handle(Request::Unlock { passphrase }) {
            anyhow::bail!("cannot unseal the store: {message}");
        }
    }
    let served = service.load_stored_keys().unwrap_or(0);
    // The agent socket last: once it accepts, everything behind it is ready.
    let agent_passed = activated.agent.is_some();
    let inherited = launch.listener.is_some();
    let listener = tokio::net::UnixListener::from_std(match (launch.listener, activated.agent) {
        (Some(bound), _) => nonblocking(bound)?,
        (None, Some(passed)) => passed,
        (None, None) => nonblocking(socket::bind(socket_path)?)?,
    })?;
    let ours = |passed: bool, path: &Path| {
        if passed { None } else { socket::inode(path) }
    };
    let sockets = Sockets {
        agent: (socket_path.to_owned(), ours(agent_passed, socket_path)),
        control: control
            .as_ref()
            .map(|_| (control_path.clone(), ours(control_passed, &control_path))),
    };
    let deps = super::Deps { keyring, config };
    tracing::info!(socket = %socket_path.display(), pid = std::process::id(), stored_keys = served, inherited, "keyward-agent serving");
    activation::notify("READY=1");
    (launch.on_ready)(socket_path);
    serve_until_stopped(listener, control, shutdown, deps, service).await;
    activation::notify("STOPPING=1");
    let stopped = stop_rx.await.unwrap_or(Stopped::Signal);
    Ok((sockets, stopped))
}

/// Completes when `parent` is no longer our parent (it exited and we were re-parented).
async fn watch_parent(parent: nix::unistd::Pid) {
    // ssh-agent looks every 10 s; once a second costs nothing and ends sooner.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if nix::unistd::getppid() != parent {
            tracing::info!("the command we run for has exited");
            return;
        }
    }
}

fn init_logging(options: &Options) {
    let level = match (options.debug, &options.log_level) {
        (true, _) => "debug",
        (false, Some(level)) => level.as_str(),
        (false, None) => config::DEFAULT_LOG_LEVEL,
    };
    // ssh-agent-lib logs the lock passphrase at debug: never let a filter enable that.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},ssh_agent_lib=info"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the agent, the control socket and the renewal scheduler until `shutdown`.
async fn serve_until_stopped(
    listener: tokio::net::UnixListener,
    control: Option<tokio::net::UnixListener>,
    shutdown: impl std::future::Future<Output = ()>,
    deps: super::Deps,
    service: Arc<Service>,
) {
    match control {
        Some(control) => {
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            // Certificates renew themselves while the agent runs.
            let scheduler = tokio::spawn(crate::scheduler::run(
                Arc::clone(&service),
                Arc::new(SystemClock),
            ));
            let control_task = tokio::spawn(crate::control::server::run(
                control,
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
                service,
            ));
            super::run(listener, shutdown, deps).await;
            let _ = stop_tx.send(true);
            let _ = control_task.await;
            scheduler.abort();
        }
        None => super::run(listener, shutdown, deps).await,
    }
}

/// The sockets to remove at exit, with the inodes we bound.
struct Sockets {
    agent: (PathBuf, Option<u64>),
    control: Option<(PathBuf, Option<u64>)>,
}

fn nonblocking(listener: StdListener) -> std::io::Result<StdListener> {
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Opens the store (creating it without a passphrase on first use) unless `--no-store`.
fn open_store(options: &Options) -> anyhow::Result<Option<Arc<dyn Store>>> {
    if options.no_store {
        return Ok(None);
    }
    let explicit = options.store.is_some();
    let Some(dir) = options.store.clone().or_else(paths::default_store_dir) else {
        tracing::warn!(
            "no store directory (set --store, KEYWARD_STORE or HOME): serving ssh-add keys only"
        );
        return Ok(None);
    };
    let opened = match SledStore::open(&dir) {
        Err(StoreError::NotInitialised { .. }) => {
            // On a terminal the passphrase is asked for (empty: none, warned there).
            let passphrase = crate::cli::passphrase::for_new_store(&dir)?;
            if passphrase.is_none() {
                tracing::warn!(store = %dir.display(), "creating a store without a passphrase (set one with `keyward passwd`)");
            }
            SledStore::init(
                &dir,
                passphrase.as_ref().map(|p| p.as_bytes()),
                KdfParams::default(),
            )
        }
        other => other,
    };
    match opened {
        Ok(store) => Ok(Some(Arc::new(store))),
        // The store is single-process: a second agent (another `ssh-agent -s`, say) still
        // serves what ssh-add gives it, and says why the stored keys are not there.
        Err(StoreError::InUse { path }) if !explicit => {
            tracing::warn!(
                "the store at {} belongs to another agent: serving keys added with ssh-add only",
                path.display()
            );
            Ok(None)
        }
        // A default location we cannot use must not stop the agent; a chosen one must.
        Err(e) if !explicit && matches!(e, StoreError::Dir { .. } | StoreError::Open { .. }) => {
            tracing::warn!(store = %dir.display(), error = %crate::service::error_chain(&e), "cannot use the default store: serving ssh-add keys only");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the store at {}", dir.display())),
    }
}

/// Reads a passphrase file (a trailing newline is not part of the passphrase).
fn read_passphrase_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Completes on SIGTERM, SIGINT or SIGHUP.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}
