//! The ssh-agent protocol side: framing ([`frame`]), reply encoding ([`wire`]), the shared key
//! ring ([`keyring`]) with each key's private half in a [`slot`] (sealed under the [`lock`] key
//! while the agent is locked), and one [`session`] per connection that maps requests onto it.
//!
//! Protocol code decides nothing about keys on its own: it decodes, asks the key ring, encodes.

pub mod bind;
pub mod compat;
pub mod confirm;
pub mod frame;
pub mod keyring;
pub mod lock;
pub mod session;
pub mod slot;
pub mod wire;

pub use compat::CompatOptions;
pub use keyring::Keyring;
pub use session::{AgentConfig, Session};
