//! The CLI's side of the control channel: one blocking request/response per call.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::frame::MAX_FRAME;
use crate::control::proto::{Request, RequestEnvelope, Response, ResponseEnvelope, VERSION};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the daemon failed.
    #[error("talking to keyward-agent on {path}")]
    Io {
        /// The control socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The daemon's answer is not one we understand.
    #[error("keyward-agent sent an unreadable answer (is it another version?)")]
    Decode(#[source] serde_json::Error),
    /// The control socket cannot be reached safely (e.g. another user serves it).
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    /// Another protocol version.
    #[error(
        "keyward-agent speaks control protocol {0}, this keyward speaks {VERSION}: restart the agent"
    )]
    Version(u32),
}

/// A connection to a running daemon.
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
}

impl Client {
    /// Connects if a daemon answers on `path`: `Ok(None)` when none does, an error when the
    /// process answering runs as another user (checked before a byte is sent).
    pub fn connect(path: &Path) -> Result<Option<Self>, ClientError> {
        let Some(stream) = crate::socket::connect(path)? else {
            return Ok(None);
        };
        // Key generation can take seconds; nothing should take minutes.
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .map_err(|source| ClientError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Some(Self {
            stream,
            path: path.to_owned(),
        }))
    }

    /// Sends `request` and waits for the response.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&RequestEnvelope {
            version: VERSION,
            request,
        })
        .map_err(ClientError::Decode)?;
        let mut frame = u32::try_from(body.len())
            .map_err(|_| io(io::Error::other("request too large")))?
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).map_err(io)?;
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).map_err(io)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(io(io::Error::other("answer over the frame limit")));
        }
        let mut body = zeroize::Zeroizing::new(vec![0; len]);
        self.stream.read_exact(&mut body).map_err(io)?;
        let envelope: ResponseEnvelope =
            serde_json::from_slice(&body).map_err(ClientError::Decode)?;
        if envelope.version != VERSION {
            return Err(ClientError::Version(envelope.version));
        }
        Ok(envelope.response)
    }
}
