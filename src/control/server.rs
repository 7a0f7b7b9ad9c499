//! The daemon's side of the control channel: same-uid peers only, one JSON request per frame,
//! run on the blocking pool (store writes flush to disk before they are acknowledged).

use std::future::Future;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};

use crate::agent::frame;
use crate::agent::session::Peer;
use crate::control::proto::{ErrorKind, RequestEnvelope, Response, ResponseEnvelope, VERSION};
use crate::daemon::{BODY_DEADLINE, accept_loop};
use crate::service::{Caller, Service};

/// Serves control requests on `listener` until `shutdown` completes.
pub async fn run(
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
    service: Arc<Service>,
) {
    accept_loop(&listener, shutdown, |stream, peer| {
        serve_connection(stream, peer, Arc::clone(&service))
    })
    .await;
}

async fn serve_connection(mut stream: UnixStream, peer: Peer, service: Arc<Service>) {
    loop {
        let body = match frame::read_frame(&mut stream, BODY_DEADLINE).await {
            Ok(Some(body)) => zeroize::Zeroizing::new(body),
            Ok(None) => return,
            Err(e) => {
                tracing::info!(error = %e, "control connection closed");
                return;
            }
        };
        let response = match serde_json::from_slice::<RequestEnvelope>(&body) {
            Ok(envelope) if envelope.version == VERSION => {
                let service = Arc::clone(&service);
                tokio::task::spawn_blocking(move || {
                    // Who asks is read for each request: the process that sent it, now.
                    let caller = Caller::peer(peer.uid, peer.pid);
                    service.handle_from(envelope.request, &caller)
                })
                .await
                .unwrap_or_else(|e| Response::Error {
                    kind: ErrorKind::Internal,
                    message: format!("request failed: {e}"),
                })
            }
            Ok(envelope) => Response::Error {
                kind: ErrorKind::Version,
                message: format!(
                    "control protocol {} is not spoken here (this agent speaks {VERSION}): use the keyward CLI of the same version",
                    envelope.version
                ),
            },
            Err(e) => Response::Error {
                kind: ErrorKind::Invalid,
                message: format!("malformed control request: {e}"),
            },
        };
        let reply = ResponseEnvelope {
            version: VERSION,
            response,
        };
        let Ok(bytes) = serde_json::to_vec(&reply).map(zeroize::Zeroizing::new) else {
            return;
        };
        if frame::write_frame(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
}
