//! `session-bind@openssh.com`: ssh tells the agent which server (host key) and which SSH session
//! a connection serves, signed by the server. The bindings of one connection are the hops a
//! forwarded agent has travelled; destination policies are checked against them.

use ssh_agent_lib::proto::extension::SessionBind;
use ssh_key::public::KeyData;

/// At most this many bindings per connection, as in OpenSSH (`AGENT_MAX_SESSION_IDS`).
pub const MAX_BINDINGS: usize = 16;

/// One verified binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The server's host key.
    pub host_key: KeyData,
    /// The SSH session identifier (exchange hash).
    pub session_id: Vec<u8>,
    /// Whether the binding is for agent forwarding rather than authentication.
    pub forwarded: bool,
}

/// Why a binding was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The message could not be parsed.
    #[error("malformed session-bind message")]
    Malformed,
    /// The host key's signature over the session id does not verify.
    #[error("session-bind signature does not verify")]
    BadSignature,
    /// The session id is already bound to another host key.
    #[error("session id already bound to a different host key")]
    Conflict,
    /// The connection was bound for authentication, which ends the chain of hops.
    #[error("connection already bound for authentication")]
    AfterAuthentication,
    /// Too many hops.
    #[error("more than {MAX_BINDINGS} session bindings on one connection")]
    TooMany,
}

/// The bindings of one connection, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    hops: Vec<Binding>,
}

impl Bindings {
    /// Verifies and records a `session-bind@openssh.com` message body.
    pub fn bind(&mut self, details: &ssh_agent_lib::proto::Unparsed) -> Result<(), BindError> {
        let msg: SessionBind = details.parse().map_err(|_| BindError::Malformed)?;
        msg.verify_signature()
            .map_err(|_| BindError::BadSignature)?;
        if let Some(existing) = self.hops.iter().find(|b| b.session_id == msg.session_id) {
            // Re-binding the same session to the same key is harmless (ssh may repeat it).
            return if existing.host_key == msg.host_key {
                Ok(())
            } else {
                Err(BindError::Conflict)
            };
        }
        if self.hops.last().is_some_and(|last| !last.forwarded) {
            return Err(BindError::AfterAuthentication);
        }
        if self.hops.len() >= MAX_BINDINGS {
            return Err(BindError::TooMany);
        }
        self.hops.push(Binding {
            host_key: msg.host_key,
            session_id: msg.session_id,
            forwarded: msg.is_forwarding,
        });
        Ok(())
    }

    /// The recorded hops, oldest first.
    pub fn hops(&self) -> &[Binding] {
        &self.hops
    }

    /// Whether `ssh` bound this connection for agent forwarding: its requests come from another
    /// host.
    pub fn forwarded(&self) -> bool {
        self.hops.iter().any(|h| h.forwarded)
    }
}
