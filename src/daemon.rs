//! The daemon's main loop: accept connections on an already-bound socket, refuse other users,
//! run one [`Session`] per connection, expire keys on time, stop when told.
//!
//! [`run`] takes the listener and a shutdown future, so tests and socket activation hand it
//! whatever socket they have, and nothing here sleeps to wait for readiness.
//!
//! [`main`] is the whole `keyward-agent` program (also run as `keyward agent`): its command line
//! ([`cmdline`]), ssh-agent's detaching and command modes ([`detach`]) and the process that
//! serves ([`serve`]).

pub mod cmdline;
pub mod detach;
pub mod serve;

pub use cmdline::main;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use crate::agent::frame::{self, FrameError};
use crate::agent::senders::{SenderReader, Senders};
use crate::agent::session::Peer;
use crate::agent::{AgentConfig, Keyring, Session};

/// How long a client may take to send a frame's body once its header has arrived.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// What the daemon serves.
#[derive(Clone)]
pub struct Deps {
    /// The keys.
    pub keyring: Arc<Keyring>,
    /// Shared settings.
    pub config: Arc<AgentConfig>,
}

/// Serves the agent protocol on `listener` until `shutdown` completes.
pub async fn run(listener: UnixListener, shutdown: impl Future<Output = ()>, deps: Deps) {
    if let Err(e) = crate::agent::senders::pass_credentials(&listener) {
        tracing::warn!(error = %e, "cannot ask for the writer of each request (SO_PASSCRED)");
    }
    let reaper = tokio::spawn(expire_keys(
        Arc::clone(&deps.keyring),
        Arc::clone(&deps.config),
    ));
    accept_loop(&listener, shutdown, |stream, peer| {
        serve_connection(stream, peer, deps.clone())
    })
    .await;
    reaper.abort();
}

/// Accepts connections until `shutdown`, admits only our own uid, and runs `serve` for each in
/// its own task. Shared by the agent and control sockets.
pub(crate) async fn accept_loop<F, Fut>(
    listener: &UnixListener,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(UnixStream, Peer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let uid = nix::unistd::geteuid().as_raw();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                if let Some(peer) = admit(&stream, uid) {
                    tokio::spawn(serve(stream, peer));
                }
            }
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have, try again shortly,
                // and never spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Checks the peer's credentials; only our own uid is served.
pub(crate) fn admit(stream: &UnixStream, uid: u32) -> Option<Peer> {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => Some(Peer {
            uid: cred.uid(),
            pid: cred.pid(),
        }),
        Ok(cred) => {
            tracing::warn!(peer_uid = cred.uid(), pid = ?cred.pid(), "refused a connection from another user");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a connection whose credentials cannot be read");
            None
        }
    }
}

async fn serve_connection(mut stream: UnixStream, peer: Peer, deps: Deps) {
    let mut session = Session::new(deps.keyring, deps.config, peer);
    loop {
        let mut senders = Senders::default();
        let mut reader = SenderReader::new(&stream, &mut senders);
        let frame = match frame::read_frame(&mut reader, BODY_DEADLINE).await {
            // Frames can carry private keys (add identity): wipe each one after use.
            Ok(Some(frame)) => zeroize::Zeroizing::new(frame),
            Ok(None) => return,
            Err(e) => {
                log_frame_error(&e, peer);
                return;
            }
        };
        session.written_by(senders);
        let reply = session.handle(&frame).await;
        if let Err(e) = frame::write_frame(&mut stream, reply.as_bytes()).await {
            tracing::debug!(error = %e, "client went away before its reply");
            return;
        }
    }
}

fn log_frame_error(e: &FrameError, peer: Peer) {
    match e {
        FrameError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::debug!(pid = ?peer.pid, "client closed mid-frame");
        }
        other => tracing::info!(pid = ?peer.pid, error = %other, "connection closed"),
    }
}

/// Removes keys when their lifetime ends, sleeping until the next expiry or the next add.
async fn expire_keys(keyring: Arc<Keyring>, config: Arc<AgentConfig>) {
    loop {
        let added = keyring.added();
        let next = keyring.purge_expired(config.clock.boot_now());
        match next {
            Some(deadline) => {
                let wait = deadline.saturating_sub(config.clock.boot_now());
                // Sleep in bounded steps: tokio's timer does not count suspended time, the boot
                // clock does, so re-read it at least once a minute.
                let wait = wait.min(Duration::from_secs(60)) + Duration::from_millis(1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = added => {}
                }
            }
            None => added.await,
        }
    }
}
