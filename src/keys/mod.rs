//! Keys as the domain sees them: a public key blob, a comment, and a [`Signer`] that holds the
//! private half. Parsing and formats come from `ssh-key`; private-key operations go through
//! [`signer`].

pub mod cert;
pub mod fingerprint;
pub mod generate;
pub mod import;
pub mod private;
pub mod signer;
pub mod sk;

pub use signer::{KeyError, Signer};

use ssh_encoding::Encode;
use ssh_key::public::KeyData;

/// The SSH wire encoding of a public key (the "key blob" the agent protocol names keys by).
pub fn public_blob(key: &KeyData) -> Result<Vec<u8>, KeyError> {
    let mut blob = Vec::with_capacity(key.encoded_len().map_err(KeyError::Encoding)?);
    key.encode(&mut blob).map_err(KeyError::Encoding)?;
    Ok(blob)
}
