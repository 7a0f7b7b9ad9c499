//! The control channel between `keyward` (the CLI) and `keyward-agent`: versioned, length-prefixed
//! JSON requests and responses on `control.sock`, which has the same 0600 / same-uid rules as the
//! agent socket and, unlike an agent extension, is never forwarded by `ssh -A`.
//!
//! [`proto`] holds the messages, [`client`] the CLI side, [`server`] the daemon side; both ends
//! run the same [`crate::service::Service`].

pub mod client;
pub mod proto;
pub mod server;

use std::path::{Path, PathBuf};

/// The control socket that belongs to the agent socket `agent`: `control.sock` beside
/// `agent.sock`, else `<agent>.control` (so two agents in one directory do not collide).
pub fn control_socket_for(agent: &Path) -> PathBuf {
    if agent.file_name().is_some_and(|n| n == "agent.sock") {
        agent.with_file_name("control.sock")
    } else {
        let mut name = agent.as_os_str().to_owned();
        name.push(".control");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_socket_sits_beside_the_agent_socket() {
        assert_eq!(
            control_socket_for(Path::new("/run/k/agent.sock")),
            Path::new("/run/k/control.sock")
        );
        assert_eq!(
            control_socket_for(Path::new("/tmp/x.sock")),
            Path::new("/tmp/x.sock.control")
        );
    }
}
