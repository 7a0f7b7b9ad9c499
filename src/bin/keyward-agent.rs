//! `keyward-agent`: the daemon. Runs in the foreground; accepts `ssh-agent`'s own flags where
//! they make sense so scripts written for `ssh-agent` keep working.

// Doc comments here are --help text, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keyward::agent::{AgentConfig, Keyring};
use keyward::clock::{SystemClock, parse_duration};
use keyward::control::proto::{Request, Response};
use keyward::launch::{self, Shell};
use keyward::service::Service;
use keyward::store::{KdfParams, SledStore, Store, StoreError};
use keyward::{activation, config, daemon, harden, paths, socket};
use zeroize::Zeroizing;

/// An SSH agent with a certificate and policy store.
#[derive(Parser, Debug)]
#[command(version, about)]
#[allow(clippy::struct_excessive_bools)] // the flags mirror ssh-agent's
struct Args {
    /// Socket to serve (default: $XDG_RUNTIME_DIR/keyward/agent.sock).
    #[arg(short = 'a', long = "socket", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Default lifetime of keys added without one (seconds, or 90m, 1h30m, 2d...).
    #[arg(short = 't', value_name = "LIFE", value_parser = parse_duration)]
    lifetime: Option<Duration>,
    /// Program asked to confirm uses of keys added with `ssh-add -c` (default: $SSH_ASKPASS).
    #[arg(long, value_name = "PROGRAM")]
    askpass: Option<PathBuf>,
    /// Debug logging.
    #[arg(short = 'd')]
    debug: bool,
    /// Stay in the foreground (always the case; accepted for ssh-agent compatibility).
    #[arg(short = 'D')]
    foreground: bool,
    /// Start a detached agent and print sh commands for `eval`.
    #[arg(short = 's', conflicts_with = "csh")]
    sh: bool,
    /// Start a detached agent and print csh commands for `eval`.
    #[arg(short = 'c')]
    csh: bool,
    /// Store directory (default: $KEYWARD_STORE, $XDG_DATA_HOME/keyward or
    /// ~/.local/share/keyward); created without a passphrase if missing.
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    store: Option<PathBuf>,
    /// Serve only keys added with ssh-add, like ssh-agent; no store, no control socket.
    #[arg(long)]
    no_store: bool,
    /// Unseal a passphrase-protected store at start with the passphrase in this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Defaults from the configuration file (policy, renewal, audit retention).
    #[arg(skip)]
    defaults: keyward::service::Defaults,
    /// Kill the agent named by $SSH_AGENT_PID and print commands that forget it.
    #[arg(short = 'k', conflicts_with_all = ["sh", "csh"])]
    kill: bool,
    /// Configuration file (default: $XDG_CONFIG_HOME/keyward/keyward.toml if it exists); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The log filter from the configuration file.
    #[arg(skip)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    match configured(Args::parse()).and_then(|args| run(&args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let shell = if args.csh {
        Shell::C
    } else if args.sh {
        Shell::Bourne
    } else {
        Shell::from_env()
    };
    if args.kill {
        let pid: i32 = std::env::var("SSH_AGENT_PID")
            .context("SSH_AGENT_PID is not set, so there is no agent to kill")?
            .parse()
            .context("SSH_AGENT_PID is not a pid")?;
        launch::terminate(pid)?;
        print!("{}", launch::unset_lines(pid, shell));
        return Ok(ExitCode::SUCCESS);
    }
    let socket_path = args
        .socket
        .clone()
        .unwrap_or_else(socket::default_agent_socket);
    if args.sh || args.csh {
        let mut extra = Vec::new();
        if let Some(life) = args.lifetime {
            extra.extend(["-t".to_owned(), life.as_secs().to_string()]);
        }
        if let Some(askpass) = &args.askpass {
            extra.extend(["--askpass".to_owned(), askpass.display().to_string()]);
        }
        if let Some(store) = &args.store {
            extra.extend(["--store".to_owned(), store.display().to_string()]);
        }
        if let Some(file) = &args.passphrase_file {
            extra.extend(["--passphrase-file".to_owned(), file.display().to_string()]);
        }
        if args.no_store {
            extra.push("--no-store".to_owned());
        }
        if let Some(file) = &args.config {
            extra.extend(["--config".to_owned(), file.display().to_string()]);
        }
        let exe = std::env::current_exe().context("cannot find keyward-agent's own path")?;
        let (pid, _) = launch::start(&exe, &socket_path, &extra)?;
        print!("{}", launch::export_lines(&socket_path, pid, shell));
        return Ok(ExitCode::SUCCESS);
    }
    serve(args, &socket_path)?;
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &Args, socket_path: &std::path::Path) -> anyhow::Result<()> {
    init_logging(args);
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
    let sockets = runtime.block_on(async {
        // Signal handlers first: a SIGTERM that arrives right after the socket accepts must stop
        // us cleanly, not kill us with the socket left behind.
        let shutdown = shutdown_signal()?;
        // Sockets passed by systemd or launchd are served as they are and never removed.
        let activated = activation::take()?;
        let agent_path = activated.agent_path();
        let socket_path = agent_path.as_deref().unwrap_or(socket_path);
        // Refuse early, before touching the store another agent may hold.
        if activated.agent.is_none() && launch::running_agent(socket_path).is_some() {
            return Err(socket::SocketError::AlreadyListening(socket_path.to_owned()).into());
        }
        let store = open_store(args)?;
        let control_path = keyward::control::control_socket_for(socket_path);
        let control_passed = activated.control.is_some();
        let control = match (activated.control, &store) {
            (Some(passed), _) => Some(tokio::net::UnixListener::from_std(passed)?),
            (None, Some(_)) => Some(tokio::net::UnixListener::from_std(nonblocking(
                socket::bind(&control_path)?,
            )?)?),
            (None, None) => None,
        };
        let clock: Arc<dyn keyward::clock::Clock> = Arc::new(SystemClock);
        // Locking the agent hides the store's master key too.
        let vault = store
            .as_ref()
            .map(|s| Arc::clone(s) as Arc<dyn keyward::store::Vault + Send + Sync>);
        let keyring = Arc::new(Keyring::new().with_vault(vault));
        let service = Arc::new(
            Service::new(store, Some(Arc::clone(&keyring)), Arc::clone(&clock))
                .with_defaults(args.defaults.clone()),
        );
        // One audit trail for the agent sessions and the service.
        let config = Arc::new(
            AgentConfig::new(
                clock,
                args.askpass
                    .clone()
                    .or_else(|| std::env::var_os("SSH_ASKPASS").map(PathBuf::from)),
                args.lifetime,
            )
            .with_auditor(service.auditor()),
        );
        if let Some(file) = &args.passphrase_file {
            let passphrase = read_passphrase_file(file)?;
            if let Response::Error { message, .. } = service.handle(Request::Unlock { passphrase }) {
                anyhow::bail!("cannot unseal the store: {message}");
            }
        }
        let served = service.load_stored_keys().unwrap_or(0);
        // The agent socket last: once it accepts, everything behind it is ready.
        let agent_passed = activated.agent.is_some();
        let listener = tokio::net::UnixListener::from_std(match activated.agent {
            Some(passed) => passed,
            None => nonblocking(socket::bind(socket_path)?)?,
        })?;
        let ours = |passed: bool, path: &std::path::Path| {
            if passed { None } else { socket::inode(path) }
        };
        let sockets = Sockets {
            agent: (socket_path.to_owned(), ours(agent_passed, socket_path)),
            control: control
                .as_ref()
                .map(|_| (control_path.clone(), ours(control_passed, &control_path))),
        };
        let deps = daemon::Deps { keyring, config };
        tracing::info!(socket = %socket_path.display(), pid = std::process::id(), stored_keys = served, "keyward-agent serving");
        activation::notify("READY=1");
        serve_until_stopped(listener, control, shutdown, deps, service).await;
        activation::notify("STOPPING=1");
        anyhow::Ok(sockets)
    })?;
    for (path, inode) in [Some(sockets.agent), sockets.control].into_iter().flatten() {
        if let Some(inode) = inode {
            socket::remove_if_ours(&path, inode);
        }
    }
    tracing::info!("keyward-agent stopped");
    Ok(())
}

fn init_logging(args: &Args) {
    let level = match (args.debug, &args.log_level) {
        (true, _) => "debug",
        (false, Some(level)) => level.as_str(),
        (false, None) => config::DEFAULT_LOG_LEVEL,
    };
    // ssh-agent-lib logs the lock passphrase at debug: never let a filter enable that.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},ssh_agent_lib=info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs the agent, the control socket and the renewal scheduler until `shutdown`.
async fn serve_until_stopped(
    listener: tokio::net::UnixListener,
    control: Option<tokio::net::UnixListener>,
    shutdown: impl std::future::Future<Output = ()>,
    deps: daemon::Deps,
    service: Arc<Service>,
) {
    match control {
        Some(control) => {
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            // Certificates renew themselves while the agent runs.
            let scheduler = tokio::spawn(keyward::scheduler::run(
                Arc::clone(&service),
                Arc::new(SystemClock),
            ));
            let control_task = tokio::spawn(keyward::control::server::run(
                control,
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
                service,
            ));
            daemon::run(listener, shutdown, deps).await;
            let _ = stop_tx.send(true);
            let _ = control_task.await;
            scheduler.abort();
        }
        None => daemon::run(listener, shutdown, deps).await,
    }
}

/// The sockets to remove at exit, with the inodes we bound.
struct Sockets {
    agent: (PathBuf, Option<u64>),
    control: Option<(PathBuf, Option<u64>)>,
}

fn nonblocking(
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Opens the store (creating it without a passphrase on first use) unless `--no-store`.
fn open_store(args: &Args) -> anyhow::Result<Option<Arc<dyn Store>>> {
    if args.no_store {
        return Ok(None);
    }
    let explicit = args.store.is_some();
    let Some(dir) = args.store.clone().or_else(paths::default_store_dir) else {
        tracing::warn!(
            "no store directory (set --store, KEYWARD_STORE or HOME): serving ssh-add keys only"
        );
        return Ok(None);
    };
    let opened = match SledStore::open(&dir) {
        Err(StoreError::NotInitialised { .. }) => {
            // On a terminal the passphrase is asked for (empty: none, warned there).
            let passphrase = keyward::cli::passphrase::for_new_store(&dir)?;
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
        // A default location we cannot use must not stop the agent; a chosen one must.
        Err(e) if !explicit && matches!(e, StoreError::Dir { .. } | StoreError::Open { .. }) => {
            tracing::warn!(store = %dir.display(), error = %keyward::service::error_chain(&e), "cannot use the default store: serving ssh-add keys only");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the store at {}", dir.display())),
    }
}

/// Reads a passphrase file (a trailing newline is not part of the passphrase).
fn read_passphrase_file(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
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

/// Fills in what the command line left unset from the configuration file.
fn configured(mut args: Args) -> anyhow::Result<Args> {
    let (file, path) = config::Config::load(args.config.as_deref())?;
    args.defaults = keyward::service::Defaults::from_config(&file);
    // Only a store we open needs its passphrase (a missing systemd credential is an error then).
    let uses_store = !args.no_store && (args.store.is_some() || file.store.enabled);
    if args.passphrase_file.is_none() && uses_store {
        args.passphrase_file = file.passphrase_file(&path.unwrap_or_default())?;
    }
    args.socket = args.socket.or(file.agent.socket.map(|p| p.0));
    args.lifetime = args.lifetime.or(file.agent.lifetime.map(|d| d.0));
    args.askpass = args.askpass.or(file.agent.askpass.map(|p| p.0));
    if args.store.is_none() && !args.no_store {
        args.store = file.store.path.map(|p| p.0);
        args.no_store = !file.store.enabled;
    }
    args.log_level = Some(file.log.level.0);
    Ok(args)
}
